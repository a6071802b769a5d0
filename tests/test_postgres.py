"""The job table on a real PostgreSQL: the same models and Alembic migrations as SQLite,
and several `migrate run` workers dividing the databases with leases, one SIGKILLed.

Needs a server (`scripts/pg.sh start`, MIGRATOR_TEST_PG_URL); skipped without one,
except in CI, which starts one (see conftest.pg_url)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from click.testing import CliRunner
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import ProgrammingError

from dvdcheck import assert_migrated
from helpers import API_KEY, MIGRATE, add_migration_with_jobs, tree_digest
from migrator.apps.dvd import DVD_PREFIX
from migrator.cli import main as cli_main
from migrator.errors import EXIT_LOCKED, EXIT_OK, EXIT_USAGE
from migrator.jobs.store import alembic_config
from migrator.testing.corpus import build_dvd_tree
from migrator.testing.server import FakeVLLM

REPO = Path(__file__).resolve().parent.parent
ALEMBIC = Path(sys.executable).with_name("alembic")
HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()
JOB_TABLES = {"migrations", "databases", "batches", "events"}
SMALL = "Qwen/Qwen3-Embedding-0.6B"


def _alembic(*args: str, url: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MIGRATOR_STATE_DIR"}
    env["MIGRATOR_STATE_URL"] = url
    return subprocess.run([str(ALEMBIC), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _query(url: str, sql: str, **params) -> list:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql), params).all()
    finally:
        engine.dispose()


def test_alembic_upgrade_head_and_downgrade_base_on_postgres(pg_url):
    r = _alembic("upgrade", "head", url=pg_url)
    assert r.returncode == 0, r.stderr
    assert JOB_TABLES | {"alembic_version"} == _tables(pg_url)
    assert _query(pg_url, "select version_num from alembic_version") == [(HEAD,)]
    columns = {c["name"] for c in inspect(create_engine(pg_url)).get_columns("databases")}
    assert {"lease_owner", "lease_until"} <= columns
    r = _alembic("downgrade", "base", url=pg_url)
    assert r.returncode == 0, r.stderr
    assert _tables(pg_url) == {"alembic_version"}
    r = _alembic("upgrade", "head", url=pg_url)  # and back: nothing left behind
    assert r.returncode == 0, r.stderr
    assert JOB_TABLES <= _tables(pg_url)


def _cli(*args: str):
    return CliRunner().invoke(cli_main, list(args), catch_exceptions=False)


def test_a_migration_runs_and_rolls_back_with_the_job_table_on_postgres(pg_url, server, dvd_tree, tmp_path):
    root, paths = dvd_tree
    before = tree_digest(root)
    originals = {p: json.loads(p.read_text()) for p in paths}
    r = _cli(
        "run",
        "--root",
        str(root),
        "--model",
        "8b",
        "--endpoint",
        server.base_url,
        "--yes",
        "--state-url",
        pg_url,
        "--state-dir",
        str(tmp_path / "st"),
    )
    assert r.exit_code == EXIT_OK, r.output
    for p in paths:
        assert_migrated(p, originals[p], dim=4096)
    assert not (tmp_path / "st" / "migrator.db").exists()  # the job table is the server's
    assert _query(pg_url, "select state, count(*) from databases group by state") == [("cut_over", len(paths))]
    r = _cli("status", "--json", "--state-url", pg_url)
    assert r.exit_code == EXIT_OK, r.output
    report = json.loads(r.output)
    assert report["migrations"][0]["state"] == "done"
    assert report["migrations"][0]["by_state"] == {"cut_over": len(paths)}
    r = _cli("rollback", "--yes", "--state-url", pg_url, "--state-dir", str(tmp_path / "st"))
    assert r.exit_code == EXIT_OK, r.output
    after = {k: v for k, v in tree_digest(root).items() if ".migrator" not in k}
    assert after == before


def test_cutover_waits_while_a_worker_holds_the_job_table(pg_url, server, dvd_tree, tmp_path):
    """A worker holds the writers' lock shared; cutover and rollback need it alone, across hosts."""
    root, _ = dvd_tree
    r = _cli(
        "run",
        "--root",
        str(root),
        "--model",
        "8b",
        "--endpoint",
        server.base_url,
        "--yes",
        "--no-cutover",
        "--state-url",
        pg_url,
        "--state-dir",
        str(tmp_path / "st"),
    )
    assert r.exit_code == EXIT_OK, r.output
    from migrator.jobs.lock import server_lock
    from migrator.jobs.store import open_state

    store = open_state(url=pg_url, application="migrate run 4242@otherhost")
    try:
        with server_lock(store.engine, store.location, "run", shared=True):
            r = _cli("cutover", "--yes", "--state-url", pg_url, "--state-dir", str(tmp_path / "st"))
            assert r.exit_code == EXIT_LOCKED, r.output
            assert "migrate run 4242@otherhost" in r.output  # who is in the way
    finally:
        store.close()
    r = _cli("cutover", "--yes", "--state-url", pg_url, "--state-dir", str(tmp_path / "st"))
    assert r.exit_code == EXIT_OK, r.output


def test_a_password_in_the_state_url_is_refused_on_the_command_line(tmp_path):
    r = _cli("status", "--state-url", "postgresql+psycopg://migrator:hunter2secret@127.0.0.1/x")
    assert r.exit_code == EXIT_USAGE
    assert "PGPASSWORD" in r.output and "hunter2secret" not in r.output


# ------------------------------------------------------------ many workers
def _bare_texts(path: Path) -> list[str]:
    return [DVD_PREFIX.sub("", rec["caption"], count=1) for rec in json.loads(path.read_text())["data"]]


def _held_by(url: str, pid: int) -> list[int]:
    return [
        r[0]
        for r in _query(
            url,
            "select id from databases where lease_owner like :who and "
            "lease_until is not null and state in ('pending', 'embedding')",
            who=f"%:{pid}:%",
        )
    ]


def test_three_workers_two_endpoints_one_killed_every_database_migrated_once(pg_url, tmp_path):
    """Three `migrate run` processes share a PostgreSQL job table and two test servers. One
    is SIGKILLed while it holds databases; its leases run out and the others take them over.
    Every database ends migrated exactly once, correctly, with its backup; no database was
    embedded by two workers at the same time; both servers did work."""
    root = tmp_path / "video_database"
    paths = build_dvd_tree(root, 30, clips=(20, 60), seed=5)
    originals = {p: json.loads(p.read_text()) for p in paths}
    raw = {p: p.read_bytes() for p in paths}
    db_of: dict[str, Path] = {}
    first3: set[tuple[str, ...]] = set()
    for p in paths:
        texts = _bare_texts(p)
        first3.add(tuple(texts[:3]))
        for t in texts:
            db_of.setdefault(t, p)
    servers = [FakeVLLM(model=SMALL, api_key=API_KEY, tokens_per_second=9000) for _ in range(2)]
    for srv in servers:
        srv.request_log = []
        srv.start()
    env = dict(os.environ, MIGRATOR_API_KEY=API_KEY, MIGRATOR_STATE_URL=pg_url, MIGRATOR_LEASE_SECONDS="3")
    env.pop("MIGRATOR_STATE_DIR", None)
    procs: list[subprocess.Popen] = []
    try:
        for i in range(3):
            args = [
                *MIGRATE,
                "run",
                "--root",
                str(root),
                "--model",
                "0.6b",
                "--yes",
                "--state-dir",
                str(tmp_path / f"state{i}"),
                "--request-timeout",
                "20",
            ]
            for srv in servers:
                args += ["--endpoint", srv.base_url]
            procs.append(subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
            time.sleep(0.3)
        # The victim is whichever worker holds databases once 3 are staged: a claim takes about
        # 2,048 records, so one worker may claim all 1,292 here while the others wait.
        victim: subprocess.Popen | None = None
        held_at_kill: list[int] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and victim is None and all(p.poll() is None for p in procs):
            try:
                staged = _query(pg_url, "select count(*) from databases where state = 'staged'")
                if staged[0][0] >= 3:
                    for p in procs:
                        if held_at_kill := _held_by(pg_url, p.pid):
                            victim = p
                            break
            except ProgrammingError:  # the first worker has not created the job table yet
                pass
            time.sleep(0.05)
        assert victim is not None and victim.poll() is None, "no worker held a database while it ran: " + "".join(
            p.communicate()[1][-1500:] for p in procs if p.poll() is not None
        )
        killed_at = time.monotonic()  # the servers run in this process: the same clock
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        # what it held when it died (it may have staged some of what it held a moment before)
        held_at_kill = _held_by(pg_url, victim.pid)
        assert held_at_kill, "the killed worker held no database when it died"
        others = [p for p in procs if p is not victim]
        outs = [p.communicate(timeout=180) for p in others]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for srv in servers:
            srv.stop()
    for p, (out, err) in zip(others, outs):
        assert p.returncode == EXIT_OK, out + err[-3000:]
    # one migration, done; every database cut over once, the victim's included
    assert _query(pg_url, "select state from migrations") == [("done",)]
    rows = _query(pg_url, "select id, path, state, backup_path, lease_owner from databases")
    assert len(rows) == len(paths) and {r.state for r in rows} == {"cut_over"}
    victim_tag = f":{victim.pid}:"
    for r in rows:
        if r.id in held_at_kill:
            assert victim_tag not in (r.lease_owner or ""), f"{r.path}: staged by the killed worker?"
    for r in rows:
        p = Path(r.path)
        assert_migrated(p, originals[p], dim=1024, native_dim=1024, seed=SMALL)
        assert Path(r.backup_path).read_bytes() == raw[p]  # the old file, kept byte for byte
        assert len(list(p.parent.glob("*.staged*"))) == 0
    # nothing embedded by two workers at once (sanity probes excepted: 3 texts, read-only)
    # A request of the killed worker may still be served after its death (a long batch on a
    # slow server); what the dead cannot use does not count past the kill.
    dead = f":{victim.pid}"
    spans: dict[Path, list[tuple[float, float, str]]] = defaultdict(list)
    texts_by_server = []
    for srv in servers:
        n = 0
        for req in srv.request_log:
            dbs = {db_of[t] for t in req.texts if t in db_of}
            if not dbs or tuple(req.texts) in first3:
                continue
            n += len(req.texts)
            ended = min(req.ended, killed_at) if req.worker.endswith(dead) else req.ended
            for db in dbs:
                spans[db].append((req.started, ended, req.worker))
        texts_by_server.append(n)
    workers_seen = {w for s in spans.values() for _, _, w in s}
    assert len(workers_seen) >= 2, workers_seen
    taken_over = 0
    for db, s in spans.items():
        for a0, a1, aw in s:
            for b0, b1, bw in s:
                if aw != bw:
                    assert b0 >= a1 - 0.05 or a0 >= b1 - 0.05, f"{db}: embedded by {aw} and {bw} at the same time"
        taken_over += len({w for _, _, w in s}) > 1
    total = sum(texts_by_server)
    assert min(texts_by_server) > 0.2 * total, texts_by_server  # both endpoints did real work
    print(
        f"\n3 workers, 2 endpoints: {len(paths)} databases; killed pid {victim.pid} holding "
        f"{len(held_at_kill)}; texts per endpoint {texts_by_server}; {taken_over} database(s) "
        f"embedded partly by the killed worker and finished by another"
    )


def test_the_server_drops_a_dead_workers_connection_in_about_a_minute(pg_url):
    """A worker host that loses power must not hold the writers' lock for the OS's 2 hours:
    every connection asks the server for TCP keepalives of 30 s + 3 x 10 s."""
    from migrator.jobs.store import open_state

    store = open_state(url=pg_url)
    try:
        with store.engine.connect() as conn:
            got = {
                name: conn.execute(text(f"show {name}")).scalar()
                for name in ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count")
            }
    finally:
        store.close()
    assert got == {"tcp_keepalives_idle": "30", "tcp_keepalives_interval": "10", "tcp_keepalives_count": "3"}


def test_of_two_workers_finishing_together_one_always_gets_the_cutover(pg_url):
    """Each worker, finding everything staged, lets go of its shared hold and asks for the
    exclusive lock. The first asks while the other still holds on and is refused; the other,
    asking after, must get it (a refused worker that took its shared hold back made both
    refuse, and nobody cut over: seen in the scaling benchmark)."""
    from migrator.jobs.lock import server_lock
    from migrator.jobs.store import open_state

    store = open_state(url=pg_url)
    try:
        with (
            server_lock(store.engine, store.location, "run", shared=True) as a,
            server_lock(store.engine, store.location, "run", shared=True) as b,
        ):
            assert not a.try_exclusive()  # b still holds on
            assert b.try_exclusive()  # a let go: b is the last, and gets it
            assert not a.try_exclusive()
    finally:
        store.close()


def test_a_group_chosen_as_deadlock_victim_is_run_again_once_whole(pg_url):
    """Two workers' group commits can deadlock; PostgreSQL then aborts one transaction. The
    journal runs that whole group again (nothing of it was kept), instead of dying with
    'unreadable'. The deadlock is a real PostgreSQL error (SQLSTATE 40P01), raised once."""
    from migrator.jobs.journal import Journal
    from migrator.jobs.store import open_state

    store = open_state(url=pg_url)
    try:
        with store.engine.begin() as conn:
            conn.execute(text("create table t (n int)"))
        tries = []

        def change(conn):
            conn.execute(text("insert into t values (1)"))
            tries.append(1)
            if len(tries) == 1:
                conn.execute(text("do $$ begin raise exception 'deadlock detected' using errcode = '40P01'; end $$"))
            return "ok"

        journal = Journal(store)
        try:
            assert journal.submit(change).result(timeout=30) == "ok"
        finally:
            journal.close()
        assert journal.broken is None and len(tries) == 2
        assert _query(pg_url, "select count(*) from t") == [(1,)]  # the aborted try left nothing
    finally:
        store.close()


def _freeze_between_transactions(url: str, proc: subprocess.Popen, tries: int = 200) -> None:
    """SIGSTOP ``proc`` at a moment none of its job-table sessions is inside a transaction."""
    for _ in range(tries):
        proc.send_signal(signal.SIGSTOP)
        states = [
            r[0]
            for r in _query(
                url,
                "select state from pg_stat_activity where application_name like :app",
                app=f"migrate run {proc.pid}@%",
            )
        ]
        if states and all(st == "idle" for st in states):
            return
        proc.send_signal(signal.SIGCONT)
        time.sleep(0.01)
    raise AssertionError(f"worker {proc.pid} was inside a transaction at each of {tries} tries")


def test_a_worker_frozen_past_its_lease_wakes_up_and_ends_cleanly(pg_url, tmp_path):
    """Worker A is SIGSTOPped while it holds databases, for longer than its lease; worker B
    takes them over and finishes. When A wakes up (SIGCONT) it drops what it lost: both end
    cleanly, every database is migrated once and correctly, nothing is left behind."""
    root = tmp_path / "video_database"
    paths = build_dvd_tree(root, 16, clips=(20, 50), seed=9)
    originals = {p: json.loads(p.read_text()) for p in paths}
    raw = {p: p.read_bytes() for p in paths}
    srv = FakeVLLM(model=SMALL, api_key=API_KEY, tokens_per_second=6000).start()
    env = dict(os.environ, MIGRATOR_API_KEY=API_KEY, MIGRATOR_STATE_URL=pg_url, MIGRATOR_LEASE_SECONDS="3")
    env.pop("MIGRATOR_STATE_DIR", None)

    def worker(i):
        return subprocess.Popen(
            [
                *MIGRATE,
                "run",
                "--root",
                str(root),
                "--model",
                "0.6b",
                "--yes",
                "--state-dir",
                str(tmp_path / f"state{i}"),
                "--endpoint",
                srv.base_url,
                "--request-timeout",
                "20",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    a = b = None
    try:
        a = worker(0)
        held: list[int] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and a.poll() is None and not held:
            try:
                held = _held_by(pg_url, a.pid)
            except ProgrammingError:
                pass
            time.sleep(0.05)
        assert held, "worker A never held a database: " + (a.communicate()[1][-2000:] if a.poll() else "")
        # Frozen between transactions, as a lease test needs: frozen inside one (a renew that
        # has just locked every row A holds), A's row locks would keep B out however long
        # its leases have run out (B claims with SKIP LOCKED). Found in CI.
        _freeze_between_transactions(pg_url, a)
        b = worker(1)
        # A stays frozen, well past its 3 s lease, until B has taken over some of its databases
        # (B takes the free ones first, so this may take a while on a loaded machine)
        taken, deadline = 0, time.monotonic() + 120
        while not taken and time.monotonic() < deadline and b.poll() is None:
            time.sleep(0.5)
            taken = _query(
                pg_url,
                f"select count(*) from databases where id in ({','.join(map(str, held))}) "
                f"and lease_owner not like '%:{a.pid}:%'",
            )[0][0]
        a.send_signal(signal.SIGCONT)
        out_b, err_b = b.communicate(timeout=180)
        out_a, err_a = a.communicate(timeout=180)
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.kill()
                p.wait()
        srv.stop()
    assert b.returncode == EXIT_OK, err_b[-3000:]
    assert a.returncode == EXIT_OK, err_a[-3000:]  # it ends cleanly too: resumed, or left to B
    assert taken > 0, "B took over none of A's databases while A was frozen"
    assert "lease lost" in err_a
    assert _query(pg_url, "select state from migrations") == [("done",)]
    rows = _query(pg_url, "select path, state, backup_path from databases")
    assert len(rows) == len(paths) and {r.state for r in rows} == {"cut_over"}
    for r in rows:
        p = Path(r.path)
        assert_migrated(p, originals[p], dim=1024, native_dim=1024, seed=SMALL)
        assert Path(r.backup_path).read_bytes() == raw[p]
        assert not [q for q in p.parent.iterdir() if q.name.endswith((".staged", ".partial")) or ".tmp" in q.name]
    recorded = _query(pg_url, "select records_embedded from migrations")[0][0]
    total = sum(len(o["data"]) for o in originals.values())
    print(
        f"\nfrozen worker: {taken} of {len(held)} held databases taken over; records embedded "
        f"{recorded} for {total} records"
    )


def test_jobs_by_path_come_in_byte_order_whatever_the_servers_collation(pg_url):
    """Cutover gathers a working dir's files from the job table read in path order, which
    holds every file under a directory together only in byte order: a locale's collation
    (en_US sorts "/t/a/x" after "/t/a-1/y" or ignores the slashes) must not decide it."""
    from migrator.jobs.store import open_state

    store = open_state(url=pg_url)
    assert store is not None
    paths = ["/t/a/vdb_x.json", "/t/a-1/vdb_y.json", "/t/A/vdb_z.json", "/t/a.b/vdb_w.json", "/t/a/b/c.json"]
    paths += ["/t/ab/vdb_v.json", "/t/a/vdb_u.json", "/t/é/vdb_e.json", "/t/z/vdb_s.json"]
    try:
        add_migration_with_jobs(store, "m1", paths)
        with store.engine.begin() as conn:  # the column sorted as English: A after a, é near e
            if not conn.execute(text("select 1 from pg_collation where collname = 'en-x-icu'")).first():
                pytest.skip("this PostgreSQL has no ICU collation to sort paths as English")
            conn.execute(text('alter table databases alter column path type varchar(4096) collate "en-x-icu"'))
            by_server = [p for (p,) in conn.execute(text("select path from databases order by path"))]
        assert by_server != sorted(paths, key=lambda p: p.encode())  # the server's own order is not bytes'
        for page in (1, 2, 4, 100):
            got = [r.path for r in store.each_job("m1", "path", by_path=True, page=page)]
            assert got == sorted(paths, key=lambda p: p.encode()), page
    finally:
        store.close()
