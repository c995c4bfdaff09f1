"""The virtual clock's pure parts: pricing recorded events, calibration, ordering agreement."""

from __future__ import annotations

import pytest

from bastion.distributed import collectives
from bastion.distributed.bench import ordering_agreement
from bastion.distributed.emulator import NetworkEmulator, calibrate_link
from bastion.distributed.netmodel import Link
from bastion.distributed.topology import TopologySpec


def test_recorded_events_are_priced_by_the_alpha_beta_model_under_any_link():
    spec = TopologySpec(world_size=8, group_size=4)
    emu = NetworkEmulator(spec)
    emu.counters.events += [
        ("intra", "all_gather", 4000, 4),
        ("inter", "all_reduce", 1000, 2),
        ("cross", "reduce_scatter", 8000, 8),
    ]
    sched = collectives.schedule_for("all_gather", "ho_ring", 8 * 2**20, spec, pieces=4)
    emu.counters.events.append(sched)
    slow = Link(alpha_intra=1e-6, alpha_inter=1e-5, bw_intra=1e9, bw_inter=5e7, group_size=4)
    fast = Link(alpha_intra=1e-6, alpha_inter=1e-5, bw_intra=1e9, bw_inter=5e8, group_size=4)
    got = emu.comm_seconds(slow)
    assert got["intra"] == pytest.approx(3 * (1e-6 + 1000 / 1e9))
    assert got["cross"] == pytest.approx(7 * (1e-5 + 1000 / 5e7))
    # the inter all-reduce (two ring passes, flow = B_e / m) plus the HO-Ring schedule's replay
    expected_inter = 2 * (1e-5 + 500 / (5e7 / 4)) + collectives.replay(sched, slow)
    assert got["inter"] == pytest.approx(expected_inter)
    assert sum(emu.comm_seconds(fast).values()) < sum(got.values())
    assert emu.comm_seconds(None) == {"intra": 0.0, "inter": 0.0, "cross": 0.0}  # counting only


def test_calibration_puts_flat_zero3_comm_at_rho_times_compute():
    link = calibrate_link(2.0, 36e6, 0.05, group_size=4, message_bytes=2e5, ring_steps=300)
    comm = (36e6 + 300 * 0.01 * 2e5) / link.bw_inter  # bytes / B_e + ring steps x alpha_e
    assert comm == pytest.approx(2.0 * 0.05)
    assert link.bw_intra == pytest.approx(20 * link.bw_inter)
    assert link.alpha_intra == pytest.approx(link.alpha_inter / 10)
    with pytest.raises(ValueError, match="rho_c"):
        calibrate_link(0, 1, 1, group_size=4, message_bytes=1)
    with pytest.raises(ValueError, match="nnn_compute_seconds"):
        calibrate_link(1, 1, 0, group_size=4, message_bytes=1)


def test_ordering_agreement_counts_only_pairs_far_apart_at_equal_accumulation():
    rows = [
        {"name": "a", "accum": 4, "step[x]": 1.0, "predicted[x]": 1.0},
        {"name": "b", "accum": 4, "step[x]": 1.05, "predicted[x]": 0.5},  # within 10 %: ignored
        {"name": "c", "accum": 4, "step[x]": 2.0, "predicted[x]": 0.9},  # far apart, predicted the other way
        {"name": "d", "accum": 1, "step[x]": 9.0, "predicted[x]": 0.1},  # another A: never paired with A=4
    ]
    res = ordering_agreement(rows, "x")
    assert res["pairs"] == 2 and res["agree"] == 1
    assert res["disagree"] == [("a", "c")]
