"""The package's import graph has no cycle (lazy imports inside functions count too): a
module can be read, tested and moved without dragging its importers along."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "migrator"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for t in targets:
                if t in modules and t != name:
                    graph[name].add(t)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n) :] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_package_has_no_import_cycle():
    cycle = _cycle(_graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def _environment_reads(source: str) -> list[int]:
    """Lines that read an environment variable: os.environ.get/[...]/in, os.getenv."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in ("get", "getenv", "__getitem__", "pop", "setdefault"):
            v = node.value
            if (isinstance(v, ast.Attribute) and v.attr == "environ") or node.attr == "getenv":
                out.append(node.lineno)
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "environ"
            and isinstance(node.ctx, ast.Load)
        ):
            out.append(node.lineno)
        elif isinstance(node, ast.Compare) and any(
            isinstance(c, ast.Attribute) and c.attr == "environ" for c in node.comparators
        ):
            out.append(node.lineno)
    return sorted(out)


def test_only_config_reads_the_environment():
    """Every variable in config.ENVIRONMENT is read in config.py (a child process may be
    handed the environment whole: hooks, --serve). migrator.testing is not the tool."""
    readers = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).as_posix()
        if rel == "config.py" or rel.startswith("testing/"):
            continue
        if lines := _environment_reads(path.read_text(encoding="utf-8")):
            readers[rel] = lines
    assert readers == {}


def test_the_environment_read_finder_finds_reads():
    src = 'import os\na = os.environ.get("X")\nb = os.environ["Y"]\nc = os.getenv("Z")\nd = "W" in os.environ\n'
    assert _environment_reads(src) == [2, 3, 4, 5]
    assert _environment_reads("import os\nenv = dict(os.environ)\n") == []


def _imported_by(module: str, watch: tuple[str, ...]) -> list[str]:
    """Which of ``watch`` a fresh interpreter has loaded after importing ``module``."""
    import subprocess
    import sys

    code = f"import sys, {module}; print(' '.join(m for m in {watch!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return out.split()


def test_start_up_imports_only_what_the_command_needs():
    """`run` talks to vLLM through httpx alone (the openai SDK's import was half a second of
    every start); `status` needs neither HTTP nor numpy."""
    assert _imported_by("migrator.commands.run", ("openai", "httpx2", "numpy")) == ["httpx2", "numpy"]
    assert _imported_by("migrator.commands.status", ("openai", "httpx2", "numpy", "migrator.pipeline.runner")) == []
    # nor does the command line before it runs a command: its options, the settings
    assert _imported_by("migrator.cli.app", ("httpx2", "numpy", "orjson", "migrator.apps", "migrator.vllm.http")) == []
    assert _imported_by("migrator.commands.settings", ("httpx2", "numpy", "migrator.apps")) == []
