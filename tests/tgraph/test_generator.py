"""The open temporal graph generator: its knobs do what they say."""

from __future__ import annotations

import pytest
import torch

from bastion.tgraph.generator import open_temporal_graph


@pytest.mark.parametrize("h", [0.2, 0.8])
def test_heterophily_and_old_link_share_follow_the_knobs(h):
    g = open_temporal_graph("yelp_like", tasks=3, nodes_per_class=60, events_per_node=10, h=h, p_old=0.3, seed=1)
    assert g.num_tasks == 3 and g.num_classes == 9 and g.num_nodes == 540
    for t in range(3):
        ev = (g.task == t).nonzero().flatten()
        assert abs(g.heterophily(ev) - h) < 0.04
        lo = torch.minimum(g.label_src[ev], g.label_dst[ev])
        hi = torch.maximum(g.label_src[ev], g.label_dst[ev])
        assert bool((hi >= 3 * t).all())  # old-old events never occur
        old_share = float((lo < 3 * t).double().mean())
        assert abs(old_share - (h * 0.3 if t else 0.0)) < 0.04
    assert bool((g.ts.diff() >= 0).all())


def test_class_means_share_one_low_rank_subspace_and_the_seed_fixes_the_graph():
    g = open_temporal_graph("yelp_like", nodes_per_class=80, events_per_node=2, class_rank=4, communities=1,
                            noise=0.5, seed=2)  # fmt: skip
    labels = g.node_labels[1:]
    means = torch.stack([g.features[1:][labels == c].mean(0) for c in range(g.num_classes)])
    sv = torch.linalg.svdvals(means - means.mean(0))  # one community: its offset cancels
    assert float(sv[4] / sv[3]) < 0.25, sv  # 15 class means in a rank-4 subspace (+ sampling noise)
    again = open_temporal_graph("yelp_like", nodes_per_class=80, events_per_node=2, class_rank=4, communities=1,
                                noise=0.5, seed=2)  # fmt: skip
    assert torch.equal(g.src, again.src) and torch.equal(g.features, again.features)
    # taobao_like: 10 classes per task get 10 orthogonal means (a rank-10 subspace by default)
    tb = open_temporal_graph("taobao_like", tasks=1, nodes_per_class=60, events_per_node=2, communities=1,
                             noise=0.2, seed=2)  # fmt: skip
    lab = tb.node_labels[1:]
    m = torch.stack([tb.features[1:][lab == c].mean(0) for c in range(10)])
    d = torch.cdist(m, m) + torch.eye(10) * 1e9
    assert float(d.min()) > 0.9 * float(d[d < 1e8].max()), d  # all pairs sqrt(2) |mu| apart: none shared
    with pytest.raises(ValueError, match="class_rank"):
        open_temporal_graph("taobao_like", class_rank=4)
    with pytest.raises(ValueError, match="preset"):
        open_temporal_graph("wiki")
    with pytest.raises(ValueError, match="h must be"):
        open_temporal_graph(h=1.5)
