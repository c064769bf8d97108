"""PyTorch models with an input size no probe guess hits (3x20x20): for --input-shape."""
from __future__ import annotations

import torch
from torch import nn


class Net(nn.Module):
    """Takes 3x20x20 only: the Linear after the Flatten fixes the size, and no guess hits it."""

    def __init__(self, prefix):
        super().__init__()
        self.add_module(prefix + "conv", nn.Conv2d(3, 8, 3))
        self.add_module(prefix + "fc", nn.Linear(8 * 18 * 18, 4))
        self.prefix = prefix

    def forward(self, x):
        conv, fc = getattr(self, self.prefix + "conv"), getattr(self, self.prefix + "fc")
        return fc(torch.flatten(torch.relu(conv(x)), 1))


def build(prefix="", seed=0):
    torch.manual_seed(int(seed))
    return Net(prefix)
