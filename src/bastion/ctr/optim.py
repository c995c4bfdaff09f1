"""A faster drop-in for ``torch.optim.SparseAdam`` on embedding tables with sparse gradients.

``torch.optim.SparseAdam`` coalesces each sparse gradient (a general sparse-tensor sort and sum) and then
builds three more sparse tensors per step; on one CPU thread that cost 75 ms of a 223 ms DeepFM step at
batch 4096 x 29 fields (measured here). :class:`RowSparseAdam` does the same arithmetic on the rows only:
``torch.unique`` of the row indices, one ``scatter_add_`` to sum duplicate rows, Adam's moment updates on the
gathered rows and one ``index_copy_`` back. Its semantics are SparseAdam's ("lazy" Adam): only rows present
in the gradient move, their moments decay only when they are touched, and bias correction uses the global
step count. ``tests/ctr/test_optim.py`` checks it against ``torch.optim.SparseAdam`` step by step. Like
SparseAdam it has no weight decay (the trainer's ``weight_decay`` applies to dense weights only).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from ..core.checks import check_float

__all__ = ["RowSparseAdam"]


class RowSparseAdam(torch.optim.Optimizer):
    """Lazy Adam for parameters whose gradients are sparse COO row gradients (``nn.Embedding(sparse=True)``)."""

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        check_float(lr, "lr", minimum=0.0, min_inclusive=False)
        check_float(eps, "eps", minimum=0.0, min_inclusive=False)  # a touched row with zero grad: 0 / 0
        for i, b in enumerate(betas):
            check_float(b, f"betas[{i}]", minimum=0.0, maximum=1.0, max_inclusive=False)
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if not grad.is_sparse:
                    raise RuntimeError("RowSparseAdam takes sparse gradients only; use Adam for dense parameters")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                if grad.is_coalesced():
                    rows, values = grad.indices()[0], grad.values()
                else:
                    idx, vals = grad._indices()[0], grad._values()
                    rows, inverse = torch.unique(idx, sorted=True, return_inverse=True)
                    values = torch.zeros((rows.numel(), *vals.shape[1:]), dtype=vals.dtype, device=vals.device)
                    index = inverse.view(-1, *([1] * (vals.dim() - 1))).expand_as(vals)
                    values.scatter_add_(0, index, vals)  # 1.5x faster than index_add_ on CPU here
                if rows.numel() == 0:
                    continue
                m_old = state["exp_avg"].index_select(0, rows)
                v_old = state["exp_avg_sq"].index_select(0, rows)
                m_new = m_old.lerp_(values, 1 - beta1)  # m + (1 - beta1) (g - m)
                v_new = v_old.lerp_(values.square(), 1 - beta2)
                state["exp_avg"].index_copy_(0, rows, m_new)
                state["exp_avg_sq"].index_copy_(0, rows, v_new)
                step = state["step"]
                step_size = group["lr"] * math.sqrt(1 - beta2**step) / (1 - beta1**step)
                update = m_new.div_(v_new.sqrt_().add_(group["eps"])).mul_(-step_size)
                p.index_add_(0, rows, update)
        return loss
