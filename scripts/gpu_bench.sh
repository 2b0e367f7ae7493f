#!/usr/bin/env bash
# Prepare benchmarks/bench_gpu.py for a lent GPU machine, and print the one command to run there.
#
# The GPU machine (see the device tool's KINDS.md) is x86-64 with Python 3.12, JAX (CUDA),
# PyTorch and torchvision, numpy, OpenCV, matplotlib, pillow, pandas, pyarrow, h5py, rich,
# absl-py, ml-dtypes ... but no TensorFlow, no Keras and no network. Under KERAS_BACKEND=jax,
# `import gradcam_widget` (and Keras) then lacks only keras, namex and optree: this script
# downloads exactly those as wheels for that machine into .whl/ (ignored through
# .git/info/exclude; the wheels travel with the working tree, which must stay under 64 MiB).
# The package itself travels as source (PYTHONPATH=$PWD there).
#
#   bash scripts/gpu_bench.sh            # fills .whl/ and prints the device command
#   PY_VERSION=3.12 KERAS_VERSION=3.15.1 bash scripts/gpu_bench.sh   # other pins
#
# Then run the printed command on the GPU machine with `.whl` carried along; it writes
# $OUT/bench_gpu.json and $OUT/bench_gpu.log. It needs no GPU here: nothing below runs one.
set -euo pipefail
cd "$(dirname "$0")/.."

PY_VERSION=${PY_VERSION:-3.12}
if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi

installed() {  # the version installed here, so that the GPU machine runs what was tested here
    "$PYTHON" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"
}
KERAS_VERSION=${KERAS_VERSION:-$(installed keras)}
NAMEX_VERSION=${NAMEX_VERSION:-$(installed namex)}
OPTREE_VERSION=${OPTREE_VERSION:-$(installed optree)}

exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qxF '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >>"$exclude"

rm -rf .whl  # one version of each package, or the install there stops
mkdir .whl
for requirement in "keras==$KERAS_VERSION" "namex==$NAMEX_VERSION" "optree==$OPTREE_VERSION"; do
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: \
        --python-version "$PY_VERSION" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux1_x86_64 -d .whl "$requirement"
done

echo "Wheels in .whl/ (for cp${PY_VERSION/./} on x86-64):"
ls -l .whl | tail -n +2
echo "total: $(du -sb .whl | cut -f1) bytes ($(du -sh .whl | cut -f1))"
echo
echo "On the GPU machine, in the repository root, with .whl carried along (several minutes,"
echo "most of them XLA compiling 8 configurations; add --rounds 3 --images-per-round 64 to shorten):"
cat <<'EOF'
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 KERAS_BACKEND=jax && set -o pipefail && python3 benchmarks/bench_gpu.py --out $OUT/bench_gpu.json 2>&1 | tee $OUT/bench_gpu.log
EOF
