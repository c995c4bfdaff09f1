"""LiRA: the likelihood-ratio membership attack with reference models (Carlini et al., S&P 2022).

Statistic: ``phi = z_y - logsumexp_{j != y} z_j`` (:func:`bastion.privacy.attacks.margin`), whose
distribution over reference models trained with (IN) and without (OUT) a point is modelled as a
Gaussian. Online score ``log N(phi; mu_in, s_in) - log N(phi; mu_out, s_out)``; offline score
``-log Pr[Z > phi]``, ``Z ~ N(mu_out, s_out)`` (one-sided), or the reference code's ``-logpdf``.
``mu`` is a median, ``s`` a standard deviation (ddof 0, as in the reference code);
``fix_variance=True`` uses one global ``s`` per side, which helps with few models (M <= 64).

Reference models: a balanced keep matrix pairs models ``2j, 2j+1`` on complementary halves of the
pool, so every point is IN for exactly ``M/2`` models. :class:`BatchedMLP` trains all M MLPs as one
network (weights ``(M, in, out)``, ``torch.baddbmm``), each model on its own minibatches; the loss is
the sum of the per-model mean losses, so SG-MCMC optimizers see each model's own mean gradient.
Leave-one-out evaluation: each model is the target once, statistics come from the others, and the
scores of all targets are pooled.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..core.checks import check_choice, check_int, check_tensor

__all__ = ["BatchedMLP", "balanced_keep_matrix", "lira_scores", "lira_target_scores", "train_batched"]


def balanced_keep_matrix(n_models: int, n_points: int, seed: int = 0) -> torch.Tensor:
    """Boolean ``(n_models, n_points)``: models ``2j`` and ``2j+1`` hold complementary halves.

    >>> k = balanced_keep_matrix(4, 6, seed=0)
    >>> k.sum(0).tolist(), k.sum(1).tolist()
    ([2, 2, 2, 2, 2, 2], [3, 3, 3, 3])
    """
    m = check_int(n_models, "n_models", minimum=2)
    n = check_int(n_points, "n_points", minimum=2)
    if m % 2:
        raise ValueError(f"n_models must be even for a balanced keep matrix, got {m}")
    g = torch.Generator().manual_seed(check_int(seed, "seed", minimum=0))
    keep = torch.zeros(m, n, dtype=torch.bool)
    for j in range(m // 2):
        perm = torch.randperm(n, generator=g)
        keep[2 * j, perm[: n // 2]] = True
        keep[2 * j + 1, perm[n // 2 :]] = True
    return keep


class BatchedMLP(nn.Module):
    """M independent ReLU MLPs evaluated as one batched network.

    ``forward(x)`` takes flattened features ``(M, B, in)`` (each model its own batch) or ``(B, in)``
    (the same batch for all) and returns ``(M, B, out)``. Initialised like ``nn.Linear`` per model.
    """

    def __init__(self, n_models: int, sizes: tuple[int, ...], *, generator: torch.Generator | None = None):
        super().__init__()
        self.n_models = check_int(n_models, "n_models", minimum=1)
        if len(sizes) < 2:
            raise ValueError(f"sizes must list at least input and output widths, got {sizes}")
        self.sizes = tuple(check_int(s, "sizes entry", minimum=1) for s in sizes)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:], strict=True):
            bound = 1 / math.sqrt(fan_in)
            w = (torch.rand(n_models, fan_in, fan_out, generator=generator) * 2 - 1) * bound
            b = (torch.rand(n_models, 1, fan_out, generator=generator) * 2 - 1) * bound
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(b))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.n_models, -1, -1)
        elif x.dim() != 3 or x.shape[0] != self.n_models:
            raise ValueError(
                f"x must be (B, in) or ({self.n_models}, B, in) with flattened features, got {tuple(x.shape)}"
            )
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = torch.baddbmm(b, x, w)
            if i < len(self.weights) - 1:
                x = torch.relu(x)
        return x

    def extra_repr(self) -> str:
        return f"n_models={self.n_models}, sizes={self.sizes}"


def _gauss_logpdf(x: torch.Tensor, mu: torch.Tensor, sd: torch.Tensor) -> torch.Tensor:
    return -0.5 * ((x - mu) / sd) ** 2 - torch.log(sd) - 0.5 * math.log(2 * math.pi)


def _masked_stats(stats: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-column median and std (ddof 0) of ``stats`` over rows where ``mask``; NaN where empty."""
    vals = stats.masked_fill(~mask, float("nan"))
    med = torch.nanmedian(vals, dim=0).values
    count = mask.sum(0)
    mean = torch.nansum(vals, 0) / count.clamp_min(1)
    var = torch.nansum((vals - mean) ** 2, 0) / count.clamp_min(1)
    med = torch.where(count > 0, med, torch.full_like(med, float("nan")))
    return med, var.sqrt().masked_fill(count == 0, float("nan"))


def _fill_nan(v: torch.Tensor) -> torch.Tensor:
    ok = ~torch.isnan(v)
    if bool(ok.all()):
        return v
    if not bool(ok.any()):
        raise ValueError("no point has reference models on this side; use more reference models")
    return torch.where(ok, v, v[ok].mean())


def lira_target_scores(
    target_stats: torch.Tensor,
    ref_stats: torch.Tensor,
    ref_keep: torch.Tensor,
    *,
    online: bool = True,
    fix_variance: bool = False,
    offline: str = "one_sided",
) -> torch.Tensor:
    """LiRA scores ``(n,)`` of one target's statistics against reference models ``(M, n)``.

    ``ref_keep[m, i]`` says whether reference model ``m`` trained on point ``i``.
    """
    target_stats = check_tensor(target_stats, "target_stats", ndim=1, floating=True).to(torch.float64)
    s = check_tensor(ref_stats, "ref_stats", ndim=2, floating=True).to(torch.float64)
    k = check_tensor(ref_keep, "ref_keep", ndim=2)
    if k.dtype != torch.bool:
        raise TypeError(f"ref_keep must be a boolean tensor, got {k.dtype}")
    if k.shape != s.shape or s.shape[1] != target_stats.shape[0]:
        raise ValueError(
            f"ref_keep {tuple(k.shape)} and ref_stats {tuple(s.shape)} must both be (M, n) "
            f"with n = {target_stats.shape[0]}"
        )
    check_choice(offline, "offline", ("one_sided", "logpdf"))
    mu_out, sd_out = _masked_stats(s, ~k)
    mu_out, sd_out = _fill_nan(mu_out), _fill_nan(sd_out)
    if fix_variance:
        sd_out = torch.full_like(sd_out, float(s[~k].std(unbiased=False)))
    x = target_stats
    if online:
        mu_in, sd_in = _masked_stats(s, k)
        mu_in, sd_in = _fill_nan(mu_in), _fill_nan(sd_in)
        if fix_variance:
            sd_in = torch.full_like(sd_in, float(s[k].std(unbiased=False)))
        return _gauss_logpdf(x, mu_in, sd_in + 1e-30) - _gauss_logpdf(x, mu_out, sd_out + 1e-30)
    if offline == "one_sided":
        return -torch.special.log_ndtr(-(x - mu_out) / (sd_out + 1e-30))  # -log Pr[Z > phi]
    return -_gauss_logpdf(x, mu_out, sd_out + 1e-30)


def lira_scores(
    stats: torch.Tensor,
    keep: torch.Tensor,
    *,
    online: bool = True,
    fix_variance: bool = False,
    offline: str = "one_sided",
) -> torch.Tensor:
    """Leave-one-out LiRA scores ``(M, n)``: row ``m`` scores every point against target model ``m``.

    Parameters
    ----------
    stats:
        ``phi`` of every model on every point, ``(M, n)``.
    keep:
        Boolean ``(M, n)``: which points each model trained on.
    online:
        Use IN and OUT distributions (else OUT only).
    fix_variance:
        One global standard deviation per side instead of one per point.
    offline:
        ``"one_sided"`` (``-log Pr[Z > phi]``) or ``"logpdf"`` (the reference code's ``-log N``).

    Members of target ``m`` are ``keep[m]``; pool ``scores[keep]`` against ``scores[~keep]``.
    """
    stats = check_tensor(stats, "stats", ndim=2, floating=True).to(torch.float64)
    keep = check_tensor(keep, "keep", ndim=2)
    if keep.dtype != torch.bool:
        raise TypeError(f"keep must be a boolean tensor, got {keep.dtype}")
    if keep.shape != stats.shape:
        raise ValueError(f"keep must have the shape of stats {tuple(stats.shape)}, got {tuple(keep.shape)}")
    m = stats.shape[0]
    if m < 2:
        raise ValueError(f"LiRA needs at least 2 models (one target, one reference), got {m}")
    check_choice(offline, "offline", ("one_sided", "logpdf"))
    scores = torch.empty_like(stats)
    for t in range(m):
        others = torch.arange(m) != t
        scores[t] = lira_target_scores(
            stats[t], stats[others], keep[others], online=online, fix_variance=fix_variance, offline=offline
        )
    return scores


def train_batched(
    model: BatchedMLP,
    x: torch.Tensor,
    y: torch.Tensor,
    keep: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    batch_size: int,
    seed: int = 0,
    on_epoch=None,
) -> None:
    """Train every model of ``model`` on its own IN points (``keep[m]``), own shuffles, in one loop.

    Every model holds the same number of IN points (a balanced keep matrix), so batches align.
    """
    check_int(epochs, "epochs", minimum=1)
    check_int(batch_size, "batch_size", minimum=1)
    counts = keep.sum(1)
    if int(counts.min()) != int(counts.max()):
        raise ValueError("every model must keep the same number of points (use balanced_keep_matrix)")
    idx_in = torch.stack([row.nonzero().flatten() for row in keep])  # (M, n_in)
    g = torch.Generator().manual_seed(seed)
    n_in = idx_in.shape[1]
    xf = x.flatten(1)
    model.train()
    for _ in range(epochs):
        order = torch.argsort(torch.rand(model.n_models, n_in, generator=g), dim=1)
        perm = idx_in.gather(1, order)
        for i in range(0, n_in, batch_size):
            rows = perm[:, i : i + batch_size]  # (M, b)
            logits = model(xf[rows])
            loss = F.cross_entropy(logits.flatten(0, 1), y[rows].flatten(), reduction="none")
            loss = loss.view(rows.shape).mean(1).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if on_epoch is not None:
            on_epoch(model)
    model.eval()
