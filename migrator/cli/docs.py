"""The README's reference tables, made from the code so that they cannot drift from it.

README.md holds ``cog`` blocks that call these functions; ``cog -r README.md``
rewrites them, and ``tests/test_docs.py`` fails when the README is not current
(``cog --check``). Options come from the click commands themselves (their help
text, and which commands take each), environment variables from
``config.ENVIRONMENT``, exit codes from ``errors.EXIT_CODES``, and the package's
layout from each module's own docstring.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import click

from migrator.config import ENVIRONMENT
from migrator.errors import EXIT_CODES


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _option_name(param: click.Option) -> str:
    names = ", ".join(f"`{o}`" for o in sorted(param.opts + param.secondary_opts, key=len))
    if not param.is_flag and param.metavar:
        names = names[:-1] + f" {param.metavar}`"
    return names


def options_table() -> str:
    """Every option of every command: the option, the commands taking it, its help."""
    from migrator.cli import main

    rows: dict[str, dict] = {}
    for cname, cmd in sorted(main.commands.items()):
        for param in cmd.params:
            if not isinstance(param, click.Option) or param.hidden:
                continue
            key = param.opts[-1]
            row = rows.setdefault(key, {"name": _option_name(param), "commands": [], "helps": {}})
            row["commands"].append(cname)
            text = " ".join((param.help or "").split())
            if text and not text.lower().startswith("as for"):
                row["helps"].setdefault(text, []).append(cname)
    lines = ["| option | commands | meaning |", "| --- | --- | --- |"]
    for row in rows.values():
        helps = row["helps"]
        if len(helps) <= 1:
            meaning = next(iter(helps), "")
        else:  # the commands say different things (a default, say): each is shown
            meaning = "; ".join(f"{', '.join(cmds)}: {text.rstrip('.')}" for text, cmds in helps.items()) + "."
        lines.append(f"| {row['name']} | {', '.join(row['commands'])} | {_cell(meaning)} |")
    return "\n".join(lines)


def commands_list() -> str:
    from migrator.cli import main

    lines = ["| command | what it does |", "| --- | --- |"]
    for name, cmd in sorted(main.commands.items()):
        lines.append(f"| `migrate {name}` | {_cell(cmd.help or '')} |")
    return "\n".join(lines)


def environment_table() -> str:
    lines = ["| variable | meaning |", "| --- | --- |"]
    for name, what in ENVIRONMENT.items():
        lines.append(f"| `{name}` | {_cell(what)} |")
    return "\n".join(lines)


def exit_codes_table() -> str:
    lines = ["| code | meaning | what to do |", "| --- | --- | --- |"]
    for code, (meaning, todo) in sorted(EXIT_CODES.items()):
        lines.append(f"| {code} | {_cell(meaning)} | {_cell(todo)} |")
    return "\n".join(lines)


def _summary(path: Path) -> str:
    """The first sentence of a module's docstring (its own account of what it owns)."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    first = re.sub(r":(?:mod|class|func):`~?([^`]+)`", r"`\1`", " ".join(doc.split("\n\n")[0].split()))
    first = first.replace("``", "`")
    return first.split(": ")[0] if len(first) > 100 else first


def layout() -> str:
    """The package's folders and modules, each with the first line of its docstring."""
    root = Path(__file__).resolve().parents[1]
    lines = ["migrator/"]

    def walk(d: Path, depth: int) -> None:
        entries = sorted(p for p in d.iterdir() if p.name != "__pycache__" and (p.is_dir() or p.suffix == ".py"))
        mods = [p for p in entries if p.is_file() and p.name != "__init__.py"]
        pkgs = [p for p in entries if p.is_dir() and (p / "__init__.py").exists()]
        for p in mods + pkgs:
            name = p.name + ("/" if p.is_dir() else "")
            doc = _summary(p / "__init__.py" if p.is_dir() else p)
            lines.append(f"{'  ' * depth}{name:<{28 - 2 * depth}}{doc}")
            if p.is_dir():
                walk(p, depth + 1)

    walk(root, 1)
    return "\n".join(lines)
