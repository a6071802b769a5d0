"""The job database: Alembic schema, opening and upgrading it, refusing what it cannot
read (newer, corrupt, half-written), and `status` as a true read-only reader."""

from __future__ import annotations

import json
import os
import random
import re
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from pathlib import Path

from alembic.script import ScriptDirectory
from click.testing import CliRunner
from filelock import FileLock

from dvdcheck import assert_migrated
from helpers import API_KEY, MIGRATE, Cli, migration_row, run_args, spawn_migrate, tree_digest
from migrator.cli import main as cli_main
from migrator.errors import EXIT_LOCKED, EXIT_STATE, EXIT_USAGE, LockHeld
from migrator.files.layout import spool_path
from migrator.jobs.lock import HOLDER_NAME, LOCK_NAME, state_lock
from migrator.jobs.models import Migration
from migrator.jobs.store import DB_NAME, HEAD_REVISION, alembic_config, open_state
from migrator.testing.corpus import build_dvd_tree
from migrator.testing.server import FakeVLLM

REPO = Path(__file__).resolve().parent.parent
ALEMBIC = Path(sys.executable).with_name("alembic")
JOB_TABLES = {"migrations", "databases", "batches", "events"}
HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_the_fast_open_knows_alembics_head():
    """open_state skips Alembic when the job database is at HEAD_REVISION: it must be the head."""
    assert HEAD_REVISION == HEAD


# ---------------------------------------------------------------- helpers
def _ro(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True)


def _tables(db: Path) -> set[str]:
    con = _ro(db)
    try:
        return {
            r[0]
            for r in con.execute("select name from sqlite_master where type='table'")
            if not r[0].startswith("sqlite_")
        }
    finally:
        con.close()


def _versions(db: Path) -> list[str]:
    con = _ro(db)
    try:
        return [r[0] for r in con.execute("select version_num from alembic_version")]
    finally:
        con.close()


def _schema(db: Path) -> dict:
    """What a schema is, whatever DDL text made it (a new job database is made from the
    models in one go, an upgraded one by the revisions): each table's columns (name, type,
    not null, default, primary key), indexes (name, unique, columns) and foreign keys."""
    con = _ro(db)
    try:
        out = {}
        for (table,) in con.execute("select name from sqlite_master where type = 'table' order by name"):
            columns = {tuple(r[1:]) for r in con.execute(f"pragma table_info('{table}')")}
            indexes = {
                (name, unique, tuple(c[2] for c in con.execute(f"pragma index_info('{name}')")))
                for _, name, unique, *_ in con.execute(f"pragma index_list('{table}')")
                if not name.startswith("sqlite_autoindex")
            }
            uniques = {
                tuple(c[2] for c in con.execute(f"pragma index_info('{name}')"))
                for _, name, unique, *_ in con.execute(f"pragma index_list('{table}')")
                if unique
            }
            fks = {tuple(r[2:5]) + (r[6],) for r in con.execute(f"pragma foreign_key_list('{table}')")}
            out[table] = (columns, indexes, uniques, fks)
        return out
    finally:
        con.close()


def _file_state(p: Path) -> tuple[int, bytes]:
    return os.stat(p).st_mtime_ns, p.read_bytes()


def _alembic(*args: str, db: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MIGRATOR_STATE_DIR"}
    env["MIGRATOR_STATE_URL"] = f"sqlite:///{db}"
    return subprocess.run([str(ALEMBIC), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


def _one_line_error(r) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{r.stderr}"
    assert lines[0].startswith("migrate: error: "), lines[0]
    assert "Traceback" not in r.stderr
    return lines[0]


def _invoke(cli: Cli, *args: str):
    """Like ``cli(...)`` but an uncaught exception becomes exit code 1 instead of escaping."""
    argv = list(args) + ["--state-dir", str(cli.state_dir)]
    if args[0] == "run":
        argv += ["--endpoint", cli.endpoint, "--retry-for", "5", "--request-timeout", "10"]
    return CliRunner().invoke(cli_main, argv, catch_exceptions=True)


def _run_ok(cli, root, *extra):
    r = cli("run", "--root", str(root), "--model", "8b", "--yes", *extra)
    assert r.exit_code == 0, r.output
    return r


# ------------------------------------------------------- alembic by hand
def test_alembic_cli_upgrade_downgrade_upgrade_and_models_match(tmp_path):
    db = tmp_path / "x.db"
    repo_db = REPO / "state" / DB_NAME
    repo_db_before = _file_state(repo_db) if repo_db.exists() else None

    r = _alembic("upgrade", "head", db=db)
    assert r.returncode == 0, r.stderr
    assert db.exists()  # MIGRATOR_STATE_URL was honoured
    assert _tables(db) == JOB_TABLES | {"alembic_version"}
    assert _versions(db) == [HEAD]
    # a row written at head is dropped with its table by the downgrade
    con = sqlite3.connect(db)
    con.execute("insert into events(at, level, message) values ('2026-01-01', 'info', 'hello')")
    con.commit()
    con.close()

    r = _alembic("downgrade", "base", db=db)
    assert r.returncode == 0, r.stderr
    assert _tables(db) <= {"alembic_version"}
    if _tables(db):
        assert _versions(db) == []

    r = _alembic("upgrade", "head", db=db)
    assert r.returncode == 0, r.stderr
    assert _tables(db) == JOB_TABLES | {"alembic_version"}
    assert _versions(db) == [HEAD]
    con = _ro(db)
    assert con.execute("select count(*) from events").fetchone()[0] == 0
    con.close()

    # the models and the migrations describe the same schema
    r = _alembic("check", db=db)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "No new upgrade operations detected" in r.stdout + r.stderr

    # the schema migrator builds for itself is the one `alembic upgrade head` builds
    own = tmp_path / "own"
    open_state(own).close()
    assert _schema(own / DB_NAME) == _schema(db)

    # the repository's own ./state was not touched
    if repo_db_before is None:
        assert not repo_db.exists()
    else:
        assert _file_state(repo_db) == repo_db_before


# ------------------------------------------------------------ open_state
def test_open_state_creates_upgrades_and_reopening_is_a_noop(tmp_path):
    state = tmp_path / "deep" / "er" / "state"
    assert open_state(state, readonly=True) is None  # a reader creates nothing
    assert not (tmp_path / "deep").exists()

    store = open_state(state)
    try:
        with store.session() as s:
            s.add(migration_row("m-1", endpoint="http://x/v1", roots=["/r"]))
    finally:
        store.close()
    db = state / DB_NAME
    assert store.location == str(db)
    assert _versions(db) == [HEAD]
    assert _tables(db) == JOB_TABLES | {"alembic_version"}

    before = _file_state(db)
    time.sleep(0.02)
    store = open_state(state)  # second open: already at head
    try:
        with store.session() as s:
            assert s.get(Migration, "m-1").requested_model == "8b"
    finally:
        store.close()
    assert _file_state(db) == before  # not a byte, not the mtime
    assert sorted(os.listdir(state)) == [DB_NAME]  # no journal or other file left


# --------------------------------------------- databases it cannot read
def test_newer_schema_revision_is_refused_and_nothing_is_touched(cli, dvd_tree, server):
    root, _ = dvd_tree
    open_state(cli.state_dir).close()
    db = cli.state_dir / DB_NAME
    con = sqlite3.connect(db)
    con.execute("update alembic_version set version_num = 'ffff9999'")
    con.commit()
    con.close()
    tree_before, db_before = tree_digest(root), db.read_bytes()

    r = cli("run", "--root", str(root), "--model", "8b", "--yes")
    assert r.exit_code == EXIT_STATE, r.output
    line = _one_line_error(r)
    assert "newer version" in line and "ffff9999" in line and str(db) in line
    assert server.stats.requests_total == 0  # refused before contacting the endpoint

    for args in (("status",), ("status", "--json"), ("cutover", "--yes"), ("rollback", "--yes")):
        r = cli(*args)
        assert r.exit_code == EXIT_STATE, (args, r.output)
        assert "newer version" in _one_line_error(r)

    assert tree_digest(root) == tree_before
    assert db.read_bytes() == db_before  # not "upgraded" over, not rewritten
    assert _versions(db) == ["ffff9999"]


def test_corrupt_state_file_is_refused_in_one_line_naming_it(cli, dvd_tree, server):
    root, _ = dvd_tree
    cli.state_dir.mkdir()
    db = cli.state_dir / DB_NAME
    garbage = random.Random(7).randbytes(16384)
    assert not garbage.startswith(b"SQLite format 3")
    db.write_bytes(garbage)
    tree_before = tree_digest(root)

    for args in (
        ("run", "--root", str(root), "--model", "8b", "--yes"),
        ("status",),
        ("status", "--json"),
        ("cutover", "--yes"),
        ("rollback", "--yes"),
    ):
        r = cli(*args)
        assert r.exit_code == EXIT_STATE, (args, r.output)
        line = _one_line_error(r)
        assert str(db) in line, line
        assert r.stdout == ""

    assert db.read_bytes() == garbage  # the evidence is left as it was
    assert tree_digest(root) == tree_before
    assert server.stats.requests_total == 0


def test_corruption_inside_a_table_is_a_state_error_not_a_traceback(cli, dvd_tree):
    root, _ = dvd_tree
    _run_ok(cli, root, "--no-cutover")  # staged, waiting for cutover
    db = cli.state_dir / DB_NAME
    con = _ro(db)
    page_size = con.execute("pragma page_size").fetchone()[0]
    rootpage = con.execute("select rootpage from sqlite_master where name='migrations'").fetchone()[0]
    con.close()
    assert rootpage > 1
    with open(db, "r+b") as f:  # one b-tree page of the migrations table
        f.seek((rootpage - 1) * page_size)
        f.write(b"\xde\xad\xbe\xef" * (page_size // 4))
    tree_before = tree_digest(root)

    for args in (
        ("status", "--json"),
        ("cutover", "--yes"),
        ("rollback", "--yes"),
        ("run", "--root", str(root), "--model", "8b", "--yes"),
    ):
        r = _invoke(cli, *args)
        assert r.exit_code == EXIT_STATE, (args, r.exit_code, repr(r.exception))
        assert str(db) in _one_line_error(r)
    assert tree_digest(root) == tree_before


def _leave_hot_journal(db: Path) -> None:
    """A writer that dies in the middle of a transaction, after SQLite spilled pages to the file."""
    code = textwrap.dedent(f"""
        import os, sqlite3
        con = sqlite3.connect({str(db)!r}, isolation_level=None)
        con.execute("pragma journal_mode=DELETE")
        con.execute("pragma cache_size=1")
        con.execute("begin")
        for i in range(300):
            con.execute("insert into events(at, level, message) values ('2026-01-01', 'error', ?)",
                        ("uncommitted " + "x" * 3000,))
        os._exit(9)
    """)
    r = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert r.returncode == 9
    journal = db.with_name(db.name + "-journal")
    assert journal.exists() and journal.stat().st_size > 0  # a hot journal is left behind


def test_writer_recovers_from_a_hot_journal_left_by_a_killed_writer(cli, dvd_tree):
    root, _ = dvd_tree
    before = tree_digest(root)
    _run_ok(cli, root)
    db = cli.state_dir / DB_NAME
    _leave_hot_journal(db)
    r = cli("rollback", "--yes")  # a writer: SQLite rolls the journal back
    assert r.exit_code == 0, r.output
    assert "6 restored" in r.stdout
    assert tree_digest(root) == before
    con = _ro(db)
    assert con.execute("select count(*) from events where message like 'uncommitted%'").fetchone()[0] == 0
    assert con.execute("pragma integrity_check").fetchone()[0] == "ok"
    con.close()
    assert not db.with_name(db.name + "-journal").exists()


def test_status_answers_after_a_writer_was_killed_mid_commit(cli, dvd_tree):
    root, _ = dvd_tree
    _run_ok(cli, root)
    _leave_hot_journal(cli.state_dir / DB_NAME)
    r = cli("status", "--json")
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)["migrations"][0]
    assert m["state"] == "done" and m["by_state"] == {"cut_over": 6}
    assert m["errors"] == []  # the uncommitted rows are not reported


_CRASH_AT_SECOND_CREATE = """
import os, sys
from sqlalchemy import event
from sqlalchemy.engine import Engine

created = 0

@event.listens_for(Engine, "after_cursor_execute")
def _die(conn, cursor, statement, params, context, executemany):
    global created
    if statement.lstrip().upper().startswith("CREATE"):
        created += 1
        if created == 2:          # alembic_version and one job table exist: the process dies
            os._exit(9)

from migrator.jobs.store import open_state
open_state(sys.argv[1])
"""


def test_a_process_killed_while_creating_the_schema_does_not_brick_the_state_dir(tmp_path):
    state = tmp_path / "state"
    r = subprocess.run([sys.executable, "-c", _CRASH_AT_SECOND_CREATE, str(state)], timeout=60)
    assert r.returncode == 9  # died in the middle of the upgrade
    store = open_state(state)  # the next command must still start
    store.close()
    assert _versions(state / DB_NAME) == [HEAD]
    assert _tables(state / DB_NAME) == JOB_TABLES | {"alembic_version"}


# ---------------------------------------------------- status is a reader
def test_status_on_a_fresh_directory_creates_nothing(tmp_path):
    nested = Cli(None, tmp_path / "nested" / "st")
    r = nested("status")
    assert r.exit_code == 0, r.output
    assert "no migrations" in r.stdout
    r = nested("status", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["migrations"] == []
    assert not (tmp_path / "nested").exists()
    r = nested("status", state=False)  # default ./state (cwd is tmp_path)
    assert r.exit_code == 0 and "no migrations" in r.stdout
    assert sorted(os.listdir(tmp_path)) == []


def test_status_after_a_run_does_not_modify_the_job_database(cli, dvd_tree):
    root, _ = dvd_tree
    _run_ok(cli, root)
    db = cli.state_dir / DB_NAME
    listing = sorted(os.listdir(cli.state_dir))
    before = _file_state(db)
    time.sleep(0.02)
    for args in (("status",), ("status", "--json"), ("status", "--databases")):
        r = cli(*args)
        assert r.exit_code == 0, r.output
    doc = json.loads(cli("status", "--json").stdout)
    assert doc["migrations"][0]["state"] == "done"
    assert _file_state(db) == before
    assert sorted(os.listdir(cli.state_dir)) == listing


def test_status_answers_while_a_writer_holds_the_lock(cli, dvd_tree):
    root, _ = dvd_tree
    _run_ok(cli, root)
    with state_lock(cli.state_dir, "run"):
        r = cli("status", "--json")
        assert r.exit_code == 0, r.output
        doc = json.loads(r.stdout)
        assert len(doc["migrations"]) == 1 and doc["migrations"][0]["state"] == "done"
        assert (cli.state_dir / HOLDER_NAME).exists()  # status does not touch the lock
        assert cli("cutover", "--yes").exit_code == EXIT_LOCKED  # while writers are refused
    # and on a state directory that holds only the lock, no job database yet
    other = Cli(None, cli.state_dir.parent / "other")
    with state_lock(other.state_dir, "run"):
        r = other("status", "--json")
        assert r.exit_code == 0 and json.loads(r.stdout)["migrations"] == []
        assert not (other.state_dir / DB_NAME).exists()


def test_a_refused_command_names_a_holder_that_took_the_lock_an_instant_before(tmp_path):
    """The holder names itself just after it takes the lock; a command refused in between
    still names it (the CI race behind test_two_runs_started_at_once), and a lock whose holder
    never names itself is reported, after a short wait, as another migrate process."""
    state = tmp_path / "state"
    state.mkdir()
    raw = FileLock(str(state / LOCK_NAME), timeout=0)
    raw.acquire()
    try:
        late = threading.Timer(
            0.3,
            lambda: (state / HOLDER_NAME).write_text(
                json.dumps({"pid": 4242, "host": "h", "command": "run", "since": 0})
            ),
        )
        late.start()
        try:
            with state_lock(state, "cutover"):
                raise AssertionError("the lock is held: state_lock must refuse")
        except LockHeld as e:
            assert "'migrate run' (pid 4242 on h" in str(e), e
        late.join()
        (state / HOLDER_NAME).unlink()
        t0 = time.monotonic()
        try:
            with state_lock(state, "cutover"):
                raise AssertionError("the lock is held: state_lock must refuse")
        except LockHeld as e:
            assert "held by another migrate process" in str(e), e
        assert time.monotonic() - t0 < 5
    finally:
        raw.release()
    with state_lock(state, "run"):  # free again: taken, and the holder named whole
        assert json.loads((state / HOLDER_NAME).read_text())["command"] == "run"
        assert [n for n in os.listdir(state) if n.startswith(".")] == []
    assert not (state / HOLDER_NAME).exists()


def test_status_answers_throughout_a_real_run(tmp_path, dvd_tree, key_env):
    root, paths = dvd_tree
    state = tmp_path / "state"
    db = state / DB_NAME
    total = sum(len(json.loads(p.read_text())["data"]) for p in paths)
    with FakeVLLM(api_key=key_env, tokens_per_second=5000) as srv:
        reader = Cli(srv.base_url, state)
        proc = spawn_migrate(
            *run_args(root, srv.base_url, state),
            "--batch-size",
            "4",
            "--concurrency",
            "2",
            "--yes",
        )
        try:
            seen = []
            deadline = time.monotonic() + 60
            while proc.poll() is None and time.monotonic() < deadline:
                try:  # wait until the run has built its schema
                    ready = db.exists() and _versions(db) == [HEAD]
                except sqlite3.Error:
                    ready = False
                if not ready:
                    time.sleep(0.01)
                    continue
                r = reader("status", "--json")
                assert r.exit_code == 0, r.output
                migs = json.loads(r.stdout)["migrations"]
                if migs and proc.poll() is None:
                    seen.append(migs[0]["records_done"])
                time.sleep(0.05)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, err
    assert len(seen) >= 3, seen  # answered several times mid-run
    assert seen == sorted(seen) and seen[0] < total  # progress only moves forward
    m = json.loads(reader("status", "--json").stdout)["migrations"][0]
    assert m["state"] == "done" and m["records_done"] == total


# ------------------------------------------------- nothing to act upon
def test_cutover_and_rollback_with_nothing_to_act_on_exit_2(cli, dvd_tree):
    root, _ = dvd_tree
    state = cli.state_dir
    r = cli("cutover", "--yes")  # fresh state directory
    assert r.exit_code == EXIT_USAGE
    assert "no migrations recorded" in _one_line_error(r)
    r = cli("rollback", "--yes")
    assert r.exit_code == EXIT_USAGE
    assert "no migrations recorded" in _one_line_error(r)
    assert not state.exists()  # and nothing was created

    _run_ok(cli, root)
    after = tree_digest(root)
    mid = json.loads(cli("status", "--json").stdout)["migrations"][0]["id"]
    r = cli("cutover", "--yes")  # the migration is done: nothing staged
    assert r.exit_code == EXIT_USAGE
    assert "no migration to cut over" in _one_line_error(r)
    r = cli("cutover", "--yes", "--migration", mid)
    assert r.exit_code == EXIT_USAGE
    assert f"migration {mid} is done" in _one_line_error(r)
    for cmd in ("rollback", "cutover"):
        r = cli(cmd, "--yes", "--migration", "nosuch")
        assert r.exit_code == EXIT_USAGE
        line = _one_line_error(r)
        assert "no migration 'nosuch'" in line and "migrate status" in line
    assert tree_digest(root) == after  # nothing was swapped either way


# ------------------------------------------------- spool (revision 0005)
def _batches(db: Path) -> list[tuple]:
    """(database id, path, migration, batch id, spool offset or None, count, dim, crc) in order."""
    con = _ro(db)
    try:
        at_0005 = "spool_offset" in {c[1] for c in con.execute("pragma table_info(batches)")}
        offset, crc = ("b.spool_offset", "b.crc32") if at_0005 else ("null", "null")
        return con.execute(
            f"select d.id, d.path, d.migration_id, b.id, {offset}, b.count, b.dim, {crc} "
            "from batches b join databases d on d.id = b.database_id order by d.id, b.start"
        ).fetchall()
    finally:
        con.close()


def _spooled_tree(tmp_path, server):
    """Three DVD databases, each above 16 records (spooled at 4 texts a request), and how to
    run `migrate run` over them as a process."""
    root = tmp_path / "video_database"
    paths = build_dvd_tree(root, 3, clips=(30, 40), seed=5)
    originals = {p: json.loads(p.read_text()) for p in paths}
    # no quality gate: its queries would count among the texts embedded
    args = [*MIGRATE, *run_args(root, server.base_url, tmp_path / "state", "--batch-size", "4")]
    args += ["--no-quality-gate", "--yes"]
    env = {**os.environ, "MIGRATOR_API_KEY": API_KEY}

    def run(crash_at: str | None = None) -> int:
        """Runs it; returns how many records it embedded: the texts the server embedded for
        it, less the start-up probes' (one text for the native dimension, then the sanity
        probe's stored texts)."""
        e = dict(env, MIGRATOR_CRASH_AT=crash_at) if crash_at else env
        before = server.stats.inputs_embedded
        p = subprocess.run(args, env=e, capture_output=True, text=True, timeout=120)
        assert p.returncode == (-9 if crash_at else 0), p.stderr
        probe = re.search(r"sanity probe: (\d+) stored texts", p.stderr)
        assert probe, p.stderr
        return server.stats.inputs_embedded - before - 1 - int(probe[1])

    return paths, originals, tmp_path / "state" / DB_NAME, run


def test_blob_batches_from_before_the_spool_are_staged_beside_spooled_ones(tmp_path, server):
    """A run killed mid-database under revision 0004 left its committed vectors as blobs in
    the job table. Made here by killing a run, moving its spooled batches into their rows as
    0004 wrote them, deleting the spool and downgrading; the next run upgrades on open,
    resumes the database from its blobs, appends new batches to a new spool and is killed
    again; the last stages blobs and spooled batches into one file. Nothing committed is
    embedded twice, and every vector is right."""
    paths, originals, db, run = _spooled_tree(tmp_path, server)
    total = sum(len(o["data"]) for o in originals.values())
    run("batch.committed:3")
    rows = _batches(db)
    assert rows and {r[4] is not None for r in rows} == {True}  # 0005 spools every batch
    con = sqlite3.connect(db)
    for _, path, mid, bid, offset, count, dim, crc in rows:
        data = Path(spool_path(path, mid)).read_bytes()[offset : offset + count * dim * 4]
        assert zlib.crc32(data) == crc  # the spool holds what the done-mark says
        con.execute("update batches set vectors = ?, spool_offset = null, crc32 = null where id = ?", (data, bid))
    con.commit()
    con.close()
    for path, mid in {(r[1], r[2]) for r in rows}:
        Path(spool_path(path, mid)).unlink()  # 0004 had no spool
    r = _alembic("downgrade", "0004", db=db)
    assert r.returncode == 0, r.stderr
    assert _versions(db) == ["0004"]
    assert len(_batches(db)) == len(rows)  # no spooled batch to drop: every blob kept

    run("batch.committed:2")
    assert _versions(db) == [HEAD]  # upgraded on open
    mixed = _batches(db)
    kinds = {r[4] is None for r in mixed}
    assert kinds == {True, False}, f"blob and spooled batches both committed: {kinds}"
    committed = sum(r[5] for r in mixed)
    assert run() == total - committed  # nothing committed is embedded again
    assert _batches(db) == []
    for path in paths:
        assert_migrated(path, originals[path], dim=4096)
        assert not [n for n in os.listdir(path.parent) if n.endswith(".spool")], path.parent


def test_downgrading_below_the_spool_drops_spooled_batches_with_their_done_count(tmp_path, server):
    """Revision 0004 cannot hold a spooled batch: the downgrade deletes them and sets their
    database back to no record done, so no record counts as done without its vectors."""
    paths, originals, db, run = _spooled_tree(tmp_path, server)
    total = sum(len(o["data"]) for o in originals.values())
    run("batch.committed:3")
    spooled = {r[0] for r in _batches(db)}
    assert spooled
    r = _alembic("downgrade", "0004", db=db)
    assert r.returncode == 0, r.stderr
    assert _batches(db) == []
    con = _ro(db)
    n_done = dict(con.execute("select id, n_done from databases").fetchall())
    con.close()
    assert {i: n_done[i] for i in spooled} == {i: 0 for i in spooled}
    assert run() == total
    for path in paths:
        assert_migrated(path, originals[path], dim=4096)
        assert not [n for n in os.listdir(path.parent) if n.endswith(".spool")], path.parent
