"""``BlackBox``: a model seen only through its answers, with honest per-sample query accounting.

Every query a black-box attack makes goes through a :class:`BlackBox`. It

* wraps an ``nn.Module`` or any callable mapping a batch to logits (or to integer labels);
* applies the model's own preprocessing after checking that inputs lie in the attack space bounds
  (``[0, 1]`` by default), so attacks never see the model's normalisation;
* puts a module in eval mode (and puts it back if someone switched it to training mode since:
  BatchNorm and dropout in training mode give wrong answers, foolbox #74, torchattacks #21);
* counts queries per sample -- a batch of N inputs is N queries, each charged to the sample named
  in ``sample_ids`` -- and enforces a per-sample budget as a hard limit;
* evaluates in chunks of ``batch_size`` under ``torch.no_grad()`` and returns detached tensors, so no
  gradient of the model can leak through it.

Budget exhaustion
-----------------
``on_exhausted="raise"`` (the default) is all-or-nothing: if answering a call would take any sample
past its budget, :class:`BudgetExhausted` is raised *before* anything is evaluated or charged.
``on_exhausted="mask"`` answers, in row order, as many rows of each sample as its budget still
allows and returns label ``-1`` (or NaN scores) for the rest; :meth:`BlackBox.query` also returns
the boolean mask of answered rows. In both modes no sample is ever answered more than ``budget``
times.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from .checks import check_choice, check_float, check_int, check_tensor

__all__ = ["BlackBox", "BudgetExhausted", "QueryResult"]

log = logging.getLogger(__name__)

_UNLIMITED = torch.iinfo(torch.int64).max


class BudgetExhausted(RuntimeError):
    """A query would take one or more samples past their query budget.

    Attributes
    ----------
    sample_ids:
        The samples whose budget the refused call would have exceeded.
    """

    def __init__(self, message: str, sample_ids: torch.Tensor) -> None:
        super().__init__(message)
        self.sample_ids = sample_ids


class QueryResult(NamedTuple):
    """What :meth:`BlackBox.query` returns."""

    outputs: torch.Tensor
    """Labels ``(N,)`` (int64, ``-1`` where not answered) or scores ``(N, C)`` (NaN where not answered)."""
    answered: torch.Tensor
    """Boolean ``(N,)``: which rows were evaluated and charged."""


class BlackBox:
    """A hard-label or score oracle around a model, with per-sample query counting and budgets.

    Parameters
    ----------
    model:
        An ``nn.Module`` or a callable mapping a float batch ``(N, *input_shape)`` (after
        ``preprocess``) to logits ``(N, C)``. A callable returning integer labels ``(N,)`` is accepted
        for ``oracle="label"``.
    oracle:
        ``"label"`` answers the top-1 class (hard-label / decision-based attacks); ``"probs"`` answers
        softmax probabilities; ``"logits"`` answers the model's raw outputs.
    bounds:
        ``(low, high)`` of the input space attacks work in; inputs outside raise ``ValueError``.
    preprocess:
        The model's own preprocessing (e.g. a normalisation), applied inside the box.
    input_shape:
        Per-sample shape, e.g. ``(1, 28, 28)``. If ``None`` it is fixed by the first call.
    budget:
        Hard per-sample query limit (``None``: unlimited). Must be at least 1.
    on_exhausted:
        ``"raise"`` or ``"mask"``: see the module docstring.
    batch_size:
        Rows evaluated per forward pass.
    device:
        Where inputs are sent; ``None`` means the device of the module's parameters (CPU for a
        plain callable).

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    >>> box = BlackBox(net, budget=2, input_shape=(1, 2, 2))
    >>> labels = box(torch.rand(5, 1, 2, 2))          # samples 0..4, one query each
    >>> box.queries.tolist()
    [1, 1, 1, 1, 1]
    >>> _ = box(torch.rand(2, 1, 2, 2), sample_ids=torch.tensor([0, 0]))
    Traceback (most recent call last):
    bastion.core.blackbox.BudgetExhausted: query budget of 2 per sample exhausted for 1 sample(s) ...
    """

    def __init__(
        self,
        model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
        *,
        oracle: str = "label",
        bounds: tuple[float, float] = (0.0, 1.0),
        preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
        input_shape: Sequence[int] | None = None,
        budget: int | None = None,
        on_exhausted: str = "raise",
        batch_size: int = 64,
        device: str | torch.device | None = None,
    ) -> None:
        if not callable(model):
            raise TypeError(f"model must be an nn.Module or a callable, got {type(model).__name__}")
        self.oracle = check_choice(oracle, "oracle", ("label", "probs", "logits"))
        if not isinstance(bounds, tuple | list) or len(bounds) != 2:
            raise ValueError(f"bounds must be a (low, high) pair, got {bounds!r}")
        low = check_float(bounds[0], "bounds[0]")
        high = check_float(bounds[1], "bounds[1]")
        if not low < high:
            raise ValueError(f"bounds must satisfy low < high, got {bounds!r}")
        self.bounds = (low, high)
        if preprocess is not None and not callable(preprocess):
            raise TypeError(f"preprocess must be callable or None, got {type(preprocess).__name__}")
        self.input_shape = None if input_shape is None else self._check_shape(input_shape)
        self.budget = None if budget is None else check_int(budget, "budget", minimum=1)
        self.on_exhausted = check_choice(on_exhausted, "on_exhausted", ("raise", "mask"))
        self.batch_size = check_int(batch_size, "batch_size", minimum=1)

        self._model = model
        self._preprocess = preprocess
        self._modules = [m for obj in (model, preprocess) if isinstance(obj, nn.Module) for m in obj.modules()]
        for obj in (model, preprocess):
            if isinstance(obj, nn.Module):
                obj.eval()
        if device is None:
            param = next((p for m in self._modules for p in m.parameters(recurse=False)), None)
            device = param.device if param is not None else torch.device("cpu")
            self._dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        else:
            self._dtype = torch.float32
        self.device = torch.device(device)
        self._queries = torch.zeros(0, dtype=torch.int64)

    # ------------------------------------------------------------------ accounting
    @property
    def queries(self) -> torch.Tensor:
        """Queries charged so far to each sample id ``0 .. max id seen`` (a copy)."""
        return self._queries.clone()

    @property
    def total_queries(self) -> int:
        """All queries charged so far."""
        return int(self._queries.sum())

    @property
    def num_classes(self) -> int | None:
        """Width of the model's output once a query has been answered (``None`` before, or for label models)."""
        return getattr(self, "_num_outputs", None)

    def remaining(self, sample_ids: torch.Tensor | Sequence[int] | None = None) -> torch.Tensor:
        """Queries left to each sample (``sample_ids``, or all seen so far).

        Without a budget every entry is ``torch.iinfo(torch.int64).max``.
        """
        ids = torch.arange(len(self._queries)) if sample_ids is None else self._check_ids(sample_ids, None)
        used = self._counts_for(ids)
        if self.budget is None:
            return torch.full_like(used, _UNLIMITED)
        return (self.budget - used).clamp_min(0)

    def reset(self) -> None:
        """Forget all query counts (e.g. before attacking a new set of samples)."""
        self._queries = torch.zeros(0, dtype=torch.int64)

    # ------------------------------------------------------------------ queries
    def __call__(self, x: torch.Tensor, sample_ids: torch.Tensor | Sequence[int] | None = None) -> torch.Tensor:
        """Answer the oracle for every row of ``x``; see :meth:`query` for the arguments."""
        return self.query(x, sample_ids).outputs

    def query(self, x: torch.Tensor, sample_ids: torch.Tensor | Sequence[int] | None = None) -> QueryResult:
        """Evaluate ``x`` and charge one query per row to the sample named in ``sample_ids``.

        Parameters
        ----------
        x:
            Float tensor ``(N, *input_shape)`` inside ``bounds``, without NaN.
        sample_ids:
            Integer ``(N,)``: the sample each row is charged to. ``None`` means rows ``0 .. N-1``
            belong to samples ``0 .. N-1``.

        Returns
        -------
        QueryResult
            ``outputs`` and the ``answered`` mask (all ``True`` unless ``on_exhausted="mask"``).

        Raises
        ------
        BudgetExhausted
            With ``on_exhausted="raise"``, when any sample would go past its budget; nothing is
            evaluated or charged then.
        """
        x = self._check_input(x)
        n = x.shape[0]
        ids = torch.arange(n) if sample_ids is None else self._check_ids(sample_ids, n)
        answered = self._admit(ids)
        rows = answered.nonzero().flatten()
        out_rows = self._evaluate(x[rows]) if len(rows) else None
        if len(rows):
            self._charge(ids[rows])
        if self.oracle == "label":
            outputs = torch.full((n,), -1, dtype=torch.int64)
            if out_rows is not None:
                outputs[rows] = out_rows
        else:
            if out_rows is None:
                # nothing was answered: the number of classes may still be unknown
                width = getattr(self, "_num_outputs", 0)
                outputs = torch.full((n, width), float("nan"))
            else:
                outputs = torch.full((n, out_rows.shape[1]), float("nan"), dtype=out_rows.dtype)
                outputs[rows] = out_rows
        return QueryResult(outputs, answered)

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _check_shape(shape: Sequence[int]) -> tuple[int, ...]:
        try:
            out = tuple(check_int(s, "input_shape entry", minimum=1) for s in shape)
        except TypeError:
            raise TypeError(f"input_shape must be a sequence of positive ints, got {shape!r}") from None
        if not out:
            raise ValueError("input_shape must have at least one dimension")
        return out

    def _check_input(self, x: Any) -> torch.Tensor:
        x = check_tensor(x, "x", floating=True, bounds=self.bounds)
        if x.dim() < 2:
            raise ValueError(f"x must be a batch (N, *input_shape), got shape {tuple(x.shape)}")
        if self.input_shape is None:
            self.input_shape = tuple(x.shape[1:])
        elif tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"x must have per-sample shape {self.input_shape}, got batch shape {tuple(x.shape)}")
        return x.detach()

    def _check_ids(self, sample_ids: Any, n: int | None) -> torch.Tensor:
        if not isinstance(sample_ids, torch.Tensor):
            sample_ids = torch.as_tensor(sample_ids)
        ids = check_tensor(sample_ids, "sample_ids", ndim=1, floating=False, allow_empty=True).to("cpu", torch.int64)
        if n is not None and ids.shape[0] != n:
            raise ValueError(f"sample_ids must have one id per row of x ({n}), got {ids.shape[0]}")
        if ids.numel() and int(ids.min()) < 0:
            raise ValueError(f"sample_ids must be non-negative, got min {int(ids.min())}")
        return ids

    def _counts_for(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.numel() and int(ids.max()) >= len(self._queries):
            grown = torch.zeros(int(ids.max()) + 1, dtype=torch.int64)
            grown[: len(self._queries)] = self._queries
            self._queries = grown
        return self._queries[ids]

    def _admit(self, ids: torch.Tensor) -> torch.Tensor:
        """Which rows may be answered under the budget (all, or raise, in ``raise`` mode)."""
        used = self._counts_for(ids)
        if self.budget is None or (len(ids) and int(used.max()) + len(ids) <= self.budget):
            # no budget, or even the most-used sample could take every row: all admitted (hot path)
            return torch.ones(len(ids), dtype=torch.bool)
        if self.on_exhausted == "raise":
            need = torch.bincount(ids, minlength=len(self._queries))
            over = (self._queries + need > self.budget) & (need > 0)
            if bool(over.any()):
                bad = over.nonzero().flatten()
                shown = bad[:10].tolist()
                raise BudgetExhausted(
                    f"query budget of {self.budget} per sample exhausted for {len(bad)} sample(s) "
                    f"(ids {shown}{' ...' if len(bad) > 10 else ''}); nothing was evaluated or charged",
                    bad,
                )
            return torch.ones(len(ids), dtype=torch.bool)
        # mask mode: the k-th row (in row order) of a sample is answered if used + k < budget
        order = torch.argsort(ids, stable=True)
        sorted_ids = ids[order]
        pos = torch.arange(len(ids))
        starts = torch.ones(len(ids), dtype=torch.bool)
        starts[1:] = sorted_ids[1:] != sorted_ids[:-1]
        group_start = torch.cummax(torch.where(starts, pos, torch.zeros_like(pos)), 0).values
        rank = torch.empty_like(ids)
        rank[order] = pos - group_start
        return used + rank < self.budget

    def _charge(self, ids: torch.Tensor) -> None:
        self._queries.index_add_(0, ids, torch.ones_like(ids))

    @torch.no_grad()
    def _evaluate(self, x: torch.Tensor) -> torch.Tensor:
        if any(m.training for m in self._modules):
            log.warning("BlackBox: the model was in training mode; switching it back to eval mode")
            for m in self._modules:
                m.eval()
        outs = []
        for start in range(0, x.shape[0], self.batch_size):
            chunk = x[start : start + self.batch_size].to(self.device, self._dtype)
            if self._preprocess is not None:
                chunk = self._preprocess(chunk)
            out = self._model(chunk)
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"model must return a tensor, got {type(out).__name__}")
            outs.append(self._to_oracle(out, chunk.shape[0]))
        return torch.cat(outs).detach().cpu()

    def _to_oracle(self, out: torch.Tensor, n: int) -> torch.Tensor:
        if out.dim() == 1 and not out.is_floating_point():
            if self.oracle != "label":
                raise TypeError(f"oracle={self.oracle!r} needs a model that returns scores (N, C); it returned labels")
            labels = out
        elif out.dim() == 2 and out.shape[0] == n:
            self._num_outputs = out.shape[1]
            if self.oracle == "logits":
                return out.float()
            if self.oracle == "probs":
                return torch.softmax(out.float(), dim=1)
            labels = out.argmax(dim=1)
        else:
            raise ValueError(f"model must return logits (N, C) or labels (N,) for N={n}, got shape {tuple(out.shape)}")
        return labels.to(torch.int64)

    def __repr__(self) -> str:
        name = type(self._model).__name__
        return (
            f"BlackBox(model={name}, oracle={self.oracle!r}, bounds={self.bounds}, "
            f"input_shape={self.input_shape}, budget={self.budget}, on_exhausted={self.on_exhausted!r}, "
            f"batch_size={self.batch_size}, device={str(self.device)!r})"
        )
