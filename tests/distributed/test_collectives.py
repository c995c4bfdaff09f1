"""Ring collectives (flat, hierarchical, HO-Ring) against torch.distributed, and their schedules.

One multi-process launch per test: a module-level worker runs every case on every topology it is given
and returns a list of failures (empty when all hold).
"""

from __future__ import annotations

import time

import pytest
import torch
import torch.distributed as dist

from bastion.distributed.collectives import (
    Schedule,
    Transfer,
    all_gather,
    all_reduce,
    best_pieces,
    emulated_time,
    in_ring_collective,
    record_schedules,
    reduce_scatter,
    replay,
    schedule_for,
)
from bastion.distributed.launch import spawn
from bastion.distributed.netmodel import Link
from bastion.distributed.topology import Topology, TopologySpec

# (algorithm, pieces, use a link to pick pieces)
VARIANTS = [
    ("flat", None, False),
    ("hier", None, False),
    ("ho_ring", 1, False),
    ("ho_ring", 2, False),
    ("ho_ring", 3, False),
    ("ho_ring", None, False),  # DEFAULT_PIECES
    ("ho_ring", None, True),  # picked by the model
    ("ho_ring", 64, False),  # clamped to the chunk
]
VARIANTS_DEGENERATE = [("flat", None, False), ("hier", None, False), ("ho_ring", 3, False)]  # g = 1 or m = 1
DTYPES = ("int64", "float_int", "float_rand")


def paper_link(m: int, unit: float = 2**20, bw_inter: float = 1e9) -> Link:
    """The spec's calibration: B_i = 20 B_e, alpha_e = 0.01 U / B_e, alpha_i = alpha_e / 10."""
    ae = 0.01 * unit / bw_inter
    return Link(alpha_intra=ae / 10, alpha_inter=ae, bw_intra=20 * bw_inter, bw_inter=bw_inter, group_size=m)


def _data(kind: str, numel: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if kind == "int64":
        return torch.randint(-1000, 1000, (numel,), generator=gen, dtype=torch.int64)
    if kind == "float_int":
        return torch.randint(-1000, 1000, (numel,), generator=gen).to(torch.float32)
    return torch.randn(numel, generator=gen, dtype=torch.float32)


def _reference_rs(inp: torch.Tensor, n: int, rank: int) -> torch.Tensor:
    out = torch.empty(inp.numel() // n, dtype=inp.dtype)
    try:
        dist.reduce_scatter_single(out, inp.clone())
    except (RuntimeError, NotImplementedError):  # gloo may lack reduce-scatter: all-reduce and slice
        full = inp.clone()
        dist.all_reduce(full)
        out = full.view(n, -1)[rank].clone()
    return out


def _scale(x: torch.Tensor, kind: str) -> torch.Tensor | None:
    """For random floats, the largest sum of magnitudes (the relative-error denominator)."""
    if kind != "float_rand" or x.numel() == 0:
        return None
    s = x.abs()
    dist.all_reduce(s)
    return s.max()


def _compare(ours: torch.Tensor, ref: torch.Tensor, scale: torch.Tensor | None) -> str | None:
    if ours.shape != ref.shape or ours.dtype != ref.dtype:
        return f"shape/dtype {tuple(ours.shape)} {ours.dtype} vs {tuple(ref.shape)} {ref.dtype}"
    if scale is None:  # integers and integer-valued floats: bitwise
        return None if torch.equal(ours, ref) else f"not bitwise equal (max diff {(ours - ref).abs().max()})"
    err = ((ours - ref).abs().max() / scale.clamp_min(1e-30)).item()
    return None if err <= 1e-6 else f"relative error {err:.2e}"


def _check_schedule(
    recs: list[Schedule], op: str, alg: str, x: torch.Tensor, topo: Topology, pieces, link: Link | None
) -> str | None:
    """The live call recorded exactly schedule_for's schedule (``x``: the full tensor)."""
    if len(recs) != 1:
        return f"{len(recs)} schedules recorded"
    nbytes, itemsize = x.numel() * x.element_size(), x.element_size()
    expected = schedule_for(op, alg, nbytes, topo, pieces, rank=topo.rank, itemsize=itemsize, link=link)
    return None if recs[0] == expected else f"live schedule differs from schedule_for: {recs[0]} vs {expected}"


def _run_cases(topo: Topology, variants: list[tuple], sizes: tuple[int, ...], ar_sizes: tuple[int, ...]) -> list[str]:
    n, r = topo.world_size, topo.rank
    fails: list[str] = []
    link = paper_link(topo.group_size)
    reduced: list[torch.Tensor] = []  # every all-reduce result, checked for identical bits at the end

    def note(where: str, msg: str | None) -> None:
        if msg:
            fails.append(f"[{topo!r}] {where}: {msg}")

    for kind in DTYPES:
        for case, C in enumerate(sizes):
            seed = 1000 * case + 17 * r + DTYPES.index(kind)
            x = _data(kind, C, seed)  # all-gather input
            ag_ref = torch.empty(n * C, dtype=x.dtype)
            dist.all_gather_single(ag_ref, x)
            y = _data(kind, n * C, seed + 7)  # reduce-scatter input
            y0, rs_ref, rs_scale = y.clone(), _reference_rs(y, n, r), _scale(y, kind)
            for alg, pieces, use_link in variants:
                lk = link if use_link else None
                where = f"{alg} pieces={pieces} link={use_link} {kind} C={C}"
                out = torch.full((n * C,), -7, dtype=x.dtype)
                with record_schedules() as recs:
                    all_gather(out, x, topo, alg, pieces, link=lk)
                note(f"AG {where}", None if torch.equal(out, ag_ref) else "not bitwise equal to all_gather_single")
                note(f"AG sched {where}", _check_schedule(recs, "all_gather", alg, out, topo, pieces, lk))
                out = torch.full((C,), -7, dtype=y.dtype)
                with record_schedules() as recs:
                    reduce_scatter(out, y, topo, alg, pieces, link=lk)
                note(f"RS {where}", _compare(out, rs_ref, rs_scale))
                note(f"RS input {where}", None if torch.equal(y, y0) else "input modified")
                note(f"RS sched {where}", _check_schedule(recs, "reduce_scatter", alg, y, topo, pieces, lk))
        for case, L in enumerate(ar_sizes):
            z = _data(kind, L, 5000 + 1000 * case + 17 * r + DTYPES.index(kind))
            ar_ref = z.clone()
            dist.all_reduce(ar_ref)
            ar_scale = _scale(z, kind)
            for alg, pieces, use_link in variants:
                lk = link if use_link else None
                where = f"{alg} pieces={pieces} link={use_link} {kind} L={L}"
                ours = z.clone()
                with record_schedules() as recs:
                    res = all_reduce(ours, topo, alg, pieces, link=lk)
                note(f"AR {where}", _compare(ours, ar_ref, ar_scale))
                note(f"AR returns {where}", None if res is ours else "did not return its tensor")
                note(f"AR sched {where}", _check_schedule(recs, "all_reduce", alg, z, topo, pieces, lk))
                reduced.append(ours.view(torch.int32))  # int64 and float32 alike, as raw bits
                if kind == "float_rand":  # deterministic: the same bits again
                    again = all_reduce(z.clone(), topo, alg, pieces, link=lk)
                    note(f"AR deterministic {where}", None if torch.equal(again, ours) else "second run differs")
    bits = torch.cat(reduced)
    gathered = torch.empty(n * bits.numel(), dtype=bits.dtype)
    dist.all_gather_single(gathered, bits)
    rows = gathered.view(n, -1)
    note("AR identical bits on all ranks", None if all(torch.equal(rows[0], row) for row in rows) else "ranks differ")
    return fails


def _extras(topo: Topology) -> list[str]:
    """Strided (non-contiguous) tensors, nested recorders, the active flag."""
    n, r = topo.world_size, topo.rank
    fails = []
    base = torch.arange(2 * 10, dtype=torch.float64) + r
    strided = base[::2]  # 10 elements, not contiguous
    ref = strided.clone()
    dist.all_reduce(ref)
    with record_schedules() as outer:
        with record_schedules() as inner:
            all_reduce(strided, topo, "ho_ring", 2)
        out = torch.empty(2 * n * 3, dtype=torch.float64)[::2]
        all_gather(out, torch.arange(3, dtype=torch.float64) + 3 * r, topo, "hier")
    if not torch.equal(strided, ref):
        fails.append("strided all_reduce")
    if not torch.equal(base[1::2], torch.arange(1, 20, 2, dtype=torch.float64) + r):
        fails.append("strided all_reduce touched the gaps")
    if not torch.equal(out, torch.arange(3 * n, dtype=torch.float64)):
        fails.append("strided all_gather output")
    if len(inner) != 1 or len(outer) != 2 or outer[0] is not inner[0]:
        fails.append(f"nested recorders got {len(inner)} / {len(outer)}")
    if in_ring_collective():
        fails.append("in_ring_collective() true outside a call")
    return fails


def _worker(
    rank: int, world: int, group_sizes: tuple[int, ...], sizes: tuple[int, ...], ar_sizes: tuple[int, ...]
) -> dict:
    assert torch.get_num_threads() == 1
    t0 = time.perf_counter()
    fails: list[str] = []
    for m in group_sizes:
        topo = Topology(group_size=m)
        degenerate = topo.group_size == 1 or topo.num_groups == 1
        fails += _run_cases(topo, VARIANTS_DEGENERATE if degenerate else VARIANTS, sizes, ar_sizes)
        fails += _extras(topo)
    return {"fails": fails, "seconds": time.perf_counter() - t0}


def _check_results(results: list[dict]) -> None:
    fails = [f"rank {r}: {f}" for r, res in enumerate(results) for f in res["fails"]]
    assert not fails, "\n".join(fails[:40]) + (f"\n... {len(fails)} in all" if len(fails) > 40 else "")


def test_collectives_four_ranks() -> None:
    """2x2 (both neighbours coincide on both levels), 1x4 (g=1) and 4x1 (m=1) on 4 gloo ranks."""
    results = spawn(_worker, 4, (2, 4, 1), (0, 1, 7), (0, 1, 7, 13), all_ranks=True)
    _check_results(results)


@pytest.mark.slow
def test_collectives_eight_ranks() -> None:
    """2x4 (g=2: inter neighbours coincide; m=4) and 4x2 (m=2) on 8 gloo ranks."""
    results = spawn(_worker, 8, (4, 2), (0, 1, 5), (0, 1, 7, 13), all_ranks=True)
    _check_results(results)


# ------------------------------------------------------------------------------------------------------
# Pure tests: schedules and the discrete-event replay
# ------------------------------------------------------------------------------------------------------

SPEC_2X4 = TopologySpec(world_size=8, group_size=4)


def test_ho_ring_beats_flat_on_a_slow_inter_link() -> None:
    link = paper_link(4)
    x = 8 * 2**20
    flat = emulated_time("all_gather", "flat", x, SPEC_2X4, link)
    hier = emulated_time("all_gather", "hier", x, SPEC_2X4, link)
    ho = emulated_time("all_gather", "ho_ring", x, SPEC_2X4, link)
    assert flat >= 1.5 * ho  # measured 1.72
    assert ho <= hier
    assert flat / ho == pytest.approx(1.7, abs=0.05)


@pytest.mark.parametrize(("g", "expected"), [(2, 1.85), (4, 1.28), (8, 1.13)])
def test_spec_256mb_all_gather_ratios(g: int, expected: float) -> None:
    link = Link(alpha_intra=3e-6, alpha_inter=10e-6, bw_intra=240e9, bw_inter=12.5e9, group_size=8)
    spec = TopologySpec(world_size=8 * g, group_size=8)
    x = 256 * 10**6
    ratio = emulated_time("all_gather", "flat", x, spec, link) / emulated_time("all_gather", "ho_ring", x, spec, link)
    assert ratio == pytest.approx(expected, abs=0.01)  # measured 1.851, 1.282, 1.127


def test_closed_forms() -> None:
    """Hierarchical AG = inter ring + intra ring; HO-Ring = c * max(Te, Ti) + min(Te, Ti); flat = (n-1) cross steps."""
    g, m = 2, 4
    n, chunk = g * m, 1200  # elements (itemsize 1)
    x = n * chunk
    for bw_intra in (1e6, 1e9):  # intra faster / slower than the per-piece inter phase
        link = Link(alpha_intra=1e-4, alpha_inter=1e-3, bw_intra=bw_intra, bw_inter=1e6, group_size=m)
        te = (g - 1) * link.step_time("inter", chunk)
        ti = (m - 1) * link.step_time("intra", g * chunk)
        assert emulated_time("all_gather", "hier", x, SPEC_2X4, link) == pytest.approx(te + ti)
        assert emulated_time("reduce_scatter", "hier", x, SPEC_2X4, link) == pytest.approx(te + ti)
        assert emulated_time("all_gather", "flat", x, SPEC_2X4, link) == pytest.approx(
            (n - 1) * link.step_time("cross", chunk)
        )
        for c in (2, 3, 4):
            tep = (g - 1) * link.step_time("inter", chunk / c)
            tip = (m - 1) * link.step_time("intra", g * chunk / c)
            expected = c * max(tep, tip) + min(tep, tip)
            assert emulated_time("all_gather", "ho_ring", x, SPEC_2X4, link, c) == pytest.approx(expected)


def test_bytes_per_class_match_the_spec() -> None:
    """Per rank: hierarchical AG/RS send ai = (m-1)/m X intra and ae = (g-1)/(g m) X inter, AR twice; flat
    sends (n-1)/n X across groups from local index m-1 and intra elsewhere."""
    g, m, x = 2, 4, 8 * 96
    ai, ae = (m - 1) * x // m, (g - 1) * x // (g * m)
    for alg, pieces in (("hier", None), ("ho_ring", 5)):
        for op, factor in (("all_gather", 1), ("reduce_scatter", 1), ("all_reduce", 2)):
            for rank in range(8):
                s = schedule_for(op, alg, x, SPEC_2X4, pieces, rank=rank)
                assert s.bytes_by_kind == {"intra": factor * ai, "inter": factor * ae, "cross": 0}
    for rank in range(8):
        s = schedule_for("all_gather", "flat", x, SPEC_2X4, rank=rank)
        cls = "cross" if rank % m == m - 1 else "intra"
        assert s.bytes_by_kind[cls] == (8 - 1) * x // 8
        assert len(s.transfers) == 7
    s = schedule_for("all_reduce", "flat", x, SPEC_2X4, rank=3)
    assert s.bytes_by_kind == {"intra": 0, "inter": 0, "cross": 2 * 7 * x // 8}


def test_schedule_structure() -> None:
    x = 8 * 40
    hier = schedule_for("all_reduce", "hier", x, SPEC_2X4)
    ho1 = schedule_for("all_reduce", "ho_ring", x, SPEC_2X4, 1)
    assert hier.transfers == ho1.transfers and ho1.pieces == 1
    for op in ("all_gather", "reduce_scatter", "all_reduce"):
        for alg, pieces in (("flat", None), ("hier", None), ("ho_ring", 3), ("ho_ring", 64)):
            s = schedule_for(op, alg, x, SPEC_2X4, pieces, itemsize=4)
            assert [t.index for t in s.transfers] == list(range(len(s.transfers)))
            assert all(d < t.index for t in s.transfers for d in t.deps)
            assert all(len(t.deps) <= 1 for t in s.transfers)
    # pieces are clamped to the per-rank chunk (x / 8 / 4 = 10 elements of 4 bytes)
    assert schedule_for("all_gather", "ho_ring", x, SPEC_2X4, 64, itemsize=4).pieces == 10
    # empty tensors and one rank send nothing
    assert schedule_for("all_reduce", "ho_ring", 0, SPEC_2X4).transfers == ()
    assert schedule_for("all_reduce", "flat", 28, TopologySpec(world_size=1, group_size=1)).transfers == ()
    # all-reduce padding: 7 elements of 4 bytes on 8 ranks -> chunks of one element
    s = schedule_for("all_reduce", "flat", 28, SPEC_2X4, itemsize=4)
    assert {t.nbytes for t in s.transfers} == {4} and len(s.transfers) == 14


def test_best_pieces_minimises_the_replay() -> None:
    link = paper_link(4)
    x = 8 * 2**20
    c = best_pieces("all_gather", x, SPEC_2X4, link)
    times = {p: replay(schedule_for("all_gather", "ho_ring", x, SPEC_2X4, p), link) for p in range(1, 65)}
    assert times[c] == min(times.values())
    assert 1 < c < 64
    assert schedule_for("all_gather", "ho_ring", x, SPEC_2X4, link=link).pieces == c
    assert schedule_for("all_gather", "ho_ring", x, SPEC_2X4).pieces == 4  # DEFAULT_PIECES without a link


def test_replay_rules() -> None:
    link = Link(alpha_intra=0.0, alpha_inter=0.0, bw_intra=10.0, bw_inter=10.0, group_size=1)
    # cross shares the inter resource; a dependency delays even a free resource
    ts = [Transfer(0, "cross", 10), Transfer(1, "inter", 10), Transfer(2, "intra", 10, (1,)), Transfer(3, "intra", 10)]
    assert replay(ts, link) == pytest.approx(4.0)
    assert replay([], link) == 0.0
    with pytest.raises(ValueError, match="index"):
        replay([Transfer(1, "intra", 1)], link)
    with pytest.raises(ValueError, match="depends"):
        replay([Transfer(0, "intra", 1, (0,))], link)
    with pytest.raises(TypeError, match="link"):
        replay([], "fast")  # type: ignore[arg-type]


def test_bad_arguments() -> None:
    spec = TopologySpec(world_size=4, group_size=2)
    x, out = torch.zeros(3), torch.zeros(12)
    with pytest.raises(ValueError, match="output"):
        all_gather(torch.zeros(11), x, spec)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="input"):
        reduce_scatter(x, torch.zeros(11), spec)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tensor must be 1-D"):
        all_reduce(torch.zeros(2, 2), spec)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="input must be 1-D"):
        all_gather(out, torch.zeros(1, 3), spec)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="dtype"):
        all_gather(out.double(), x, spec)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="output"):
        all_gather([0.0], x, spec)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="algorithm"):
        all_reduce(x, spec, "tree")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pieces"):
        all_reduce(x, spec, "ho_ring", 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pieces"):
        all_reduce(x, spec, "flat", 2)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="pieces"):
        all_reduce(x, spec, "ho_ring", 2.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="topo"):
        all_reduce(x, spec)  # type: ignore[arg-type]  # a spec has no process groups
    with pytest.raises(ValueError, match="op"):
        schedule_for("broadcast", "flat", 8, spec)
    with pytest.raises(ValueError, match="algorithm"):
        schedule_for("all_gather", "ring", 8, spec)
    with pytest.raises(ValueError, match="nbytes"):
        schedule_for("all_gather", "flat", -1, spec)
    with pytest.raises(ValueError, match="itemsize"):
        schedule_for("all_gather", "flat", 6, spec, itemsize=4)
    with pytest.raises(ValueError, match="rank"):
        schedule_for("all_gather", "flat", 8, spec, rank=4)
    with pytest.raises(TypeError, match="topo_spec"):
        schedule_for("all_gather", "flat", 8, (4, 2))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="link"):
        schedule_for("all_gather", "ho_ring", 8, spec, link="slow")  # type: ignore[arg-type]
