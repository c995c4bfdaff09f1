"""The class-incremental protocol on an open temporal graph, and the baselines under it (spec otgnet.md,
"Problem and protocol", "Training defaults").

Tasks are learned in order. Per task: every epoch re-initialises the memory (seeded) and streams the
task's train events in time order, in batches (the train events are the only neighbour source in
training); after each epoch the model streams train then val events and scores the val nodes at their
last val event; the best epoch's weights and memory are kept (early stopping with ``patience``), and
that memory is the task's snapshot. ``acc[i, j]`` is then measured after task ``i`` with task ``j``'s
memory snapshot, streaming task ``j``'s test events (each batch's memory writes reverted), each
inductive test node of task ``j``'s classes scored once at its last test event; test nodes see their
own test edges, other nodes do not. Task scenario: a node is scored with its own task's head;
class scenario: one head over every class seen so far.

Methods (one protocol for all): ``finetune``; ``joint`` (cumulative: task ``i`` trains on the train
events of tasks 0..i and early-stops on the mean validation accuracy of tasks 0..i, each old task scored
as the test scores it, an upper bound); ``ewc``
(diagonal Fisher of each finished task, penalty ``ewc_lambda``); ``lwf`` (distillation of the old heads'
outputs from the model as it was before the task, temperature 2); ``replay`` (random train events of every
old class, ``replay_per_class`` of them: 40 by default, OTGNet's budget of 10 closed and 10 open triads of
two edges each), appended to every later batch with their nodes' memory from their task's snapshot; loss
``0.5 mean(new) + 0.5 mean(replayed)``).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..core.checks import check_float, check_int
from ..core.progress import progress
from ..core.seed import seed_everything
from .data import TaskSplit, TemporalGraph, split_tasks
from .metrics import average_forgetting, average_performance
from .model import TemporalBackbone, interleave
from .sampler import Neighbours, RecentNeighbourSampler

__all__ = ["METHODS", "ProtocolResult", "run_protocol"]

METHODS = ("finetune", "joint", "ewc", "lwf", "replay", "otgnet", "otgnet-noib", "otgnet-random")


@dataclass
class ProtocolResult:
    """The accuracy matrix (%, NaN above the diagonal), AP, AF and costs of one run."""

    method: str
    scenario: str
    acc: torch.Tensor
    ap: float
    af: float
    seconds: float
    train_events_per_s: float
    best_epochs: list[int] = field(default_factory=list)


class _TestSampler:
    """Test-time neighbours: test nodes see every event of the task, other nodes train + val only."""

    def __init__(self, full: RecentNeighbourSampler, visible: RecentNeighbourSampler, is_test: torch.Tensor):
        self.full, self.visible, self.is_test = full, visible, is_test

    def __call__(self, nodes: torch.Tensor, times: torch.Tensor) -> Neighbours:
        a, b = self.full(nodes, times), self.visible(nodes, times)
        pick = self.is_test[nodes][:, None]
        return Neighbours(*(torch.where(pick, x, y) for x, y in zip(
            (a.nodes, a.times, a.events, a.mask), (b.nodes, b.times, b.events, b.mask), strict=True)))  # fmt: skip


def _batches(events: torch.Tensor, size: int):
    for i in range(0, len(events), size):
        yield events[i : i + size]


class _Runner:
    def __init__(self, graph, split, method, scenario, d, epochs, patience, batch_size, lr, seed, ewc_lambda,
                 replay_per_class, fixed_heads, quiet):  # fmt: skip
        self.g, self.split, self.method, self.scenario = graph, split, method, scenario
        self.epochs, self.patience, self.batch, self.seed, self.quiet = epochs, patience, batch_size, seed, quiet
        self.ewc_lambda, self.replay_per_class = ewc_lambda, replay_per_class
        torch.manual_seed(seed)
        self.model = TemporalBackbone(graph.num_nodes, graph.features.shape[1], graph.num_classes,
                                      graph.classes_per_task, d=d, scenario=scenario,
                                      fixed_heads=fixed_heads)  # fmt: skip
        self.lr = lr
        self.x, self.labels = graph.features, graph.node_labels
        self.snapshots: list[torch.Tensor] = []
        self.fisher: list[tuple[dict, dict]] = []
        self.teacher: TemporalBackbone | None = None
        self.replay = torch.zeros(0, dtype=torch.int64)
        self.replay_nodes = torch.zeros(0, dtype=torch.int64)
        self.replay_rows = torch.zeros(0, d)
        self.trained_events = 0

    # ------------------------------------------------------------------ streaming
    def _step(self, events, sampler, seen, grad: bool, filter_labels=None):
        g = self.g
        src, dst, ts = g.src[events], g.dst[events], g.ts[events]
        labels = self.labels if filter_labels is None else filter_labels
        with torch.set_grad_enabled(grad):
            hu, hv, mu, mv = self.model(src, dst, ts, self.x, labels, sampler)
        return src, dst, hu, hv, mu, mv

    def _loss(self, hu, hv, src, dst, seen):
        lu, tu = self.model.classify(hu, self.labels[src], seen)
        lv, tv = self.model.classify(hv, self.labels[dst], seen)
        return torch.cat([F.cross_entropy(lu, tu, reduction="none"), F.cross_entropy(lv, tv, reduction="none")])

    def _stream(self, events, sampler, seen, write=True, pseudo=None):
        """No-grad pass; returns {node: prediction} at each node's last event (later events overwrite).

        ``pseudo(batch_events) -> filter labels`` supplies the labels the class-agnostic filter sees."""
        preds = {}
        self.model.eval()
        with torch.no_grad():
            for ev in _batches(events, self.batch):
                labels = None if pseudo is None else pseudo(ev)
                src, dst, hu, hv, mu, mv = self._step(ev, sampler, seen, grad=False, filter_labels=labels)
                nodes, hidden = interleave(src, dst), interleave(hu, hv)  # event order: the last event wins
                logits, _ = self.model.classify(hidden, self.labels[nodes], seen)
                for n, p in zip(nodes.tolist(), logits.argmax(1).tolist(), strict=True):
                    preds[n] = p
                if write:
                    self.model.write_memory(nodes, interleave(mu, mv))
        return preds

    def _accuracy(self, preds: dict, nodes: torch.Tensor, seen: int) -> float:
        if len(nodes) == 0:
            return float("nan")
        k = self.g.classes_per_task
        right = 0
        for n in nodes.tolist():
            y = int(self.labels[n])
            target = y if self.scenario == "class" else y - (y // k) * k
            right += int(preds.get(n, -1) == target)
        return 100.0 * right / len(nodes)

    # ------------------------------------------------------------------ one task
    def train_task(self, t: int) -> int:
        g, split = self.g, self.split
        seen = (t + 1) * g.classes_per_task
        cur = torch.cat(split.train[: t + 1]).sort().values if self.method == "joint" else split.train[t]
        source = torch.cat([cur, self.replay]).unique() if len(self.replay) else cur
        sampler = RecentNeighbourSampler(g.src, g.dst, g.ts, k=self.model.k_n, events=source)
        val_events = split.val[t]
        val_sampler = RecentNeighbourSampler(g.src, g.dst, g.ts, k=self.model.k_n,
                                             events=torch.cat([cur, val_events]))  # fmt: skip
        val_nodes = self._val_nodes(t)
        params = self._main_params()
        opt = torch.optim.Adam(params, lr=self.lr)
        best, best_epoch, best_state, best_mem, wait = -1.0, -1, None, None, 0
        for epoch in progress(range(self.epochs), desc=f"{self.method} task {t}", quiet=self.quiet):
            self.model.train()
            self.model.reset_memory(self.seed * 1000 + epoch)
            for ev in _batches(cur, self.batch):
                if len(self.replay):
                    self.model.memory[self.replay_nodes] = self.replay_rows
                    ev_all = torch.cat([ev, self.replay])
                else:
                    ev_all = ev
                if self.model.ib_log is not None:
                    self.model.ib_log.clear()
                src, dst, hu, hv, mu, mv = self._step(ev_all, sampler, seen, grad=True)
                losses = self._loss(hu, hv, src, dst, seen)
                n = len(ev)
                if len(self.replay):
                    new = torch.cat([losses[:n], losses[len(ev_all) : len(ev_all) + n]])
                    old = torch.cat([losses[n : len(ev_all)], losses[len(ev_all) + n :]])
                    loss = 0.5 * self._new_mean(new, torch.cat([src[:n], dst[:n]]), seen) + 0.5 * old.mean()
                else:
                    loss = losses.mean()
                loss = loss + self._regulariser(t, ev_all, sampler, seen, hu, hv, src, dst)
                loss = loss + self._extra_loss(src, dst, mu, mv, n)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                self._after_step(epoch, seen)
                self.model.write_memory(interleave(src[:n], dst[:n]), interleave(mu[:n], mv[:n]))
                self.trained_events += n
            # validation: stream train then val with a fresh memory; score val nodes at their last val event
            self.model.reset_memory(self.seed * 1000 + epoch)
            self._stream(cur, sampler, seen)
            acc = self._accuracy(self._stream(val_events, val_sampler, seen), val_nodes, seen)
            acc = 0.0 if acc != acc else acc
            if self.method == "joint" and t > 0:
                acc = self._joint_validation(t, acc, seen)
            if acc > best:
                best, best_epoch, wait = acc, epoch, 0
                best_state = copy.deepcopy({k: v for k, v in self.model.state_dict().items() if k != "memory"})
                best_mem = self.model.memory.clone()
            else:
                wait += 1
                if wait >= self.patience:
                    break
        self.model.load_state_dict(best_state, strict=False)
        self.model.memory.copy_(best_mem)
        self.snapshots.append(best_mem)
        self._after_task(t, cur, sampler, seen)
        return best_epoch

    def _val_nodes(self, j: int) -> torch.Tensor:
        """Task ``j``'s validation nodes: role 1, of task ``j``'s classes, in task ``j``'s validation events."""
        g, ev = self.g, self.split.val[j]
        nodes = torch.unique(torch.cat([g.src[ev], g.dst[ev]]))
        return nodes[(self.split.role[nodes] == 1) & (self.labels[nodes] // g.classes_per_task == j)]

    def _joint_validation(self, t: int, acc_t: float, seen: int) -> float:
        """Joint training (the cumulative upper bound) selects its epoch on every seen task, equally weighted.

        Task ``t`` is scored as for every method; an old task ``j`` as :meth:`evaluate` will score it (its memory
        snapshot, its own train + val events as neighbours), on its validation events and nodes. Selecting on
        task ``t`` alone would let the old tasks drift with the newest one's best epoch. The memory is left
        as task ``t``'s validation left it (it becomes the snapshot of the best epoch).
        """
        g, split = self.g, self.split
        kept = self.model.memory.clone()
        accs = [acc_t]
        for j in range(t):
            self.model.memory.copy_(self.snapshots[j])
            events = torch.cat([split.train[j], split.val[j]]).sort().values
            sampler = RecentNeighbourSampler(g.src, g.dst, g.ts, k=self.model.k_n, events=events)
            a = self._accuracy(self._stream(split.val[j], sampler, seen, write=False), self._val_nodes(j), seen)
            accs.append(0.0 if a != a else a)
        self.model.memory.copy_(kept)
        return sum(accs) / len(accs)

    def evaluate(self, j: int, seen: int) -> float:
        g, split = self.g, self.split
        self.model.memory.copy_(self.snapshots[j])
        tr_va = torch.cat([split.train[j], split.val[j]]).sort().values
        full = RecentNeighbourSampler(g.src, g.dst, g.ts, k=self.model.k_n,
                                      events=torch.cat([tr_va, split.test[j]]))  # fmt: skip
        visible = RecentNeighbourSampler(g.src, g.dst, g.ts, k=self.model.k_n, events=tr_va)
        sampler = _TestSampler(full, visible, split.role == 2)
        pseudo = self._pseudo_labels(j, torch.cat([tr_va, split.test[j]]))
        preds = self._stream(split.test[j], sampler, seen, write=False, pseudo=pseudo)  # batch writes reverted
        return self._accuracy(preds, split.test_nodes[j], seen)

    # ------------------------------------------------------------------ method hooks
    def _main_params(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def _new_mean(self, losses: torch.Tensor, nodes: torch.Tensor, seen: int) -> torch.Tensor:
        return losses.mean()

    def _extra_loss(self, src, dst, mu, mv, n) -> torch.Tensor:
        return torch.zeros(())

    def _after_step(self, epoch: int, seen: int) -> None:
        pass

    def _pseudo_labels(self, task: int, events: torch.Tensor):
        return None

    def _regulariser(self, t, ev, sampler, seen, hu, hv, src, dst) -> torch.Tensor:
        zero = torch.zeros(())
        if self.method == "ewc" and self.fisher:
            pen = zero
            for fisher, star in self.fisher:
                for name, p in self.model.named_parameters():
                    if name in fisher:
                        pen = pen + (fisher[name] * (p - star[name]) ** 2).sum()
            return self.ewc_lambda / 2 * pen
        if self.method == "lwf" and self.teacher is not None and t > 0:
            with torch.no_grad():
                self.teacher.memory.copy_(self.model.memory)
                thu, thv, _, _ = self.teacher(src, self.g.dst[ev], self.g.ts[ev], self.x, self.labels, sampler)
            kd = zero
            for h, th in ((hu, thu), (hv, thv)):
                for old in range(t if self.scenario == "task" else 1):
                    head, thead = self.model.heads[old], self.teacher.heads[old]
                    out, tout = head(h), thead(th)
                    if self.scenario == "class":
                        old_seen = t * self.g.classes_per_task
                        out, tout = out[:, :old_seen], tout[:, :old_seen]
                    kd = kd + F.kl_div(F.log_softmax(out / 2, 1), F.softmax(tout / 2, 1), reduction="batchmean") * 4
            return kd
        return zero

    def _after_task(self, t, cur, sampler, seen) -> None:
        g = self.g
        if self.method == "ewc":
            fisher = {n: torch.zeros_like(p) for n, p in self.model.named_parameters() if p.requires_grad}
            self.model.eval()
            self.model.memory.copy_(self.snapshots[t])
            batches = 0
            for ev in _batches(cur, self.batch):
                src, dst, hu, hv, _, _ = self._step(ev, sampler, seen, grad=True)
                loss = self._loss(hu, hv, src, dst, seen).mean()
                self.model.zero_grad(set_to_none=True)
                loss.backward()
                for n, p in self.model.named_parameters():
                    if p.grad is not None:
                        fisher[n] += p.grad.detach() ** 2
                batches += 1
            self.fisher.append(({n: f / max(batches, 1) for n, f in fisher.items()},
                                {n: p.detach().clone() for n, p in self.model.named_parameters()}))  # fmt: skip
        if self.method == "lwf":
            self.teacher = copy.deepcopy(self.model).eval()
        if self.method == "replay":
            gen = torch.Generator().manual_seed(self.seed * 7919 + t)
            picks = []
            ev = self.split.train[t]
            for c in self.g.task_classes(t):
                both = ev[(self.labels[g.src[ev]] == c) & (self.labels[g.dst[ev]] == c)]
                pool = both if len(both) else ev[(self.labels[g.src[ev]] == c) | (self.labels[g.dst[ev]] == c)]
                if len(pool):
                    picks.append(pool[torch.randperm(len(pool), generator=gen)[: self.replay_per_class]])
            if picks:
                new = torch.cat(picks)
                self.add_replay(new, torch.unique(torch.cat([g.src[new], g.dst[new]])), t)

    def add_replay(self, events: torch.Tensor, nodes: torch.Tensor, t: int) -> None:
        """Replay ``events`` in every later batch; ``nodes`` get task ``t``'s snapshot memory before each."""
        self.replay = torch.cat([self.replay, events]).sort().values
        self.replay_nodes = torch.cat([self.replay_nodes, nodes])
        self.replay_rows = torch.cat([self.replay_rows, self.snapshots[t][nodes]])


def run_protocol(
    graph: TemporalGraph,
    method: str = "finetune",
    *,
    scenario: str = "task",
    split: TaskSplit | None = None,
    d: int = 32,
    epochs: int = 20,
    patience: int = 5,
    batch_size: int = 300,
    lr: float = 1e-3,
    ewc_lambda: float = 1000.0,
    replay_per_class: int = 40,
    fixed_heads: bool = False,
    pseudo_label: str = "causal",
    seed: int = 0,
    quiet: bool = True,
) -> ProtocolResult:
    """Learn ``graph``'s tasks in order with ``method`` (see ``METHODS``) and measure the accuracy matrix."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if scenario not in ("task", "class"):
        raise ValueError(f"scenario must be 'task' or 'class', got {scenario!r}")
    check_int(epochs, "epochs", minimum=1)
    check_int(patience, "patience", minimum=1)
    check_int(batch_size, "batch_size", minimum=1)
    check_float(lr, "lr", minimum=0, min_inclusive=False)
    seed_everything(seed)
    split = split if split is not None else split_tasks(graph, seed=seed)
    args = (graph, split, method, scenario, d, epochs, patience, batch_size, lr, seed, ewc_lambda,
            check_int(replay_per_class, "replay_per_class", minimum=1), fixed_heads, quiet)  # fmt: skip
    if method.startswith("otgnet"):
        from .otgnet import OTGNetRunner

        runner = OTGNetRunner(*args, pseudo_label=pseudo_label)
    else:
        runner = _Runner(*args)
    n_tasks = graph.num_tasks
    acc = torch.full((n_tasks, n_tasks), float("nan"), dtype=torch.float64)
    start, best_epochs = time.perf_counter(), []
    train_seconds = 0.0
    for i in range(n_tasks):
        t0 = time.perf_counter()
        best_epochs.append(runner.train_task(i))
        train_seconds += time.perf_counter() - t0
        seen = (i + 1) * graph.classes_per_task
        for j in range(i + 1):
            acc[i, j] = runner.evaluate(j, seen)
    if bool(acc.tril().isnan().any()):
        raise ValueError("some task has no inductive test node of its own classes: use more nodes per class")
    return ProtocolResult(method, scenario, acc, average_performance(acc), average_forgetting(acc),
                          time.perf_counter() - start, runner.trained_events / max(train_seconds, 1e-9),
                          best_epochs)  # fmt: skip
