"""The temporal backbone (memory writes, causality, heads) and the class-incremental protocol."""

from __future__ import annotations

import pytest
import torch

from bastion.tgraph import RecentNeighbourSampler, open_temporal_graph
from bastion.tgraph.model import TemporalBackbone
from bastion.tgraph.protocol import run_protocol


def small_graph():
    return open_temporal_graph("reddit_like", tasks=2, nodes_per_class=40, events_per_node=6, noise=2.5, seed=3)


def test_memory_write_keeps_the_last_write_of_a_node():
    model = TemporalBackbone(5, 2, 3, 3, d=4)
    nodes = torch.tensor([2, 4, 2, 2, 5])
    values = torch.arange(20.0).view(5, 4)
    model.write_memory(nodes, values)
    torch.testing.assert_close(model.memory[2], values[3])
    torch.testing.assert_close(model.memory[4], values[1])
    assert float(model.memory[[0, 1, 3]].abs().sum()) == 0.0


def test_outputs_do_not_depend_on_later_events():
    g = small_graph()
    model = TemporalBackbone(g.num_nodes, g.features.shape[1], g.num_classes, 3, d=8).eval()
    model.reset_memory(0)
    ev = torch.arange(200, 260)
    sampler = RecentNeighbourSampler(g.src, g.dst, g.ts, events=torch.arange(g.num_events))
    before = model(g.src[ev], g.dst[ev], g.ts[ev], g.features, g.node_labels, sampler)
    dst = g.dst.clone()
    later = g.ts > g.ts[ev].max()
    dst[later] = torch.randint(1, g.num_nodes + 1, (int(later.sum()),))  # rewire the future
    after = model(g.src[ev], g.dst[ev], g.ts[ev], g.features, g.node_labels,
                  RecentNeighbourSampler(g.src, dst, g.ts, events=torch.arange(g.num_events)))  # fmt: skip
    for a, b in zip(before, after, strict=True):
        torch.testing.assert_close(a, b)


def test_task_heads_give_within_task_targets_and_the_class_head_masks_unseen_classes():
    model = TemporalBackbone(10, 2, 8, 3, d=4, head_dim=6)  # tasks of 3, 3 and 2 classes
    hidden = torch.randn(4, 6)
    labels = torch.tensor([0, 4, 7, 6])
    logits, targets = model.classify(hidden, labels, seen_classes=8)
    assert targets.tolist() == [0, 1, 1, 0] and logits.shape == (4, 3)
    assert bool(torch.isinf(logits[2:, 2]).all())  # the last task has only two classes
    torch.testing.assert_close(logits[1, :], model.heads[1](hidden[1]))
    class_model = TemporalBackbone(10, 2, 8, 3, d=4, head_dim=6, scenario="class")
    logits, targets = class_model.classify(hidden, labels, seen_classes=6)
    assert logits.shape == (4, 6) and targets.tolist() == labels.tolist()
    with pytest.raises(ValueError, match="scenario"):
        TemporalBackbone(10, 2, 8, 3, scenario="domain")
    fixed = TemporalBackbone(10, 2, 8, 3, fixed_heads=True)
    assert not any(p.requires_grad for p in fixed.heads.parameters())


@pytest.mark.parametrize("method", ["finetune", "joint", "ewc", "lwf", "replay"])
def test_protocol_runs_every_method_reproducibly(method):
    g = small_graph()
    a = run_protocol(g, method, epochs=2, patience=2, seed=1)
    b = run_protocol(g, method, epochs=2, patience=2, seed=1)
    assert torch.equal(a.acc.nan_to_num(-1), b.acc.nan_to_num(-1)) and a.ap == b.ap
    assert bool(a.acc.tril().ge(0).all()) and bool(a.acc.triu(1).isnan()[0, 1])
    assert 0 <= a.af <= 100 and 0 <= a.ap <= 100


@pytest.mark.parametrize("method", ["finetune", "joint"])
def test_joint_training_early_stops_on_the_validation_nodes_of_every_seen_task(method, monkeypatch):
    """Joint training selects on every seen task's whole validation set; other methods on the newest task's."""
    from bastion.tgraph import protocol

    g = small_graph()
    calls: list[torch.Tensor] = []  # the nodes of each validation-time accuracy call
    original = protocol._Runner._accuracy

    def spy(self, preds, nodes, seen):
        if all(not torch.equal(nodes, t) for t in self.split.test_nodes):  # a validation call, not a test one
            calls.append(nodes.clone())
            self.val_nodes_of = [self._val_nodes(j) for j in range(len(self.split.val))]
            assert all(int(n) in preds for n in nodes.tolist())  # every validation node gets a prediction
        return original(self, preds, nodes, seen)

    runner_holder = {}
    original_init = protocol._Runner.__init__

    def init(self, *args, **kw):
        original_init(self, *args, **kw)
        runner_holder["r"] = self

    monkeypatch.setattr(protocol._Runner, "_accuracy", spy)
    monkeypatch.setattr(protocol._Runner, "__init__", init)
    run_protocol(g, method, epochs=1, patience=1, seed=0)
    v0, v1 = runner_holder["r"].val_nodes_of
    assert len(v0) > 5 and len(v1) > 5
    assert bool((g.node_labels[v0] < 3).all()) and bool((g.node_labels[v1] >= 3).all())
    expected = [v0, v1, v0] if method == "joint" else [v0, v1]
    assert len(calls) == len(expected) and all(torch.equal(a, b) for a, b in zip(calls, expected, strict=True))


def test_class_scenario_forgets_under_fine_tuning_more_than_joint_training():
    g = small_graph()
    ft = run_protocol(g, "finetune", scenario="class", epochs=6, patience=6, lr=3e-3)
    joint = run_protocol(g, "joint", scenario="class", epochs=6, patience=6, lr=3e-3)
    assert ft.af > 30 and ft.af > joint.af + 10, (ft.acc, joint.acc)
    with pytest.raises(ValueError, match="method"):
        run_protocol(g, "icarl")


def test_jvp_importance_through_the_backbone_is_finite_and_equals_autograd():
    """Early events have endpoints without neighbours: no NaN may leak through the attention (forward-mode
    included), and the JVP equals the per-node backward passes."""
    from torch.func import functional_call

    from bastion.tgraph.selection import node_importance, node_importance_loop

    g = small_graph()
    torch.manual_seed(0)
    model = TemporalBackbone(g.num_nodes, g.features.shape[1], g.num_classes, 3, d=8, dropout=0.0).eval()
    model.reset_memory(0)
    ev = torch.arange(0, 40)  # the very first events: many endpoints have no history yet
    sampler = RecentNeighbourSampler(g.src, g.dst, g.ts)
    assert not bool(sampler(g.src[ev], g.ts[ev]).mask.any(1).all())

    class Losses(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self):
            hu, _, _, _ = self.model(g.src[ev], g.dst[ev], g.ts[ev], g.features, g.node_labels, sampler)
            logits, target = self.model.classify(hu, g.node_labels[g.src[ev]], 3)
            return torch.nn.functional.cross_entropy(logits, target, reduction="none")

    wrapper = Losses()
    params = {n: p.detach() for n, p in model.named_parameters() if not n.startswith("w_e")}

    def losses(p):
        return functional_call(wrapper, {f"model.{k}": v for k, v in p.items()}, (), strict=False)

    direction = {n: torch.randn_like(v) for n, v in params.items()}
    fast, slow = node_importance(losses, params, direction), node_importance_loop(losses, params, direction)
    assert bool(torch.isfinite(fast).all()) and bool(torch.isfinite(slow).all())
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-6)
