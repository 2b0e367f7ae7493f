#!/usr/bin/env bash
# Refresh the documentation screenshots (docs/screenshots/*.png, shown in README.md) on
# purpose: the same set-up as scripts/test.sh, then only the browser end-to-end tests, with
# GW_E2E_SCREENSHOTS pointing at docs/screenshots. A plain test run writes its screenshots
# to a temporary folder and changes no tracked file; this is the one command that does.
# CI=true makes a missing browser or server fail instead of skip (so nothing is silently
# left unrefreshed). Extra arguments go to pytest. Review and commit the new pictures.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test,e2e
bash scripts/e2e_setup.sh
export TF_CPP_MIN_LOG_LEVEL=3 PYTHONHASHSEED=0
export GW_E2E_SCREENSHOTS=docs/screenshots CI=true
.venv/bin/python -m pytest -m e2e -p no:cacheprovider tests/e2e "$@"
echo "refresh_screenshots: docs/screenshots updated:"
ls -l docs/screenshots/*.png
