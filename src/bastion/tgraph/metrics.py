"""Class-incremental figures from an accuracy matrix (spec otgnet.md, "Problem and protocol").

``acc[i, j]`` = accuracy (%) on task ``j``'s test nodes after training task ``i`` (``j <= i``; entries
above the diagonal are ignored). AP = mean_j acc[T, j]; AF = mean_{j < T} (max_{j <= i <= T} acc[i, j]
- acc[T, j]), the max including ``i = T``, so AF >= 0.

>>> import torch
>>> acc = torch.tensor([[90.0, 0.0], [70.0, 80.0]])
>>> average_performance(acc), average_forgetting(acc)
(75.0, 20.0)
"""

from __future__ import annotations

import torch

__all__ = ["average_forgetting", "average_performance"]


def _check(acc: torch.Tensor) -> torch.Tensor:
    acc = torch.as_tensor(acc, dtype=torch.float64)
    if acc.ndim != 2 or acc.shape[0] != acc.shape[1] or acc.shape[0] == 0:
        raise ValueError(f"acc must be a square (tasks, tasks) matrix, got shape {tuple(acc.shape)}")
    lower = torch.tril(torch.ones_like(acc, dtype=torch.bool))
    if bool(acc[lower].isnan().any()):
        raise ValueError("acc has NaN on or below the diagonal")
    return acc


def average_performance(acc: torch.Tensor) -> float:
    """Mean accuracy over all tasks after the last one."""
    acc = _check(acc)
    return float(acc[-1].mean())


def average_forgetting(acc: torch.Tensor) -> float:
    """Mean drop from each earlier task's best accuracy (after learning it) to its final accuracy."""
    acc = _check(acc)
    t = acc.shape[0]
    if t == 1:
        return 0.0
    drops = [float(acc[j:, j].max() - acc[-1, j]) for j in range(t - 1)]
    return sum(drops) / len(drops)
