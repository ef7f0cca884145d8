#!/usr/bin/env python3
"""Open-set face-verification recipes in PyTorch, beside `netc train specs/triplet.net` and
`netc train specs/siamese.net` (issue 16, part 2: "Measure and report").

Run:  /work/torch-venv/bin/python benches/compare/verification.py [--recipe triplet|siamese|both]
      [--epochs 5] [--seeds 0,1,2] [--init torch|he] [--mining train|netc|...] [--netc]
(any Python with torch, numpy and scikit-learn; 2 threads). `--netc` also runs
`target/release/netc train specs/<recipe>.net --epochs E --threads 2 --seed S` for each seed,
right after the PyTorch run of the same seed, and prints both.

The protocol is netc's (src/train/verification.rs, src/verify/):

- data: the bundled Fashion-MNIST subset (data/fashion-mnist/*.gz: 10,000 train + 2,000 test
  images), pixels / 255, no mean/std normalization (the specs' inputs set none), no
  augmentation; identities = classes; classes 0-6 of the train half train (7,000 images);
  classes 7-9 of both halves evaluate (3,600 images), as `verify::open_set`.
- model: specs/triplet.net's `face_net(64)`: conv(32, 3, pad 1, no bias)-bn-relu-maxpool(2),
  conv(64, 3, pad 1, no bias)-bn-relu-maxpool(2), flatten, dense(64), l2_normalize; siamese.net
  adds dense(1) on |f(x1) - f(x2)|.
- triplet: P x K = 7 x 4 batches (`PkSampler::shape_for(32, 7)`: every identity's samples dealt
  from a reshuffled deck), 250 steps per epoch; batch-hard mining (hardest positive, hardest
  negative per anchor, distances `pairwise_distance` with eps 1e-6); `triplet_margin_loss`
  margin 0.2, mean over the 28 anchors.
- siamese: batches of 32 pairs from a shuffled order of the 7,000 training images, even
  positions paired with another image of the same identity, odd with an image of another
  identity; BCE with logits; 218 steps per epoch.
- Adam(lr 1e-3), 5 epochs (the issue's recipe).
- evaluation (eval mode, running BN statistics): balanced pairs, 500 same + 500 different per
  held-out identity (1,500 + 1,500), as `verify::eval_pairs` (same pairs round-robin over the
  identities, different pairs with each identity as first member); score = distance between
  embeddings (triplet) or sigmoid(logit) (siamese); accuracy at the best threshold and ROC AUC
  (scikit-learn). The pairs are drawn with numpy's generator, not netc's, so they are a
  different sample of the same distribution (the standard error of an accuracy near 0.8 on
  3,000 pairs is about 0.007).

Variants, to find which difference between the two matters:

- `--init torch` (PyTorch's defaults: kaiming_uniform(a=sqrt 5) weights, uniform biases) or
  `--init he` (netc's: N(0, 2/fan_in) weights, zero biases);
- `--mining train` (the usual PyTorch batch-hard: one training-mode forward of the P x K batch,
  triplets mined on those embeddings, the loss on them) or `--mining netc` (netc's: mine on an
  inference-mode embedding of the batch with running BN statistics, then three training-mode
  forwards -- anchors, positives, negatives, each with its own batch statistics -- into
  `triplet_margin_loss`, as the three inputs of specs/triplet.net before netc's shared
  batchnorm normalized all applications together), `--mining train-separate` (mined on the
  training-mode forward, then the three separate forwards) or `--mining eval-joint` (mined in
  inference mode, then one training-mode forward of anchors, positives and negatives together:
  netc's recipe since the shared batchnorms normalize their applications jointly);
- `--siamese-forward separate` (x1 and x2 through the embedding in two forwards, as
  siamese.net's graph) or `joint` (one forward of both halves, one set of batch statistics).

PyTorch's seconds are the training loop's (no evaluation, no data loading); netc's are its
JSON line's `seconds`, the whole run (training and the evaluation after each epoch).
"""

import argparse
import gzip
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score, roc_curve

THREADS = 2
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DATA = os.path.join(ROOT, "data", "fashion-mnist")
TRAIN_IDS, EVAL_IDS = list(range(7)), [7, 8, 9]
EPS = 1e-6  # pairwise_distance's


def read_idx(name):
    with gzip.open(os.path.join(DATA, name), "rb") as f:
        raw = f.read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load():
    xs = {}
    for half, prefix in (("train", "train"), ("test", "t10k")):
        x = read_idx(f"{prefix}-images-idx3-ubyte.gz").astype(np.float32) / 255.0
        y = read_idx(f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
        xs[half] = (x[:, None, :, :], y)
    (xtr, ytr), (xte, yte) = xs["train"], xs["test"]
    keep = np.isin(ytr, TRAIN_IDS)
    train = (xtr[keep], ytr[keep])
    ev_tr, ev_te = np.isin(ytr, EVAL_IDS), np.isin(yte, EVAL_IDS)
    evaluate = (
        np.concatenate([xtr[ev_tr], xte[ev_te]]),
        np.concatenate([ytr[ev_tr], yte[ev_te]]),
    )
    return train, evaluate


class FaceNet(nn.Module):
    """specs/triplet.net's `face_net(embedding)`."""

    def __init__(self, embedding=64):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.fc = nn.Linear(64 * 7 * 7, embedding)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = self.fc(torch.flatten(x, 1))
        return F.normalize(x, dim=1)  # l2_normalize


class Siamese(nn.Module):
    """specs/siamese.net: dense(1) on |embed(x1) - embed(x2)|."""

    def __init__(self, embedding=64, joint=False, head="abs"):
        super().__init__()
        self.head = head
        self.embed = FaceNet(embedding)
        self.logit = nn.Linear(embedding, 1)
        self.joint = joint

    def forward(self, x1, x2):
        if self.joint:
            e = self.embed(torch.cat([x1, x2]))
            e1, e2 = e[: len(x1)], e[len(x1) :]
        else:
            e1, e2 = self.embed(x1), self.embed(x2)
        d = (e1 - e2).abs() if self.head == "abs" else (e1 - e2) ** 2
        return self.logit(d).squeeze(1)


def he_init(model):
    """netc's `Weights::init`: N(0, 2 / fan_in) for conv and dense weights, zero biases."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / m.weight[0].numel()))
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def pk_batches(labels, p, k, rng, decks):
    """One epoch of P x K batches as `verify::PkSampler::epoch` makes them (identities taken
    in turn from shuffled queues, each identity's samples dealt from a reshuffled deck)."""
    ids = sorted(set(labels.tolist()))
    n = len(labels)
    count = max(n // (p * k), 1)
    queue = []
    out = []
    for _ in range(count):
        chosen = []
        deferred = []
        while len(chosen) < p:
            if not queue:
                queue = list(rng.permutation(ids))
            i = queue.pop(0)
            (deferred if i in chosen else chosen).append(i)
        queue = deferred[::-1] + queue if deferred else queue
        batch = []
        for i in chosen:
            deck = decks[i]
            for _ in range(k):
                if deck["at"] == len(deck["order"]):
                    deck["order"] = rng.permutation(deck["all"])
                    deck["at"] = 0
                batch.append(deck["order"][deck["at"]])
                deck["at"] += 1
        out.append(np.array(batch))
    return out


def pairwise_distance_matrix(e):
    """d[a, x] = ||e[a] - e[x] + eps||, PyTorch's pairwise_distance from the anchor's side."""
    diff = e[:, None, :] - e[None, :, :] + EPS
    return diff.pow(2).sum(-1).sqrt()


def batch_hard(e, y):
    """Anchor, hardest positive, hardest negative for every anchor (lowest index on ties)."""
    d = pairwise_distance_matrix(e)
    same = y[:, None] == y[None, :]
    eye = torch.eye(len(y), dtype=torch.bool)
    dp = d.masked_fill(~same | eye, -1.0)
    dn = d.masked_fill(same, float("inf"))
    return torch.arange(len(y)), dp.argmax(1), dn.argmin(1)


def train_triplet(model, train, epochs, seed, mining, log):
    x, y = torch.from_numpy(train[0]), torch.from_numpy(train[1])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(seed)
    decks = {
        i: {"all": np.flatnonzero(train[1] == i), "order": [], "at": 0}
        for i in TRAIN_IDS
    }
    seconds = 0.0
    for epoch in range(epochs):
        batches = pk_batches(train[1], 7, 4, rng, decks)
        t0 = time.perf_counter()
        total = 0.0
        for idx in batches:
            xb, yb = x[idx], y[idx]
            if mining == "train":
                model.train()
                e = model(xb)
                with torch.no_grad():
                    a, p, n = batch_hard(e, yb)
                loss = F.triplet_margin_loss(e[a], e[p], e[n], margin=0.2)
            else:
                # Mine on an inference-mode (`netc`, `eval-joint`) or training-mode
                # (`train-separate`) embedding without gradient, then forward the chosen rows:
                # three training-mode forwards (`netc`, `train-separate`) or one (`eval-joint`).
                model.train(mining == "train-separate")
                with torch.no_grad():
                    a, p, n = batch_hard(model(xb), yb)
                model.train()
                if mining == "eval-joint":
                    e = model(torch.cat([xb[a], xb[p], xb[n]]))
                    ea, ep, en = e.chunk(3)
                else:
                    ea, ep, en = model(xb[a]), model(xb[p]), model(xb[n])
                loss = F.triplet_margin_loss(ea, ep, en, margin=0.2)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
        seconds += time.perf_counter() - t0
        log(epoch, total / len(batches))
    return seconds


def train_pairs(x_all, y_all, rng, batch, order):
    """Pairs for one epoch: each sample of `order` with a partner of its identity (even
    positions) or another identity (odd positions)."""
    by_id = {i: np.flatnonzero(y_all == i) for i in TRAIN_IDS}
    out = []
    for b in range(len(order) // batch):
        rows = []
        for k, i in enumerate(order[b * batch : (b + 1) * batch]):
            mine = by_id[y_all[i]]
            if k % 2 == 0:
                j = i
                while j == i:
                    j = mine[rng.integers(len(mine))]
                rows.append((i, j, 1.0))
            else:
                while True:
                    j = rng.integers(len(y_all))
                    if y_all[j] != y_all[i]:
                        break
                rows.append((i, j, 0.0))
        out.append(np.array(rows))
    return out


def mined_pairs(model, x, y, idx):
    """Pairs of a P x K batch: each anchor with its hardest positive (same) and its hardest
    negative (different), by the inference-mode embedding's distances."""
    model.eval()
    with torch.no_grad():
        a, p, n = batch_hard(model.embed(x[idx]), torch.from_numpy(y[idx]))
    model.train()
    a, p, n = idx[a.numpy()], idx[p.numpy()], idx[n.numpy()]
    return np.concatenate([np.stack([a, p, np.ones(len(a))], 1),
                           np.stack([a, n, np.zeros(len(a))], 1)])


def train_siamese(model, train, epochs, seed, log, pairs="random", lr=1e-3):
    x, y = torch.from_numpy(train[0]), train[1]
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    decks = {i: {"all": np.flatnonzero(y == i), "order": [], "at": 0} for i in TRAIN_IDS}
    seconds = 0.0
    for epoch in range(epochs):
        if pairs == "random":
            batches = train_pairs(x, y, rng, 32, rng.permutation(len(y)))
        else:
            batches = pk_batches(y, 7, 4, rng, decks)
        t0 = time.perf_counter()
        model.train()
        total = 0.0
        for rows in batches:
            if pairs != "random":
                rows = mined_pairs(model, x, y, rows)
            i, j = rows[:, 0].astype(np.int64), rows[:, 1].astype(np.int64)
            t = torch.from_numpy(rows[:, 2].astype(np.float32))
            loss = F.binary_cross_entropy_with_logits(model(x[i], x[j]), t)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
        seconds += time.perf_counter() - t0
        log(epoch, total / len(batches))
    return seconds


def eval_pairs(labels, per_identity, seed):
    """Balanced pairs as `verify::eval_pairs`: per_identity x I same pairs (identities in
    turn) and per_identity different pairs with each identity first."""
    rng = np.random.default_rng(seed + 1_000_003)
    ids = sorted(set(labels.tolist()))
    groups = {i: np.flatnonzero(labels == i) for i in ids}
    pairs = []
    for t in range(per_identity * len(ids)):
        s = groups[ids[t % len(ids)]]
        i, j = rng.choice(len(s), 2, replace=False)
        pairs.append((s[i], s[j], True))
    for g in ids:
        others = np.flatnonzero(labels != g)
        for _ in range(per_identity):
            pairs.append((rng.choice(groups[g]), rng.choice(others), False))
    return pairs


def figures(scores, same):
    """Accuracy at the best threshold and ROC AUC, scores higher = same."""
    fpr, tpr, _ = roc_curve(same, scores, drop_intermediate=False)
    pos, neg = int(np.sum(same)), int(np.sum(~same))
    acc = np.max(tpr * pos + (1 - fpr) * neg) / (pos + neg)
    return float(acc), float(roc_auc_score(same, scores))


@torch.no_grad()
def evaluate(model, evaluate_set, recipe, seed):
    x, y = torch.from_numpy(evaluate_set[0]), evaluate_set[1]
    pairs = eval_pairs(y, 500, seed)
    i = torch.tensor([p[0] for p in pairs])
    j = torch.tensor([p[1] for p in pairs])
    same = np.array([p[2] for p in pairs])
    model.eval()
    if recipe == "triplet":
        e = torch.cat([model(x[k : k + 512]) for k in range(0, len(x), 512)])
        d = (e[i] - e[j] + EPS).pow(2).sum(1).sqrt()
        return figures(-d.numpy(), same)
    s = torch.cat(
        [torch.sigmoid(model(x[i[k : k + 512]], x[j[k : k + 512]])) for k in range(0, len(i), 512)]
    )
    return figures(s.numpy(), same)


def run_torch(recipe, args, seed, train, evaluate_set, quiet):
    torch.manual_seed(seed)
    model = FaceNet(64) if recipe == "triplet" else Siamese(64, args.siamese_forward == "joint", args.head)
    if args.init == "he":
        he_init(model)
    curve = []

    def log(epoch, loss):
        acc, auc = evaluate(model, evaluate_set, recipe, seed)
        curve.append((round(loss, 4), round(acc, 4), round(auc, 4)))
        if not quiet:
            print(f"  torch {recipe} seed {seed} epoch {epoch + 1}: loss {loss:.4f} "
                  f"acc {acc:.4f} auc {auc:.4f}", flush=True)

    if recipe == "triplet":
        seconds = train_triplet(model, train, args.epochs, seed, args.mining, log)
    else:
        seconds = train_siamese(model, train, args.epochs, seed, log, args.pairs, args.lr)
    return {"accuracy": curve[-1][1], "auc": curve[-1][2], "seconds": round(seconds, 1),
            "curve": curve}


def run_netc(recipe, args, seed):
    exe = os.path.join(ROOT, "target", "release", "netc")
    cmd = [exe, "train", f"specs/{recipe}.net", "--epochs", str(args.epochs), "--threads",
           str(THREADS), "--seed", str(seed), "--save", f"/tmp/netc-verification-{recipe}.safetensors"]
    cmd += args.netc_args.split() if args.netc_args else []
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": out.stderr.strip()[-500:], "command": " ".join(cmd[1:])}
    last = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    m = json.loads(last[-1]) if last else {}
    return {"accuracy": m.get("verification_accuracy"), "auc": m.get("auc"),
            "seconds": round(m["seconds"], 1) if "seconds" in m else None,
            "command": "netc " + " ".join(cmd[1:])}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipe", default="both", choices=["triplet", "siamese", "both"])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--init", default="torch", choices=["torch", "he"])
    ap.add_argument("--mining", default="train",
                    choices=["train", "netc", "train-separate", "eval-joint"])
    ap.add_argument("--threads", type=int, default=THREADS)
    ap.add_argument("--siamese-forward", default="separate", choices=["separate", "joint"])
    ap.add_argument("--head", default="abs", choices=["abs", "sq"],
                    help="siamese head on |f(x1) - f(x2)| (siamese.net) or its square")
    ap.add_argument("--lr", type=float, default=1e-3, help="siamese: Adam's learning rate")
    ap.add_argument("--pairs", default="random", choices=["random", "batch-hard"])
    ap.add_argument("--netc", action="store_true", help="also run netc (target/release/netc)")
    ap.add_argument("--netc-args", default="", help="extra arguments for netc train")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    train, evaluate_set = load()
    recipes = ["triplet", "siamese"] if args.recipe == "both" else [args.recipe]
    results = []
    for recipe in recipes:
        for seed in [int(s) for s in args.seeds.split(",")]:
            r = {"recipe": recipe, "seed": seed, "init": args.init,
                 "mining": args.mining if recipe == "triplet" else None,
                 "siamese_forward": args.siamese_forward if recipe == "siamese" else None,
                 "torch": run_torch(recipe, args, seed, train, evaluate_set, args.quiet)}
            if args.netc:
                r["netc"] = run_netc(recipe, args, seed)
            print(json.dumps(r), flush=True)
            results.append(r)
    print()
    print("| recipe | seed | PyTorch acc | AUC | s | netc acc | AUC | s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        t, n = r["torch"], r.get("netc", {})
        fmt = lambda v, d=3: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
        print(f"| {r['recipe']} | {r['seed']} | {fmt(t['accuracy'])} | {fmt(t['auc'])} | "
              f"{fmt(t['seconds'], 1)} | {fmt(n.get('accuracy'))} | {fmt(n.get('auc'))} | "
              f"{fmt(n.get('seconds'), 1)} |")


if __name__ == "__main__":
    sys.exit(main())
