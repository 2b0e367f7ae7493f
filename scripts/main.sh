#!/usr/bin/env bash
# The main job, offline: the quickstart notebook on the shipped shapes model.
#   bash scripts/main.sh              set up, then open notebooks/01_quickstart.ipynb in
#                                     JupyterLab (the explorer widget inline)
#   bash scripts/main.sh --headless   set up, execute the quickstart notebook without a browser
#                                     and write demo.png (the four panels) with
#                                     `python -m gradcam_widget demo`
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh lab
export TF_CPP_MIN_LOG_LEVEL=3
if [ "${1:-}" = "--headless" ]; then
    out=$(mktemp -d)
    .venv/bin/jupyter nbconvert --to notebook --execute --log-level=WARN \
        --ExecutePreprocessor.timeout=600 --output-dir "$out" notebooks/01_quickstart.ipynb
    echo "executed notebooks/01_quickstart.ipynb -> $out/01_quickstart.ipynb"
    .venv/bin/python -m gradcam_widget demo --out demo.png
    exit 0
fi
root_flag=()
[ "$(id -u)" -eq 0 ] && root_flag=(--allow-root)
exec .venv/bin/jupyter lab "${root_flag[@]}" notebooks/01_quickstart.ipynb
