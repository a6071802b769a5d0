#!/usr/bin/env bash
# Run the test suite on a fresh machine: sets up .venv, then pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -k rollback, or -m slow).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
