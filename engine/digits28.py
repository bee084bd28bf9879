"""`digits28`: scikit-learn's bundled digits upsampled to 28x28, training part augmented to ~5,700 images.

Built offline and reproducibly at load time (no file, no download): the 1,797 8x8 images are split into
train/test exactly as `digits` splits them (so no test image, nor a variant of one, is ever trained on),
upsampled bilinearly to 28x28, and every training image gets three copies under a small random affine
transform (rotation within +-10 degrees, shift within +-2 pixels, scale 0.9-1.1) drawn from a fixed
generator. The result, 5,748 training images, gives a ResNet enough steps per epoch to show the
instability of SGD at initialisation (issue 17; the stability-story preset).
"""
from __future__ import annotations

import math

import numpy as np

from .registry import DATASETS

SIZE = 28
COPIES = 3          # augmented copies per training image, besides the image itself
AUGMENT_SEED = 17


def _upsample(x, size: int = SIZE):
    import torch
    import torch.nn.functional as F

    return F.interpolate(torch.from_numpy(x), size=(size, size), mode="bilinear", align_corners=False)


def _augment(x, copies: int, seed: int):
    """`copies` randomly rotated/shifted/scaled versions of each image of x [N, 1, H, W] (a torch tensor)."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    n = len(x) * copies
    angle = (torch.rand(n, generator=g) * 2 - 1) * math.radians(10)
    scale = 0.9 + torch.rand(n, generator=g) * 0.2
    shift = (torch.rand(n, 2, generator=g) * 2 - 1) * (2 * 2 / x.shape[-1])  # +-2 px in [-1, 1] coordinates
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    src = x.repeat(copies, 1, 1, 1)
    grid = F.affine_grid(theta, list(src.shape), align_corners=False)
    return F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@DATASETS.register("digits28", "scikit-learn's digits upsampled to 28x28, train augmented to 5,748 (offline, "
                   "built reproducibly at load)")
def load_digits28(cfg):
    import torch

    from .data import _digits

    x_tr, x_te, y_tr, y_te = _digits(cfg)
    up_tr, up_te = _upsample(x_tr), _upsample(x_te)
    x_train = torch.cat([up_tr, _augment(up_tr, COPIES, AUGMENT_SEED)]).numpy()
    y_train = np.concatenate([y_tr] * (1 + COPIES))
    return x_train, up_te.numpy(), y_train, y_te
