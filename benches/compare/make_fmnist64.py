#!/usr/bin/env python3
"""Makes the transfer-learning benchmark set: netc's bundled Fashion-MNIST subset (10,000
training and 2,000 test images, data/fashion-mnist/) upsampled to 3x64x64, as one .npz.

In: the four gzip'd IDX files in data/fashion-mnist/. Out: an .npz with x_train
[10000, 3, 64, 64] uint8, y_train [10000] int64, x_test [2000, 3, 64, 64], y_test [2000]:
each 28x28 image resized to 64x64 by bilinear interpolation (pixel centres aligned, as
PIL/torchvision without antialiasing) and repeated over three channels. Deterministic.

Run: python3 benches/compare/make_fmnist64.py OUT.npz   (needs numpy; e.g.
/work/torch-venv/bin/python)
"""

import gzip
import os
import struct
import sys

import numpy as np

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data", "fashion-mnist")
SIZE = 64


def read_idx(name):
    with gzip.open(os.path.join(SRC, name), "rb") as f:
        data = f.read()
    magic, n = struct.unpack(">II", data[:8])
    if magic == 2051:
        h, w = struct.unpack(">II", data[8:16])
        return np.frombuffer(data[16:], np.uint8).reshape(n, h, w)
    return np.frombuffer(data[8:], np.uint8).astype(np.int64)


def upsample(x):
    n, h, w = x.shape
    # Source coordinates of each output pixel centre.
    ys = np.clip((np.arange(SIZE) + 0.5) * h / SIZE - 0.5, 0, h - 1)
    xs = np.clip((np.arange(SIZE) + 0.5) * w / SIZE - 0.5, 0, w - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (ys - y0)[None, :, None], (xs - x0)[None, None, :]
    f = x.astype(np.float32)
    top = f[:, y0][:, :, x0] * (1 - fx) + f[:, y0][:, :, x1] * fx
    bot = f[:, y1][:, :, x0] * (1 - fx) + f[:, y1][:, :, x1] * fx
    out = np.rint(top * (1 - fy) + bot * fy).clip(0, 255).astype(np.uint8)
    return np.repeat(out[:, None], 3, axis=1)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    np.savez(
        sys.argv[1],
        x_train=upsample(read_idx("train-images-idx3-ubyte.gz")),
        y_train=read_idx("train-labels-idx1-ubyte.gz"),
        x_test=upsample(read_idx("t10k-images-idx3-ubyte.gz")),
        y_test=read_idx("t10k-labels-idx1-ubyte.gz"),
    )


if __name__ == "__main__":
    main()
