"""Rank topology: ``n = g x m`` ranks in contiguous groups (a group is a node or a switch).

Rank ``r = k*m + l`` sits in group ``k`` at local index ``l`` (the official layout). Every rank creates
every process group in the same order -- all intra groups, then all inter groups -- because
``torch.distributed.new_group`` is collective and gloo hangs otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.distributed as dist

__all__ = ["Topology", "TopologySpec"]


@dataclass(frozen=True)
class TopologySpec:
    """Pure arithmetic of a ``g x m`` layout (no process groups); usable without torch.distributed.

    >>> t = TopologySpec(world_size=8, group_size=4)
    >>> t.num_groups, t.coords(6), t.intra_ranks(1), t.inter_ranks(2)
    (2, (1, 2), [4, 5, 6, 7], [2, 6])
    """

    world_size: int
    group_size: int

    def __post_init__(self) -> None:
        for name in ("world_size", "group_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{name} must be an int, got {type(v).__name__}")
        if self.group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {self.group_size}")
        if self.world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {self.world_size}")
        if self.world_size % self.group_size:
            raise ValueError(f"world size {self.world_size} is not divisible by group_size {self.group_size}")

    @property
    def num_groups(self) -> int:
        return self.world_size // self.group_size

    def coords(self, rank: int) -> tuple[int, int]:
        """``(k, l)``: group index and local index of ``rank``."""
        return divmod(rank, self.group_size)

    def intra_ranks(self, k: int) -> list[int]:
        return [k * self.group_size + j for j in range(self.group_size)]

    def inter_ranks(self, local: int) -> list[int]:
        return [k * self.group_size + local for k in range(self.num_groups)]

    def link(self, ranks: list[int] | tuple[int, ...]) -> str:
        """``intra`` if all ranks share a group, ``inter`` if no two do, ``cross`` otherwise."""
        groups = [r // self.group_size for r in ranks]
        if len(set(groups)) <= 1:
            return "intra"
        if len(set(groups)) == len(groups):
            return "inter"
        return "cross"


class Topology(TopologySpec):
    """A :class:`TopologySpec` for this process, with its intra, inter and world process groups.

    Needs ``torch.distributed`` initialised; call it on every rank with the same ``group_size``.
    """

    def __init__(self, group_size: int, *, backend_group: Any = None) -> None:
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("torch.distributed is not initialised: call init_process_group (or use torchrun)")
        world = dist.get_world_size(backend_group)
        object.__setattr__(self, "world_size", world)
        object.__setattr__(self, "group_size", group_size)
        self.__post_init__()
        self.world = backend_group if backend_group is not None else dist.group.WORLD
        self.rank = dist.get_rank(self.world)
        self.k, self.l = self.coords(self.rank)
        intra = [dist.new_group(self.intra_ranks(k)) for k in range(self.num_groups)]
        inter = [dist.new_group(self.inter_ranks(j)) for j in range(self.group_size)]
        self.intra = intra[self.k]
        self.inter = inter[self.l]

    @property
    def m(self) -> int:
        return self.group_size

    @property
    def g(self) -> int:
        return self.num_groups

    @property
    def n(self) -> int:
        return self.world_size

    def __repr__(self) -> str:
        return f"Topology(rank={self.rank}, k={self.k}, l={self.l}, g={self.g}, m={self.m})"
