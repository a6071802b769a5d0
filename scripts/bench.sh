#!/usr/bin/env bash
# Run the throughput benchmark: sets up .venv (like scripts/test.sh) with the
# benchmark's extra packages, then runs benchmarks/run.py with your arguments.
#   scripts/bench.sh --quick          # CI smoke test (tiny corpus, no timing assertion)
#   scripts/bench.sh                  # modest run: 200 databases, 3 capacities
#   scripts/bench.sh --full           # the full figures for docs/BENCHMARKS.md (hours)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! .venv/bin/python -c "import requests, matplotlib" 2>/dev/null; then
    # the "bench" extra when pyproject has it; otherwise the two packages by name
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test,bench]" || true
    .venv/bin/python -c "import requests, matplotlib" 2>/dev/null ||
        .venv/bin/python -m pip install --quiet --disable-pip-version-check "requests>=2.31" "matplotlib>=3.7"
fi
exec .venv/bin/python benchmarks/run.py "$@"
