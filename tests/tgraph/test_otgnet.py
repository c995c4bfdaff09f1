"""OTGNet assembled: IB message passing, triad selection and replay, causal pseudo labels."""

from __future__ import annotations

import pytest
import torch

from bastion.tgraph import open_temporal_graph, split_tasks
from bastion.tgraph.otgnet import OTGNetRunner
from bastion.tgraph.protocol import run_protocol


def small_graph():
    return open_temporal_graph("reddit_like", tasks=2, nodes_per_class=40, events_per_node=6, seed=3)


def _runner(g, method="otgnet", **kw):
    split = split_tasks(g, seed=0)
    return OTGNetRunner(g, split, method, "task", 16, 2, 2, 300, 3e-3, 0, 1000.0, 20, False, True, **kw)


def test_triads_are_selected_per_class_and_replayed_with_pattern_pairs():
    g = small_graph()
    runner = _runner(g)
    runner.train_task(0)
    assert runner.picked and all(p["picked"] <= 10 for p in runner.picked)
    assert {p["class"] for p in runner.picked} == {0, 1, 2}
    assert len(runner.replay) > 0 and bool((g.task[runner.replay] == 0).all())  # task 0's train events
    assert bool(torch.isin(runner.replay, runner.split.train[0]).all())
    assert len(runner.pairs_pos) > 0  # closing pairs of closed triads become L_pat positives
    torch.testing.assert_close(runner.replay_rows, runner.snapshots[0][runner.replay_nodes])
    assert runner.ib.club.y_dim == 3  # the bottleneck saw task 0's classes
    runner.train_task(1)  # replay and L_pat in the loop
    assert runner.ib.club.y_dim == 6
    runner.model.ib_log.clear()
    runner.evaluate(0, 6)  # evaluation streams (test nodes' labels) never feed the bottleneck
    assert runner.model.ib_log == []


def test_causal_pseudo_labels_ignore_the_future():
    g = small_graph()
    runner = _runner(g)
    events = torch.arange(g.num_events)
    batch = events[(g.task == 1)][40:80]
    causal = runner._pseudo_labels(1, events)(batch)
    g2 = small_graph()
    later = g2.ts > g2.ts[batch].max()
    g2.dst[later] = g2.dst[later].flip(0)  # rewire every event after the batch
    runner2 = _runner(g2)
    runner2.labels = runner.labels
    assert torch.equal(runner2._pseudo_labels(1, events)(batch), causal)
    test_nodes = (runner.split.role == 2).nonzero().flatten()
    official = _runner(g, pseudo_label="official")._pseudo_labels(1, events)(batch)
    assert official.shape == causal.shape and torch.equal(
        official[runner.split.role != 2], g.node_labels[runner.split.role != 2]
    )
    assert len(test_nodes) > 0
    with pytest.raises(ValueError, match="pseudo_label"):
        _runner(g, pseudo_label="oracle")


@pytest.mark.parametrize("method", ["otgnet", "otgnet-noib", "otgnet-random"])
def test_otgnet_variants_run_reproducibly(method):
    g = small_graph()
    a = run_protocol(g, method, epochs=2, patience=2, seed=1)
    b = run_protocol(g, method, epochs=2, patience=2, seed=1)
    assert torch.equal(a.acc.nan_to_num(-1), b.acc.nan_to_num(-1))
    assert 0 <= a.ap <= 100


def test_no_test_node_true_label_reaches_the_filter():
    g = small_graph()
    runner = _runner(g)
    events = torch.arange(g.num_events)
    batch = events[g.task == 1][40:80]
    labels = runner._pseudo_labels(1, events)(batch)
    test_nodes = (runner.split.role == 2).nonzero().flatten()
    runner.labels = runner.labels.clone()
    runner.labels[test_nodes] = (runner.labels[test_nodes] + 1) % g.num_classes  # scramble the truth
    assert torch.equal(runner._pseudo_labels(1, events)(batch)[test_nodes], labels[test_nodes])


def test_new_event_loss_weights_by_hand():
    from bastion.tgraph.otgnet import new_event_loss

    # src side: classes 3, 3, 4, 1 (current task: 3..5); dst side: 5, 5, 5, 5
    labels = torch.tensor([3, 3, 4, 1, 5, 5, 5, 5])
    losses = torch.tensor([1.0, 2.0, 3.0, 4.0, 1.0, 1.0, 1.0, 1.0])
    # src: n_new = 3 -> w(3) = 1/3, w(4) = 2/3, old class 1 -> 1; dst: n_new = 4, all class 5 -> w = 0
    expected = (1 / 3 * 1 + 1 / 3 * 2 + 2 / 3 * 3 + 1 * 4 + 0 + 0 + 0 + 0) / 8
    assert float(new_event_loss(losses, labels, 3, 6)) == pytest.approx(expected)
