"""Open temporal graphs (OTGNet, ICLR 2023; spec otgnet.md), issue #7.

The official file layout (reader with row-level errors, writer), the ``TemporalGraph``
container with tasks, the per-task 80/10/10 split with inductive test nodes, the vectorised
most-recent-k neighbour sampler, the open temporal graph generator (presets, heterophily, old-link
share, community nuisance, shared class subspace), AP / AF from an accuracy matrix, the temporal
backbone (memory + time-encoded attention, task or class heads) and the protocol with the fine-tune,
joint, EWC, LwF and random-replay baselines; OTGNet's pieces: the information bottleneck (CLUB / MINE,
``ib``), node importance by one JVP, triad enumeration and greedy selection (``selection``); the
MovieLens-100K movie graph (``movielens``: 92,098 events, 1,211 nodes, as the spec measured). OTGNet
assembled in the protocol (``otgnet``: IB message passing, causal or official pseudo labels, triad
replay with memory snapshots and the link-pattern loss) with its two ablations. Command line:
``bastion tgraph run``; reproduction: ``bastion reproduce otgnet``; benchmark: ``benchmarks/tgraph_bench.py``.
"""

from .data import COLUMNS, TaskSplit, TemporalGraph, read_otg, split_tasks, write_otg
from .generator import PRESETS, open_temporal_graph
from .metrics import average_forgetting, average_performance
from .model import TemporalBackbone
from .protocol import METHODS, ProtocolResult, run_protocol
from .sampler import Neighbours, RecentNeighbourSampler

__all__ = [
    "COLUMNS",
    "METHODS",
    "PRESETS",
    "Neighbours",
    "ProtocolResult",
    "RecentNeighbourSampler",
    "TaskSplit",
    "TemporalBackbone",
    "TemporalGraph",
    "average_forgetting",
    "average_performance",
    "open_temporal_graph",
    "read_otg",
    "run_protocol",
    "split_tasks",
    "write_otg",
]
