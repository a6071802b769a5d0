#!/usr/bin/env bash
# Run the throughput benchmark: sets up .venv (like scripts/test.sh) with the
# benchmark's extra packages, then runs benchmarks/run.py with your arguments.
#   scripts/bench.sh --quick          # CI smoke test (tiny corpus, no timing assertion)
#   scripts/bench.sh                  # modest run: 200 databases, 3 capacities
#   scripts/bench.sh --full           # the full figures for docs/BENCHMARKS.md (hours)
#   scripts/bench.sh --scale          # 1, 2, 4 endpoints x 1, 2, 4 workers (benchmarks/scale.py;
#                                     # starts the throwaway PostgreSQL of scripts/pg.sh if needed)
#   scripts/bench.sh --scale --quick  # its smoke test (< 2 min)
#   scripts/bench.sh --many --databases 100000   # very many small databases: plan, run,
#                                     # status, cutover, each timed (benchmarks/many.py)
#   scripts/bench.sh --many --quick   # its smoke test (< 1 min)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
scale=0
many=0
args=()
for a in "$@"; do
    case "$a" in
        --scale) scale=1 ;;
        --many) many=1 ;;
        *) args+=("$a") ;;
    esac
done
if [ "$many" = 1 ]; then
    exec .venv/bin/python benchmarks/many.py ${args[@]+"${args[@]}"}
fi
if [ "$scale" = 1 ]; then
    # several `migrate run` workers share a PostgreSQL job table: psycopg, and a server
    .venv/bin/python -c "import psycopg" 2>/dev/null ||
        .venv/bin/python -m pip install --quiet --disable-pip-version-check "psycopg[binary]>=3.1"
    if [ -z "${MIGRATOR_TEST_PG_URL:-}" ]; then
        MIGRATOR_TEST_PG_URL="$(bash scripts/pg.sh start)"
        export MIGRATOR_TEST_PG_URL
    fi
    exec .venv/bin/python benchmarks/scale.py ${args[@]+"${args[@]}"}
fi
if ! .venv/bin/python -c "import requests, matplotlib" 2>/dev/null; then
    # the "bench" extra when pyproject has it; otherwise the two packages by name
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test,bench]" || true
    .venv/bin/python -c "import requests, matplotlib" 2>/dev/null ||
        .venv/bin/python -m pip install --quiet --disable-pip-version-check "requests>=2.31" "matplotlib>=3.7"
fi
exec .venv/bin/python benchmarks/run.py "$@"
