#!/usr/bin/env bash
# The whole test suite from a fresh clone: set-up, lint, then pytest: unit tests, the slow
# VGG16 and Binder checks, the notebooks (nbval) and the browser end-to-end tests, whose
# browser scripts/e2e_setup.sh installs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test,e2e,photos,ray,hub
bash scripts/e2e_setup.sh
export TF_CPP_MIN_LOG_LEVEL=3 PYTHONHASHSEED=0
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider tests notebooks "$@"
