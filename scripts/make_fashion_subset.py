#!/usr/bin/env python3
"""Makes netc's bundled Fashion-MNIST subset (data/fashion-mnist/).

In: the full Fashion-MNIST in IDX format (Debian: `apt-get install dataset-fashion-mnist`,
which puts it in /usr/share/datasets/fashion-mnist). Out: four gzip'd IDX files with
10,000 training images (the first 1,000 of each class, in file order, from the training set)
and 2,000 test images (the first 200 of each class, in file order, from the test set). The
selected images keep their relative order in the original files.

The output is byte-for-byte reproducible: gzip level 9, no file name and mtime 0 in the gzip
header. Python standard library only.

Usage: python3 scripts/make_fashion_subset.py [SRC_DIR] [OUT_DIR]
"""

import gzip
import os
import struct
import sys

SRC = "/usr/share/datasets/fashion-mnist"
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "fashion-mnist")
CLASSES = 10


def read_idx(path, magic, ndim):
    with gzip.open(path, "rb") as f:
        data = f.read()
    if struct.unpack(">I", data[:4])[0] != magic:
        sys.exit(f"{path}: bad magic")
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    body = data[4 + 4 * ndim :]
    size = 1
    for d in dims:
        size *= d
    if len(body) != size:
        sys.exit(f"{path}: expected {size} bytes of data, found {len(body)}")
    return dims, body


def write_idx(path, magic, dims, body):
    header = struct.pack(">I", magic) + struct.pack(">" + "I" * len(dims), *dims)
    with open(path, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as f:
            f.write(header + body)


def subset(src, out, split, per_class):
    (n, h, w), images = read_idx(os.path.join(src, f"{split}-images-idx3-ubyte.gz"), 0x803, 3)
    (nl,), labels = read_idx(os.path.join(src, f"{split}-labels-idx1-ubyte.gz"), 0x801, 1)
    if n != nl:
        sys.exit(f"{split}: {n} images but {nl} labels")
    taken = [0] * CLASSES
    chosen = []
    for i, y in enumerate(labels):
        if taken[y] < per_class:
            taken[y] += 1
            chosen.append(i)
    if taken != [per_class] * CLASSES:
        sys.exit(f"{split}: not enough images of some class: {taken}")
    px = h * w
    new_images = b"".join(images[i * px : (i + 1) * px] for i in chosen)
    new_labels = bytes(labels[i] for i in chosen)
    m = len(chosen)
    write_idx(os.path.join(out, f"{split}-images-idx3-ubyte.gz"), 0x803, (m, h, w), new_images)
    write_idx(os.path.join(out, f"{split}-labels-idx1-ubyte.gz"), 0x801, (m,), new_labels)
    print(f"{split}: {m} images ({per_class} per class) of {n}")


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else SRC
    out = sys.argv[2] if len(sys.argv) > 2 else OUT
    os.makedirs(out, exist_ok=True)
    subset(src, out, "train", 1000)
    subset(src, out, "t10k", 200)


if __name__ == "__main__":
    main()
