"""migrate finalize: the backups of a finished migration go, with the space stated first."""

from __future__ import annotations

import json
import os

from dvdcheck import assert_migrated
from helpers import tree_digest
from migrator.errors import EXIT_OK, EXIT_USAGE


def _backups(root):
    return sorted(root.rglob("database.json.migrator-*.backup"))


def _run_ok(cli, root):
    r = cli("run", "--root", str(root), "--model", "8b", "--yes")
    assert r.exit_code == EXIT_OK, r.output


def test_finalize_states_the_space_deletes_the_backups_and_forbids_rollback(cli, dvd_tree):
    root, paths = dvd_tree
    originals = {p: json.loads(p.read_text()) for p in paths}
    _run_ok(cli, root)
    backups = _backups(root)
    assert len(backups) == len(paths)
    expected = sum(os.stat(b).st_size for b in backups)
    status = json.loads(cli("status", "--json").stdout)["migrations"][0]
    assert status["backup_bytes"] == expected  # status shows what backups hold
    migrated = tree_digest(root)

    r = cli("finalize", "--json", "--yes")
    assert r.exit_code == EXIT_OK, r.output
    doc = json.loads(r.stdout)
    assert doc["files"] == len(paths) and doc["bytes_freed"] == expected
    assert _backups(root) == []
    assert ".migrator-claim.json" in migrated  # the finished migration owned the tree...
    assert tree_digest(root) == {
        k: v
        for k, v in migrated.items()  # ...until it was finalized
        if not k.endswith(".backup") and k != ".migrator-claim.json"
    }
    for p in paths:  # the migrated databases are untouched
        assert_migrated(p, originals[p], dim=4096)

    status = json.loads(cli("status", "--json").stdout)["migrations"][0]
    assert status["state"] == "finalized" and status["backup_bytes"] == 0
    assert "rollback is no longer possible" in status["message"]
    r = cli("rollback", "--yes")
    assert r.exit_code == EXIT_USAGE and "finalized" in r.output
    assert ".migrator-claim.json" in migrated  # the finished migration owned the tree...
    assert tree_digest(root) == {
        k: v
        for k, v in migrated.items()  # ...until it was finalized
        if not k.endswith(".backup") and k != ".migrator-claim.json"
    }
    r = cli("finalize", "--json", "--yes")  # again: nothing left, still fine
    assert r.exit_code == EXIT_OK and json.loads(r.stdout)["files"] == 0
    assert "finalized" in (cli.state_dir / "migrator.log").read_text()


def test_finalize_without_a_terminal_needs_yes(cli, dvd_tree):
    root, _ = dvd_tree
    _run_ok(cli, root)
    r = cli("finalize")  # CliRunner's stdin is not a terminal
    assert r.exit_code == EXIT_USAGE and "--yes" in r.output and "freeing" in r.output
    assert len(_backups(root)) == len(dvd_tree[1])


def test_an_unfinished_or_rolled_back_migration_is_not_finalized(cli, dvd_tree):
    root, paths = dvd_tree
    r = cli("run", "--root", str(root), "--model", "8b", "--yes", "--no-cutover")
    assert r.exit_code == EXIT_OK, r.output
    mid = json.loads(cli("status", "--json").stdout)["migrations"][0]["id"]
    before = tree_digest(root)
    r = cli("finalize", "--yes", "--migration", mid)
    assert r.exit_code == EXIT_USAGE and "unfinished" in r.output
    assert tree_digest(root) == before
    assert cli("cutover", "--yes").exit_code == EXIT_OK
    assert cli("rollback", "--yes").exit_code == EXIT_OK
    r = cli("finalize", "--yes", "--migration", mid)
    assert r.exit_code == EXIT_USAGE and "rolled back" in r.output
