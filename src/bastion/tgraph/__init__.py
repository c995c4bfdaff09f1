"""Open temporal graphs (OTGNet, ICLR 2023; spec otgnet.md), issue #7, in progress.

Landed: the official file layout (reader with row-level errors, writer), the ``TemporalGraph``
container with tasks, the per-task 80/10/10 split with inductive test nodes, the vectorised
most-recent-k neighbour sampler, and AP / AF from an accuracy matrix.
"""

from .data import COLUMNS, TaskSplit, TemporalGraph, read_otg, split_tasks, write_otg
from .metrics import average_forgetting, average_performance
from .sampler import Neighbours, RecentNeighbourSampler

__all__ = [
    "COLUMNS",
    "Neighbours",
    "RecentNeighbourSampler",
    "TaskSplit",
    "TemporalGraph",
    "average_forgetting",
    "average_performance",
    "read_otg",
    "split_tasks",
    "write_otg",
]
