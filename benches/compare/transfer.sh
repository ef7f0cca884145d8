#!/bin/sh
# The frozen-prefix feature cache, measured: ResNet-18 at 64x64 on 10,000 images (the bundled
# Fashion-MNIST subset upsampled to 3x64x64 by make_fmnist64.py), everything but `fc` frozen
# (--freeze ..6), trained without and with the cache, one after the other in one run.
# Run from anywhere: sh benches/compare/transfer.sh   (builds netc in release first)
set -e
cd "$(dirname "$0")/../.."
cargo build --release -q
DATA=${DATA:-target/bench/fmnist64.npz}
EPOCHS=${EPOCHS:-2}
mkdir -p target/bench
[ -f "$DATA" ] || python3 benches/compare/make_fmnist64.py "$DATA"
for mode in no-cache-features cache-features; do
  echo "== --$mode"
  target/release/netc train specs/resnet18.net --set size=64 --set classes=10 --freeze ..6 \
    --data "$DATA" --epochs "$EPOCHS" --batch 64 --lr 0.01 --seed 1 --"$mode" \
    --out "target/bench/$mode" 2>&1
done
