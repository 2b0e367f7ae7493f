#!/usr/bin/env bash
# Create ./.venv (once) and install gradcam_widget into it with the given extras.
# Idempotent. Usage: scripts/setup.sh [extras]
#   scripts/setup.sh            -> runtime only
#   scripts/setup.sh test,bench -> plus the test and benchmark extras
set -euo pipefail
cd "$(dirname "$0")/.."
extras=${1:-}
python=${PYTHON:-python3}

quiet_pip() {
    # pip's own failures still fail this script (pipefail); only a known-harmless notice
    # about this machine's pip configuration is filtered out.
    .venv/bin/python -m pip --disable-pip-version-check "$@" 2>&1 \
        | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}

if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
quiet_pip install --quiet --upgrade pip
spec="."
[ -n "$extras" ] && spec=".[$extras]"
# PYTHONWARNINGS: setuptools' notice about editable installs is not for the user.
PYTHONWARNINGS=ignore quiet_pip install --quiet -e "$spec"
.venv/bin/python -c "import gradcam_widget" # fail here, loudly, if the install did not work
