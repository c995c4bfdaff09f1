"""The temporal backbone of OTGNet as the official code has it (spec otgnet.md, "Model as the code has it").

Per event ``(u, v, t)`` and endpoint ``w``: the ``k_n`` most recent neighbours ``j`` of ``w`` strictly
before ``t`` give ``h_j = W_f [m_j || x_j]`` (``m`` the node memory, ``x`` the features); where a
``class_agnostic`` module is set and ``y_j != y_w`` (``j`` not padding), ``h_j`` is replaced by
``z_j = class_agnostic(h_j.detach())`` (OTGNet's information-bottleneck path). Attention with a fixed
cosine time encoding ``cos(omega (t - t_j))``, ``omega = 10^-linspace(0, 9, 5)``:
``key_j = [h_j || cos(.)] W_k``, ``q = W_f[m_w || x_w] W_q``,
``alpha = softmax_j LeakyReLU_0.2(a . dropout([q || key_j]))``, ``msg_w = sum_j alpha_j key_j``; if
``y_u != y_v`` both messages pass through ``class_agnostic`` too (inputs detached, as the official
``message.data``). One deliberate change: padded neighbour slots are masked out of the softmax (the
official code lets the zero-memory padding rows take attention weight). Memory without a GRU:
``e = [tanh([msg_u || msg_v]) || tanh(W_e f_uv)]`` (``f_uv`` = 5 zeros, no edge features),
``m_w <- tanh(W_uc [m_w || e])`` for both ends with the same ``e``. Classification after the update:
``logits_w = H(dropout(relu(W_c1 [m_w || x_w])))`` with ``W_c1`` to 128 and one head per task
(``scenario="task"``, a ``k``-way choice) or one head over all classes (``"class"``, masked to the
classes seen so far). Gradients flow through the batch's memory writes; the memory is detached
between batches. The official heads sit in a plain Python list and are never trained:
``fixed_heads=True`` reproduces that, the default trains them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.checks import check_float, check_int
from .sampler import RecentNeighbourSampler

__all__ = ["TemporalBackbone", "interleave"]


def interleave(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Rows of the src side and the dst side of a batch in event order: a0, b0, a1, b1, ..."""
    return torch.stack([a, b], 1).flatten(0, 1)


class TemporalBackbone(nn.Module):
    """Memory + time-encoded attention over ``k_n`` neighbours; see the module docstring."""

    def __init__(
        self,
        num_nodes: int,
        feature_dim: int,
        num_classes: int,
        classes_per_task: int,
        *,
        d: int = 100,
        k_n: int = 5,
        time_dim: int = 5,
        head_dim: int = 128,
        dropout: float = 0.5,
        scenario: str = "task",
        fixed_heads: bool = False,
        class_agnostic: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if scenario not in ("task", "class"):
            raise ValueError(f"scenario must be 'task' or 'class', got {scenario!r}")
        self.num_nodes = check_int(num_nodes, "num_nodes", minimum=1)
        self.num_classes = check_int(num_classes, "num_classes", minimum=1)
        self.k = check_int(classes_per_task, "classes_per_task", minimum=1)
        self.d, self.k_n = check_int(d, "d", minimum=1), check_int(k_n, "k_n", minimum=1)
        self.scenario, self.fixed_heads = scenario, bool(fixed_heads)
        f = check_int(feature_dim, "feature_dim", minimum=1)
        self.register_buffer("omega", 10.0 ** -torch.linspace(0, 9, check_int(time_dim, "time_dim", minimum=1)))
        self.w_f = nn.Linear(d + f, d)
        self.w_k = nn.Linear(d + time_dim, d)
        self.w_q = nn.Linear(d, d)
        self.att = nn.Linear(2 * d, 1)
        self.w_e = nn.Linear(5, d)
        self.w_uc = nn.Linear(4 * d, d)
        self.w_c1 = nn.Linear(d + f, head_dim)
        self.drop = nn.Dropout(check_float(dropout, "dropout", minimum=0, maximum=1, max_inclusive=False))
        n_tasks = -(-num_classes // classes_per_task)
        if scenario == "task":
            heads = [nn.Linear(head_dim, min(classes_per_task, num_classes - t * classes_per_task))
                     for t in range(n_tasks)]  # fmt: skip
        else:
            heads = [nn.Linear(head_dim, num_classes)]
        self.heads = nn.ModuleList(heads)
        if fixed_heads:
            for p in self.heads.parameters():
                p.requires_grad_(False)
        self.class_agnostic = class_agnostic
        self.ib_log: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # set to [] to record IB inputs
        self.register_buffer("memory", torch.zeros(num_nodes + 1, d))

    # ------------------------------------------------------------------ memory
    def reset_memory(self, seed: int = 0) -> None:
        """Seeded Xavier-uniform memory, row 0 (padding) zero, as the official code re-initialises per epoch."""
        gen = torch.Generator().manual_seed(seed)
        bound = (6.0 / (self.num_nodes + 1 + self.d)) ** 0.5
        mem = (torch.rand(self.num_nodes + 1, self.d, generator=gen) * 2 - 1) * bound
        mem[0] = 0
        self.memory.copy_(mem)

    def write_memory(self, nodes: torch.Tensor, values: torch.Tensor) -> None:
        """Write (detached) values; for a node written several times the last row wins (pass the rows in
        event order, e.g. through :func:`interleave`)."""
        n = len(nodes)
        last = torch.full((self.num_nodes + 1,), -1, dtype=torch.int64)
        last.scatter_reduce_(0, nodes, torch.arange(n), reduce="amax")
        keep = last[nodes] == torch.arange(n)
        self.memory[nodes[keep]] = values[keep].detach()

    # ------------------------------------------------------------------ forward
    def _log(self, inputs: torch.Tensor, labels: torch.Tensor) -> None:
        if self.ib_log is not None and self.training:  # never from evaluation streams (test labels)
            self.ib_log.append((inputs.detach(), labels))

    def _embed(self, nodes: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.w_f(torch.cat([self.memory[nodes], x[nodes]], -1))

    def _message(self, w, t, x, labels, sampler: RecentNeighbourSampler) -> torch.Tensor:
        nb = sampler(w, t)
        b, kn = nb.nodes.shape
        h = self._embed(nb.nodes.flatten(), x).view(b, kn, self.d)
        if self.class_agnostic is not None:
            differ = nb.mask & (labels[nb.nodes] != labels[w][:, None])
            if bool(differ.any()):
                inputs = h[differ].detach()
                self._log(inputs, labels[nb.nodes][differ])
                h = h.masked_scatter(differ[..., None], self.class_agnostic(inputs))
        dt = (t[:, None] - nb.times).float()
        key = self.w_k(torch.cat([h, torch.cos(dt[..., None] * self.omega)], -1))
        q = self.w_q(self._embed(w, x))
        score = F.leaky_relu(self.att(self.drop(torch.cat([q[:, None].expand_as(key), key], -1))).squeeze(-1), 0.2)
        # no NaN anywhere, forward or backward or forward-mode: a row without neighbours gets a zero message
        none = ~nb.mask.any(1, keepdim=True)
        score = score.masked_fill(~nb.mask, float("-inf")).masked_fill(none, 0.0)
        alpha = torch.softmax(score, -1) * nb.mask
        return (alpha[..., None] * key).sum(1)

    def forward(
        self,
        src: torch.Tensor,
        dst: torch.Tensor,
        ts: torch.Tensor,
        x: torch.Tensor,
        labels: torch.Tensor,
        sampler: RecentNeighbourSampler,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One batch of events: ``(hidden_src, hidden_dst, new_memory_src, new_memory_dst)``.

        ``labels`` (per node id) drive the class-agnostic filtering only; ``classify`` turns hidden
        vectors into logits. The memory itself is not written here (see ``write_memory``).
        """
        msg_u = self._message(src, ts, x, labels, sampler)
        msg_v = self._message(dst, ts, x, labels, sampler)
        if self.class_agnostic is not None:
            differ = labels[src] != labels[dst]
            if bool(differ.any()):
                mu_in, mv_in = msg_u[differ].detach(), msg_v[differ].detach()  # official: message.data
                self._log(mu_in, labels[src][differ])
                self._log(mv_in, labels[dst][differ])
                msg_u = msg_u.masked_scatter(differ[:, None], self.class_agnostic(mu_in))
                msg_v = msg_v.masked_scatter(differ[:, None], self.class_agnostic(mv_in))
        edge = torch.tanh(self.w_e(torch.zeros(len(src), 5)))
        e = torch.cat([torch.tanh(torch.cat([msg_u, msg_v], -1)), edge], -1)  # one event vector for both ends
        mem_u = torch.tanh(self.w_uc(torch.cat([self.memory[src], e], -1)))
        mem_v = torch.tanh(self.w_uc(torch.cat([self.memory[dst], e], -1)))
        hid_u = self.drop(F.relu(self.w_c1(torch.cat([mem_u, x[src]], -1))))
        hid_v = self.drop(F.relu(self.w_c1(torch.cat([mem_v, x[dst]], -1))))
        return hid_u, hid_v, mem_u, mem_v

    def classify(
        self, hidden: torch.Tensor, labels: torch.Tensor, seen_classes: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and targets: task scenario, each row through its own task's head (``labels`` pick the
        task, targets are within-task indices); class scenario, one head masked to ``seen_classes``."""
        if self.scenario == "class":
            logits = self.heads[0](hidden)[:, :seen_classes]
            return logits, labels
        task = labels // self.k
        logits = torch.zeros(len(hidden), self.k)
        for t in torch.unique(task).tolist():
            sel = task == t
            out = self.heads[t](hidden[sel])
            pad = torch.full((int(sel.sum()), self.k - out.shape[1]), float("-inf"))
            logits[sel] = torch.cat([out, pad], 1) if pad.shape[1] else out
        return logits, labels - task * self.k
