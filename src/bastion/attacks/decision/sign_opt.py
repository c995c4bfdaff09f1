"""Sign-OPT (Cheng, Singh, Chen, Chen, Liu & Hsieh, "Sign-OPT: A Query-Efficient Hard-label
Adversarial Attack", ICLR 2020; official code cmhcbb/attackbox, ``Sign_OPT``), L2, on the engine's
init and accounting.

The attack searches a *direction* ``theta`` (unit norm) minimising ``g(theta)``, the distance from the
original to the decision boundary along ``theta``. What we follow from the official code:

- Sign gradient (``sign_grad_v1``): ``K`` Gaussian directions ``u`` (unit), one query each at
  ``x0 + g(theta) * (theta + beta u) / |theta + beta u|``; the sign is -1 where that point is
  adversarial (``g`` would shrink), +1 otherwise; the estimate is ``mean(sign * u)``.
- Line search: ``theta - alpha * grad`` with ``alpha`` doubled while ``g`` keeps falling (at most 15
  times); if no step helped, ``alpha`` is quartered up to 15 times until one does. ``g`` of a new
  direction comes from ``fine_grained_binary_search_local``: grow (x1.01) or shrink (x0.99) from
  the current ``g`` until the boundary is bracketed, then bisect to ``beta / 500``.
- When ``alpha < 1e-4``: ``alpha = 1``, ``beta /= 10``; an image stops when ``beta < 1e-8``.
- Defaults: ``k = 200``, ``alpha = 0.2``, ``beta = 0.001``.

Ours differs in two places: every point is clipped to the bounds (the official predict does not clip),
and the start is the engine's (uniform noise or a batch mate, blended towards the original) instead of
the official search over 100 random directions, so every attack in a comparison starts alike. Images
run one after another inside an iteration (the line search is sequential by nature); each is charged
only for its own queries and stops at its own hard budget.
"""

from __future__ import annotations

import torch

from ...core.checks import check_float, check_int
from .engine import DecisionAttack, _Run

__all__ = ["SignOPT"]


class _OutOfBudget(Exception):
    pass


class SignOPT(DecisionAttack):
    """Sign-OPT, L2, untargeted or targeted (with ``starting_points``), per-image hard budgets.

    Parameters
    ----------
    k:
        Sign queries per gradient estimate.
    alpha, beta:
        Initial line-search step and smoothing radius of the sign estimate.
    init_tries, seed, batch_size:
        As for :class:`~bastion.attacks.decision.HSJA`.

    Examples
    --------
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    >>> x = torch.rand(2, 1, 4, 4)
    >>> result = SignOPT(seed=0)(net, x, net(x).argmax(1), budget=300)
    >>> bool((result.queries <= 300).all())
    True
    """

    norm = "l2"

    def __init__(
        self,
        *,
        k: int = 200,
        alpha: float = 0.2,
        beta: float = 0.001,
        init_tries: int = 100,
        seed: int = 0,
        batch_size: int | None = None,
    ) -> None:
        self.k = check_int(k, "k", minimum=1)
        self.alpha = check_float(alpha, "alpha", minimum=0, min_inclusive=False)
        self.beta = check_float(beta, "beta", minimum=0, min_inclusive=False)
        self.init_tries = check_int(init_tries, "init_tries", minimum=1)
        self.seed = check_int(seed, "seed", minimum=0)
        self.batch_size = None if batch_size is None else check_int(batch_size, "batch_size", minimum=1)

    def __repr__(self) -> str:
        return f"SignOPT(k={self.k}, alpha={self.alpha}, beta={self.beta}, seed={self.seed})"

    def theta(self, d: int) -> float:  # the init's blend search tolerance comes from the engine
        return 1e-3


class _SignOPTRun(_Run):
    def init(self) -> None:
        super().init()
        diff = (self.x_adv - self.x0).flatten(1)
        self.g = diff.norm(dim=1).to(torch.float64)
        self.dir = (diff / self.g.clamp_min(1e-12)[:, None].float()).view_as(self.x0)
        self.alpha = torch.full((self.n,), self.a.alpha, dtype=torch.float64)
        self.beta = torch.full((self.n,), self.a.beta, dtype=torch.float64)

    def search_rounds(self) -> int:
        return 0

    # ------------------------------------------------------------------ one image
    def _ask(self, i: int, points: torch.Tensor) -> torch.Tensor:
        adv, answered = self.is_adv(points, torch.full((len(points),), i, dtype=torch.int64))
        if not bool(answered.all()):
            raise _OutOfBudget
        return adv

    def _point(self, i: int, theta: torch.Tensor, lbd: float) -> torch.Tensor:
        return (self.x0[i] + lbd * theta).clamp(self.lo, self.hi)[None]

    def _local_search(self, i: int, theta: torch.Tensor, lbd: float, tol: float) -> float:
        """The official ``fine_grained_binary_search_local``: g along ``theta`` from a guess ``lbd``."""
        if not bool(self._ask(i, self._point(i, theta, lbd))[0]):
            lo, hi = lbd, lbd * 1.01
            while not bool(self._ask(i, self._point(i, theta, hi))[0]):
                hi *= 1.01
                if hi > 20 * max(1.0, float(self.g[i])):  # no boundary along theta within reach
                    return float("inf")
        else:
            hi, lo = lbd, lbd * 0.99
            while bool(self._ask(i, self._point(i, theta, lo))[0]):
                lo *= 0.99
        while hi - lo > tol:
            mid = (lo + hi) / 2
            if bool(self._ask(i, self._point(i, theta, mid))[0]):
                hi = mid
            else:
                lo = mid
        return hi

    def _step(self, i: int) -> None:
        theta, g = self.dir[i], float(self.g[i])
        alpha, beta = float(self.alpha[i]), float(self.beta[i])
        k = int(min(self.a.k, int(self.remaining()[i]) - 1))
        if k < 1:
            raise _OutOfBudget
        u = torch.randn((k, *self.shape), generator=self.gens[i])
        u = u / u.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * len(self.shape))
        cand = theta + beta * u
        cand = cand / cand.flatten(1).norm(dim=1).view(-1, *[1] * len(self.shape))
        adv = self._ask(i, (self.x0[i] + g * cand).clamp(self.lo, self.hi))
        sign = torch.where(adv, -1.0, 1.0).view(-1, *[1] * len(self.shape))
        grad = (sign * u).mean(0)
        tol = beta / 500
        best_g = g

        def commit(t: torch.Tensor, lbd: float) -> None:  # verified adversarial: keep it at once
            self.dir[i], self.g[i] = t, lbd
            self.x_adv[i] = self._point(i, t, lbd)[0]

        try:
            for _ in range(15):
                new = theta - alpha * grad
                new = new / new.norm()
                new_g = self._local_search(i, new, best_g, tol)
                alpha *= 2
                if new_g < best_g:
                    best_g = new_g
                    commit(new, new_g)
                else:
                    break
            if best_g >= g:
                for _ in range(15):
                    alpha *= 0.25
                    new = theta - alpha * grad
                    new = new / new.norm()
                    new_g = self._local_search(i, new, g, tol)
                    if new_g < g:
                        commit(new, new_g)
                        break
        finally:
            if alpha < 1e-4:
                alpha, beta = 1.0, beta * 0.1
            self.alpha[i], self.beta[i] = alpha, beta
        if beta < 1e-8:
            self.active[i] = False

    def iterate(self) -> None:
        ids = (self.active & (self.remaining() >= 2)).nonzero().flatten()
        self.active &= self.remaining() >= 2
        for i in ids.tolist():
            try:
                self._step(i)
            except _OutOfBudget:
                self.active[i] = False
        self.t[ids] += 1
        if len(ids):
            self.record(ids)


SignOPT._run_class = _SignOPTRun
