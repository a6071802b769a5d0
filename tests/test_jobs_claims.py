"""One migration per tree, whatever the state directory: two `./state` directories (two
working directories) must not both migrate the same files."""

from __future__ import annotations

import json
import os
import subprocess

from helpers import API_KEY, MIGRATE, Cli, tree_digest
from migrator.errors import EXIT_LOCKED, EXIT_PARTIAL
from migrator.jobs.claims import CLAIM_NAME


def _own_files(root):
    return sorted(p.name for p in root.rglob("*") if ".migrator-" in p.name and p.name != CLAIM_NAME)


def test_a_second_state_directory_is_refused_while_the_first_owns_the_tree(server, dvd_tree, tmp_path):
    root, paths = dvd_tree
    before = tree_digest(root)
    a = Cli(server.base_url, tmp_path / "a" / "state")
    b = Cli(server.base_url, tmp_path / "b" / "state")
    r = a("run", "--root", str(root), "--model", "8b", "--yes", "--no-cutover")
    assert r.exit_code == 0, r.output
    staged = _own_files(root)
    claim = json.loads((root / CLAIM_NAME).read_text())
    assert claim["state"] == os.path.realpath(tmp_path / "a" / "state")

    r = b("run", "--root", str(root), "--model", "8b", "--yes")
    assert r.exit_code == EXIT_LOCKED, r.output
    assert claim["migration"] in r.output and str(tmp_path / "a" / "state") in r.output
    assert _own_files(root) == staged  # b wrote nothing
    r = b("plan", "--root", str(root), "--model", "8b")
    assert r.exit_code == 0  # plan only reads
    r = b("run", "--root", str(paths[0].parent), "--model", "8b", "--yes")  # a part of the tree
    assert r.exit_code == EXIT_LOCKED, r.output

    r = a("run", "--yes")  # the owner finishes
    assert r.exit_code == 0, r.output
    r = b("run", "--root", str(root), "--model", "4b", "--yes")  # still owned: it can roll back
    assert r.exit_code == EXIT_LOCKED, r.output
    r = a("rollback", "--yes")
    assert r.exit_code == 0, r.output
    assert tree_digest(root) == before  # the claim went with the rollback
    r = b("run", "--root", str(root), "--model", "8b", "--yes")
    assert r.exit_code == 0, r.output


def test_two_runs_started_together_from_two_state_directories(server, dvd_tree, tmp_path):
    root, _ = dvd_tree
    before = tree_digest(root)
    env = dict(os.environ, MIGRATOR_API_KEY=API_KEY)
    procs = [
        subprocess.Popen(
            [
                *MIGRATE,
                "run",
                "--root",
                str(root),
                "--model",
                "8b",
                "--endpoint",
                server.base_url,
                "--yes",
                "--state-dir",
                str(tmp_path / n / "state"),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in ("a", "b")
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, EXIT_LOCKED], outs
    winner = "a" if procs[0].returncode == 0 else "b"
    loser_err = outs[1][1] if winner == "a" else outs[0][1]
    assert "belongs to migration" in loser_err
    names = _own_files(root)
    assert any(n.endswith(".backup") for n in names)
    assert not any(n.endswith(".staged") for n in names)  # no staged file left behind
    r = Cli(server.base_url, tmp_path / winner / "state")("rollback", "--yes")
    assert r.exit_code == 0, r.output
    assert tree_digest(root) == before


def test_another_migrations_staged_file_beside_a_database_is_recognised(server, dvd_tree, tmp_path):
    """A staged file of a migration this job table does not know: that database is refused
    by name, the others migrate."""
    root, paths = dvd_tree
    foreign = paths[0].with_name("database.json.migrator-20260101-000000-beef.staged")
    foreign.write_bytes(paths[0].read_bytes())
    r = Cli(server.base_url, tmp_path / "state")("run", "--root", str(root), "--model", "8b", "--yes")
    assert r.exit_code == EXIT_PARTIAL, r.output
    line = next(ln for ln in r.output.splitlines() if "FAILED" in ln and str(paths[0]) in ln)
    assert "20260101-000000-beef" in line and "another job table" in line
    assert json.loads(paths[0].read_text())["embedding_dim"] == 3072
    assert all(json.loads(p.read_text())["embedding_dim"] == 4096 for p in paths[1:])


def test_a_rollback_killed_after_its_record_drops_the_claim_when_run_again(server, dvd_tree, tmp_path):
    """SIGKILL after the migration is recorded rolled back, before its claim is dropped (the
    claim CI's torture run once found left behind): `migrate rollback` again drops it, says
    it was already rolled back, and another job table may then migrate the tree."""
    root, _ = dvd_tree
    before = tree_digest(root)
    a = Cli(server.base_url, tmp_path / "a" / "state")
    assert a("run", "--root", str(root), "--model", "8b", "--yes").exit_code == 0
    env = dict(os.environ, MIGRATOR_API_KEY=API_KEY, MIGRATOR_CRASH_AT="rollback.finished")
    p = subprocess.run(
        [*MIGRATE, "rollback", "--yes", "--state-dir", str(tmp_path / "a" / "state")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == -9, p.stderr
    assert (root / CLAIM_NAME).exists()  # killed between the record and the release
    assert {k: v for k, v in tree_digest(root).items() if not k.endswith(CLAIM_NAME)} == before

    b = Cli(server.base_url, tmp_path / "b" / "state")
    r = b("run", "--root", str(root), "--model", "8b", "--yes")
    assert r.exit_code == EXIT_LOCKED, r.output  # still claimed: a names who to ask
    r = a("rollback", "--yes")
    assert r.exit_code == 0, r.output
    assert "already rolled back" in r.output
    assert tree_digest(root) == before  # the claim is gone, nothing else changed
    r = b("run", "--root", str(root), "--model", "8b", "--yes")
    assert r.exit_code == 0, r.output
