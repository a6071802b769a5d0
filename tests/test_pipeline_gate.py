"""The quality gate before cutover: a server that answers well-formed nonsense must not get swapped in."""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3

import numpy as np
import pytest

from dvdcheck import assert_migrated
from helpers import add_migration_with_jobs, tree_digest
from migrator.errors import EXIT_GATE, EXIT_OK
from migrator.pipeline.readback import SharedVectors
from migrator.testing.corpus import build_dvd_tree


@pytest.fixture
def tree(tmp_path):
    """Twelve DVD databases of 10-30 records: enough for every check of the gate to count."""
    root = tmp_path / "video_database"
    paths = build_dvd_tree(root, 12, clips=(10, 30), seed=41)
    return root, paths


def test_a_good_migration_passes_and_says_by_how_much(cli, tree):
    root, paths = tree
    originals = {p: json.loads(p.read_text()) for p in paths}
    r = cli("run", "--root", str(root), "--model", "8b", "--yes", "--no-cutover")
    assert r.exit_code == EXIT_OK, r.output
    r = cli("verify", "--json", "--state-dir", str(cli.state_dir), "--endpoint", cli.endpoint)
    assert r.exit_code == EXIT_OK, r.output
    doc = json.loads(r.stdout)
    assert doc["passed"] and doc["databases"] == len(paths) and doc["problems"] == []
    assert doc["sampled_records"] >= 30 and doc["self_hits"] >= 0.9 * doc["sampled_records"]
    assert doc["neighbourhood_overlap"] > 1.5 * doc["overlap_by_chance"], doc
    print(f"\ngate on a good migration: {doc}")
    r = cli("run", "--yes")  # the gate runs again, then cutover
    assert r.exit_code == EXIT_OK, r.output
    assert "quality gate: passed" in r.stderr
    for p in paths:
        assert_migrated(p, originals[p], dim=4096)


@pytest.mark.parametrize(
    "fault, words",
    [
        ("garbage", "self-retrieval"),  # random unit vectors: every per-answer check passes
        ("misorder", "self-retrieval"),  # each input gets its neighbour's vector
    ],
)
def test_well_formed_nonsense_fails_the_gate_and_nothing_is_swapped(cli, server, tree, fault, words):
    root, paths = tree
    before = tree_digest(root)
    server.faults.add(fault, times=None)
    r = cli("run", "--root", str(root), "--model", "8b", "--yes", "--json")
    assert r.exit_code == EXIT_GATE, r.output
    doc = json.loads(r.stdout)
    assert doc["outcome"] == "gate_failed" and words in doc["message"]
    assert not doc["gate"]["passed"] and doc["gate"]["problems"]
    now = tree_digest(root)
    assert {k: now[k] for k in before} == before, "a live database was replaced although the gate failed"
    status = json.loads(cli("status", "--json").stdout)["migrations"][0]
    assert status["state"] == "staged"
    # the server is mended, the bad staged files stay bad: the gate keeps holding
    server.faults.clear()
    r = cli("verify", "--json", "--state-dir", str(cli.state_dir), "--endpoint", cli.endpoint)
    assert r.exit_code == EXIT_GATE, r.output


def test_a_staged_file_altered_after_staging_is_staged_again_not_swapped(cli, tree):
    """Not the gate's to judge: it names the file, and cutover (which compares hashes) re-stages it."""
    root, paths = tree
    originals = {p: json.loads(p.read_text()) for p in paths}
    r = cli("run", "--root", str(root), "--model", "8b", "--yes", "--no-cutover")
    assert r.exit_code == EXIT_OK, r.output
    staged = next(paths[0].parent.glob("database.json.migrator-*.staged"))
    raw = staged.read_bytes()
    assert b'"embedding_dim":4096' in raw
    staged.write_bytes(raw.replace(b'"embedding_dim":4096', b'"embedding_dim":1024'))
    r = cli("verify", "--json", "--state-dir", str(cli.state_dir), "--endpoint", cli.endpoint)
    doc = json.loads(r.stdout)
    assert any(str(staged) in line for line in doc["skipped"]), doc
    r = cli("run", "--yes", "--json")
    assert r.exit_code == EXIT_OK, r.output
    for p in paths:  # the altered file never went live: it was embedded again
        assert_migrated(p, originals[p], dim=4096)


def test_no_quality_gate_skips_it_and_says_so(cli, server, tree):
    """The benchmark's escape hatch (its server answers random vectors by design): loud, not silent."""
    root, _ = tree
    server.faults.add("garbage", times=None)
    r = cli("run", "--root", str(root), "--model", "8b", "--yes", "--no-quality-gate")
    assert r.exit_code == EXIT_OK, r.output
    assert "quality gate: SKIPPED" in r.stderr


def test_one_vector_for_two_different_texts_is_caught_across_blocks():
    m = np.full((3, 4), 0.5, dtype="<f4")
    shared = SharedVectors(["a dog", "a cat", "a dog"])
    assert shared.add(m[:1]) is None
    assert "records #0 and #1" in shared.add(m[1:])
    assert SharedVectors(["same", "same"]).add(m[:2]) is None  # equal texts may share a vector


def test_migrate_cutover_checks_structure_first(cli, tree):
    """By hand, without an endpoint: the gate's structural half still runs before any swap."""
    root, paths = tree
    r = cli("run", "--root", str(root), "--model", "8b", "--yes", "--no-cutover")
    assert r.exit_code == EXIT_OK, r.output
    before = tree_digest(root)
    # a staged file that still hashes as recorded but holds one vector twice: rewrite it and
    # its recorded hash, as a bug in staging would have
    staged = next(paths[0].parent.glob("database.json.migrator-*.staged"))
    doc = json.loads(staged.read_text())
    m = np.frombuffer(base64.b64decode(doc["matrix"]), dtype="<f4").reshape(len(doc["data"]), -1).copy()
    m[1] = m[0]
    doc["matrix"] = base64.b64encode(m.tobytes()).decode()
    staged.write_text(json.dumps(doc))
    con = sqlite3.connect(cli.state_dir / "migrator.db")
    con.execute(
        "update databases set staged_sha256 = ? where staged_path = ?",
        (hashlib.sha256(staged.read_bytes()).hexdigest(), str(staged)),
    )
    con.commit()
    con.close()
    r = cli("cutover", "--yes", "--json")
    assert r.exit_code == EXIT_GATE, r.output
    assert "same vector" in json.loads(r.stdout)["message"]
    now = tree_digest(root)
    assert {k: now[k] for k in before if k.endswith("database.json")} == {
        k: v for k, v in before.items() if k.endswith("database.json")
    }


def test_verify_after_a_finished_migration_judges_the_live_files_against_their_backups(cli, tree):
    """It said 'no migration to verify' (exit 2), or with an id 'PASSED: 0 staged databases'."""
    root, paths = tree
    r = cli("run", "--root", str(root), "--model", "8b", "--yes")
    assert r.exit_code == EXIT_OK, r.output
    r = cli("verify", "--json", "--state-dir", str(cli.state_dir), "--endpoint", cli.endpoint)
    assert r.exit_code == EXIT_OK, r.output
    doc = json.loads(r.stdout)
    assert doc["passed"] and doc["what"] == "live" and doc["databases"] == len(paths)
    assert doc["databases_read"] == len(paths) and doc["sampled_records"] >= 30
    assert doc["neighbourhood_overlap"] > 1.5 * doc["overlap_by_chance"], doc
    r = cli("verify", "--state-dir", str(cli.state_dir), "--endpoint", cli.endpoint)
    assert f"{len(paths)} live database(s)" in r.stdout
    # a live file changed since the cutover is no longer the migration's: named, not judged
    doc0 = json.loads(paths[0].read_text())
    m = np.frombuffer(base64.b64decode(doc0["matrix"]), dtype="<f4").reshape(len(doc0["data"]), -1)
    doc0["matrix"] = base64.b64encode(np.roll(m, 1, axis=0).tobytes()).decode()
    paths[0].write_text(json.dumps(doc0))
    r = cli("verify", "--json", "--state-dir", str(cli.state_dir), "--endpoint", cli.endpoint)
    doc = json.loads(r.stdout)
    assert [s for s in doc["skipped"] if str(paths[0]) in s and "changed since the cutover" in s]
    assert len(doc["skipped"]) == 1 and doc["passed"]


def test_verify_never_passes_having_checked_nothing(cli, tree):
    root, paths = tree
    assert cli("run", "--root", str(root), "--model", "8b", "--yes").exit_code == EXIT_OK
    for p in paths:  # every live file changed since the cutover
        p.write_text(p.read_text() + " ")
    r = cli("verify", "--json", "--state-dir", str(cli.state_dir), "--endpoint", cli.endpoint)
    assert r.exit_code == EXIT_GATE, r.output
    assert "nothing was checked" in json.loads(r.stdout)["problems"][0]


def _counting_judges(monkeypatch):
    """(trusted, database id) of every database the gate judges: trusted ones while staging."""
    from migrator.pipeline import gate

    calls: list[tuple[bool, int]] = []
    real = gate.judge

    async def counting(job, *a, trusted=False, **kw):
        calls.append((trusted, job.id))
        return await real(job, *a, trusted=trusted, **kw)

    monkeypatch.setattr(gate, "judge", counting)
    return calls


def test_the_sample_is_judged_while_staging_and_not_read_again_before_cutover(cli, tree, monkeypatch):
    """The gate adds up what it found as each sampled database staged: after the last answer
    nothing is read again, and it passes on the same figures."""
    root, paths = tree
    originals = {p: json.loads(p.read_text()) for p in paths}
    calls = _counting_judges(monkeypatch)
    r = cli("run", "--root", str(root), "--model", "8b", "--yes", "--json")
    assert r.exit_code == EXIT_OK, r.output
    assert "quality gate: passed" in r.stderr and "self-retrieval" not in json.loads(r.stdout)["message"]
    judged_while_staging = {i for trusted, i in calls if trusted}
    assert len(judged_while_staging) == len(paths)  # 12 databases: every one is in the sample
    assert [c for c in calls if not c[0]] == []  # and none was judged again before the swap
    for p in paths:
        assert_migrated(p, originals[p], dim=4096)


def test_a_database_changed_after_it_was_judged_is_judged_again(cli, server, tree, monkeypatch):
    """What was judged at staging counts only for the files judged: a staged file altered in
    between is read again by the gate, which leaves it to cutover to stage again."""
    from migrator.pipeline import stage

    root, paths = tree
    originals = {p: json.loads(p.read_text()) for p in paths}
    calls = _counting_judges(monkeypatch)
    real_stage = stage.Stager.stage
    altered: list[str] = []

    def stage_then_alter(self, w):
        out = real_stage(self, w)
        if out == "staged" and not altered:  # the first database staged: damage it after judging
            altered.append(w.staged.staged_path)
        return out

    monkeypatch.setattr(stage.Stager, "stage", stage_then_alter)
    from migrator.pipeline import gate

    real_check = gate.check

    async def alter_then_check(*a, **kw):
        if len(altered) == 1:  # once: the next round stages it afresh
            altered.append("done")
            raw = open(altered[0], "rb").read()
            open(altered[0], "wb").write(raw.replace(b'"embedding_dim":4096', b'"embedding_dim":1024'))
        return await real_check(*a, **kw)

    monkeypatch.setattr(gate, "check", alter_then_check)
    r = cli("run", "--root", str(root), "--model", "8b", "--yes", "--json")
    assert r.exit_code == EXIT_OK, r.output
    again = [i for trusted, i in calls if not trusted]
    assert len(again) >= 1  # the altered one, judged again before the swap
    for p in paths:  # the altered staged file never went live: it was embedded again
        assert_migrated(p, originals[p], dim=4096)


def test_the_sample_read_a_page_at_a_time_is_the_sample_of_every_id(tmp_path, monkeypatch):
    """The sampled databases are picked by position in job order, then their ids kept as the
    pages go by: the same ids ``random.sample`` picks from the list of them all."""
    import random

    from migrator.jobs import queries
    from migrator.jobs import store as store_module
    from migrator.pipeline import gate

    monkeypatch.setattr(store_module, "JOB_PAGE", 7)
    store = store_module.open_state(tmp_path / "state")
    assert store is not None
    try:
        for mid, n in (("m-a", 300), ("m-b", 25)):  # more databases than the sample, and fewer
            add_migration_with_jobs(store, mid, [f"/t/{mid}/{i:04d}.json" for i in range(n)])
            with store.reader() as s:
                ids = sorted(r.id for r in queries.job_rows(s, mid, "id"))
            want = set(random.Random(mid).sample(ids, min(gate.SAMPLE_DATABASES, len(ids))))
            assert gate.sample_ids(store, mid) == want
            assert len(want) == min(gate.SAMPLE_DATABASES, n)
    finally:
        store.close()
