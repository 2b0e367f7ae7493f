#!/usr/bin/env bash
# The whole test suite from a fresh clone: set-up, lint, then pytest: unit tests, the slow
# VGG16 and Binder checks, the notebooks (nbval) and the browser end-to-end tests, whose
# browser scripts/e2e_setup.sh installs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test,e2e,photos,ray,hub,jax,docs,release
# PyTorch for the backend matrix: its CPU build, pinned (an open range would fetch a CUDA build
# of several GB); already there on a second run
.venv/bin/python -c "import torch" 2>/dev/null \
    || .venv/bin/python -m pip install --quiet --disable-pip-version-check torch==2.13.0 2>&1 \
    | { grep -v "is ignored: it is neither a file nor a directory" || true; }
bash scripts/e2e_setup.sh
# the docs site's one download (the pinned widget manager), fetched here so the tests' builds
# reach nothing but this machine (they run with GW_DOCS_OFFLINE=1)
.venv/bin/python scripts/build_docs.py --fetch >/dev/null
export TF_CPP_MIN_LOG_LEVEL=3 PYTHONHASHSEED=0
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider tests notebooks "$@"
