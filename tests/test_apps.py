"""LightRAG and nano-graphrag working dirs, and any NanoVectorDB file: migrated, verified,
rolled back, with their provenance recorded and their applications' settings named.

The stores are built the way those projects write them (migrator.testing.appstores,
with the real nano-vectordb and networkx); the endpoint is the fake vLLM over HTTP.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import API_KEY, MIGRATE, Cli, run_args, tree_digest
from migrator.apps import lightrag, provenance
from migrator.errors import EXIT_LOCKED, EXIT_PARTIAL, EXIT_USAGE
from migrator.testing.appstores import build_lightrag_workdir, build_nanographrag_workdir, decode_lightrag_vector
from migrator.testing.corpus import NanoVectorDB, build_dvd_tree
from migrator.testing.embedder import embed
from migrator.testing.server import FakeVLLM

QWEN_8B = "Qwen/Qwen3-Embedding-8B"


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _matrix(doc: dict) -> np.ndarray:
    import base64

    raw = base64.b64decode(doc["matrix"])
    return np.frombuffer(raw, dtype="<f4").reshape(len(doc["data"]), doc["embedding_dim"])


def assert_embedded_from(path: Path, texts: dict[str, str], *, model: str, dim: int) -> None:
    """Every row of the file is ``model``'s vector of exactly the text the application embedded,
    and the file loads with the real nano-vectordb at ``dim``."""
    doc = _load(path)
    assert doc["embedding_dim"] == dim
    m = _matrix(doc)
    for row, rec in zip(m, doc["data"]):
        want = _unit(embed(texts[rec["__id__"]], dim, seed=model))
        assert float(_unit(row) @ want) > 0.9999, rec["__id__"]
    db = NanoVectorDB(dim, storage_file=str(path))
    assert len(db) == len(doc["data"])


def _own(dir_: Path) -> list[str]:
    return sorted(p.name for p in dir_.iterdir() if ".migrator-" in p.name)


# -------------------------------------------------------------------- LightRAG
@pytest.mark.parametrize("version", ["1.5.7", "main", "1.4.6"])
def test_lightrag_workspace_migrates_verifies_and_rolls_back(cli, tmp_path, version):
    wd = tmp_path / "rag_storage"
    store = build_lightrag_workdir(wd, workspace="team_a", version=version, env_file=tmp_path / ".env")
    before = tree_digest(wd)
    originals = {p: _load(p) for p in store.files.values()}

    r = cli("plan", "--root", str(wd), "--model", "8b", "--json")
    assert r.exit_code == 0, r.output
    plan = json.loads(r.stdout)
    assert plan["totals"]["to_migrate"] == 3 and plan["totals"]["by_application"] == {"lightrag": 3}
    cfg = [c for c in plan["configs"] if c["application"] == "lightrag"]
    assert cfg and cfg[0]["path"] == str(tmp_path / ".env") and cfg[0]["stale"]
    assert cfg[0]["model"] == "text-embedding-3-large" and cfg[0]["dim"] == 3072
    r = cli("plan", "--root", str(wd), "--model", "8b")
    assert f"WARNING: {tmp_path / '.env'} still names text-embedding-3-large" in r.stdout

    r = cli("run", "--root", str(wd), "--model", "8b", "--yes")
    assert r.exit_code == 0, r.output
    assert f"Now change LightRAG's settings in {tmp_path / '.env'}:" in r.stdout
    assert f"EMBEDDING_MODEL={QWEN_8B}" in r.stdout and "EMBEDDING_DIM=4096" in r.stdout
    for path in store.files.values():
        new, old = _load(path), originals[path]
        assert_embedded_from(path, store.texts[path], model=QWEN_8B, dim=4096)
        assert new["additional_data"]["lightrag_embedding_model"] == QWEN_8B
        assert new["additional_data"]["lightrag_embedding_dim"] == 4096
        assert list(new) == list(old) + (["additional_data"] if "additional_data" not in old else [])
        m = _matrix(new)
        for rec, was, row in zip(new["data"], old["data"], m):
            # every field kept, in order; only LightRAG's own copy of the vector is new
            assert list(rec) == list(was)
            assert {k: v for k, v in rec.items() if k != "vector"} == {k: v for k, v in was.items() if k != "vector"}
            if version == "1.4.6":
                assert "vector" not in rec
            else:
                copy = decode_lightrag_vector(rec["vector"])
                assert np.allclose(copy, row, atol=1e-3) and not np.allclose(
                    copy[:8], decode_lightrag_vector(was["vector"])[:8], atol=1e-3
                )
        # the backup only, no sidecar: LightRAG's own keys say which model made the vectors
        assert [n for n in _own(path.parent) if n.startswith(path.name)] == [
            f"{path.name}.migrator-{_mid(path)}.backup"
        ]
    # nothing under a name LightRAG's start-up deletes
    assert not list(store.dir.glob("*.tmp.*"))
    r = cli("plan", "--root", str(wd), "--model", "8b", "--json")
    assert json.loads(r.stdout)["totals"]["to_migrate"] == 0
    assert all("already made by Qwen/Qwen3-Embedding-8B" in d["reason"] for d in json.loads(r.stdout)["databases"])

    r = cli("rollback", "--yes")
    assert r.exit_code == 0, r.output
    assert tree_digest(wd) == before


def _mid(path: Path) -> str:
    (backup,) = path.parent.glob(path.name + ".migrator-*.backup")
    return backup.name[len(path.name) + len(".migrator-") : -len(".backup")]


def test_lightrag_same_dimension_other_model_is_found_and_migrated(key_env, tmp_path):
    """0.6B -> 4B, both at 1024 dims: what LightRAG users got silent garbage from."""
    wd = tmp_path / "rag_storage"
    store = build_lightrag_workdir(wd, version="main", model="Qwen/Qwen3-Embedding-0.6B", dim=1024)
    with FakeVLLM(model="Qwen/Qwen3-Embedding-4B", api_key=API_KEY) as srv:
        cli = Cli(srv.base_url, tmp_path / "state")
        r = cli("plan", "--root", str(wd), "--model", "4b", "--dim", "1024", "--json")
        doc = json.loads(r.stdout)
        assert doc["totals"]["to_migrate"] == 3 and doc["totals"]["same_dim_other_model"] == 3
        assert all("made by Qwen/Qwen3-Embedding-0.6B" in d["reason"] for d in doc["databases"])
        assert "hold another model's vectors" in cli("plan", "--root", str(wd), "--model", "4b", "--dim", "1024").stdout
        r = cli("run", "--root", str(wd), "--model", "4b", "--dim", "1024", "--yes")
        assert r.exit_code == 0, r.output
        assert "EMBEDDING_SEND_DIM=true" in r.stdout  # 1024 < 2560: LightRAG must ask for it
        for path in store.files.values():
            doc = _load(path)
            assert doc["additional_data"]["lightrag_embedding_model"] == "Qwen/Qwen3-Embedding-4B"
            m = _matrix(doc)
            for row, rec in zip(m, doc["data"]):
                want = _unit(embed(store.texts[path][rec["__id__"]], 2560, seed="Qwen/Qwen3-Embedding-4B")[:1024])
                assert float(_unit(row) @ want) > 0.9999


class _Holder:
    """Another process holding LightRAG's storage lock, as a running server does."""

    def __init__(self, lock: Path):
        lock.parent.mkdir(parents=True, exist_ok=True)
        code = (
            "import fcntl,os,sys,time\n"
            "f=open(sys.argv[1],'a+'); fcntl.flock(f, fcntl.LOCK_EX|fcntl.LOCK_NB)\n"
            "f.truncate(0); f.write(str(os.getpid())+'\\n'); f.flush(); print('held', flush=True)\n"
            "time.sleep(600)\n"
        )
        self.proc = subprocess.Popen([sys.executable, "-c", code, str(lock)], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "held"

    def release(self):
        self.proc.kill()
        self.proc.wait()


@pytest.mark.parametrize("where", ["_lightrag_config/.lightrag_storage.lock", ".lightrag_storage.lock"])
def test_lightrag_storage_lock_held_refuses_cutover_and_rollback(cli, tmp_path, where):
    wd = tmp_path / "rag_storage"
    store = build_lightrag_workdir(wd, workspace="w1")
    lock = wd / where
    holder = _Holder(lock)
    try:
        before = tree_digest(store.dir)
        r = cli("run", "--root", str(wd), "--model", "8b", "--yes")
        assert r.exit_code == EXIT_LOCKED, r.output
        assert str(lock) in r.output and f"pid {holder.proc.pid}" in r.output
        # staged beside, nothing swapped
        assert {k: v for k, v in tree_digest(store.dir).items() if ".migrator-" not in k} == before
        assert all(_load(p)["embedding_dim"] == 3072 for p in store.files.values())
        r = cli("cutover", "--yes")
        assert r.exit_code == EXIT_LOCKED
    finally:
        holder.release()
    r = cli("run", "--yes")  # cron's next tick: the server was stopped
    assert r.exit_code == 0, r.output
    assert all(_load(p)["embedding_dim"] == 4096 for p in store.files.values())
    holder = _Holder(lock)
    try:
        r = cli("rollback", "--yes")
        assert r.exit_code == EXIT_LOCKED and all(_load(p)["embedding_dim"] == 4096 for p in store.files.values())
    finally:
        holder.release()
    assert cli("rollback", "--yes").exit_code == 0
    assert all(_load(p)["embedding_dim"] == 3072 for p in store.files.values())


def test_lightrag_saving_now_refuses_cutover_old_temp_file_does_not(cli, tmp_path):
    wd = tmp_path / "rag_storage"
    store = build_lightrag_workdir(wd)
    temp = Path(str(store.files["chunks"]) + ".tmp.4242.140001.1700000000000000000")
    temp.write_text("{")
    r = cli("run", "--root", str(wd), "--model", "8b", "--yes")
    assert r.exit_code == EXIT_LOCKED and str(temp) in r.output and "saving" in r.output
    old = time.time() - 2 * lightrag.TEMP_REAP_SECONDS
    os.utime(temp, (old, old))  # a crash's leftover: LightRAG itself deletes it at start
    r = cli("run", "--yes")
    assert r.exit_code == 0, r.output


def test_lock_check_takes_and_releases_the_lock(tmp_path):
    live = tmp_path / "vdb_chunks.json"
    live.write_text("{}")
    lock = tmp_path / lightrag.LOCK_NAME
    lock.write_text("123\n")
    with lightrag.storage_locks([live]) as held:
        assert held == [lock]
        fd = os.open(lock, os.O_RDONLY)
        with pytest.raises(BlockingIOError):  # held by us: a LightRAG could not start now
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)
    fd = os.open(lock, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released after
    os.close(fd)


# ---------------------------------------------------------------- nano-graphrag
def test_nanographrag_texts_joined_from_neighbours_migrate_and_roll_back(cli, tmp_path):
    wd = tmp_path / "nano_graphrag_cache"
    store = build_nanographrag_workdir(wd, naive_rag=True)
    before = tree_digest(wd)
    r = cli("plan", "--root", str(wd), "--model", "8b", "--json")
    doc = json.loads(r.stdout)
    assert doc["totals"]["by_application"] == {"nano-graphrag": 2} and doc["totals"]["to_migrate"] == 2
    r = cli("run", "--root", str(wd), "--model", "8b", "--yes")
    assert r.exit_code == 0, r.output
    assert "embedding_dim=4096" in r.stdout
    for path in store.files.values():
        assert_embedded_from(path, store.texts[path], model=QWEN_8B, dim=4096)
        made = provenance.from_sidecar(path)
        assert made is not None and (made.model, made.dim) == (QWEN_8B, 4096)
    r = cli("plan", "--root", str(wd), "--model", "8b", "--json")
    assert json.loads(r.stdout)["totals"]["to_migrate"] == 0
    r = cli("status", "--json")
    (m,) = json.loads(r.stdout)["migrations"]
    assert m["by_application"] == {"nano-graphrag": 2} and m["texts"] == "auto"
    assert "files: 2 nano-graphrag; texts read as auto" in cli("status").stdout
    assert cli("rollback", "--yes").exit_code == 0
    assert tree_digest(wd) == before  # the sidecars went with the migration


def test_nanographrag_orphan_chunk_is_refused_by_record_and_holds_back_its_dir(cli, tmp_path):
    """nano-graphrag makes such a dir itself (an LLM error mid-extraction). It opens both
    files at one dimension, so neither is swapped: the dir stays loadable at 1536."""
    wd = tmp_path / "cache"
    store = build_nanographrag_workdir(wd, orphan_chunk=True)
    chunks, entities = store.files["chunks"], store.files["entities"]
    before = tree_digest(wd)
    r = cli("run", "--root", str(wd), "--model", "8b", "--yes")
    assert r.exit_code == EXIT_PARTIAL, r.output
    (orphan,) = store.orphan_ids
    line = next(ln for ln in r.output.splitlines() if str(chunks) in ln)
    assert repr(orphan) in line and "kv_store_text_chunks.json" in line and "orphan" in line
    held = next(ln for ln in r.output.splitlines() if str(entities) in ln)
    assert "held back" in held and "nano-graphrag" in held and str(chunks) in held
    assert "DVD" not in r.output
    live = {k: v for k, v in tree_digest(wd).items() if ".migrator-" not in k}
    assert live == before  # the dir is exactly as it was
    for path in (chunks, entities):
        assert len(NanoVectorDB(1536, storage_file=str(path))) == len(_load(path)["data"])
    # once the chunk's text is back, the next run swaps the whole dir
    kv = store.neighbours["text_chunks"]
    doc = _load(kv)
    doc[orphan] = {**next(iter(doc.values())), "content": store.texts[chunks][orphan]}
    kv.write_text(json.dumps(doc), encoding="utf-8")
    r = cli("run", "--yes")
    assert r.exit_code == 0, r.output
    assert _load(chunks)["embedding_dim"] == 4096 and _load(entities)["embedding_dim"] == 4096


def test_nanographrag_entity_without_graph_node_is_refused(cli, tmp_path):
    wd = tmp_path / "cache"
    store = build_nanographrag_workdir(wd, naive_rag=False)
    graph = store.neighbours["graph"]
    doc = _load(store.files["entities"])
    name = doc["data"][1]["entity_name"]
    text = graph.read_text(encoding="utf-8")
    node = '<node id="%s"' % name.replace('"', "&quot;")
    assert node in text
    graph.write_text(text.replace(node, '<node id="&quot;SOMEONE ELSE&quot;"'), encoding="utf-8")
    r = cli("plan", "--root", str(wd), "--model", "8b", "--json")
    (db,) = json.loads(r.stdout)["databases"]
    assert db["status"] == "bad" and "record #1" in db["reason"] and "no node" in db["reason"]
    assert name in db["reason"]


def test_nanographrag_chunk_text_not_the_embedded_one_is_refused(cli, tmp_path):
    wd = tmp_path / "cache"
    store = build_nanographrag_workdir(wd)
    kv = store.neighbours["text_chunks"]
    data = _load(kv)
    first = next(iter(data))
    data[first]["content"] += " (edited later)"
    kv.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    r = cli("plan", "--root", str(wd), "--model", "8b", "--json")
    bad = [d for d in json.loads(r.stdout)["databases"] if d["status"] == "bad"]
    assert len(bad) == 1 and "not the one embedded" in bad[0]["reason"] and first in bad[0]["reason"]


# ------------------------------------------------------------ any NanoVectorDB
def _generic(path: Path, rows: list[dict], texts: list[str], dim: int = 64, model: str = "old-model") -> None:
    db = NanoVectorDB(dim, storage_file=str(path))
    db.upsert([{**r, "__vector__": embed(t, dim, seed=model)} for r, t in zip(rows, texts)])
    db.save()


def test_text_template_builds_the_text_from_fields(cli, tmp_path):
    root = tmp_path / "kb"
    root.mkdir()
    rows = [{"__id__": f"d{i}", "title": f"Title {i}", "body": f"body text number {i}", "n": i} for i in range(5)]
    texts = [f"{r['title']}\n{r['body']} #{r['n']}" for r in rows]
    _generic(root / "store.json", rows, texts)
    r = cli("plan", "--root", str(root), "--pattern", "store.json", "--model", "8b", "--json")
    assert json.loads(r.stdout)["totals"]["bad"] == 1  # nobody's known file: says what to do
    assert "--text-template" in json.loads(r.stdout)["databases"][0]["reason"]
    r = cli(
        "run",
        "--root",
        str(root),
        "--pattern",
        "store.json",
        "--model",
        "8b",
        "--yes",
        "--text-template",
        "{title}\\n{body} #{n}",
    )
    assert r.exit_code == 0, r.output
    assert_embedded_from(root / "store.json", {r["__id__"]: t for r, t in zip(rows, texts)}, model=QWEN_8B, dim=4096)
    assert r.stdout.count("Now change") == 0  # no known application to tell
    # a resumed or repeated run keeps the migration's own way of reading texts
    r = cli("run", "--root", str(root), "--pattern", "store.json", "--model", "8b", "--text-field", "body")
    assert r.exit_code == 0 and "nothing to do" in r.output, r.output


@pytest.mark.parametrize(
    "template,message",
    [
        ("{title.upper}", "not a plain field name"),
        ("{title!r}", "not a plain field name"),
        ("{title", "--text-template"),
        ("no fields", "names no field"),
    ],
)
def test_bad_text_template_is_refused_before_anything(cli, tmp_path, template, message):
    (tmp_path / "kb").mkdir()
    r = cli("plan", "--root", str(tmp_path / "kb"), "--model", "8b", "--text-template", template)
    assert r.exit_code == EXIT_USAGE and message in r.output and len(r.output.strip().splitlines()) == 1


def test_template_field_missing_names_the_record(cli, tmp_path):
    root = tmp_path / "kb"
    root.mkdir()
    rows = [{"__id__": "a", "title": "x", "body": "y"}, {"__id__": "b", "title": "z"}]
    _generic(root / "store.json", rows, ["x y", "z"])
    r = cli(
        "plan",
        "--root",
        str(root),
        "--pattern",
        "store.json",
        "--model",
        "8b",
        "--json",
        "--text-template",
        "{title} {body}",
    )
    (db,) = json.loads(r.stdout)["databases"]
    assert db["status"] == "bad" and "record #1" in db["reason"] and "'b'" in db["reason"] and "'body'" in db["reason"]


def test_text_field_and_template_together_are_refused(cli, tmp_path):
    r = cli("plan", "--root", str(tmp_path), "--model", "8b", "--text-field", "a", "--text-template", "{a}")
    assert r.exit_code == EXIT_USAGE and "give one" in r.output


# ------------------------------------------------------------------ provenance
def test_unknown_model_at_target_dim_is_probed(key_env, tmp_path):
    """DVD files at 1024 dims recording no model: the endpoint tells whose vectors they are."""
    ours = tmp_path / "ours"
    theirs = tmp_path / "theirs"
    build_dvd_tree(ours, 2, clips=(4, 8), seed=3, dim=1024, embed_seed="Qwen/Qwen3-Embedding-0.6B")
    build_dvd_tree(theirs, 2, clips=(4, 8), seed=4, dim=1024, embed_seed="some-other-1024-model")
    with FakeVLLM(model="Qwen/Qwen3-Embedding-0.6B", api_key=API_KEY) as srv:
        cli = Cli(srv.base_url, tmp_path / "state")
        r = cli("plan", "--root", str(ours), "--root", str(theirs), "--model", "0.6b", "--json")
        doc = json.loads(r.stdout)
        by = {Path(d["path"]).parent.parent.name: d for d in doc["databases"]}
        status = {d["path"]: d["status"] for d in doc["databases"]}
        assert sorted(status.values()) == ["migrate", "migrate", "skip", "skip"]
        assert all(
            d["status"] == "skip" and "gives back its stored vectors" in d["reason"]
            for d in doc["databases"]
            if "/ours/" in d["path"]
        )
        assert all(
            d["status"] == "migrate" and "not Qwen/Qwen3-Embedding-0.6B's" in d["reason"]
            for d in doc["databases"]
            if "/theirs/" in d["path"]
        )
        assert by
        r = cli("run", "--root", str(ours), "--root", str(theirs), "--model", "0.6b", "--yes")
        assert r.exit_code == 0, r.output
        assert "migration" in r.output
        r = cli("plan", "--root", str(ours), "--root", str(theirs), "--model", "0.6b", "--json")
        doc = json.loads(r.stdout)
        assert doc["totals"]["to_migrate"] == 0
        assert sum("already made by" in d["reason"] for d in doc["databases"]) == 2


def test_dvd_config_found_warned_in_plan_and_named_at_cutover(cli, dvd_tree, tmp_path):
    root, _ = dvd_tree
    cfg = tmp_path / "dvd" / "config.py"
    cfg.parent.mkdir()
    cfg.write_text('AOAI_EMBEDDING_LARGE_MODEL_NAME = "text-embedding-3-large"\nAOAI_EMBEDDING_LARGE_DIM = 3072\n')
    r = cli("plan", "--root", str(root), "--model", "8b")
    assert f"WARNING: {cfg} still names text-embedding-3-large (3072 dims)" in r.stdout
    r = cli("run", "--root", str(root), "--model", "8b", "--yes")
    assert r.exit_code == 0
    assert f"Now change DeepVideoDiscovery's settings in {cfg}:" in r.stdout
    assert f'AOAI_EMBEDDING_LARGE_MODEL_NAME = "{QWEN_8B}"' in r.stdout
    for p in dvd_tree[1]:
        assert _own(p.parent) == sorted(
            [f"database.json.migrator-{_mid(p)}.backup", "database.json.migrator-provenance"]
        )


def test_lightrag_document_prefix_is_pointed_out(cli, tmp_path):
    wd = tmp_path / "rag_storage"
    build_lightrag_workdir(wd, env_file=tmp_path / ".env")
    with open(tmp_path / ".env", "a") as f:
        f.write("EMBEDDING_ASYMMETRIC=true\nEMBEDDING_DOCUMENT_PREFIX='passage: '\n")
    r = cli("plan", "--root", str(wd), "--model", "8b")
    assert "--text-template 'passage: {content}'" in r.stdout


@pytest.mark.parametrize("point", ["write.partial", "stage.written", "cutover.replaced"])
def test_lightrag_killed_mid_migration_leaves_nothing_lightrag_would_reap(server, tmp_path, point):
    """SIGKILL at a crash point: nothing beside the files matches LightRAG's temp pattern (it
    deletes those at start), every live file is the old or the complete new one, and the next
    run finishes; rollback then leaves the working dir byte-identical."""
    wd = tmp_path / "rag_storage"
    store = build_lightrag_workdir(wd, workspace="ws", version="main")
    before = tree_digest(wd)
    env = dict(os.environ, MIGRATOR_API_KEY=API_KEY, MIGRATOR_CRASH_AT=point)
    args = [
        *MIGRATE,
        *run_args(wd, server.base_url, tmp_path / "state"),
        "--yes",
    ]
    p = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == -9, p.stderr
    for live in store.files.values():
        assert not [n for n in os.listdir(live.parent) if n.startswith(live.name + lightrag.TEMP_MARK)]
        dim = _load(live)["embedding_dim"]
        assert dim in (3072, 4096)
        NanoVectorDB(dim, storage_file=str(live))
    env.pop("MIGRATOR_CRASH_AT")
    p = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    for live in store.files.values():
        assert_embedded_from(live, store.texts[live], model=QWEN_8B, dim=4096)
    cli = Cli(server.base_url, tmp_path / "state")
    assert cli("rollback", "--yes").exit_code == 0
    assert tree_digest(wd) == before


def test_empty_lightrag_file_gets_the_new_dimension_and_marker(cli, tmp_path):
    wd = tmp_path / "rag_storage"
    store = build_lightrag_workdir(wd)
    rel = store.files["relationships"]
    rel.unlink()
    NanoVectorDB(3072, storage_file=str(rel)).save()  # LightRAG with no relation yet
    r = cli("run", "--root", str(wd), "--model", "8b", "--yes")
    assert r.exit_code == 0, r.output
    doc = _load(rel)
    assert doc["embedding_dim"] == 4096 and doc["data"] == [] and doc["matrix"] == ""
    assert doc["additional_data"] == {"lightrag_embedding_model": QWEN_8B, "lightrag_embedding_dim": 4096}
    assert len(NanoVectorDB(4096, storage_file=str(rel))) == 0


# ------------------------------------------------------------ a working dir moves as one unit
def test_a_lightrag_dir_with_one_unmigratable_file_stays_whole_at_its_old_dimension(cli, tmp_path, dvd_tree):
    """LightRAG opens every vector file of a working dir at one dimension: one broken file
    holds back its siblings (named, exit 4); a DVD video beside it is its own unit."""
    wd = tmp_path / "rag_storage"
    store = build_lightrag_workdir(wd, n_docs=2)
    broken = store.files["relationships"]
    doc = _load(broken)
    doc["data"][0]["content"] = None  # a record with nothing to embed
    broken.write_text(json.dumps(doc), encoding="utf-8")
    before = tree_digest(wd)
    dvd_root, dvd_paths = dvd_tree
    r = cli("run", "--root", str(wd), "--root", str(dvd_root), "--model", "8b", "--yes")
    assert r.exit_code == EXIT_PARTIAL, r.output
    lines = r.output.splitlines()
    for ns in ("entities", "chunks"):
        held = next(ln for ln in lines if str(store.files[ns]) in ln)
        assert "held back" in held and "LightRAG" in held and str(broken) in held
    assert any(str(broken) in ln and "record #0" in ln for ln in lines), r.output
    assert "LightRAG cannot load them" in r.output and "DVD cannot" not in r.output
    live = {k: v for k, v in tree_digest(wd).items() if ".migrator-" not in k}
    assert live == before
    for p in store.files.values():
        assert len(NanoVectorDB(3072, storage_file=str(p))) == len(_load(p)["data"])
    for p in dvd_paths:  # the DVD videos were not held back
        assert _load(p)["embedding_dim"] == 4096


def test_rollback_leaves_a_dir_whole_when_one_file_cannot_be_restored(cli, tmp_path):
    wd = tmp_path / "rag_storage"
    store = build_lightrag_workdir(wd, n_docs=2)
    r = cli("run", "--root", str(wd), "--model", "8b", "--yes")
    assert r.exit_code == 0, r.output
    lost = store.files["chunks"]
    backup = next(wd.glob("vdb_chunks.json.migrator-*.backup"))
    backup.unlink()  # its backup is gone: it cannot be restored
    r = cli("rollback", "--yes")
    assert r.exit_code == EXIT_PARTIAL, r.output
    assert "is gone" in r.output
    for ns in ("entities", "relationships"):
        line = next(ln for ln in r.output.splitlines() if str(store.files[ns]) in ln)
        assert "not restored" in line and str(lost) in line
    for p in store.files.values():  # all still at the new dimension: loadable
        assert _load(p)["embedding_dim"] == 4096
        NanoVectorDB(4096, storage_file=str(p))


def test_a_file_changed_during_cutover_undoes_its_units_swaps(cli, tmp_path, monkeypatch):
    """The second file of a working dir changes between the checks and its swap: the first,
    already swapped, is put back, so the dir is never half new; the next run swaps it whole."""
    from migrator import crashpoints

    wd = tmp_path / "cache"
    store = build_nanographrag_workdir(wd)
    r = cli("run", "--root", str(wd), "--model", "8b", "--yes", "--no-cutover")
    assert r.exit_code == 0, r.output
    before = tree_digest(wd)
    seen = []
    real = crashpoints.reached

    def touch_second(point):
        real(point)
        if point == "cutover.backed_up":
            seen.append(point)
            if len(seen) == 2:  # the second member backed up, before either is swapped
                second = sorted(store.files.values())[1]
                doc = _load(second)
                doc.setdefault("additional_data", {})["touched"] = True
                second.write_text(json.dumps(doc), encoding="utf-8")

    monkeypatch.setattr(crashpoints, "reached", touch_second)
    r = cli("cutover", "--yes")
    assert r.exit_code == EXIT_PARTIAL, r.output
    first = sorted(store.files.values())[0]
    assert tree_digest(wd)[first.name] == before[first.name]  # the first swap was undone
    for p in store.files.values():
        assert _load(p)["embedding_dim"] == 1536
    monkeypatch.setattr(crashpoints, "reached", real)
    r = cli("run", "--yes")
    assert r.exit_code == 0, r.output
    for p in store.files.values():
        assert _load(p)["embedding_dim"] == 4096


def test_dvd_is_told_every_line_and_that_its_utils_still_posts_to_openai(cli, dvd_tree, tmp_path, monkeypatch):
    """Released DVD posts embeddings to OpenAI's fixed URL: the cutover names the endpoint and
    the key by its variable (never its value), and plan and cutover point at dvd/utils.py."""
    root, _ = dvd_tree
    cfg = tmp_path / "dvd" / "config.py"
    cfg.parent.mkdir()
    cfg.write_text('AOAI_EMBEDDING_LARGE_MODEL_NAME = "text-embedding-3-large"\nAOAI_EMBEDDING_LARGE_DIM = 3072\n')
    utils = cfg.with_name("utils.py")
    utils.write_text(
        "class AzureOpenAIEmbeddingService:\n    @staticmethod\n"
        "    def get_embeddings(endpoints, model_name, input_text, api_key=None):\n"
        '        endpoint = "https://api.openai.com/v1"\n        url = f"{endpoint}/embeddings"\n'
    )
    monkeypatch.delenv("MIGRATOR_API_KEY")
    monkeypatch.setenv("VLLM_API_KEY", API_KEY)
    r = cli("plan", "--root", str(root), "--model", "8b")
    assert f"WARNING: {utils}: get_embeddings still posts to OpenAI's fixed URL" in r.stdout
    r = cli("run", "--root", str(root), "--model", "8b", "--yes")
    assert r.exit_code == 0, r.output
    assert f'EMBEDDING_ENDPOINT = "{cli.endpoint}"' in r.stdout
    assert 'EMBEDDING_API_KEY = os.environ.get("VLLM_API_KEY")' in r.stdout
    assert f"WARNING: {utils}" in r.stdout and API_KEY not in r.output
    # once utils.py reads EMBEDDING_ENDPOINT, nothing more is said about it
    utils.write_text(
        "def get_embeddings(endpoints, model_name, input_text, api_key=None):\n"
        '    url = f"{config.EMBEDDING_ENDPOINT}/embeddings"\n'
    )
    r = cli("plan", "--root", str(root), "--model", "4b")
    assert "get_embeddings" not in r.stdout


def test_the_dvd_key_line_reads_the_key_file_the_run_used(cli, dvd_tree, tmp_path):
    """With --api-key-file, DVD is told to read that file, not a variable the run never used."""
    root, _ = dvd_tree
    cfg = tmp_path / "dvd" / "config.py"
    cfg.parent.mkdir()
    cfg.write_text('AOAI_EMBEDDING_LARGE_MODEL_NAME = "text-embedding-3-large"\nAOAI_EMBEDDING_LARGE_DIM = 3072\n')
    keyfile = tmp_path / "secret" / "vllm.key"
    keyfile.parent.mkdir()
    keyfile.write_text(API_KEY + "\n")
    keyfile.chmod(0o600)
    r = cli("run", "--root", str(root), "--model", "8b", "--yes", "--api-key-file", str(keyfile), "--apply-config")
    assert r.exit_code == 0, r.output
    line = f'EMBEDDING_API_KEY = open("{keyfile.resolve()}").read().strip()'
    new_cfg = cfg.read_text()
    assert line in new_cfg and "os.environ" not in new_cfg
    assert API_KEY not in new_cfg and API_KEY not in r.output


def test_apply_config_sets_dvd_and_lightrag_settings_at_the_swap_and_rollback_restores_them(cli, dvd_tree, tmp_path):
    root, _ = dvd_tree
    cfg = tmp_path / "dvd" / "config.py"
    cfg.parent.mkdir()
    original_cfg = (
        'import os\nOPENAI_API_KEY = os.environ.get("OPENAI_API_KEY", None)\n'
        'AOAI_EMBEDDING_LARGE_MODEL_NAME = "text-embedding-3-large"\nAOAI_EMBEDDING_LARGE_DIM = 3072\n'
        "LITE_MODE = True\n"
    )
    cfg.write_text(original_cfg)
    cfg.chmod(0o640)
    wd = tmp_path / "rag" / "rag_storage"
    env_file = tmp_path / "rag" / ".env"
    build_lightrag_workdir(wd, n_docs=2, env_file=env_file)
    original_env = env_file.read_text()
    r = cli("run", "--root", str(root), "--root", str(wd), "--model", "8b", "--yes", "--apply-config")
    assert r.exit_code == 0, r.output
    assert f"settings changed (--apply-config; the original kept as a .backup): {cfg}" in r.stdout
    new_cfg = cfg.read_text()
    compile(new_cfg, str(cfg), "exec")  # still Python
    ns: dict = {}
    exec(new_cfg, ns)
    assert ns["AOAI_EMBEDDING_LARGE_MODEL_NAME"] == QWEN_8B and ns["AOAI_EMBEDDING_LARGE_DIM"] == 4096
    assert ns["EMBEDDING_ENDPOINT"] == cli.endpoint and "LITE_MODE = True" in new_cfg
    assert 'EMBEDDING_API_KEY = os.environ.get("MIGRATOR_API_KEY")' in new_cfg and API_KEY not in new_cfg
    assert oct(cfg.stat().st_mode & 0o777) == "0o640"
    env = env_file.read_text()
    assert f"EMBEDDING_MODEL={QWEN_8B}" in env and "EMBEDDING_DIM=4096" in env
    assert "text-embedding-3-large" not in env
    assert "Now change DeepVideoDiscovery" not in r.stdout  # nothing left to change by hand
    r = cli("rollback", "--yes")
    assert r.exit_code == 0, r.output
    assert cfg.read_text() == original_cfg and env_file.read_text() == original_env
    assert not list(cfg.parent.glob("*.backup")) and not list(env_file.parent.glob(".env.migrator-*"))


def test_apply_config_leaves_an_applications_settings_while_one_of_its_files_is_not_cut_over(cli, dvd_tree, tmp_path):
    root, paths = dvd_tree
    cfg = tmp_path / "dvd" / "config.py"
    cfg.parent.mkdir()
    cfg.write_text('AOAI_EMBEDDING_LARGE_MODEL_NAME = "text-embedding-3-large"\nAOAI_EMBEDDING_LARGE_DIM = 3072\n')
    before = cfg.read_text()
    paths[0].write_text('{"embedding_dim": 3072, "data": [')  # one video cannot be migrated
    r = cli("run", "--root", str(root), "--model", "8b", "--yes", "--apply-config")
    assert r.exit_code == EXIT_PARTIAL, r.output
    assert cfg.read_text() == before and "settings changed" not in r.stdout
