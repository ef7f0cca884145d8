#!/usr/bin/env bash
# Side-by-side inference benchmark: netc vs PyTorch vs ONNX Runtime (CPU, 2 threads).
#   benches/compare/run.sh                  # full set (~10-20 min on 2 cores)
#   benches/compare/run.sh --quick          # lenet5 + resnet18, fewer iterations (~2-3 min)
#   benches/compare/run.sh --torch-compile  # also torch.compile vs netc compile time (resnet18)
#   benches/compare/run.sh --train          # training step: netc vs PyTorch eager (train.py)
# Other flags go to compare.py (see `--help`). Results: Markdown on stdout,
# JSON in target/compare/results.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${COMPARE_VENV:-target/compare-venv}
REQ=benches/compare/requirements.txt
PY=${PYTHON:-python3}

# The venv is (re)made when missing or when requirements.txt changed since it was made.
# COMPARE_VENV=/path/to/venv reuses another checkout's venv; that one is never rebuilt here.
if [ -n "${COMPARE_VENV:-}" ] && { [ ! -x "$VENV/bin/python" ] || ! cmp -s "$REQ" "$VENV/requirements.txt"; }; then
    echo "COMPARE_VENV=$VENV is missing or was made from another requirements.txt" >&2
    exit 1
fi
if [ ! -x "$VENV/bin/python" ] || ! cmp -s "$REQ" "$VENV/requirements.txt"; then
    echo "--- creating $VENV (PyPI torch is the CUDA build: ~3.1 GB download, ~5.6 GB on disk)" >&2
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
    start=$(date +%s)
    "$VENV/bin/pip" install --quiet --upgrade pip
    "$VENV/bin/pip" install --progress-bar off -r "$REQ"
    cp "$REQ" "$VENV/requirements.txt"
    echo "--- venv ready in $(( $(date +%s) - start )) s, $(du -sh "$VENV" | cut -f1)" >&2
fi

echo "--- cargo build --release" >&2
cargo build --release >&2

# compare.py drops OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (if set) for its own process before
# importing numpy, and passes the original environment to netc.
SCRIPT=benches/compare/compare.py
if [ "${1:-}" = "--train" ]; then
    shift
    SCRIPT=benches/compare/train.py
fi
exec "$VENV/bin/python" "$SCRIPT" "$@"
