"""Reference cases for netc's augmentation transforms, computed by torchvision.

Run: /work/torch-venv/bin/python tests/data/augment/make_cases.py   (from the repo root)
(torch 2.14.1, torchvision 0.29.2). Writes tests/data/augment/cases.json: byte images
(values k/255, planar [C, H, W]), and for each case the transform, its explicit parameters
and torchvision's output (float, 6 decimals). tests/augment_torchvision.rs applies netc's
`data::transform` functions with the same parameters and checks every pixel within 1/255.
"""

import json
import os

import torch
import torchvision.transforms.functional as F
from torchvision.transforms import InterpolationMode, RandomResizedCrop

BIL = InterpolationMode.BILINEAR
# AlexNet / fb.resnet.torch's ImageNet PCA (eigvec columns are the eigenvectors).
EIGVAL = torch.tensor([0.2175, 0.0188, 0.0045], dtype=torch.float64)
EIGVEC = torch.tensor(
    [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]],
    dtype=torch.float64,
)

g = torch.Generator().manual_seed(16)
images = {
    "rgb": torch.randint(0, 256, (3, 13, 17), generator=g, dtype=torch.uint8),
    "gray": torch.randint(0, 256, (1, 9, 11), generator=g, dtype=torch.uint8),
    # Four levels per channel: many pixels whose largest channels tie, and gray ones (the
    # branches of RGB -> HSV).
    "ties": torch.randint(0, 4, (3, 6, 5), generator=g, dtype=torch.uint8) * 85,
}


def as_float(name):
    return images[name].to(torch.float32) / 255.0


def color(img, op, f):
    return {
        "brightness": F.adjust_brightness,
        "contrast": F.adjust_contrast,
        "saturation": F.adjust_saturation,
        "hue": F.adjust_hue,
    }[op](img, f)


cases = []


def add(image, op, params, out):
    cases.append(
        {
            "image": image,
            "op": op,
            "params": params,
            "shape": list(out.shape),
            "output": [round(float(v), 6) for v in out.flatten()],
        }
    )


for name in ["rgb", "gray"]:
    x = as_float(name)
    c, h, w = x.shape
    fill = [0.0] * c
    add(name, "hflip", {}, F.hflip(x))
    add(name, "vflip", {}, F.vflip(x))
    # RandomCrop(size, padding): pad with zeros, crop.
    for pad, top, left, ch, cw in [(3, 1, 5, h, w), (2, 0, 4, h - 5, w - 6), (1, 2, 2, h, w)]:
        out = F.crop(F.pad(x, [pad], fill=0), top, left, ch, cw)
        add(name, "pad_crop", {"pad": pad, "top": top, "left": left, "size": [ch, cw]}, out)
    # A crop of another size, resized back to the input size (netc's random_crop(size)).
    out = F.resize(F.crop(F.pad(x, [2], fill=0), 1, 3, h - 3, w - 5), [h, w], BIL, antialias=True)
    add(name, "pad_crop_resize", {"pad": 2, "top": 1, "left": 3, "size": [h - 3, w - 5]}, out)
    # resized_crop: enlarging and shrinking, with and without antialiasing.
    for top, left, ch, cw, oh, ow in [(2, 3, 5, 7, h, w), (0, 1, h, w - 2, 5, 4), (1, 0, h - 2, w, h + 3, 6)]:
        for aa in [False, True]:
            out = F.resized_crop(x, top, left, ch, cw, [oh, ow], BIL, antialias=aa)
            add(
                name,
                "resized_crop",
                {"top": top, "left": left, "size": [ch, cw], "out": [oh, ow], "antialias": aa},
                out,
            )
    for angle in [17.5, -33.0, 90.0]:
        add(name, "rotate", {"angle": angle}, F.rotate(x, angle, BIL, fill=fill))
    for angle, tr, sc, sh in [(12.0, [2, -1], 1.1, [8.0, -5.0]), (-25.0, [0, 0], 0.8, [15.0, 0.0]), (0.0, [-3, 2], 1.3, [0.0, 20.0])]:
        out = F.affine(x, angle=angle, translate=tr, scale=sc, shear=sh, interpolation=BIL, fill=fill)
        add(name, "affine", {"angle": angle, "translate": tr, "scale": sc, "shear": sh}, out)
    for op, fs in [("brightness", [1.3, 0.6]), ("contrast", [1.5, 0.4]), ("saturation", [1.7, 0.2]), ("hue", [0.13, -0.37])]:
        for f in fs:
            add(name, "color", {"ops": [[op, f]]}, color(x, op, f))
    # ColorJitter's random order: the four adjustments in a given order.
    ops = [["hue", 0.21], ["brightness", 1.2], ["saturation", 0.5], ["contrast", 1.4]]
    out = x
    for op, f in ops:
        out = color(out, op, f)
    add(name, "color", {"ops": ops}, out)
    if c == 3:
        for alpha in [[0.05, -0.12, 0.2], [-0.3, 0.1, 0.0]]:
            rgb = (EIGVEC * torch.tensor(alpha, dtype=torch.float64) * EIGVAL).sum(1)
            out = (x.double() + rgb.view(3, 1, 1)).float()
            add(name, "pca_lighting", {"alpha": alpha}, out)

x = as_float("ties")
for op, f in [("hue", 0.3), ("hue", -0.45), ("saturation", 1.8), ("contrast", 0.3)]:
    add("ties", "color", {"ops": [[op, f]]}, color(x, op, f))

# RandomResizedCrop.get_params where no random window fits (the central fallback) or the only
# one is the whole image: deterministic, so torchvision's answer is netc's.
windows = []
for h, w, scale, ratio in [
    (20, 4, [0.9, 1.0], [3.0, 4.0]),
    (4, 20, [0.9, 1.0], [0.2, 0.25]),
    (13, 17, [1.0, 1.0], [0.5, 0.6]),
    (13, 17, [1.0, 1.0], [2.0, 3.0]),
    (5, 7, [1.0, 1.0], [1.4, 1.4]),
]:
    window = RandomResizedCrop.get_params(torch.zeros(1, h, w), scale, ratio)
    windows.append({"size": [h, w], "scale": scale, "ratio": ratio, "window": list(window)})

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "cases.json"), "w") as f:
    json.dump(
        {
            "torch": torch.__version__,
            "images": {k: {"shape": list(v.shape), "bytes": v.flatten().tolist()} for k, v in images.items()},
            "cases": cases,
            "windows": windows,
        },
        f,
        separators=(",", ":"),
    )
print(f"{len(cases)} cases")
