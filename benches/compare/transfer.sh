#!/bin/sh
# The frozen-prefix feature cache, measured: ResNet-18 at 64x64 on 10,000 images (the bundled
# Fashion-MNIST subset upsampled to 3x64x64 by make_fmnist64.py), everything but `fc` frozen
# (--freeze ..6), trained without the cache, with it in memory, and with it in a memory-mapped
# file (--cache-limit 1K forces the spill), one after the other in one run. MODES picks some:
# MODES="memory mapped" sh benches/compare/transfer.sh
# Run from anywhere: sh benches/compare/transfer.sh   (builds netc in release first)
set -e
cd "$(dirname "$0")/../.."
cargo build --release -q
DATA=${DATA:-target/bench/fmnist64.npz}
EPOCHS=${EPOCHS:-2}
mkdir -p target/bench
[ -f "$DATA" ] || ${PYTHON:-python3} benches/compare/make_fmnist64.py "$DATA"  # needs numpy
for mode in ${MODES:-none memory mapped}; do
  case $mode in
    none) flags="--no-cache-features" ;;
    memory) flags="--cache-features" ;;
    mapped) flags="--cache-features --cache-limit 1K" ;;
    *) echo "unknown mode $mode (none, memory, mapped)"; exit 2 ;;
  esac
  echo "== $mode: $flags"
  target/release/netc train specs/resnet18.net --set size=64 --set classes=10 --freeze ..6 \
    --data "$DATA" --epochs "$EPOCHS" --batch 64 --lr 0.01 --seed 1 $flags \
    --out "target/bench/$mode" 2>&1
done
