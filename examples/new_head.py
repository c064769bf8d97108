"""Transfer learning in one call: a 1000-class network into the same network with a new
5-class head.

    python examples/new_head.py                  # writes out/pretrained_1000.pt
    graft transplant out/pretrained_1000.pt --into examples/new_head.py:five_classes -o out/five.pt
        -> error: the head has no source; it names --allow-missing 'head*'
    graft transplant out/pretrained_1000.pt --into examples/new_head.py:five_classes -o out/five.pt \\
        --allow-missing 'head*' --allow-unused 'head*'
"""

import os

import torch


class Net(torch.nn.Module):
    def __init__(self, classes: int) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
            torch.nn.Conv2d(16, 32, 3, stride=2, padding=1), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        self.head = torch.nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def pretrained() -> Net:
    return Net(1000).eval()


def five_classes() -> Net:
    return Net(5).eval()


if __name__ == "__main__":
    torch.manual_seed(0)
    os.makedirs("out", exist_ok=True)
    torch.save(pretrained().state_dict(), "out/pretrained_1000.pt")
