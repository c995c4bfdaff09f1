"""Analytic cost model of PaRO: memory, communication and step time of a strategy word; HO-Ring; an advisor.

What comes from where (``/work/shared/specs/paro.md``; tags as there):

- **[paper]/[code]** the words (``p g os``), the memory formula ``M = b_p·Ψ/d(p) + b_g·Ψ'/d(g) + K·Ψ'/d(os)``
  with its LLaMA-7B figures, the per-step procedure of the ten shipped words and the closed-form byte
  table (measured byte-exact on a 2x4 prototype, spec "Communication").
- **[recon]** everything else here: the generic rule that gives the four other valid words (``NNI``,
  ``INI``, ``GNG``, ``GIG``); the alpha-beta times (built on :class:`~bastion.distributed.netmodel.Link`);
  the HO-Ring pipeline model (the paper body with its construction was not available); the cluster and
  model presets, the activation-memory and compute-time estimates and the advisor. Nothing here was fitted
  to the paper's throughput claims: the tests only *document* how the simulator stands against them.

Conventions. ``n = g x m`` ranks (``world_size``, ``num_groups``, ``group_size``). Bytes are per rank per
optimizer step. Φ is the size in bytes of the tensor a collective moves: ``b_p·Ψ`` for the parameter
gathers of the forward/backward passes, ``b_p·Ψ'`` for the rebuild after the update (only updated
parameters change; with ``Ψ' = Ψ`` this is the spec's ``b_p·Ψ``), ``b_g·Ψ'`` for gradients. Every *inter*
collective acts on a rank's ``1/m`` intra shard (full size ``Φ/m``, the official layout), so a ring
AG/RS over ``q`` ranks moves ``(q-1)/q`` of its full size per rank (AR twice):
``ai = (m-1)/m·Φ`` intra, ``ae = (g-1)/(g·m)·Φ`` inter. A *glob* collective is, under
``collective="hier"`` (PaRO-CC), intra RS + inter RS (RS), inter AG + intra AG (AG), intra RS + inter AR +
intra AG (AR); under ``collective="flat"`` (stock ZeRO) it is one ring over the ``n`` ranks whose
``(n-1)/n·Φ`` per rank all crosses group boundaries (counted as ``cross``; ``intra`` when there is one
group, ``inter`` when each group is one rank).

GB/s here and in the CLI are 1e9 bytes/s; GiB are 2**30 bytes.

>>> round(memory_bytes("NIG", 6.74e9, world_size=32, group_size=8)["total"] / GIB, 1)
16.5
>>> for c in schedule("NIG", 4):
...     print(c)
4 x reduce_scatter intra grad (micro)
1 x reduce_scatter inter grad (boundary)
1 x all_gather glob param (update)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from ..core.checks import check_choice, check_float, check_int
from .netmodel import Link
from .words import VALID_WORDS, ZERO_WORDS, degree, equivalent_word, parse_word

__all__ = [
    "CLUSTERS",
    "COLLECTIVES",
    "GIB",
    "MODELS",
    "PRECISIONS",
    "ClusterSpec",
    "Collective",
    "ModelSpec",
    "activation_bytes",
    "advise",
    "collective_seconds",
    "comm_breakdown",
    "comm_bytes",
    "custom_model",
    "flat_ring_time",
    "ho_ring_plan",
    "ho_ring_time",
    "memory_bytes",
    "micro_step_flops",
    "nearest_model",
    "schedule",
    "simulate",
    "step_time",
]

GIB = 2**30
#: ``(b_p, b_g, K)``: bytes per parameter, per gradient and of optimizer state per trainable parameter.
#: bf16 = mixed precision (bf16 params/grads, fp32 master copy + Adam m, v); fp32/fp64 = Adam m, v only.
PRECISIONS: dict[str, tuple[int, int, int]] = {"bf16": (2, 2, 12), "fp32": (4, 4, 8), "fp64": (8, 8, 16)}
COLLECTIVES = ("hier", "flat")
OPS = ("all_gather", "reduce_scatter", "all_reduce")
SCOPES = ("intra", "inter", "glob")
TENSORS = ("param", "grad")
PHASES = ("micro", "boundary", "update")


# --------------------------------------------------------------------------- validation
@dataclass(frozen=True)
class _Setup:
    word: str
    params: float
    trainable: float
    n: int
    m: int
    A: int
    precision: str
    collective: str

    @property
    def g(self) -> int:
        return self.n // self.m

    @property
    def b(self) -> tuple[int, int, int]:
        return PRECISIONS[self.precision]

    def phi(self, tensor: str, phase: str) -> float:
        """Bytes of the tensor a collective moves (see the module docstring)."""
        b_p, b_g, _ = self.b
        if tensor == "grad":
            return b_g * self.trainable
        return b_p * (self.trainable if phase == "update" else self.params)


def _check_params(params: Any, trainable: Any) -> tuple[float, float]:
    params = check_float(params, "params", minimum=0.0, min_inclusive=False)
    if trainable is None:
        return params, params
    trainable = check_float(trainable, "trainable", minimum=0.0, min_inclusive=False)
    if trainable > params:
        raise ValueError(f"trainable must lie in (0, params] = (0, {params:g}], got {trainable:g}")
    return params, trainable


def _check_layout(world_size: Any, group_size: Any) -> tuple[int, int]:
    n = check_int(world_size, "world_size", minimum=1)
    m = check_int(group_size, "group_size", minimum=1)
    if n % m:
        raise ValueError(f"world_size {n} is not divisible by group_size {m} (n = g x m ranks)")
    return n, m


def _setup(word: str, params: Any, trainable: Any, world_size: Any, group_size: Any, grad_accum_steps: Any = 1,
           precision: str = "bf16", collective: str = "hier") -> _Setup:  # fmt: skip
    w = str(parse_word(word))
    params, trainable = _check_params(params, trainable)
    n, m = _check_layout(world_size, group_size)
    A = check_int(grad_accum_steps, "grad_accum_steps", minimum=1)
    check_choice(precision, "precision", tuple(PRECISIONS))
    check_choice(collective, "collective", COLLECTIVES)
    return _Setup(w, params, trainable, n, m, A, precision, collective)


# --------------------------------------------------------------------------- memory
def memory_bytes(
    word: str,
    params: float,
    trainable: float | None = None,
    *,
    world_size: int,
    group_size: int,
    precision: str = "bf16",
) -> dict[str, float]:
    """Model-state bytes per rank: ``M = b_p·Ψ/d(p) + b_g·Ψ'/d(g) + K·Ψ'/d(os)`` [paper].

    Parameters
    ----------
    word:
        A valid strategy word (``p g os``), e.g. ``"NIG"``.
    params:
        Ψ, the number of parameters.
    trainable:
        Ψ', the number of trainable parameters (default Ψ); frozen parameters have no grads or optimizer
        states.
    world_size, group_size:
        ``n`` and ``m``; ``d(N) = 1``, ``d(I) = m``, ``d(G) = n``.
    precision:
        ``"bf16"`` (mixed: ``(b_p, b_g, K) = (2, 2, 12)``), ``"fp32"`` ``(4, 4, 8)`` or ``"fp64"``
        ``(8, 8, 16)``.

    Returns
    -------
    dict
        ``p``, ``g``, ``os`` and ``total`` bytes per rank (transient buffers and activations excluded).

    Examples
    --------
    The spec's LLaMA-7B figures (Ψ = 6.74e9, m = 8, n = 32, bf16), GiB:

    >>> [round(memory_bytes(w, 6.74e9, world_size=32, group_size=8)["total"] / GIB, 1)
    ...  for w in ("NNN", "NNG", "NIG", "IIG", "GGG")]
    [100.4, 27.5, 16.5, 5.5, 3.1]
    >>> [round(memory_bytes(w, 6.74e9, 6.74e7, world_size=32, group_size=8)["total"] / GIB, 1)
    ...  for w in ("ING", "NNG")]
    [1.7, 12.7]
    """
    s = _setup(word, params, trainable, world_size, group_size, 1, precision)
    b_p, b_g, k = s.b
    p, g, os = s.word
    out = {
        "p": b_p * s.params / degree(p, s.m, s.n),
        "g": b_g * s.trainable / degree(g, s.m, s.n),
        "os": k * s.trainable / degree(os, s.m, s.n),
    }
    out["total"] = out["p"] + out["g"] + out["os"]
    return out


# --------------------------------------------------------------------------- schedule and bytes
class Collective(NamedTuple):
    """``count`` collectives per optimizer step of one kind.

    ``op`` all_gather / reduce_scatter / all_reduce; ``scope`` intra / inter / glob; ``tensor`` param /
    grad; ``phase`` micro (each micro-step, ``count`` includes the ``A``), boundary (once, after the last
    micro-step) or update (rebuilding the parameters after the optimizer step: only Ψ' is moved).
    """

    op: str
    scope: str
    tensor: str
    count: int
    phase: str

    def __str__(self) -> str:
        return f"{self.count} x {self.op} {self.scope} {self.tensor} ({self.phase})"


def schedule(word: str, grad_accum_steps: int = 1) -> list[Collective]:
    """The collectives of one optimizer step of ``word`` with ``A = grad_accum_steps`` micro-steps.

    Built from the spec's generic rule [code for the ten shipped words, recon for ``NNI``, ``INI``,
    ``GNG``, ``GIG``]:

    1. gather ``p`` before use, in the forward *and* the backward pass: ``2A`` AG intra (p=I) or AG glob
       (p=G) of the parameters;
    2. reduce each micro-step's gradient to ``g`` granularity and accumulate: ``A`` RS intra (g=I) or RS
       glob (g=G); nothing for g=N;
    3. at the boundary bring the sum to ``os`` granularity: os=N: AR glob; os=I: RS intra if g=N, then AR
       inter; os=G: RS glob / RS inter / nothing for g = N / I / G;
    4. update the own os shard; rebuild ``p`` from it: AG intra (p=N, os=I), AG glob (p=N, os=G),
       AG inter to the ``1/m`` shard (p=I, os=G), nothing when ``p`` and ``os`` agree.

    >>> for c in schedule("ING", 2):
    ...     print(c)
    4 x all_gather intra param (micro)
    1 x reduce_scatter glob grad (boundary)
    1 x all_gather inter param (update)
    >>> [str(c) for c in schedule("NNN", 8)]
    ['1 x all_reduce glob grad (boundary)']
    """
    w = parse_word(word)
    A = check_int(grad_accum_steps, "grad_accum_steps", minimum=1)
    out: list[Collective] = []
    if w.p != "N":
        out.append(Collective("all_gather", "intra" if w.p == "I" else "glob", "param", 2 * A, "micro"))
    if w.g != "N":
        out.append(Collective("reduce_scatter", "intra" if w.g == "I" else "glob", "grad", A, "micro"))
    if w.os == "N":  # validity: then g = N too
        out.append(Collective("all_reduce", "glob", "grad", 1, "boundary"))
    elif w.os == "I":
        if w.g == "N":
            out.append(Collective("reduce_scatter", "intra", "grad", 1, "boundary"))
        out.append(Collective("all_reduce", "inter", "grad", 1, "boundary"))
    elif w.g != "G":
        out.append(Collective("reduce_scatter", "glob" if w.g == "N" else "inter", "grad", 1, "boundary"))
    rebuild = {("N", "I"): "intra", ("N", "G"): "glob", ("I", "G"): "inter"}.get((w.p, w.os))
    if rebuild:
        out.append(Collective("all_gather", rebuild, "param", 1, "update"))
    return out


def _parts(op: str, scope: str, collective: str, m: int, g: int) -> list[tuple[str, str, float, int]]:
    """The rings one collective runs: ``(op, link class, fraction of Φ as the ring's full size, ranks)``."""
    if scope == "intra":
        return [(op, "intra", 1.0, m)]
    if scope == "inter":
        return [(op, "inter", 1.0 / m, g)]
    if collective == "flat":  # one world ring: across groups unless there is one group (or one rank each)
        cls = "intra" if g == 1 else "inter" if m == 1 else "cross"
        return [(op, cls, 1.0, m * g)]
    if op == "all_gather":
        return [("all_gather", "inter", 1.0 / m, g), ("all_gather", "intra", 1.0, m)]
    if op == "reduce_scatter":
        return [("reduce_scatter", "intra", 1.0, m), ("reduce_scatter", "inter", 1.0 / m, g)]
    return [("reduce_scatter", "intra", 1.0, m), ("all_reduce", "inter", 1.0 / m, g), ("all_gather", "intra", 1.0, m)]


def _ring_bytes(op: str, size: float, ranks: int) -> float:
    """Bytes a rank sends in a ring ``op`` over ``ranks`` ranks of full size ``size``."""
    if ranks <= 1:
        return 0.0
    moved = (ranks - 1) / ranks * size
    return 2 * moved if op == "all_reduce" else moved


def _zero() -> dict[str, float]:
    return {"intra": 0.0, "inter": 0.0, "cross": 0.0}


def comm_breakdown(
    word: str,
    params: float,
    trainable: float | None = None,
    *,
    world_size: int,
    group_size: int,
    grad_accum_steps: int = 1,
    precision: str = "bf16",
    collective: str = "hier",
) -> list[dict[str, Any]]:
    """One row per entry of :func:`schedule`: the collective, Φ, and the bytes per rank per step it moves.

    >>> rows = comm_breakdown("IIG", 1e9, world_size=16, group_size=8, grad_accum_steps=1)
    >>> for r in rows:  # Φ = 2e9 bytes, ai = 7/8·Φ, ae = 1/16·Φ
    ...     print(r["op"], r["scope"], r["count"], r["intra"], r["inter"])
    all_gather intra 2 3500000000.0 0.0
    reduce_scatter intra 1 1750000000.0 0.0
    reduce_scatter inter 1 0.0 125000000.0
    all_gather inter 1 0.0 125000000.0
    """
    s = _setup(word, params, trainable, world_size, group_size, grad_accum_steps, precision, collective)
    rows = []
    for c in schedule(s.word, s.A):
        phi = s.phi(c.tensor, c.phase)
        row: dict[str, Any] = c._asdict() | {"phi": phi} | _zero()
        for op, kind, frac, q in _parts(c.op, c.scope, s.collective, s.m, s.g):
            row[kind] += c.count * _ring_bytes(op, frac * phi, q)
        rows.append(row)
    return rows


def comm_bytes(
    word: str,
    params: float,
    trainable: float | None = None,
    *,
    world_size: int,
    group_size: int,
    grad_accum_steps: int = 1,
    precision: str = "bf16",
    collective: str = "hier",
) -> dict[str, float]:
    """Bytes each rank sends per optimizer step: ``intra``, ``inter``, ``cross`` (flat rings) and ``total``.

    The sum of :func:`comm_breakdown` (itself built from :func:`schedule`). With Ψ' = Ψ it reproduces the
    spec's closed forms, e.g. NIG ``(A+1)·ai / 2·ae``, GGG ``3A·ai / 3A·ae``, ING ``(2A+1)·ai / 2·ae``.

    Parameters
    ----------
    word, params, trainable, world_size, group_size, precision:
        As in :func:`memory_bytes`.
    grad_accum_steps:
        ``A``, micro-steps per optimizer step.
    collective:
        ``"hier"`` (PaRO-CC: glob collectives run intra + inter) or ``"flat"`` (stock ZeRO: one ring over
        all ranks; its bytes are ``cross``).

    Examples
    --------
    >>> b = comm_bytes("NIG", 1e9, world_size=16, group_size=8, grad_accum_steps=4)  # Φ = 2e9
    >>> b["intra"] == 5 * 7 / 8 * 2e9, b["inter"] == 2 * 1 / 16 * 2e9
    (True, True)
    >>> comm_bytes("GGG", 1e9, world_size=16, group_size=8, collective="flat")["cross"] == 3 * 15 / 16 * 2e9
    True
    """
    out = _zero()
    rows = comm_breakdown(
        word,
        params,
        trainable,
        world_size=world_size,
        group_size=group_size,
        grad_accum_steps=grad_accum_steps,
        precision=precision,
        collective=collective,
    )
    for row in rows:
        for k in out:
            out[k] += row[k]
    out["total"] = out["intra"] + out["inter"] + out["cross"]
    return out


# --------------------------------------------------------------------------- time
def _check_link(link: Any, group_size: int) -> Link:
    if not isinstance(link, Link):
        raise TypeError(f"link must be a bastion.distributed.netmodel.Link, got {type(link).__name__}")
    if link.group_size != group_size:
        raise ValueError(f"link.group_size ({link.group_size}) must equal group_size ({group_size})")
    return link


def collective_seconds(
    op: str,
    scope: str,
    nbytes: float,
    link: Link,
    world_size: int,
    *,
    collective: str = "hier",
    messages: int = 1,
) -> dict[str, float]:
    """Alpha-beta seconds of one collective on a tensor of ``nbytes`` (Φ), split by link class.

    Uses :meth:`Link.collective_time` for every ring, so [recon, spec "Alpha-beta time"]: intra AG/RS
    ``(m-1)α_i + (m-1)/m·X/B_i``, AR twice; inter on full size ``Y = Φ/m``: ``(g-1)α_e + (g-1)/g·Y·m/B_e``
    (``Link`` gives one inter flow ``B_e/m``); flat ring ``(n-1)α_e + (n-1)/n·X/B_e``. ``messages``: the
    collective is issued as that many equal messages (one per unit), so latency terms are paid per message
    while bandwidth terms stay.

    >>> link = Link(alpha_intra=0.0, alpha_inter=1e-3, bw_intra=100.0, bw_inter=10.0, group_size=4)
    >>> collective_seconds("all_gather", "inter", 400.0, link, 8)  # (2-1)·1e-3 + (2-1)/2·100·4/10
    {'intra': 0.0, 'inter': 20.001, 'cross': 0.0}
    """
    check_choice(op, "op", OPS)
    check_choice(scope, "scope", SCOPES)
    check_choice(collective, "collective", COLLECTIVES)
    nbytes = check_float(nbytes, "nbytes", minimum=0.0)
    messages = check_int(messages, "messages", minimum=1)
    n, m = _check_layout(world_size, link.group_size)
    out = _zero()
    for part_op, kind, frac, q in _parts(op, scope, collective, m, n // m):
        out[kind] += messages * link.collective_time(part_op, kind, frac * nbytes / messages, q)
    return out


def step_time(
    word: str,
    params: float,
    trainable: float | None = None,
    *,
    world_size: int,
    group_size: int,
    grad_accum_steps: int = 1,
    precision: str = "bf16",
    link: Link,
    t_micro: float,
    t_opt: float = 0.0,
    collective: str = "hier",
    overlap: float = 0.0,
    unit_bytes: float | None = None,
) -> dict[str, float]:
    """Seconds per optimizer step: ``T = A·t_micro + t_opt + (1-ρ)·Σcomm`` [recon].

    Parameters
    ----------
    word, params, trainable, world_size, group_size, grad_accum_steps, precision, collective:
        As in :func:`comm_bytes`.
    link:
        The alpha-beta model; ``link.group_size`` must be ``group_size``.
    t_micro, t_opt:
        Compute seconds of one micro-step and of the optimizer update.
    overlap:
        ρ in [0, 1], the fraction of communication hidden behind compute.
    unit_bytes:
        If given, each collective is issued per unit: ``ceil(Φ/unit_bytes)`` messages, each paying the
        latency terms.

    Returns
    -------
    dict
        ``intra``, ``inter``, ``cross`` and ``comm`` seconds (before overlap), ``compute`` (``A·t_micro``),
        ``opt``, ``exposed_comm`` and ``total``.

    Examples
    --------
    >>> link = Link(alpha_intra=0.0, alpha_inter=0.0, bw_intra=1e9, bw_inter=1e8, group_size=8)
    >>> t = step_time("NIG", 1e9, world_size=16, group_size=8, grad_accum_steps=4, link=link, t_micro=1.0)
    >>> round(t["intra"], 4), round(t["inter"], 4), round(t["total"], 4)  # 5·(7/8)·2, 2·(1/2)·2e9/1e8
    (8.75, 20.0, 32.75)
    """
    s = _setup(word, params, trainable, world_size, group_size, grad_accum_steps, precision, collective)
    _check_link(link, s.m)
    t_micro = check_float(t_micro, "t_micro", minimum=0.0)
    t_opt = check_float(t_opt, "t_opt", minimum=0.0)
    overlap = check_float(overlap, "overlap", minimum=0.0, maximum=1.0)
    if unit_bytes is not None:
        unit_bytes = check_float(unit_bytes, "unit_bytes", minimum=0.0, min_inclusive=False)
    out = _zero()
    for c in schedule(s.word, s.A):
        phi = s.phi(c.tensor, c.phase)
        msgs = max(1, math.ceil(phi / unit_bytes)) if unit_bytes else 1
        for k, v in collective_seconds(c.op, c.scope, phi, link, s.n, collective=s.collective, messages=msgs).items():
            out[k] += c.count * v
    comm = out["intra"] + out["inter"] + out["cross"]
    exposed = (1.0 - overlap) * comm
    compute = s.A * t_micro
    return out | {"comm": comm, "compute": compute, "opt": t_opt, "exposed_comm": exposed,
                  "total": compute + t_opt + exposed}  # fmt: skip


# --------------------------------------------------------------------------- HO-Ring
def flat_ring_time(op: str, nbytes: float, link: Link, world_size: int) -> float:
    """One ring over all ``n`` ranks (stock NCCL/gloo ring): ``(n-1)α_e + (n-1)/n·X/B_e`` for AG/RS, AR 2x.

    >>> link = Link(alpha_intra=3e-6, alpha_inter=1e-5, bw_intra=240e9, bw_inter=12.5e9, group_size=8)
    >>> round(flat_ring_time("all_gather", 256e6, link, 32) * 1e3, 2)  # ms
    20.15
    """
    check_choice(op, "op", OPS)
    nbytes = check_float(nbytes, "nbytes", minimum=0.0)
    n, _ = _check_layout(world_size, link.group_size)
    return link.collective_time(op, "cross", nbytes, n)


def ho_ring_plan(op: str, nbytes: float, link: Link, num_groups: int, pieces: int | None = None) -> dict[str, float]:
    """HO-Ring [recon]: the 2-level ring, its tensor cut into ``c`` pipelined pieces.

    One intra ring per group and ``m`` inter rings (ring ``l`` joins local index ``l`` of every group), each
    rank in one of each. Per piece of ``X/c`` bytes (AG order; RS runs the phases the other way round):

    - inter phase: AG of the rank's ``1/n`` chunks among the ``g`` ranks of its inter ring, i.e. a ring of
      full size ``Y = X/(c·m)``: ``Te = (g-1)α_e + (g-1)/g·(X/c)/B_e`` (the ``m`` rings share ``B_e``);
    - intra phase: AG of the resulting ``m``-fold data in the group, full size ``X/c``:
      ``Ti = (m-1)α_i + (m-1)/m·(X/c)/B_i``.

    For AR the intra phase is RS + AG (``Ti`` doubles) around an inter AR (``Te`` doubles). Piece ``j+1``'s
    intra phase runs while piece ``j`` is on the inter rings, so ``T ≈ c·max(Te, Ti) + min(Te, Ti)``
    (spec); ``c = 1`` is the hierarchical ring ``Te + Ti``. ``pieces=None`` takes the ``c`` in 1..64
    with the least modelled time. This construction reproduces the spec's model ratios T_ring/T_HO for a
    256 MB (2.56e8 bytes) AG: 1.85, 1.28, 1.13 for g = 2, 4, 8 (m = 8, α_e = 10 µs, α_i = 3 µs,
    B_i = 240 GB/s, B_e = 12.5 GB/s); the gain comes mostly from ``(g-1)/g·X`` instead of ``(n-1)/n·X``
    crossing groups, the pieces hide most of the intra phase.

    Returns
    -------
    dict
        ``seconds``, ``pieces`` (c), ``t_inter`` and ``t_intra`` (per piece).

    Examples
    --------
    >>> link = Link(alpha_intra=3e-6, alpha_inter=1e-5, bw_intra=240e9, bw_inter=12.5e9, group_size=8)
    >>> plan = ho_ring_plan("all_gather", 256e6, link, num_groups=4)
    >>> plan["pieces"], round(plan["seconds"] * 1e3, 2)
    (6, 15.72)
    """
    check_choice(op, "op", OPS)
    nbytes = check_float(nbytes, "nbytes", minimum=0.0)
    g = check_int(num_groups, "num_groups", minimum=1)
    m = link.group_size
    candidates = range(1, 65) if pieces is None else [check_int(pieces, "pieces", minimum=1)]
    best: dict[str, float] | None = None
    for c in candidates:
        te = link.collective_time(op, "inter", nbytes / (c * m), g)
        ti = link.collective_time(op, "intra", nbytes / c, m)
        t = c * max(te, ti) + min(te, ti)
        if best is None or t < best["seconds"]:
            best = {"seconds": t, "pieces": c, "t_inter": te, "t_intra": ti}
    assert best is not None
    return best


def ho_ring_time(op: str, nbytes: float, link: Link, num_groups: int, pieces: int | None = None) -> float:
    """Seconds of an HO-Ring collective (see :func:`ho_ring_plan`); ``pieces=1`` is the 2-level ring.

    >>> link = Link(alpha_intra=3e-6, alpha_inter=1e-5, bw_intra=240e9, bw_inter=12.5e9, group_size=8)
    >>> [round(flat_ring_time("all_gather", 256e6, link, 8 * g) / ho_ring_time("all_gather", 256e6, link, g), 2)
    ...  for g in (2, 4, 8)]
    [1.85, 1.28, 1.13]
    """
    return ho_ring_plan(op, nbytes, link, num_groups, pieces)["seconds"]


# --------------------------------------------------------------------------- presets
@dataclass(frozen=True)
class ClusterSpec:
    """A cluster of nodes of ``group_size`` GPUs [recon presets, see :data:`CLUSTERS`].

    ``bw_intra``: bytes/s per rank inside a node (NVLink, effective); ``bw_inter``: bytes/s per node
    (aggregate NIC bandwidth, shared by the ``m`` inter rings); ``memory_gib`` per GPU; ``peak_flops``
    dense bf16; ``hbm_bw`` bytes/s (for the optimizer update time).
    """

    name: str
    group_size: int
    bw_intra: float
    bw_inter: float
    alpha_intra: float
    alpha_inter: float
    memory_gib: float
    peak_flops: float
    hbm_bw: float
    note: str = ""

    def __post_init__(self) -> None:
        check_int(self.group_size, "group_size", minimum=1)
        for name in ("bw_intra", "bw_inter", "memory_gib", "peak_flops", "hbm_bw"):
            check_float(getattr(self, name), name, minimum=0.0, min_inclusive=False)
        for name in ("alpha_intra", "alpha_inter"):
            check_float(getattr(self, name), name, minimum=0.0)

    def link(self) -> Link:
        return Link(self.alpha_intra, self.alpha_inter, self.bw_intra, self.bw_inter, self.group_size)


_A100 = {"group_size": 8, "bw_intra": 240e9, "alpha_intra": 3e-6, "alpha_inter": 10e-6, "memory_gib": 80.0,
         "peak_flops": 312e12, "hbm_bw": 2.0e12}  # fmt: skip
#: Presets [recon]. A100 SXM: NVLink3 300 GB/s per direction, 240 GB/s effective; H100 SXM: NVLink4
#: 450 GB/s per direction, 360 effective. NICs: HDR 200 Gb/s = 25 GB/s, 100 Gb/s RoCE = 12.5 GB/s.
CLUSTERS: dict[str, ClusterSpec] = {
    "a100-ib": ClusterSpec("a100-ib", bw_inter=25e9, note="8x A100-80G, one 200 Gb/s HDR NIC per node", **_A100),
    "a100-roce-slow": ClusterSpec(
        "a100-roce-slow",
        bw_inter=12.5e9,
        note="8x A100-80G, one 100 Gb/s RoCE NIC per node (the spec's HO-Ring link)",
        **_A100,
    ),
    "a100-40g-ib": ClusterSpec(
        "a100-40g-ib",
        bw_inter=25e9,
        note="8x A100-40G, one 200 Gb/s HDR NIC per node",
        **(_A100 | {"memory_gib": 40.0, "hbm_bw": 1.55e12}),
    ),
    "a100-superpod": ClusterSpec(
        "a100-superpod", bw_inter=200e9, note="8x A100-80G, 8x 200 Gb/s HDR per node", **_A100
    ),
    "h100-ib": ClusterSpec(
        "h100-ib",
        group_size=8,
        bw_intra=360e9,
        bw_inter=400e9,
        alpha_intra=3e-6,
        alpha_inter=10e-6,
        memory_gib=80.0,
        peak_flops=989e12,
        hbm_bw=3.35e12,
        note="8x H100-SXM, 8x 400 Gb/s NDR per node",
    ),
}


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only transformer: ``params`` Ψ, ``layers`` (one unit each), ``hidden``, default ``seq``."""

    name: str
    params: float
    layers: int
    hidden: int
    seq: int = 2048

    def __post_init__(self) -> None:
        check_float(self.params, "params", minimum=0.0, min_inclusive=False)
        for name in ("layers", "hidden", "seq"):
            check_int(getattr(self, name), name, minimum=1)


#: LLaMA-1 sizes (Touvron et al. 2023).
MODELS: dict[str, ModelSpec] = {
    "llama-7b": ModelSpec("llama-7b", 6.74e9, 32, 4096),
    "llama-13b": ModelSpec("llama-13b", 13.0e9, 40, 5120),
    "llama-33b": ModelSpec("llama-33b", 32.5e9, 60, 6656),
    "llama-65b": ModelSpec("llama-65b", 65.2e9, 80, 8192),
}


def _model(model: str | ModelSpec) -> ModelSpec:
    if isinstance(model, ModelSpec):
        return model
    return MODELS[check_choice(model, "model", tuple(MODELS))]


def _cluster(cluster: str | ClusterSpec) -> ClusterSpec:
    if isinstance(cluster, ClusterSpec):
        return cluster
    return CLUSTERS[check_choice(cluster, "cluster", tuple(CLUSTERS))]


def activation_bytes(model: str | ModelSpec, micro_batch: int, seq: int | None = None, *, checkpointing: bool = True,
                     precision: str = "bf16") -> float:  # fmt: skip
    """Activation bytes per rank for one micro-batch [recon].

    Korthikanti et al. (2022): a transformer layer keeps ``34·s·b·h`` bytes of 16-bit activations (no tensor
    parallelism; the attention-score term ``5·a·s²·b`` is dropped: flash attention). With activation
    checkpointing (the default: the paper trains LLaMA with it) only each layer's input is kept,
    ``2·s·b·h`` bytes per layer, plus one layer's full set while it is recomputed in the backward pass:
    ``L·2·s·b·h + 34·s·b·h``; without, ``L·34·s·b·h``. fp32 / fp64 activations scale this by 2 / 4.
    Logits, embeddings and framework workspace are not counted.

    >>> round(activation_bytes("llama-7b", 2) / GIB, 2)  # 32·2·2048·2·4096 + 34·2048·2·4096 bytes
    1.53
    """
    spec = _model(model)
    b = check_int(micro_batch, "micro_batch", minimum=1)
    s = spec.seq if seq is None else check_int(seq, "seq", minimum=1)
    check_choice(precision, "precision", tuple(PRECISIONS))
    scale = PRECISIONS[precision][0] / 2
    sbh = s * b * spec.hidden
    per_layer = 2 * sbh if checkpointing else 34 * sbh
    return scale * (spec.layers * per_layer + (34 * sbh if checkpointing else 0))


def micro_step_flops(params: float, trainable: float, tokens: float, *, checkpointing: bool = True) -> float:
    """FLOPs of one micro-step: per token ``2Ψ`` forward, ``2Ψ`` input gradients, ``2Ψ'`` weight gradients,
    ``2Ψ`` more with recomputation [recon]: ``6Ψ`` (``8Ψ`` with checkpointing) when all are trained.

    >>> micro_step_flops(1e9, 1e9, 1000) == 8e12
    True
    """
    params, trainable = _check_params(params, trainable)
    tokens = check_float(tokens, "tokens", minimum=0.0)
    return tokens * (2 * params * (3 if checkpointing else 2) + 2 * trainable)


# --------------------------------------------------------------------------- simulator and advisor
def _strategy(word: str, collective: str | None) -> tuple[str, str, str]:
    """``(label, word, collective)``; ``zero1/2/3`` are NNG/NGG/GGG on flat rings."""
    if isinstance(word, str) and word.strip().lower() in ZERO_WORDS:
        label = word.strip().lower()
        return label, ZERO_WORDS[label], "flat"
    w = str(parse_word(word))
    coll = "hier" if collective is None else check_choice(collective, "collective", COLLECTIVES)
    return (w if coll == "hier" else f"{w} flat"), w, coll


def simulate(
    word: str,
    model: str | ModelSpec,
    cluster: str | ClusterSpec,
    ranks: int,
    grad_accum_steps: int,
    micro_batch: int,
    trainable_fraction: float = 1.0,
    *,
    seq: int | None = None,
    precision: str = "bf16",
    collective: str | None = None,
    checkpointing: bool = True,
    mfu: float = 0.45,
    overlap: float = 0.0,
) -> dict[str, Any]:
    """Predicted memory and throughput of one strategy on a cluster [recon].

    Compute: ``t_micro = micro_step_flops / (peak_flops·mfu)`` with ``tokens = seq·micro_batch``
    (``8Ψ`` per token with checkpointing, ``6Ψ`` without). Optimizer: ``t_opt`` = the bytes the update
    touches, ``Ψ'/d(os)·(2K + b_g + b_p)`` (read and write the states, read the grad, write the param), over
    ``hbm_bw``. Communication: :func:`step_time` with one message per unit (a transformer layer:
    ``unit_bytes = b_p·Ψ/L``). Memory: model states (:func:`memory_bytes`) + activations
    (:func:`activation_bytes`) + buffers (one gathered unit of params if ``p != N``, the full grad of the
    unit being reduced if ``g != N``); it fits if that is at most the GPU memory.

    Parameters
    ----------
    word:
        A valid strategy word (run with ``collective``, default ``"hier"``), or ``zero1`` / ``zero2`` /
        ``zero3`` (NNG / NGG / GGG on flat rings: stock DeepSpeed ZeRO).
    model, cluster:
        Names in :data:`MODELS` / :data:`CLUSTERS`, or a :class:`ModelSpec` / :class:`ClusterSpec`.
    ranks:
        ``n``, a multiple of the cluster's group size.
    grad_accum_steps, micro_batch:
        ``A`` and the sequences per micro-step per rank.
    trainable_fraction:
        Ψ'/Ψ in (0, 1] (PEFT: e.g. 3/1000).

    Returns
    -------
    dict
        ``strategy``, ``word``, ``runs_as`` (the equivalent word when ``m = 1`` or ``g = 1``),
        ``collective``, ``tokens_per_s``, ``step_s``, ``compute_s``, ``opt_s``, ``comm_s``, ``intra_s``,
        ``inter_s``, ``cross_s``, ``intra_gb``, ``inter_gb``, ``cross_gb`` (1e9 bytes per rank per step),
        ``states_gib``, ``act_gib``, ``buffer_gib``, ``memory_gib``, ``capacity_gib``, ``fits``.

    Examples
    --------
    >>> r = simulate("NIG", "llama-7b", "a100-ib", 64, 4, 2)
    >>> r["fits"], round(r["memory_gib"], 1), round(r["tokens_per_s"])
    (True, 17.2, 139981)
    """
    label, w, coll = _strategy(word, collective)
    spec = _model(model)
    cl = _cluster(cluster)
    n = check_int(ranks, "ranks", minimum=1)
    if n % cl.group_size:
        raise ValueError(f"ranks {n} is not a multiple of the cluster's group size {cl.group_size} ({cl.name})")
    A = check_int(grad_accum_steps, "grad_accum_steps", minimum=1)
    b = check_int(micro_batch, "micro_batch", minimum=1)
    frac = check_float(trainable_fraction, "trainable_fraction", minimum=0.0, maximum=1.0, min_inclusive=False)
    mfu = check_float(mfu, "mfu", minimum=0.0, maximum=1.0, min_inclusive=False)
    s = spec.seq if seq is None else check_int(seq, "seq", minimum=1)
    check_choice(precision, "precision", tuple(PRECISIONS))
    m = cl.group_size
    psi, psi_t = spec.params, frac * spec.params
    b_p, b_g, k = PRECISIONS[precision]
    layout = {"world_size": n, "group_size": m}

    states = memory_bytes(w, psi, psi_t, precision=precision, **layout)["total"]
    act = activation_bytes(spec, b, s, checkpointing=checkpointing, precision=precision)
    buffers = (b_p * psi / spec.layers if w[0] != "N" else 0.0) + (b_g * psi_t / spec.layers if w[1] != "N" else 0.0)
    total_mem = states + act + buffers

    t_micro = micro_step_flops(psi, psi_t, s * b, checkpointing=checkpointing) / (cl.peak_flops * mfu)
    t_opt = psi_t / degree(w[2], m, n) * (2 * k + b_g + b_p) / cl.hbm_bw
    unit = b_p * psi / spec.layers
    t = step_time(
        w,
        psi,
        psi_t,
        grad_accum_steps=A,
        precision=precision,
        link=cl.link(),
        t_micro=t_micro,
        t_opt=t_opt,
        collective=coll,
        overlap=overlap,
        unit_bytes=unit,
        **layout,
    )
    vol = comm_bytes(w, psi, psi_t, grad_accum_steps=A, precision=precision, collective=coll, **layout)
    return {
        "strategy": label,
        "word": w,
        "runs_as": equivalent_word(w, m, n),
        "collective": coll,
        "tokens_per_s": n * A * b * s / t["total"],
        "step_s": t["total"],
        "compute_s": t["compute"],
        "opt_s": t["opt"],
        "comm_s": t["comm"],
        "intra_s": t["intra"],
        "inter_s": t["inter"],
        "cross_s": t["cross"],
        "intra_gb": vol["intra"] / 1e9,
        "inter_gb": vol["inter"] / 1e9,
        "cross_gb": vol["cross"] / 1e9,
        "states_gib": states / GIB,
        "act_gib": act / GIB,
        "buffer_gib": buffers / GIB,
        "memory_gib": total_mem / GIB,
        "capacity_gib": cl.memory_gib,
        "fits": total_mem <= cl.memory_gib * GIB,
    }


def advise(
    model: str | ModelSpec,
    cluster: str | ClusterSpec,
    ranks: int,
    grad_accum_steps: int,
    micro_batch: int,
    trainable_fraction: float = 1.0,
    *,
    words: tuple[str, ...] | None = None,
    include_zero: bool = True,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """Rank strategies by predicted tokens/s: those that fit in memory first, then those that do not.

    ``words`` defaults to the 14 valid words (PaRO-CC, ``collective="hier"``); ``include_zero`` adds the
    flat-ring ``zero1``/``zero2``/``zero3`` rows. Other keyword arguments go to :func:`simulate`. Each row
    is a :func:`simulate` dict plus ``rank`` (1-based over all rows) and ``vs_best`` (tokens/s over the
    best fitting row's).

    >>> rows = advise("llama-65b", "a100-ib", 64, 4, 1, trainable_fraction=3 / 1000)
    >>> [r["strategy"] for r in rows[:2]], [r["strategy"] for r in rows if not r["fits"]][:3]
    (['ING', 'INI'], ['NNG', 'NNI', 'zero1'])
    """
    labels = list(VALID_WORDS if words is None else words)
    if include_zero:
        labels += [z for z in ZERO_WORDS if z not in labels]
    if not labels:
        raise ValueError("words must name at least one strategy")
    rows = [simulate(w, model, cluster, ranks, grad_accum_steps, micro_batch, trainable_fraction, **kwargs)
            for w in labels]  # fmt: skip
    rows.sort(key=lambda r: (not r["fits"], -r["tokens_per_s"]))
    best = max((r["tokens_per_s"] for r in rows if r["fits"]), default=float("nan"))
    return [{"rank": i + 1} | r | {"vs_best": r["tokens_per_s"] / best} for i, r in enumerate(rows)]


def nearest_model(params: float) -> ModelSpec:
    """The preset closest to ``params`` in log scale (for layers and hidden size of an arbitrary Ψ).

    >>> nearest_model(7e9).name, nearest_model(70e9).name
    ('llama-7b', 'llama-65b')
    """
    params = check_float(params, "params", minimum=0.0, min_inclusive=False)
    return min(MODELS.values(), key=lambda spec: abs(math.log(spec.params / params)))


def custom_model(params: float, layers: int | None = None, hidden: int | None = None, seq: int = 2048) -> ModelSpec:
    """A :class:`ModelSpec` of ``params`` parameters; missing layers/hidden come from :func:`nearest_model`."""
    near = nearest_model(params)
    return replace(near, name=f"{params:.3g} params", params=float(params), seq=seq,
                   layers=near.layers if layers is None else layers,
                   hidden=near.hidden if hidden is None else hidden)  # fmt: skip
