"""PyTorch reference data for netc's mini_resnet on 2x2 inputs (tests/data/reference/mini_resnet_2x2).

At 2x2, layer2's first 3x3 stride-2 conv sees only four of its nine taps and the convs after it
see 1x1 maps (only the centre tap): netc crops such kernels, and this case checks the cropped
forward, gradients and optimizer steps against PyTorch, which convolves the full kernels.

Run with a Python that has torch, torchvision, numpy and safetensors, pointing at the folder of
the shared reference script (`make_reference.py`, which defines MiniResNet and writes the files):
    python scripts/make_small_maps_reference.py ../shared/reference tests/data/reference
"""
import sys

import torch

sys.path.insert(0, sys.argv[1])
import make_reference as ref  # noqa: E402

g = torch.Generator().manual_seed(5)
torch.manual_seed(13)
n = 8
m = ref.MiniResNet()
ref.randomize_bn(m, g)
ref.save_case(sys.argv[2], "mini_resnet_2x2", m, torch.randn(n, 3, 2, 2, generator=g),
              torch.randint(0, 10, (n,), generator=g),
              "mini_resnet on 3x2x2 inputs: layer2 sees 1x1 maps, so netc crops its 3x3 kernels")
