"""Ring collectives on point-to-point ops: flat ring, 2-level hierarchical ring and HO-Ring, with schedules.

Three collectives on 1-D tensors, with the semantics of their ``torch.distributed`` namesakes over the
``n = g x m`` ranks of a :class:`~bastion.distributed.topology.Topology` (rank ``r = k*m + l``):

- :func:`all_gather` -- rank ``r``'s input lands at slot ``r`` of the output (``all_gather_into_tensor``);
- :func:`reduce_scatter` -- sum; rank ``r`` gets chunk ``r`` (``reduce_scatter_tensor``);
- :func:`all_reduce` -- sum, in place, any length (padded internally to a multiple of ``n``; the
  padding never reaches the caller).

Algorithms (``algorithm=``):

``"flat"``
    One ring over all ``n`` ranks in rank order (stock ZeRO). A ring step is ``intra`` if the next rank
    is in the same group, else ``cross`` (only local index ``m-1`` sends across a group boundary).
    All-reduce = ring reduce-scatter + ring all-gather.
``"hier"``
    Two levels (PaRO-CC): one intra ring per group (``topo.intra_ranks(k)``, position ``l``) and ``m``
    inter rings (``topo.inter_ranks(l)``, position ``k``). All-gather = inter AG, then intra AG;
    reduce-scatter = intra RS, then inter RS; all-reduce = intra RS + inter RS + inter AG + intra AG.
    Slots are permuted internally (a work buffer indexed ``[l, k]``) so the results equal the flat ones.
``"ho_ring"``
    The hierarchical rings, but the tensor is cut into ``c`` pieces (``pieces=``) that are pipelined:
    while piece ``j`` is on the inter rings, the intra ring works on a neighbouring piece, so
    ``T ~ c * max(Te, Ti) + min(Te, Ti)`` with per-piece phase times ``Te``, ``Ti``; ``c = 1`` is
    ``"hier"``. **Reconstruction**: the body of the HO-Ring paper with its exact construction was not
    available; this is our construction from the abstract's description (spec ``paro.md``, "PaRO-CC and
    HO-Ring"). ``pieces=None`` picks ``c`` in ``1..64`` minimising the modelled time when a ``link`` is
    given (:func:`best_pieces`), else ``c = 4`` (:data:`DEFAULT_PIECES`); ``c`` is clamped to the
    number of elements of one rank's chunk.

Every reduced element is summed on exactly one rank in a fixed ring order, and all-reduce gathers those
sums, so the results are deterministic and bitwise identical on all ranks (exact on integers; on
floats they may differ from another backend's summation order in the last bits).

Schedules (the timing model; spec "Emulated slow link"). Each call records what *this rank* sends as
a list of :class:`Transfer` ``(index, kind, nbytes, deps)``: ``kind`` is ``intra``/``inter``/
``cross``; ``deps`` are earlier transfers of this rank that must finish first (the previous step of
the same ring; for the first step of a piece's phase, the last step of that piece's previous phase).
:func:`replay` charges a schedule on one intra and one inter resource per rank (``cross`` uses the
inter resource), each transfer taking ``link.step_time(kind, nbytes)`` and starting when its deps are
done and its resource is free (first come first served in list order). The time of a collective is the
max over ranks (the flat ring's slowest rank is one whose sends cross groups; the hierarchical
algorithms give every rank the same schedule). :func:`schedule_for` builds the schedule of a call
without running anything (the live calls execute the very same plan), :func:`emulated_time` replays it,
and :func:`record_schedules` hands the live schedules to an observer::

    with record_schedules() as recs:
        all_reduce(t, topo, "ho_ring", link=link)
    seconds = max(replay(s, link) for s in recs)  # on this rank

Live execution: the per-piece phases are driven in lock-step rounds; in each round the intra resource
and the inter resource each post at most one ring step (``dist.batch_isend_irecv`` of one send and
one receive -- supported by gloo and NCCL, and safe when both ring neighbours are the same rank, g=2 or
m=2), then the round's steps are waited on. The posting order is the schedule's list order. Tags are
distinct per piece and phase (gloo matches on ``(src, tag)``; NCCL ignores them and matches in order,
which holds because every rank posts the same sequence).

>>> from bastion.distributed.netmodel import Link
>>> spec = TopologySpec(world_size=4, group_size=2)
>>> [(t.kind, t.nbytes, t.deps) for t in schedule_for("all_gather", "hier", 64, spec).transfers]
[('inter', 16, ()), ('intra', 32, (0,))]
"""

from __future__ import annotations

import contextvars
import functools
import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from bastion.distributed.netmodel import Link
from bastion.distributed.topology import Topology, TopologySpec

__all__ = [
    "ALGORITHMS",
    "DEFAULT_PIECES",
    "MAX_PIECES",
    "OPS",
    "Schedule",
    "Transfer",
    "all_gather",
    "all_reduce",
    "best_pieces",
    "emulated_time",
    "in_ring_collective",
    "record_schedules",
    "reduce_scatter",
    "replay",
    "schedule_for",
]

ALGORITHMS = ("flat", "hier", "ho_ring")
OPS = ("all_gather", "reduce_scatter", "all_reduce")
DEFAULT_PIECES = 4
MAX_PIECES = 64

# Tags: base + (piece mod 2**16) * 8 + phase code. At most a few pieces are in flight at once, so the
# modulus never makes two live rings share a tag; the base keeps clear of user p2p (tag 0).
_TAG_BASE = 1 << 20
_FLAT_RS, _FLAT_AG, _INTRA_RS, _INTER_RS, _INTER_AG, _INTRA_AG = range(6)
_LANES = ("intra", "inter")


@dataclass(frozen=True)
class Transfer:
    """One ring step of this rank: send ``nbytes`` over a ``kind`` link after the transfers ``deps``."""

    index: int
    kind: str
    nbytes: int
    deps: tuple[int, ...] = ()


@dataclass(frozen=True)
class Schedule:
    """What one rank sends in one collective call (see :func:`schedule_for`).

    ``nbytes`` is the full tensor: the all-gather output, the reduce-scatter input, the all-reduce
    tensor (unpadded). ``pieces`` is the piece count actually used (1 unless ``ho_ring``).
    """

    op: str
    algorithm: str
    nbytes: int
    itemsize: int
    world_size: int
    group_size: int
    rank: int
    pieces: int
    transfers: tuple[Transfer, ...] = field(repr=False)

    @property
    def bytes_by_kind(self) -> dict[str, int]:
        """Bytes this rank sends per link class."""
        out = {"intra": 0, "inter": 0, "cross": 0}
        for t in self.transfers:
            out[t.kind] += t.nbytes
        return out


# --------------------------------------------------------------------------------------------------
# Observers
# --------------------------------------------------------------------------------------------------

_SINKS: contextvars.ContextVar[tuple[list[Schedule], ...]] = contextvars.ContextVar(
    "bastion_collectives_sinks", default=()
)
_ACTIVE: contextvars.ContextVar[bool] = contextvars.ContextVar("bastion_collectives_active", default=False)


@contextmanager
def record_schedules() -> Iterator[list[Schedule]]:
    """Collect the :class:`Schedule` of every collective this context runs, in call order.

    Nested contexts each receive every schedule issued while they are open. State lives in a
    :mod:`contextvars` variable, so nothing leaks past the ``with`` block or into other threads.
    """
    sink: list[Schedule] = []
    token = _SINKS.set((*_SINKS.get(), sink))
    try:
        yield sink
    finally:
        _SINKS.reset(token)


def in_ring_collective() -> bool:
    """True while this module's collectives run (for an interceptor that charges their schedules, not
    their individual point-to-point ops)."""
    return _ACTIVE.get()


# --------------------------------------------------------------------------------------------------
# Plans: the phases of a call and their order on the two resources (shared by live runs and schedule_for)
# --------------------------------------------------------------------------------------------------


@dataclass
class _Phase:
    piece: int
    code: int
    mode: str  # "ag" | "rs"
    kind: str  # link class of this rank's sends
    ranks: tuple[int, ...]  # ring members in ring order
    pos: int  # this rank's position in the ring
    chunk: int  # elements per ring chunk
    after: int | None  # phase (of the same piece) that must finish first

    @property
    def lane(self) -> str:
        return "intra" if self.kind == "intra" else "inter"

    @property
    def steps(self) -> int:
        return len(self.ranks) - 1

    @property
    def tag(self) -> int:
        return _TAG_BASE + (self.piece % (1 << 16)) * 8 + self.code


@dataclass
class _Plan:
    chunk: int  # C: elements of one rank's chunk (after padding)
    sizes: list[int]  # C_j per piece
    offsets: list[int]
    phases: list[_Phase]
    lanes: dict[str, list[int]]


def _piece_sizes(total: int, pieces: int) -> list[int]:
    c = max(1, min(pieces, total))
    base, extra = divmod(total, c)
    return [base + (1 if j < extra else 0) for j in range(c)]


def _build_plan(op: str, algorithm: str, chunk: int, spec: TopologySpec, rank: int, pieces: int) -> _Plan:
    n, m, g = spec.world_size, spec.group_size, spec.num_groups
    k, li = spec.coords(rank)
    phases: list[_Phase] = []
    lanes: dict[str, list[tuple[tuple[int, int], int]]] = {"intra": [], "inter": []}
    if algorithm == "flat":
        sizes = [chunk]
        nxt = (rank + 1) % n
        kind = "intra" if nxt // m == k else "cross"
        stages = {"all_gather": [_FLAT_AG], "reduce_scatter": [_FLAT_RS], "all_reduce": [_FLAT_RS, _FLAT_AG]}[op]
        if n > 1 and chunk > 0:
            for i, code in enumerate(stages):
                mode = "rs" if code == _FLAT_RS else "ag"
                phases.append(_Phase(0, code, mode, kind, tuple(range(n)), rank, chunk, i - 1 if i else None))
                lanes[phases[-1].lane].append(((0, i), i))
    else:
        sizes = _piece_sizes(chunk, pieces if algorithm == "ho_ring" else 1) if chunk > 0 else []
        intra, inter = tuple(spec.intra_ranks(k)), tuple(spec.inter_ranks(li))
        stages = {
            "all_gather": [_INTER_AG, _INTRA_AG],
            "reduce_scatter": [_INTRA_RS, _INTER_RS],
            "all_reduce": [_INTRA_RS, _INTER_RS, _INTER_AG, _INTRA_AG],
        }[op]
        for j, cj in enumerate(sizes):
            prev: int | None = None
            for s, code in enumerate(stages):
                is_intra = code in (_INTRA_RS, _INTRA_AG)
                ranks, pos = (intra, li) if is_intra else (inter, k)
                if len(ranks) == 1:
                    continue
                mode = "rs" if code in (_INTRA_RS, _INTER_RS) else "ag"
                ph = _Phase(
                    j, code, mode, "intra" if is_intra else "inter", ranks, pos, g * cj if is_intra else cj, prev
                )
                prev = len(phases)
                phases.append(ph)
                # Lane order: by piece, except that an all-reduce's intra AG of piece j waits behind the
                # intra RS of piece j+1 (so the next piece is ready for the inter rings meanwhile).
                delay = 3 if (op == "all_reduce" and code == _INTRA_AG) else 0
                lanes[ph.lane].append(((2 * j + delay, s), prev))
    offsets = [sum(sizes[:j]) for j in range(len(sizes))]
    ordered = {lane: [i for _, i in sorted(entries)] for lane, entries in lanes.items()}
    return _Plan(chunk, sizes, offsets, phases, ordered)


def _drive(
    plan: _Plan,
    itemsize: int,
    post: Callable[[int, int], Any] | None = None,
    complete: Callable[[int, int, Any], None] | None = None,
) -> list[Transfer]:
    """Run the plan in lock-step rounds; return the transfers in posting order.

    Each round, each lane posts the next step of its head phase if that phase's predecessor is done;
    then every posted step completes. Without ``post``/``complete`` this only builds the schedule.
    """
    phases = plan.phases
    heads = dict.fromkeys(_LANES, 0)
    step = [0] * len(phases)
    done = [False] * len(phases)
    last: list[int | None] = [None] * len(phases)
    transfers: list[Transfer] = []
    remaining = sum(len(v) for v in plan.lanes.values())
    while remaining:
        active = []
        for lane in _LANES:
            order = plan.lanes[lane]
            if heads[lane] == len(order):
                continue
            i = order[heads[lane]]
            ph = phases[i]
            if ph.after is not None and not done[ph.after]:
                continue
            s = step[i]
            if s:
                deps: tuple[int, ...] = (last[i],)  # type: ignore[assignment]
            else:
                deps = (last[ph.after],) if ph.after is not None else ()  # type: ignore[assignment]
            idx = len(transfers)
            transfers.append(Transfer(idx, ph.kind, ph.chunk * itemsize, deps))
            last[i] = idx
            active.append((lane, i, s, post(i, s) if post is not None else None))
        if not active:  # cannot happen: every predecessor sits earlier in some lane
            raise RuntimeError("ring plan deadlocked (internal error)")
        for lane, i, s, handle in active:
            if complete is not None:
                complete(i, s, handle)
            step[i] += 1
            if step[i] == phases[i].steps:
                done[i] = True
                heads[lane] += 1
                remaining -= 1
    return transfers


# --------------------------------------------------------------------------------------------------
# Pure functions: schedules, replay, piece choice
# --------------------------------------------------------------------------------------------------


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_algorithm(algorithm: Any) -> str:
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    return algorithm


def _check_pieces(pieces: Any, algorithm: str) -> int | None:
    if pieces is None:
        return None
    _check_int("pieces", pieces, 1)
    if algorithm != "ho_ring" and pieces != 1:
        raise ValueError(f"pieces applies to algorithm='ho_ring' only, got pieces={pieces} with {algorithm!r}")
    return pieces


def _spec(topo_spec: Any) -> TopologySpec:
    if not isinstance(topo_spec, TopologySpec):
        raise TypeError(f"topo_spec must be a TopologySpec (or Topology), got {type(topo_spec).__name__}")
    return TopologySpec(world_size=topo_spec.world_size, group_size=topo_spec.group_size)


def _chunk_elems(elems: int, n: int) -> int:
    """C: elements per rank chunk; ``elems`` is the full tensor (AG output, RS input, AR tensor)."""
    return -(-elems // n)


@functools.lru_cache(maxsize=4096)
def _best_pieces(op: str, nbytes: int, spec: TopologySpec, link: Link, itemsize: int, max_pieces: int) -> int:
    best, best_t = 1, math.inf
    chunk = _chunk_elems(nbytes // itemsize, spec.world_size)
    for c in range(1, min(max_pieces, max(chunk, 1)) + 1):
        t = replay(_schedule(op, "ho_ring", nbytes, spec, spec.group_size - 1, c, itemsize), link)
        if t < best_t:
            best, best_t = c, t
    return best


def best_pieces(
    op: str, nbytes: int, topo_spec: TopologySpec, link: Link, *, itemsize: int = 1, max_pieces: int = MAX_PIECES
) -> int:
    """The HO-Ring piece count ``c`` in ``1..max_pieces`` with the least modelled time (ties: smallest).

    Parameters
    ----------
    op, nbytes, topo_spec, itemsize
        As in :func:`schedule_for`.
    link
        The alpha-beta link model.
    max_pieces
        Largest ``c`` tried (also capped by the elements of one rank's chunk).

    Returns
    -------
    int
        The piece count; cached per arguments.
    """
    if op not in OPS:
        raise ValueError(f"op must be one of {OPS}, got {op!r}")
    if not isinstance(link, Link):
        raise TypeError(f"link must be a netmodel.Link, got {type(link).__name__}")
    _check_int("nbytes", nbytes, 0)
    _check_int("itemsize", itemsize, 1)
    _check_int("max_pieces", max_pieces, 1)
    return _best_pieces(op, nbytes, _spec(topo_spec), link, itemsize, max_pieces)


def _resolve_pieces(
    op: str, algorithm: str, nbytes: int, spec: TopologySpec, pieces: int | None, itemsize: int, link: Link | None
) -> int:
    if algorithm != "ho_ring":
        return 1
    if pieces is None:
        if link is None:
            pieces = DEFAULT_PIECES
        else:
            if not isinstance(link, Link):
                raise TypeError(f"link must be a netmodel.Link, got {type(link).__name__}")
            pieces = _best_pieces(op, nbytes, spec, link, itemsize, MAX_PIECES)
    chunk = _chunk_elems(nbytes // itemsize, spec.world_size)
    return max(1, min(pieces, chunk))


def _schedule(
    op: str, algorithm: str, nbytes: int, spec: TopologySpec, rank: int, pieces: int, itemsize: int
) -> Schedule:
    chunk = _chunk_elems(nbytes // itemsize, spec.world_size)
    plan = _build_plan(op, algorithm, chunk, spec, rank, pieces)
    transfers = _drive(plan, itemsize)
    return Schedule(op, algorithm, nbytes, itemsize, spec.world_size, spec.group_size, rank, pieces, tuple(transfers))


def schedule_for(
    op: str,
    algorithm: str,
    nbytes: int,
    topo_spec: TopologySpec,
    pieces: int | None = None,
    *,
    rank: int | None = None,
    itemsize: int = 1,
    link: Link | None = None,
) -> Schedule:
    """The schedule one rank's live call records, built without running anything.

    Parameters
    ----------
    op
        ``"all_gather"``, ``"reduce_scatter"`` or ``"all_reduce"``.
    algorithm
        ``"flat"``, ``"hier"`` or ``"ho_ring"``.
    nbytes
        Bytes of the full tensor: the all-gather output, the reduce-scatter input, the all-reduce
        tensor. Padded up to a multiple of ``n`` elements, as the live calls do.
    topo_spec
        The ``g x m`` layout.
    pieces
        HO-Ring piece count (``None``: :func:`best_pieces` if ``link`` is given, else
        :data:`DEFAULT_PIECES`); clamped to the elements of one rank's chunk. ``None`` or 1 otherwise.
    rank
        Whose schedule; default ``m - 1``, whose flat-ring sends cross a group boundary (the slowest
        rank). The hierarchical algorithms give every rank the same schedule.
    itemsize
        Bytes per element (``nbytes`` must be a multiple).
    link
        Only used to pick ``pieces``.

    Returns
    -------
    Schedule

    Examples
    --------
    >>> spec = TopologySpec(world_size=8, group_size=4)
    >>> s = schedule_for("all_gather", "flat", 8 * 100, spec, rank=3)
    >>> len(s.transfers), s.bytes_by_kind
    (7, {'intra': 0, 'inter': 0, 'cross': 700})
    >>> s = schedule_for("all_gather", "ho_ring", 4 * 2, TopologySpec(world_size=4, group_size=2), pieces=2)
    >>> [(t.kind, t.nbytes, t.deps) for t in s.transfers]  # piece 1 goes inter while piece 0 is intra
    [('inter', 1, ()), ('intra', 2, (0,)), ('inter', 1, ()), ('intra', 2, (2,))]
    """
    if op not in OPS:
        raise ValueError(f"op must be one of {OPS}, got {op!r}")
    _check_algorithm(algorithm)
    _check_int("nbytes", nbytes, 0)
    _check_int("itemsize", itemsize, 1)
    if nbytes % itemsize:
        raise ValueError(f"nbytes ({nbytes}) must be a multiple of itemsize ({itemsize})")
    spec = _spec(topo_spec)
    pieces = _check_pieces(pieces, algorithm)
    if rank is None:
        rank = spec.group_size - 1
    _check_int("rank", rank, 0)
    if rank >= spec.world_size:
        raise ValueError(f"rank must be < world size {spec.world_size}, got {rank}")
    c = _resolve_pieces(op, algorithm, nbytes, spec, pieces, itemsize, link)
    return _schedule(op, algorithm, nbytes, spec, rank, c, itemsize)


def replay(schedule: Schedule | Iterable[Transfer], link: Link) -> float:
    """Discrete-event time of one rank's schedule: one intra and one inter resource (``cross`` uses inter).

    A transfer starts when its deps have finished and its resource is free (transfers take each
    resource in list order) and lasts ``link.step_time(kind, nbytes)``. Returns the last finish time.

    >>> link = Link(alpha_intra=0.0, alpha_inter=0.0, bw_intra=100.0, bw_inter=10.0, group_size=1)
    >>> replay([Transfer(0, "inter", 10), Transfer(1, "intra", 100, (0,)), Transfer(2, "inter", 10)], link)
    2.0

    (The second inter transfer runs while the intra one does; each takes one second.)
    """
    if not isinstance(link, Link):
        raise TypeError(f"link must be a netmodel.Link, got {type(link).__name__}")
    transfers = schedule.transfers if isinstance(schedule, Schedule) else tuple(schedule)
    free = {"intra": 0.0, "inter": 0.0}
    finish: list[float] = []
    for i, t in enumerate(transfers):
        if t.index != i:
            raise ValueError(f"schedule: transfer {i} has index {t.index}")
        if any(not 0 <= d < i for d in t.deps):
            raise ValueError(f"schedule: transfer {i} depends on {t.deps}, not all earlier transfers")
        resource = "intra" if t.kind == "intra" else "inter"
        start = max([free[resource], *(finish[d] for d in t.deps)])
        end = start + link.step_time(t.kind, t.nbytes)
        finish.append(end)
        free[resource] = end
    return max(finish, default=0.0)


def emulated_time(
    op: str,
    algorithm: str,
    nbytes: int,
    topo_spec: TopologySpec,
    link: Link,
    pieces: int | None = None,
    *,
    itemsize: int = 1,
) -> float:
    """Modelled seconds of one collective: the max over ranks of :func:`replay` of :func:`schedule_for`.

    Schedules depend on the rank only through whether its flat-ring sends cross a group boundary, so
    ranks ``0`` and ``m - 1`` stand for all. ``pieces=None`` with ``ho_ring`` picks the best ``c``.

    >>> link = Link(alpha_intra=3e-6, alpha_inter=1e-5, bw_intra=240e9, bw_inter=12.5e9, group_size=8)
    >>> spec = TopologySpec(world_size=16, group_size=8)
    >>> ratio = emulated_time("all_gather", "flat", 2**28, spec, link) / emulated_time(
    ...     "all_gather", "ho_ring", 2**28, spec, link)
    >>> round(ratio, 2)
    1.85
    """
    spec = _spec(topo_spec)
    ranks = {0, spec.group_size - 1}
    return max(
        replay(schedule_for(op, algorithm, nbytes, spec, pieces, rank=r, itemsize=itemsize, link=link), link)
        for r in ranks
    )


# --------------------------------------------------------------------------------------------------
# Live collectives
# --------------------------------------------------------------------------------------------------


def _check_tensor(name: str, t: Any) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(t.shape)}")
    return t


def _check_pair(output: torch.Tensor, input: torch.Tensor) -> None:
    _check_tensor("output", output)
    _check_tensor("input", input)
    if output.dtype != input.dtype:
        raise TypeError(f"output dtype {output.dtype} differs from input dtype {input.dtype}")
    if output.device != input.device:
        raise ValueError(f"output device {output.device} differs from input device {input.device}")


def _check_topo(topo: Any, live: bool) -> Topology:
    """A layout for the size checks; with ``live``, also its process groups."""
    if not isinstance(topo, TopologySpec) or (live and not (hasattr(topo, "rank") and hasattr(topo, "world"))):
        raise TypeError(f"topo must be a Topology (with process groups), got {type(topo).__name__}")
    return topo  # type: ignore[return-value]


def _run(
    op: str,
    algorithm: str,
    topo: Topology,
    nbytes: int,
    itemsize: int,
    pieces: int | None,
    link: Link | None,
    buffers: Callable[[_Plan], list[torch.Tensor]],
) -> None:
    """Plan the call, drive it with real point-to-point ops on ``buffers(plan)``, report the schedule."""
    spec = TopologySpec(world_size=topo.world_size, group_size=topo.group_size)
    c = _resolve_pieces(op, algorithm, nbytes, spec, pieces, itemsize, link)
    chunk = _chunk_elems(nbytes // itemsize, spec.world_size)
    plan = _build_plan(op, algorithm, chunk, spec, topo.rank, c)
    bufs = buffers(plan)
    tmps: dict[int, torch.Tensor] = {}
    group = topo.world

    def post(i: int, s: int) -> list[Any]:
        ph = plan.phases[i]
        q, pos = len(ph.ranks), ph.pos
        chunks = bufs[i].view(q, ph.chunk)
        nxt, prv = ph.ranks[(pos + 1) % q], ph.ranks[(pos - 1) % q]
        if ph.mode == "ag":
            send, recv = chunks[(pos - s) % q], chunks[(pos - s - 1) % q]
        else:
            if i not in tmps:
                tmps[i] = torch.empty_like(chunks[0])
            send, recv = chunks[(pos - s - 1) % q], tmps[i]
        ops = [
            dist.P2POp(dist.isend, send, group=group, tag=ph.tag, group_peer=nxt),
            dist.P2POp(dist.irecv, recv, group=group, tag=ph.tag, group_peer=prv),
        ]
        return dist.batch_isend_irecv(ops)

    def complete(i: int, s: int, works: list[Any]) -> None:
        for w in works:
            w.wait()
        ph = plan.phases[i]
        if ph.mode == "rs":
            q = len(ph.ranks)
            bufs[i].view(q, ph.chunk)[(ph.pos - s - 2) % q].add_(tmps[i])
            if s == ph.steps - 1:
                del tmps[i]

    token = _ACTIVE.set(True)
    try:
        transfers = _drive(plan, itemsize, post, complete)
    finally:
        _ACTIVE.reset(token)
    sinks = _SINKS.get()
    if sinks:
        sched = Schedule(
            op, algorithm, nbytes, itemsize, spec.world_size, spec.group_size, topo.rank, c, tuple(transfers)
        )
        for sink in sinks:
            sink.append(sched)


def _piece_views(plan: _Plan, work: list[torch.Tensor], m: int, li: int) -> list[torch.Tensor]:
    """Per phase, its ring buffer: for the hierarchical algorithms ``work[j]`` is piece ``j``'s buffer,
    shaped ``(m, g, C_j)`` for AG/RS (slot ``k*m + l`` at ``[l, k]``) and flat ``n*C_j`` for AR."""
    out = []
    for ph in plan.phases:
        w = work[ph.piece]
        out.append(w.view(-1) if ph.code in (_INTRA_RS, _INTRA_AG) else w.view(m, -1)[li])
    return out


@torch.no_grad()
def all_gather(
    output: torch.Tensor,
    input: torch.Tensor,
    topo: Topology,
    algorithm: str = "flat",
    pieces: int | None = None,
    *,
    link: Link | None = None,
) -> torch.Tensor:
    """Gather every rank's 1-D ``input`` into ``output`` (rank ``r`` at slot ``r``); returns ``output``.

    Parameters
    ----------
    output
        1-D, ``n * len(input)`` elements, same dtype and device as ``input``.
    input
        1-D; the same length on all ranks.
    topo
        The :class:`Topology` (every rank passes the same layout).
    algorithm
        ``"flat"``, ``"hier"`` or ``"ho_ring"``.
    pieces
        HO-Ring piece count (see the module docstring).
    link
        Optional link model; with ``ho_ring`` and ``pieces=None`` it picks the piece count.
    """
    _check_pair(output, input)
    _check_algorithm(algorithm)
    pieces = _check_pieces(pieces, algorithm)
    topo = _check_topo(topo, live=False)
    n, m, g = topo.world_size, topo.group_size, topo.num_groups
    C = input.numel()
    if output.numel() != n * C:
        raise ValueError(f"output must have world_size * len(input) = {n * C} elements, got {output.numel()}")
    topo = _check_topo(topo, live=True)
    k, li = topo.coords(topo.rank)
    itemsize = input.element_size()
    target = output if output.is_contiguous() else torch.empty_like(output, memory_format=torch.contiguous_format)
    results: list[torch.Tensor] = []

    def buffers(plan: _Plan) -> list[torch.Tensor]:
        if algorithm == "flat":
            target.view(n, C)[topo.rank].copy_(input)
            return [target for _ in plan.phases]
        for off, cj in zip(plan.offsets, plan.sizes, strict=True):
            w = torch.empty((m, g, cj), dtype=input.dtype, device=input.device)
            w[li, k].copy_(input[off : off + cj])
            results.append(w)
        return _piece_views(plan, results, m, li)

    _run("all_gather", algorithm, topo, n * C * itemsize, itemsize, pieces, link, buffers)
    if algorithm != "flat":
        grid = target.view(g, m, C)
        for off, w in zip(_offsets(results), results, strict=True):
            grid[:, :, off : off + w.shape[2]].copy_(w.permute(1, 0, 2))
    if target is not output:
        output.copy_(target)
    return output


def _offsets(work: list[torch.Tensor]) -> list[int]:
    offs, acc = [], 0
    for w in work:
        offs.append(acc)
        acc += w.shape[-1]
    return offs


@torch.no_grad()
def reduce_scatter(
    output: torch.Tensor,
    input: torch.Tensor,
    topo: Topology,
    algorithm: str = "flat",
    pieces: int | None = None,
    *,
    link: Link | None = None,
) -> torch.Tensor:
    """Sum ``input`` over ranks; rank ``r`` gets chunk ``r`` in ``output``; returns ``output``.

    Parameters
    ----------
    output
        1-D, ``len(input) / n`` elements, same dtype and device as ``input``.
    input
        1-D, ``n * len(output)`` elements; not modified.
    topo, algorithm, pieces, link
        As in :func:`all_gather`.
    """
    _check_pair(output, input)
    _check_algorithm(algorithm)
    pieces = _check_pieces(pieces, algorithm)
    topo = _check_topo(topo, live=False)
    n, m, g = topo.world_size, topo.group_size, topo.num_groups
    C = output.numel()
    if input.numel() != n * C:
        raise ValueError(f"input must have world_size * len(output) = {n * C} elements, got {input.numel()}")
    topo = _check_topo(topo, live=True)
    k, li = topo.coords(topo.rank)
    itemsize = input.element_size()
    work: list[torch.Tensor] = []

    def buffers(plan: _Plan) -> list[torch.Tensor]:
        if algorithm == "flat":
            work.append(input.contiguous().clone())
            return [work[0] for _ in plan.phases]
        grid = input.view(g, m, C) if input.is_contiguous() else input.contiguous().view(g, m, C)
        for off, cj in zip(plan.offsets, plan.sizes, strict=True):
            w = torch.empty((m, g, cj), dtype=input.dtype, device=input.device)  # never a view of input
            work.append(w.copy_(grid[:, :, off : off + cj].permute(1, 0, 2)))
        return _piece_views(plan, work, m, li)

    _run("reduce_scatter", algorithm, topo, n * C * itemsize, itemsize, pieces, link, buffers)
    if C == 0:
        return output
    if algorithm == "flat":
        output.copy_(work[0].view(n, C)[topo.rank])
    else:
        for off, w in zip(_offsets(work), work, strict=True):
            output[off : off + w.shape[2]].copy_(w[li, k])
    return output


@torch.no_grad()
def all_reduce(
    tensor: torch.Tensor,
    topo: Topology,
    algorithm: str = "flat",
    pieces: int | None = None,
    *,
    link: Link | None = None,
) -> torch.Tensor:
    """Sum the 1-D ``tensor`` over ranks, in place; returns ``tensor``. Any length (padded internally).

    Parameters
    ----------
    tensor
        1-D; the same length and dtype on all ranks.
    topo, algorithm, pieces, link
        As in :func:`all_gather`.
    """
    _check_tensor("tensor", tensor)
    _check_algorithm(algorithm)
    pieces = _check_pieces(pieces, algorithm)
    topo = _check_topo(topo, live=True)
    n = topo.world_size
    L = tensor.numel()
    itemsize = tensor.element_size()
    C = -(-L // n)
    inplace = tensor.is_contiguous() and n * C == L
    buf = tensor if inplace else torch.zeros(n * C, dtype=tensor.dtype, device=tensor.device)

    def buffers(plan: _Plan) -> list[torch.Tensor]:
        if not inplace:
            buf[:L].copy_(tensor)
        if algorithm == "flat":
            return [buf for _ in plan.phases]
        work = [buf[n * off : n * (off + cj)] for off, cj in zip(plan.offsets, plan.sizes, strict=True)]
        return _piece_views(plan, work, topo.group_size, topo.coords(topo.rank)[1])

    _run("all_reduce", algorithm, topo, L * itemsize, itemsize, pieces, link, buffers)
    if not inplace:
        tensor.copy_(buf[:L])
    return tensor
