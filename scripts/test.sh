#!/usr/bin/env bash
# The whole test suite from a fresh clone: set-up, lint, then pytest (unit, slow, notebooks).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
export TF_CPP_MIN_LOG_LEVEL=3 PYTHONHASHSEED=0
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest "$@"
