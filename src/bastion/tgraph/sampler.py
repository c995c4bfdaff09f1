"""The most recent ``k`` neighbours of a node strictly before a time, for a batch of queries at once.

Spec otgnet.md: the 5 most recent events of ``w`` strictly before ``t``, left-padded with node 0.
Every event ``(u, v, t)`` is stored twice, as ``u``'s neighbour ``v`` and as ``v``'s neighbour
``u``, sorted by one int64 key ``node * (T + 1) + rank(t)`` (``rank`` = position among the distinct
times). A query ``(w, t)`` is then two ``searchsorted`` calls: the start of ``w``'s block and the
first entry at or after ``t``; the ``k`` entries before the latter, within the block, are the answer.
No Python loop over queries (the spec measured 5.8x a per-query loop; ``benchmarks/`` has ours).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.checks import check_int

__all__ = ["Neighbours", "RecentNeighbourSampler"]


@dataclass
class Neighbours:
    """``(Q, k)`` tensors, oldest first, left-padded: ``nodes`` 0, ``times`` 0, ``events`` -1, ``mask`` False."""

    nodes: torch.Tensor
    times: torch.Tensor
    events: torch.Tensor
    mask: torch.Tensor


class RecentNeighbourSampler:
    """Index over events ``(src, dst, ts)`` (``events`` selects a subset, e.g. the train events).

    ``sampler(nodes, times)`` returns each query node's ``k`` most recent neighbours strictly before
    its time.
    """

    def __init__(
        self,
        src: torch.Tensor,
        dst: torch.Tensor,
        ts: torch.Tensor,
        *,
        k: int = 5,
        events: torch.Tensor | None = None,
    ) -> None:
        self.k = check_int(k, "k", minimum=1)
        if not (len(src) == len(dst) == len(ts)):
            raise ValueError(f"src, dst and ts must have equal lengths, got {len(src)}, {len(dst)}, {len(ts)}")
        ids = torch.arange(len(src)) if events is None else torch.as_tensor(events, dtype=torch.int64)
        s, d, t = src[ids].long(), dst[ids].long(), ts[ids].double()
        self.times_sorted = torch.unique(ts.double())  # ranks over all times, so any query time maps
        node = torch.cat([s, d])
        other = torch.cat([d, s])
        time = torch.cat([t, t])
        eid = torch.cat([ids, ids])
        self.span = len(self.times_sorted) + 1
        rank = torch.searchsorted(self.times_sorted, time)
        key = node * self.span + rank
        by_event = torch.argsort(eid, stable=True)
        order = by_event[torch.argsort(key[by_event], stable=True)]  # ties (same node and time): event order
        self.key, self.other, self.time, self.eid = key[order], other[order], time[order], eid[order]

    def __call__(self, nodes: torch.Tensor, times: torch.Tensor) -> Neighbours:
        nodes, times = torch.as_tensor(nodes).long().flatten(), torch.as_tensor(times).double().flatten()
        if len(nodes) != len(times):
            raise ValueError(f"nodes and times must have equal lengths, got {len(nodes)} and {len(times)}")
        start = torch.searchsorted(self.key, nodes * self.span)
        rank = torch.searchsorted(self.times_sorted, times)  # distinct times strictly below t
        end = torch.searchsorted(self.key, nodes * self.span + rank)
        pos = end[:, None] - self.k + torch.arange(self.k)[None, :]  # the k entries before `end`
        mask = pos >= start[:, None]
        safe = pos.clamp_min(0)
        if len(self.key) == 0:
            z = torch.zeros(len(nodes), self.k, dtype=torch.int64)
            return Neighbours(z, z.double(), z - 1, z.bool())
        return Neighbours(
            nodes=torch.where(mask, self.other[safe], 0),
            times=torch.where(mask, self.time[safe], 0.0),
            events=torch.where(mask, self.eid[safe], -1),
            mask=mask,
        )
