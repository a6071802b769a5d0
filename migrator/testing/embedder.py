"""A deterministic stand-in for an embedding model and its tokenizer.

Nothing here is a real model.  It exists so that tests, the demo and the
benchmarks can run the whole migration against something that *behaves* like
Qwen3-Embedding behind vLLM, without a GPU:

* ``token_strings`` / ``tokenize`` split text into word and punctuation
  tokens and append EOS, so a text's token count is
  ``len(token_strings(text)) + 1`` - exactly like Qwen3's tokenizer, which
  appends ``<|endoftext|>`` itself.
* ``embed`` is signed feature hashing of lower-cased word unigrams and
  bigrams, spread into a dense vector by a fixed orthogonal transform (so
  float JSON costs what it costs for a real model).  Texts that share words
  get a high cosine similarity, a text's own vector is its nearest
  neighbour, and a different ``seed`` (think: a different model) gives
  unrelated vectors.  Vectors are float32 and unit length; the empty text
  still gets a (constant) nonzero vector through the EOS feature.

Everything is a pure function of its arguments: the same text, dimension and
seed give bit-identical vectors in every process (hashes are blake2b, not
Python's salted ``hash``), so a server process and a test agree exactly.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from itertools import chain
from typing import Iterable, Sequence

import numpy as np

__all__ = [
    "EOS_ID",
    "EOS_TOKEN",
    "MODEL_DIMS",
    "VOCAB_SIZE",
    "count_tokens",
    "embed",
    "embed_many",
    "embed_token_ids",
    "embed_word_lists",
    "prompt_words",
    "embed_tokens",
    "token_strings",
    "tokenize",
]

#: Qwen3's ``<|endoftext|>`` id, appended to every tokenized prompt.
EOS_ID = 151643
EOS_TOKEN = "<|endoftext|>"
#: Ordinary token ids are ``hash mod VOCAB_SIZE``, so they never equal EOS_ID.
VOCAB_SIZE = 150000

#: Output sizes of the Qwen3-Embedding family (what vLLM returns by default).
MODEL_DIMS = {
    "Qwen/Qwen3-Embedding-8B": 4096,
    "Qwen/Qwen3-Embedding-4B": 2560,
    "Qwen/Qwen3-Embedding-0.6B": 1024,
}

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
_WORD_RE = re.compile(r"\w+")
_PUNCT_RE = re.compile(r"[^\w\s]")

_UNIGRAM_WEIGHT = 1.0
_BIGRAM_WEIGHT = 0.5
_EOS_WEIGHT = 0.3

# Cache sizes bound memory: the caches hold one small int per distinct string.
_HASH_CACHE_SIZE = 1 << 16
_SEED_CACHE_SIZE = 256


# --------------------------------------------------------------------------- #
# Tokenizer                                                                   #
# --------------------------------------------------------------------------- #
def token_strings(text: str) -> list[str]:
    """Split *text* into word runs (``\\w+``) and single punctuation marks.

    Unicode aware (Python's ``\\w``).  Whitespace is dropped.  EOS is not
    included; ``tokenize`` adds it.
    """
    return _TOKEN_RE.findall(text)


def tokenize(text: str, *, add_special_tokens: bool = True) -> list[int]:
    """Token ids of *text*: one stable id per token string, then ``EOS_ID``.

    Ids are case sensitive (``"The"`` and ``"the"`` differ) and lie in
    ``[0, VOCAB_SIZE)``.  With ``add_special_tokens=False`` no EOS is added.
    """
    ids = [_hash64(tok) % VOCAB_SIZE for tok in _TOKEN_RE.findall(text)]
    if add_special_tokens:
        ids.append(EOS_ID)
    return ids


def count_tokens(text: str) -> int:
    """Number of tokens ``tokenize(text)`` returns, EOS included."""
    return prompt_words(text)[1]


def prompt_words(text: str) -> tuple[list[str], int]:
    """The words of *text* (what ``embed`` hashes) and its token count.

    Cheaper than ``token_strings`` when the token order is not needed: the
    tokens are exactly the word runs plus one per punctuation character.
    """
    words = _WORD_RE.findall(text)
    return words, len(words) + len(_PUNCT_RE.findall(text)) + 1


# --------------------------------------------------------------------------- #
# Embeddings                                                                  #
# --------------------------------------------------------------------------- #
def embed(text: str, dim: int, *, seed: str = "") -> np.ndarray:
    """Unit float32 vector of length *dim* for *text* under model *seed*.

    Equal to ``embed_tokens(token_strings(text), dim, seed)``.
    """
    return _embed_rows([_WORD_RE.findall(text)], dim, seed)[0]


def embed_tokens(tokens: Sequence[str], dim: int, seed: str = "") -> np.ndarray:
    """Embed an already tokenized prompt (token strings, without EOS).

    Used after truncation: embedding the first ``k`` token strings of a text
    gives what the model would return for the truncated prompt.  Punctuation
    tokens carry no feature; EOS is always added.
    """
    return _embed_rows([_words_of(tokens)], dim, seed)[0]


def embed_token_ids(ids: Sequence[int], dim: int, seed: str = "") -> np.ndarray:
    """Embed a prompt given as token ids (as vLLM accepts in ``input``).

    Hashing is one way, so ids cannot be turned back into words: each id is
    its own feature and the result is *not* equal to the text's embedding.
    ``EOS_ID`` entries are skipped (EOS is always added anyway).
    """
    return _embed_rows([_id_words(ids)], dim, seed)[0]


def embed_many(texts: Iterable[str], dim: int, *, seed: str = "") -> np.ndarray:
    """``embed`` of each text as rows of a float32 ``(n, dim)`` matrix.

    Row ``i`` is bit-identical to ``embed(texts[i], dim, seed=seed)``; this is
    just faster, because the numpy work is done once per chunk of texts.
    """
    return embed_word_lists([_WORD_RE.findall(t) for t in texts], dim, seed)


def embed_word_lists(word_lists: Sequence[Sequence[str]], dim: int, seed: str = "") -> np.ndarray:
    """Rows for prompts already reduced to their words (see ``prompt_words``).

    This is the batch entry point the fake server uses: it tokenizes each
    input once, checks lengths, then embeds all of them in one call.
    """
    out = np.empty((len(word_lists), dim), dtype=np.float32)
    for start in range(0, len(word_lists), _CHUNK_ROWS):
        chunk = word_lists[start : start + _CHUNK_ROWS]
        out[start : start + len(chunk)] = _embed_rows(chunk, dim, seed)
    return out


# --------------------------------------------------------------------------- #
# Internals                                                                   #
# --------------------------------------------------------------------------- #
_K_BIGRAM = np.uint64(0x9E3779B97F4A7C15)
_K_MIX = np.uint64(0xBF58476D1CE4E5B9)
_SQRT2 = float(np.sqrt(2.0))
# Rows per numpy pass: bounds the (rows x dim) float64 scratch matrix.
_CHUNK_ROWS = 32


def _is_word(token: str) -> bool:
    """True for a ``\\w+`` token (Python's ``\\w`` is isalnum() or ``_``)."""
    first = token[:1]
    return first.isalnum() or first == "_"


def _words_of(tokens: Sequence[str]) -> list[str]:
    return [tok for tok in tokens if _is_word(tok)]


def _id_words(ids: Sequence[int]) -> list[str]:
    return [f"tokid{int(i)}" for i in ids if int(i) != EOS_ID]


@lru_cache(maxsize=_HASH_CACHE_SIZE)
def _hash64(token: str) -> int:
    """Stable 64-bit hash of a string (blake2b), independent of PYTHONHASHSEED."""
    data = token.encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


# word -> feature key.  A plain dict, emptied when it grows past
# _HASH_CACHE_SIZE, is bounded and much cheaper to probe than lru_cache.
_WORD_KEYS: dict[str, int] = {}


def _word_hash(word: str) -> int:
    """Feature key of a unigram: the hash of the lower-cased word."""
    key = _WORD_KEYS.get(word)
    if key is None:
        if len(_WORD_KEYS) >= _HASH_CACHE_SIZE:
            _WORD_KEYS.clear()
        key = _WORD_KEYS[word] = _hash64("w:" + word.lower())
    return key


def _word_hash_array(words: list[str]) -> np.ndarray:
    try:  # fast path: every word already cached
        keys = list(map(_WORD_KEYS.__getitem__, words))
    except KeyError:
        keys = [_word_hash(w) for w in words]
    return np.array(keys, dtype=np.uint64).reshape(len(words))


@lru_cache(maxsize=_SEED_CACHE_SIZE)
def _seed_hash(seed: str) -> np.uint64:
    return np.uint64(_hash64("seed:" + seed))


_EOS_HASH = np.uint64(_hash64("eos:" + EOS_TOKEN))


def _features(word_lists: Sequence[Sequence[str]], seed: str):
    """Seeded keys, owning rows and weights of every feature of every row.

    Each row has one EOS feature, one feature per word and one per pair of
    adjacent words (bigrams never span two rows).
    """
    n = len(word_lists)
    s = _seed_hash(seed)
    lengths = np.fromiter(map(len, word_lists), dtype=np.intp, count=n)
    flat = list(chain.from_iterable(word_lists))
    words = _word_hash_array(flat) ^ s
    word_rows = np.repeat(np.arange(n), lengths)
    inside = word_rows[:-1] == word_rows[1:]
    bigrams = (words[:-1][inside] * _K_BIGRAM) ^ words[1:][inside]
    keys = np.concatenate([np.full(n, _EOS_HASH ^ s, dtype=np.uint64), words, bigrams])
    rows = np.concatenate([np.arange(n), word_rows, word_rows[:-1][inside]])
    weights = np.concatenate(
        [
            np.full(n, _EOS_WEIGHT),
            np.full(len(words), _UNIGRAM_WEIGHT),
            np.full(len(bigrams), _BIGRAM_WEIGHT),
        ]
    )
    return keys, rows, weights


def _embed_rows(word_lists: Sequence[Sequence[str]], dim: int, seed: str) -> np.ndarray:
    """Feature-hash each list of words into one unit float32 row of *dim*."""
    if dim < 1:
        raise ValueError(f"dim must be positive, got {dim}")
    n = len(word_lists)
    keys, rows, weights = _features(word_lists, seed)
    keys = keys * _K_MIX
    keys ^= keys >> np.uint64(29)
    column = ((keys >> np.uint64(32)) * np.uint64(dim)) >> np.uint64(32)
    signed = np.where((keys >> np.uint64(31)) & np.uint64(1), -weights, weights)
    cells = rows * dim + column.astype(np.intp)
    sparse = np.bincount(cells, weights=signed, minlength=n * dim).reshape(n, dim)
    dead = ~sparse.any(axis=1)  # all features cancelled out: fall back to EOS alone
    if dead.any():
        sparse[np.flatnonzero(dead), column[:n][dead].astype(np.intp)] = 1.0
    dense = _spread(sparse)
    return (dense / np.linalg.norm(dense, axis=1, keepdims=True)).astype(np.float32)


def _spread(matrix: np.ndarray) -> np.ndarray:
    """Apply a fixed orthogonal transform to each row: sparse in, dense out.

    Real embeddings are dense; hashed features are not.  An orthonormal real
    DFT followed by fixed sign flips is orthogonal, so every dot product (and
    with it the whole similarity structure) is preserved exactly.
    """
    n = matrix.shape[1]
    spectrum = np.fft.rfft(matrix, axis=1, norm="ortho")
    out = np.empty_like(matrix)
    out[:, 0] = spectrum[:, 0].real
    pairs = (n - 1) // 2
    out[:, 1 : 2 * pairs + 1 : 2] = spectrum[:, 1 : pairs + 1].real * _SQRT2
    out[:, 2 : 2 * pairs + 2 : 2] = spectrum[:, 1 : pairs + 1].imag * _SQRT2
    if n % 2 == 0:
        out[:, n - 1] = spectrum[:, n // 2].real
    return out * _signs(n)


@lru_cache(maxsize=16)
def _signs(dim: int) -> np.ndarray:
    bits = _mix_uint64(np.arange(dim, dtype=np.uint64) + np.uint64(0x5851F42D4C957F2D))
    return np.where(bits & np.uint64(1 << 40), -1.0, 1.0)


def _mix_uint64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser (uint64 arithmetic wraps)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))
