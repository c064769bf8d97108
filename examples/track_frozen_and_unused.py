"""A PyTorch network with a frozen layer, a layer cut off from the loss and a layer whose
learning rate is effectively zero ("dead"), tracked per batch.

    python examples/track_frozen_and_unused.py      # writes run.wgt in the current folder
    graft track show run.wgt
    graft track plot run.wgt -o report.png
"""

import torch

from weightgraft.torch import WeightTracker

torch.manual_seed(0)


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.frozen = torch.nn.Linear(20, 32)
        self.hidden = torch.nn.Linear(32, 32)
        # Trained with a learning rate of 1e-12: updates too small to matter. (float64, so
        # they are not rounded away to exactly zero as float32 would: that is "never changed")
        self.dead = torch.nn.Linear(32, 32).double()
        self.unused = torch.nn.Linear(32, 32)  # its output never reaches the loss
        self.head = torch.nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.hidden(torch.relu(self.frozen(x))))
        h = torch.relu(self.dead(h.double())).float()
        _ = self.unused(h)
        return self.head(h)


model = Net()
model.frozen.requires_grad_(False)
rest = [p for name, p in model.named_parameters() if not name.startswith("dead.")]
opt = torch.optim.SGD([{"params": rest},
                       {"params": model.dead.parameters(), "lr": 1e-12}], lr=0.05)
x, y = torch.randn(256, 20), torch.randint(0, 3, (256,))
with WeightTracker(model, "run.wgt", every="batch") as tracker:
    tracker.attach(opt)  # records after every optimizer.step()
    for _epoch in range(3):
        for b in range(0, 256, 32):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[b:b + 32]), y[b:b + 32]).backward()
            opt.step()
        tracker.end_epoch()
