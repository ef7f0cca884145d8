#!/usr/bin/env bash
# Side-by-side inference benchmark: netc vs PyTorch vs ONNX Runtime (CPU, 2 threads).
#   benches/compare/run.sh                  # full set (~10-20 min on 2 cores)
#   benches/compare/run.sh --quick          # lenet5 + resnet18, fewer iterations (~2-3 min)
#   benches/compare/run.sh --torch-compile  # also torch.compile vs netc compile time (resnet18)
# Other flags go to compare.py (see `--help`). Results: Markdown on stdout,
# JSON in target/compare/results.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=target/compare-venv
REQ=benches/compare/requirements.txt
PY=${PYTHON:-python3}

# The venv is (re)made when missing or when requirements.txt changed since it was made.
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
exec "$VENV/bin/python" benches/compare/compare.py "$@"
