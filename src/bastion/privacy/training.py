"""A plain minibatch training loop for membership experiments, optionally collecting an ensemble.

It works with any ``torch.optim.Optimizer`` (SGD, the SG-MCMC samplers here, ...): the loss given to
``backward()`` is the minibatch mean cross-entropy, as the samplers expect.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.checks import check_int, check_labels, check_tensor
from .ensemble import PosteriorEnsemble

__all__ = ["logits_of", "train_classifier"]


def train_classifier(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    batch_size: int,
    seed: int = 0,
    ensemble: PosteriorEnsemble | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> nn.Module:
    """Train ``model`` on ``(x, y)`` with seeded shuffles; offer it to ``ensemble`` after each epoch.

    Returns the model (in eval mode).
    """
    check_tensor(x, "x", floating=True)
    check_labels(y, "y", n=x.shape[0])
    check_int(epochs, "epochs", minimum=1)
    check_int(batch_size, "batch_size", minimum=1)
    g = torch.Generator().manual_seed(check_int(seed, "seed", minimum=0))
    n = x.shape[0]
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
        if ensemble is not None:
            ensemble.collect(model)
    model.eval()
    return model


@torch.no_grad()
def logits_of(model: nn.Module, x: torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
    """float64 logits of ``model`` (eval mode) on ``x``, in batches."""
    model.eval()
    return torch.cat([model(x[i : i + batch_size]).to(torch.float64) for i in range(0, len(x), batch_size)])
