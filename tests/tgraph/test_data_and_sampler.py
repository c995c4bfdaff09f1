"""Temporal graph data: the official layout's rules, the split, the sampler against brute force, AP / AF."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bastion.tgraph import (
    RecentNeighbourSampler,
    TemporalGraph,
    average_forgetting,
    average_performance,
    read_otg,
    split_tasks,
    write_otg,
)


def tiny_graph(n_events: int = 400, n_nodes: int = 60, k: int = 2, seed: int = 0) -> TemporalGraph:
    """Two tasks of k classes; task 1's events come after task 0's and touch at least one new-class node."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.tensor([-1]), torch.randint(0, 2 * k, (n_nodes,), generator=g)])
    old = (labels >= 0) & (labels < k)
    new = labels >= k
    ids_old, ids_new = old.nonzero().flatten(), new.nonzero().flatten()
    half = n_events // 2
    src = torch.cat([ids_old[torch.randint(0, len(ids_old), (half,), generator=g)],
                     ids_new[torch.randint(0, len(ids_new), (n_events - half,), generator=g)]])  # fmt: skip
    every = torch.arange(1, n_nodes + 1)
    dst = torch.cat([ids_old[torch.randint(0, len(ids_old), (half,), generator=g)],
                     every[torch.randint(0, n_nodes, (n_events - half,), generator=g)]])  # fmt: skip
    ts = torch.sort(torch.randint(0, n_events // 3, (n_events,), generator=g).double()).values  # many ties
    x = torch.randn(n_nodes + 1, 3, generator=g)
    x[0] = 0
    return TemporalGraph(src, dst, ts, labels[src], labels[dst], x, k)


def test_sampler_returns_the_k_most_recent_strictly_earlier_neighbours_brute_force():
    graph = tiny_graph()
    subset = torch.arange(0, graph.num_events, 2)  # e.g. only the train events are a neighbour source
    sampler = RecentNeighbourSampler(graph.src, graph.dst, graph.ts, k=5, events=subset)
    gen = torch.Generator().manual_seed(1)
    nodes = torch.randint(1, graph.num_nodes + 1, (300,), generator=gen)
    times = graph.ts[torch.randint(0, graph.num_events, (300,), generator=gen)] + torch.tensor([0.0, 0.5]).repeat(150)
    out = sampler(nodes, times)
    for q in range(300):
        w, t = int(nodes[q]), float(times[q])
        early = [e for e in subset.tolist() if graph.ts[e] < t]
        hist = [(e, int(graph.dst[e]) if int(graph.src[e]) == w else int(graph.src[e]))
                for e in early if w in (int(graph.src[e]), int(graph.dst[e]))]  # fmt: skip
        extra = [(e, w) for e in early if int(graph.src[e]) == w == int(graph.dst[e])]
        hist = sorted(hist + extra, key=lambda p: (float(graph.ts[p[0]]), p[0]))[-5:]  # self-loops count twice
        got = out.events[q][out.mask[q]].tolist()
        assert sorted(got) == sorted(e for e, _ in hist), (w, t)
        assert bool((out.times[q][out.mask[q]] < t).all())  # never at or after the query time
        assert sorted(out.nodes[q][out.mask[q]].tolist()) == sorted(v for _, v in hist)
        n_pad = 5 - len(hist)
        assert not bool(out.mask[q, :n_pad].any()) and int(out.nodes[q, :n_pad].abs().sum()) == 0  # left padding
        assert bool((out.times[q][out.mask[q]].diff() >= 0).all())  # oldest first


def test_ap_af_on_a_hand_matrix_including_the_max_over_later_tasks():
    acc = torch.tensor([[80.0, float("nan"), float("nan")], [60.0, 90.0, float("nan")], [70.0, 95.0, 50.0]])
    assert average_performance(acc) == pytest.approx((70 + 95 + 50) / 3)
    # task 0: best 80 -> final 70 (10); task 1: best 95 (reached at the last task itself) -> 95 (0)
    assert average_forgetting(acc) == pytest.approx(5.0)
    assert average_forgetting(torch.tensor([[50.0]])) == 0.0
    with pytest.raises(ValueError, match="square"):
        average_performance(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="NaN"):
        average_forgetting(torch.tensor([[1.0, 0.0], [float("nan"), 2.0]]))


def test_split_is_seeded_and_test_nodes_are_inductive():
    graph = tiny_graph()
    a, b = split_tasks(graph, seed=3), split_tasks(graph, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.train + a.test, b.train + b.test, strict=True))
    for t in range(graph.num_tasks):
        tr, va, te = a.train[t], a.val[t], a.test[t]
        assert len(tr) + len(va) + len(te) == int((graph.task == t).sum())
        assert bool((a.role[graph.src[tr]] == 0).all() and (a.role[graph.dst[tr]] == 0).all())
        seen = torch.cat([graph.src[torch.cat([tr, va])], graph.dst[torch.cat([tr, va])]])
        assert not bool(torch.isin(a.test_nodes[t], seen).any())  # inductive
        assert set(graph.node_labels[a.test_nodes[t]].tolist()) <= set(graph.task_classes(t))
    new0 = torch.unique(torch.cat([graph.src[graph.task == 0], graph.dst[graph.task == 0]]))
    assert 0.7 < float((a.role[new0] == 0).double().mean()) < 0.9


def test_round_trip_through_the_official_files(tmp_path):
    graph = tiny_graph()
    csv_path, _ = write_otg(graph, tmp_path / "toy.csv")
    back = read_otg(csv_path, classes_per_task=2)
    for key in ("src", "dst", "ts", "label_src", "label_dst", "features", "task", "node_labels"):
        assert torch.equal(getattr(back, key), getattr(graph, key)), key


def _write(tmp_path, rows, header="u,i,ts,label_u,label_i,idx", feats=None):
    path = tmp_path / "bad.csv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    if feats is not None:
        np.save(tmp_path / "bad_node.npy", feats)
    return path


@pytest.mark.parametrize(
    ("rows", "header", "nfeat", "match"),
    [
        (["1,2,5,0,0,1", "2,3,4,0,0,2"], None, 4, r"column ts, row 2 \(line 3\)"),
        (["1,2,5,0,0,1"], "u,i,ts,label_u,idx", 3, r"missing column\(s\) label_i"),
        (["1,2,5,0,-1,1"], None, 3, r"column label_i, row 1 \(line 2\): label -1 outside \[0, C\)"),
        (["1,2,5,0,1,1", "1,3,6,2,0,2"], None, 4, r"column label_u, row 2 \(line 3\): node 1 has label 2"),
        (["0,2,5,0,0,1"], None, 3, r"column u, row 1 \(line 2\): node id 0"),
        (["1,2,5,0,0,1"], None, 5, r"5 feature rows, expected max node id \+ 1 = 3"),
        (
            ["1,2,5,3,3,1", "3,4,6,0,0,2", "5,6,7,1,2,3"],
            None,
            7,
            r"row 2 \(line 3\): event of task 0 after one of task 1",
        ),
        (
            ["1,2,5,0,0,1", "2,5,6,0,0,2", "3,4,7,1,1,3", "6,5,8,3,0,4"],
            None,
            7,
            r"column label_u, row 3 \(line 4\): .* row 4|column label_u, row 4 \(line 5\): label 3 outside \[0, 2\)",
        ),
        (
            ["7,5,5,0,0,1", "1,2,6,0,0,2", "5,3,7,2,0,3"],
            None,
            8,
            r"column label_u, row 3 \(line 4\): node 5 has label 2, earlier 0",
        ),
        (["1,2,x,0,0,1"], None, 3, r"column ts, line 2: 'x' is not a number"),
    ],
)
def test_bad_files_name_the_file_column_and_row(tmp_path, rows, header, nfeat, match):
    path = _write(tmp_path, rows, header or "u,i,ts,label_u,label_i,idx", np.zeros((nfeat, 2)))
    with pytest.raises(ValueError, match=match) as info:
        read_otg(path, classes_per_task=3)
    assert "bad" in str(info.value)  # the file


def test_labels_beyond_num_classes_and_missing_files(tmp_path):
    path = _write(tmp_path, ["1,2,5,0,4,1"], feats=np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"column label_i, line 2: label 4 outside \[0, 3\)"):
        read_otg(path, num_classes=3)
    with pytest.raises(FileNotFoundError):
        read_otg(tmp_path / "none.csv")
    with pytest.raises(FileNotFoundError):
        read_otg(path, features=tmp_path / "none.npy")


def test_nan_features_are_refused():
    g = tiny_graph()
    x = g.features.clone()
    x[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        TemporalGraph(g.src, g.dst, g.ts, g.label_src, g.label_dst, x, 2)
