"""PyTorch reference cases for netc's detection objectives: masked per-sample terms
(`mse(output=box, mask=object)`), the localization objective, and the YOLO loss.

Run from the repository root (needs torch and safetensors; CI does not, it reads the files):

    /work/torch-venv/bin/python tests/data/objectives/make_detection_cases.py

The files have `make_cases.py`'s format (it provides the `Case` writer), with two more kinds of
target: `target/mask:<name>` (a term's per-sample 0/1 mask, [N]) and `target/yolo:<grid>`
(a YOLO head's targets, encoded here by `encode_yolo`, an independent implementation of netc's
`detect::encode::Grid::encode`). A YOLO case also stores its boxes as `objects` [M, 6] (sample,
class, cx, cy, w, h) so that the test can encode them with netc and compare.

Definitions (netc's, see `src/loss.rs` and `src/loss_yolo.rs`):

- masked term: the per-sample loss (cross-entropy; MSE, L1, BCE each the mean over the output's
  elements of the sample) times the mask, summed, over max(Σ mask, 1):
  `(per_sample * m).sum() / m.sum().clamp(min=1)`.
- YOLO: written here the direct way, a loop over the responsible (sample, anchor, row, col)
  gathering the head's values there, plus the no-object objectness over the rest.
"""

import math
import os
import sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_cases as mc  # noqa: E402

N = mc.N
MASK = torch.tensor([1, 0, 1, 1, 0, 1], dtype=torch.float64)
ZERO = torch.zeros(N, dtype=torch.float64)


def masked(per, m):
    return (per * m).sum() / m.sum().clamp(min=1)


def ce_masked(ls, m):
    def f(c, o, t):
        y = mc.use(c, t, "cls")
        mm = c.target("mask:object", m)
        per = F.cross_entropy(o["cls"], y.argmax(1), label_smoothing=ls, reduction="none")
        return masked(per, mm)

    return f


def elementwise(kind, output, m):
    def f(c, o, t):
        y = mc.use(c, t, output)
        mm = c.target("mask:object", m)
        if kind == "mse":
            per = ((o[output] - y) ** 2).mean(1)
        elif kind == "l1":
            per = (o[output] - y).abs().mean(1)
        else:
            per = F.binary_cross_entropy_with_logits(o[output], y, reduction="none").mean(1)
        return masked(per, mm)

    return f


def all_masked_out(c, o, t):
    # Every sample masked out: the box term is 0 and gives the box head zero gradients; the
    # tags term keeps the case's scale.
    tags = F.binary_cross_entropy_with_logits(o["tags"], mc.use(c, t, "tags"))
    return tags + elementwise("mse", "box", ZERO)(c, o, t)


LOCALIZE = """
// Localization: objectness on every image; class and box only where there is an object.
model localize {
  input x: [1, 8, 8]
  c1: conv(4, 3, pad=1)
  relu
  maxpool(2)
  flatten
  fc: dense(12)
  hidden = relu
  object = hidden |> dense(1)
  cls = hidden |> dense(5)
  box = hidden |> dense(4)
  output object, cls, box
  train {
    loss: bce_with_logits(output=object) + cross_entropy(output=cls, mask=object) + 5 * mse(output=box, mask=object)
  }
}
"""


def localize():
    c = mc.Case("localize", 61)
    x = c.input("x", 1, 8, 8)
    h = F.max_pool2d(F.relu(c.conv("c1", x, 4, 3, pad=1)), 2).flatten(1)
    h = F.relu(c.dense("fc", h, 12))
    obj, cls, box = c.dense("object", h, 1), c.dense("cls", h, 5), c.dense("box", h, 4)
    m = MASK
    # As netc derives them from detection data: no object, zero class row and zero box.
    onehot = F.one_hot(torch.randint(0, 5, (N,), generator=c.gen), 5).double() * m[:, None]
    boxes = c.rand(N, 4).abs() * m[:, None]
    t_obj = c.target("targets:object", m.reshape(N, 1))
    t_cls = c.target("targets:cls", onehot)
    t_box = c.target("targets:box", boxes)
    mm = c.target("mask:object", m)
    bce = F.binary_cross_entropy_with_logits(obj, t_obj)
    ce = masked(-(t_cls * F.log_softmax(cls, 1)).sum(1), mm)
    mse = masked(((box - t_box) ** 2).mean(1), mm)
    c.save(LOCALIZE, bce + ce + 5 * mse)


# ---- YOLO ----

YOLO = """
// {comment}
model yolo {{
  input x: [1, 16, 16]
  c1: conv(4, 3, pad=1)
  relu
  maxpool(2)
  c2: conv(6, 3, pad=1)
  relu
  maxpool(2)
  grid = conv(16, 1)
  output grid
  train {{ loss: {loss} }}
}}
"""

SIZE = 16  # input pixels
S = 4  # grid
ANCHORS = [(4.0, 6.0), (8.0, 3.2)]  # pixels
C = 3

# (class, cx, cy, w, h) per image: two boxes in one cell taking different anchors, a centre on
# a cell border, an image without boxes, a later box replacing an earlier one at the same cell
# and anchor, a centre on the right edge (clamped to the last column), a box far from every
# anchor's shape.
BOXES = [
    [(1, 0.30, 0.30, 0.20, 0.30), (2, 0.35, 0.40, 0.50, 0.20)],
    [(0, 0.50, 0.75, 0.30, 0.30)],
    [],
    [(0, 0.60, 0.10, 0.20, 0.30), (2, 0.65, 0.15, 0.25, 0.35)],
    [(1, 1.00, 0.90, 0.10, 0.10)],
    [(2, 0.10, 0.60, 0.90, 0.70), (0, 0.80, 0.30, 0.15, 0.40), (1, 0.45, 0.55, 0.40, 0.15)],
]


def f32(v):
    return torch.tensor(v, dtype=torch.float32).item()


def encode_yolo(boxes, anchors_px):
    """{(n, a, row, col): (tx, ty, tw, th, class)}: each box at its centre's cell and the anchor
    of largest shape IoU (first on ties); a later box replaces an earlier one."""
    anchors = [(f32(w / SIZE), f32(h / SIZE)) for w, h in anchors_px]
    out = {}
    for n, objs in enumerate(boxes):
        for cls, cx, cy, w, h in objs:
            cx, cy, w, h = f32(cx), f32(cy), f32(w), f32(h)
            col = min(max(math.floor(cx * S), 0), S - 1)
            row = min(max(math.floor(cy * S), 0), S - 1)
            ious = []
            for aw, ah in anchors:
                inter = min(w, aw) * min(h, ah)
                ious.append(inter / (w * h + aw * ah - inter))
            a = max(range(len(anchors)), key=lambda i: (ious[i], -i))
            aw, ah = anchors[a]
            out[(n, a, row, col)] = (cx * S - col, cy * S - row, math.log(w / aw), math.log(h / ah), cls)
    return out


def dense_targets(assigned):
    """The targets in the head's layout [N, A·(5+C), S, S] (netc's input `yolo:grid`)."""
    t = torch.zeros(N, len(ANCHORS), 5 + C, S, S, dtype=torch.float64)
    for (n, a, row, col), (tx, ty, tw, th, cls) in assigned.items():
        t[n, a, 0:4, row, col] = torch.tensor([tx, ty, tw, th], dtype=torch.float64)
        t[n, a, 4, row, col] = 1
        t[n, a, 5 + cls, row, col] = 1
    return t.reshape(N, len(ANCHORS) * (5 + C), S, S)


def yolo_loss(head, assigned, coord, noobj):
    p = head.reshape(N, len(ANCHORS), 5 + C, S, S)
    loss = head.new_zeros(())
    noobj_mask = torch.ones(N, len(ANCHORS), S, S, dtype=torch.float64)
    for (n, a, row, col), (tx, ty, tw, th, cls) in assigned.items():
        v = p[n, a, :, row, col]
        box = (
            (torch.sigmoid(v[0]) - tx) ** 2
            + (torch.sigmoid(v[1]) - ty) ** 2
            + (v[2] - tw) ** 2
            + (v[3] - th) ** 2
        )
        obj = F.binary_cross_entropy_with_logits(v[4], torch.ones((), dtype=torch.float64))
        ce = F.cross_entropy(v[5:].unsqueeze(0), torch.tensor([cls]))
        loss = loss + coord * box + obj + ce
        noobj_mask[n, a, row, col] = 0
    x = p[:, :, 4]
    bce0 = F.binary_cross_entropy_with_logits(x, torch.zeros_like(x), reduction="none")
    loss = loss + noobj * (bce0 * noobj_mask).sum()
    return loss / N


def yolo(name, seed, loss_text, comment, coord, noobj, weight=1.0):
    c = mc.Case(name, seed)
    x = c.input("x", 1, SIZE, SIZE)
    h = F.max_pool2d(F.relu(c.conv("c1", x, 4, 3, pad=1)), 2)
    h = F.max_pool2d(F.relu(c.conv("c2", h, 6, 3, pad=1)), 2)
    head = c.conv("grid", h, len(ANCHORS) * (5 + C), 1)
    assigned = encode_yolo(BOXES, ANCHORS)
    c.target("yolo:grid", dense_targets(assigned))
    loss = weight * yolo_loss(head, assigned, coord, noobj)
    c.save(YOLO.format(comment=comment, loss=loss_text), loss)
    # The boxes, for netc to encode itself: (sample, class, cx, cy, w, h) rows.
    from safetensors.torch import load_file, save_file

    path = os.path.join(HERE, f"{name}.safetensors")
    tensors = load_file(path)
    rows = [[n, *o] for n, objs in enumerate(BOXES) for o in objs]
    tensors["objects"] = torch.tensor(rows, dtype=torch.float32)
    save_file(tensors, path)
    resp = len(assigned)
    print(f"{'':<14} {resp} responsible (cell, anchor) pairs for {sum(map(len, BOXES))} boxes")


def main():
    heads = mc.heads
    heads("ce_masked", 71, "cross_entropy(output=cls, label_smoothing=0.1, mask=object)",
          "Cross-entropy (label smoothing) counted only where the mask is 1.", ce_masked(0.1, MASK))
    heads("mse_masked", 72, "mse(output=box, mask=object)",
          "MSE: per sample the mean over the box's 4 values, then the mean over the masked-in "
          "samples.", elementwise("mse", "box", MASK))
    heads("l1_masked", 73, "l1(output=box, mask=object)", "L1, masked.",
          elementwise("l1", "box", MASK))
    heads("bce_masked", 74, "bce_with_logits(output=tags, mask=object)",
          "Binary cross-entropy (mean over the 3 tags per sample), masked.",
          elementwise("bce", "tags", MASK))
    heads("mask_all_zero", 75, "bce_with_logits(output=tags) + mse(output=box, mask=object)",
          "Every sample masked out: the box term is 0, its head's gradients 0.", all_masked_out)
    localize()
    yolo("yolo", 81, "yolo(output=grid, anchors=[4, 6, 8, 3.2])",
         "The YOLO loss, default weights (coord 5, noobj 0.5), anchors as a flat list.", 5.0, 0.5)
    yolo("yolo_weighted", 82,
         "0.5 * yolo(output=grid, anchors=[[4, 6], [8, 3.2]], classes=3, coord=2, noobj=0.25)",
         "The YOLO loss with its own weights, weighted.", 2.0, 0.25, weight=0.5)


if __name__ == "__main__":
    torch.use_deterministic_algorithms(True)
    main()
