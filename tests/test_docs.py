"""The README's option, environment and exit-code tables are made from the code (docs.py,
through cog): this fails when they are not current. `cog -r README.md` rewrites them."""

from __future__ import annotations

from pathlib import Path

from cogapp import Cog

from migrator.cli import docs
from migrator.config import ENVIRONMENT
from migrator.errors import EXIT_CODES

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_tables_are_current():
    rc = Cog().main(["cog", "--check", str(README)])
    assert rc == 0, "README.md is out of date with the code: run `.venv/bin/cog -r README.md`"


def test_the_tables_hold_every_option_variable_and_code():
    from migrator.cli import main

    text = README.read_text()
    for name, cmd in main.commands.items():
        for p in cmd.params:
            if getattr(p, "opts", None) and not getattr(p, "hidden", False):
                assert f"`{p.opts[-1]}" in text, (name, p.opts)
    for var in ENVIRONMENT:
        assert f"| `{var}` |" in text
    for code in EXIT_CODES:
        assert f"\n| {code} | " in docs.exit_codes_table() and f"\n| {code} | " in text
