"""Reference cases for netc's detection post-processing (`tests/detect_post.rs`).

Run: /work/torch-venv/bin/python tests/data/detect/make_cases.py   (torch 2.14, torchvision 0.29)
Writes tests/data/detect/cases.json:
- box_iou: torchvision.ops.box_iou on random, nested, touching, zero-area and inverted boxes;
- nms / batched_nms: torchvision.ops.nms and batched_nms on clustered random boxes with tied
  scores, zero-area boxes, IoUs exactly at the threshold, and NaN scores;
- map: a numpy transcription of the VOC devkit's voc_eval / voc_ap (use_07_metric=False), with
  netc's documented differences (no +1 pixel, no difficult flags, IoU >= threshold as in
  VOCevaldet.m, stable sort by score);
- decode: a YOLO grid head decoded by the formulas of src/detect/mod.rs written here in numpy,
  thresholded, then torchvision's batched_nms.
Every box is rounded to float32 before use, so Rust and this script see the same inputs.
JSON has no NaN: NaN is written as null.
"""

import json
import math
import os

import numpy as np
import torch
import torchvision
from torchvision.ops import batched_nms, box_iou, nms

rng = np.random.default_rng(17)


def f32(a):
    return np.asarray(a, dtype=np.float32)


def clean(x):
    """Nested lists with NaN as None."""
    if isinstance(x, np.ndarray):
        x = x.tolist()
    if isinstance(x, (list, tuple)):
        return [clean(v) for v in x]
    if isinstance(x, float) and math.isnan(x):
        return None
    return x


def random_boxes(n, lo=0.0, hi=10.0, max_side=4.0):
    xy = rng.uniform(lo, hi, size=(n, 2))
    wh = rng.uniform(0.1, max_side, size=(n, 2))
    return f32(np.concatenate([xy, xy + wh], axis=1))


def clustered_boxes(n, clusters=4):
    """Boxes jittered around a few centres, so that many overlap."""
    centres = random_boxes(clusters)
    pick = rng.integers(0, clusters, size=n)
    jitter = rng.normal(0.0, 0.4, size=(n, 4))
    b = centres[pick] + jitter
    b[:, 2:] = np.maximum(b[:, 2:], b[:, :2] + 0.05)
    return f32(b)


def special_boxes():
    """Degenerate and exact cases."""
    return f32(
        [
            [0, 0, 2, 1],  # IoU with the next is exactly 0.5
            [0, 0, 1, 1],
            [1, 0, 2, 1],  # touches the previous one
            [0.5, 0.5, 0.5, 0.5],  # zero area
            [0.5, 0.5, 0.5, 0.5],  # the same zero-area box
            [0, 0, 0, 3],  # zero width
            [3, 3, 2, 2],  # inverted
            [0.25, 0.25, 0.75, 0.75],  # nested in [0, 0, 1, 1]
            [5, 5, 9, 9],  # far away
        ]
    )


# ---- box_iou ----
iou_cases = []
for a, b in [
    (random_boxes(7), random_boxes(5)),
    (clustered_boxes(6), clustered_boxes(4)),
    (special_boxes(), special_boxes()),
    (random_boxes(3), f32(np.zeros((0, 4)))),
]:
    got = box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    iou_cases.append({"a": clean(a), "b": clean(b), "iou": clean(got.reshape(-1))})


# ---- nms and batched_nms ----
def vanilla_batched(boxes, scores, idxs, thr):
    """Per-class NMS, then all kept boxes by decreasing score (stable)."""
    keep = []
    for c in torch.unique(idxs):
        m = torch.where(idxs == c)[0]
        keep.append(m[nms(boxes[m], scores[m], thr)])
    keep = torch.cat(keep) if keep else torch.empty(0, dtype=torch.int64)
    order = torch.sort(scores[keep], descending=True, stable=True)[1]
    # Ties between classes: by index, as the coordinate trick's single stable sort.
    keep = keep[order]
    s = scores[keep]
    out, i = [], 0
    while i < len(keep):
        j = i
        while j + 1 < len(keep) and (s[j + 1] == s[i] or (torch.isnan(s[i]) and torch.isnan(s[j + 1]))):
            j += 1
        out.extend(sorted(keep[i : j + 1].tolist()))
        i = j + 1
    return out


nms_cases = []


def add_nms(boxes, scores, classes, thr, note):
    b, s = torch.from_numpy(boxes), torch.from_numpy(scores)
    c = torch.from_numpy(np.asarray(classes, dtype=np.int64))
    keep = nms(b, s, thr).tolist()
    bkeep = batched_nms(b, s, c, thr).tolist()
    if not any(np.isnan(scores)):
        # The coordinate trick must agree with plain per-class NMS on these cases.
        assert bkeep == vanilla_batched(b, s, c, thr), note
    nms_cases.append(
        {
            "note": note,
            "boxes": clean(boxes),
            "scores": clean(scores),
            "classes": list(map(int, classes)),
            "iou_threshold": thr,
            "nms": keep,
            "batched_nms": bkeep,
        }
    )


for k, thr in enumerate([0.3, 0.5, 0.7]):
    n = 30
    boxes = clustered_boxes(n)
    scores = f32(rng.uniform(0, 1, n))
    add_nms(boxes, scores, rng.integers(0, 3, n), thr, f"clustered {k}")
    # Ties: scores on a coarse grid.
    tied = f32(np.round(rng.uniform(0, 1, n) * 4) / 4)
    add_nms(boxes, tied, rng.integers(0, 2, n), thr, f"tied scores {k}")
sp = special_boxes()
add_nms(sp, f32(np.linspace(1, 0.2, len(sp))), [0] * len(sp), 0.5, "exactly at the threshold (kept)")
add_nms(sp, f32(np.linspace(1, 0.2, len(sp))), [0] * len(sp), 0.49, "just under (suppressed)")
add_nms(sp, f32(np.full(len(sp), 0.5)), [0, 1, 0, 1, 0, 1, 0, 1, 0], 0.3, "all tied, two classes")
add_nms(
    f32([[0, 0, 1, 1], [0, 0, 1, 1], [0.1, 0, 1, 1], [5, 5, 6, 6]]),
    f32([0.5, np.nan, 0.9, 0.1]),
    [0, 0, 0, 0],
    0.5,
    "NaN score (first, as torch sorts it)",
)
add_nms(f32(np.zeros((0, 4))), f32([]), [], 0.5, "empty")


# ---- mAP: the VOC devkit, transcribed ----
def iou_np(bb, gt):
    """IoU of one box with many (voc_eval's, without the +1)."""
    ixmin = np.maximum(gt[:, 0], bb[0])
    iymin = np.maximum(gt[:, 1], bb[1])
    ixmax = np.minimum(gt[:, 2], bb[2])
    iymax = np.minimum(gt[:, 3], bb[3])
    iw = np.maximum(ixmax - ixmin, 0.0)
    ih = np.maximum(iymax - iymin, 0.0)
    inters = iw * ih
    uni = (bb[2] - bb[0]) * (bb[3] - bb[1]) + (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1]) - inters
    return inters / uni


def voc_ap(rec, prec):
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def voc_eval(images, classname, ovthresh):
    """images: list of (dets [(cls, score, box)], gts [(cls, box)])."""
    class_recs, npos = {}, 0
    for i, (_, gts) in enumerate(images):
        bbox = np.array([g[1] for g in gts if g[0] == classname], dtype=np.float64).reshape(-1, 4)
        class_recs[i] = {"bbox": bbox, "det": [False] * len(bbox)}
        npos += len(bbox)
    image_ids, confidence, BB = [], [], []
    for i, (dets, _) in enumerate(images):
        for c, s, b in dets:
            if c == classname:
                image_ids.append(i)
                confidence.append(s)
                BB.append(b)
    if npos == 0:
        return None
    confidence = np.array(confidence, dtype=np.float64)
    BB = np.array(BB, dtype=np.float64).reshape(-1, 4)
    sorted_ind = np.argsort(-confidence, kind="stable")
    BB = BB[sorted_ind, :]
    image_ids = [image_ids[x] for x in sorted_ind]
    nd = len(image_ids)
    tp, fp = np.zeros(nd), np.zeros(nd)
    for d in range(nd):
        R = class_recs[image_ids[d]]
        bb = BB[d, :]
        ovmax = -np.inf
        BBGT = R["bbox"]
        if BBGT.size > 0:
            overlaps = iou_np(bb, BBGT)
            ovmax = np.max(overlaps)
            jmax = np.argmax(overlaps)
        if ovmax >= ovthresh:
            if not R["det"][jmax]:
                tp[d] = 1.0
                R["det"][jmax] = True
            else:
                fp[d] = 1.0
        else:
            fp[d] = 1.0
    fp, tp = np.cumsum(fp), np.cumsum(tp)
    rec = tp / float(npos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return voc_ap(rec, prec)


def yolo_box():
    cx, cy = rng.uniform(0.1, 0.9, 2)
    w, h = rng.uniform(0.05, 0.4, 2)
    return [float(v) for v in f32([cx, cy, w, h])]


def corners(cx, cy, w, h):
    # As netc's cxcywh_to_xyxy, in float32.
    cx, cy, w, h = f32([cx, cy, w, h])
    two = np.float32(2)
    return [float(v) for v in [cx - w / two, cy - h / two, cx + w / two, cy + h / two]]


map_cases = []
for case, (n_images, n_classes, thr) in enumerate(
    [(12, 4, 0.5), (8, 3, 0.5), (6, 5, 0.75), (3, 2, 0.5)]
):
    images = []
    for i in range(n_images):
        # Class n_classes - 1 never appears in the ground truth; class 0 is never predicted in
        # case 1; case 3 has no ground truth at all (no AP, no mean).
        gts = []
        for _ in range(rng.integers(0, 5) if case != 3 else 0):
            gts.append({"class": int(rng.integers(0, n_classes - 1)), "box": yolo_box()})
        dets = []
        for g in gts:
            for _ in range(rng.integers(0, 3)):  # 0, 1 or 2 (a duplicate) detections
                cx, cy, w, h = g["box"]
                j = rng.normal(0, 0.04, 4)
                box = corners(cx + j[0] * w, cy + j[1] * h, w * (1 + j[2]), h * (1 + j[3]))
                cls = g["class"] if rng.uniform() < 0.85 else int(rng.integers(0, n_classes))
                dets.append({"class": cls, "score": float(f32(rng.uniform())), "box": box})
        for _ in range(rng.integers(0, 3)):  # background false positives
            dets.append(
                {
                    "class": int(rng.integers(0, n_classes)),
                    "score": float(f32(rng.uniform(0, 0.6))),
                    "box": corners(*yolo_box()),
                }
            )
        if case == 1:
            dets = [d for d in dets if d["class"] != 0]
        if case == 2 and dets:
            dets[0]["score"] = dets[-1]["score"]  # a tie
        images.append({"detections": dets, "objects": gts})
    flat = [
        (
            [(d["class"], d["score"], d["box"]) for d in im["detections"]],
            [(g["class"], corners(*g["box"])) for g in im["objects"]],
        )
        for im in images
    ]
    aps = [voc_eval(flat, c, thr) for c in range(n_classes)]
    present = [a for a in aps if a is not None]
    map_cases.append(
        {
            "num_classes": n_classes,
            "iou_threshold": thr,
            "images": images,
            "ap": aps,
            "map": float(np.mean(present)) if present else None,
        }
    )


# ---- decode: the grid head formulas in numpy, then torchvision's batched_nms ----
def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def decode_np(values, anchors, n_classes, input_wh, thr, iou_thr, max_det, clip):
    ch, sh, sw = values.shape
    A = len(anchors)
    v = values.astype(np.float64).reshape(A, 5 + n_classes, sh, sw)
    cands = []  # (class, score, box), in the order row, column, anchor, class
    for row in range(sh):
        for col in range(sw):
            for a, (aw, ah) in enumerate(anchors):
                t = v[a, :, row, col]
                obj = sigmoid(t[4])
                logits = t[5:]
                p = np.exp(logits - logits.max())
                p /= p.sum()
                cx = (col + sigmoid(t[0])) / sw
                cy = (row + sigmoid(t[1])) / sh
                w = aw / input_wh[0] * np.exp(t[2])
                h = ah / input_wh[1] * np.exp(t[3])
                box = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
                if clip:
                    box = np.clip(box, 0.0, 1.0)
                for c in range(n_classes):
                    if obj * p[c] > thr:
                        cands.append((c, obj * p[c], box))
    if not cands:
        return []
    boxes = torch.tensor(np.array([c[2] for c in cands]), dtype=torch.float32)
    scores = torch.tensor([c[1] for c in cands], dtype=torch.float32)
    classes = torch.tensor([c[0] for c in cands])
    keep = batched_nms(boxes, scores, classes, iou_thr).tolist()
    if max_det is not None:
        keep = keep[:max_det]
    return [{"class": cands[i][0], "score": float(cands[i][1]), "box": cands[i][2].tolist()} for i in keep]


decode_cases = []
for k, (A, C, sh, sw, opts) in enumerate(
    [
        (3, 4, 5, 6, (0.3, 0.45, None, True)),
        (2, 3, 4, 4, (0.1, 0.6, 5, False)),
        (5, 1, 3, 2, (0.05, 0.3, None, True)),
    ]
):
    values = f32(rng.normal(0, 1.5, size=(A * (5 + C), sh, sw)))
    anchors = f32(rng.uniform(8, 60, size=(A, 2)))
    input_wh = [96, 80]
    dets = decode_np(values, anchors.astype(np.float64), C, input_wh, *opts)
    decode_cases.append(
        {
            "values": clean(values.reshape(-1)),
            "shape": [A * (5 + C), sh, sw],
            "anchors": clean(anchors),
            "num_classes": C,
            "input_size": input_wh,
            "score_threshold": opts[0],
            "iou_threshold": opts[1],
            "max_detections": opts[2],
            "clip": opts[3],
            "detections": dets,
        }
    )

out = {
    "generator": f"torch {torch.__version__}, torchvision {torchvision.__version__}",
    "box_iou": iou_cases,
    "nms": nms_cases,
    "map": map_cases,
    "decode": decode_cases,
}
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cases.json")
with open(path, "w") as f:
    json.dump(out, f, separators=(",", ":"), allow_nan=False)
print(f"wrote {path}: {sum(len(v) for v in out.values() if isinstance(v, list))} cases")
