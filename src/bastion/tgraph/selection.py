"""OTGNet's triad selection (spec otgnet.md, "Triad selection and replay"): node importance by one
forward-mode JVP, triad enumeration, and greedy selection for importance and diversity.

Importance: with ``g`` the gradient of the mean task loss and ``s = g`` (LiSSA with scale 1e9 and no
damping makes ``s`` proportional to ``g``), ``I(v) = -sum_tensors mean(grad l_v * s)``. That is the
directional derivative of every ``l_v`` along ``u`` (``u_T = s_T / numel(T)``), so one ``torch.func.jvp``
over the per-node losses gives all of them at once, instead of one backward pass per node.

Greedy: maximise ``sum_{tau in S} I(tau) + gamma * |covered(S)| / n`` with ``covered(S)`` the candidates
within distance ``r`` of a pick: a monotone submodular objective, so greedy is within ``1 - 1/e`` of
the optimum (Nemhauser et al. 1978).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import jvp

from ..core.checks import check_float, check_int
from .sampler import RecentNeighbourSampler

__all__ = ["enumerate_triads", "greedy_select", "node_importance", "node_importance_loop"]


def _direction(direction: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v / v.numel() for k, v in direction.items()}


def node_importance(
    losses: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    params: dict[str, torch.Tensor],
    direction: dict[str, torch.Tensor],
) -> torch.Tensor:
    """``I(v) = -sum_T mean(grad_T l_v * direction_T)`` for every entry ``l_v`` of ``losses(params)``.

    ``losses`` maps a dict of parameter values to the per-node loss vector (e.g. through
    ``torch.func.functional_call``); ``direction`` has the same keys and shapes as ``params``. One
    forward-mode pass.
    """
    if not direction or set(direction) != set(params):
        raise ValueError(f"direction must have the keys of params ({sorted(params)}), got {sorted(direction)}")
    for k, v in direction.items():
        if v.shape != params[k].shape:
            raise ValueError(f"direction[{k!r}] has shape {tuple(v.shape)}, the parameter {tuple(params[k].shape)}")
    names = list(params)
    u = _direction(direction)
    primals = tuple(params[k].detach() for k in names)
    tangents = tuple(u[k].to(params[k].dtype) for k in names)
    _, d = jvp(lambda *values: losses(dict(zip(names, values, strict=True))), primals, tangents)
    return -d.detach()


def node_importance_loop(
    losses: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    params: dict[str, torch.Tensor],
    direction: dict[str, torch.Tensor],
) -> torch.Tensor:
    """The same quantity with one backward pass per loss entry (the reference; slow)."""
    names = list(params)
    u = _direction(direction)
    leaves = {k: params[k].detach().clone().requires_grad_(True) for k in names}
    values = losses(leaves)
    out = torch.empty(len(values), dtype=values.dtype)
    for i in range(len(values)):
        grads = torch.autograd.grad(values[i], [leaves[k] for k in names], retain_graph=True, allow_unused=True)
        out[i] = -sum(((g * u[k]).sum() for g, k in zip(grads, names, strict=True) if g is not None),
                      torch.zeros((), dtype=values.dtype))  # fmt: skip
    return out


def greedy_select(
    importance: torch.Tensor, distances: torch.Tensor, *, m: int, radius: float, gamma: float = 20.0
) -> list[int]:
    """Pick ``m`` candidates greedily for ``sum I + gamma * (covered share)`` (see the module docstring)."""
    importance = torch.as_tensor(importance, dtype=torch.float64).flatten()
    n = len(importance)
    if distances.shape != (n, n):
        raise ValueError(f"distances must be ({n}, {n}) for {n} candidates, got {tuple(distances.shape)}")
    m = check_int(m, "m", minimum=1)
    radius = check_float(radius, "radius", minimum=0)
    gamma = check_float(gamma, "gamma", minimum=0)
    cover = distances < radius  # cover[i, j]: picking i covers j
    covered = torch.zeros(n, dtype=torch.bool)
    free = torch.ones(n, dtype=torch.bool)
    picks: list[int] = []
    for _ in range(min(m, n)):
        gain = importance + gamma * (cover & ~covered).sum(1).double() / n
        gain[~free] = float("-inf")
        i = int(gain.argmax())
        picks.append(i)
        free[i] = False
        covered |= cover[i]
    return picks


def enumerate_triads(
    src: torch.Tensor,
    dst: torch.Tensor,
    ts: torch.Tensor,
    labels: torch.Tensor,
    events: torch.Tensor,
    cls: int,
    *,
    k: int = 20,
) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
    """Closed and open triads of class ``cls`` among the train ``events`` (spec, step 2).

    For each event ``(s, d, t)`` of ``events`` with both ends of class ``cls``: closed ``(s, d, w)`` for
    each class-``cls`` common neighbour ``w`` of ``s``'s and ``d``'s ``k`` most recent neighbours before
    ``t``; open ``(w, s, d)`` for each class-``cls`` ``w`` among ``s``'s ``k`` most recent neighbours over
    all time, ``w != d`` and ``w`` not among ``d``'s. Neighbours come from ``events`` only. Each list is
    de-duplicated, in first-seen order.
    """
    k = check_int(k, "k", minimum=1)
    events = torch.as_tensor(events, dtype=torch.int64)
    sampler = RecentNeighbourSampler(src, dst, ts, k=k, events=events)
    mine = events[(labels[src[events]] == cls) & (labels[dst[events]] == cls)]
    if len(mine) == 0:
        return [], []
    s, d, t = src[mine], dst[mine], ts[mine]
    before_s, before_d = sampler(s, t), sampler(d, t)
    end = torch.full_like(t, float("inf"))
    ever_s, ever_d = sampler(s, end), sampler(d, end)
    closed, open_, seen_c, seen_o = [], [], set(), set()
    for i in range(len(mine)):
        si, di = int(s[i]), int(d[i])
        ns = set(before_s.nodes[i][before_s.mask[i]].tolist())
        nd = set(before_d.nodes[i][before_d.mask[i]].tolist())
        for w in sorted(ns & nd):
            if int(labels[w]) == cls and w not in (si, di) and (si, di, w) not in seen_c:
                seen_c.add((si, di, w))
                closed.append((si, di, w))
        all_d = set(ever_d.nodes[i][ever_d.mask[i]].tolist())
        for w in sorted(set(ever_s.nodes[i][ever_s.mask[i]].tolist())):
            if int(labels[w]) == cls and w not in (si, di) and w not in all_d and (w, si, di) not in seen_o:
                seen_o.add((w, si, di))
                open_.append((w, si, di))
    return closed, open_
