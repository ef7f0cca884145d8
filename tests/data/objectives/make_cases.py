"""PyTorch reference cases for netc's training objectives (`train { loss: ... }`).

Run from the repository root (needs torch and safetensors; CI does not, it reads the files):

    /work/torch-venv/bin/python tests/data/objectives/make_cases.py

For each case it writes, beside this script, `<case>.net` (a small spec whose `loss:` is the
objective under test) and `<case>.safetensors` holding

    param/<path>     every parameter and buffer, named as netc names them (PyTorch's
                     state_dict paths, so the weights map 1:1)
    input/<name>     the model's inputs
    target/<name>    the objective's target inputs (`targets:<output>`, `same`), named as netc's
                     `Term::target_input` names them; cross-entropy targets are one-hot [N, K]
    loss             the objective's value, shape [1]
    stat/<path>      a batchnorm's running statistics after the forward pass (training mode)
    batches/<path>   its num_batches_tracked after it (the number of applications)
    grad/<path>      d loss / d parameter, by torch.autograd, for every trainable parameter the
                     objective reaches (a head no term reads has none)

The models are written functionally (F.conv2d, F.linear, F.batch_norm in training mode) over a
dict of parameters keyed by those paths, mirroring the spec text line by line. Parameters,
inputs and targets are f32 values (seeded); the forward and backward passes run in float64 on
them, so the stored loss and gradients are the exact answer rounded once to f32. `tests/
objective_grads.rs` checks netc against these.
"""

import math
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
N = 6  # batch


class Case:
    def __init__(self, name, seed):
        self.name = name
        self.gen = torch.Generator().manual_seed(seed)
        self.params = {}  # path -> f64 tensor (trainable ones require grad)
        self.buffers = {}  # path -> tensor, updated by the forward pass
        self.initial = {}  # path -> the running statistics before it
        self.inputs = {}
        self.targets = {}

    def rand(self, *shape, scale=1.0):
        """Uniform in [-scale, scale), rounded to f32 and held in f64."""
        t = (torch.rand(*shape, generator=self.gen, dtype=torch.float64) * 2 - 1) * scale
        return t.float().double()

    def normal(self, *shape):
        return torch.randn(*shape, generator=self.gen, dtype=torch.float64).float().double()

    def param(self, path, *shape, fan_in=None, scale=None):
        if scale is None:
            scale = 1.0 / math.sqrt(fan_in)
        t = self.rand(*shape, scale=scale).requires_grad_(True)
        self.params[path] = t
        return t

    # ---- layers, each creating its parameters on first use (PyTorch's default init ranges) ----

    def conv(self, name, x, out, k, pad=0, bias=True):
        cin = x.shape[1]
        fan = cin * k * k
        w = self.params.get(f"{name}.weight")
        if w is None:
            w = self.param(f"{name}.weight", out, cin, k, k, fan_in=fan)
            if bias:
                self.param(f"{name}.bias", out, fan_in=fan)
        b = self.params.get(f"{name}.bias")
        return F.conv2d(x, w, b, padding=pad)

    def dense(self, name, x, out):
        fan = x.shape[1]
        w = self.params.get(f"{name}.weight")
        if w is None:
            w = self.param(f"{name}.weight", out, fan, fan_in=fan)
            self.param(f"{name}.bias", out, fan_in=fan)
        return F.linear(x, w, self.params[f"{name}.bias"])

    def batchnorm(self, name, x):
        """Training mode: batch statistics; the running statistics are updated in place."""
        c = x.shape[1]
        if f"{name}.weight" not in self.params:
            w = (1 + 0.2 * self.rand(c)).requires_grad_(True)
            b = (0.2 * self.rand(c)).requires_grad_(True)
            self.params[f"{name}.weight"] = w
            self.params[f"{name}.bias"] = b
            self.buffers[f"{name}.running_mean"] = torch.zeros(c, dtype=torch.float64)
            self.buffers[f"{name}.running_var"] = torch.ones(c, dtype=torch.float64)
            self.buffers[f"{name}.num_batches_tracked"] = torch.zeros((), dtype=torch.int64)
            self.initial[f"{name}.running_mean"] = torch.zeros(c, dtype=torch.float64)
            self.initial[f"{name}.running_var"] = torch.ones(c, dtype=torch.float64)
        # PyTorch updates the buffers in place, once per call. netc normalizes the applications
        # of one shared module together (one batch of all of them, one update per step), so the
        # shared models here call their embedding once on the inputs joined (`torch.cat`).
        self.buffers[f"{name}.num_batches_tracked"] += 1
        return F.batch_norm(
            x,
            self.buffers[f"{name}.running_mean"],
            self.buffers[f"{name}.running_var"],
            self.params[f"{name}.weight"],
            self.params[f"{name}.bias"],
            training=True,
            momentum=0.1,
            eps=1e-5,
        )

    # ---- data ----

    def input(self, name, *shape):
        t = self.rand(N, *shape)
        self.inputs[name] = t
        return t

    def one_hot(self, name, k):
        labels = torch.randint(0, k, (N,), generator=self.gen)
        self.targets[name] = F.one_hot(labels, k).double()
        return labels

    def target(self, name, t):
        self.targets[name] = t.float().double()
        return self.targets[name]

    def save(self, spec, loss):
        grads = torch.autograd.grad(loss, list(self.params.values()), allow_unused=True)
        tensors = {}
        for path, t in self.params.items():
            tensors[f"param/{path}"] = t.detach().clone()
        for path, t in self.buffers.items():
            if path.endswith("num_batches_tracked"):
                tensors[f"param/{path}"] = torch.zeros((), dtype=torch.int64)
                tensors[f"batches/{path}"] = t.clone()
            else:
                tensors[f"param/{path}"] = self.initial[path]
                tensors[f"stat/{path}"] = t.clone()
        for k, t in self.inputs.items():
            tensors[f"input/{k}"] = t
        for k, t in self.targets.items():
            tensors[f"target/{k}"] = t
        tensors["loss"] = loss.detach().reshape(1)
        for path, g in zip(self.params, grads):
            # A parameter the objective does not reach (another head's) has no gradient in
            # PyTorch, and none in netc.
            if g is not None:
                tensors[f"grad/{path}"] = g
        tensors = {
            k: (v.float() if v.dtype == torch.float64 else v).contiguous()
            for k, v in tensors.items()
        }
        save_file(tensors, os.path.join(HERE, f"{self.name}.safetensors"))
        with open(os.path.join(HERE, f"{self.name}.net"), "w") as f:
            f.write(spec.lstrip())
        used = sum(g is not None for g in grads)
        print(f"{self.name:<14} loss {loss.item():.6f}  {used} of {len(grads)} parameters have gradients")


def gram(f):
    """netc's `loss::gram`: G = F Fᵀ / (C·H·W) per sample, [N, C, C]."""
    n, c, h, w = f.shape
    m = f.reshape(n, c, h * w)
    return m @ m.transpose(1, 2) / (c * h * w)


def contrastive(e1, e2, same, margin):
    """netc's contrastive loss (Hadsell et al. 2006 without the ½, `same` = 1 for a similar
    pair), on PyTorch's `pairwise_distance` (eps 1e-6)."""
    d = F.pairwise_distance(e1, e2)
    return (same * d**2 + (1 - same) * F.relu(margin - d) ** 2).mean()


# ---------------------------------------------------------------------------------------------
# Specs
# ---------------------------------------------------------------------------------------------

# A trunk with three heads: class scores, a box (regression) and multi-label tags. `{trunk}` is
# either a plain conv or conv + batchnorm (training mode).
HEADS = """
// {comment}
model heads(lam: float = 0.3) {{
  input x: [3, 6, 6]
{trunk}
  relu
  flatten
  fc: dense(12)
  hidden = relu
  cls = hidden |> dense(5)
  box = hidden |> dense(4)
  tags = hidden |> dense(3)
  output cls, box, tags
  train {{
    loss: {loss}
  }}
}}
"""

PLAIN_TRUNK = "  c1: conv(4, 3, pad=1)"
BN_TRUNK = "  c1: conv(4, 3, pad=1, bias=false)\n  bn1: batchnorm"


def heads(name, seed, loss_text, comment, loss_fn, bn=False):
    c = Case(name, seed)
    x = c.input("x", 3, 6, 6)
    h = c.conv("c1", x, 4, 3, pad=1, bias=not bn)
    if bn:
        h = c.batchnorm("bn1", h)
    h = F.relu(h).flatten(1)
    h = F.relu(c.dense("fc", h, 12))
    outs = {"cls": c.dense("cls", h, 5), "box": c.dense("box", h, 4), "tags": c.dense("tags", h, 3)}
    # Targets of every kind (only the ones the objective reads are stored).
    t = {
        "cls": F.one_hot(torch.randint(0, 5, (N,), generator=c.gen), 5).double(),
        "box": c.rand(N, 4),
        "tags": (torch.rand(N, 3, generator=c.gen) < 0.5).double(),
    }
    loss = loss_fn(c, outs, t)
    spec = HEADS.format(
        comment=comment, trunk=BN_TRUNK if bn else PLAIN_TRUNK, loss=loss_text
    )
    c.save(spec, loss)


def use(c, t, output):
    """The stored target of `output` (netc's input `targets:<output>`)."""
    return c.target(f"targets:{output}", t[output])


def ce(ls):
    def f(c, o, t):
        y = use(c, t, "cls")
        return F.cross_entropy(o["cls"], y.argmax(1), label_smoothing=ls)

    return f


def mse(c, o, t):
    return F.mse_loss(o["box"], use(c, t, "box"))


def l1(c, o, t):
    return F.l1_loss(o["box"], use(c, t, "box"))


def bce(c, o, t):
    return F.binary_cross_entropy_with_logits(o["tags"], use(c, t, "tags"))


def cls_box(c, o, t):
    return ce(0.0)(c, o, t) + 5 * mse(c, o, t)


def shared_target(c, o, t):
    # mse and l1 on one output read the same targets (netc's one input `targets:box`).
    return ce(0.0)(c, o, t) + mse(c, o, t) + 0.5 * l1(c, o, t)


def three_terms(c, o, t):
    lam = 0.3
    return 0.5 * ce(0.05)(c, o, t) + l1(c, o, t) * 2 + lam * 4 * bce(c, o, t)


# A fully convolutional classifier: its scores are [K, 1, 1].
FCN = """
// Cross-entropy on a fully convolutional classifier's [K, 1, 1] scores.
model fcn {
  input x: [2, 5, 5]
  c1: conv(4, 3)
  relu
  scores = conv(3, 3)
  output scores
  train { loss: cross_entropy(output=scores) }
}
"""


def fcn():
    c = Case("ce_fcn", 11)
    x = c.input("x", 2, 5, 5)
    h = F.relu(c.conv("c1", x, 4, 3))
    s = c.conv("scores", h, 3, 3)
    y = c.one_hot("targets:scores", 3)
    c.save(FCN, F.cross_entropy(s.reshape(N, 3), y))


# One embedding network applied to several inputs (parameters shared, as in a siamese net).
TRIPLET = """
// Triplet margin loss on three outputs of one shared embedding.
model triplet {
  input a: [1, 5, 5]
  input p: [1, 5, 5]
  input n: [1, 5, 5]
  embed = shared seq { conv(3, 3); relu; flatten; dense(4) }
  ea = embed(a)
  ep = embed(p)
  en = embed(n)
  output ea, ep, en
  train { loss: triplet(outputs=[ea, ep, en], margin=0.2) }
}
"""


def embed_small(c, x):
    h = F.relu(c.conv("embed.0", x, 3, 3))
    return c.dense("embed.3", h.flatten(1), 4)


def triplet():
    c = Case("triplet", 21)
    a, p, n = (c.input(k, 1, 5, 5) for k in "apn")
    ea, ep, en = embed_small(c, a), embed_small(c, p), embed_small(c, n)
    c.save(TRIPLET, F.triplet_margin_loss(ea, ep, en, margin=0.2))


VALUE = """
// A loss the body computes (`loss = triplet_loss(...)`, `output loss`), trained as that loss
// (no `loss:` setting: the default objective is the body's loss).
model value {
  input a: [1, 5, 5]
  input p: [1, 5, 5]
  input n: [1, 5, 5]
  embed = shared seq { conv(3, 3); relu; flatten; dense(4) }
  loss = triplet_loss(embed(a), embed(p), embed(n), margin=0.3)
  output loss
}
"""


def value():
    c = Case("value", 31)
    a, p, n = (c.input(k, 1, 5, 5) for k in "apn")
    ea, ep, en = embed_small(c, a), embed_small(c, p), embed_small(c, n)
    c.save(VALUE, F.triplet_margin_loss(ea, ep, en, margin=0.3))


VALUE_WEIGHTED = """
// A loss the body computes, weighted and summed with a term on another output.
model value_weighted {
  input a: [1, 5, 5]
  input p: [1, 5, 5]
  input n: [1, 5, 5]
  embed = shared seq { conv(3, 3); relu; flatten; dense(4) }
  ea = embed(a)
  loss = triplet_loss(ea, embed(p), embed(n), margin=0.3)
  output ea, loss
  train { loss: 0.5 * loss + 0.1 * l1(output=ea) }
}
"""


def value_weighted():
    c = Case("value_weighted", 32)
    a, p, n = (c.input(k, 1, 5, 5) for k in "apn")
    ea, ep, en = embed_small(c, a), embed_small(c, p), embed_small(c, n)
    t = c.target("targets:ea", c.rand(N, 4))
    c.save(VALUE_WEIGHTED, 0.5 * F.triplet_margin_loss(ea, ep, en, margin=0.3) + 0.1 * F.l1_loss(ea, t))


CONTRASTIVE = """
// Contrastive loss on the two outputs of a shared embedding, pair labels in `same`.
model pair {
  input x1: [1, 5, 5]
  input x2: [1, 5, 5]
  embed = shared seq { conv(3, 3); relu; flatten; dense(4) }
  e1 = embed(x1)
  e2 = embed(x2)
  output e1, e2
  train { loss: contrastive(outputs=[e1, e2], margin=MARGIN) }
}
"""


def same_labels(c):
    return c.target("same", torch.tensor([1, 0, 0, 1, 0, 0], dtype=torch.float64))


def pick_margin(e1, e2, same):
    """A margin that some dissimilar pairs are inside of and some beyond (both sides of the
    hinge), away from every distance."""
    d = sorted(F.pairwise_distance(e1, e2)[same == 0].tolist())
    return round((d[len(d) // 2 - 1] + d[len(d) // 2]) / 2, 3)


def pair():
    c = Case("contrastive", 41)
    x1, x2 = c.input("x1", 1, 5, 5), c.input("x2", 1, 5, 5)
    e1, e2 = embed_small(c, x1), embed_small(c, x2)
    same = same_labels(c)
    m = pick_margin(e1, e2, same)
    c.save(CONTRASTIVE.replace("MARGIN", str(m)), contrastive(e1, e2, same, m))


FEATURES = """
// {comment}
model features {{
  input x: [3, 6, 6]
  conv1: conv(4, 3, pad=1)
  f1 = relu
  conv2: conv(5, 3, pad=1)
  f2 = relu
  conv3: conv(6, 3)
  f3 = relu
  output f1, f2, f3
  train {{ loss: {loss} }}
}}
"""


def features(name, seed, loss_text, comment, loss_fn):
    c = Case(name, seed)
    x = c.input("x", 3, 6, 6)
    f1 = F.relu(c.conv("conv1", x, 4, 3, pad=1))
    f2 = F.relu(c.conv("conv2", f1, 5, 3, pad=1))
    f3 = F.relu(c.conv("conv3", f2, 6, 3))
    loss = loss_fn(c, {"f1": f1, "f2": f2, "f3": f3})
    c.save(FEATURES.format(comment=comment, loss=loss_text), loss)


def style_target(c, f):
    """The Gram matrices of another image's features (a style image), one per sample."""
    return c.target(f"targets:{f}", gram(c.rand(N, *STYLE_SHAPES[f]).abs()))


STYLE_SHAPES = {"f1": (4, 6, 6), "f2": (5, 6, 6)}


def style(c, o):
    return F.mse_loss(gram(o["f2"]), style_target(c, "f2"))


def content(c, o):
    return F.mse_loss(o["f3"], c.target("targets:f3", c.rand(N, 6, 4, 4).abs()))


def gatys(c, o):
    # Gatys et al.: content at one layer, style at others, weighted.
    s1 = F.mse_loss(gram(o["f1"]), style_target(c, "f1"))
    s2 = F.mse_loss(gram(o["f2"]), style_target(c, "f2"))
    return content(c, o) + 1000 * s1 + 500 * s2


# Style and content at one layer (as Johnson et al.'s perceptual losses at relu2_2): the content
# term reads a copy of the output (`identity`), whose targets are its own input.
ONE_LAYER = """
// Style and content at the same layer: content on a copy of the output, which takes its own
// targets (netc's inputs `targets:f2` and `targets:f2c`).
model one_layer {
  input x: [3, 6, 6]
  conv1: conv(4, 3, pad=1)
  relu
  conv2: conv(5, 3, pad=1)
  f2 = relu
  f2c = f2 |> identity
  output f2, f2c
  train { loss: 100 * style(output=f2) + content(output=f2c) }
}
"""


def one_layer():
    c = Case("style_content", 12)
    x = c.input("x", 3, 6, 6)
    f1 = F.relu(c.conv("conv1", x, 4, 3, pad=1))
    f2 = F.relu(c.conv("conv2", f1, 5, 3, pad=1))
    s = F.mse_loss(gram(f2), style_target(c, "f2"))
    ct = F.mse_loss(f2, c.target("targets:f2c", c.rand(N, 5, 6, 6).abs()))
    c.save(ONE_LAYER, 100 * s + ct)


SIAMESE = """
// A siamese pair model: a shared embedding with batchnorm (training mode, one set of batch
// statistics over both applications), a head on |e1 - e2| to one logit; contrastive on the embeddings plus
// binary cross-entropy on the logit.
model siamese(margin: float = MARGIN) {
  input x1: [1, 6, 6]
  input x2: [1, 6, 6]
  embed = shared seq { conv(3, 3, bias=false); batchnorm; relu; flatten; dense(5) }
  e1 = embed(x1)
  e2 = embed(x2)
  logit = sub(e1, e2) |> abs |> dense(1)
  output e1, e2, logit
  train { loss: contrastive(outputs=[e1, e2], margin=margin) + 0.5 * bce_with_logits(output=logit) }
}
"""


def siamese():
    c = Case("siamese", 51)
    x1, x2 = c.input("x1", 1, 6, 6), c.input("x2", 1, 6, 6)

    def embed(x):
        h = c.conv("embed.0", x, 3, 3, bias=False)
        h = F.relu(c.batchnorm("embed.1", h)).flatten(1)
        return c.dense("embed.4", h, 5)

    # netc's shared batchnorm sees both applications as one batch: PyTorch's joined forward.
    e1, e2 = embed(torch.cat([x1, x2])).split(N)
    logit = c.dense("logit.1", (e1 - e2).abs(), 1)
    same = same_labels(c)
    m = pick_margin(e1, e2, same)
    t = c.target("targets:logit", same.reshape(N, 1))
    loss = contrastive(e1, e2, same, m) + 0.5 * F.binary_cross_entropy_with_logits(logit, t)
    c.save(SIAMESE.replace("MARGIN", str(m)), loss)


def main():
    # Each loss alone, on a named output of a model with several.
    heads("cross_entropy", 1, "cross_entropy(output=cls)", "Cross-entropy on one of three heads.", ce(0.0))
    heads("ce_smoothing", 2, "cross_entropy(output=cls, label_smoothing=0.1)",
          "Cross-entropy with label smoothing.", ce(0.1))
    heads("mse", 3, "mse(output=box)", "MSE on the box head.", mse)
    heads("l1", 4, "l1(output=box)", "L1 on the box head.", l1)
    heads("bce", 5, "bce_with_logits(output=tags)",
          "Binary cross-entropy with multi-label targets on the tags head.", bce)
    fcn()
    triplet()
    pair()
    features("style", 6, "style(output=f2)", "Gatys' style loss on a conv feature map.", style)
    features("content", 7, "content(output=f3)", "Gatys' content loss.", content)
    value()
    # Weighted combinations over several outputs.
    heads("cls_box", 8, "cross_entropy(output=cls) + 5 * mse(output=box)",
          "A class head and a box head.", cls_box)
    heads("three_terms", 9,
          "0.5 * cross_entropy(output=cls, label_smoothing=0.05) + l1(output=box) * 2 + "
          "lam * 4 * bce_with_logits(output=tags)",
          "Three weighted terms (one weight an expression of a model parameter), batchnorm in "
          "training mode.", three_terms, bn=True)
    heads("shared_target", 13, "cross_entropy(output=cls) + mse(output=box) + 0.5 * l1(output=box)",
          "Two terms on one output share its targets.", shared_target)
    one_layer()
    value_weighted()
    features("gatys", 10, "content(output=f3) + 1000 * style(output=f1) + 500 * style(output=f2)",
             "Gatys' weighted sum: content at one layer, style at two others.", gatys)
    siamese()


if __name__ == "__main__":
    torch.use_deterministic_algorithms(True)
    main()
