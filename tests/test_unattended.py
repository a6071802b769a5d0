"""Running from cron: time windows, PAUSE and THROTTLE files, the log file, printed schedules.

Real `migrate` processes against the fake vLLM on 127.0.0.1, real files.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest

from dvdcheck import assert_migrated
from helpers import API_KEY, MIGRATE, run_args, spawn_migrate, tree_digest
from migrator.errors import EXIT_HELD, EXIT_LOCKED, EXIT_OK, EXIT_USAGE, EXIT_WINDOW, UsageError
from migrator.ops import window
from migrator.testing.corpus import build_dvd_tree
from migrator.testing.server import FakeVLLM
from migrator.vllm.serve import ManagedServer, socket_dir
from migrator.vllm.steering import Throttle, read_throttle


# ------------------------------------------------------------- the window
@pytest.mark.parametrize(
    "text, seconds", [("45m", 2700), ("1h30m", 5400), ("90s", 90), ("2d", 172800), ("600", 600), ("1.5h", 5400)]
)
def test_durations(text, seconds):
    assert window.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "45x", "m", "-5m", "0", "1h 30m", "5m30"])
def test_bad_durations_say_how_to_write_one(text):
    with pytest.raises(UsageError, match="duration"):
        window.parse_duration(text)


def test_until_is_the_next_such_time_of_day():
    now = datetime(2026, 11, 23, 22, 30)
    assert window.seconds_until("06:00", now) == 7.5 * 3600  # tomorrow morning
    assert window.seconds_until("23:00", now) == 30 * 60  # later today
    assert window.seconds_until("22:30", now) == 24 * 3600  # now: the next one
    assert window.time_left("2h", "23:00", now) == 30 * 60  # the earlier limit wins
    with pytest.raises(UsageError, match="time of day"):
        window.seconds_until("25:00", now)


@pytest.fixture
def slow(tmp_path):
    """Ten DVD databases and a server slow enough (4,000 tokens/s: ~7 s of work) to stop a run mid-way."""
    root = tmp_path / "video_database"
    paths = build_dvd_tree(root, 10, clips=(12, 20), seed=5)
    originals = {p: json.loads(p.read_text()) for p in paths}
    state = tmp_path / "state"
    with FakeVLLM(api_key=API_KEY, tokens_per_second=4_000) as srv:
        env = dict(os.environ, MIGRATOR_API_KEY=API_KEY)
        args = [
            *run_args(root, srv.base_url, state),
            "--yes",
            "--json",
        ]
        yield root, paths, originals, srv, env, args, state


def _run(args, env, timeout=120):
    return subprocess.run([*MIGRATE, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_max_duration_stops_in_time_keeps_the_work_and_the_next_run_finishes(slow):
    root, paths, originals, srv, env, args, state = slow
    before = tree_digest(root)
    t0 = time.monotonic()
    p = _run(args + ["--max-duration", "3s"], env)
    took = time.monotonic() - t0
    assert p.returncode == EXIT_WINDOW, p.stderr
    assert "time window" in p.stderr and "resumes" in p.stderr
    assert took < 3 + 10 + 5, took  # the window plus at most the stop grace
    now = tree_digest(root)
    assert {k: now[k] for k in before} == before, "a live database changed although the run stopped before cutover"
    assert any(".staged" in k for k in now), "nothing was staged in the window"
    answered_first = srv.stats.inputs_embedded
    assert answered_first > 0
    p = _run(args, env)
    assert p.returncode == EXIT_OK, p.stderr
    assert json.loads(p.stdout)["outcome"] == "done"
    for path in paths:
        assert_migrated(path, originals[path], dim=4096)
    total = sum(len(d["data"]) for d in originals.values())
    assert srv.stats.inputs_embedded < total + 400, "the second run redid what the first had kept"


def test_pause_file_holds_requests_until_removed(slow):
    root, paths, originals, srv, env, args, state = slow
    state.mkdir(parents=True)
    (state / "PAUSE").touch()
    proc = spawn_migrate(*args, env=env)
    try:
        time.sleep(4)
        assert proc.poll() is None
        probed = srv.stats.inputs_embedded
        assert probed <= 8, f"{probed} texts embedded while paused (only the start-up probe may run)"
        (state / "PAUSE").unlink()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EXIT_OK, err
    assert "PAUSE found: pausing" in err and "removed: resuming" in err
    for path in paths:
        assert_migrated(path, originals[path], dim=4096)


def test_throttle_file_caps_requests_in_flight(tmp_path, key_env):
    root = tmp_path / "video_database"
    paths = build_dvd_tree(root, 8, clips=(10, 20), seed=9)
    originals = {p: json.loads(p.read_text()) for p in paths}
    state = tmp_path / "state"
    state.mkdir()
    (state / "THROTTLE").write_text("# share the GPU with the chat model\nmax_in_flight = 1\n")
    with FakeVLLM(api_key=API_KEY, tokens_per_second=20_000) as srv:
        p = _run(
            [
                *run_args(root, srv.base_url, state),
                "--yes",
                "--batch-size",
                "8",
                "--concurrency",
                "6",
            ],
            dict(os.environ, MIGRATOR_API_KEY=API_KEY),
        )
        assert p.returncode == EXIT_OK, p.stderr
        assert srv.stats.max_in_flight == 1, f"{srv.stats.max_in_flight} requests in flight under a cap of 1"
        assert "throttle now: max_in_flight = 1" in p.stderr
    for path in paths:
        assert_migrated(path, originals[path], dim=4096)


def test_throttle_file_parsing(tmp_path):
    f = tmp_path / "THROTTLE"
    assert read_throttle(f) == Throttle()
    f.write_text("max_in_flight = 3\ntokens_per_second = 1500.5  # night\nbogus = 1\nmax_in_flight\n")
    assert read_throttle(f) == Throttle(max_in_flight=3, tokens_per_second=1500.5)


def test_every_run_appends_to_the_state_log_without_the_key(cli, dvd_tree):
    root, _ = dvd_tree
    r = cli("run", "--root", str(root), "--model", "8b", "--yes")
    assert r.exit_code == EXIT_OK, r.output
    log = (cli.state_dir / "migrator.log").read_text()
    assert "migration" in log and "progress:" in log
    assert "sanity probe: 3 stored texts embedded by Qwen/Qwen3-Embedding-8B into 4096 dims" in log
    assert API_KEY not in log
    r = cli("run", "--root", str(root), "--model", "8b", "--yes", "--until", "6am")
    assert r.exit_code == EXIT_USAGE
    assert (cli.state_dir / "migrator.log").read_text().startswith(log), "the log is appended to"


# ------------------------------------------------------------- schedules
def _cron(*args, env=None):
    return _run(["cron", *args], env or dict(os.environ, MIGRATOR_API_KEY=API_KEY))


def test_the_printed_crontab_line_runs_the_migration_as_cron_would(tmp_path, server, dvd_tree):
    """Paste-ready: the command part of the line, run by sh with cron's bare environment, migrates."""
    root, paths = dvd_tree
    originals = {p: json.loads(p.read_text()) for p in paths}
    key = tmp_path / "key"
    key.write_text(API_KEY + "\n")
    key.chmod(0o600)
    state = tmp_path / "state"
    p = _cron(
        "--every",
        "15m",
        "--root",
        str(root),
        "--model",
        "8b",
        "--endpoint",
        server.base_url,
        "--api-key-file",
        str(key),
        "--state-dir",
        str(state),
        "--max-duration",
        "14m",
    )
    assert p.returncode == EXIT_OK, p.stderr
    assert API_KEY not in p.stdout
    line = [ln for ln in p.stdout.splitlines() if ln and not ln.startswith("#")]
    assert len(line) == 1
    fields = line[0].split(" ", 5)
    assert fields[:5] == ["*/15", "*", "*", "*", "*"]
    command = fields[5]
    assert str(key.resolve()) in command and str(state.resolve()) in command and "--yes" in command
    assert "--max-duration 14m" in command
    r = subprocess.run(
        ["/bin/sh", "-c", command], env={"PATH": "/usr/bin:/bin"}, cwd="/", capture_output=True, text=True, timeout=120
    )
    captured = (state / "cron.log").read_text() if (state / "cron.log").exists() else ""
    assert r.returncode == EXIT_OK, r.stderr + captured
    for path in paths:
        assert_migrated(path, originals[path], dim=4096)
    assert "done" in (state / "migrator.log").read_text()


def test_systemd_units_treat_lock_and_window_exits_as_success(tmp_path):
    p = _cron(
        "--every", "1h", "--systemd", "--root", str(tmp_path), "--model", "8b", "--state-dir", str(tmp_path / "state")
    )
    assert p.returncode == EXIT_OK, p.stderr
    out = p.stdout
    assert f"SuccessExitStatus={EXIT_LOCKED} {EXIT_WINDOW}" in out
    assert "OnUnitInactiveSec=3600s" in out and "[Install]" in out and "WantedBy=timers.target" in out
    assert "--api-key-file" in out  # the comment telling the user where the key must come from
    exec_start = next(ln for ln in out.splitlines() if ln.startswith("ExecStart="))
    argv = shlex.split(exec_start[len("ExecStart=") :])
    assert Path(argv[0]).is_absolute() and argv[1:4] == ["-m", "migrator.cli", "run"]


@pytest.mark.parametrize("every", ["7m", "45s", "5h", "3d", "soon"])
def test_schedules_cron_cannot_express_are_refused(every, tmp_path):
    p = _cron("--every", every, "--root", str(tmp_path), "--model", "8b")
    assert p.returncode == EXIT_USAGE
    assert "--every" in p.stderr or "duration" in p.stderr


def test_bad_window_values_are_refused_before_anything_runs(cli, dvd_tree):
    root, _ = dvd_tree
    before = tree_digest(root)
    r = cli("run", "--root", str(root), "--model", "8b", "--yes", "--until", "6am")
    assert r.exit_code == EXIT_USAGE and "time of day" in r.output
    assert tree_digest(root) == before and not (cli.state_dir / "migrator.db").exists()


# ----------------------------------------------------------------- hooks
def _hook(tmp_path, name, code=0):
    """A hook script that records its environment as JSON and exits with ``code``."""
    out = tmp_path / f"{name}.json"
    script = tmp_path / f"{name}.py"
    script.write_text(f"import json, os, sys\njson.dump(dict(os.environ), open({str(out)!r}, 'w'))\nsys.exit({code})\n")
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}", out


def test_a_failing_before_cutover_hook_holds_the_cutover_until_it_passes(cli, dvd_tree, tmp_path):
    root, paths = dvd_tree
    originals = {p: json.loads(p.read_text()) for p in paths}
    before = tree_digest(root)
    refuse, refused_env = _hook(tmp_path, "refuse", code=3)
    ok, ok_env = _hook(tmp_path, "ok")
    failed, failed_env = _hook(tmp_path, "failed")
    r = cli(
        "run",
        "--root",
        str(root),
        "--model",
        "8b",
        "--yes",
        "--json",
        "--on-before-cutover",
        refuse,
        "--on-failure",
        failed,
    )
    assert r.exit_code == EXIT_HELD, r.output
    doc = json.loads(r.stdout)
    assert doc["outcome"] == "held" and "exited 3" in doc["message"]
    now = tree_digest(root)
    assert {k: now[k] for k in before} == before, "a database was swapped although the hook said no"
    env = json.loads(refused_env.read_text())
    assert env["MIGRATOR_EVENT"] == "before_cutover" and env["MIGRATOR_DATABASES_STAGED"] == str(len(paths))
    assert int(env["MIGRATOR_RECORDS_EMBEDDED"]) == sum(len(d["data"]) for d in originals.values())
    assert API_KEY not in json.dumps(env) and "MIGRATOR_API_KEY" not in env
    assert json.loads(failed_env.read_text())["MIGRATOR_OUTCOME"] == "held"
    assert json.loads(cli("status", "--json").stdout)["migrations"][0]["state"] == "staged"

    r = cli("run", "--yes", "--json", "--on-before-cutover", ok, "--on-success", ok)
    assert r.exit_code == EXIT_OK, r.output
    assert json.loads(r.stdout)["outcome"] == "done"
    env = json.loads(ok_env.read_text())  # the success hook ran last
    assert env["MIGRATOR_EVENT"] == "success" and env["MIGRATOR_DATABASES_CUT_OVER"] == str(len(paths))
    for p in paths:
        assert_migrated(p, originals[p], dim=4096)


def test_migrate_cutover_runs_the_before_cutover_hook_too(cli, dvd_tree, tmp_path):
    """A staged migration swapped in by hand passes the same hook as one `run` swaps in."""
    root, paths = dvd_tree
    before = tree_digest(root)
    refuse, refused_env = _hook(tmp_path, "refuse", code=1)
    ok, _ = _hook(tmp_path, "ok")
    assert cli("run", "--root", str(root), "--model", "8b", "--yes", "--no-cutover").exit_code == EXIT_OK
    r = cli("cutover", "--yes", "--json", "--on-before-cutover", refuse)
    assert r.exit_code == EXIT_HELD, r.output
    assert json.loads(r.stdout)["outcome"] == "held"
    now = tree_digest(root)
    assert {k: now[k] for k in before} == before
    assert json.loads(refused_env.read_text())["MIGRATOR_DATABASES_STAGED"] == str(len(paths))
    r = cli("cutover", "--yes", "--json", "--on-before-cutover", ok)
    assert r.exit_code == EXIT_OK, r.output
    assert json.loads(r.stdout)["outcome"] == "done"


def test_the_failure_hook_hears_of_an_endpoint_that_is_down(cli, dvd_tree, tmp_path, dead_endpoint):
    root, _ = dvd_tree
    failed, failed_env = _hook(tmp_path, "failed")
    r = cli(
        "run",
        "--root",
        str(root),
        "--model",
        "8b",
        "--yes",
        "--on-failure",
        failed,
        "--retry-for",
        "1",
        "--endpoint",
        dead_endpoint,
        endpoint=False,
    )
    assert r.exit_code != EXIT_OK
    env = json.loads(failed_env.read_text())
    assert env["MIGRATOR_EVENT"] == "failure" and env["MIGRATOR_OUTCOME"] == "error"
    assert env["MIGRATOR_EXIT_CODE"] == str(r.exit_code) and env["MIGRATOR_MESSAGE"]


# ------------------------------------------------------------ --serve
STAND_IN = """#!{python}
# a stand-in `vllm`: records how it was started, then serves the fake vLLM (or hangs)
import json, os, sys
args = sys.argv[1:]
if args == ["--version"]:
    print(os.environ.get("STAND_IN_VERSION", "0.32.0"))
    sys.exit(0)
rec = {{"argv": args, "pid": os.getpid(), "key_in_env": os.environ.get("VLLM_API_KEY"),
       "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"), "cpu_kv": os.environ.get("VLLM_CPU_KVCACHE_SPACE"),
       "rpc": os.environ.get("VLLM_RPC_BASE_PATH"),
       "rpc_is_dir": os.path.isdir(os.environ.get("VLLM_RPC_BASE_PATH", ""))}}
open(os.environ["STAND_IN_RECORD"], "w").write(json.dumps(rec))
if os.environ.get("STAND_IN_HANG"):
    import time
    time.sleep(3600)
get = lambda name: args[args.index(name) + 1]
names = []
for a in args:
    if a.startswith("--served-model-name="):
        names = a.split("=", 1)[1].split(",")
os.execv(sys.executable, [sys.executable, "-m", "migrator.testing.server", "--host", get("--host"),
                          "--port", get("--port"), "--model", args[1], "--dim", "4096",
                          "--max-model-len", get("--max-model-len"), "--api-key-env", "VLLM_API_KEY"]
                         + (["--served-model-name", *names] if names else []))
"""


@pytest.fixture
def stand_in(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "vllm"
    exe.write_text(STAND_IN.format(python=sys.executable))
    exe.chmod(0o755)
    record = tmp_path / "vllm-started.json"
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", MIGRATOR_API_KEY=API_KEY, STAND_IN_RECORD=str(record))
    return env, record


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_serve_starts_vllm_migrates_and_stops_it(tmp_path, dvd_tree, stand_in, server):
    root, paths = dvd_tree
    originals = {p: json.loads(p.read_text()) for p in paths}
    env, record = stand_in
    # a short $TMPDIR (tmp_path is too long to hold a socket path: 107 bytes at most)
    tmp = Path(tempfile.mkdtemp(prefix="mt-", dir="/tmp"))
    env = dict(env, TMPDIR=str(tmp))
    state = tmp_path / "state"
    p = _run(
        [
            "run",
            "--serve",
            "--serve-gpu",
            "1",
            "--serve-memory-fraction",
            "0.5",
            "--serve-arg=--dtype=half",
            "--root",
            str(root),
            "--model",
            "8b",
            "--state-dir",
            str(state),
            "--yes",
            "--json",
        ],
        env,
    )
    assert p.returncode == EXIT_OK, p.stderr
    assert json.loads(p.stdout)["outcome"] == "done"
    for path in paths:
        assert_migrated(path, originals[path], dim=4096)
    started = json.loads(record.read_text())
    argv = started["argv"]
    assert argv[:6] == ["serve", "Qwen/Qwen3-Embedding-8B", "--runner", "pooling", "--max-model-len", "8192"]
    assert "--gpu-memory-utilization" in argv and "--dtype=half" in argv and started["gpu"] == "1"
    assert started["key_in_env"] == API_KEY and API_KEY not in " ".join(argv)  # never in its argv
    assert not _alive(started["pid"]), "the vLLM we started is still running"
    assert "stopping the vLLM we started" in p.stderr
    # its ZMQ sockets went in a directory of its own in $TMPDIR, deleted once it stopped
    assert started["rpc_is_dir"] and Path(started["rpc"]).parent == tmp
    assert not Path(started["rpc"]).exists() and list(tmp.iterdir()) == []
    tmp.rmdir()
    # a vLLM someone else runs (this fixture's) was never signalled: it still answers
    with urllib.request.urlopen(server.base_url.rsplit("/v1", 1)[0] + "/health", timeout=5) as r:
        assert r.status == 200


def test_serve_stops_what_it_started_when_the_model_never_loads(tmp_path, dvd_tree, stand_in):
    root, _ = dvd_tree
    env, record = stand_in
    env = dict(env, STAND_IN_HANG="1")
    before = tree_digest(root)
    t0 = time.monotonic()
    p = _run(
        [
            "run",
            "--serve",
            "--serve-timeout",
            "3",
            "--root",
            str(root),
            "--model",
            "8b",
            "--state-dir",
            str(tmp_path / "state"),
            "--yes",
        ],
        env,
    )
    assert p.returncode == 5, p.stderr
    assert "did not serve" in p.stderr and "vllm.log" in p.stderr
    assert time.monotonic() - t0 < 60
    started = json.loads(record.read_text())
    assert not _alive(started["pid"])
    assert started["rpc_is_dir"] and not Path(started["rpc"]).exists()  # deleted on failure too
    assert tree_digest(root) == before


def test_serve_without_vllm_installed_says_what_to_do(tmp_path, dvd_tree):
    root, _ = dvd_tree
    env = dict(os.environ, PATH="/nonexistent", MIGRATOR_API_KEY=API_KEY)
    p = _run(
        ["run", "--serve", "--root", str(root), "--model", "8b", "--state-dir", str(tmp_path / "state"), "--yes"], env
    )
    assert p.returncode == EXIT_USAGE and "no 'vllm' on PATH" in p.stderr


def test_serve_asks_old_vllm_for_task_embed_and_waits_for_a_served_name(tmp_path, dvd_tree, stand_in):
    """vLLM 0.10.0 and older know `--task embed`, not `--runner pooling`; readiness accepts the
    names of `--served-model-name` among the extra flags; the environment reaches the server."""
    root, paths = dvd_tree
    env, record = stand_in
    env = dict(env, STAND_IN_VERSION="0.10.0", VLLM_CPU_KVCACHE_SPACE="1")
    p = _run(
        [
            "run",
            "--serve",
            "--serve-arg=--served-model-name=qwen3-embed",
            "--serve-timeout",
            "60",
            "--root",
            str(root),
            "--model",
            "8b",
            "--state-dir",
            str(tmp_path / "state"),
            "--yes",
            "--no-quality-gate",
        ],
        env,
    )
    assert p.returncode == EXIT_OK, p.stderr
    started = json.loads(record.read_text())
    argv = started["argv"]
    assert argv[:4] == ["serve", "Qwen/Qwen3-Embedding-8B", "--task", "embed"] and "--runner" not in argv
    assert started["cpu_kv"] == "1"  # the environment reached the server
    assert json.loads(paths[0].read_text())["embedding_dim"] == 4096


def test_socket_dir_keeps_the_users_choice_and_a_socket_path_short_enough(tmp_path, monkeypatch):
    env: dict = {}
    short = Path(tempfile.mkdtemp(prefix="mt-", dir="/tmp"))  # tmp_path itself is too long
    monkeypatch.setattr(tempfile, "tempdir", str(short))  # gettempdir() caches $TMPDIR
    d = socket_dir(env)
    assert d is not None and d.is_dir() and d.parent == short and env["VLLM_RPC_BASE_PATH"] == str(d)
    d.rmdir()
    short.rmdir()
    mine = {"VLLM_RPC_BASE_PATH": "/run/vllm"}
    assert socket_dir(mine) is None and mine == {"VLLM_RPC_BASE_PATH": "/run/vllm"}
    deep = tmp_path / ("d" * 80)  # /tmp/.../ddd.../migrator-vllm-xxxxxxxx/<uuid4>: over 107 bytes
    deep.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    untouched: dict = {}
    assert socket_dir(untouched) is None and untouched == {} and list(deep.iterdir()) == []


def test_a_vllm_that_cannot_be_started_leaves_no_socket_directory(tmp_path, monkeypatch):
    exe = tmp_path / "vllm"
    exe.write_text("#!/nonexistent/interpreter\n")  # executable, but exec fails (ENOENT)
    exe.chmod(0o755)
    short = Path(tempfile.mkdtemp(prefix="mt-", dir="/tmp"))
    monkeypatch.setattr(tempfile, "tempdir", str(short))
    try:
        with pytest.raises(OSError):
            with ManagedServer("m", log_dir=tmp_path / "logs", executable=str(exe), startup_timeout=5):
                pass
        assert list(short.iterdir()) == []
    finally:
        shutil.rmtree(short, ignore_errors=True)


def test_served_names_parsing():
    from migrator.vllm.serve import served_names

    assert served_names("m", ()) == ["m"]
    assert served_names("m", ("--dtype=half", "--served-model-name", "a", "b", "--x")) == ["a", "b"]
    assert served_names("m", ("--served-model-name=a",)) == ["a"]


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_while_vllm_starts_stops_it_too(tmp_path, dvd_tree, stand_in, sig):
    """Ctrl-C or SIGTERM while the model loads: exit 130, and the vLLM it started is gone."""
    import signal as signals

    root, _ = dvd_tree
    env, record = stand_in
    env = dict(env, STAND_IN_HANG="1")
    before = tree_digest(root)
    p = spawn_migrate(
        "run",
        "--serve",
        "--serve-timeout",
        "120",
        "--root",
        str(root),
        "--model",
        "8b",
        "--state-dir",
        str(tmp_path / "state"),
        "--yes",
        env=env,
    )
    deadline = time.monotonic() + 60
    while not record.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert record.exists(), p.communicate(timeout=30)
    time.sleep(0.5)
    p.send_signal(getattr(signals, sig))
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "interrupted while vLLM was starting" in err and "Aborted" not in err
    assert not _alive(json.loads(record.read_text())["pid"])
    assert tree_digest(root) == before


# ------------------------------------------------------------ --window
def test_windows_wrap_past_midnight_and_say_how_long_is_left():
    from datetime import datetime as dt

    night = "22:00-06:00"
    assert window.window_left(night, dt(2026, 12, 1, 23, 0)) == 7 * 3600
    assert window.window_left(night, dt(2026, 12, 1, 5, 30)) == 30 * 60
    assert window.window_left(night, dt(2026, 12, 1, 7, 0)) is None  # the tick after 06:00
    assert window.window_left("09:00-17:30", dt(2026, 12, 1, 17, 0)) == 30 * 60
    assert window.window_hours(night) == [22, 23, 0, 1, 2, 3, 4, 5]
    assert window.window_hours("22:30-06:15") == [22, 23, 0, 1, 2, 3, 4, 5, 6]
    with pytest.raises(UsageError):
        window.parse_window("22:00")
    with pytest.raises(UsageError):
        window.parse_window("06:00-06:00")


def test_a_run_outside_its_window_exits_9_at_once_having_done_nothing(cli, dvd_tree):
    from datetime import datetime as dt
    from datetime import timedelta

    root, _ = dvd_tree
    before = tree_digest(root)
    now = dt.now()
    start, end = (now + timedelta(hours=2)).strftime("%H:%M"), (now + timedelta(hours=3)).strftime("%H:%M")
    t0 = time.monotonic()
    r = cli("run", "--root", str(root), "--model", "8b", "--yes", "--window", f"{start}-{end}")
    assert r.exit_code == EXIT_WINDOW, r.output
    assert "outside the window" in r.output and time.monotonic() - t0 < 5
    assert tree_digest(root) == before
    assert not (Path(cli.state_dir) / "migrator.db").exists()


def test_cron_ticks_only_in_the_window_and_refuses_until_alone(tmp_path, dvd_tree):
    root, _ = dvd_tree
    from click.testing import CliRunner

    from migrator.cli import main as cli_main

    def cron(*when: str):
        args = ["cron", "--every", "15m", "--root", str(root), "--model", "8b", *when]
        return CliRunner().invoke(cli_main, [*args, "--state-dir", str(tmp_path / "s")])

    r = cron("--window", "22:00-06:00")
    assert r.exit_code == 0, r.output
    line = [ln for ln in r.stdout.splitlines() if not ln.startswith("#")][0]
    assert line.startswith("*/15 22-23,0-5 * * * ") and "--window 22:00-06:00" in line
    r = cron("--until", "06:00")
    assert r.exit_code == EXIT_USAGE and "--window 22:00-06:00" in r.output


def test_a_symlinked_root_is_the_same_root_for_run_and_for_the_cron_line(tmp_path, server, dvd_tree):
    """`migrate cron` resolved a symlinked --root while run kept it as typed, so the cron tick
    resuming the migration was refused as 'other roots'."""
    from click.testing import CliRunner

    from migrator.cli import main as cli_main

    root, paths = dvd_tree
    link = tmp_path / "videos-link"
    link.symlink_to(root)
    state = tmp_path / "state"
    base = ["--model", "8b", "--endpoint", server.base_url]
    runner = CliRunner(env={"MIGRATOR_API_KEY": API_KEY})
    r = runner.invoke(cli_main, ["run", "--root", str(link), *base, "--state-dir", str(state), "--yes", "--no-cutover"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli_main, ["cron", "--every", "15m", "--root", str(link), *base, "--state-dir", str(state)])
    line = [ln for ln in r.stdout.splitlines() if not ln.startswith("#")][0]
    argv = shlex.split(line.split(" && ")[2].split(" >> ")[0])
    assert str(link) in argv
    r = runner.invoke(cli_main, argv[argv.index("run") :])  # the tick, as cron runs it
    assert r.exit_code == 0, r.output
    assert "other roots" not in r.output and "done" in r.output
    r = runner.invoke(cli_main, ["run", "--root", str(root), *base, "--state-dir", str(state), "--yes"])
    assert "other roots" not in r.output  # the target, typed directly
