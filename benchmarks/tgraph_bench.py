"""OTGNet's hot paths against their naive versions and against PyG (issue #7, acceptance 5), one thread.

1. Neighbour sampling: our searchsorted sampler (all queries at once) vs a per-query loop over the same
   index, and vs PyG's ``LastNeighborLoader`` streaming the same events (query then insert, batch 300).
2. Training throughput (events/s): our backbone (one Adam step per batch of 300, memory write) vs PyG's
   TGN (``TGNMemory`` + ``LastNeighborLoader`` + a ``TransformerConv`` attention embedding, as in PyG's
   ``examples/tgn.py``, with a node-classification head) at the same memory size, batch and data.
3. Node importance: one forward-mode JVP per batch vs one backward pass per node.
4. Greedy selection on one distance matrix vs a loop over candidate pairs.

Ratios are measured in one run, alternating, medians of ``--repeats``. Writes
``benchmarks/results/tgraph_bench.json``. Needs torch-geometric (``.[bench]``).
"""

from __future__ import annotations

import argparse
import bisect
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bastion.core.report import environment, markdown_table, write_json
from bastion.tgraph import RecentNeighbourSampler, open_temporal_graph
from bastion.tgraph.model import TemporalBackbone
from bastion.tgraph.selection import greedy_select, node_importance, node_importance_loop


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_sampler(graph, repeats: int) -> list[dict]:
    from torch_geometric.nn.models.tgn import LastNeighborLoader

    n_q = 2 * graph.num_events
    nodes = torch.cat([graph.src, graph.dst])
    times = torch.cat([graph.ts, graph.ts])
    sampler = RecentNeighbourSampler(graph.src, graph.dst, graph.ts, k=5)
    per_node: dict[int, list[tuple[float, int, int]]] = {}
    for e in range(graph.num_events):  # the loop's index: per node, (time, event, neighbour) sorted
        for a, b in ((int(graph.src[e]), int(graph.dst[e])), (int(graph.dst[e]), int(graph.src[e]))):
            per_node.setdefault(a, []).append((float(graph.ts[e]), e, b))
    keys = {n: [t for t, _, _ in v] for n, v in per_node.items()}

    def ours():
        sampler(nodes, times)

    def loop():  # pure Python: bisect on per-node lists (the strongest loop we could write)
        for n, t in zip(nodes.tolist(), times.tolist(), strict=True):
            hist = per_node.get(n, [])
            end = bisect.bisect_left(keys.get(n, []), t)
            _ = hist[max(0, end - 5) : end]

    node_times = {n: torch.tensor(v, dtype=torch.float64) for n, v in keys.items()}
    node_other = {n: torch.tensor([b for _, _, b in v]) for n, v in per_node.items()}

    def torch_loop():  # one searchsorted per query on the node's own tensors (the spec's prototype loop)
        for n, t in zip(nodes.tolist(), times.tolist(), strict=True):
            end = int(torch.searchsorted(node_times[n], torch.tensor([t], dtype=torch.float64)))
            _ = node_other[n][max(0, end - 5) : end]

    def pyg():
        loader = LastNeighborLoader(graph.num_nodes + 1, size=5)
        for i in range(0, graph.num_events, 300):
            s, d = graph.src[i : i + 300], graph.dst[i : i + 300]
            loader(torch.cat([s, d]).unique())
            loader.insert(s, d)

    t_ours, t_loop, t_pyg = (_median_time(f, repeats) for f in (ours, loop, pyg))
    t_tloop = _median_time(torch_loop, 1)
    return [{"benchmark": "neighbour sampling", "queries": n_q, "ours s": t_ours,
             "baseline": "per-query loop (torch searchsorted per query)", "baseline s": t_tloop,
             "speed-up": t_tloop / t_ours},
            {"benchmark": "neighbour sampling", "queries": n_q, "ours s": t_ours,
             "baseline": "per-query loop (Python bisect on lists)", "baseline s": t_loop,
             "speed-up": t_loop / t_ours},
            {"benchmark": "neighbour sampling", "queries": n_q, "ours s": t_ours,
             "baseline": "PyG LastNeighborLoader (stream)", "baseline s": t_pyg,
             "speed-up": t_pyg / t_ours}]  # fmt: skip


def bench_training(graph, d: int, repeats: int) -> list[dict]:
    from torch_geometric.nn import TGNMemory, TransformerConv
    from torch_geometric.nn.models.tgn import IdentityMessage, LastAggregator, LastNeighborLoader

    events = torch.arange(graph.num_events)
    x, labels = graph.features, graph.node_labels
    k = graph.classes_per_task
    sampler = RecentNeighbourSampler(graph.src, graph.dst, graph.ts, k=5)
    torch.manual_seed(0)
    ours = TemporalBackbone(graph.num_nodes, x.shape[1], graph.num_classes, k, d=d, scenario="class")
    opt = torch.optim.Adam(ours.parameters(), lr=1e-3)

    def run_ours():
        ours.train()
        ours.reset_memory(0)
        for i in range(0, len(events), 300):
            ev = events[i : i + 300]
            src, dst = graph.src[ev], graph.dst[ev]
            hu, hv, mu, mv = ours(src, dst, graph.ts[ev], x, labels, sampler)
            lu, tu = ours.classify(hu, labels[src], graph.num_classes)
            lv, tv = ours.classify(hv, labels[dst], graph.num_classes)
            loss = F.cross_entropy(lu, tu) + F.cross_entropy(lv, tv)
            opt.zero_grad()
            loss.backward()
            opt.step()
            ours.write_memory(torch.cat([src, dst]), torch.cat([mu, mv]))

    class Embedding(torch.nn.Module):  # PyG examples/tgn.py
        def __init__(self, in_channels, out_channels, msg_dim, time_enc):
            super().__init__()
            self.time_enc = time_enc
            self.conv = TransformerConv(in_channels, out_channels // 2, heads=2, dropout=0.1,
                                        edge_dim=msg_dim + time_enc.out_channels)  # fmt: skip

        def forward(self, h, last_update, edge_index, t, msg):
            rel_t = last_update[edge_index[0]] - t
            rel_t_enc = self.time_enc(rel_t.to(h.dtype))
            return self.conv(h, edge_index, torch.cat([rel_t_enc, msg], -1))

    n = graph.num_nodes + 1
    msg_dim = 1
    memory = TGNMemory(n, msg_dim, d, d, message_module=IdentityMessage(msg_dim, d, d),
                       aggregator_module=LastAggregator())  # fmt: skip
    gnn = Embedding(d + x.shape[1], d, msg_dim, memory.time_enc)
    head = torch.nn.Linear(d, graph.num_classes)
    params = list(memory.parameters()) + list(gnn.parameters()) + list(head.parameters())
    opt2 = torch.optim.Adam(params, lr=1e-3)
    t_all = graph.ts.long()
    msg_all = torch.zeros(graph.num_events, msg_dim)
    assoc = torch.empty(n, dtype=torch.long)

    def run_pyg():
        memory.train()
        gnn.train()
        memory.reset_state()
        loader = LastNeighborLoader(n, size=5)
        for i in range(0, graph.num_events, 300):
            s, dd, tt, msg = graph.src[i : i + 300], graph.dst[i : i + 300], t_all[i : i + 300], msg_all[i : i + 300]
            opt2.zero_grad()
            n_id, edge_index, e_id = loader(torch.cat([s, dd]).unique())
            assoc[n_id] = torch.arange(n_id.size(0))
            z, last_update = memory(n_id)
            z = gnn(torch.cat([z, x[n_id]], -1), last_update, edge_index, t_all[e_id], msg_all[e_id])
            loss = F.cross_entropy(head(z[assoc[s]]), labels[s]) + F.cross_entropy(head(z[assoc[dd]]), labels[dd])
            memory.update_state(s, dd, tt, msg)
            loader.insert(s, dd)
            loss.backward()
            opt2.step()
            memory.detach()

    times_ours, times_pyg = [], []
    for _ in range(repeats):  # alternating
        times_ours.append(_median_time(run_ours, 1))
        times_pyg.append(_median_time(run_pyg, 1))
    t_o, t_p = statistics.median(times_ours), statistics.median(times_pyg)
    ev = graph.num_events
    return [{"benchmark": f"training events/s (d={d}, batch 300)", "queries": ev, "ours s": t_o,
             "baseline": "PyG TGN (TGNMemory + LastNeighborLoader + TransformerConv)", "baseline s": t_p,
             "speed-up": t_p / t_o, "ours events/s": ev / t_o, "baseline events/s": ev / t_p}]  # fmt: skip


def bench_importance(graph, d: int, repeats: int) -> list[dict]:
    from torch.func import functional_call

    torch.manual_seed(0)
    model = TemporalBackbone(graph.num_nodes, graph.features.shape[1], graph.num_classes, graph.classes_per_task,
                             d=d, dropout=0.0).eval()  # fmt: skip
    model.reset_memory(0)
    sampler = RecentNeighbourSampler(graph.src, graph.dst, graph.ts, k=5)
    ev = torch.arange(1000, 1300)
    src, dst, ts = graph.src[ev], graph.dst[ev], graph.ts[ev]
    names = [n for n, _ in model.named_parameters() if not n.startswith("w_e")]
    params = {n: p.detach() for n, p in model.named_parameters() if n in names}

    class Losses(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self):
            hu, _, _, _ = self.model(src, dst, ts, graph.features, graph.node_labels, sampler)
            logits, target = self.model.classify(hu, graph.node_labels[src], graph.num_classes)
            return F.cross_entropy(logits, target, reduction="none")

    wrapper = Losses()

    def losses(p):
        return functional_call(wrapper, {f"model.{k}": v for k, v in p.items()}, (), strict=False)

    direction = {n: torch.randn_like(v) for n, v in params.items()}
    t_jvp = _median_time(lambda: node_importance(losses, params, direction), repeats)
    t_loop = _median_time(lambda: node_importance_loop(losses, params, direction), max(1, repeats // 2))
    diff = float(
        (node_importance(losses, params, direction) - node_importance_loop(losses, params, direction)).abs().max()
    )
    return [{"benchmark": "node importance (300 nodes)", "queries": 300, "ours s": t_jvp,
             "baseline": "one backward per node", "baseline s": t_loop, "speed-up": t_loop / t_jvp,
             "max |diff|": diff}]  # fmt: skip


def bench_greedy(repeats: int, n: int = 1000, m: int = 10) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    pts = torch.randn(n, 8, generator=g)
    dist = torch.cdist(pts, pts)
    imp = torch.rand(n, generator=g).double()
    radius = float(dist.flatten()[torch.randperm(n * n, generator=g)[:100]].sort().values[20])

    def loop():
        covered, picks = [False] * n, []
        rows = dist.tolist()
        for _ in range(m):
            best, arg = -1e18, -1
            for i in range(n):
                if i in picks:
                    continue
                gain = float(imp[i]) + 20.0 * sum(1 for j in range(n) if not covered[j] and rows[i][j] < radius) / n
                if gain > best:
                    best, arg = gain, i
            picks.append(arg)
            for j in range(n):
                covered[j] = covered[j] or rows[arg][j] < radius
        return picks

    fast = greedy_select(imp, dist, m=m, radius=radius)
    assert fast == loop(), "greedy and the loop disagree"
    t_fast = _median_time(lambda: greedy_select(imp, dist, m=m, radius=radius), repeats)
    t_loop = _median_time(loop, 1)
    return [{"benchmark": f"greedy selection ({n} candidates, M={m})", "queries": n, "ours s": t_fast,
             "baseline": "pairwise loop", "baseline s": t_loop, "speed-up": t_loop / t_fast}]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--d", type=int, default=32)
    parser.add_argument("--out", default="benchmarks/results/tgraph_bench.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    graph = open_temporal_graph("reddit_like", nodes_per_class=200, seed=0)
    rows = bench_sampler(graph, args.repeats) + bench_training(graph, args.d, max(3, args.repeats // 2))
    rows += bench_importance(graph, args.d, args.repeats) + bench_greedy(args.repeats)
    print(markdown_table(rows))
    write_json(Path(args.out), {"rows": rows, "graph": {"events": graph.num_events, "nodes": graph.num_nodes},
                                "d": args.d, "environment": environment()})  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
