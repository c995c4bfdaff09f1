"""Leakage bounds: the spec's KL bound for Langevin chains (a reconstruction) and Yeom's DP bound.

Reconstruction (spec sgld.md section 3, not the paper's own statement): per-example gradient norm
at most ``L``, batch ``n`` of ``N`` examples, chain ``theta <- theta - eta_t g_t + sqrt(2 eta_t /
beta) xi``. One step's KL divergence between the chains on neighbouring data sets is at most
``beta L^2 eta_t / (n N)``; by the chain rule over the trajectory
``KL <= beta L^2 sum_t eta_t / (n N)`` and by Pinsker the membership advantage is at most
``min(1, sqrt(KL / 2))``. In SGLD units (``eta = lr N / 2``, ``beta = N / T``):
``KL <= L^2 N sum_t lr_t / (2 T n)``. The bound covers ensembles of the chain's samples too. It is
vacuous at useful settings (N=1000, T=0.03, lr=1e-4, 640 steps, n=64, L=1 gives KL ~ 17). SGLD is
not differentially private in general (Heller & Fetaya, arXiv 2110.05057): never call it so.

Yeom et al. (CSF 2018), Theorem 1: an ``epsilon``-DP training algorithm has membership advantage at
most ``exp(epsilon) - 1``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..core.checks import check_float, check_int

__all__ = ["langevin_kl_bound", "pinsker_advantage", "sgld_advantage_bound", "sgld_kl_bound", "yeom_dp_advantage_bound"]


def _sum_steps(steps: Sequence[float] | float, n_steps: int | None, name: str) -> float:
    if isinstance(steps, int | float):
        if n_steps is None:
            raise ValueError(f"give n_steps with a constant {name}")
        return check_float(steps, name, minimum=0) * check_int(n_steps, "n_steps", minimum=0)
    return sum(check_float(s, f"{name}[t]", minimum=0) for s in steps)


def langevin_kl_bound(
    lipschitz: float, batch_size: int, num_data: int, beta: float, etas, n_steps: int | None = None
) -> float:
    """``beta L^2 sum_t eta_t / (n N)`` for the chain ``theta - eta g + sqrt(2 eta / beta) xi``."""
    L = check_float(lipschitz, "lipschitz", minimum=0)
    n = check_int(batch_size, "batch_size", minimum=1)
    N = check_int(num_data, "num_data", minimum=1)
    b = check_float(beta, "beta", minimum=0, min_inclusive=False)
    return b * L**2 * _sum_steps(etas, n_steps, "eta") / (n * N)


def sgld_kl_bound(
    lipschitz: float, batch_size: int, num_data: int, temperature: float, lrs, n_steps: int | None = None
) -> float:
    """The same bound in SGLD units: ``L^2 N sum_t lr_t / (2 T n)``.

    >>> round(sgld_kl_bound(1.0, 64, 1000, 0.03, 1e-4, n_steps=640), 2)
    16.67
    """
    T = check_float(temperature, "temperature", minimum=0, min_inclusive=False)
    N = check_int(num_data, "num_data", minimum=1)
    total = _sum_steps(lrs, n_steps, "lr")
    return langevin_kl_bound(lipschitz, batch_size, N, N / T, [total * N / 2])


def pinsker_advantage(kl: float) -> float:
    """Membership advantage bound ``min(1, sqrt(KL / 2))``."""
    return min(1.0, math.sqrt(check_float(kl, "kl", minimum=0) / 2))


def sgld_advantage_bound(
    lipschitz: float, batch_size: int, num_data: int, temperature: float, lrs, n_steps: int | None = None
) -> float:
    """Pinsker applied to :func:`sgld_kl_bound`."""
    return pinsker_advantage(sgld_kl_bound(lipschitz, batch_size, num_data, temperature, lrs, n_steps))


def yeom_dp_advantage_bound(epsilon: float) -> float:
    """Yeom et al.: ``epsilon``-DP implies advantage <= ``exp(epsilon) - 1`` (capped at 1)."""
    return min(1.0, math.expm1(check_float(epsilon, "epsilon", minimum=0)))
