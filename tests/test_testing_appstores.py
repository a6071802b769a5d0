"""LightRAG / nano-graphrag working dirs from migrator.testing.appstores, read back
with the real nano-vectordb, networkx and ElementTree."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
from nano_vectordb import NanoVectorDB

from migrator.testing.appstores import (
    build_lightrag_workdir,
    build_nanographrag_workdir,
    decode_lightrag_vector,
    encode_lightrag_vector,
)
from migrator.testing.embedder import embed

REPO = Path(__file__).resolve().parents[1]
DIM = 64
GRAPHML = "{http://graphml.graphdrawing.org/xmlns}"

LR_KEYS = {
    "entities": {"__id__", "__created_at__", "entity_name", "source_id", "content", "file_path"},
    "relationships": {"__id__", "__created_at__", "src_id", "tgt_id", "source_id", "content", "file_path"},
    "chunks": {"__id__", "__created_at__", "full_doc_id", "content", "file_path"},
}


def md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def load_raw(path):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def matrix_of(raw) -> np.ndarray:
    return np.frombuffer(base64.b64decode(raw["matrix"]), dtype=np.float32).reshape(-1, raw["embedding_dim"])


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def check_vdb(path: Path, texts: dict[str, str], model: str, dim: int) -> dict:
    """The file loads with the real NanoVectorDB, holds exactly *texts*' ids in
    order, and each matrix row is the normalised old-model vector of its text."""
    db = NanoVectorDB(dim, storage_file=str(path))
    assert len(db) == len(texts)
    raw = load_raw(path)
    assert raw["embedding_dim"] == dim
    assert [r["__id__"] for r in raw["data"]] == list(texts)
    for row, rec in zip(matrix_of(raw), raw["data"]):
        old = embed(texts[rec["__id__"]], dim, seed=model)
        np.testing.assert_allclose(row, unit(old), atol=1e-6)
        assert db.query(old, top_k=1)[0]["__id__"] == rec["__id__"]
    return raw


# ------------------------------------------------------------------ LightRAG
@pytest.mark.parametrize("version", ["1.4.6", "1.5.7", "main"])
def test_lightrag_records_per_version(tmp_path, version):
    store = build_lightrag_workdir(tmp_path, version=version, dim=DIM, seed=3)
    assert store.dir == tmp_path and store.dim == DIM
    assert store.model == "text-embedding-3-large"
    assert set(store.files) == set(LR_KEYS)
    graph = nx.read_graphml(store.neighbours["graph"])
    for ns, path in store.files.items():
        assert path == tmp_path / f"vdb_{ns}.json"
        raw = check_vdb(path, store.texts[path], store.model, DIM)
        assert len(raw["data"]) >= 2
        if version == "main":
            assert raw["additional_data"] == {"lightrag_embedding_model": store.model, "lightrag_embedding_dim": DIM}
        else:
            assert "additional_data" not in raw
        keys = LR_KEYS[ns] | (set() if version == "1.4.6" else {"__write_seq__", "vector"})
        for rec in raw["data"]:
            assert set(rec) == keys
            assert rec["content"] == store.texts[path][rec["__id__"]]
            assert isinstance(rec["__created_at__"], int)
            if version != "1.4.6":
                assert list(rec)[:3] == ["__id__", "__created_at__", "__write_seq__"]
                assert list(rec)[-1] == "vector"
                old = embed(rec["content"], DIM, seed=store.model)
                got = decode_lightrag_vector(rec["vector"])
                assert got.dtype == np.float32 and got.shape == (DIM,)
                np.testing.assert_allclose(got, old, rtol=1e-3, atol=1e-4)
                assert not np.allclose(got, 0)
            if ns == "entities":
                name = rec["entity_name"]
                assert rec["__id__"] == "ent-" + md5(name)
                assert rec["content"] == name + "\n" + graph.nodes[name]["description"]
            elif ns == "relationships":
                a, b = rec["src_id"], rec["tgt_id"]
                assert a < b and rec["__id__"] == "rel-" + md5(a + b)
                edge = graph.edges[a, b]
                layout = (
                    [a + "\t" + b, edge["keywords"], edge["description"]]
                    if version == "1.4.6"
                    else [edge["keywords"] + "\t" + a, b, edge["description"]]
                )
                assert rec["content"] == "\n".join(layout)
            else:
                if version == "1.4.6":
                    assert rec["__id__"] == "chunk-" + md5(rec["content"])
                else:
                    assert re.fullmatch(r"doc-[0-9a-f]{32}-chunk-\d{3}", rec["__id__"])
                    assert rec["__id__"].startswith(rec["full_doc_id"] + "-chunk-")
    chunks = load_raw(store.neighbours["text_chunks"])
    assert {k: v["content"] for k, v in chunks.items()} == store.texts[store.files["chunks"]]
    docs = load_raw(store.neighbours["full_docs"])
    assert set(load_raw(store.neighbours["doc_status"])) == set(docs)
    assert all(k == "doc-" + md5(v["content"].strip()) for k, v in docs.items())
    assert not list(tmp_path.glob("*.tmp.*"))


def test_lightrag_workspace_env_and_determinism(tmp_path):
    env = tmp_path / "server" / ".env"
    store = build_lightrag_workdir(
        tmp_path / "rag", workspace="team_a", dim=DIM, seed=1, env_file=env, model="my-model"
    )
    assert store.dir == tmp_path / "rag" / "team_a" and store.workspace == "team_a"
    assert sorted(p.name for p in store.dir.iterdir()) == sorted(
        [
            "vdb_entities.json",
            "vdb_relationships.json",
            "vdb_chunks.json",
            "kv_store_text_chunks.json",
            "kv_store_full_docs.json",
            "kv_store_doc_status.json",
            "graph_chunk_entity_relation.graphml",
        ]
    )
    lines = env.read_text().splitlines()
    for line in (
        "EMBEDDING_BINDING=openai",
        "EMBEDDING_MODEL=my-model",
        f"EMBEDDING_DIM={DIM}",
        "EMBEDDING_TOKEN_LIMIT=8192",
        "WORKSPACE=team_a",
    ):
        assert line in lines
    assert any(ln.startswith("LLM_MODEL=") for ln in lines)
    assert any(re.match(r"#\s*EMBEDDING_MODEL=", ln) for ln in lines)
    assert sum(ln.startswith("EMBEDDING_MODEL=") for ln in lines) == 1
    again = build_lightrag_workdir(tmp_path / "rag2", workspace="team_a", dim=DIM, seed=1, model="my-model")
    for ns, path in store.files.items():
        assert path.read_bytes() == again.files[ns].read_bytes()
    other = build_lightrag_workdir(tmp_path / "rag3", dim=DIM, seed=2, model="my-model")
    assert other.files["chunks"].read_bytes() != store.files["chunks"].read_bytes()
    with pytest.raises(FileExistsError):
        build_lightrag_workdir(tmp_path / "rag", workspace="team_a", dim=DIM, seed=1)
    build_lightrag_workdir(tmp_path / "rag", workspace="team_a", dim=DIM, seed=1, overwrite=True)
    with pytest.raises(ValueError):
        build_lightrag_workdir(tmp_path / "x", workspace="../up", dim=DIM)
    with pytest.raises(ValueError):
        build_lightrag_workdir(tmp_path / "x", version="1.4.9", dim=DIM)


def test_lightrag_vector_encoding_round_trip():
    v = embed("some text", 3072, seed="m") * 3.0  # raw vectors need not be unit
    s = encode_lightrag_vector(v)
    assert re.fullmatch(r"[A-Za-z0-9+/]+=*", s)
    np.testing.assert_array_equal(decode_lightrag_vector(s), v.astype(np.float16).astype(np.float32))


# ------------------------------------------------------------- nano-graphrag
def test_nanographrag_entities_graph_and_chunks(tmp_path):
    store = build_nanographrag_workdir(tmp_path, dim=DIM, seed=5)
    assert store.model == "text-embedding-3-small" and store.orphan_ids == set()
    assert set(store.files) == {"entities", "chunks"}
    graph = nx.read_graphml(store.neighbours["graph"])
    ents = check_vdb(store.files["entities"], store.texts[store.files["entities"]], store.model, DIM)
    names = set()
    for rec in ents["data"]:
        assert set(rec) == {"__id__", "entity_name"}
        name = rec["entity_name"]
        names.add(name)
        assert re.fullmatch(r'"[^a-z"]+"', name), name
        assert rec["__id__"] == "ent-" + md5(name)
        node = graph.nodes[name]
        assert store.texts[store.files["entities"]][rec["__id__"]] == name + node["description"]
        assert node["entity_type"] != '"UNKNOWN"'
    assert any(not n.isascii() for n in names)
    assert any("<SEP>" in graph.nodes[n]["description"] for n in names)
    unknown = [n for n, d in graph.nodes(data=True) if d["entity_type"] == '"UNKNOWN"']
    assert unknown and not set(unknown) & names
    assert set(graph.nodes) == names | set(unknown)
    assert all(set(d) == {"weight", "description", "source_id", "order"} for _, _, d in graph.edges(data=True))

    chunks = check_vdb(store.files["chunks"], store.texts[store.files["chunks"]], store.model, DIM)
    kv_text = store.neighbours["text_chunks"].read_text(encoding="utf-8")
    assert kv_text.startswith('{\n  "chunk-') and "\\u" not in kv_text
    kv = json.loads(kv_text)
    docs = load_raw(store.neighbours["full_docs"])
    for rec in chunks["data"]:
        assert set(rec) == {"__id__"}
        row = kv[rec["__id__"]]
        assert set(row) == {"tokens", "content", "chunk_order_index", "full_doc_id"}
        assert rec["__id__"] == "chunk-" + md5(row["content"])
        assert row["full_doc_id"] in docs
    for n, d in graph.nodes(data=True):
        assert set(d["source_id"].split("<SEP>")) <= set(kv), n
    assert all(k == "doc-" + md5(v["content"].strip()) for k, v in docs.items())
    assert load_raw(store.neighbours["llm_response_cache"]) == {}


def test_nanographrag_graphml_attribute_names(tmp_path):
    store = build_nanographrag_workdir(tmp_path, dim=DIM, unknown_nodes=False)
    root = ET.parse(store.neighbours["graph"]).getroot()
    keys = {k.get("id"): (k.get("for"), k.get("attr.name")) for k in root.iter(GRAPHML + "key")}
    assert {n for f, n in keys.values() if f == "node"} == {"entity_type", "description", "source_id"}
    assert {n for f, n in keys.values() if f == "edge"} == {"weight", "description", "source_id", "order"}
    nodes = list(root.iter(GRAPHML + "node"))
    assert nodes and all(n.get("id").startswith('"') for n in nodes)
    for node in nodes:
        assert {keys[d.get("key")][1] for d in node} == {"entity_type", "description", "source_id"}
    assert not any(d.text == '"UNKNOWN"' for n in nodes for d in n)


def test_nanographrag_orphan_chunk_and_no_naive_rag(tmp_path):
    plain = build_nanographrag_workdir(tmp_path / "a", dim=DIM, seed=2)
    store = build_nanographrag_workdir(tmp_path / "b", dim=DIM, seed=2, orphan_chunk=True)
    chunk_texts = store.texts[store.files["chunks"]]
    check_vdb(store.files["chunks"], chunk_texts, store.model, DIM)
    (orphan,) = store.orphan_ids
    assert orphan in chunk_texts and orphan == "chunk-" + md5(chunk_texts[orphan])
    kv = load_raw(store.neighbours["text_chunks"])
    assert orphan not in kv and set(kv) == set(chunk_texts) - {orphan}
    # the rest of the store is what the same seed gives without the failed insert
    for name in (
        "vdb_entities.json",
        "kv_store_text_chunks.json",
        "kv_store_full_docs.json",
        "graph_chunk_entity_relation.graphml",
    ):
        assert (plain.dir / name).read_bytes() == (store.dir / name).read_bytes()

    local = build_nanographrag_workdir(tmp_path / "c", dim=DIM, naive_rag=False)
    assert set(local.files) == {"entities"} and not (local.dir / "vdb_chunks.json").exists()
    assert (local.dir / "kv_store_text_chunks.json").exists()
    with pytest.raises(ValueError):
        build_nanographrag_workdir(tmp_path / "d", dim=DIM, naive_rag=False, orphan_chunk=True)


# ----------------------------------------------------------------------- CLI
def test_cli_builds_both(tmp_path):
    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "migrator.testing.appstores", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )

    out = run(
        "lightrag",
        "--out",
        str(tmp_path / "lr"),
        "--workspace",
        "w",
        "--version",
        "1.4.6",
        "--seed",
        "4",
        "--dim",
        str(DIM),
    )
    paths = [Path(p) for p in out.stdout.split()]
    assert [p.name for p in paths] == ["vdb_entities.json", "vdb_relationships.json", "vdb_chunks.json"]
    assert all(p.parent == tmp_path / "lr" / "w" for p in paths)
    assert "vector" not in load_raw(paths[0])["data"][0]
    out = run("nano-graphrag", "--out", str(tmp_path / "ng"), "--orphan-chunk")
    assert load_raw(tmp_path / "ng" / "vdb_chunks.json")["embedding_dim"] == 1536
    assert len(out.stdout.split()) == 2
