"""The API key never leaks: not to stdout/stderr, the job database, the lock files, the
migrated tree, the process's command line, nor echoed from a URL that carries it."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from helpers import API_KEY, MIGRATE, Cli, run_args, tree_digest
from migrator.config import KEY_VARIABLES
from migrator.errors import EXIT_ENDPOINT_REJECTED, EXIT_USAGE
from migrator.jobs.lock import HOLDER_NAME
from migrator.testing.server import FakeVLLM

WRONG_KEY = "sk-wrong-NOT-THIS-ONE-41d0be"
URL_SECRET = "hunter2-url-pass-93ab"


def _needles(key: str) -> list[bytes]:
    """The key itself, a distinctive part of it, and its base64 (as in a Basic/Bearer blob)."""
    return [key.encode(), key[len(key) // 3 :].encode(), base64.b64encode(key.encode())]


def _leaks(data: bytes | str, key: str = API_KEY) -> bool:
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    return any(n in data for n in _needles(key))


def _files(*roots: Path) -> dict[Path, bytes]:
    out = {}
    for root in roots:
        for p in sorted(Path(root).rglob("*")):
            try:
                if p.is_file():
                    out[p] = p.read_bytes()
            except FileNotFoundError:  # a transient file (journal, lock holder) just went
                pass
    return out


def _assert_no_leak(files: dict[Path, bytes], key: str = API_KEY) -> None:
    leaked = [str(p) for p, data in files.items() if _leaks(data, key)]
    assert leaked == [], f"the key was written to {leaked}"


def _env(**keys: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in KEY_VARIABLES + ("MIGRATOR_ENDPOINT", "MIGRATOR_STATE_DIR")}
    env.update(keys)
    return env


def _watch_run(args: list[str], env: dict, out_dir: Path, watch: list[Path]) -> dict:
    """Run `python -m migrator.cli ARGS`; while it runs, read its /proc cmdline and every file
    under ``watch`` (transient files included). Returns what was seen."""
    out_dir.mkdir(exist_ok=True)
    with open(out_dir / "stdout", "wb") as so, open(out_dir / "stderr", "wb") as se:
        proc = subprocess.Popen([*MIGRATE, *args], env=env, stdout=so, stderr=se)
        cmdlines, environ, seen, names = [], b"", {}, set()
        deadline = time.monotonic() + 60
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    cmdlines.append(Path(f"/proc/{proc.pid}/cmdline").read_bytes())
                    environ = environ or Path(f"/proc/{proc.pid}/environ").read_bytes()
                except OSError:
                    pass
                for p, data in _files(*watch).items():
                    names.add(p.name)
                    if _leaks(data):
                        seen.setdefault(p, data)
                time.sleep(0.01)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return {
        "rc": proc.returncode,
        "stdout": (out_dir / "stdout").read_bytes(),
        "stderr": (out_dir / "stderr").read_bytes(),
        "cmdlines": cmdlines,
        "environ": environ,
        "leaked_while_running": seen,
        "names": names,
    }


def _run_args(root: Path, state: Path, srv: FakeVLLM, *extra: str) -> list[str]:
    return [
        "-v",
        *run_args(root, srv.base_url, state),
        "--batch-size",
        "4",
        "--concurrency",
        "2",
        "--request-timeout",
        "10",
        "--retry-for",
        "5",
        "--yes",
        *extra,
    ]


# ------------------------------------------------------ a whole migration
def test_full_migration_in_a_subprocess_leaks_the_key_nowhere(tmp_path, dvd_tree):
    root, paths = dvd_tree
    state = tmp_path / "state"
    with FakeVLLM(api_key=API_KEY, tokens_per_second=8000) as srv:
        seen = _watch_run(
            _run_args(root, state, srv, "--json"), _env(MIGRATOR_API_KEY=API_KEY), tmp_path / "out", [state, root]
        )
        assert srv.stats.unauthorized == 0 and srv.stats.embedding_ok > 0
    assert seen["rc"] == 0, seen["stderr"].decode()
    doc = json.loads(seen["stdout"])
    assert doc["outcome"] == "done" and doc["databases"] == {"cut_over": 6}

    # the process really had the key (so the searches below would have found it) ...
    assert _leaks(seen["environ"])
    # ... but not on its command line, at any moment it was looked at
    live = [c for c in seen["cmdlines"] if b"migrator.cli" in c]
    assert live, "never saw the process's command line"
    assert not any(_leaks(c) for c in seen["cmdlines"])
    # nothing it wrote while running (lock holder, journals, staged files) held the key
    assert HOLDER_NAME in seen["names"]
    assert seen["leaked_while_running"] == {}
    # nor anything it left: output, job database, lock files, migrated files, backups
    assert not _leaks(seen["stdout"]) and not _leaks(seen["stderr"])
    files = _files(state, root)
    assert state / "migrator.db" in files and state / "migrator.lock" in files
    assert len([p for p in files if p.name.endswith(".backup")]) == 6
    _assert_no_leak(files)


def test_api_key_file_only_staged_then_cut_over(tmp_path, dvd_tree):
    root, paths = dvd_tree
    state = tmp_path / "state"
    keyfile = tmp_path / "secret" / "vllm.key"
    keyfile.parent.mkdir()
    keyfile.write_text(API_KEY + "\n")
    keyfile.chmod(0o600)
    assert not any(os.environ.get(k) for k in KEY_VARIABLES)
    with FakeVLLM(api_key=API_KEY) as srv:
        seen = _watch_run(
            _run_args(root, state, srv, "--api-key-file", str(keyfile), "--no-cutover"),
            _env(),
            tmp_path / "out",
            [state, root],
        )
        assert srv.stats.unauthorized == 0 and srv.stats.embedding_ok > 0
    assert seen["rc"] == 0, seen["stderr"].decode()
    assert b"staged" in seen["stdout"]
    assert b"chmod" not in seen["stderr"]  # a 600 file draws no warning
    assert not _leaks(seen["environ"])  # the key came from the file alone
    assert not any(_leaks(c) for c in seen["cmdlines"])
    assert seen["leaked_while_running"] == {}
    assert not _leaks(seen["stdout"]) and not _leaks(seen["stderr"])
    files = _files(state, root)
    assert len([p for p in files if p.name.endswith(".staged")]) == 6
    _assert_no_leak(files)

    r = Cli(None, state)("cutover", "--yes", "--json")  # cutover needs no key at all
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["outcome"] == "done"
    assert not _leaks(r.stdout) and not _leaks(r.stderr)
    files = _files(state, root)
    assert len([p for p in files if p.name.endswith(".backup")]) == 6
    _assert_no_leak(files)


# ------------------------------------------------- where the key comes from
@pytest.mark.parametrize("variable", ["VLLM_API_KEY", "OPENAI_API_KEY"])
def test_key_from_the_other_variables_is_accepted(variable, monkeypatch, tmp_path, dvd_tree):
    root, _ = dvd_tree
    monkeypatch.setenv(variable, API_KEY)
    with FakeVLLM(api_key=API_KEY) as srv:
        cli = Cli(srv.base_url, tmp_path / "state")
        r = cli("run", "--root", str(root), "--model", "8b", "--yes", "--json")
        assert r.exit_code == 0, r.output
        assert srv.stats.unauthorized == 0 and srv.stats.embedding_ok > 0
    assert json.loads(r.stdout)["outcome"] == "done"
    assert not _leaks(r.stdout) and not _leaks(r.stderr)
    _assert_no_leak(_files(tmp_path / "state", root))


def test_precedence_file_then_migrator_then_vllm_then_openai(monkeypatch, tmp_path, dvd_tree):
    root, _ = dvd_tree
    keyfile = tmp_path / "k"
    keyfile.write_text(API_KEY)
    keyfile.chmod(0o600)
    with FakeVLLM(api_key=API_KEY) as srv:
        cli = Cli(srv.base_url, tmp_path / "state")

        def reachable(*extra):
            r = cli("plan", "--root", str(root), "--model", "8b", "--no-tokenize", "--json", *extra)
            assert not _leaks(r.stdout + r.stderr) and not _leaks(r.stdout + r.stderr, WRONG_KEY)
            ok = json.loads(r.stdout)["endpoint"]["reachable"]
            assert r.exit_code == (0 if ok else EXIT_ENDPOINT_REJECTED), r.output  # a refused key: 6
            return ok

        monkeypatch.setenv("OPENAI_API_KEY", WRONG_KEY)
        monkeypatch.setenv("VLLM_API_KEY", API_KEY)
        assert reachable()  # VLLM_API_KEY before OPENAI_API_KEY
        monkeypatch.setenv("MIGRATOR_API_KEY", WRONG_KEY)
        assert not reachable()  # MIGRATOR_API_KEY before both
        assert reachable("--api-key-file", str(keyfile))  # the file before every variable


@pytest.mark.parametrize("source", ["env", "file"])
def test_wrong_key_exits_6_without_echoing_it(source, monkeypatch, tmp_path, dvd_tree):
    root, _ = dvd_tree
    before = tree_digest(root)
    extra = []
    if source == "env":
        monkeypatch.setenv("MIGRATOR_API_KEY", WRONG_KEY)
    else:
        keyfile = tmp_path / "k"
        keyfile.write_text(WRONG_KEY + "\n")
        keyfile.chmod(0o600)
        extra = ["--api-key-file", str(keyfile)]
    with FakeVLLM(api_key=API_KEY) as srv:
        cli = Cli(srv.base_url, tmp_path / "state")
        for json_flag in ([], ["--json"]):
            r = cli("run", "--root", str(root), "--model", "8b", "--yes", *extra, *json_flag)
            assert r.exit_code == EXIT_ENDPOINT_REJECTED, r.output
            assert "API key was refused" in r.stderr
            if source == "file":  # names where the key came from, not a variable it never read
                assert str(keyfile) in r.stderr and "MIGRATOR_API_KEY" not in r.stderr
            else:
                assert "set MIGRATOR_API_KEY to the server's key" in r.stderr
            for key in (WRONG_KEY, API_KEY):
                assert not _leaks(r.stdout, key) and not _leaks(r.stderr, key)
        assert srv.stats.unauthorized >= 2 and srv.stats.embedding_ok == 0
    assert tree_digest(root) == before
    _assert_no_leak(_files(tmp_path / "state"), WRONG_KEY)


def test_group_readable_key_file_warns_without_the_key(tmp_path, dvd_tree):
    root, _ = dvd_tree
    keyfile = tmp_path / "k"
    keyfile.write_text(API_KEY)
    keyfile.chmod(0o644)
    with FakeVLLM(api_key=API_KEY) as srv:
        r = Cli(srv.base_url, tmp_path / "state")(
            "plan", "--root", str(root), "--model", "8b", "--no-tokenize", "--api-key-file", str(keyfile)
        )
        assert r.exit_code == 0, r.output
        assert srv.stats.unauthorized == 0
    assert str(keyfile) in r.stderr and r.stderr.count("chmod 600") == 1  # said once
    assert not _leaks(r.stdout + r.stderr)


# ------------------------------------------------ read-only commands
def test_plan_status_and_env_outputs_hold_no_key(cli, dvd_tree, server):
    root, _ = dvd_tree
    outputs = []
    for args in (
        ("plan", "--root", str(root), "--model", "8b", "--json"),
        ("plan", "--root", str(root), "--model", "8b", "--no-tokenize"),
    ):
        r = cli(*args)
        assert r.exit_code == 0, r.output
        outputs.append(r.stdout + r.stderr)
        if "--json" in args:  # it did talk to the endpoint, with the key
            assert json.loads(r.stdout)["endpoint"]["reachable"] is True
    assert cli("run", "--root", str(root), "--model", "8b", "--yes").exit_code == 0
    for args in (("status", "--json"), ("status", "--databases"), ("env",)):
        r = cli(*args)
        assert r.exit_code == 0, r.output
        outputs.append(r.stdout + r.stderr)
    status = json.loads(cli("status", "--json").stdout)
    assert status["migrations"][0]["endpoint"] == server.base_url
    assert "MIGRATOR_API_KEY" in outputs[-1]  # env names the variable, not its value
    leaked = [o for o in outputs if _leaks(o)]
    assert leaked == []
    assert server.stats.unauthorized == 0


# ------------------------------------------------ secrets in the URL
def _url_with_password(srv: FakeVLLM) -> str:
    return f"http://user:{URL_SECRET}@127.0.0.1:{srv.port}/v1"


CASES = {
    "run": lambda u: (["run", "--model", "8b", "--yes", "--endpoint", u], {}),
    "plan": lambda u: (["plan", "--model", "8b", "--endpoint", u], {}),
    "plan-json": lambda u: (["plan", "--model", "8b", "--json", "--endpoint", u], {}),
    "run-env": lambda u: (["run", "--model", "8b", "--yes"], {"MIGRATOR_ENDPOINT": u}),
    "plan-no-probe": lambda u: (["plan", "--model", "8b", "--no-probe", "--json", "--endpoint", u], {}),
    "run-no-scheme": lambda u: (["run", "--model", "8b", "--yes", "--endpoint", u.removeprefix("http://")], {}),
}


@pytest.mark.parametrize(
    "case",
    [
        "run",
        "plan",
        "plan-json",
        "run-env",
        "plan-no-probe",
        "run-no-scheme",
    ],
)
def test_a_password_in_the_endpoint_url_is_refused_and_not_echoed(case, monkeypatch, tmp_path, dvd_tree, key_env):
    root, _ = dvd_tree
    before = tree_digest(root)
    with FakeVLLM(api_key=API_KEY) as srv:
        args, env = CASES[case](_url_with_password(srv))
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        cli = Cli(None, tmp_path / "state")
        r = cli(*args, "--root", str(root))
        out = r.stdout + r.stderr
        assert not _leaks(out, URL_SECRET), out
        assert r.exit_code == EXIT_USAGE, out
        assert "--endpoint" in r.stderr
        assert srv.stats.requests_total == 0  # never sent anywhere
    assert tree_digest(root) == before


def test_plan_does_not_echo_a_key_in_the_endpoint_query(tmp_path, dvd_tree, key_env):
    root, _ = dvd_tree
    with FakeVLLM(api_key=API_KEY) as srv:
        url = f"{srv.base_url}?api_key={URL_SECRET}"
        r = Cli(url, tmp_path / "state")("plan", "--root", str(root), "--model", "8b", "--no-tokenize", "--json")
    out = r.stdout + r.stderr
    assert r.exit_code in (0, EXIT_USAGE), out
    assert not _leaks(out, URL_SECRET), out


def test_a_key_file_that_is_not_text_is_a_usage_error(tmp_path, dvd_tree):
    from click.testing import CliRunner

    from migrator.cli import main as cli_main

    root, _ = dvd_tree
    keyfile = tmp_path / "k.bin"
    keyfile.write_bytes(b"\xff\xfe" + API_KEY.encode("utf-16-le"))
    keyfile.chmod(0o600)
    with FakeVLLM(api_key=API_KEY) as srv:
        r = CliRunner().invoke(
            cli_main,
            ["plan", "--root", str(root), "--model", "8b", "--endpoint", srv.base_url, "--api-key-file", str(keyfile)],
            catch_exceptions=True,
        )
    assert r.exit_code == EXIT_USAGE, (r.exit_code, repr(r.exception))
    assert str(keyfile) in r.stderr and not _leaks(r.stdout + r.stderr)
