"""Open temporal graphs: the official file layout, one tensor container, tasks and the per-task split.

Spec otgnet.md, "Problem and protocol" [V]. ``NAME.csv`` has the columns ``u, i, ts, label_u, label_i,
idx`` (a leading unnamed index column, as pandas writes it, is allowed), node ids from 1 (0 is
padding), labels numbered in arrival order; ``NAME_node.npy`` holds one feature row per node id,
row 0 zeros. Every node keeps one label. With ``k`` classes per task, task ``j`` owns classes
``[jk, (j + 1)k)``, an event belongs to task ``floor(max(y_u, y_v) / k)`` and tasks must follow
each other in time.

The split (per task, seeded): the nodes first seen in the task's events are divided 80/10/10 into
train / val / test; nodes seen in an earlier task keep their role. An event with a test endpoint is a
test event, else with a val endpoint a val event, else a train event; so train events have only
train endpoints, and every test node is inductive (absent from train and val events). Bad files
raise :class:`~bastion.data.DataError` (a ``ValueError``) naming the file, the column and the row.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..core.checks import check_int
from ..data import DataError

__all__ = ["COLUMNS", "TaskSplit", "TemporalGraph", "read_otg", "split_tasks", "write_otg"]

COLUMNS = ("u", "i", "ts", "label_u", "label_i", "idx")


@dataclass
class TemporalGraph:
    """Events ``src -> dst`` at times ``ts`` (non-decreasing) with their endpoints' labels.

    ``features`` is ``(num_nodes + 1, F)`` with row 0 (padding) zero; ``node_labels`` is
    ``(num_nodes + 1,)`` with -1 for node 0 and for ids no event uses; ``task`` is set by ``classes_per_task``.
    """

    src: torch.Tensor
    dst: torch.Tensor
    ts: torch.Tensor
    label_src: torch.Tensor
    label_dst: torch.Tensor
    features: torch.Tensor
    classes_per_task: int
    name: str = "graph"
    class_names: list[str] | None = None
    node_labels: torch.Tensor = field(init=False)
    task: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        n = len(self.src)
        for key in ("dst", "ts", "label_src", "label_dst"):
            if len(getattr(self, key)) != n:
                raise ValueError(f"{key} has {len(getattr(self, key))} entries, src has {n}")
        if n == 0:
            raise ValueError("a temporal graph needs at least one event")
        self.src, self.dst = self.src.long(), self.dst.long()
        self.label_src, self.label_dst = self.label_src.long(), self.label_dst.long()
        self.ts = self.ts.double()
        self.features = self.features.float()
        self.classes_per_task = check_int(self.classes_per_task, "classes_per_task", minimum=1)
        _validate(self.src, self.dst, self.ts, self.label_src, self.label_dst, self.features, self.classes_per_task,
                  f"<{self.name}>", rows=None)  # fmt: skip
        labels = torch.full((len(self.features),), -1, dtype=torch.int64)
        labels[self.src] = self.label_src
        labels[self.dst] = self.label_dst
        self.node_labels = labels
        self.task = torch.maximum(self.label_src, self.label_dst) // self.classes_per_task

    @property
    def num_events(self) -> int:
        return len(self.src)

    @property
    def num_nodes(self) -> int:
        """Node ids run from 1 to ``num_nodes``."""
        return len(self.features) - 1

    @property
    def num_classes(self) -> int:
        return int(self.node_labels.max()) + 1

    @property
    def num_tasks(self) -> int:
        return int(self.task.max()) + 1

    def task_classes(self, task: int) -> range:
        k = self.classes_per_task
        return range(task * k, min((task + 1) * k, self.num_classes))

    def heterophily(self, events: torch.Tensor | None = None) -> float:
        """Share of (the given) events whose endpoints have different labels."""
        sel = slice(None) if events is None else events
        return float((self.label_src[sel] != self.label_dst[sel]).double().mean())


def _where(rows, i: int) -> str:
    if rows is None:
        return f"event {i}"
    return f"row {i + 1} (line {int(rows[i])})"


def _validate(src, dst, ts, label_src, label_dst, features, k: int, file: str, rows) -> None:
    """Every rule of the official layout; ``rows`` maps event index -> file line for messages."""
    if features.ndim != 2 or len(features) < 1:
        raise DataError(f"{file}: features must be (num_nodes + 1, F), got shape {tuple(features.shape)}")
    if not bool(torch.isfinite(features).all()):
        raise DataError(f"{file}: features contain NaN or inf")
    for col, ids in (("u", src), ("i", dst)):
        bad = (ids <= 0).nonzero()
        if len(bad):
            i = int(bad[0])
            raise DataError(f"{file}: column {col}, {_where(rows, i)}: node id {int(ids[i])}; ids start at 1 "
                            "(0 is padding)")  # fmt: skip
    for col, lab in (("label_u", label_src), ("label_i", label_dst)):
        bad = (lab < 0).nonzero()
        if len(bad):
            i = int(bad[0])
            raise DataError(f"{file}: column {col}, {_where(rows, i)}: label {int(lab[i])} outside [0, C)")
    if not bool(torch.isfinite(ts).all()):
        i = int((~torch.isfinite(ts)).nonzero()[0])
        raise DataError(f"{file}: column ts, {_where(rows, i)}: time {float(ts[i])} is not finite")
    dec = (ts[1:] < ts[:-1]).nonzero()
    if len(dec):
        i = int(dec[0]) + 1
        raise DataError(f"{file}: column ts, {_where(rows, i)}: time {float(ts[i])} is before the previous "
                        f"event's {float(ts[i - 1])}; events must be sorted by ts")  # fmt: skip
    # one label per node: compare every occurrence with the first one, occurrences in file order (u, i, u, i...)
    nodes = torch.stack([src, dst], 1).flatten()
    labels = torch.stack([label_src, label_dst], 1).flatten()
    order = torch.argsort(nodes, stable=True)
    sn, sl = nodes[order], labels[order]
    first = torch.ones_like(sn, dtype=torch.bool)
    first[1:] = sn[1:] != sn[:-1]
    start = torch.cummax(torch.where(first, torch.arange(len(sn)), torch.zeros_like(sn)), 0).values
    clash = (sl != sl[start]).nonzero()
    if len(clash):
        j = int(order[int(clash[0])])
        col, i = ("label_u" if j % 2 == 0 else "label_i"), j // 2
        node = int(nodes[j])
        raise DataError(f"{file}: column {col}, {_where(rows, i)}: node {node} has label {int(labels[j])}, "
                        f"earlier {int(sl[start[int(clash[0])]])}; a node keeps one label")  # fmt: skip
    # labels 0..C-1 with none skipped (a skipped class would leave a task without classes)
    present = torch.zeros(int(labels.max()) + 1, dtype=torch.bool)
    present[labels] = True
    if not bool(present.all()):
        gap = int((~present).nonzero()[0])
        j = int((labels > gap).nonzero()[0])
        col, i = ("label_u" if j % 2 == 0 else "label_i"), j // 2
        raise DataError(f"{file}: column {col}, {_where(rows, i)}: label {int(labels[j])} outside [0, {gap}): "
                        f"labels must be numbered 0..C-1 in arrival order and class {gap} never occurs")  # fmt: skip
    max_id = int(nodes.max())
    if len(features) != max_id + 1:
        raise DataError(f"{file}: features have {len(features)} rows, expected max node id + 1 = {max_id + 1}")
    task = torch.maximum(label_src, label_dst) // k
    back = (task[1:] < task[:-1]).nonzero()
    if len(back):
        i = int(back[0]) + 1
        raise DataError(f"{file}: columns label_u/label_i, {_where(rows, i)}: event of task {int(task[i])} after "
                        f"one of task {int(task[i - 1])}; tasks must follow each other in time")  # fmt: skip


def read_otg(
    csv_path: str | Path,
    features: str | Path | None = None,
    *,
    classes_per_task: int = 3,
    num_classes: int | None = None,
) -> TemporalGraph:
    """Read ``NAME.csv`` (and ``NAME_node.npy``: the given file, or next to the CSV if it exists).

    Without a feature file, nodes get one constant feature. ``num_classes`` (optional) bounds the labels.
    """
    path = Path(csv_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise DataError(f"{path}: empty file, expected a header with columns {', '.join(COLUMNS)}") from None
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)}; header is {header}")
        pos = [header.index(c) for c in COLUMNS]
        values, lines = [], []
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise DataError(f"{path}: line {line_no} has {len(row)} fields, the header {len(header)}")
            try:
                values.append([float(row[p]) for p in pos])
            except ValueError:
                bad = next(c for c, p in zip(COLUMNS, pos, strict=True) if not _is_number(row[p]))
                raise DataError(f"{path}: column {bad}, line {line_no}: {row[pos[COLUMNS.index(bad)]]!r} is not "
                                "a number") from None  # fmt: skip
            lines.append(line_no)
    if not values:
        raise DataError(f"{path}: no events after the header")
    arr = np.asarray(values)
    for c, col in ((0, "u"), (1, "i"), (3, "label_u"), (4, "label_i")):
        frac = np.nonzero(arr[:, c] != np.round(arr[:, c]))[0]
        if len(frac):
            raise DataError(f"{path}: column {col}, line {lines[frac[0]]}: {arr[frac[0], c]} is not an integer")
    if num_classes is not None:
        num_classes = check_int(num_classes, "num_classes", minimum=1)
        for c, col in ((3, "label_u"), (4, "label_i")):
            over = np.nonzero(arr[:, c] >= num_classes)[0]
            if len(over):
                raise DataError(f"{path}: column {col}, line {lines[over[0]]}: label {int(arr[over[0], c])} "
                                f"outside [0, {num_classes})")  # fmt: skip
    src, dst = torch.from_numpy(arr[:, 0]).long(), torch.from_numpy(arr[:, 1]).long()
    max_id = int(max(src.max(), dst.max()))
    feat_path = Path(features) if features is not None else path.with_name(path.stem + "_node.npy")
    if features is not None or feat_path.is_file():
        if not feat_path.is_file():
            raise FileNotFoundError(f"{feat_path}: no such file")
        try:
            feats = np.load(feat_path, allow_pickle=False)
        except ValueError as exc:
            raise DataError(f"{feat_path}: not a plain NumPy array ({exc})") from exc
        if feats.ndim != 2 or not np.issubdtype(feats.dtype, np.number):
            raise DataError(f"{feat_path}: expected a 2-D numeric array, got shape {feats.shape} {feats.dtype}")
        if len(feats) != max_id + 1:
            raise DataError(f"{feat_path}: {len(feats)} feature rows, expected max node id + 1 = {max_id + 1} "
                            f"(row 0 is padding)")  # fmt: skip
        if not np.isfinite(feats).all():
            raise DataError(f"{feat_path}: features contain NaN or inf")
        x = torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))
    else:
        x = torch.ones(max_id + 1, 1)
        x[0] = 0
    ts = torch.from_numpy(arr[:, 2]).double()
    ls, ld = torch.from_numpy(arr[:, 3]).long(), torch.from_numpy(arr[:, 4]).long()
    k = check_int(classes_per_task, "classes_per_task", minimum=1)
    _validate(src, dst, ts, ls, ld, x, k, str(path), rows=np.asarray(lines))  # messages with file lines
    return TemporalGraph(src, dst, ts, ls, ld, x, k, name=path.stem)


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def write_otg(graph: TemporalGraph, csv_path: str | Path) -> tuple[Path, Path]:
    """Write ``NAME.csv`` and ``NAME_node.npy`` in the official layout (``idx`` counts events from 1)."""
    path = Path(csv_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["", *COLUMNS])
        for e in range(graph.num_events):
            w.writerow([e, int(graph.src[e]), int(graph.dst[e]), repr(float(graph.ts[e])), int(graph.label_src[e]),
                        int(graph.label_dst[e]), e + 1])  # fmt: skip
    feat = path.with_name(path.stem + "_node.npy")
    np.save(feat, graph.features.numpy())
    return path, feat


@dataclass
class TaskSplit:
    """Per task: event indices of train / val / test, and the node roles (0 train, 1 val, 2 test, -1 unseen)."""

    train: list[torch.Tensor]
    val: list[torch.Tensor]
    test: list[torch.Tensor]
    role: torch.Tensor
    test_nodes: list[torch.Tensor]  # inductive test nodes of each task, of the task's own classes


def split_tasks(graph: TemporalGraph, *, seed: int = 0, fractions: tuple[float, float] = (0.8, 0.1)) -> TaskSplit:
    """The seeded 80/10/10 node split of every task (see the module docstring)."""
    if not (0 < fractions[0] < 1 and 0 <= fractions[1] < 1 and fractions[0] + fractions[1] < 1):
        raise ValueError(f"fractions must be (train, val) shares with train + val < 1, got {fractions}")
    gen = torch.Generator().manual_seed(check_int(seed, "seed", minimum=0))
    role = torch.full((graph.num_nodes + 1,), -1, dtype=torch.int64)
    train, val, test, test_nodes = [], [], [], []
    for t in range(graph.num_tasks):
        ev = (graph.task == t).nonzero().flatten()
        nodes = torch.unique(torch.cat([graph.src[ev], graph.dst[ev]]))
        new = nodes[role[nodes] < 0]
        perm = new[torch.randperm(len(new), generator=gen)]
        n_tr, n_va = round(fractions[0] * len(perm)), round(fractions[1] * len(perm))
        role[perm[:n_tr]], role[perm[n_tr : n_tr + n_va]], role[perm[n_tr + n_va :]] = 0, 1, 2
        rs, rd = role[graph.src[ev]], role[graph.dst[ev]]
        is_test = (rs == 2) | (rd == 2)
        is_val = ~is_test & ((rs == 1) | (rd == 1))
        train.append(ev[~is_test & ~is_val])
        val.append(ev[is_val])
        test.append(ev[is_test])
        own = [c for c in graph.task_classes(t)]
        tn = new[(role[new] == 2) & torch.isin(graph.node_labels[new], torch.tensor(own))]
        test_nodes.append(tn.sort().values)
    return TaskSplit(train, val, test, role, test_nodes)
