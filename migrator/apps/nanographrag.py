"""nano-graphrag's NanoVectorDB stores: their texts live in the neighbouring files.

Facts (from nano-graphrag's source at 01f429e; docs/notes/stores-lightrag-nanographrag.md):

- ``vdb_entities.json`` records keep ``__id__`` and ``entity_name`` only. The text
  nano-graphrag embedded is the entity name followed directly by its description
  (no separator); the description is the node attribute ``description`` in
  ``graph_chunk_entity_relation.graphml`` (networkx GraphML, node id = entity name).
- ``vdb_chunks.json`` (only with ``enable_naive_rag``) records keep ``__id__`` only,
  ``"chunk-"`` + md5 of the chunk's text; the text is ``content`` in
  ``kv_store_text_chunks.json``, keyed by that id. The id is checked against the
  text's md5, so a text that is not the one embedded is refused, not re-embedded.
- Inserts that fail part-way can leave chunk ids with no text: refused, by record.
- A description may hold ``\r\n`` (an LLM's summary of several descriptions; the
  extraction itself strips control characters). networkx writes the ``\r`` raw into
  the GraphML, and any XML parser turns it into ``\n`` (XML's end-of-line rule), so
  the text read back would not be the one embedded. The raw ``\r`` inside ``<data>``
  is therefore kept as a character reference before parsing, and such records are
  named (``notes``). Once nano-graphrag itself re-saves the graph, the ``\r`` is gone
  from the file for good: nothing then shows that it was there.
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

import orjson
from defusedxml import ElementTree

from migrator.apps.base import Profile
from migrator.apps.configfiles import AppConfig, Wanted
from migrator.errors import BadDatabase
from migrator.files.nvdb import ID, NanoFile

GRAPH = "graph_chunk_entity_relation.graphml"
TEXT_CHUNKS = "kv_store_text_chunks.json"
ENTITIES = "vdb_entities.json"
CHUNKS = "vdb_chunks.json"
_GRAPHML = "{http://graphml.graphdrawing.org/xmlns}"
_DATA = re.compile(rb"(<data\b[^>]*>)(.*?)(</data>)", re.S)


def _keep_carriage_returns(raw: bytes) -> bytes:
    """A raw CR inside a <data> element as &#13;, which XML parsers keep (they turn a raw
    CR LF into LF). Only inside <data>: elsewhere a CR is markup whitespace."""
    if b"\r" not in raw:
        return raw
    return _DATA.sub(lambda m: m.group(1) + m.group(2).replace(b"\r", b"&#13;") + m.group(3), raw)


def looks_like(nf: NanoFile) -> bool:
    here = nf.path.parent
    if nf.path.name == ENTITIES and (here / GRAPH).exists():
        return all("content" not in r and isinstance(r.get("entity_name"), str) for r in nf.data[:64])
    if nf.path.name == CHUNKS and (here / TEXT_CHUNKS).exists():
        return all(set(r) == {ID} for r in nf.data[:64])
    return False


def descriptions(graph: Path) -> dict[str, str | None]:
    """Entity name -> its node's ``description`` (None when the node has none)."""
    out: dict[str, str | None] = {}
    key_id = None
    try:
        raw = _keep_carriage_returns(graph.read_bytes())
        for _, el in ElementTree.iterparse(io.BytesIO(raw), events=("end",)):
            tag = el.tag.removeprefix(_GRAPHML)
            if tag == "key" and el.get("attr.name") == "description" and el.get("for") in ("node", "all"):
                key_id = el.get("id")
            elif tag == "node":
                desc = None
                for data in el.iter(_GRAPHML + "data"):
                    if key_id is not None and data.get("key") == key_id:
                        desc = data.text or ""
                out[el.get("id")] = desc
                el.clear()
            elif tag == "edge":
                el.clear()
    except FileNotFoundError:
        raise BadDatabase(
            graph,
            "is missing: nano-graphrag keeps the entity descriptions that were embedded there",
            hint="restore it beside the vector file",
        ) from None
    except ElementTree.ParseError as e:
        raise BadDatabase(graph, f"is not valid GraphML ({e})", hint="restore it from a backup") from None
    except Exception as e:  # defusedxml refuses entity tricks with its own errors
        raise BadDatabase(
            graph, f"cannot be read safely ({type(e).__name__})", hint="restore it from a backup"
        ) from None
    return out


def chunk_texts(path: Path) -> dict:
    try:
        value = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise BadDatabase(
            path,
            "is missing: nano-graphrag keeps the chunk texts that were embedded there",
            hint="restore it beside the vector file",
        ) from None
    except orjson.JSONDecodeError:
        raise BadDatabase(path, "is not valid JSON", hint="restore it from a backup") from None
    if not isinstance(value, dict):
        raise BadDatabase(path, "is not a JSON object keyed by chunk id", hint="restore it from a backup")
    return value


class NanoGraphRag(Profile):
    name = "nano-graphrag"
    application = "nano-graphrag"
    label = "nano-graphrag"
    title = "nano-graphrag"
    whole_directory = True  # one working dir: every vector file at one dimension

    def looks_like(self, nf: NanoFile) -> bool:
        return looks_like(nf)

    def notes(self, nf: NanoFile, texts: list[str]) -> list[str]:
        """Records whose text holds a carriage return: read exactly, and said so."""
        return [
            f"record #{i} (__id__ {nf.data[i].get(ID)!r}) was embedded from a text holding \\r\\n, "
            f"read exactly from the GraphML's raw bytes; if nano-graphrag saves the graph again, the "
            f"\\r is lost and this text can no longer be rebuilt"
            for i, t in enumerate(texts)
            if "\r" in t
        ]

    def texts(self, nf: NanoFile) -> list[str]:
        if not nf.data:
            return []
        if nf.path.name == CHUNKS or (nf.data and set(nf.data[0]) == {ID}):
            return self._chunks(nf)
        return self._entities(nf)

    def _entities(self, nf: NanoFile) -> list[str]:
        graph = nf.path.parent / GRAPH
        found = descriptions(graph)
        out = []
        for i, rec in enumerate(nf.data):
            name = rec.get("entity_name")
            if not isinstance(name, str) or not name:
                raise self._refuse(
                    nf,
                    i,
                    rec,
                    "has no 'entity_name'",
                    "nano-graphrag keeps one in every entity record; restore the file from a backup",
                )
            if name not in found:
                raise self._refuse(
                    nf,
                    i,
                    rec,
                    f"names entity {name!r}, which has no node in {graph}",
                    "the graph and the vector store disagree; re-insert the document "
                    "with nano-graphrag, or remove that record",
                )
            desc = found[name]
            if desc is None:
                raise self._refuse(
                    nf,
                    i,
                    rec,
                    f"names entity {name!r}, whose node in {graph} has no description",
                    "nano-graphrag embedded name + description; restore the graph file from a backup",
                )
            out.append(self._checked(name + desc, "entity_name + description", i, rec, nf))
        return out

    def _chunks(self, nf: NanoFile) -> list[str]:
        store = nf.path.parent / TEXT_CHUNKS
        found = chunk_texts(store)
        out = []
        for i, rec in enumerate(nf.data):
            rid = rec[ID]
            row = found.get(rid)
            text = row.get("content") if isinstance(row, dict) else None
            if not isinstance(text, str):
                raise self._refuse(
                    nf,
                    i,
                    rec,
                    f"has no text in {store}",
                    "nano-graphrag leaves such orphans when an insert fails part-way; "
                    "remove that record, or insert its document again",
                )
            if rid.startswith("chunk-") and rid != "chunk-" + hashlib.md5(text.encode()).hexdigest():
                raise self._refuse(
                    nf,
                    i,
                    rec,
                    f"has a text in {store} that is not the one embedded (its md5 is not the id)",
                    "restore that file from a backup, or insert the document again",
                )
            out.append(self._checked(text, "content", i, rec, nf))
        return out

    def config_report(self, dirs: list[Path], roots: list[Path], wanted: Wanted) -> list[AppConfig]:
        """No settings file: the embedding function is code, so say what it must be."""
        return [
            AppConfig(
                "nano-graphrag",
                None,
                lines=nanographrag_lines(wanted.model, wanted.dim),
                notes=["nano-graphrag takes its embedding function in code"],
            )
        ]


PROFILE = NanoGraphRag()


def nanographrag_lines(model: str, dim: int | None) -> list[str]:
    return [
        f"GraphRAG(embedding_func=EmbeddingFunc(embedding_dim={dim}, ...)), the function calling "
        f"{model} on your vLLM endpoint"
    ]
