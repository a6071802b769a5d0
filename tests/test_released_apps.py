"""The released applications build the working dirs themselves; migrator moves them; the
applications open them again and answer queries.

test_apps.py checks migrator against stores built the way LightRAG and nano-graphrag write
them (migrator.testing.appstores). Here the stores are written by the packages themselves:
``lightrag-hku`` 1.5.7 and ``nano-graphrag`` 0.0.8.2, each with a fake LLM that answers its
own extraction prompt in the format its own parser reads, and an embedding function (the
stand-in embedder, migrator.testing.embedder) that records every text the application asked
it to embed. After ``migrate run`` (in-process, against the fake vLLM) every record's new
vector must be the new model's vector of exactly the text the application embedded for that
record, and the application must open the dir at the new dimension (and no longer at the old
one) and answer a query in every mode it has.

Nothing here reaches the network: no model hub, no OpenAI, no tiktoken download (nano-graphrag
gets a byte-level tiktoken Encoding built here; LightRAG a UTF-8 byte tokenizer), and every
socket connection to a non-loopback address is refused for the whole module.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import re
import socket
from pathlib import Path

import numpy as np
import pytest

from helpers import tree_digest
from migrator.errors import EXIT_PARTIAL
from migrator.testing.embedder import embed

QWEN_8B = "Qwen/Qwen3-Embedding-8B"
NEW_DIM = 4096
LR_MODEL, LR_DIM = "text-embedding-3-large", 3072  # what the LightRAG dirs were made with
NG_MODEL, NG_DIM = "text-embedding-3-small", 1536  # what the nano-graphrag dirs were made with
FAKE_ANSWER = "FAKE ANSWER: the test's LLM read the context."
LR_FILES = ("vdb_entities.json", "vdb_relationships.json", "vdb_chunks.json")
NG_FILES = ("vdb_entities.json", "vdb_chunks.json")


# --------------------------------------------------------------------- offline, always
@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Only loopback (the fake vLLM) and local sockets: anything else is a test failure."""
    monkeypatch.setenv("OPENAI_API_KEY", "")
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def allowed(sock, address) -> None:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return
        host = address[0]
        if host == "localhost":
            return
        try:
            if ipaddress.ip_address(host).is_loopback:
                return
        except ValueError:
            pass
        raise OSError(f"test_released_apps: no network here (tried {address!r})")

    def connect(sock, address):
        allowed(sock, address)
        return real_connect(sock, address)

    def connect_ex(sock, address):
        allowed(sock, address)
        return real_connect_ex(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    yield


@pytest.fixture
def offline_tiktoken(monkeypatch):
    """nano-graphrag 0.0.8.2 has no tokenizer option: it calls tiktoken.encoding_for_model("gpt-4o"),
    which downloads its ranks. It gets a byte-level Encoding built here instead."""
    import tiktoken

    enc = tiktoken.Encoding(
        name="offline-bytes",
        pat_str=r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
        mergeable_ranks={bytes([i]): i for i in range(256)},
        special_tokens={},
    )
    monkeypatch.setattr(tiktoken, "encoding_for_model", lambda *a, **k: enc)
    monkeypatch.setattr(tiktoken, "get_encoding", lambda *a, **k: enc)
    import nano_graphrag._utils as ng_utils

    monkeypatch.setattr(ng_utils, "ENCODER", None)  # its module-level cache of the encoder
    return enc


@pytest.fixture
def lightrag_process():
    """LightRAG keeps process-wide state (pipeline status, locks, update flags) in
    lightrag.kg.shared_storage; each test starts and ends without it."""
    from lightrag.kg.shared_storage import finalize_share_data

    finalize_share_data()
    yield
    finalize_share_data()


# ------------------------------------------------------------------------- helpers
def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _load(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _rows(doc: dict) -> dict[str, np.ndarray]:
    """__id__ -> its row of the file's matrix."""
    if not doc["data"]:
        return {}
    m = np.frombuffer(base64.b64decode(doc["matrix"]), dtype="<f4").reshape(len(doc["data"]), doc["embedding_dim"])
    return {rec["__id__"]: row for rec, row in zip(doc["data"], m)}


class Embedder:
    """An application's embedding function: the stand-in model ``model`` at ``dim``. Every text
    the application asks for is kept in ``texts``, in order."""

    def __init__(self, model: str, dim: int):
        self.model, self.dim = model, dim
        self.texts: list[str] = []

    def __deepcopy__(self, memo):  # both apps deep-copy their config (dataclasses.asdict)
        return self

    async def __call__(self, texts, **_):
        texts = list(texts)
        self.texts.extend(texts)
        return np.stack([embed(t, self.dim, seed=self.model) for t in texts]).astype(np.float32)


def texts_behind(path: Path, embedded: list[str], model: str, dim: int) -> dict[str, list[str]]:
    """For each record of a vector file as the application saved it: the texts, among those the
    application sent to its embedding function, whose vector its row is (cosine > 0.9999)."""
    doc = _load(path)
    assert doc["embedding_dim"] == dim
    distinct = sorted(set(embedded))
    if not distinct:
        return {rid: [] for rid in _rows(doc)}
    known = _unit(np.stack([embed(t, dim, seed=model) for t in distinct]))
    out = {}
    for rid, row in _rows(doc).items():
        sims = known @ _unit(row)
        out[rid] = [t for t, s in zip(distinct, sims) if s > 0.9999]
    return out


def assert_new_vectors_from(path: Path, text_of: dict[str, str]) -> None:
    """Every row of the migrated file is Qwen3-8B's vector of the text given for its record."""
    doc = _load(path)
    assert doc["embedding_dim"] == NEW_DIM, path
    rows = _rows(doc)
    assert set(rows) == set(text_of), path
    for rid, row in rows.items():
        want = _unit(embed(text_of[rid], NEW_DIM, seed=QWEN_8B))
        assert float(_unit(row) @ want) > 0.9999, (path.name, rid)


def _ctx(value) -> str:
    assert isinstance(value, str), type(value)
    return value


# =============================================================================== LightRAG
# Three documents, and what the fake LLM extracts from each (LightRAG 1.5.7's text format:
# rows `entity<|#|>name<|#|>type<|#|>description` and
# `relation<|#|>source<|#|>target<|#|>keywords<|#|>description`, one a line, then <|COMPLETE|>).
LR_DOCS = {
    "Marie Curie studied radioactivity at the University of Paris and won the Nobel Prize in Physics.": (
        [
            ("Marie Curie", "Person", "Marie Curie was a physicist who studied radioactivity and won the Nobel Prize."),
            ("University Of Paris", "Organization", "The University of Paris is where Marie Curie worked."),
        ],
        [
            (
                "Marie Curie",
                "University Of Paris",
                "radioactivity research, study",
                "Marie Curie studied radioactivity at the University of Paris.",
            )
        ],
    ),
    "Alan Turing designed the Bombe at Bletchley Park to break the Enigma cipher.": (
        [
            ("Alan Turing", "Person", "Alan Turing was a mathematician who designed the Bombe against Enigma."),
            (
                "Bletchley Park",
                "Location",
                "Bletchley Park was the wartime codebreaking centre where Alan Turing worked.",
            ),
            ("Enigma Cipher", "Artifact", "The Enigma cipher was the German machine cipher broken at Bletchley Park."),
        ],
        [
            (
                "Alan Turing",
                "Bletchley Park",
                "codebreaking, wartime work",
                "Alan Turing designed the Bombe at Bletchley Park.",
            ),
            (
                "Alan Turing",
                "Enigma Cipher",
                "cipher breaking, cryptanalysis",
                "Alan Turing built the Bombe to break the Enigma cipher.",
            ),
        ],
    ),
    "Ada Lovelace wrote the first algorithm for the Analytical Engine designed by Charles Babbage.": (
        [
            ("Ada Lovelace", "Person", "Ada Lovelace wrote the first algorithm for the Analytical Engine."),
            ("Analytical Engine", "Artifact", "The Analytical Engine was a mechanical computer by Charles Babbage."),
            ("Charles Babbage", "Person", "Charles Babbage designed the Analytical Engine."),
        ],
        [
            (
                "Ada Lovelace",
                "Analytical Engine",
                "programming, algorithm",
                "Ada Lovelace wrote the first algorithm for the Analytical Engine.",
            ),
            (
                "Charles Babbage",
                "Analytical Engine",
                "design, invention",
                "Charles Babbage designed the Analytical Engine.",
            ),
        ],
    ),
}
LR_QUERY = "How did Alan Turing break the Enigma cipher at Bletchley Park?"
LR_KEYWORDS = {
    LR_QUERY: {
        "high_level_keywords": ["cipher breaking", "codebreaking"],
        "low_level_keywords": ["Alan Turing", "Enigma Cipher", "Bletchley Park"],
    }
}
LR_MODES = ("naive", "local", "global", "hybrid", "mix")


class LightRagLLM:
    """Answers LightRAG's entity-extraction prompt for the known documents, its keyword prompt
    for the known query, and anything else (the answer itself) with FAKE_ANSWER."""

    TUPLE, DONE = "<|#|>", "<|COMPLETE|>"  # lightrag.prompt.PROMPTS["DEFAULT_*_DELIMITER"]

    def __init__(self, docs=LR_DOCS, keywords=LR_KEYWORDS):
        self.docs, self.keywords = docs, keywords
        self.extracted: list[str] = []

    def __deepcopy__(self, memo):
        return self

    async def __call__(self, prompt, system_prompt=None, history_messages=None, **kwargs):
        m = re.search(r"---Input Text---\n```\n(.*?)\n```", prompt, re.S)
        if m:
            return self.extraction(m.group(1).strip())
        m = re.search(r"User Query: (.*?)\n\n---Output---", prompt, re.S)
        if m:
            return json.dumps(self.keywords[m.group(1).strip()])
        return FAKE_ANSWER

    def extraction(self, text: str) -> str:
        ((entities, relations),) = [v for k, v in self.docs.items() if k.strip() == text]
        self.extracted.append(text)
        t = self.TUPLE
        rows = [f"entity{t}{n}{t}{ty}{t}{d}" for n, ty, d in entities]
        rows += [f"relation{t}{s}{t}{o}{t}{k}{t}{d}" for s, o, k, d in relations]
        return "\n".join(rows) + "\n" + self.DONE


class Utf8Bytes:
    """An offline tokenizer for LightRAG: one token per UTF-8 byte."""

    def encode(self, content: str) -> list[int]:
        return list(content.encode("utf-8"))

    def decode(self, tokens: list[int]) -> str:
        return bytes(tokens).decode("utf-8", errors="replace")


def make_lightrag(wd: Path, embedder: Embedder, llm: LightRagLLM):
    from lightrag import LightRAG
    from lightrag.utils import EmbeddingFunc, Tokenizer

    return LightRAG(
        working_dir=str(wd),
        workspace="",
        llm_model_func=llm,
        embedding_func=EmbeddingFunc(embedding_dim=embedder.dim, func=embedder, max_token_size=8192),
        tokenizer=Tokenizer("utf8-bytes", Utf8Bytes()),
        entity_extract_max_gleaning=0,
        entity_extraction_use_json=False,
    )


async def _lightrag_open(wd: Path, embedder: Embedder, llm: LightRagLLM, job=None):
    rag = make_lightrag(wd, embedder, llm)
    await rag.initialize_storages()
    try:
        return await job(rag) if job else None
    finally:
        await rag.finalize_storages()


def build_lightrag(wd: Path, docs=LR_DOCS) -> tuple[Embedder, LightRagLLM]:
    """A LightRAG working dir made by LightRAG itself, at text-embedding-3-large's 3072 dims."""
    embedder, llm = Embedder(LR_MODEL, LR_DIM), LightRagLLM(docs)

    async def insert(rag):
        for doc in docs:
            await rag.ainsert(doc)

    asyncio.run(_lightrag_open(wd, embedder, llm, insert))
    assert sorted(llm.extracted) == sorted(docs)  # the fake LLM was asked for each one
    for name in LR_FILES:
        assert _load(wd / name)["embedding_dim"] == LR_DIM and _load(wd / name)["data"], name
    return embedder, llm


def query_lightrag(wd: Path) -> dict[str, tuple[str, str]]:
    """Open with LightRAG at the new model and dimension; per mode: (context, answer)."""
    from lightrag import QueryParam

    async def ask(rag):
        out = {}
        for mode in LR_MODES:
            ctx = await rag.aquery(LR_QUERY, param=QueryParam(mode=mode, only_need_context=True, enable_rerank=False))
            ans = await rag.aquery(LR_QUERY, param=QueryParam(mode=mode, enable_rerank=False))
            out[mode] = (_ctx(ctx), _ctx(ans))
        return out

    embedder = Embedder(QWEN_8B, NEW_DIM)
    out = asyncio.run(_lightrag_open(wd, embedder, LightRagLLM(), ask))
    assert LR_QUERY in embedder.texts  # the query was embedded at the new dimension
    return out


def test_lightrag_dir_built_by_lightrag_migrates_and_lightrag_queries_it(cli, tmp_path, lightrag_process):
    wd = tmp_path / "rag_storage"
    embedder, _ = build_lightrag(wd)
    # which of the texts LightRAG embedded each record's stored vector is, before the move
    behind = {name: texts_behind(wd / name, embedder.texts, LR_MODEL, LR_DIM) for name in LR_FILES}
    old = {name: _load(wd / name) for name in LR_FILES}
    for name in LR_FILES:
        for rec in old[name]["data"]:
            # the record's `content` is exactly a text LightRAG sent, and its vector is that text's
            assert rec["content"] in embedder.texts, (name, rec["__id__"])
            assert rec["content"] in behind[name][rec["__id__"]], (name, rec["__id__"])

    r = cli("run", "--root", str(wd), "--model", "8b", "--yes")
    assert r.exit_code == 0, r.output

    for name in LR_FILES:
        new = _load(wd / name)
        assert [rec["__id__"] for rec in new["data"]] == [rec["__id__"] for rec in old[name]["data"]]
        assert_new_vectors_from(wd / name, {rec["__id__"]: rec["content"] for rec in old[name]["data"]})
        assert new["additional_data"]["lightrag_embedding_model"] == QWEN_8B

    # LightRAG itself, at the new model: every mode retrieves the Turing document
    answers = query_lightrag(wd)
    for mode, (ctx, ans) in answers.items():
        assert "Enigma" in ctx and "Bletchley Park" in ctx, (mode, ctx[:400])
        assert FAKE_ANSWER in ans, (mode, ans[:400])
    for mode in ("local", "global", "hybrid", "mix"):  # the graph modes used the vdb of entities/relations
        assert "Alan Turing" in answers[mode][0], mode

    # at the old dimension LightRAG can no longer open it: the files really changed dimension
    with pytest.raises(AssertionError, match="Embedding dim mismatch"):
        asyncio.run(_lightrag_open(wd, Embedder(LR_MODEL, LR_DIM), LightRagLLM()))


def test_lightrag_dir_with_one_unmigratable_file_stays_whole_and_lightrag_opens_it(cli, tmp_path, lightrag_process):
    wd = tmp_path / "rag_storage"
    docs = dict(list(LR_DOCS.items())[:2])
    build_lightrag(wd, docs)
    broken = wd / "vdb_relationships.json"
    doc = _load(broken)
    doc["data"][0]["content"] = None  # one record with nothing to embed; still valid JSON
    broken.write_text(json.dumps(doc), encoding="utf-8")
    before = tree_digest(wd)

    r = cli("run", "--root", str(wd), "--model", "8b", "--yes")
    assert r.exit_code == EXIT_PARTIAL, r.output
    lines = r.output.splitlines()
    assert any(str(broken) in ln and "record #0" in ln for ln in lines), r.output
    for name in ("vdb_entities.json", "vdb_chunks.json"):
        held = [ln for ln in lines if str(wd / name) in ln]
        assert held and any("held back" in ln and str(broken) in ln for ln in held), (name, r.output)
    assert {k: v for k, v in tree_digest(wd).items() if ".migrator-" not in k} == before
    for name in LR_FILES:
        assert _load(wd / name)["embedding_dim"] == LR_DIM

    # LightRAG's own code still opens the whole dir at 3072, and not at the new dimension
    asyncio.run(_lightrag_open(wd, Embedder(LR_MODEL, LR_DIM), LightRagLLM()))
    with pytest.raises(AssertionError, match="Embedding dim mismatch"):
        asyncio.run(_lightrag_open(wd, Embedder(QWEN_8B, NEW_DIM), LightRagLLM()))


# =========================================================================== nano-graphrag
# nano-graphrag 0.0.8.2's format: records ("entity"<|>name<|>type<|>description) and
# ("relationship"<|>source<|>target<|>description<|>strength), joined by ##, then <|COMPLETE|>.
# nano-graphrag clusters only the graph's largest connected component into communities (what
# global search reads), so the Turing document, which global search must find, has the largest.
NG_DOCS = {
    "Marie Curie studied radioactivity at the University of Paris and won the Nobel Prize in Physics.": (
        [
            ("Marie Curie", "person", "Marie Curie was a physicist who studied radioactivity."),
            ("University of Paris", "organization", "The University of Paris is where Marie Curie worked."),
        ],
        [("Marie Curie", "University of Paris", "Marie Curie studied radioactivity at the University of Paris.", 8)],
    ),
    "Alan Turing designed the Bombe at Bletchley Park to break the Enigma cipher.": (
        [
            ("Alan Turing", "person", "Alan Turing designed the Bombe to break the Enigma cipher."),
            ("Bletchley Park", "geo", "Bletchley Park was the codebreaking centre where the Enigma cipher was broken."),
            ("Enigma", "organization", "Enigma was the German cipher machine of the Second World War."),
        ],
        [
            ("Alan Turing", "Bletchley Park", "Alan Turing broke the Enigma cipher at Bletchley Park.", 9),
            ("Alan Turing", "Enigma", "Alan Turing built the Bombe to break the Enigma cipher.", 9),
        ],
    ),
    "Ada Lovelace wrote the first algorithm for the Analytical Engine designed by Charles Babbage.": (
        [
            ("Ada Lovelace", "person", "Ada Lovelace wrote the first algorithm for the Analytical Engine."),
            ("Charles Babbage", "person", "Charles Babbage designed the Analytical Engine."),
        ],
        [("Ada Lovelace", "Charles Babbage", "Ada Lovelace programmed the engine Charles Babbage designed.", 7)],
    ),
}
NG_QUERY = "How did Alan Turing break the Enigma cipher?"
NG_MODES = ("local", "global", "naive")


class NanoLLM:
    """nano-graphrag's best_model_func and cheap_model_func: answers its extraction prompt, its
    gleaning prompt, its summary prompt (``summaries``: entity name -> the summary to give), its
    community-report prompt, its global map prompt (points from the reports it was given); the
    answers with FAKE_ANSWER. ``fail_on``: extraction of a chunk holding this text raises, as a
    provider outage does."""

    TUPLE, RECORD, DONE = "<|>", "##", "<|COMPLETE|>"  # nano_graphrag.prompt.PROMPTS["DEFAULT_*"]

    def __init__(self, docs=NG_DOCS, summaries: dict[str, str] | None = None, fail_on: str | None = None):
        self.docs, self.summaries, self.fail_on = docs, summaries or {}, fail_on
        self.extracted: list[str] = []
        self.summarised: list[str] = []

    def __deepcopy__(self, memo):
        return self

    async def __call__(self, prompt, system_prompt=None, history_messages=None, **kwargs):
        m = re.search(r"-Real Data-\n#+\nEntity_types: [^\n]*\nText: (.*)\n#+\nOutput:", prompt, re.S)
        if m:
            return self.extraction(m.group(1).strip())
        if prompt.startswith("MANY entities were missed"):
            return self.DONE
        m = re.search(r"Entities: (.*?)\nDescription List: ", prompt)
        if m:
            self.summarised.append(m.group(1))
            return self.summaries[m.group(1)]
        if "# Real Data" in prompt:  # a community report, in the JSON it parses
            body = prompt.split("# Real Data", 1)[1].split("The report should include", 1)[0]
            return json.dumps(
                {
                    "title": "Community report",
                    "summary": body,
                    "rating": 5.0,
                    "rating_explanation": "test",
                    "findings": [{"summary": "s", "explanation": "e"}],
                }
            )
        if system_prompt and '"points"' in system_prompt:  # global search, map step
            words = {w for w in re.findall(r"\w+", prompt.lower()) if len(w) > 3}
            points = []
            for line in system_prompt.split("---Data tables---", 1)[-1].splitlines():
                score = sum(w in line.lower() for w in words)
                if score:
                    points.append({"description": line[:400], "score": score})
            return json.dumps({"points": points})
        return FAKE_ANSWER

    def extraction(self, text: str) -> str:
        if self.fail_on and self.fail_on in text:
            raise RuntimeError("the LLM provider is down (the test's fake LLM)")
        ((entities, relations),) = [v for k, v in self.docs.items() if k.strip() == text]
        self.extracted.append(text)
        t = self.TUPLE
        recs = [f'("entity"{t}"{n}"{t}"{ty}"{t}"{d}")' for n, ty, d in entities]
        recs += [f'("relationship"{t}"{s}"{t}"{o}"{t}"{d}"{t}{w})' for s, o, d, w in relations]
        return self.RECORD.join(recs) + self.DONE


def make_graphrag(wd: Path, embedder: Embedder, llm: NanoLLM, **kw):
    from nano_graphrag import GraphRAG
    from nano_graphrag._utils import wrap_embedding_func_with_attrs

    func = wrap_embedding_func_with_attrs(embedding_dim=embedder.dim, max_token_size=8192)(embedder)
    return GraphRAG(
        working_dir=str(wd), enable_naive_rag=True, embedding_func=func, best_model_func=llm, cheap_model_func=llm, **kw
    )


def build_graphrag(wd: Path, llm: NanoLLM, docs=NG_DOCS, **kw) -> tuple[Embedder, list[Exception]]:
    """A nano-graphrag working dir made by nano-graphrag itself, one insert per document, at
    text-embedding-3-small's 1536 dims. Returns what it embedded and the inserts that raised."""
    embedder = Embedder(NG_MODEL, NG_DIM)
    rag = make_graphrag(wd, embedder, llm, **kw)
    failed = []

    async def insert():
        for doc in docs:
            try:
                await rag.ainsert(doc)
            except RuntimeError as e:
                failed.append(e)

    asyncio.run(insert())
    return embedder, failed


def graph_descriptions(wd: Path) -> dict[str, str]:
    """What nano-graphrag reads back from its graph (its own reader: networkx.read_graphml)."""
    from nano_graphrag._storage import NetworkXStorage

    graph = NetworkXStorage.load_nx_graph(str(wd / "graph_chunk_entity_relation.graphml"))
    return {n: d.get("description") for n, d in graph.nodes(data=True)}


def app_texts(wd: Path) -> dict[str, dict[str, str | None]]:
    """The text each record's vector is made from, as nano-graphrag keeps it on disk:
    entity_name + the node's description; a chunk's content in kv_store_text_chunks.json."""
    desc = graph_descriptions(wd)
    chunks = _load(wd / "kv_store_text_chunks.json")
    ent = {
        r["__id__"]: (r["entity_name"] + desc[r["entity_name"]]) if desc.get(r["entity_name"]) is not None else None
        for r in _load(wd / "vdb_entities.json")["data"]
    }
    chk = {r["__id__"]: (chunks.get(r["__id__"]) or {}).get("content") for r in _load(wd / "vdb_chunks.json")["data"]}
    return {"vdb_entities.json": ent, "vdb_chunks.json": chk}


def query_graphrag(wd: Path, embedder: Embedder) -> dict[str, tuple[str, str]]:
    from nano_graphrag import QueryParam

    rag = make_graphrag(wd, embedder, NanoLLM())

    async def ask():
        out = {}
        for mode in NG_MODES:
            ctx = await rag.aquery(NG_QUERY, QueryParam(mode=mode, only_need_context=True))
            ans = await rag.aquery(NG_QUERY, QueryParam(mode=mode))
            out[mode] = (_ctx(ctx), _ctx(ans))
        return out

    return asyncio.run(ask())


def test_nanographrag_dir_built_by_nanographrag_migrates_and_nanographrag_queries_it(cli, tmp_path, offline_tiktoken):
    wd = tmp_path / "nano_graphrag_cache"
    llm = NanoLLM()
    embedder, failed = build_graphrag(wd, llm)
    assert not failed and sorted(llm.extracted) == sorted(NG_DOCS)
    texts = app_texts(wd)
    for name in NG_FILES:
        behind = texts_behind(wd / name, embedder.texts, NG_MODEL, NG_DIM)
        assert behind and set(behind) == set(texts[name])
        for rid, text in texts[name].items():
            # the text on disk is one nano-graphrag sent for this record, and the stored vector is its
            assert text in embedder.texts and text in behind[rid], (name, rid, text)
    assert len(texts["vdb_chunks.json"]) == 3 and len(texts["vdb_entities.json"]) == 7

    r = cli("run", "--root", str(wd), "--model", "8b", "--yes")
    assert r.exit_code == 0, r.output
    for name in NG_FILES:
        assert_new_vectors_from(wd / name, texts[name])

    new = Embedder(QWEN_8B, NEW_DIM)
    answers = query_graphrag(wd, new)
    assert NG_QUERY in new.texts  # local and naive embedded the query at 4096
    for mode, (ctx, ans) in answers.items():
        assert ctx != "Sorry, I'm not able to provide an answer to that question.", mode
        assert "TURING" in ctx.upper() and "ENIGMA" in ctx.upper(), (mode, ctx[:400])
        assert ans == FAKE_ANSWER, (mode, ans[:400])
    assert '"ALAN TURING"' in answers["local"][0]  # found through the entity vectors
    assert "Alan Turing designed the Bombe" in answers["naive"][0]  # through the chunk vectors

    # at the old dimension nano-graphrag no longer opens it
    with pytest.raises(AssertionError, match="Embedding dim mismatch"):
        make_graphrag(wd, Embedder(NG_MODEL, NG_DIM), NanoLLM())


def test_nanographrag_llm_outage_leaves_an_orphan_chunk_and_the_dir_stays_whole(cli, tmp_path, offline_tiktoken):
    """nano-graphrag upserts a document's chunk vectors before extraction and its chunk texts
    only after; an LLM error in between leaves a vector whose text is nowhere."""
    wd = tmp_path / "nano_graphrag_cache"
    outage_doc = list(NG_DOCS)[2]
    llm = NanoLLM(fail_on="Ada Lovelace")
    embedder, failed = build_graphrag(wd, llm)
    assert len(failed) == 1 and "provider is down" in str(failed[0])
    texts = app_texts(wd)
    orphans = [rid for rid, t in texts["vdb_chunks.json"].items() if t is None]
    assert len(orphans) == 1, texts  # what nano-graphrag itself left
    (orphan,) = orphans
    assert outage_doc in embedder.texts  # it was embedded ...
    assert texts_behind(wd / "vdb_chunks.json", embedder.texts, NG_MODEL, NG_DIM)[orphan] == [outage_doc]
    assert outage_doc not in json.dumps(_load(wd / "kv_store_text_chunks.json"))  # ... and its text not kept
    assert len(texts["vdb_entities.json"]) == 5 and all(texts["vdb_entities.json"].values())
    before = tree_digest(wd)

    r = cli("run", "--root", str(wd), "--model", "8b", "--yes")
    assert r.exit_code == EXIT_PARTIAL, r.output
    lines = r.output.splitlines()
    chunks, entities = wd / "vdb_chunks.json", wd / "vdb_entities.json"
    assert any(str(chunks) in ln and repr(orphan) in ln and "kv_store_text_chunks.json" in ln for ln in lines), r.output
    assert any(str(entities) in ln and "held back" in ln for ln in lines), r.output
    assert {k: v for k, v in tree_digest(wd).items() if ".migrator-" not in k} == before
    from nano_vectordb import NanoVectorDB

    for path in (chunks, entities):
        assert len(NanoVectorDB(NG_DIM, storage_file=str(path))) == len(_load(path)["data"])
    make_graphrag(wd, Embedder(NG_MODEL, NG_DIM), NanoLLM())  # nano-graphrag opens it, at 1536


# ------------------------------------------------------------------ "\r\n" in a description
# nano-graphrag's clean_str strips control characters from what it extracts, but an entity
# whose merged descriptions reach entity_summary_to_max_tokens gets the cheap LLM's summary,
# kept as it is. A summary with "\r\n" is embedded with it (name + description); networkx
# writes it raw into the GraphML, and every XML reader gives it back as "\n" (XML's end-of-line
# normalisation). The stand-in embedder reads words only, so its vectors cannot tell "\r\n"
# from "\n" (a real model's tokenizer can): these tests compare the texts themselves.
CRLF_ENTITY = '"ALAN TURING"'
CRLF_SUMMARY = "Alan Turing designed the Bombe.\r\nIt broke the Enigma cipher at Bletchley Park."
CRLF_DOCS = {
    "Alan Turing designed the Bombe at Bletchley Park to break the Enigma cipher.": (
        [
            (
                "Alan Turing",
                "person",
                "Alan Turing was an English mathematician and the designer of the Bombe, "
                "the electromechanical machine that broke the Enigma cipher at Bletchley Park.",
            ),
            ("Bletchley Park", "geo", "Bletchley Park was a codebreaking centre."),
        ],
        [("Alan Turing", "Bletchley Park", "Alan Turing worked at Bletchley Park.", 9)],
    ),
    "Ada Lovelace wrote the first algorithm for the Analytical Engine designed by Charles Babbage.": NG_DOCS[
        "Ada Lovelace wrote the first algorithm for the Analytical Engine designed by Charles Babbage."
    ],
}


def build_crlf_dir(wd: Path) -> tuple[Embedder, dict]:
    llm = NanoLLM(CRLF_DOCS, summaries={CRLF_ENTITY: CRLF_SUMMARY})
    embedder, failed = build_graphrag(wd, llm, CRLF_DOCS, entity_summary_to_max_tokens=120)
    if failed or llm.summarised != [CRLF_ENTITY]:
        raise RuntimeError(f"nano-graphrag did not build the \\r\\n case: {failed} {llm.summarised}")
    ent = {r["entity_name"]: r["__id__"] for r in _load(wd / "vdb_entities.json")["data"]}
    return embedder, ent


def migrator_text(wd: Path, rid: str) -> str:
    """The text migrator's nano-graphrag profile rebuilds for one entity record."""
    from migrator.apps.nanographrag import PROFILE
    from migrator.files import nvdb

    nf = nvdb.read(wd / "vdb_entities.json")
    return dict(zip((r["__id__"] for r in nf.data), PROFILE.texts(nf)))[rid]


def test_nanographrag_embeds_crlf_and_its_graphml_gives_back_lf(tmp_path, offline_tiktoken):
    """The facts behind the xfail below, as nano-graphrag itself makes them."""
    wd = tmp_path / "nano_graphrag_cache"
    embedder, ent = build_crlf_dir(wd)
    embedded = CRLF_ENTITY + CRLF_SUMMARY
    assert embedded in embedder.texts  # what it embedded
    assert b"\r\n" in (wd / "graph_chunk_entity_relation.graphml").read_bytes()  # written raw
    assert graph_descriptions(wd)[CRLF_ENTITY] == CRLF_SUMMARY.replace("\r\n", "\n")  # read back
    assert app_texts(wd)["vdb_entities.json"][ent[CRLF_ENTITY]] != embedded
    # migrator reads the raw \r back (a character reference before parsing): the very text
    assert migrator_text(wd, ent[CRLF_ENTITY]) == embedded


def test_nanographrag_crlf_description_is_detected_and_named(cli, tmp_path, offline_tiktoken):
    wd = tmp_path / "nano_graphrag_cache"
    _, ent = build_crlf_dir(wd)
    rid = ent[CRLF_ENTITY]
    r = cli("plan", "--root", str(wd), "--model", "8b", "--json")
    if r.exit_code not in (0, EXIT_PARTIAL):
        raise RuntimeError(r.output)
    plan = r.stdout
    r = cli("run", "--root", str(wd), "--model", "8b", "--yes")
    run = r.output
    # the record is named, in plan and in run ...
    assert rid in plan and "\\\\r\\\\n" in plan, plan
    assert rid in run and "read exactly from the GraphML's raw bytes" in run, run
    # ... and it is not swapped in embedded from the "\n" text: refused (the dir stays at
    # 1536), or migrated from the very text nano-graphrag embedded
    assert r.exit_code == 0, run
    if r.exit_code == 0:
        assert migrator_text(wd, rid) == CRLF_ENTITY + CRLF_SUMMARY
    else:
        assert r.exit_code == EXIT_PARTIAL and _load(wd / "vdb_entities.json")["embedding_dim"] == NG_DIM
