"""Build LightRAG- and nano-graphrag-shaped working directories for tests.

The files look like what those projects leave on disk, and the vector
databases are written with the real ``nano_vectordb`` package.  The facts come
from ``docs/notes/stores-lightrag-nanographrag.md``; the tags below are that
note's source tags.  The code is ours, not copied from either project.

LightRAG (``build_lightrag_workdir``)
    * layout, namespaces, workspace = subdirectory (since 1.4.0): LR-1.5.7, LR-old
    * record keys per file, ``content`` = embedding input, entity/relation/chunk
      ``content`` layouts, ``ent-``/``rel-`` ids (names sorted), chunk ids
      ``<doc_id>-chunk-NNN``: LR-1.5.7
    * 1.4.6: no ``vector`` (added in 1.4.7), no ``__write_seq__`` (1.5.x),
      ``chunk-`` + md5(content) chunk ids, the older relation layout
      ``src\\ttgt\\nkeywords\\ndescription``: LR-old (plus index copies of
      ``operate.py`` for the exact separators)
    * ``vector`` = base64(zlib(float16 raw vector)): LR-1.5.7
    * atomic save through a ``<file>.tmp.<pid>.<tid>.<ns>`` sibling: LR-1.5.7
      (1.4.x saved in place)
    * ``additional_data`` = ``lightrag_embedding_model``/``_dim``: LR-main (PR #3986)
    * ``.env`` embedding block: LR-main ``env.example`` @709415e6
    Choices the notes leave open: ``NNN`` counts from 000 per document;
    ``__write_seq__`` is a distinct increasing int per record; timestamps are
    fixed (2026-01-01 + seed) so builds are byte-for-byte repeatable.  The
    LightRAG ``kv_store_*.json`` values and graphml attributes are plausible,
    not verified field by field (a LightRAG migration reads only the vdbs).

nano-graphrag (``build_nanographrag_workdir``), all from NG @01f429e8
    entity records ``__id__`` + ``entity_name``; chunk records only ``__id__``;
    embedded entity text = name + description (no separator); graphml node and
    edge attributes; ``"UNKNOWN"`` placeholder nodes not in the vdb;
    ``kv_store_text_chunks.json`` shape; orphan chunks after a failed insert.

The corpus is synthetic English about a few invented entities, deterministic in
``seed``; vectors are ``embedder.embed(text, dim, seed=model)``, a stand-in for
the "old" model.  Nothing here calls a network.

CLI::

    python -m migrator.testing.appstores lightrag|nano-graphrag --out DIR
        [--workspace W] [--version V] [--seed S] [--docs N] [--env-file F]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import itertools
import json
import os
import random
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import networkx as nx
import numpy as np

from migrator.testing.corpus import _import_nano_vectordb
from migrator.testing.embedder import embed, token_strings

__all__ = [
    "LIGHTRAG_VERSIONS",
    "LightRagStore",
    "NanoGraphRagStore",
    "build_lightrag_workdir",
    "build_nanographrag_workdir",
    "decode_lightrag_vector",
    "encode_lightrag_vector",
    "main",
]

NanoVectorDB = _import_nano_vectordb().NanoVectorDB

LIGHTRAG_VERSIONS = ("1.4.6", "1.5.7", "main")
SEP = "<SEP>"  # GRAPH_FIELD_SEP in both projects
_EPOCH = 1_767_225_600  # 2026-01-01T00:00:00Z: fixed "now" for timestamps

# --------------------------------------------------------------------------- #
# Synthetic corpus (shared by both builders)                                  #
# --------------------------------------------------------------------------- #
# name, type, description parts (each also becomes a sentence "<name> is <part>.")
_ENTITIES = [
    (
        "Alex Rivera",
        "person",
        ["a marine biologist who studies coral reefs", "the lead author of the reef survey report"],
    ),
    ("José Ortega", "person", ["a harbour pilot in Valparaíso", "a former fisherman who guides research boats"]),
    (
        "Mei Lin",
        "person",
        ["an oceanographer who builds underwater sensors", "a visiting fellow at the Harbour Institute"],
    ),
    (
        "Harbour Institute",
        "organization",
        ["a research centre for coastal ecology", "the owner of the vessel Albatross"],
    ),
    ("Northwind Labs", "organization", ["a company that makes sonar equipment", "a sponsor of student expeditions"]),
    ("Valparaíso", "location", ["a port city on the Pacific coast", "the home port of several research vessels"]),
    ("Reef Survey", "event", ["a three-month count of coral species", "an expedition that mapped the northern reef"]),
]
# src, tgt, keywords, description (also the sentence that mentions both)
_RELATIONS = [
    (
        "Alex Rivera",
        "Mei Lin",
        "collaboration, co-authorship",
        "Alex Rivera and Mei Lin wrote the survey report together",
    ),
    ("José Ortega", "Valparaíso", "residence, navigation", "José Ortega guides ships in and out of Valparaíso"),
    ("Alex Rivera", "Reef Survey", "leadership, fieldwork", "Alex Rivera led the Reef Survey from start to finish"),
    ("Mei Lin", "Northwind Labs", "equipment, partnership", "Mei Lin tested new sensors supplied by Northwind Labs"),
    (
        "Harbour Institute",
        "Valparaíso",
        "location, headquarters",
        "The Harbour Institute keeps its main laboratory in Valparaíso",
    ),
    ("José Ortega", "Reef Survey", "transport, support", "José Ortega piloted the boats used during the Reef Survey"),
]
_FILLER = [
    "The weather stayed calm for most of the week.",
    "Several students joined the crew for the first time.",
    "The data were copied to two separate drives every evening.",
    "Nobody expected the water to be so clear in winter.",
    "A short report was sent to the funding agency.",
]
_TYPES = {name: etype for name, etype, _ in _ENTITIES}
_PARTS = {name: parts for name, _, parts in _ENTITIES}


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def _make_docs(seed: int, n_docs: int) -> list[list[tuple[str, set, set]]]:
    """Documents as lists of (sentence, entity names, relation indexes)."""
    if n_docs < 1:
        raise ValueError(f"n_docs must be >= 1, got {n_docs}")
    rng = random.Random(seed)
    docs: list[list[tuple[str, set, set]]] = []
    for _ in range(n_docs):
        rel = rng.randrange(len(_RELATIONS))
        src, tgt = _RELATIONS[rel][:2]
        others = [n for n, _, _ in _ENTITIES if n not in (src, tgt)]
        names = [src, tgt] + rng.sample(others, rng.randint(1, 2))
        if not docs and "José Ortega" not in names:  # always one non-ASCII name
            names.append("José Ortega")
        sents: list[tuple[str, set, set]] = []
        for i, name in enumerate(names):  # the first entity gets two parts
            for part in _PARTS[name] if i == 0 else [rng.choice(_PARTS[name])]:
                sents.append((f"{name} is {part}.", {name}, set()))
        for r, (a, b, _, desc) in enumerate(_RELATIONS):
            if a in names and b in names:
                sents.append((desc + ".", {a, b}, {r}))
        sents += [(s, set(), set()) for s in rng.sample(_FILLER, 2)]
        head, rest = sents[0], sents[1:]
        rng.shuffle(rest)
        docs.append([head] + rest)
    return docs


def _chunks(doc: list[tuple[str, set, set]], size: int = 3):
    """Split a document into chunks of *size* sentences: (text, ents, rels)."""
    for i in range(0, len(doc), size):
        part = doc[i : i + size]
        yield (
            " ".join(s for s, _, _ in part),
            set().union(*(e for _, e, _ in part)),
            set().union(*(r for _, _, r in part)),
        )


def _extract(docs, chunk_id_of):
    """Merge the docs into chunks, entities and relations like an indexer would.

    ``chunk_id_of(doc_id, index, text)`` names chunks.  Returns (doc rows,
    chunk rows, entities name -> {description parts, chunk ids}, relations
    index -> chunk ids).
    """
    doc_rows, chunk_rows = [], []
    ents: dict[str, dict[str, set]] = {}
    rels: dict[int, set] = {}
    for d, doc in enumerate(docs):
        text = " ".join(s for s, _, _ in doc)
        doc_id = "doc-" + _md5(text.strip())
        doc_rows.append({"id": doc_id, "content": text, "file_path": f"report_{d:02d}.txt"})
        for i, (ctext, names, rel_ix) in enumerate(_chunks(doc)):
            cid = chunk_id_of(doc_id, i, ctext)
            chunk_rows.append(
                {"id": cid, "content": ctext, "order": i, "doc_id": doc_id, "file_path": doc_rows[-1]["file_path"]}
            )
            for name in names:
                row = ents.setdefault(name, {"parts": set(), "chunks": set(), "files": set()})
                row["parts"].update(f"{name} is {p}." for p in _PARTS[name] if f"{name} is {p}." in ctext)
                row["chunks"].add(cid)
                row["files"].add(doc_rows[-1]["file_path"])
            for r in rel_ix:
                rels.setdefault(r, set()).add(cid)
    for name, row in ents.items():  # mentioned only in relation sentences
        if not row["parts"]:
            row["parts"].add(f"{name} is {_PARTS[name][0]}.")
    return doc_rows, chunk_rows, ents, rels


# --------------------------------------------------------------------------- #
# Writers                                                                     #
# --------------------------------------------------------------------------- #
def _write_json(path: Path, data: Any) -> None:
    """The KV-store JSON of both projects: indent=2, ensure_ascii=False."""
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, ensure_ascii=False)


def _write_vdb(path: Path, dim: int, records: list[dict], *, atomic: bool, additional: Optional[dict] = None) -> None:
    """Upsert *records* (each with ``__vector__``) into a new NanoVectorDB file.

    With *atomic*, save to a ``<file>.tmp.<pid>.<tid>.<ns>`` sibling and
    ``os.replace`` it, as LightRAG 1.5.x does; else save in place.
    """
    target = path
    if atomic:
        target = path.with_name(f"{path.name}.tmp.{os.getpid()}.{threading.get_ident()}.{time.time_ns()}")
    vdb = NanoVectorDB(dim, storage_file=str(target))
    if records:
        vdb.upsert(records)
    if additional is not None:
        vdb.store_additional_data(**additional)
    vdb.save()
    if atomic:
        os.replace(target, path)


def _prepare(dir_: Path, names: list[str], overwrite: bool) -> None:
    dir_.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (dir_ / name).exists():
            if not overwrite:
                raise FileExistsError(dir_ / name)
            (dir_ / name).unlink()


def encode_lightrag_vector(raw: np.ndarray) -> str:
    """LightRAG's per-record ``vector``: base64(zlib(float16 LE bytes))."""
    return base64.b64encode(zlib.compress(np.asarray(raw).astype("<f2").tobytes())).decode("ascii")


def decode_lightrag_vector(s: str) -> np.ndarray:
    """Inverse of ``encode_lightrag_vector``, as a float32 array."""
    return np.frombuffer(zlib.decompress(base64.b64decode(s)), dtype="<f2").astype(np.float32)


# --------------------------------------------------------------------------- #
# LightRAG                                                                    #
# --------------------------------------------------------------------------- #
@dataclass
class LightRagStore:
    """What ``build_lightrag_workdir`` wrote.

    ``files``: namespace (``entities``/``relationships``/``chunks``) -> vdb
    file; ``texts``: vdb file -> {record id: the text that was embedded};
    ``neighbours``: the other files (``text_chunks``, ``full_docs``,
    ``doc_status``, ``graph``) -> path.
    """

    dir: Path
    files: dict[str, Path]
    texts: dict[Path, dict[str, str]]
    model: str
    dim: int
    version: str = "1.5.7"
    workspace: Optional[str] = None
    neighbours: dict[str, Path] = field(default_factory=dict)
    env_file: Optional[Path] = None


def _lightrag_env(path: Path, working_dir: Path, workspace: Optional[str], model: str, dim: int) -> None:
    lines = [
        "### Server Configuration",
        "HOST=0.0.0.0",
        "PORT=9621",
        f"WORKING_DIR={working_dir.resolve()}",
        *([f"WORKSPACE={workspace}"] if workspace else []),
        "",
        "### LLM Configuration",
        "LLM_BINDING=openai",
        "LLM_MODEL=gpt-4o-mini",
        "LLM_BINDING_HOST=https://api.openai.com/v1",
        "MAX_ASYNC=4",
        "",
        "#" * 84,
        "### Embedding Configuration (Should not be changed after the first file processed)",
        "#" * 84,
        "# EMBEDDING_BINDING=ollama",
        "# EMBEDDING_MODEL=bge-m3:latest",
        "# EMBEDDING_DIM=1024",
        "EMBEDDING_BINDING=openai",
        f"EMBEDDING_MODEL={model}",
        f"EMBEDDING_DIM={dim}",
        "EMBEDDING_TOKEN_LIMIT=8192",
        "EMBEDDING_BINDING_HOST=https://api.openai.com/v1",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")


def build_lightrag_workdir(
    working_dir: os.PathLike | str,
    *,
    workspace: Optional[str] = None,
    version: str = "1.5.7",
    model: str = "text-embedding-3-large",
    dim: int = 3072,
    seed: int = 0,
    n_docs: int = 3,
    env_file: os.PathLike | str | None = None,
    overwrite: bool = False,
) -> LightRagStore:
    """Write a LightRAG working directory (see the module docstring)."""
    if version not in LIGHTRAG_VERSIONS:
        raise ValueError(f"version must be one of {LIGHTRAG_VERSIONS}, got {version!r}")
    if workspace and (workspace in (".", "..") or any(c in workspace for c in "/\\")):
        raise ValueError(f"invalid LightRAG workspace {workspace!r}")
    old = version == "1.4.6"
    working_dir = Path(working_dir)
    dir_ = working_dir / workspace if workspace else working_dir
    files = {ns: dir_ / f"vdb_{ns}.json" for ns in ("entities", "relationships", "chunks")}
    neighbours = {
        "text_chunks": dir_ / "kv_store_text_chunks.json",
        "full_docs": dir_ / "kv_store_full_docs.json",
        "doc_status": dir_ / "kv_store_doc_status.json",
        "graph": dir_ / "graph_chunk_entity_relation.graphml",
    }
    _prepare(dir_, [p.name for p in (*files.values(), *neighbours.values())], overwrite)

    def chunk_id(doc_id: str, i: int, text: str) -> str:
        return "chunk-" + _md5(text) if old else f"{doc_id}-chunk-{i:03d}"

    doc_rows, chunk_rows, ents, rels = _extract(_make_docs(seed, n_docs), chunk_id)
    created = _EPOCH + seed
    seq = itertools.count(created * 10**9)  # one nanosecond-style token per record
    texts: dict[Path, dict[str, str]] = {}

    def write(ns: str, rows: list[tuple[str, str, dict, str]]) -> None:
        """rows: (id, content, meta fields, file_path), keys in LightRAG's order."""
        records = []
        for rid, content, meta, fpath in rows:
            raw = embed(content, dim, seed=model)
            rec: dict[str, Any] = {"__id__": rid, "__created_at__": created}
            if not old:
                rec["__write_seq__"] = next(seq)
            rec.update(meta, content=content, file_path=fpath)
            if not old:
                rec["vector"] = encode_lightrag_vector(raw)
            records.append({**rec, "__vector__": raw})
        texts[files[ns]] = {rid: content for rid, content, _, _ in rows}
        extra = {"lightrag_embedding_model": model, "lightrag_embedding_dim": dim} if version == "main" else None
        _write_vdb(files[ns], dim, records, atomic=not old, additional=extra)

    graph = nx.Graph()
    ent_rows = []
    for name in sorted(ents):
        row = ents[name]
        desc, src = SEP.join(sorted(row["parts"])), SEP.join(sorted(row["chunks"]))
        fpath = SEP.join(sorted(row["files"]))
        graph.add_node(
            name,
            entity_id=name,
            entity_type=_TYPES[name],
            description=desc,
            source_id=src,
            file_path=fpath,
            created_at=created,
        )
        ent_rows.append(("ent-" + _md5(name), f"{name}\n{desc}", {"entity_name": name, "source_id": src}, fpath))
    rel_rows = []
    for r in sorted(rels):
        a, b, keywords, desc = _RELATIONS[r]
        a, b = sorted((a, b))
        src = SEP.join(sorted(rels[r]))
        fpath = SEP.join(sorted({c["file_path"] for c in chunk_rows if c["id"] in rels[r]}))
        graph.add_edge(
            a,
            b,
            weight=float(len(rels[r])),
            description=desc,
            keywords=keywords,
            source_id=src,
            file_path=fpath,
            created_at=created,
        )
        content = f"{a}\t{b}\n{keywords}\n{desc}" if old else f"{keywords}\t{a}\n{b}\n{desc}"
        rel_rows.append(("rel-" + _md5(a + b), content, {"src_id": a, "tgt_id": b, "source_id": src}, fpath))
    chunk_vrows = [(c["id"], c["content"], {"full_doc_id": c["doc_id"]}, c["file_path"]) for c in chunk_rows]
    write("entities", ent_rows)
    write("relationships", rel_rows)
    write("chunks", chunk_vrows)

    stamp = datetime.fromtimestamp(created, timezone.utc).isoformat()
    _write_json(
        neighbours["text_chunks"],
        {
            c["id"]: {
                "tokens": len(token_strings(c["content"])),
                "content": c["content"],
                "chunk_order_index": c["order"],
                "full_doc_id": c["doc_id"],
                "file_path": c["file_path"],
                "llm_cache_list": [],
                "create_time": created,
                "update_time": created,
                "_id": c["id"],
            }
            for c in chunk_rows
        },
    )
    _write_json(
        neighbours["full_docs"],
        {
            d["id"]: {
                "content": d["content"],
                "file_path": d["file_path"],
                "create_time": created,
                "update_time": created,
                "_id": d["id"],
            }
            for d in doc_rows
        },
    )
    _write_json(
        neighbours["doc_status"],
        {
            d["id"]: {
                "status": "processed",
                "content_summary": d["content"][:100],
                "content_length": len(d["content"]),
                "chunks_count": sum(c["doc_id"] == d["id"] for c in chunk_rows),
                "chunks_list": [c["id"] for c in chunk_rows if c["doc_id"] == d["id"]],
                "created_at": stamp,
                "updated_at": stamp,
                "file_path": d["file_path"],
                "track_id": f"insert_{seed}",
            }
            for d in doc_rows
        },
    )
    nx.write_graphml(graph, neighbours["graph"])
    env_path = Path(env_file) if env_file is not None else None
    if env_path is not None:
        _lightrag_env(env_path, working_dir, workspace, model, dim)
    return LightRagStore(
        dir=dir_,
        files=files,
        texts=texts,
        model=model,
        dim=dim,
        version=version,
        workspace=workspace or None,
        neighbours=neighbours,
        env_file=env_path,
    )


# --------------------------------------------------------------------------- #
# nano-graphrag                                                               #
# --------------------------------------------------------------------------- #
@dataclass
class NanoGraphRagStore:
    """What ``build_nanographrag_workdir`` wrote.

    ``files``: ``entities`` (and ``chunks`` with naive RAG) -> vdb file;
    ``texts``: vdb file -> {record id: embedded text}, orphans included;
    ``orphan_ids``: chunk ids in ``vdb_chunks.json`` with no text row;
    ``neighbours``: ``graph``, ``text_chunks``, ``full_docs``,
    ``llm_response_cache`` -> path.
    """

    dir: Path
    files: dict[str, Path]
    texts: dict[Path, dict[str, str]]
    model: str
    dim: int
    neighbours: dict[str, Path] = field(default_factory=dict)
    orphan_ids: set[str] = field(default_factory=set)


def _ng_name(name: str) -> str:
    """An entity name as nano-graphrag's prompt yields it: '"JOSÉ ORTEGA"'."""
    return f'"{name.upper()}"'


def build_nanographrag_workdir(
    working_dir: os.PathLike | str,
    *,
    naive_rag: bool = True,
    model: str = "text-embedding-3-small",
    dim: int = 1536,
    seed: int = 0,
    n_docs: int = 3,
    orphan_chunk: bool = False,
    unknown_nodes: bool = True,
    overwrite: bool = False,
) -> NanoGraphRagStore:
    """Write a nano-graphrag working directory (see the module docstring)."""
    if orphan_chunk and not naive_rag:
        raise ValueError("orphan_chunk needs naive_rag (only vdb_chunks.json can hold one)")
    dir_ = Path(working_dir)
    files = {"entities": dir_ / "vdb_entities.json"}
    if naive_rag:
        files["chunks"] = dir_ / "vdb_chunks.json"
    neighbours = {
        "graph": dir_ / "graph_chunk_entity_relation.graphml",
        "text_chunks": dir_ / "kv_store_text_chunks.json",
        "full_docs": dir_ / "kv_store_full_docs.json",
        "llm_response_cache": dir_ / "kv_store_llm_response_cache.json",
    }
    _prepare(dir_, ["vdb_entities.json", "vdb_chunks.json", *(p.name for p in neighbours.values())], overwrite)

    def chunk_id(doc_id, i, text):
        return "chunk-" + _md5(text)

    # the same rng stream: the first n_docs documents do not depend on orphan_chunk
    docs = _make_docs(seed, n_docs + (1 if orphan_chunk else 0))
    doc_rows, chunk_rows, ents, rels = _extract(docs[:n_docs], chunk_id)

    graph = nx.Graph()
    ent_records, ent_texts = [], {}
    for name in sorted(ents):
        desc = SEP.join(sorted(_ng_desc(p) for p in ents[name]["parts"]))
        ng = _ng_name(name)
        graph.add_node(
            ng,
            entity_type=f'"{_TYPES[name].upper()}"',
            description=desc,
            source_id=SEP.join(sorted(ents[name]["chunks"])),
        )
        rid = "ent-" + _md5(ng)
        ent_texts[rid] = ng + desc
        ent_records.append({"__id__": rid, "entity_name": ng, "__vector__": embed(ng + desc, dim, seed=model)})
    for r in sorted(rels):
        a, b, _, desc = _RELATIONS[r]
        graph.add_edge(
            _ng_name(a),
            _ng_name(b),
            weight=float(len(rels[r])),
            description=desc + ".",
            source_id=SEP.join(sorted(rels[r])),
            order=1,
        )
    if unknown_nodes:  # an edge to a name that was never extracted as an entity
        src, board = chunk_rows[0]["id"], '"THE HARBOUR BOARD"'
        desc = "The survey results were reviewed by the harbour board."
        graph.add_node(board, entity_type='"UNKNOWN"', description=desc, source_id=src)
        graph.add_edge(_ng_name(sorted(ents)[0]), board, weight=1.0, description=desc, source_id=src, order=1)
    _write_vdb(files["entities"], dim, ent_records, atomic=False)
    texts = {files["entities"]: ent_texts}

    orphan_ids: set[str] = set()
    if naive_rag:
        chunk_texts = {c["id"]: c["content"] for c in chunk_rows}
        if orphan_chunk:  # a failed insert of one more document: its chunk is in the vdb only
            text = next(t for t, _, _ in _chunks(docs[-1]) if chunk_id("", 0, t) not in chunk_texts)
            orphan_ids.add(chunk_id("", 0, text))
            chunk_texts[chunk_id("", 0, text)] = text
        _write_vdb(
            files["chunks"],
            dim,
            [{"__id__": k, "__vector__": embed(t, dim, seed=model)} for k, t in chunk_texts.items()],
            atomic=False,
        )
        texts[files["chunks"]] = chunk_texts

    _write_json(
        neighbours["text_chunks"],
        {
            c["id"]: {
                "tokens": len(token_strings(c["content"])),
                "content": c["content"],
                "chunk_order_index": c["order"],
                "full_doc_id": c["doc_id"],
            }
            for c in chunk_rows
        },
    )
    _write_json(neighbours["full_docs"], {d["id"]: {"content": d["content"].strip()} for d in doc_rows})
    _write_json(neighbours["llm_response_cache"], {})
    nx.write_graphml(graph, neighbours["graph"])
    return NanoGraphRagStore(
        dir=dir_, files=files, texts=texts, model=model, dim=dim, neighbours=neighbours, orphan_ids=orphan_ids
    )


def _ng_desc(part: str) -> str:
    """A description part in nano-graphrag's style: the entity name upper-cased."""
    for name in _PARTS:
        part = part.replace(name, name.upper())
    return part


# --------------------------------------------------------------------------- #
# CLI                                                                         #
# --------------------------------------------------------------------------- #
def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m migrator.testing.appstores",
        description="Build a synthetic LightRAG or nano-graphrag working directory "
        "(test/demo data; vectors are a stand-in, not OpenAI's).",
    )
    ap.add_argument("kind", choices=["lightrag", "nano-graphrag"])
    ap.add_argument("--out", required=True, help="the working directory")
    ap.add_argument("--workspace", help="LightRAG workspace (a subdirectory)")
    ap.add_argument("--version", choices=LIGHTRAG_VERSIONS, help="LightRAG version (1.5.7)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--docs", type=int, default=3)
    ap.add_argument("--dim", type=int, help="embedding dim (3072 / 1536)")
    ap.add_argument("--env-file", help="LightRAG: also write this .env")
    ap.add_argument("--orphan-chunk", action="store_true", help="nano-graphrag only")
    args = ap.parse_args(argv)
    store: LightRagStore | NanoGraphRagStore
    if args.kind == "lightrag":
        if args.orphan_chunk:
            ap.error("--orphan-chunk is for nano-graphrag")
        store = build_lightrag_workdir(
            args.out,
            workspace=args.workspace,
            version=args.version or "1.5.7",
            dim=args.dim or 3072,
            seed=args.seed,
            n_docs=args.docs,
            env_file=args.env_file,
        )
    else:
        if args.workspace or args.version or args.env_file:
            ap.error("--workspace/--version/--env-file are for lightrag")
        store = build_nanographrag_workdir(
            args.out, dim=args.dim or 1536, seed=args.seed, n_docs=args.docs, orphan_chunk=args.orphan_chunk
        )
    print(f"built {args.kind} store (model {store.model}, dim {store.dim}) in {store.dir}", file=sys.stderr)
    for path in store.files.values():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
