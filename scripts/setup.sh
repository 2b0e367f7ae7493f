#!/usr/bin/env bash
# Create ./.venv (once) and install gradcam_widget into it with the given extras.
# Idempotent and offline-safe after the first run. Usage: scripts/setup.sh [extras]
#   scripts/setup.sh            -> runtime only
#   scripts/setup.sh test,bench -> plus the test and benchmark extras
set -euo pipefail
cd "$(dirname "$0")/.."
extras=${1:-}
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" || true
spec="."
[ -n "$extras" ] && spec=".[$extras]"
# PYTHONWARNINGS: setuptools' notice about editable installs is not for the user.
PYTHONWARNINGS=ignore .venv/bin/python -m pip install --quiet --disable-pip-version-check \
    -e "$spec" 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" || true
.venv/bin/python -c "import gradcam_widget" # fail here, loudly, if the install did not work
