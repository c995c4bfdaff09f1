"""The Boundary Attack baseline (Brendel, Rauber & Bethge, "Decision-Based Adversarial Attacks", ICLR 2018).

A random walk along the decision boundary: from an adversarial point, an orthogonal step on the
sphere around the original (``spherical_step`` times the distance), then a step towards the original
(``source_step`` times the distance); a candidate is kept if it is still adversarial. Step sizes adapt
every ``update_every`` steps from the success rates (up by ``step_adaptation`` above 50 %, down
below), as in Foolbox's implementation. Each step costs two queries per image (the spherical candidate
for the statistics, the final one for the move); init and accounting are the HSJA engine's.
"""

from __future__ import annotations

import torch

from ...core.checks import check_float, check_int
from .engine import DecisionAttack, _Run

__all__ = ["BoundaryAttack"]


class BoundaryAttack(DecisionAttack):
    """Brendel et al.'s Boundary Attack, batched over images with per-image hard budgets (L2).

    Parameters
    ----------
    spherical_step, source_step:
        Initial relative step sizes.
    step_adaptation:
        Factor by which steps grow or shrink.
    update_every:
        Steps between step-size updates.
    init_tries, seed, batch_size:
        As for :class:`~bastion.attacks.decision.HSJA`.
    """

    norm = "l2"

    def __init__(
        self,
        *,
        spherical_step: float = 1e-2,
        source_step: float = 1e-2,
        step_adaptation: float = 1.5,
        update_every: int = 10,
        init_tries: int = 100,
        seed: int = 0,
        batch_size: int | None = None,
    ) -> None:
        self.spherical_step = check_float(spherical_step, "spherical_step", minimum=0, min_inclusive=False)
        self.source_step = check_float(source_step, "source_step", minimum=0, min_inclusive=False)
        self.step_adaptation = check_float(step_adaptation, "step_adaptation", minimum=1, min_inclusive=False)
        self.update_every = check_int(update_every, "update_every", minimum=1)
        self.init_tries = check_int(init_tries, "init_tries", minimum=1)
        self.seed = check_int(seed, "seed", minimum=0)
        self.batch_size = None if batch_size is None else check_int(batch_size, "batch_size", minimum=1)

    def theta(self, d: int) -> float:  # the init's boundary search tolerance (shared engine)
        return 1e-3

    def __repr__(self) -> str:
        return (
            f"BoundaryAttack(spherical_step={self.spherical_step}, source_step={self.source_step}, "
            f"step_adaptation={self.step_adaptation}, update_every={self.update_every}, seed={self.seed})"
        )


class _BoundaryRun(_Run):
    def __init__(self, *args) -> None:
        super().__init__(*args)
        n = self.n
        self.sph = torch.full((n,), self.a.spherical_step, dtype=torch.float64)
        self.src = torch.full((n,), self.a.source_step, dtype=torch.float64)
        self.stats = torch.zeros(n, 4)  # spherical successes, trials, final successes, trials

    def search_rounds(self) -> int:
        return 0

    def iterate(self) -> None:
        ids = (self.active & (self.remaining() >= 2)).nonzero().flatten()
        self.active &= self.remaining() >= 2
        if len(ids) == 0:
            return
        x0, xa = self.x0[ids], self.x_adv[ids]
        view = (-1, *[1] * len(self.shape))
        diff = (x0 - xa).flatten(1)
        dist = diff.norm(dim=1).clamp_min(1e-12)
        unit = diff / dist[:, None]
        eta = torch.stack([torch.randn(self.shape, generator=self.gens[i]).flatten() for i in ids.tolist()])
        eta = eta - (eta * unit).sum(1, keepdim=True) * unit  # orthogonal to the direction to the original
        eta = eta / eta.norm(dim=1, keepdim=True).clamp_min(1e-12) * (self.sph[ids].float() * dist)[:, None]
        sph = x0.flatten(1) - (diff - eta) * (dist / (diff - eta).norm(dim=1).clamp_min(1e-12))[:, None]
        sph = sph.view_as(xa).clamp(self.lo, self.hi)
        new = (sph + self.src[ids].float().view(view) * (x0 - sph)).clamp(self.lo, self.hi)
        ok, _ = self.is_adv(torch.cat([sph, new]), torch.cat([ids, ids]))
        ok_sph, ok_new = ok[: len(ids)], ok[len(ids) :]
        closer = (new - x0).flatten(1).norm(dim=1) < dist
        move = ok_new & closer
        self.x_adv[ids[move]] = new[move]
        self.stats[ids] += torch.stack([ok_sph.float(), torch.ones(len(ids)), ok_new.float(), torch.ones(len(ids))], 1)
        self.t[ids] += 1
        due = ids[(self.t[ids] % self.a.update_every) == 0]
        if len(due):
            s = self.stats[due]
            f = self.a.step_adaptation
            self.sph[due] = torch.where(s[:, 0] / s[:, 1] > 0.5, self.sph[due] * f, self.sph[due] / f)
            self.src[due] = torch.where(s[:, 2] / s[:, 3] > 0.5, self.src[due] * f, self.src[due] / f)
            self.stats[due] = 0
        self.record(ids)


BoundaryAttack._run_class = _BoundaryRun
