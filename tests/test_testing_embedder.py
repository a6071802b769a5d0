"""The deterministic stand-in embedder and tokenizer (migrator.testing.embedder)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from migrator.testing.embedder import (
    EOS_ID,
    MODEL_DIMS,
    count_tokens,
    embed,
    embed_many,
    embed_token_ids,
    embed_tokens,
    token_strings,
    tokenize,
)

REPO = Path(__file__).resolve().parents[1]


def test_tokenizer_counts_words_punctuation_and_eos():
    assert token_strings("Hello, world! It's 10:30.") == [
        "Hello",
        ",",
        "world",
        "!",
        "It",
        "'",
        "s",
        "10",
        ":",
        "30",
        ".",
    ]
    assert token_strings("naïve café – 東京") == ["naïve", "café", "–", "東京"]
    ids = tokenize("Hello, world!")
    assert len(ids) == 5 and ids[-1] == EOS_ID and all(0 <= i < 150000 for i in ids[:-1])
    assert tokenize("") == [EOS_ID] and count_tokens("") == 1
    assert tokenize("Hello")[0] != tokenize("hello")[0]  # ids are case sensitive
    assert tokenize("a b", add_special_tokens=False) == tokenize("a b")[:-1]


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=200))
def test_properties_of_any_text(text):
    assert count_tokens(text) == len(token_strings(text)) + 1 == len(tokenize(text))
    v = embed(text, 256, seed="m")
    assert v.dtype == np.float32 and v.shape == (256,)
    assert abs(float(np.linalg.norm(v)) - 1.0) < 1e-5
    np.testing.assert_array_equal(v, embed_tokens(token_strings(text), 256, "m"))
    np.testing.assert_array_equal(v, embed_many([text, "x"], 256, seed="m")[0])


def test_similarity_structure():
    dim = MODEL_DIMS["Qwen/Qwen3-Embedding-8B"]
    a = embed("A man in a gray hoodie walks into the busy kitchen.", dim)
    b = embed("The man in the gray hoodie walks out of the kitchen.", dim)
    c = embed("Waves crash on a quiet beach at sunset.", dim)
    assert a @ b > 0.5 > 0.2 > abs(a @ c)
    assert embed("Same words here", dim) @ embed("same WORDS here!", dim) > 0.999
    other = embed("A man in a gray hoodie walks into the busy kitchen.", dim, seed="other")
    assert abs(a @ other) < 0.2  # another "model": unrelated vectors
    for empty in ("", "?!"):  # no words: the EOS feature alone, still a unit vector
        assert abs(float(np.linalg.norm(embed(empty, 8))) - 1.0) < 1e-6
    np.testing.assert_array_equal(embed("", 64), embed("?!", 64))
    assert (embed("a sentence of several words", 4096) != 0).mean() > 0.99  # dense, like real ones


def test_own_vector_is_nearest_neighbour():
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(400)]
    texts = [" ".join(rng.choice(vocab, size=rng.integers(20, 60))) for _ in range(300)]
    m = embed_many(texts, 1024, seed="s")
    assert (np.argmax(m @ m.T, axis=1) == np.arange(len(texts))).all()


def test_token_id_prompts_embed_deterministically():
    v = embed_token_ids([5, 6, 7, EOS_ID], 64, "s")
    np.testing.assert_array_equal(v, embed_token_ids([5, 6, 7], 64, "s"))
    assert abs(float(np.linalg.norm(v)) - 1) < 1e-6
    assert abs(v @ embed_token_ids([8, 9], 64, "s")) < 0.99


def test_stable_across_processes():
    code = (
        "from migrator.testing.embedder import embed, tokenize;"
        "print(embed('stable across runs', 16, seed='q').tobytes().hex(), tokenize('x y'))"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            cwd=REPO,
            capture_output=True,
            text=True,
            env={"PYTHONPATH": str(REPO), "PYTHONHASHSEED": seed},
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outs) == 1
    assert outs.pop().split()[0] == embed("stable across runs", 16, seed="q").tobytes().hex()
