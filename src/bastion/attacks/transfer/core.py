"""Gradient-transfer core: iterative FGSM with momentum (MI), input diversity (DI) and translation
invariance (TI), under a mask, on an ensemble of substitutes.

Followed (spec ``specs/transfer.md``):

- **0 "Gradient-transfer core"** [V: torchattacks 3.5.1 ``MIFGSM`` / ``DIFGSM`` / ``TIFGSM``; RobFR].
  MI (:func:`momentum_update`): ``g <- mu g + g_hat / mean|g_hat|``, the mean per sample over (C, H, W),
  ``mu = 1``; the step is ``-alpha sign(g)`` on a loss to *minimise* (torchattacks ascends cross-entropy;
  minimising its negative gives the same bits). DI (:func:`input_diversity`): with probability ``prob``
  resize the whole batch (one size per batch) to ``s`` in ``[int(low W), W - 1]``, bilinear, then
  zero-pad back at a random offset in ``[0, W - s - 1]`` -- torchattacks' ranges (``randint``'s upper
  ends are exclusive there), drawn in torchattacks' order (size, top, left, then the coin), so a
  generator seeded like the global one gives torchattacks' draws. TI (:func:`translation_invariant`,
  :func:`gaussian_kernel`): depthwise convolution of ``g_hat`` with a normalised Gaussian
  (``linspace(-nsig, nsig, length)``, outer product; length 15, nsig 3 at 224 px, 3-5 at 32 px), same
  padding, before the MI normalisation. Ensemble: the mean of the substitutes' losses on one
  (diversified) input per step.
- **A "TAP"** [V: AT3D ``attacks/base.py``, ``MIM_attack.py``]: under a binary mask ``M`` the input to
  the substitutes is ``where(M, p, x)``, so ``g_hat = grad_p L`` is zero outside the mask; after TI the
  gradient is masked again; MI normalises over all pixels (RobFR / AT3D; for sign or unit-norm steps
  "over the mask" gives the same iterates, the two means differ by a per-sample constant). Update
  (:func:`descent_step`, :func:`project`): ``p <- clip01(clip_[p0 +- eps](p - alpha sign g))``, the
  ball around the start ``p0``; ``norm="l2_rms"`` is AT3D's released ``step2d``: step
  ``alpha sqrt(D) g / ||g||_2`` (norm floored at 1e-12), project onto the l2 ball of radius
  ``eps sqrt(D)`` (``D = C H W``, the whole image), then clip to [0, 1]. Optional early stop after
  ``patience`` steps without a lower batch loss (AT3D: 20); with DI
  the rule reads the loss of the undiversified iterate (one extra forward), since a lucky resize would stop it.

Our choices [R]: the linf projection is computed as torchattacks does, ``clip01(p0 + clip(p - p0, -eps,
eps))``: monotone rounding keeps every iterate inside ``[fl(p0 - eps), fl(p0 + eps)]``. A zero gradient
is left at zero (torchattacks divides 0 by 0). ``alpha`` defaults to ``eps / steps`` (MI-FGSM's
``eps / T``; AT3D uses ``1.5 eps / N``). AT3D's own ``l2`` projection centres the ball on the
attacker's image rather than on ``p0`` (and returns the iterate before the last step); here the ball is
always around ``p0`` and the last iterate is returned. Pixels outside the mask are written back from
``x`` after every step, so they stay bit-identical even when TI spreads the gradient.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...core.checks import check_choice, check_float, check_image_batch, check_int, check_tensor

__all__ = [
    "GOALS",
    "NORMS",
    "EarlyStop",
    "TransferAttack",
    "TransferResult",
    "check_mask",
    "cosine_loss",
    "cross_entropy_loss",
    "descent_step",
    "gaussian_kernel",
    "input_diversity",
    "momentum_update",
    "project",
    "translation_invariant",
]

NORMS = ("linf", "l2_rms")
GOALS = ("untargeted", "targeted", "impersonate", "dodge")


# --------------------------------------------------------------------------- pieces
def input_diversity(
    x: torch.Tensor, prob: float = 0.5, low: float = 0.9, generator: torch.Generator | None = None
) -> torch.Tensor:
    """DI: with probability ``prob``, shrink the batch to a random size and zero-pad it back (differentiable).

    One size for the whole batch, as torchattacks: width ``s`` uniform in ``[max(1, int(low W)), W - 1]``
    (height ``round(s H / W)`` for non-square images, ``s`` for square ones), bilinear without corner
    alignment, then zero padding with the top and left offsets uniform in ``[0, H - s_h - 1]`` and
    ``[0, W - s - 1]``. The random numbers come from ``generator`` (the global CPU generator if
    ``None``) in torchattacks' order -- size, top, left, coin -- and all four are drawn on every call.
    ``prob = 0`` returns ``x`` itself; images narrower or lower than 2 pixels are returned unchanged.

    >>> x = torch.rand(2, 3, 32, 32)
    >>> input_diversity(x, prob=1.0, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([2, 3, 32, 32])
    >>> input_diversity(x, prob=0.0) is x
    True
    """
    check_tensor(x, "x", ndim=4, floating=True, finite=False)
    prob = check_float(prob, "prob", minimum=0.0, maximum=1.0)
    low = check_float(low, "low", minimum=0.0, maximum=1.0, min_inclusive=False, max_inclusive=False)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    return _input_diversity(x, prob, low, generator)


def _input_diversity(x: torch.Tensor, prob: float, low: float, generator: torch.Generator | None) -> torch.Tensor:
    h, w = x.shape[-2:]
    if h < 2 or w < 2:
        return x
    s_w = int(torch.randint(max(1, int(w * low)), w, (1,), dtype=torch.int32, generator=generator))
    s_h = s_w if h == w else min(h - 1, max(1, round(s_w * h / w)))
    rem_h, rem_w = h - s_h, w - s_w
    top = int(torch.randint(0, rem_h, (1,), dtype=torch.int32, generator=generator))
    left = int(torch.randint(0, rem_w, (1,), dtype=torch.int32, generator=generator))
    if not bool(torch.rand(1, generator=generator) < prob):
        return x
    rescaled = F.interpolate(x, size=[s_h, s_w], mode="bilinear", align_corners=False)
    return F.pad(rescaled, [left, rem_w - left, top, rem_h - top], value=0.0)


def gaussian_kernel(length: int = 15, nsig: float = 3.0, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """TI's kernel, (length, length): ``k[i, j] = phi(t_i) phi(t_j) / sum`` with ``t = linspace(-nsig, nsig, length)``.

    Computed in float64 and cast to ``dtype`` (torchattacks' ``gkern``: scipy's normal pdf, outer
    product, normalised, float32).

    >>> k = gaussian_kernel(5, 3)
    >>> k.shape, round(float(k.sum()), 6), bool(k[2, 2] == k.max())
    (torch.Size([5, 5]), 1.0, True)
    """
    length = check_int(length, "length", minimum=1)
    nsig = check_float(nsig, "nsig", minimum=0.0, min_inclusive=False)
    t = torch.linspace(-nsig, nsig, length, dtype=torch.float64)
    k1 = torch.exp(-0.5 * t * t) / math.sqrt(2.0 * math.pi)
    k = torch.outer(k1, k1)
    return (k / k.sum()).to(dtype)


def translation_invariant(grad: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """TI: convolve every channel of ``grad`` (N, C, H, W) with the 2-D ``kernel`` (depthwise, same padding).

    >>> g = torch.zeros(1, 1, 5, 5); g[0, 0, 2, 2] = 1.0
    >>> k = gaussian_kernel(3, 1)
    >>> bool(torch.allclose(translation_invariant(g, k)[0, 0, 1:4, 1:4], k))
    True
    """
    check_tensor(grad, "grad", ndim=4, floating=True)
    check_tensor(kernel, "kernel", ndim=2, floating=True)
    return _translation_invariant(grad, kernel.to(grad))


def _translation_invariant(grad: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    return _depthwise(grad, _ti_weight(kernel, grad.shape[1]))


def _ti_weight(kernel: torch.Tensor, channels: int) -> torch.Tensor:
    return kernel.reshape(1, 1, *kernel.shape).repeat(channels, 1, 1, 1)


def _depthwise(grad: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return F.conv2d(grad, weight, stride=1, padding="same", groups=weight.shape[0])


def momentum_update(g: torch.Tensor, grad: torch.Tensor, mu: float = 1.0) -> torch.Tensor:
    """MI: ``mu * g + grad / mean|grad|``, the mean per sample over all non-batch dimensions.

    A sample whose gradient is all zero contributes zero (instead of 0/0).

    >>> grad = torch.tensor([[1.0, -3.0]])
    >>> momentum_update(torch.zeros(1, 2), grad).tolist()
    [[0.5, -1.5]]
    """
    check_tensor(grad, "grad", floating=True)
    check_tensor(g, "g", floating=True)
    if g.shape != grad.shape:
        raise ValueError(f"g must have grad's shape {tuple(grad.shape)}, got {tuple(g.shape)}")
    if grad.dim() < 2:
        raise ValueError(f"grad must have a batch dimension and at least one more, got shape {tuple(grad.shape)}")
    mu = check_float(mu, "mu", minimum=0.0)
    return _momentum_update(g, grad, mu)


def _momentum_update(g: torch.Tensor, grad: torch.Tensor, mu: float) -> torch.Tensor:
    denom = torch.mean(torch.abs(grad), dim=tuple(range(1, grad.dim())), keepdim=True)
    denom = torch.where(denom > 0, denom, torch.ones_like(denom))
    return mu * g + grad / denom


def descent_step(p: torch.Tensor, g: torch.Tensor, alpha: float, norm: str = "linf") -> torch.Tensor:
    """One step against ``g``: ``p - alpha sign(g)`` (linf) or ``p - alpha sqrt(D) g / ||g||_2`` (l2_rms).

    ``D`` is the number of values per sample; the l2 norm is per sample and floored at 1e-12 (AT3D).

    >>> descent_step(torch.full((1, 1, 1, 2), 0.5), torch.tensor([[[[2.0, -1.0]]]]), 0.25).tolist()
    [[[[0.25, 0.75]]]]
    """
    check_tensor(p, "p", ndim=4, floating=True)
    check_tensor(g, "g", ndim=4, floating=True)
    if g.shape != p.shape:
        raise ValueError(f"g must have p's shape {tuple(p.shape)}, got {tuple(g.shape)}")
    alpha = check_float(alpha, "alpha", minimum=0.0)
    return _descent_step(p, g, alpha, check_choice(norm, "norm", NORMS))


def _descent_step(p: torch.Tensor, g: torch.Tensor, alpha: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        return p - alpha * torch.sign(g)
    d = p[0].numel()
    gnorm = g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (g.dim() - 1)))
    return p - (alpha * math.sqrt(d)) * (g / gnorm)


def project(p: torch.Tensor, p0: torch.Tensor, eps: float, norm: str = "linf") -> torch.Tensor:
    """Project ``p`` onto the ``eps`` ball around ``p0``, then clip to [0, 1].

    ``"linf"``: ``clip01(p0 + clip(p - p0, -eps, eps))`` (torchattacks' arithmetic; every value lands in
    ``[fl(p0 - eps), fl(p0 + eps)]``). ``"l2_rms"``: the per-sample l2 ball of radius ``eps sqrt(D)``
    (``D`` values per sample, i.e. an RMS radius of ``eps``; AT3D's ``clip_by_norm_2d``). Clipping to
    [0, 1] afterwards never leaves the ball when ``p0`` lies in [0, 1].

    >>> project(torch.tensor([[[[0.9, -0.2]]]]), torch.tensor([[[[0.5, 0.1]]]]), 0.25).tolist()
    [[[[0.75, 0.0]]]]
    """
    check_tensor(p, "p", ndim=4, floating=True)
    check_tensor(p0, "p0", ndim=4, floating=True, bounds=(0.0, 1.0))
    if p.shape != p0.shape:
        raise ValueError(f"p0 must have p's shape {tuple(p.shape)}, got {tuple(p0.shape)}")
    eps = check_float(eps, "eps", minimum=0.0)
    return _project(p, p0, eps, check_choice(norm, "norm", NORMS))


def _project(p: torch.Tensor, p0: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        delta = torch.clamp(p - p0, min=-eps, max=eps)
    else:
        radius = eps * math.sqrt(p[0].numel())
        delta = p - p0
        dnorm = delta.flatten(1).norm(dim=1).view(-1, *([1] * (p.dim() - 1)))
        factor = torch.where(dnorm > radius, radius / dnorm.clamp_min(1e-30), torch.ones_like(dnorm))
        delta = delta * factor
    return torch.clamp(p0 + delta, min=0.0, max=1.0)


def check_mask(mask: Any, x: torch.Tensor, name: str = "mask") -> torch.Tensor:
    """Return ``mask`` as a bool tensor of shape (N or 1, C or 1, H, W) matching ``x`` (N, C, H, W).

    ``mask`` may be (H, W) or 4-D, bool or numeric with values in {0, 1}.
    """
    mask = check_tensor(mask, name, ndim=(2, 4))
    if mask.dtype != torch.bool:
        if mask.is_complex():
            raise TypeError(f"{name} must be bool or real, got {mask.dtype}")
        bad = (mask != 0) & (mask != 1)
        if bool(bad.any()):
            raise ValueError(
                f"{name} must be binary (0 or 1), got {int(bad.sum())} other values, e.g. {float(mask[bad][0]):g}"
            )
        mask = mask != 0
    if mask.dim() == 2:
        mask = mask[None, None]
    n, c, h, w = x.shape
    mn, mc, mh, mw = mask.shape
    if (mh, mw) != (h, w) or mn not in (1, n) or mc not in (1, c):
        raise ValueError(
            f"{name} of shape {tuple(mask.shape)} does not broadcast to x of shape {tuple(x.shape)} "
            f"(needs [{n} or 1, {c} or 1, {h}, {w}] or [{h}, {w}])"
        )
    return mask.to(x.device)


# --------------------------------------------------------------------------- losses
def cross_entropy_loss(targeted: bool = False) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Classification loss to minimise: ``-CE(logits, labels)`` (untargeted) or ``CE(logits, targets)``.

    Batch mean, as torchattacks' ``nn.CrossEntropyLoss()``.
    """

    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits, labels)
        return ce if targeted else -ce

    loss.__name__ = "targeted_ce" if targeted else "untargeted_ce"
    return loss


def cosine_loss(dodge: bool = False) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Face-recognition loss to minimise: ``-mean cos(f(x*), ref)`` (impersonate) or ``+mean cos`` (dodge).

    ``ref`` is the victim's (or, dodging, the enrolled) embedding, (N, d), treated as a constant.
    """

    def loss(emb: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        if not isinstance(emb, torch.Tensor) or emb.dim() != 2:
            shape = tuple(emb.shape) if isinstance(emb, torch.Tensor) else type(emb).__name__
            raise ValueError(f"embedder output must be (N, d), got {shape}")
        if ref.shape != emb.shape:
            raise ValueError(
                f"targets (reference embeddings) must have shape {tuple(emb.shape)}, got {tuple(ref.shape)}"
            )
        cos = F.cosine_similarity(emb, ref.detach().to(emb), dim=1).mean()
        return cos if dodge else -cos

    loss.__name__ = "dodge_cosine" if dodge else "impersonate_cosine"
    return loss


_GOAL_LOSSES = {
    "untargeted": lambda: cross_entropy_loss(False),
    "targeted": lambda: cross_entropy_loss(True),
    "impersonate": lambda: cosine_loss(False),
    "dodge": lambda: cosine_loss(True),
}


# --------------------------------------------------------------------------- attack
class EarlyStop:
    """Stop after ``patience`` consecutive values that are not below the best so far (``None``: never stop).

    >>> stop = EarlyStop(2)
    >>> [stop(v) for v in (3.0, 2.0, 2.5, 2.0, 1.0)]
    [False, False, False, True, False]
    """

    def __init__(self, patience: int | None) -> None:
        self.patience = patience
        self.best, self.stale = math.inf, 0

    def __call__(self, value: float) -> bool:
        if self.patience is None:
            return False
        if value < self.best:
            self.best, self.stale = value, 0
            return False
        self.stale += 1
        return self.stale >= self.patience


@dataclass
class TransferResult:
    """What :meth:`TransferAttack.run` returns.

    ``adversarial``: the last iterate (N, C, H, W). ``start``: ``p0``, the ball's centre. ``losses[t]``:
    the (ensemble-mean) loss at step ``t``'s input, before its update. ``steps``: updates made (fewer than
    asked when ``patience`` stopped the attack). ``history``: with ``record=True``, ``[p0, p1, ...]``.
    """

    adversarial: torch.Tensor
    start: torch.Tensor
    losses: list[float]
    steps: int
    history: list[torch.Tensor] | None = field(default=None, repr=False)


class TransferAttack:
    """Iterative sign (or l2) descent with MI, DI and TI on the mean loss of one or more substitutes.

    Parameters
    ----------
    substitutes:
        A callable (``nn.Module``) mapping [0, 1] images to outputs, or a sequence of them (ensemble:
        the loss is the mean over substitutes). Modules are put in eval mode during :meth:`run` and
        restored afterwards. Any preprocessing (normalisation, alignment, resizing) belongs inside them.
    loss_fn:
        ``loss_fn(output, target) -> loss to minimise`` (a scalar, or per-sample values that are
        averaged), or a goal: ``"untargeted"`` / ``"targeted"`` (cross-entropy on labels, see
        :func:`cross_entropy_loss`), ``"impersonate"`` / ``"dodge"`` (cosine to reference embeddings,
        :func:`cosine_loss`).
    steps:
        Number of updates (>= 1).
    eps:
        Radius of the ball around the start, in [0, 1] pixel units (``"l2_rms"``: the RMS radius).
    alpha:
        Step size; ``None`` is ``eps / steps``.
    mu:
        Momentum decay (0 turns MI off; I-FGSM then).
    di:
        DI probability: ``False``/``0`` off, ``True`` = 0.5, or a number in [0, 1].
    di_low:
        DI's smallest relative size.
    ti_kernel:
        A 2-D kernel (:func:`gaussian_kernel`) for TI, or ``None``.
    norm:
        ``"linf"`` or ``"l2_rms"`` (see :func:`project`).
    mask:
        Default binary mask of the optimised pixels ((H, W) or (N or 1, C or 1, H, W)); ``None`` = all.
        :meth:`run` can override it per call.
    patience:
        Stop after this many consecutive steps without a lower batch loss (AT3D: 20); ``None`` never.
    seed:
        Seeds DI's random numbers; the same seed gives the same bits.

    Examples
    --------
    >>> torch.manual_seed(0) is not None
    True
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    >>> x = torch.rand(4, 1, 4, 4)
    >>> y = net(x).argmax(1)
    >>> attack = TransferAttack(net, "untargeted", steps=5, eps=0.1)
    >>> res = attack.run(x, y)
    >>> bool(((res.adversarial - x).abs() <= 0.1 + 1e-7).all()), res.steps
    (True, 5)
    """

    def __init__(
        self,
        substitutes: Callable[..., Any] | Sequence[Callable[..., Any]],
        loss_fn: str | Callable[[Any, Any], torch.Tensor] = "untargeted",
        *,
        steps: int,
        eps: float,
        alpha: float | None = None,
        mu: float = 1.0,
        di: bool | float = False,
        di_low: float = 0.9,
        ti_kernel: torch.Tensor | None = None,
        norm: str = "linf",
        mask: torch.Tensor | None = None,
        patience: int | None = None,
        seed: int = 0,
    ) -> None:
        if callable(substitutes) and not isinstance(substitutes, nn.ModuleList | nn.ModuleDict):
            substitutes = [substitutes]
        if isinstance(substitutes, nn.ModuleDict):
            substitutes = list(substitutes.values())
        try:
            subs = list(substitutes)
        except TypeError:
            raise TypeError(
                f"substitutes must be a callable or a sequence of callables, got {type(substitutes).__name__}"
            ) from None
        if not subs:
            raise ValueError("substitutes must hold at least one model, got none")
        for i, s in enumerate(subs):
            if not callable(s):
                raise TypeError(f"substitutes[{i}] must be callable, got {type(s).__name__}")
        self.substitutes = tuple(subs)
        if isinstance(loss_fn, str):
            self.goal: str | None = check_choice(loss_fn, "loss_fn", GOALS)
            self.loss_fn = _GOAL_LOSSES[loss_fn]()
        elif callable(loss_fn):
            self.goal, self.loss_fn = None, loss_fn
        else:
            raise TypeError(f"loss_fn must be a callable or one of {GOALS}, got {type(loss_fn).__name__}")
        self.steps = check_int(steps, "steps", minimum=1)
        self.eps = check_float(eps, "eps", minimum=0.0)
        self.alpha = self.eps / self.steps if alpha is None else check_float(alpha, "alpha", minimum=0.0)
        self.mu = check_float(mu, "mu", minimum=0.0)
        if isinstance(di, bool):
            self.di = 0.5 if di else 0.0
        else:
            self.di = check_float(di, "di", minimum=0.0, maximum=1.0)
        self.di_low = check_float(di_low, "di_low", minimum=0.0, maximum=1.0, min_inclusive=False, max_inclusive=False)
        if ti_kernel is not None:
            ti_kernel = check_tensor(ti_kernel, "ti_kernel", ndim=2, floating=True).detach().clone()
        self.ti_kernel = ti_kernel
        self.norm = check_choice(norm, "norm", NORMS)
        if mask is not None:
            mask = check_tensor(mask, "mask", ndim=(2, 4))
        self.mask = mask
        self.patience = None if patience is None else check_int(patience, "patience", minimum=1)
        self.seed = check_int(seed, "seed", minimum=0)

    def __repr__(self) -> str:
        loss = self.goal or getattr(self.loss_fn, "__name__", type(self.loss_fn).__name__)
        ti = None if self.ti_kernel is None else tuple(self.ti_kernel.shape)
        return (
            f"{type(self).__name__}(substitutes={len(self.substitutes)}, loss_fn={loss!r}, steps={self.steps}, "
            f"eps={self.eps:g}, alpha={self.alpha:g}, mu={self.mu:g}, di={self.di:g}, ti_kernel={ti}, "
            f"norm={self.norm!r}, mask={self.mask is not None}, patience={self.patience}, seed={self.seed})"
        )

    # ------------------------------------------------------------------ checks
    def _targets(self, targets: Any, n: int) -> list[Any]:
        k = len(self.substitutes)
        if isinstance(targets, list | tuple):
            if len(targets) != k:
                raise ValueError(
                    f"targets given per substitute must have one entry per substitute ({k}), got {len(targets)}"
                )
            items = list(targets)
        else:
            items = [targets] * k
        out = []
        for i, t in enumerate(items):
            name = "targets" if not isinstance(targets, list | tuple) else f"targets[{i}]"
            if t is None:
                out.append(None)
                continue
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor (or a list/tuple of them), got {type(t).__name__}")
            if t.dim() == 0 or t.shape[0] != n:
                raise ValueError(f"{name} must have one row per image ({n}), got shape {tuple(t.shape)}")
            if t.is_floating_point():
                check_tensor(t, name)
            out.append(t.detach())
        return out

    def _start(self, x: torch.Tensor, init: Any, mask: torch.Tensor | None) -> torch.Tensor:
        if init is None:
            return x.detach().clone()
        init = check_tensor(init, "init", ndim=(3, 4), floating=True, bounds=(0.0, 1.0))
        if init.dim() == 3:
            init = init.unsqueeze(0)
        n, c, h, w = x.shape
        if tuple(init.shape[2:]) != (h, w) or init.shape[0] not in (1, n) or init.shape[1] not in (1, c):
            raise ValueError(
                f"init of shape {tuple(init.shape)} does not broadcast to x of shape {tuple(x.shape)} "
                f"(needs [{n} or 1, {c} or 1, {h}, {w}] or [{c}, {h}, {w}])"
            )
        init = init.to(x).expand_as(x)
        start = init if mask is None else torch.where(mask, init, x)
        return start.detach().clone()

    # ------------------------------------------------------------------ attack
    def _loss(self, xin: torch.Tensor, targets: list[Any]) -> torch.Tensor:
        losses = []
        for sub, t in zip(self.substitutes, targets, strict=True):
            value = self.loss_fn(sub(xin), t)
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"loss_fn must return a tensor, got {type(value).__name__}")
            losses.append(value if value.dim() == 0 else value.mean())
        return losses[0] if len(losses) == 1 else torch.stack(losses).mean()

    def run(
        self,
        x: torch.Tensor,
        targets: torch.Tensor | Sequence[torch.Tensor] | None = None,
        *,
        init: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        record: bool = False,
        callback: Callable[[int, torch.Tensor, float], Any] | None = None,
    ) -> TransferResult:
        """Attack ``x`` (N, C, H, W in [0, 1]).

        Parameters
        ----------
        x:
            The images; pixels outside the mask are kept bit for bit.
        targets:
            What ``loss_fn`` compares against, one row per image: labels (true labels untargeted, target
            labels targeted), reference embeddings, ... One tensor for all substitutes, or a list/tuple
            with one tensor per substitute (e.g. each substitute's embedding of the victim).
        init:
            Start values of the optimised pixels (e.g. the victim's face for TAP); ``None`` = ``x``. The
            start ``p0 = where(mask, init, x)`` is the centre of the eps ball.
        mask:
            Overrides the constructor's mask for this call.
        record:
            Keep every iterate in ``result.history`` (``[p0, p1, ...]``).
        callback:
            ``callback(step, adversarial, loss)`` after every update (``step`` from 1, ``adversarial`` a
            copy of the iterate, ``loss`` the batch loss before the update).
        """
        x = check_image_batch(x, "x")
        n = x.shape[0]
        tlist = self._targets(targets, n)
        m = mask if mask is not None else self.mask
        m = None if m is None else check_mask(m, x, "mask")
        p0 = self._start(x, init, m)
        ti_weight = None if self.ti_kernel is None else _ti_weight(self.ti_kernel.to(x), x.shape[1])
        generator = torch.Generator().manual_seed(self.seed)

        modules = [s for s in self.substitutes if isinstance(s, nn.Module)]
        modes = [mod.training for mod in modules]
        for mod in modules:
            mod.eval()
        p, g = p0.clone(), torch.zeros_like(p0)
        history = [p0.clone()] if record else None
        losses: list[float] = []
        stop = EarlyStop(self.patience)
        try:
            with torch.enable_grad():
                for step in range(1, self.steps + 1):
                    pv = p.clone().requires_grad_(True)
                    xin = pv if m is None else torch.where(m, pv, x)
                    composed = xin
                    if self.di > 0:
                        xin = _input_diversity(xin, self.di, self.di_low, generator)
                    loss = self._loss(xin, tlist)
                    if loss.dim() != 0 or not loss.requires_grad:
                        raise ValueError("loss_fn must return a loss that depends on the substitutes' outputs")
                    (grad,) = torch.autograd.grad(loss, pv)
                    if ti_weight is not None:
                        grad = _depthwise(grad, ti_weight)
                    if m is not None:
                        grad = torch.where(m, grad, torch.zeros_like(grad))
                    g = _momentum_update(g, grad, self.mu)
                    nxt = _project(_descent_step(p, g, self.alpha, self.norm), p0, self.eps, self.norm)
                    if m is not None:
                        nxt = torch.where(m, nxt, x)
                    p = nxt.detach()
                    value = float(loss.detach())
                    losses.append(value)
                    if history is not None:
                        history.append(p.clone())
                    if callback is not None:
                        callback(step, p.clone(), value)
                    if self.patience is not None:
                        # with DI the step's loss is that of a random resize: a lucky draw would stop the attack.
                        # The stopping rule reads the loss of the iterate itself (one extra forward, no grad).
                        if self.di > 0:
                            with torch.no_grad():
                                value = float(self._loss(composed.detach(), tlist))
                        if stop(value):
                            break
        finally:
            for mod, mode in zip(modules, modes, strict=True):
                mod.train(mode)
        return TransferResult(adversarial=p, start=p0, losses=losses, steps=len(losses), history=history)

    __call__ = run
