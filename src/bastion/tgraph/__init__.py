"""Open temporal graphs (OTGNet, ICLR 2023; spec otgnet.md), issue #7, in progress.

Landed: the official file layout (reader with row-level errors, writer), the ``TemporalGraph``
container with tasks, the per-task 80/10/10 split with inductive test nodes, the vectorised
most-recent-k neighbour sampler, the open temporal graph generator (presets, heterophily, old-link
share, community nuisance, shared class subspace), and AP / AF from an accuracy matrix.
"""

from .data import COLUMNS, TaskSplit, TemporalGraph, read_otg, split_tasks, write_otg
from .generator import PRESETS, open_temporal_graph
from .metrics import average_forgetting, average_performance
from .sampler import Neighbours, RecentNeighbourSampler

__all__ = [
    "COLUMNS",
    "PRESETS",
    "Neighbours",
    "RecentNeighbourSampler",
    "TaskSplit",
    "TemporalGraph",
    "average_forgetting",
    "average_performance",
    "open_temporal_graph",
    "read_otg",
    "split_tasks",
    "write_otg",
]
