#!/usr/bin/env bash
# What the browser end-to-end tests (pytest -m e2e) need beyond the Python test extra.
# Idempotent and quiet; run by scripts/test.sh before pytest. Needs ./.venv (scripts/setup.sh).
#   - Debian's chromium (/usr/bin/chromium), installed with apt-get only when missing:
#     Playwright's own browser download does not work on these machines. Headless needs
#     none of its recommended packages (udev, upower, a notification daemon...); one of them,
#     fonts-liberation, is kept for the usual web font metrics in the screenshots.
#   - playwright (the Python client; its driver ships inside the wheel), voila, jupyterlab
#     and psutil in ./.venv (the same as the project's e2e extra).
set -euo pipefail
cd "$(dirname "$0")/.."

chromium=/usr/bin/chromium
python_packages=("playwright>=1.40" "voila>=0.5" "jupyterlab>=4" "psutil>=5")

if [ ! -x .venv/bin/python ]; then
    echo "e2e_setup: ./.venv is missing; run scripts/setup.sh test first" >&2
    exit 1
fi

if [ ! -x "$chromium" ]; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || {
            echo "e2e_setup: $chromium is missing and installing it needs root (or sudo)" >&2
            exit 1
        }
        sudo="sudo"
    fi
    apt_log=$(mktemp)
    # Quiet unless it fails; then the whole apt output explains why.
    if ! { $sudo apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
            chromium fonts-liberation; } \
        >"$apt_log" 2>&1; then
        cat "$apt_log" >&2
        rm -f "$apt_log"
        echo "e2e_setup: installing Debian's chromium failed" >&2
        exit 1
    fi
    rm -f "$apt_log"
fi
# Fail here, loudly, if the browser does not start (its launcher prints a harmless notice
# about memory on some machines, hence the redirect of both streams).
"$chromium" --version >/dev/null 2>&1 || {
    echo "e2e_setup: $chromium --version failed" >&2
    exit 1
}

# pip's own failures still fail this script (pipefail); only a known-harmless notice about
# this machine's pip configuration is filtered out.
.venv/bin/python -m pip --disable-pip-version-check install --quiet "${python_packages[@]}" 2>&1 \
    | { grep -v "is ignored: it is neither a file nor a directory" || true; }
.venv/bin/python -c "import playwright.sync_api, voila" # fail here if the install did not work
