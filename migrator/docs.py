"""The README's reference tables, made from the code so that they cannot drift from it.

README.md holds ``cog`` blocks that call these functions; ``cog -r README.md``
rewrites them, and ``tests/test_docs.py`` fails when the README is not current
(``cog --check``). Options come from the click commands themselves (their help
text, and which commands take each), environment variables from
``config.ENVIRONMENT``, exit codes from ``errors.EXIT_CODES``.
"""
from __future__ import annotations

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
        else:        # the commands say different things (a default, say): each is shown
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
