"""Save a PyTorch MLP before and after five Adam steps with its first layer frozen.

    python examples/diff_frozen_first_layer.py      # writes before.pt and after.pt
    graft diff before.pt after.pt --tensors
"""

import torch

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(784, 500), torch.nn.ReLU(),
                            torch.nn.Linear(500, 503), torch.nn.ReLU(), torch.nn.Linear(503, 10))
model[0].requires_grad_(False)
torch.save(model.state_dict(), "before.pt")
opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], 1e-3)
x, y = torch.randn(64, 784), torch.randint(0, 10, (64,))
for _ in range(5):
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
torch.save(model.state_dict(), "after.pt")
