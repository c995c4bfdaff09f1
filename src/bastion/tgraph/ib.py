"""OTGNet's information bottleneck: a class-agnostic encoder trained with CLUB and MINE (spec otgnet.md).

``z = L2(relu(L1 x))`` (100 -> 100 -> 100 in the paper). After every main step the encoder takes one
Adam step on ``CLUB(z; y) - beta * MINE(x; z)`` (``beta = 0.3``): the mutual information between the
code and the one-hot class over the classes seen so far is pushed down (CLUB's sampled upper bound;
Cheng et al., ICML 2020) while the information kept about the input is pushed up (MINE's
Donsker-Varadhan lower bound; Belghazi et al., ICML 2018). The estimators themselves are fitted (one
Adam step each) only in epochs 0-9 of each task; every step is skipped when an estimate's magnitude
exceeds 1,000; CLUB's output layers are rebuilt when the number of classes grows. As in the official
code the IB parameters are not in the main optimiser.

CLUB: ``q(y|z) = N(mu(z), diag(exp(l(z))))`` with ``mu`` an MLP to ``C`` and ``l = tanh(MLP)``; the
estimate is ``1/2 mean_i sum_d [(mu_i - y_pi(i))^2 - (mu_i - y_i)^2] / (exp(l_i) + 1e-6)`` for a random
permutation ``pi``; fitted by maximising ``sum_d [-(mu - y)^2 / (exp(l) + 1e-6) - l]``. MINE: a critic
``T`` (an MLP on ``[x || z]``), estimate ``mean T(x, z) - log mean exp T(x, z_sigma)`` with ``sigma``
drawn with replacement, fitted by maximising it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..core.checks import check_float, check_int

__all__ = ["CLUB", "MINE", "InformationBottleneck"]


def _mlp(a: int, hidden: int, b: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(a, hidden), nn.ReLU(), nn.Linear(hidden, b))


class CLUB(nn.Module):
    """Sampled CLUB upper bound on ``I(z; y)`` with a Gaussian variational ``q(y | z)``."""

    def __init__(self, z_dim: int, y_dim: int, hidden: int = 100) -> None:
        super().__init__()
        self.z_dim, self.hidden = check_int(z_dim, "z_dim", minimum=1), check_int(hidden, "hidden", minimum=1)
        self.mu = _mlp(z_dim, hidden, check_int(y_dim, "y_dim", minimum=1))
        self.logvar = _mlp(z_dim, hidden, y_dim)

    @property
    def y_dim(self) -> int:
        return self.mu[-1].out_features

    def grow(self, y_dim: int) -> None:
        """Rebuild the output layers for ``y_dim`` classes (the official code does so when classes arrive)."""
        if y_dim != self.y_dim:
            self.mu[-1] = nn.Linear(self.hidden, y_dim)
            self.logvar[-1] = nn.Linear(self.hidden, y_dim)

    def _moments(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mu(z), torch.tanh(self.logvar(z))

    def log_likelihood(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        mu, lv = self._moments(z)
        return (-((mu - y) ** 2) / (lv.exp() + 1e-6) - lv).sum(1).mean()

    def forward(self, z: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        mu, lv = self._moments(z)
        perm = torch.randperm(len(z), generator=generator)
        pos = -((mu - y) ** 2) / (lv.exp() + 1e-6)
        neg = -((mu - y[perm]) ** 2) / (lv.exp() + 1e-6)
        return (pos.sum(1) - neg.sum(1)).mean() / 2


class MINE(nn.Module):
    """Donsker-Varadhan lower bound on ``I(x; z)`` with an MLP critic on ``[x || z]``."""

    def __init__(self, x_dim: int, z_dim: int, hidden: int = 100) -> None:
        super().__init__()
        self.critic = _mlp(check_int(x_dim, "x_dim", minimum=1) + check_int(z_dim, "z_dim", minimum=1), hidden, 1)

    def forward(self, x: torch.Tensor, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        idx = torch.randint(0, len(z), (len(z),), generator=generator)  # marginal samples, with replacement
        joint = self.critic(torch.cat([x, z], 1)).mean()
        marg = self.critic(torch.cat([x, z[idx]], 1)).squeeze(1)
        return joint - (torch.logsumexp(marg, 0) - math.log(len(marg)))


class InformationBottleneck(nn.Module):
    """The class-agnostic encoder and its two estimators; call it like a layer, ``update`` after main steps."""

    def __init__(
        self,
        dim: int,
        num_classes: int = 1,
        *,
        hidden: int = 100,
        beta: float = 0.3,
        lr: float = 5e-3,
        estimator_epochs: int = 10,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.dim = check_int(dim, "dim", minimum=1)
        self.encoder = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        self.club = CLUB(dim, check_int(num_classes, "num_classes", minimum=1), hidden)
        self.mine = MINE(dim, dim, hidden)
        self.beta = check_float(beta, "beta", minimum=0)
        self.lr = check_float(lr, "lr", minimum=0, min_inclusive=False)
        self.estimator_epochs = check_int(estimator_epochs, "estimator_epochs", minimum=0)
        self.gen = torch.Generator().manual_seed(check_int(seed, "seed", minimum=0))
        self._opt_enc = torch.optim.Adam(self.encoder.parameters(), lr=lr)
        self._opt_club = torch.optim.Adam(self.club.parameters(), lr=lr)
        self._opt_mine = torch.optim.Adam(self.mine.parameters(), lr=lr)
        self.skipped = 0

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.encoder(h)

    def set_classes(self, num_classes: int) -> None:
        """Grow CLUB's outputs to ``num_classes`` (and restart its optimiser) when new classes arrive."""
        if num_classes != self.club.y_dim:
            self.club.grow(num_classes)
            self._opt_club = torch.optim.Adam(self.club.parameters(), lr=self.lr)

    def update(self, x: torch.Tensor, labels: torch.Tensor, *, epoch: int) -> dict[str, float]:
        """One IB step on inputs ``x`` (detached) and their class labels; returns the estimates."""
        if len(x) < 2:
            return {"club": float("nan"), "mine": float("nan")}
        x = x.detach()
        y = F.one_hot(labels.long(), self.club.y_dim).float()
        if epoch < self.estimator_epochs:  # fit the estimators on the current code
            z = self.encoder(x).detach()
            nll = -self.club.log_likelihood(z, y)
            mi = self.mine(x, z, self.gen)
            if abs(float(nll.detach())) <= 1000:
                self._opt_club.zero_grad(set_to_none=True)
                nll.backward()
                self._opt_club.step()
            else:
                self.skipped += 1
            if abs(float(mi.detach())) <= 1000:
                self._opt_mine.zero_grad(set_to_none=True)
                (-mi).backward()
                self._opt_mine.step()
            else:
                self.skipped += 1
        z = self.encoder(x)
        club, mine = self.club(z, y, self.gen), self.mine(x, z, self.gen)
        loss = club - self.beta * mine
        out = {"club": float(club.detach()), "mine": float(mine.detach())}
        if abs(out["club"]) <= 1000 and abs(out["mine"]) <= 1000:
            self._opt_enc.zero_grad(set_to_none=True)
            loss.backward()
            self._opt_enc.step()
        else:
            self.skipped += 1
        return out
