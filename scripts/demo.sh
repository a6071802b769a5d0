#!/usr/bin/env bash
# Migrate the bundled example DVD databases end to end (plan, run, status, query).
# With no --endpoint it starts migrator's own test server on 127.0.0.1 (a stand-in
# for vLLM, not a real model) and says so. Against a real vLLM:
#   VLLM_API_KEY=... scripts/demo.sh --endpoint http://localhost:8888/v1 --model 8b
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m migrator.demo "$@"
