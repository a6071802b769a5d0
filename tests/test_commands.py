"""Each command through the CLI, against the fake vLLM and real DVD-built files."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from dvdcheck import assert_migrated
from helpers import API_KEY, MIGRATE, Cli, load_originals, run_args, tree_digest
from migrator import api
from migrator.errors import EXIT_ENDPOINT_DOWN, EXIT_LOCKED, EXIT_PARTIAL
from migrator.jobs.lock import state_lock
from migrator.testing.corpus import build_dvd_tree
from migrator.testing.embedder import count_tokens
from migrator.testing.server import FakeVLLM


def test_plan_reports_and_writes_nothing(cli, dvd_tree, tmp_path):
    root, paths = dvd_tree
    before = tree_digest(tmp_path)
    r = cli("plan", "--root", str(root), "--model", "8b", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["totals"]["databases"] == 6 and doc["totals"]["to_migrate"] == 6
    assert doc["totals"]["records"] == sum(len(json.loads(p.read_text())["data"]) for p in paths)
    assert doc["totals"]["by_dim"] == {"3072": 6}
    assert doc["totals"]["tokens_exact"] is True
    assert doc["endpoint"]["max_model_len"] == 8192 and doc["endpoint"]["native_dim"] == 4096
    assert doc["endpoint"]["measured_tokens_per_second"] > 0
    assert len(doc["databases"]) == 6
    assert tree_digest(tmp_path) == before  # no file written or changed
    assert not (tmp_path / "state").exists()  # not even the state directory


def test_plan_without_endpoint_estimates_and_exits_5(tmp_path, dvd_tree, dead_endpoint):
    """The report is still printed (with estimates), and the exit code says the endpoint is down."""
    root, _ = dvd_tree
    r = Cli(dead_endpoint, tmp_path / "state")("plan", "--root", str(root), "--model", "4b", "--json")
    assert r.exit_code == EXIT_ENDPOINT_DOWN, r.output
    assert "nothing was written" in r.stderr
    doc = json.loads(r.stdout)
    assert doc["endpoint"]["reachable"] is False and "cannot connect" in doc["endpoint"]["error"]
    assert doc["totals"]["tokens_exact"] is False and doc["totals"]["tokens"] > 0
    assert doc["target_dim"] == 2560


def test_run_migrates_every_database_faithfully(cli, dvd_tree, server):
    root, paths = dvd_tree
    originals = load_originals(paths)
    r = cli("run", "--root", str(root), "--model", "8b", "--yes")
    assert r.exit_code == 0, r.output
    assert 'AOAI_EMBEDDING_LARGE_MODEL_NAME = "Qwen/Qwen3-Embedding-8B"' in r.stdout
    assert "AOAI_EMBEDDING_LARGE_DIM = 4096" in r.stdout
    for p in paths:
        assert_migrated(p, originals[p], dim=4096)
        backups = list(p.parent.glob("database.json.migrator-*.backup"))
        assert len(backups) == 1 and json.loads(backups[0].read_text()) == originals[p]
    # several texts per request, several requests in flight, base64 on the wire
    assert max(server.stats.batch_sizes) > 1
    # idempotent: a second run does nothing and says so
    embedded = server.stats.inputs_embedded
    r2 = cli("run", "--root", str(root), "--model", "8b", "--yes")
    assert r2.exit_code == 0 and "nothing to do" in r2.stdout
    assert server.stats.inputs_embedded - embedded <= 1  # only the probe


@pytest.mark.parametrize("batch,concurrency", [(4, 1), (4, 2), (3, 1)])
def test_one_request_in_flight_never_deadlocks_on_a_part_filled_request(tmp_path, server, batch, concurrency):
    """With one or two requests in flight, the rows allowed in memory hold only one large
    database; the next waits for it to leave. Its last part-filled request used to wait with
    it, unsent, so neither ever finished (the run hung at 0%). A real process, with a timeout."""
    root = tmp_path / "video_database"
    paths = build_dvd_tree(root, 3, clips=(30, 40), seed=5)
    originals = load_originals(paths)
    args = run_args(root, server.base_url, tmp_path / "state", "--batch-size", str(batch))
    args += ["--concurrency", str(concurrency), "--yes"]
    env = {**os.environ, "MIGRATOR_API_KEY": API_KEY}
    p = subprocess.run([*MIGRATE, *args], env=env, capture_output=True, text=True, timeout=90)
    assert p.returncode == 0, p.stderr
    for path in paths:
        assert_migrated(path, originals[path], dim=4096)


def test_captions_with_dvds_transcripts_are_embedded_whole(cli, tmp_path):
    """DVD's full mode ends each caption with the clip's transcript after a blank line: the
    text embedded is the whole caption after the time prefix, newlines and all, and the
    long transcript-bearing ones (hundreds of tokens) are sent whole."""
    root = tmp_path / "video_database"
    paths = build_dvd_tree(root, 3, clips=(20, 30), seed=9, speech=0.8)
    originals = load_originals(paths)
    captions = [rec["caption"] for o in originals.values() for rec in o["data"]]
    assert all("\n\nTranscript during this video clip: " in c for c in captions)
    assert max(count_tokens(c) for c in captions) > 400
    r = cli("run", "--root", str(root), "--model", "8b", "--yes")
    assert r.exit_code == 0, r.output
    for p in paths:
        assert_migrated(p, originals[p], dim=4096)


def test_matryoshka_dim_is_cut_and_renormalised(cli, dvd_tree):
    root, paths = dvd_tree
    originals = load_originals(paths)
    r = cli("run", "--root", str(root), "--model", "8b", "--dim", "1024", "--yes")
    assert r.exit_code == 0, r.output
    for p in paths:
        assert_migrated(p, originals[p], dim=1024)


def test_small_model(dvd_tree, tmp_path, key_env):
    root, paths = dvd_tree
    originals = load_originals(paths)
    with FakeVLLM(model="Qwen/Qwen3-Embedding-0.6B", api_key=API_KEY) as srv:
        r = Cli(srv.base_url, tmp_path / "state")("run", "--root", str(root), "--model", "0.6b", "--yes")
        assert r.exit_code == 0, r.output
    for p in paths:
        assert_migrated(p, originals[p], dim=1024, native_dim=1024, seed="Qwen/Qwen3-Embedding-0.6B")


def test_wrong_model_served_is_refused_before_any_work(dvd_tree, tmp_path, key_env):
    root, _ = dvd_tree
    before = tree_digest(root)
    with FakeVLLM(model="Qwen/Qwen3-Embedding-4B", api_key=API_KEY) as srv:
        r = Cli(srv.base_url, tmp_path / "state")("run", "--root", str(root), "--model", "8b", "--yes")
    assert r.exit_code == 6
    assert "2560" in r.stderr and "4096" in r.stderr
    assert tree_digest(root) == before


def test_no_cutover_then_cutover(cli, dvd_tree):
    root, paths = dvd_tree
    originals = load_originals(paths)
    before = tree_digest(root)
    r = cli("run", "--root", str(root), "--model", "8b", "--no-cutover", "--yes")
    assert r.exit_code == 0, r.output
    assert "staged" in r.stdout
    live = {k: v for k, v in tree_digest(root).items() if ".migrator-" not in k}
    assert live == before  # live files untouched
    assert len(list(root.rglob("*.staged"))) == 6
    r = cli("cutover", "--yes")
    assert r.exit_code == 0, r.output
    for p in paths:
        assert_migrated(p, originals[p], dim=4096)
    assert not list(root.rglob("*.staged"))


def test_rollback_restores_byte_identical(cli, dvd_tree):
    root, paths = dvd_tree
    before = tree_digest(root)
    stats_before = {p: os.stat(p) for p in paths}
    assert cli("run", "--root", str(root), "--model", "8b", "--yes").exit_code == 0
    assert tree_digest(root) != before
    r = cli("rollback", "--yes")
    assert r.exit_code == 0, r.output
    assert "6 restored" in r.stdout
    assert tree_digest(root) == before  # every file, byte for byte, no leftovers
    for p in paths:
        assert os.stat(p).st_mtime_ns == stats_before[p].st_mtime_ns
        assert os.stat(p).st_mode == stats_before[p].st_mode


def test_cutover_never_overwrites_a_file_changed_since_scan(cli, dvd_tree):
    root, paths = dvd_tree
    assert cli("run", "--root", str(root), "--model", "8b", "--no-cutover", "--yes").exit_code == 0
    changed = paths[2]
    doc = json.loads(changed.read_text())
    doc["additional_data"]["fps"] = 3  # another program edits it
    changed.write_text(json.dumps(doc))
    edited = changed.read_bytes()
    r = cli("cutover", "--yes")
    assert r.exit_code == EXIT_PARTIAL
    assert "CHANGED" in r.stdout and str(changed) in r.stdout
    assert changed.read_bytes() == edited  # not overwritten
    # the next run re-embeds it from the edited content and swaps it in
    r = cli("run", "--root", str(root), "--model", "8b", "--yes")
    assert r.exit_code == 0, r.output
    assert_migrated(changed, doc, dim=4096)


def test_rollback_refuses_a_file_changed_after_cutover_unless_forced(cli, dvd_tree):
    root, paths = dvd_tree
    before = tree_digest(root)
    assert cli("run", "--root", str(root), "--model", "8b", "--yes").exit_code == 0
    victim = paths[0]
    victim.write_bytes(victim.read_bytes().replace(b'"fps":2', b'"fps":5'))
    edited = victim.read_bytes()
    r = cli("rollback", "--yes")
    assert r.exit_code == EXIT_PARTIAL
    assert "REFUSED" in r.stdout and str(victim) in r.stdout
    assert victim.read_bytes() == edited
    now = tree_digest(root)
    for p in paths[1:]:  # the others were restored
        rel = str(p.relative_to(root))
        assert now[rel] == before[rel]
    r = cli("rollback", "--yes", "--force")
    assert r.exit_code == 0, r.output
    after = tree_digest(root)
    displaced = [k for k in after if k.endswith(".displaced")]
    assert len(displaced) == 1 and (root / displaced[0]).read_bytes() == edited
    assert {k: v for k, v in after.items() if k not in displaced} == before


def test_rollback_with_a_backup_deleted_restores_the_others(cli, dvd_tree):
    root, paths = dvd_tree
    before = tree_digest(root)
    assert cli("run", "--root", str(root), "--model", "8b", "--yes").exit_code == 0
    gone = next(paths[1].parent.glob("database.json.migrator-*.backup"))
    gone.unlink()
    migrated = paths[1].read_bytes()
    r = cli("rollback", "--yes")
    assert r.exit_code == EXIT_PARTIAL
    assert "backup" in r.stdout and "gone" in r.stdout
    assert paths[1].read_bytes() == migrated
    after = tree_digest(root)
    rel = str(paths[1].relative_to(root))
    # still migrated: its sidecar says so, and the migration still claims the tree
    kept = (rel, rel + ".migrator-provenance", ".migrator-claim.json")
    assert {k: v for k, v in after.items() if k not in kept} == {k: v for k, v in before.items() if k not in kept}


def test_second_writer_exits_at_once_naming_the_holder(cli, dvd_tree, tmp_path):
    root, _ = dvd_tree
    with state_lock(tmp_path / "state", "run"):
        r = cli("run", "--root", str(root), "--model", "8b", "--yes")
    assert r.exit_code == EXIT_LOCKED
    assert f"pid {os.getpid()}" in r.stderr and "migrate run" in r.stderr


def test_bad_files_are_named_and_the_rest_migrate(cli, dvd_tree):
    root, paths = dvd_tree
    truncated = paths[0]
    truncated.write_bytes(truncated.read_bytes()[:1000])
    no_text = paths[1]
    doc = json.loads(no_text.read_text())
    del doc["data"][2]["caption"]
    no_text.write_text(json.dumps(doc))
    bad_bytes = {p: p.read_bytes() for p in (truncated, no_text)}
    originals = load_originals(paths[2:])
    r = cli("run", "--root", str(root), "--model", "8b", "--yes")
    assert r.exit_code == EXIT_PARTIAL
    assert f"{truncated}: not valid JSON" in r.stdout
    assert f"{no_text}: record #2" in r.stdout and "caption" in r.stdout
    for p, raw in bad_bytes.items():
        assert p.read_bytes() == raw
    for p in paths[2:]:
        assert_migrated(p, originals[p], dim=4096)


def test_text_field_for_other_nanovectordb_files(tmp_path, cli):
    import numpy as np
    from nano_vectordb import NanoVectorDB

    path = tmp_path / "kb" / "chunks.json"  # named like no application's file
    path.parent.mkdir()
    db = NanoVectorDB(3072, storage_file=str(path))
    rng = np.random.default_rng(1)
    db.upsert(
        [
            {
                "__id__": f"chunk-{i}",
                "content": f"chunk number {i} about topic {i % 3}",
                "__vector__": rng.normal(size=3072),
            }
            for i in range(7)
        ]
    )
    db.save()
    r = cli("run", "--root", str(tmp_path / "kb"), "--pattern", "*.json", "--model", "8b", "--yes")
    assert r.exit_code == EXIT_PARTIAL and "--text-field" in r.stdout
    r = cli("rollback", "--yes")
    r = cli(
        "run",
        "--root",
        str(tmp_path / "kb"),
        "--pattern",
        "*.json",
        "--model",
        "8b",
        "--text-field",
        "content",
        "--yes",
    )
    assert r.exit_code == 0, r.output
    new = NanoVectorDB(4096, storage_file=str(path))
    assert [d["__id__"] for d in new.get([f"chunk-{i}" for i in range(7)])] == [f"chunk-{i}" for i in range(7)]


def test_status_reports_progress_and_is_read_only(cli, dvd_tree, tmp_path):
    root, paths = dvd_tree
    r = cli("status")
    assert r.exit_code == 0 and "no migrations" in r.stdout
    assert not (tmp_path / "state").exists()
    old_sizes = sum(p.stat().st_size for p in paths)
    assert cli("run", "--root", str(root), "--model", "8b", "--yes").exit_code == 0
    db = tmp_path / "state" / "migrator.db"
    mtime = os.stat(db).st_mtime_ns
    r = cli("status", "--json")
    doc = json.loads(r.stdout)
    m = doc["migrations"][0]
    total = sum(len(json.loads(p.read_text())["data"]) for p in paths)
    assert m["state"] == "done" and m["by_state"] == {"cut_over": 6}
    assert m["records_total"] == total and m["records_left"] == 0 and m["records_embedded"] == total
    assert m["records_per_second"] > 0 and m["backup_bytes"] == old_sizes  # the backups are the old files
    assert m["databases"] == 6 and m["by_application"] == {"dvd": 6} and m["workers"] == {}
    assert "database_list" not in m  # one row per database only when asked for
    listed = json.loads(cli("status", "--json", "--databases").stdout)["migrations"][0]["database_list"]
    assert sorted(d["path"] for d in listed) == sorted(str(p) for p in paths)
    assert all(d["state"] == "cut_over" and d["done"] == d["records"] > 0 for d in listed)
    assert sum(d["records"] for d in listed) == total
    assert os.stat(db).st_mtime_ns == mtime


def test_api_is_callable_without_the_cli(server, dvd_tree, tmp_path):
    root, paths = dvd_tree
    originals = load_originals(paths)
    raw = {p: p.read_bytes() for p in paths}
    settings = api.Settings(roots=[str(root)], model="8b", endpoint=server.base_url, state_dir=str(tmp_path / "st"))
    report = api.plan(settings)
    assert report["totals"]["to_migrate"] == 6
    result = api.run(settings)
    assert result.outcome == "done" and result.databases == {"cut_over": 6}
    for p in paths:
        assert_migrated(p, originals[p], dim=4096)
    back = api.rollback(settings)
    assert back.done == 6 and not back.refused
    assert all(p.read_bytes() == raw[p] for p in paths)


def test_a_bad_file_left_over_does_not_hide_the_migration_from_rollback(cli, dvd_tree):
    root, paths = dvd_tree
    before = tree_digest(root)
    bad = paths[0]
    bad.write_bytes(b"")  # zero bytes
    before = tree_digest(root)
    r = cli("run", "--root", str(root), "--model", "8b", "--yes")
    assert r.exit_code == EXIT_PARTIAL and f"{bad}: file is empty" in r.stdout
    # run again (cron): only the bad file is left; nothing new is started
    r = cli("run", "--root", str(root), "--model", "8b", "--yes")
    assert r.exit_code == EXIT_PARTIAL and "nothing migrated" in r.stdout
    assert len(json.loads(cli("status", "--json").stdout)["migrations"]) == 1
    r = cli("rollback", "--yes")
    assert r.exit_code == 0 and "5 restored" in r.stdout
    assert tree_digest(root) == before


def test_the_run_question_says_what_will_be_done_and_no_changes_nothing(server, dvd_tree, tmp_path):
    """Asked after the scan: how many databases and records, the model and the dims."""
    from migrator import api
    from migrator.errors import MigratorError

    root, paths = dvd_tree
    before = tree_digest(root)
    asked = []
    settings = api.Settings(
        roots=[str(root)],
        model="8b",
        endpoint=server.base_url,
        state_dir=str(tmp_path / "state"),
        confirm=lambda q: asked.append(q) or False,
    )
    with pytest.raises(MigratorError) as e:
        api.run(settings)
    assert e.value.exit_code == 2 and "cancelled" in str(e.value)
    records = sum(len(json.loads(p.read_text())["data"]) for p in paths)
    (q,) = asked
    assert f"Migrate {len(paths)} database(s), {records} records" in q
    assert "from 3072 dims to Qwen/Qwen3-Embedding-8B at 4096 dims" in q
    assert tree_digest(root) == before
    assert api.status(str(tmp_path / "state"))["migrations"] == []  # nothing recorded
