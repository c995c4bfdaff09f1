"""Posterior ensembles: keep SG-MCMC samples (burn-in, thinning, FIFO cap) and average probabilities.

The predictive is the mean of **probabilities** over samples, computed as ``logsumexp`` of float64
log-softmax minus ``log S`` (averaging logits is a different model). Samples live in memory or, with
``directory=``, as safetensors files (no pickle).
"""

from __future__ import annotations

import math
import os
from collections import deque
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..core.checks import check_image_batch, check_int

__all__ = ["PosteriorEnsemble"]


class PosteriorEnsemble:
    """Collect parameter samples of a chain and predict with their mixture.

    Parameters
    ----------
    burn_in:
        Calls of :meth:`collect` to skip before the first sample (e.g. epochs).
    thin:
        Keep every ``thin``-th call after burn-in.
    max_samples:
        FIFO cap: the oldest sample is dropped beyond it (``None``: no cap).
    directory:
        Store samples as safetensors files there instead of in memory.

    Examples
    --------
    >>> net = nn.Linear(2, 3)
    >>> ens = PosteriorEnsemble(burn_in=1, thin=2, max_samples=2)
    >>> [ens.collect(net) for _ in range(6)]
    [False, True, False, True, False, True]
    >>> len(ens)
    2
    """

    def __init__(
        self,
        *,
        burn_in: int = 0,
        thin: int = 1,
        max_samples: int | None = None,
        directory: str | os.PathLike | None = None,
    ) -> None:
        self.burn_in = check_int(burn_in, "burn_in", minimum=0)
        self.thin = check_int(thin, "thin", minimum=1)
        self.max_samples = None if max_samples is None else check_int(max_samples, "max_samples", minimum=1)
        self.directory = None if directory is None else Path(directory)
        self._samples: deque = deque()
        self._calls = 0
        self._written = 0

    def collect(self, model: nn.Module) -> bool:
        """Offer the model's current parameters; returns whether they were kept."""
        call = self._calls
        self._calls += 1
        if call < self.burn_in or (call - self.burn_in) % self.thin:
            return False
        state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
        for k, v in state.items():
            if v.is_floating_point() and not bool(torch.isfinite(v).all()):
                raise ValueError(f"refusing a sample with non-finite values in {k!r}")
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"sample_{self._written:06d}.safetensors"
            save_file(state, str(path))
            self._written += 1
            self._samples.append(path)
        else:
            self._samples.append(state)
        if self.max_samples is not None and len(self._samples) > self.max_samples:
            old = self._samples.popleft()
            if isinstance(old, Path):
                old.unlink(missing_ok=True)
        return True

    def __len__(self) -> int:
        return len(self._samples)

    def states(self):
        """Iterate over the kept state dicts, oldest first."""
        for s in self._samples:
            yield load_file(str(s)) if isinstance(s, Path) else s

    @torch.no_grad()
    def log_predictive(self, model: nn.Module, x: torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
        """float64 ``log mean_s softmax(f_s(x))`` of shape ``(N, C)``; ``model`` is used as the template.

        The model's own parameters are restored afterwards.
        """
        if not len(self):
            raise ValueError("the ensemble holds no samples yet (check burn_in / thin)")
        if x.dim() == 4:
            check_image_batch(x, "x", bounds=None)
        original = {k: v.clone() for k, v in model.state_dict().items()}
        was_training = model.training
        model.eval()
        total = None
        try:
            for state in self.states():
                model.load_state_dict(state)
                lp = torch.cat([
                    torch.log_softmax(model(x[i : i + batch_size]).to(torch.float64), 1)
                    for i in range(0, len(x), batch_size)
                ])  # fmt: skip
                total = lp if total is None else torch.logaddexp(total, lp)
        finally:
            model.load_state_dict(original)
            model.train(was_training)
        return total - math.log(len(self))

    def __repr__(self) -> str:
        where = "memory" if self.directory is None else str(self.directory)
        return (
            f"PosteriorEnsemble(burn_in={self.burn_in}, thin={self.thin}, max_samples={self.max_samples}, "
            f"samples={len(self)}, in={where!r})"
        )
