"""Alpha-beta link model shared by the cost model, the simulator and the network emulator.

A cluster has ``g`` groups of ``m`` ranks. Inside a group each rank has ``bw_intra`` bytes/s; between
groups a group has ``bw_inter`` bytes/s in aggregate, shared by the ``m`` inter rings that run at once
(one flow gets ``bw_inter / m``); a flat ring that crosses group boundaries has one flow per boundary,
which gets all of ``bw_inter`` (generous to the baseline). Latencies ``alpha_intra`` / ``alpha_inter``
are per ring step. This is the spec's reconstruction (``../shared/specs/paro.md``, "Alpha-beta time").

>>> link = Link(alpha_intra=0.0, alpha_inter=0.0, bw_intra=100.0, bw_inter=10.0, group_size=4)
>>> link.step_time("intra", 100), link.step_time("inter", 10), link.step_time("cross", 10)
(1.0, 4.0, 1.0)
>>> link.collective_time("all_gather", "intra", 400, ranks=4)  # 3 steps of 100 bytes
3.0
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LINK_CLASSES", "Link"]

LINK_CLASSES = ("intra", "inter", "cross")


@dataclass(frozen=True)
class Link:
    """Latencies in seconds, bandwidths in bytes/s; ``group_size`` is ``m``."""

    alpha_intra: float
    alpha_inter: float
    bw_intra: float
    bw_inter: float
    group_size: int

    def __post_init__(self) -> None:
        for name in ("alpha_intra", "alpha_inter"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("bw_intra", "bw_inter"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 bytes/s, got {getattr(self, name)}")
        if self.group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {self.group_size}")

    def alpha(self, kind: str) -> float:
        return self.alpha_intra if kind == "intra" else self.alpha_inter

    def flow_bandwidth(self, kind: str) -> float:
        """Bytes/s of one point-to-point flow of this class."""
        if kind == "intra":
            return self.bw_intra
        if kind == "inter":
            return self.bw_inter / self.group_size
        if kind == "cross":
            return self.bw_inter
        raise ValueError(f"link class must be one of {LINK_CLASSES}, got {kind!r}")

    def step_time(self, kind: str, nbytes: float) -> float:
        """One ring step: send ``nbytes`` to the next rank."""
        return self.alpha(kind) + nbytes / self.flow_bandwidth(kind)

    def collective_time(self, op: str, kind: str, nbytes: float, ranks: int) -> float:
        """Ring time of ``op`` over ``ranks`` ranks; ``nbytes`` is the full (unsharded) tensor size.

        ``all_gather``/``reduce_scatter`` (and, as a pipelined ring, ``broadcast``/``reduce``/
        ``all_to_all``): ``(q-1)`` steps of ``X/q``; ``all_reduce`` twice that; point-to-point
        ``send``: one step of ``X``.
        """
        q = ranks
        if q <= 1 or nbytes <= 0:
            return 0.0
        if op == "send":
            return self.step_time(kind, nbytes)
        steps = (q - 1) * self.step_time(kind, nbytes / q)
        if op == "all_reduce":
            return 2 * steps
        if op in ("all_gather", "reduce_scatter", "broadcast", "reduce", "all_to_all"):
            return steps
        raise ValueError(f"unknown collective {op!r}")
