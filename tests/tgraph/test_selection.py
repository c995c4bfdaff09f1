"""Triad selection pieces against their references: JVP vs per-node autograd, greedy vs exhaustive,
triads vs a brute-force enumeration."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch.func import functional_call

from bastion.tgraph import open_temporal_graph
from bastion.tgraph.selection import enumerate_triads, greedy_select, node_importance, node_importance_loop


def test_jvp_importance_equals_per_node_autograd_in_float64():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.Tanh(), torch.nn.Linear(12, 3)).double()
    x, y = torch.randn(40, 6, dtype=torch.float64), torch.randint(0, 3, (40,))
    params = {k: v.detach() for k, v in net.named_parameters()}

    def losses(p):
        return torch.nn.functional.cross_entropy(functional_call(net, p, (x,)), y, reduction="none")

    mean_grad = torch.autograd.grad(losses(dict(net.named_parameters())).mean(), list(net.parameters()))
    direction = dict(zip(params, mean_grad, strict=True))  # s proportional to g, as LiSSA(scale 1e9) gives
    fast, slow = node_importance(losses, params, direction), node_importance_loop(losses, params, direction)
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-12)
    assert float(fast.abs().max()) > 0
    with pytest.raises(ValueError, match="keys"):
        node_importance(losses, params, {"0.weight": direction["0.weight"]})


def _objective(picks, importance, cover, gamma):
    covered = cover[list(picks)].any(0) if picks else torch.zeros(len(importance), dtype=torch.bool)
    return float(importance[list(picks)].sum()) + gamma * float(covered.sum()) / len(importance)


@pytest.mark.parametrize("seed", range(6))
def test_greedy_reaches_one_minus_one_over_e_of_the_exhaustive_optimum(seed):
    g = torch.Generator().manual_seed(seed)
    n, m, radius, gamma = 10, 3, 0.6, 20.0
    pts = torch.rand(n, 2, generator=g)
    dist = torch.cdist(pts, pts)
    importance = torch.rand(n, generator=g).double() * 0.5
    picks = greedy_select(importance, dist, m=m, radius=radius, gamma=gamma)
    assert len(set(picks)) == m
    best = max(_objective(s, importance, dist < radius, gamma) for s in itertools.combinations(range(n), m))
    assert _objective(picks, importance, dist < radius, gamma) >= (1 - 1 / math.e) * best - 1e-9
    with pytest.raises(ValueError, match="distances"):
        greedy_select(importance, dist[:3], m=2, radius=0.5)


def test_triads_equal_a_brute_force_enumeration():
    graph = open_temporal_graph("reddit_like", tasks=1, nodes_per_class=15, events_per_node=6, h=0.3, seed=4)
    events = torch.arange(0, graph.num_events, 3)  # a "train" subset: the only neighbour source
    labels, src, dst, ts = graph.node_labels, graph.src, graph.dst, graph.ts
    cls, k = 1, 4
    closed, open_ = enumerate_triads(src, dst, ts, labels, events, cls, k=k)

    def recent(node, before):
        hist = [(float(ts[e]), e, int(dst[e]) if int(src[e]) == node else int(src[e]))
                for e in events.tolist() if node in (int(src[e]), int(dst[e])) and ts[e] < before]  # fmt: skip
        extra = [(float(ts[e]), e, node) for e in events.tolist() if int(src[e]) == node == int(dst[e])
                 and ts[e] < before]  # fmt: skip
        return {w for _, _, w in sorted(hist + extra)[-k:]}

    want_c, want_o = [], []
    for e in events.tolist():
        s, d = int(src[e]), int(dst[e])
        if int(labels[s]) != cls or int(labels[d]) != cls:
            continue
        for w in sorted(recent(s, ts[e]) & recent(d, ts[e])):
            if int(labels[w]) == cls and w not in (s, d) and (s, d, w) not in want_c:
                want_c.append((s, d, w))
        for w in sorted(recent(s, math.inf)):
            if int(labels[w]) == cls and w not in (s, d) and w not in recent(d, math.inf) and (w, s, d) not in want_o:
                want_o.append((w, s, d))
    assert closed == want_c and open_ == want_o
    assert len(closed) > 0 and len(open_) > 0  # the case is not vacuous
