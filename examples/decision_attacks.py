"""Hard-label attacks on one engine: HSJA, QEBA, NonLinear-BA, PSBA and a probe sampler of your own.

Every method is the HSJA loop given a different probe sampler. The NonLinear-BA and PSBA generators
are trained once on the input gradients of *other* zoo models (1-2 minutes each), then cached.

Run: .venv/bin/python examples/decision_attacks.py
"""

import torch

from bastion import zoo
from bastion.attacks.decision import (
    HSJA,
    nonlinear_ba,
    psba,
    psba_scale_search,
    qeba,
    zoo_generator,
)
from bastion.core.report import markdown_table
from bastion.data import load_dataset

torch.set_num_threads(1)
target = zoo.load("mnist5k-cnn")
test = load_dataset("mnist5k", "test")
right = (target.predict(test.images[:100]) == test.labels[:100]).nonzero().flatten()
x, y = test.images[right[:6]], test.labels[right[:6]]  # attacked digits
xv, yv = test.images[right[6:12]], test.labels[right[6:12]]  # validation digits for PSBA's scale


class LowRankSampler:
    """A user's sampler: any callable (n, shape, generator) -> (n, *shape) unit directions."""

    def __init__(self, k: int = 64) -> None:
        self.basis = torch.linalg.qr(torch.randn(784, k, generator=torch.Generator().manual_seed(0)))[0].T

    def __call__(self, n, shape, generator):
        v = torch.randn(n, self.basis.shape[0], generator=generator) @ self.basis
        return (v / v.norm(dim=1, keepdim=True)).view(n, *shape)


ae, _ = zoo_generator("ae")  # NonLinear-BA's auto-encoder on the zoo MLP's and wide net's gradients
pgan, _ = zoo_generator("pgan")  # PSBA's progressive GAN 7 -> 14 -> 28
search = psba_scale_search(pgan, target.net, xv, yv, budget=300, preprocess=target.preprocess)
print(f"PSBA scale {search.scale}: median MSE by scale {search.median_mse} ({search.queries} queries)")

attacks = {
    "HSJA": HSJA(seed=0),
    "QEBA-F": qeba(subspace="frequency", ratio=2, seed=0),
    "NLBA-AE": nonlinear_ba(ae, seed=0),
    f"PSBA @{search.scale}": psba(pgan, scale=search.scale, seed=0),
    "own sampler": HSJA(sampler=LowRankSampler(), seed=0),
}
rows = []
for name, attack in attacks.items():
    r = attack(target.net, x, y, budget=1000, preprocess=target.preprocess)
    rows.append({"method": name, "success": int(r.success.sum()), "median MSE @500": r.median_mse_at(500),
                 "median MSE @1000": r.median_mse_at(1000), "max queries": int(r.queries.max())})  # fmt: skip
print(markdown_table(rows))
