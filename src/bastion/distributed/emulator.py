"""A virtual clock for a slow inter-group link on one machine (the spec's reconstruction, prototype measured).

Loopback has no slow link, and with 8 ranks on 2 cores wall time measures the scheduler. So each rank
keeps a clock: compute is the main thread's CPU time (``time.thread_time``; gloo works on its own
threads, and CPU autograd runs on the caller), and every data-moving ``torch.distributed`` call is
intercepted, classified and charged the alpha-beta time of :class:`~bastion.distributed.netmodel.Link`:

* ``intra``: all ranks of the call in one group; ``inter``: at most one rank per group (a flow gets
  ``B_e / m``: the ``m`` inter rings share the group's link); ``cross``: a flat ring over ranks of
  several groups (one flow per boundary, all of ``B_e``).
* The real transfer still happens. Async work is waited at once: no overlap credit for anyone.
* Our point-to-point ring collectives (:mod:`bastion.distributed.collectives`) are charged by replaying
  their schedule (one intra and one inter resource per rank), so HO-Ring's pipelining counts exactly
  as modelled; their individual sends are not charged again. Blocking ``send``/``recv`` of other code
  are charged as one step; ``isend``/``irecv``/``batch_isend_irecv`` of other code are not seen
  (``dist.P2POp`` checks its op by identity, so they cannot be wrapped).

Step time is the maximum over ranks (an uncharged MAX all-reduce). The same interceptor counts bytes
and calls per class, which must agree with the engine's own :meth:`PaRO.comm_report`.

What is modelled alike for every system is communication; what is measured is compute, framework
overhead (heavier on a tiny CPU model than on GPUs) and which collectives each system issues.
Overlap, congestion and NCCL protocols are not modelled.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from .netmodel import Link
from .topology import TopologySpec

__all__ = ["NetworkEmulator", "StepClock", "calibrate_link"]

# name -> (op kind for the ring model, name of the tensor argument whose size is the full tensor,
# or a rule); "full" = the unsharded size X moved in ring accounting.
_OPS: dict[str, str] = {
    "all_reduce": "all_reduce",
    "all_gather": "all_gather",
    "all_gather_into_tensor": "all_gather",
    "all_gather_single": "all_gather",
    "reduce_scatter": "reduce_scatter",
    "reduce_scatter_tensor": "reduce_scatter",
    "reduce_scatter_single": "reduce_scatter",
    "broadcast": "broadcast",
    "reduce": "reduce",
    "all_to_all_single": "all_to_all",
    "send": "send",
    "recv": "recv",
}
# ``isend``/``irecv`` stay unpatched: ``dist.P2POp`` checks its op by identity against them. Our ring
# collectives (the only point-to-point traffic of the engine) are charged by schedule replay instead.


def _nbytes(t: Any) -> int:
    if isinstance(t, torch.Tensor):
        return t.numel() * t.element_size()
    if isinstance(t, (list, tuple)):
        return sum(_nbytes(x) for x in t)
    return 0


@dataclass
class _Counters:
    bytes: dict[str, int] = field(default_factory=lambda: {"intra": 0, "inter": 0, "cross": 0})
    calls: dict[str, int] = field(default_factory=lambda: {"intra": 0, "inter": 0, "cross": 0})
    # what happened, to be charged under any link afterwards: (class, op, full bytes, ranks) or a schedule
    events: list[Any] = field(default_factory=list)


class NetworkEmulator:
    """Intercept ``torch.distributed`` on this rank: classify, count and charge every data-moving call.

    Use as a context manager around training; :meth:`snapshot` returns the counters and the clock.

    Parameters
    ----------
    spec:
        The ``g x m`` layout (a :class:`~bastion.distributed.topology.TopologySpec` or ``Topology``).
    link:
        The emulated link; ``None`` counts bytes and calls but charges no time.
    """

    def __init__(self, spec: TopologySpec, link: Link | None = None) -> None:
        self.spec = TopologySpec(spec.world_size, spec.group_size)
        self.link = link
        self.counters = _Counters()
        self._originals: dict[str, Any] = {}
        self._depth = threading.local()
        self._main = threading.get_ident()
        self._compute_start = 0.0
        self._comm_cpu = 0.0

    # ----------------------------------------------------------------- patching
    def __enter__(self) -> NetworkEmulator:
        if dist.get_world_size() != self.spec.world_size:
            raise ValueError(
                f"emulator layout has {self.spec.world_size} ranks, the process group {dist.get_world_size()}"
            )
        self.rank = dist.get_rank()
        for name in _OPS:
            fn = getattr(dist, name, None)
            if fn is None:
                continue
            self._originals[name] = fn
            setattr(dist, name, self._wrap(name, fn))
        from . import collectives

        for name in ("all_gather", "reduce_scatter", "all_reduce"):
            fn = getattr(collectives, name)
            self._originals["collectives." + name] = fn
            setattr(collectives, name, self._wrap_ring(name, fn))
        self.reset()
        return self

    def __exit__(self, *exc: Any) -> None:
        for name, fn in self._originals.items():
            if name.startswith("collectives."):
                from . import collectives

                setattr(collectives, name.split(".", 1)[1], fn)
            else:
                setattr(dist, name, fn)
        self._originals.clear()

    def _level(self) -> int:
        return getattr(self._depth, "n", 0)

    @contextlib.contextmanager
    def _nested(self) -> Iterator[int]:
        level = self._level()
        self._depth.n = level + 1
        try:
            yield level
        finally:
            self._depth.n = level

    def _ranks(self, group: Any) -> list[int]:
        if group is None or group is dist.group.WORLD:
            return list(range(self.spec.world_size))
        return list(dist.get_process_group_ranks(group))

    def _wrap(self, name: str, fn: Any) -> Any:
        sig = inspect.signature(fn)
        op = _OPS[name]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self._nested() as level:
                if level > 0 or getattr(self._depth, "silent", False):
                    return fn(*args, **kwargs)
                bound = sig.bind(*args, **kwargs)
                bound.apply_defaults()
                a = bound.arguments
                t0 = time.thread_time()
                if op == "recv":  # the sender is charged
                    work = fn(*args, **kwargs)
                elif op == "send":
                    peer = a.get("dst")
                    if peer is None:
                        peer = dist.get_global_rank(a["group"], a["group_dst"])
                    self._charge(self.spec.link([self.rank, int(peer)]), "send", _nbytes(a.get("tensor")), 2)
                    work = fn(*args, **kwargs)
                else:
                    ranks = self._ranks(a.get("group"))
                    q = len(ranks)
                    cls = self.spec.link(ranks)
                    self._charge(cls, op, self._full_bytes(name, a, q), q)
                    work = fn(*args, **kwargs)
                if a.get("async_op") and work is not None and op != "send" and op != "recv":
                    work.wait()
                self._comm_cpu += time.thread_time() - t0
                return work

        return wrapper

    def _wrap_ring(self, name: str, fn: Any) -> Any:
        from . import collectives

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.thread_time()
            with self.uncharged(), collectives.record_schedules() as schedules:
                result = fn(*args, **kwargs)
            for sched in schedules:  # one call per link class a ring collective uses, as the engine counts
                for tr in sched.transfers:
                    self.counters.bytes[tr.kind] += tr.nbytes
                for kind in {tr.kind for tr in sched.transfers}:
                    self.counters.calls[kind] += 1
                if sched.transfers:
                    self.counters.events.append(sched)
            self._comm_cpu += time.thread_time() - t0
            return result

        return wrapper

    @staticmethod
    def _full_bytes(name: str, a: dict[str, Any], q: int) -> int:
        if name in ("all_gather", "all_gather_into_tensor", "all_gather_single"):
            out = a.get("tensor_list", a.get("output_tensor", a.get("output")))
            return _nbytes(out)
        if name in ("reduce_scatter", "reduce_scatter_tensor", "reduce_scatter_single"):
            inp = a.get("input_list", a.get("input", a.get("input_tensor")))
            return _nbytes(inp)
        if name == "all_to_all_single":
            return _nbytes(a.get("input"))
        return _nbytes(a.get("tensor"))

    def _charge(self, cls: str, op: str, full_bytes: int, q: int) -> None:
        if q <= 1:
            return
        ring = (q - 1) * full_bytes // q * (2 if op == "all_reduce" else 1)
        moved = full_bytes if op == "send" else ring
        self.counters.bytes[cls] += moved
        self.counters.calls[cls] += 1
        self.counters.events.append((cls, op, full_bytes, q))

    # ----------------------------------------------------------------- clock
    def reset(self) -> None:
        self.counters = _Counters()
        self._compute_start = time.thread_time()
        self._comm_cpu = 0.0

    def comm_seconds(self, link: Link | None = None) -> dict[str, float]:
        """Charged seconds per class since :meth:`reset` under ``link`` (default: the emulator's)."""
        from . import collectives

        link = link or self.link
        out = {"intra": 0.0, "inter": 0.0, "cross": 0.0}
        if link is None:
            return out
        for ev in self.counters.events:
            if isinstance(ev, tuple):
                cls, op, full, q = ev
                out[cls] += link.collective_time(op, cls, full, q)
            else:
                kinds = {tr.kind for tr in ev.transfers}
                cls = "inter" if "inter" in kinds else "cross" if "cross" in kinds else "intra"
                out[cls] += collectives.replay(ev, link)
        return out

    def snapshot(self, link: Link | None = None) -> dict[str, Any]:
        """Bytes, calls and charged seconds per class; compute seconds (thread CPU time minus time
        spent inside intercepted calls) since :meth:`reset`."""
        compute = time.thread_time() - self._compute_start - self._comm_cpu
        return {
            "bytes": dict(self.counters.bytes),
            "calls": dict(self.counters.calls),
            "comm_seconds": self.comm_seconds(link),
            "compute_seconds": compute,
        }

    @contextlib.contextmanager
    def uncharged(self) -> Iterator[None]:
        """Calls inside are neither counted nor charged (bookkeeping, not training traffic)."""
        before = getattr(self._depth, "silent", False)
        self._depth.silent = True
        try:
            yield
        finally:
            self._depth.silent = before

    def max_over_ranks(self, value: float) -> float:
        """Uncharged MAX all-reduce of a float."""
        t = torch.tensor([value], dtype=torch.float64)
        with self.uncharged():
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t.item())


class StepClock:
    """Per-step virtual time = compute + charged comm, each maximised over ranks; medians after warm-up.

    ``links`` names the links to charge (the same run is priced under each, e.g. two calibrations).
    """

    def __init__(self, emulator: NetworkEmulator, links: dict[str, Link]) -> None:
        self.emu = emulator
        self.links = dict(links)
        self.steps: list[dict[str, float]] = []

    def start(self) -> None:
        self.emu.reset()

    def stop(self) -> dict[str, float]:
        """Close a step (collective: every rank calls it)."""
        snap = self.emu.snapshot()
        compute = snap["compute_seconds"]
        rec = {"compute": self.emu.max_over_ranks(compute)}
        for name, link in self.links.items():
            comm = sum(self.emu.comm_seconds(link).values())
            rec[f"comm[{name}]"] = self.emu.max_over_ranks(comm)
            rec[f"step[{name}]"] = self.emu.max_over_ranks(compute + comm)
        for cls in ("intra", "inter", "cross"):
            rec[f"bytes_{cls}"] = snap["bytes"][cls]
        self.steps.append(rec)
        return rec

    def median(self, warmup: int = 1) -> dict[str, float]:
        rows = self.steps[warmup:] or self.steps
        return {k: float(torch.tensor([r[k] for r in rows], dtype=torch.float64).median()) for k in rows[0]}


def calibrate_link(
    rho_c: float,
    zero3_comm_bytes: float,
    nnn_compute_seconds: float,
    group_size: int,
    message_bytes: float,
    ring_steps: int = 0,
) -> Link:
    """The spec's calibration: choose ``B_e`` so flat ZeRO-3's modelled comm is ``rho_c`` times NNN's compute.

    Flat ZeRO-3 moves ``zero3_comm_bytes`` per rank per step, all across group boundaries, in
    ``ring_steps`` ring steps, each one flow at ``B_e``: ``comm = (bytes + ring_steps U / 100) / B_e``
    with ``alpha_e = 0.01 U / B_e`` (``U`` = mean message bytes: small latency, as for LLaMA layers).
    Then ``B_i = 20 B_e`` and ``alpha_i = alpha_e / 10``. Fixed before any contender runs.

    >>> link = calibrate_link(1.0, 8e6, 2.0, group_size=4, message_bytes=1e5)
    >>> round(link.bw_inter), round(link.bw_intra)
    (4000000, 80000000)
    """
    if not rho_c > 0:
        raise ValueError(f"rho_c must be > 0, got {rho_c}")
    if not nnn_compute_seconds > 0:
        raise ValueError(f"nnn_compute_seconds must be > 0, got {nnn_compute_seconds}")
    if not zero3_comm_bytes > 0:
        raise ValueError(f"zero3_comm_bytes must be > 0, got {zero3_comm_bytes}")
    if not message_bytes > 0:
        raise ValueError(f"message_bytes must be > 0, got {message_bytes}")
    bw_e = (zero3_comm_bytes + ring_steps * 0.01 * message_bytes) / (rho_c * nnn_compute_seconds)
    alpha_e = 0.01 * message_bytes / bw_e
    return Link(alpha_intra=alpha_e / 10, alpha_inter=alpha_e, bw_intra=20 * bw_e, bw_inter=bw_e, group_size=group_size)
