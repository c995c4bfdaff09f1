"""Universal adversarial perturbations: data-free (divergence / logit / KL / activation energy) with data-free
priors, the FFF and GD-UAP presets, and the data-driven SGD-UAP and DeepFool-UAP baselines.

Followed (spec ``specs/transfer.md`` section B):

- **Objective [R]** (Huan et al., PAKDD 2020, no official code): maximise over ``||delta||_inf <= xi``
  ``E_{x~Q} sum_l log(||phi_l(clip(x + delta)) - phi_l(x)||^2 + 1e-9)`` (``objective="divergence"``), the
  squared norm per sample, the log per sample, the mean over the batch; ``phi_l`` are the surrogate's block
  outputs (forward hooks) or its logits (``"logit"``); ``"kl"`` maximises ``mean_i log(KL(p(x_i) ||
  p(clip(x_i + delta))) + 1e-9)``. ``Q`` never holds target data: a Gaussian range prior, jigsaw images,
  class impressions, public images the caller passes explicitly, or no prior (the preprocessing's zero image).
  Adam with ``lr = xi / 10``, ``delta ~ U(-xi, xi)``, clipped to the ball after every step; saturation
  rescale: halve ``delta`` when more than 50% of its entries sit at ``+-xi`` and that share moved by less than
  ``1e-5`` since the previous step (val-iisc/GD-UAP ``train.py``). "Validate on the proxy only": both official
  codes score the perturbation on 1,000 held-out *real* images at intervals and save the best (GD-UAP
  ``train.py``: every 400 iterations, or before a rescale once 200 have passed since the last check; FFF
  ``train.py``: at 200 and every 300 after); data-free, we score it on a fixed set of ``val_size`` prior samples
  instead (the surrogate's fooling rate there, ties broken by the objective on that set) every
  ``validate_every`` steps, before every rescale or halving and after the last step, and return the best
  checkpoint (``select="best"``, the default; ``select="last"`` returns the final ``delta``, the behaviour
  before). This was added after the MNIST cross-architecture claim of ``reproduce uap`` had failed: the final
  ``delta`` could be one just halved by the rescale (owner A's wide net, seed 0: ``||delta||_inf`` 0.071 at
  ``xi = 0.1``, fooling fewer test digits than sign noise). It moved that claim's figures a little (see
  :mod:`bastion.reproduce.uap`) and did not make it hold. Range-prior images are far from digits: on MNIST the
  surrogate's labels on them flip easily, the proxy fooling rate often saturates at 1 and the objective
  decides; with ``prior="none"`` the proxy is the one zero image, and with ``prior="public"`` it is drawn
  from the same public images as the training batches (not held out). Each validation is one forward pass of
  the ``val_size`` images; at 224 px on EfficientNet-Lite0 (32 images, 10 validations in 100 steps) our
  fits took about a third to a half longer.
- **GD-UAP [V: val-iisc/GD-UAP, ``classification/utils/losses.py::l2_all``, ``train.py``]**
  (``objective="energy"``, :func:`gd_uap`): maximise ``sum_l log(||phi_l(clip(x + delta))||^2 / 2)``, the
  squared norm over the whole batch blob as TensorFlow's ``l2_loss``; priors ``"none"`` (x = the zero of the
  preprocessed space: official code feeds an all-zero mean-subtracted image), ``"range"`` (official: a Gaussian
  image with the ImageNet mean and s.d. (52, 58, 62) / 255, randomly cropped and flipped), data (here
  ``"public"``). The official code runs Adam at 0.1 for ``xi = 10`` (``xi / 100``) for up to 40,000 iterations
  with validation on 1,000 held-out images; our budget is ~100 steps, so the preset keeps ``lr = xi / 10`` [R]
  and validates on the proxy (above).
- **FFF [V: val-iisc/fast-feature-fool ``train.py``, ``misc/losses.py::activations``]**
  (``objective="activation"``, :func:`fff`): ``delta`` alone (here: the preprocessing's zero image plus
  ``delta``), maximise ``sum_l log(mean |phi_l(delta)|)`` over the conv layers, Adam 0.1 at ``xi = 10``, halve
  ``delta`` every 300 iterations.
- **Baselines.** :func:`sgd_uap` [R] (Shafahi et al., "Universal adversarial training", AAAI 2020): Adam ascent
  of the cross-entropy of ``f(clip(x + delta))`` against the surrogate's clean labels on the caller's (public)
  images, clipped to the ball every step (no loss clipping). :func:`deepfool_uap` [V: ART 1.20.1
  ``UniversalPerturbation`` / ``DeepFool``; Moosavi-Dezfooli et al., CVPR 2017]: passes over the images in a
  seeded random order; for every image the perturbation does not fool yet, DeepFool (top-``nb_grads`` classes,
  clip to [0, 1], overshoot) from ``clip(x + v)``; if DeepFool flips the label, ``v <- proj_inf(x_adv - x)``;
  stop when the fooling rate reaches ``1 - delta`` or after ``max_passes`` passes.
- **Metric.** :func:`fooling_rate`: share of images with ``argmax f(clip(x + delta)) != argmax f(x)``;
  :func:`transfer_matrix`: surrogate x target table.

Our choices [R]: ``delta`` lives in [0, 1] image space and is added *before* the model's preprocessing
(surrogates and targets are modules on [0, 1] images, preprocessing included). "Blocks" (default layers for
divergence / energy / activation) are the children of a module named ``blocks`` or ``_blocks`` (EfficientNet-
Lite: its 16 MBConv blocks; ``ResNetSmall``: its 3 basic blocks), else every activation module's output (ReLU,
ReLU6, SiLU, GELU, ...). The range prior draws fresh Gaussian noise per batch at the input size (mean / s.d.
from the model's ``Normalize`` when it has one, else the ImageNet values for 3 channels), blurs it with one
random sigma in [0, 2] px per batch and flips it; jigsaw images [R] tile a random 1-8 grid with random
colours plus noise (s.d. 0.1), blurred; class impressions (Mopuri et al., ECCV 2018) [R] are a pool of images
made by ascending random class logits of the surrogate from range-prior noise (``ci_steps`` Adam steps with
random jitter). Public images are sampled with replacement (flipped when they have 3 channels). Everything
random comes from one ``torch.Generator`` seeded with ``seed``: same seed, same bits (one thread).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...core.checks import check_choice, check_float, check_image_batch, check_int, check_tensor
from ...core.progress import progress

__all__ = [
    "OBJECTIVES",
    "PRIORS",
    "DataFreeUAP",
    "UAPResult",
    "block_layers",
    "deepfool",
    "deepfool_uap",
    "fff",
    "fooling_rate",
    "gd_uap",
    "preprocess_zero",
    "sgd_uap",
    "sign_noise",
    "transfer_matrix",
    "uap_objective",
]

OBJECTIVES = ("divergence", "logit", "kl", "energy", "activation")
PRIORS = ("range", "jigsaw", "class_impression", "public", "none")
SELECTIONS = ("best", "last")
LOGITS = "logits"
_EPS = 1e-9
_VAL_STREAM = 7_919  # offset of the proxy validation set's seed from the attack's seed
_ACTIVATIONS = (
    nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.LeakyReLU, nn.ELU, nn.Hardswish, nn.Mish, nn.Tanh, nn.Sigmoid,
)  # fmt: skip
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (62 / 255, 58 / 255, 52 / 255)  # GD-UAP make_gaussian_noise.py: sd (52, 58, 62) in BGR


# --------------------------------------------------------------------------- results
@dataclass
class UAPResult:
    """A universal perturbation and how it was made.

    ``delta`` is ``(1, C, H, W)`` in [0, 1]-image units with ``||delta||_inf <= xi``; ``history`` holds one
    dict per step (``step``, ``loss``, ``saturation``, ``rescaled``, ``linf`` after the step; on proxy-validation
    steps also ``val_fooling`` and ``val_objective``, scored before that step's halving) or per pass
    (DeepFool-UAP). For :class:`DataFreeUAP`, ``config["chosen_step"]`` is the step whose ``delta`` was returned.
    """

    delta: torch.Tensor
    xi: float
    method: str
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- layers and hooks
def block_layers(model: nn.Module) -> list[str]:
    """Default feature layers of ``model``: children of a ``blocks``/``_blocks`` container, else activations.

    >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> block_layers(net)
    ['1']
    """
    mods = dict(model.named_modules())
    for name, m in mods.items():
        if name.split(".")[-1] in ("blocks", "_blocks") and isinstance(m, nn.ModuleList | nn.Sequential):
            children = [f"{name}.{c}" for c, _ in m.named_children()]
            if children:
                return children
    acts = [n for n, m in mods.items() if n and isinstance(m, _ACTIVATIONS)]
    if not acts:
        raise ValueError("the surrogate has no 'blocks' container and no activation modules; pass layers=[...]")
    return acts


def _resolve_layers(model: nn.Module, layers: str | Sequence[str] | None, objective: str) -> list[str]:
    if layers is None:
        layers = [LOGITS] if objective in ("logit", "kl") else "blocks"
    if isinstance(layers, str):
        if layers == "blocks":
            return block_layers(model)
        layers = [layers]
    layers = list(layers)
    if not layers:
        raise ValueError("layers must name at least one module (or 'logits')")
    names = {n for n, _ in model.named_modules() if n}
    unknown = [name for name in layers if name != LOGITS and name not in names]
    if unknown:
        available = ", ".join([LOGITS, *sorted(names)])
        raise KeyError(f"unknown layer(s) {unknown}; available layers: {available}")
    return layers


class _Tap:
    """Forward hooks that collect the outputs of the named modules (every call, in call order)."""

    def __init__(self, model: nn.Module, layers: Sequence[str]):
        self.model = model
        self.layers = [name for name in layers if name != LOGITS]
        self.want_logits = LOGITS in layers
        self.mods = dict(model.named_modules())
        self.outputs: dict[str, list[torch.Tensor]] = {}
        self.handles: list[Any] = []

    def __enter__(self) -> _Tap:
        for name in self.layers:
            self.handles.append(self.mods[name].register_forward_hook(self._hook(name)))
        return self

    def _hook(self, name: str) -> Callable:
        def hook(_module, _inputs, output):
            out = output[0] if isinstance(output, tuple | list) else output
            self.outputs.setdefault(name, []).append(out)

        return hook

    def run(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Run the model on ``x``; return ``(tapped features in layer order (logits last if asked), logits)``."""
        self.outputs = {}
        logits = self.model(x)
        feats = [t for name in self.layers for t in self.outputs.get(name, [])]
        if self.layers and not feats:
            raise RuntimeError(f"none of the layers {self.layers} ran in the surrogate's forward pass")
        if self.want_logits:
            feats.append(logits)
        self.outputs = {}
        return feats, logits

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Run the model on ``x``; return the tapped features (layer order), logits last if asked."""
        return self.run(x)[0]

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


_NEEDS_CLEAN = ("divergence", "logit", "kl")


def _objective_from(objective: str, adv: list[torch.Tensor], clean: list[torch.Tensor] | None) -> torch.Tensor:
    """The quantity to *maximise*, from the tapped features of the perturbed batch (and of the clean one)."""
    if objective in ("divergence", "logit"):
        assert clean is not None
        return sum(torch.log((a - c).flatten(1).pow(2).sum(1) + _EPS).mean() for a, c in zip(adv, clean, strict=True))
    if objective == "kl":  # on the logits (the last tapped output; DataFreeUAP checks it is "logits")
        assert clean is not None
        p_log = F.log_softmax(clean[-1], dim=1)
        q_log = F.log_softmax(adv[-1], dim=1)
        kl = (p_log.exp() * (p_log - q_log)).sum(1)
        return torch.log(kl.clamp_min(0.0) + _EPS).mean()
    if objective == "energy":  # GD-UAP l2_all: log(tf.nn.l2_loss(blob)), blob = whole batch
        return sum(torch.log(f.pow(2).sum() / 2) for f in adv)
    if objective == "activation":  # FFF: log(mean |blob|)
        return sum(torch.log(f.abs().mean()) for f in adv)
    raise ValueError(f"objective must be one of {OBJECTIVES}; got {objective!r}")


def _objective_value(tap: _Tap, objective: str, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """The quantity to *maximise* for ``x`` (prior batch) and ``delta`` (1, C, H, W)."""
    clean = None
    if objective in _NEEDS_CLEAN:
        with torch.no_grad():
            clean = [f.detach() for f in tap(x)]
    return _objective_from(objective, tap((x + delta).clamp(0.0, 1.0)), clean)


def uap_objective(
    model: nn.Module,
    x: torch.Tensor,
    delta: torch.Tensor,
    objective: str = "divergence",
    layers: str | Sequence[str] | None = None,
) -> torch.Tensor:
    """The value :class:`DataFreeUAP` maximises, for a prior batch ``x`` and perturbation ``delta`` (differentiable).

    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2), nn.ReLU()).eval()
    >>> v = uap_objective(net, torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), "energy", ["2"])
    >>> v.shape
    torch.Size([])
    """
    check_choice(objective, "objective", OBJECTIVES)
    check_image_batch(x, "x")
    check_tensor(delta, "delta", ndim=4, floating=True)
    names = _resolve_layers(model, layers, objective)
    with _Tap(model, names) as tap:
        return _objective_value(tap, objective, x, delta)


# --------------------------------------------------------------------------- priors
def _first_preprocess(model: nn.Module) -> nn.Module | None:
    m = model
    while isinstance(m, nn.Sequential) and len(m) > 0:
        m = m[0]
    return m


def preprocess_zero(model: nn.Module, channels: int) -> torch.Tensor:
    """The [0, 1] image the model's preprocessing maps to zero (per channel, shape (C,)): the "no data" input.

    ``Normalize`` -> its mean; ``ScaleShift`` -> ``-shift / scale``; anything else -> 0.5.
    """
    first = _first_preprocess(model)
    if first is not None and hasattr(first, "mean") and hasattr(first, "std"):
        mean = torch.as_tensor(first.mean, dtype=torch.float32).flatten()
        return mean.expand(channels).clone() if mean.numel() in (1, channels) else torch.full((channels,), 0.5)
    if first is not None and hasattr(first, "scale") and hasattr(first, "shift"):
        return torch.full((channels,), -float(first.shift) / float(first.scale)).clamp(0.0, 1.0)
    return torch.full((channels,), 0.5)


def _range_stats(model: nn.Module, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    first = _first_preprocess(model)
    if first is not None and hasattr(first, "mean") and hasattr(first, "std"):
        mean = torch.as_tensor(first.mean, dtype=torch.float32).flatten()
        std = torch.as_tensor(first.std, dtype=torch.float32).flatten()
        if mean.numel() in (1, channels) and std.numel() in (1, channels):
            return mean.expand(channels).clone(), std.expand(channels).clone()
    if channels == 3:
        return torch.tensor(_IMAGENET_MEAN), torch.tensor(_IMAGENET_STD)
    return torch.full((channels,), 0.5), torch.full((channels,), 0.25)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma < 0.3:
        return x
    radius = max(1, math.ceil(2.5 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).to(x)
    c = x.shape[1]
    pad = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    pad = F.conv2d(pad, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(pad, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    coin = torch.rand(x.shape[0], generator=gen) < 0.5
    return torch.where(coin.view(-1, 1, 1, 1), x.flip(-1), x)


def _range_batch(n: int, shape, mean, std, gen: torch.Generator) -> torch.Tensor:
    c = shape[0]
    x = torch.randn((n, *shape), generator=gen) * std.view(1, c, 1, 1) + mean.view(1, c, 1, 1)
    sigma = float(torch.rand(1, generator=gen)) * 2.0
    return _flip(_blur(x.clamp(0.0, 1.0), sigma), gen).clamp(0.0, 1.0)


def _jigsaw_batch(n: int, shape, gen: torch.Generator) -> torch.Tensor:
    c, h, w = shape
    out = torch.empty((n, c, h, w))
    for i in range(n):
        g = int(torch.randint(1, 9, (1,), generator=gen))
        tiles = torch.rand((1, c, g, g), generator=gen)
        img = F.interpolate(tiles, size=(h, w), mode="nearest")[0]
        out[i] = img + 0.1 * torch.randn((c, h, w), generator=gen)
    sigma = float(torch.rand(1, generator=gen))
    return _flip(_blur(out.clamp(0.0, 1.0), sigma), gen).clamp(0.0, 1.0)


# --------------------------------------------------------------------------- the attack
def _check_model(model: Any, name: str) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module (preprocessing included, [0, 1] inputs), got {type(model)}")
    return model


class _Frozen:
    """Eval mode and no parameter gradients for the duration of a fit (restored afterwards)."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self):
        self.training = self.model.training
        self.flags = [(p, p.requires_grad) for p in self.model.parameters()]
        self.model.eval()
        for p, _ in self.flags:
            p.requires_grad_(False)
        return self

    def __exit__(self, *exc):
        for p, flag in self.flags:
            p.requires_grad_(flag)
        self.model.train(self.training)


def _bound(xi: float, dtype: torch.dtype = torch.float32) -> float:
    """The largest ``dtype`` number <= ``xi``: the ball is closed in float64 terms, ``||delta||_inf <= xi``."""
    t = torch.tensor(xi, dtype=dtype)
    if float(t) > xi:
        t = torch.nextafter(t, torch.zeros_like(t))
    return float(t)


def _clamp_(delta: torch.Tensor, xi: float) -> None:
    b = _bound(xi, delta.dtype)
    delta.clamp_(-b, b)


def _saturation(delta: torch.Tensor, xi: float) -> float:
    return float((delta.abs() >= _bound(xi, delta.dtype)).float().mean())


class DataFreeUAP:
    """A universal perturbation crafted on ``surrogate`` without any target data.

    Parameters
    ----------
    surrogate:
        Module on [0, 1] images (preprocessing included) returning logits.
    xi:
        linf budget in [0, 1] image units (``10/255`` for ImageNet, ``0.1`` for MNIST).
    objective:
        ``"divergence"`` (Huan et al. [R]), ``"logit"`` (divergence at the logits), ``"kl"`` (logit KL),
        ``"energy"`` (GD-UAP), ``"activation"`` (FFF).
    layers:
        ``None`` (``"blocks"`` for divergence / energy / activation, the logits for logit / kl), ``"blocks"``,
        or module names from ``surrogate.named_modules()`` (``"logits"`` for the output). Unknown -> KeyError.
    prior:
        ``"range"``, ``"jigsaw"``, ``"class_impression"``, ``"public"`` (caller's public images passed to
        :meth:`fit`) or ``"none"`` (the preprocessing's zero image).
    steps, batch_size, lr:
        Adam steps, prior batch size, learning rate (``None``: ``xi / 10``).
    rescale:
        Saturation rescale (halve when > 50% of entries sit at ``+-xi`` and the share moved < 1e-5).
    halve_every:
        Also halve ``delta`` every this many steps (FFF: 300); ``None`` to disable.
    prior_mean, prior_std:
        Override the range prior's per-channel statistics ([0, 1] units).
    ci_pool, ci_steps:
        Class-impression pool size and ascent steps.
    select:
        ``"best"`` (default): validate on the proxy only -- a fixed set of ``val_size`` prior samples drawn once
        from their own random stream, never target data -- every ``validate_every`` steps, just before every
        rescale (the saturated ``delta``, as GD-UAP's ``train.py`` validates before halving) and after the last
        step, and return the checkpoint with the highest surrogate fooling rate on that set (ties: the higher
        objective on it; the first of equals). ``"last"``: the final ``delta``, even right after a halving.
    val_size:
        Proxy validation samples (``prior="none"``: the one zero image); one forward pass, clean features kept.
    validate_every:
        Steps between proxy validations (``None``: ``max(1, steps // 10)``, resolved when :meth:`fit` runs).
    """

    def __init__(
        self,
        surrogate: nn.Module,
        *,
        xi: float = 10 / 255,
        objective: str = "divergence",
        layers: str | Sequence[str] | None = None,
        prior: str = "range",
        steps: int = 100,
        batch_size: int = 8,
        lr: float | None = None,
        rescale: bool = True,
        halve_every: int | None = None,
        prior_mean: Sequence[float] | None = None,
        prior_std: Sequence[float] | None = None,
        ci_pool: int = 32,
        ci_steps: int = 50,
        select: str = "best",
        val_size: int = 32,
        validate_every: int | None = None,
        seed: int = 0,
        quiet: bool = True,
    ):
        self.surrogate = _check_model(surrogate, "surrogate")
        self.xi = check_float(xi, "xi", minimum=0.0, min_inclusive=False, maximum=1.0)
        self.objective = check_choice(objective, "objective", OBJECTIVES)
        self.prior = check_choice(prior, "prior", PRIORS)
        self.steps = check_int(steps, "steps", minimum=1)
        self.batch_size = check_int(batch_size, "batch_size", minimum=1)
        self.lr = self.xi / 10 if lr is None else check_float(lr, "lr", minimum=0.0, min_inclusive=False)
        self.rescale = bool(rescale)
        self.halve_every = None if halve_every is None else check_int(halve_every, "halve_every", minimum=1)
        self.prior_mean = None if prior_mean is None else torch.as_tensor(prior_mean, dtype=torch.float32).flatten()
        self.prior_std = None if prior_std is None else torch.as_tensor(prior_std, dtype=torch.float32).flatten()
        self.ci_pool = check_int(ci_pool, "ci_pool", minimum=1)
        self.ci_steps = check_int(ci_steps, "ci_steps", minimum=1)
        self.select = check_choice(select, "select", SELECTIONS)
        self.val_size = check_int(val_size, "val_size", minimum=1)
        self.validate_every = None if validate_every is None else check_int(validate_every, "validate_every", minimum=1)
        self.seed = check_int(seed, "seed", minimum=0)
        self.quiet = bool(quiet)
        self.layers = _resolve_layers(self.surrogate, layers, self.objective)
        if self.objective == "kl" and self.layers[-1] != LOGITS:
            raise ValueError(f"objective='kl' compares class distributions: layers must end with {LOGITS!r}")
        for name, stat in (("prior_mean", self.prior_mean), ("prior_std", self.prior_std)):
            if stat is not None and (not bool(torch.isfinite(stat).all()) or bool((stat < 0).any())):
                raise ValueError(
                    f"{name} must hold finite values >= 0 (per channel, [0, 1] units), got {stat.tolist()}"
                )

    # ----------------------------------------------------------------- prior sampling
    def _sampler(self, shape, public: torch.Tensor | None, gen: torch.Generator) -> Callable[..., torch.Tensor]:
        """``draw(g=gen, n=batch_size)``: a batch of the prior (``g``: the proxy validation set's own stream)."""
        c = shape[0]
        n_default = self.batch_size
        if self.prior == "none":
            zero = preprocess_zero(self.surrogate, c).view(1, c, 1, 1).expand(1, *shape).clone()
            return lambda g=gen, n=n_default: zero
        if self.prior == "public":
            assert public is not None

            def draw_public(g: torch.Generator = gen, n: int = n_default) -> torch.Tensor:
                idx = torch.randint(0, public.shape[0], (n,), generator=g)
                x = public[idx]
                return _flip(x, g) if c == 3 else x

            return draw_public
        mean, std = _range_stats(self.surrogate, c)
        for name, stat in (("prior_mean", self.prior_mean), ("prior_std", self.prior_std)):
            if stat is not None and stat.numel() not in (1, c):
                raise ValueError(f"{name} must hold 1 or {c} (channels) values, got {stat.numel()}")
        if self.prior_mean is not None:
            mean = self.prior_mean.expand(c).clone()
        if self.prior_std is not None:
            std = self.prior_std.expand(c).clone()
        if self.prior == "range":
            return lambda g=gen, n=n_default: _range_batch(n, shape, mean, std, g)
        if self.prior == "jigsaw":
            return lambda g=gen, n=n_default: _jigsaw_batch(n, shape, g)
        pool = self._class_impressions(shape, mean, std, gen)

        def draw_ci(g: torch.Generator = gen, n: int = n_default) -> torch.Tensor:
            x = pool[torch.randint(0, pool.shape[0], (n,), generator=g)]
            return _flip(x, g) if c == 3 else x

        return draw_ci

    def _class_impressions(self, shape, mean, std, gen: torch.Generator) -> torch.Tensor:
        """Mopuri et al. (ECCV 2018) [R]: ascend a random class logit of the surrogate from range noise."""
        with torch.no_grad():
            n_classes = self.surrogate(_range_batch(1, shape, mean, std, gen)).shape[1]
        out = []
        for start in range(0, self.ci_pool, self.batch_size):
            m = min(self.batch_size, self.ci_pool - start)
            cls = torch.randint(0, n_classes, (m,), generator=gen)
            x = _range_batch(m, shape, mean, std, gen).requires_grad_(True)
            opt = torch.optim.Adam([x], lr=0.05)
            for _ in range(self.ci_steps):
                shift = torch.randint(-2, 3, (2,), generator=gen).tolist()
                xj = torch.roll(x, shifts=shift, dims=(-2, -1))
                loss = -self.surrogate(xj).gather(1, cls.view(-1, 1)).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    x.clamp_(0.0, 1.0)
            out.append(x.detach())
        return torch.cat(out)

    # ----------------------------------------------------------------- fit
    def fit(
        self,
        input_shape: Sequence[int] | None = None,
        *,
        prior_data: torch.Tensor | None = None,
    ) -> UAPResult:
        """Craft the perturbation. Takes no target data: only the shape, or public images for ``prior="public"``.

        Parameters
        ----------
        input_shape:
            ``(C, H, W)`` of the surrogate's input; optional with ``prior_data`` (then they must agree).
        prior_data:
            Public images in [0, 1], ``(N, C, H, W)``, only for ``prior="public"`` (never the evaluation images).
        """
        if prior_data is not None and self.prior != "public":
            raise ValueError(f"prior_data is only read with prior='public'; this attack uses prior={self.prior!r}")
        if self.prior == "public":
            if prior_data is None:
                raise ValueError("prior='public' needs prior_data= (public images, never the target's data)")
            prior_data = check_image_batch(prior_data, "prior_data").detach()
        if input_shape is None:
            if prior_data is None:
                raise ValueError("input_shape is required (C, H, W) unless prior_data is given")
            input_shape = tuple(prior_data.shape[1:])
        if isinstance(input_shape, torch.Size | tuple | list):
            shape = tuple(check_int(s, "input_shape", minimum=1) for s in input_shape)
        else:
            raise TypeError(f"input_shape must be a (C, H, W) tuple, got {type(input_shape).__name__}")
        if len(shape) != 3:
            raise ValueError(f"input_shape must be (C, H, W), got {shape}")
        if prior_data is not None and tuple(prior_data.shape[1:]) != shape:
            raise ValueError(
                f"prior_data has per-sample shape {tuple(prior_data.shape[1:])}, the model input is {shape}"
            )
        gen = torch.Generator().manual_seed(self.seed)
        start = time.perf_counter()
        with _Frozen(self.surrogate):
            # the sampler first: building class impressions runs the surrogate, which must not fill the tap's buffer
            draw = self._sampler(shape, prior_data, gen)
        with _Frozen(self.surrogate), _Tap(self.surrogate, self.layers) as tap:
            probe = draw()
            try:
                with torch.no_grad():
                    tap(probe[:1])
            except (RuntimeError, ValueError) as exc:
                raise ValueError(
                    f"input_shape {tuple(probe.shape[1:])} (the prior's per-sample shape) does not fit the "
                    f"surrogate's input: {exc}"
                ) from exc
            delta = ((torch.rand((1, *shape), generator=gen) * 2 - 1) * _bound(self.xi)).requires_grad_(True)
            opt = torch.optim.Adam([delta], lr=self.lr)
            validate = self._validator(tap, draw) if self.select == "best" else None
            every = max(1, self.steps // 10) if self.validate_every is None else self.validate_every
            best: tuple[tuple[float, float], torch.Tensor, int] | None = None
            history: list[dict[str, Any]] = []
            sat_prev = 0.0
            for step in progress(range(self.steps), desc=f"UAP {self.objective}/{self.prior}", quiet=self.quiet):
                x = probe if step == 0 else draw()
                value = _objective_value(tap, self.objective, x, delta)
                if not bool(torch.isfinite(value)):
                    raise ValueError(
                        f"the {self.objective} objective is {float(value.detach())} at step {step}: a tapped layer "
                        f"is all zero for these inputs (log 0); choose other layers than {self.layers}"
                    )
                opt.zero_grad(set_to_none=True)
                (-value).backward()
                opt.step()
                record: dict[str, Any] = {"step": step, "loss": float(-value.detach())}
                with torch.no_grad():
                    _clamp_(delta, self.xi)
                    sat = _saturation(delta, self.xi)
                    saturated = self.rescale and sat > 0.5 and abs(sat - sat_prev) < 1e-5
                    halving = self.halve_every is not None and (step + 1) % self.halve_every == 0
                    if validate is not None and (
                        saturated or halving or (step + 1) % every == 0 or step == self.steps - 1
                    ):
                        key = validate(delta)
                        record.update(val_fooling=key[0], val_objective=key[1])
                        if best is None or key > best[0]:
                            best = (key, delta.detach().clone(), step)
                    if saturated:
                        delta.mul_(0.5)
                    if halving:
                        delta.mul_(0.5)
                sat_prev = sat
                record.update(saturation=sat, rescaled=saturated or halving, linf=float(delta.detach().abs().max()))
                history.append(record)
        chosen, chosen_step = (delta.detach().clone(), self.steps - 1) if best is None else (best[1], best[2])
        return UAPResult(
            delta=chosen,
            xi=self.xi,
            method=f"data-free {self.objective} ({self.prior} prior)",
            history=history,
            seconds=time.perf_counter() - start,
            config={
                "objective": self.objective, "prior": self.prior, "layers": list(self.layers), "steps": self.steps,
                "batch_size": self.batch_size, "lr": self.lr, "rescale": self.rescale,
                "halve_every": self.halve_every, "seed": self.seed, "input_shape": shape, "select": self.select,
                "val_size": None if validate is None else (1 if self.prior == "none" else self.val_size),
                "validate_every": None if validate is None else every, "chosen_step": chosen_step,
            },
        )  # fmt: skip

    def _validator(self, tap: _Tap, draw: Callable[..., torch.Tensor]) -> Callable[[torch.Tensor], tuple[float, float]]:
        """Proxy validation: ``delta -> (surrogate fooling rate, objective)`` on a fixed set of prior samples.

        The set comes from its own generator (``seed`` + a constant), so validating never changes the training
        draws: ``select="best"`` and ``select="last"`` follow the same trajectory.
        """
        val_gen = torch.Generator().manual_seed(self.seed + _VAL_STREAM)
        if self.prior == "none":
            val_x = draw(val_gen)
        else:
            chunks, left = [], self.val_size
            while left > 0:  # one batch at a time: the range and jigsaw priors draw one blur per batch
                chunks.append(draw(val_gen, min(self.batch_size, left)))
                left -= chunks[-1].shape[0]
            val_x = torch.cat(chunks)[: self.val_size]
        with torch.no_grad():
            clean_feats, clean_logits = tap.run(val_x)
        clean_label = clean_logits.argmax(1)
        keep_clean = clean_feats if self.objective in _NEEDS_CLEAN else None

        def validate(delta: torch.Tensor) -> tuple[float, float]:
            with torch.no_grad():
                feats, logits = tap.run((val_x + delta).clamp(0.0, 1.0))
                fooled = float((logits.argmax(1) != clean_label).float().mean())
                objective = float(_objective_from(self.objective, feats, keep_clean))
                return fooled, objective if math.isfinite(objective) else -math.inf  # NaN never wins, nor blocks

        return validate


# --------------------------------------------------------------------------- presets
def fff(
    surrogate: nn.Module,
    *,
    xi: float = 10 / 255,
    layers: str | Sequence[str] | None = None,
    steps: int = 100,
    lr: float | None = None,
    halve_every: int = 300,
    select: str = "best",
    seed: int = 0,
    quiet: bool = True,
) -> DataFreeUAP:
    """Fast Feature Fool (Mopuri et al., BMVC 2017): delta alone, ``-sum_l log mean|phi_l(delta)|``, halve every 300.

    ``select`` as in :class:`DataFreeUAP` (the proxy is the one zero image).
    """
    return DataFreeUAP(
        surrogate, xi=xi, objective="activation", layers=layers, prior="none", steps=steps, batch_size=1, lr=lr,
        rescale=False, halve_every=halve_every, select=select, seed=seed, quiet=quiet,
    )  # fmt: skip


def gd_uap(
    surrogate: nn.Module,
    *,
    prior: str = "range",
    xi: float = 10 / 255,
    layers: str | Sequence[str] | None = None,
    steps: int = 100,
    batch_size: int = 8,
    lr: float | None = None,
    rescale: bool = True,
    select: str = "best",
    seed: int = 0,
    quiet: bool = True,
) -> DataFreeUAP:
    """GD-UAP (Mopuri et al., TPAMI 2018): ``-sum_l log(||phi_l(x + delta)||^2 / 2)``; prior none / range / public.

    ``select`` as in :class:`DataFreeUAP` (validation on the prior's samples, never real images).
    """
    check_choice(prior, "prior", ("none", "range", "public", "jigsaw", "class_impression"))
    return DataFreeUAP(
        surrogate, xi=xi, objective="energy", layers=layers, prior=prior, steps=steps,
        batch_size=1 if prior == "none" else batch_size, lr=lr, rescale=rescale, select=select, seed=seed, quiet=quiet,
    )  # fmt: skip


# --------------------------------------------------------------------------- baselines
def _check_images(images: Any, name: str = "images") -> torch.Tensor:
    return check_image_batch(images, name).detach()


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    return torch.cat([model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def sgd_uap(
    model: nn.Module,
    images: torch.Tensor,
    xi: float,
    *,
    steps: int = 100,
    batch_size: int = 8,
    lr: float | None = None,
    seed: int = 0,
    quiet: bool = True,
) -> UAPResult:
    """SGD-UAP [R]: Adam ascent of the cross-entropy against clean labels on ``images``, clipped every step."""
    model = _check_model(model, "model")
    images = _check_images(images)
    xi = check_float(xi, "xi", minimum=0.0, min_inclusive=False, maximum=1.0)
    steps = check_int(steps, "steps", minimum=1)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    lr = xi / 10 if lr is None else check_float(lr, "lr", minimum=0.0, min_inclusive=False)
    seed = check_int(seed, "seed", minimum=0)
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    history = []
    with _Frozen(model):
        labels = _predict(model, images)
        delta = ((torch.rand((1, *images.shape[1:]), generator=gen) * 2 - 1) * _bound(xi)).requires_grad_(True)
        opt = torch.optim.Adam([delta], lr=lr)
        for step in progress(range(steps), desc="SGD-UAP", quiet=quiet):
            idx = torch.randint(0, len(images), (batch_size,), generator=gen)
            loss = F.cross_entropy(model((images[idx] + delta).clamp(0.0, 1.0)), labels[idx])
            opt.zero_grad(set_to_none=True)
            (-loss).backward()
            opt.step()
            with torch.no_grad():
                _clamp_(delta, xi)
            history.append({"step": step, "loss": float(loss.detach()), "linf": float(delta.detach().abs().max())})
    return UAPResult(
        delta.detach().clone(), xi, "SGD-UAP (cross-entropy)", history, time.perf_counter() - start,
        {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "n_images": len(images)},
    )  # fmt: skip


def deepfool(
    model: nn.Module,
    x: torch.Tensor,
    *,
    nb_grads: int = 10,
    overshoot: float = 0.02,
    max_iter: int = 10,
    clip: tuple[float, float] | None = (0.0, 1.0),
) -> tuple[torch.Tensor, int]:
    """DeepFool on one image ``x`` (1, C, H, W): returns ``(x_adv, iterations)``; ART's update, one image.

    Per iteration, over the top-``nb_grads`` classes of the clean prediction ``k0``: ``l = argmin_k
    |f_k - f_k0| / ||w_k - w_k0||``, ``r = |f_l - f_k0| / ||w_l - w_k0||^2 (w_l - w_k0)`` (tolerance 1e-7 in
    both norms, as ART), ``x <- clip(x + r)``; stop when the label changes; finally ``x_adv = clip(x0 + (1 +
    overshoot)(x - x0))`` (ART's overshoot). For a linear classifier the first step lands on the boundary.
    """
    x0 = x.detach()
    with torch.no_grad():
        f0 = model(x0)[0]
    k = min(nb_grads, f0.numel())
    classes = torch.argsort(-f0)[:k]  # classes[0] = the clean label
    k0 = int(classes[0])
    xi = x0.clone()
    tol = 1e-7
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007
        xr = xi.expand(k, *xi.shape[1:]).clone().requires_grad_(True)
        out = model(xr)
        sel = out[torch.arange(k), classes]
        (grads,) = torch.autograd.grad(sel.sum(), xr)
        f = out[0].detach()[classes]
        w = grads - grads[0:1]
        fd = f - f[0]
        norms = w.flatten(1).norm(dim=1) + tol
        value = fd.abs() / norms
        value[0] = math.inf
        l_idx = int(torch.argmin(value))
        r = fd[l_idx].abs() / (w[l_idx].flatten().norm() ** 2 + tol) * w[l_idx : l_idx + 1]
        xi = xi + r
        if clip is not None:
            xi = xi.clamp(*clip)
        with torch.no_grad():
            if int(model(xi).argmax(1)) != k0:
                break
    x_adv = x0 + (1 + overshoot) * (xi - x0)
    if clip is not None:
        x_adv = x_adv.clamp(*clip)
    return x_adv.detach(), it


def deepfool_uap(
    model: nn.Module,
    images: torch.Tensor,
    xi: float,
    *,
    delta: float = 0.2,
    max_passes: int = 5,
    nb_grads: int = 10,
    overshoot: float = 0.02,
    df_max_iter: int = 10,
    seed: int = 0,
    quiet: bool = True,
) -> UAPResult:
    """Universal perturbation of Moosavi-Dezfooli et al. (CVPR 2017) with a DeepFool inner step, ART's loop.

    Stops when the fooling rate on ``images`` reaches ``1 - delta`` or after ``max_passes`` passes; linf
    projection onto ``xi`` after every update. ``history`` has one row per pass (fooling rate, updates).
    """
    model = _check_model(model, "model")
    images = _check_images(images)
    xi = check_float(xi, "xi", minimum=0.0, min_inclusive=False, maximum=1.0)
    delta = check_float(delta, "delta", minimum=0.0, maximum=1.0)
    max_passes = check_int(max_passes, "max_passes", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    history = []
    with _Frozen(model):
        labels = _predict(model, images)
        v = torch.zeros((1, *images.shape[1:]))
        rate = 0.0
        for p in progress(range(max_passes), desc="DeepFool-UAP", quiet=quiet, unit="pass"):
            if rate >= 1.0 - delta:
                break
            updates = 0
            for j in torch.randperm(len(images), generator=gen).tolist():
                x = images[j : j + 1]
                xv = (x + v).clamp(0.0, 1.0)
                with torch.no_grad():
                    current = int(model(xv).argmax(1))
                if current != int(labels[j]):
                    continue
                x_adv, _ = deepfool(model, xv, nb_grads=nb_grads, overshoot=overshoot, max_iter=df_max_iter)
                with torch.no_grad():
                    if int(model(x_adv).argmax(1)) != current:
                        v = x_adv - x
                        _clamp_(v, xi)
                        updates += 1
            with torch.no_grad():
                rate = float((_predict(model, (images + v).clamp(0.0, 1.0)) != labels).float().mean())
            history.append({"pass": p, "fooling_rate": rate, "updates": updates, "linf": float(v.abs().max())})
    return UAPResult(
        v, xi, "DeepFool-UAP", history, time.perf_counter() - start,
        {"delta": delta, "max_passes": max_passes, "nb_grads": nb_grads, "overshoot": overshoot,
         "df_max_iter": df_max_iter, "seed": seed, "n_images": len(images)},
    )  # fmt: skip


# --------------------------------------------------------------------------- evaluation
def sign_noise(shape: Sequence[int], xi: float, seed: int = 0) -> torch.Tensor:
    """Same-norm random baseline: ``xi * sign`` with independent fair signs, shape ``(1, C, H, W)`` for (C, H, W).

    >>> d = sign_noise((1, 4, 4), 0.1, seed=0)
    >>> d.shape, float(d.abs().max())
    (torch.Size([1, 1, 4, 4]), 0.09999999403953552)
    """
    xi = check_float(xi, "xi", minimum=0.0, min_inclusive=False, maximum=1.0)
    shape = tuple(check_int(s, "shape", minimum=1) for s in shape)
    if len(shape) == 3:
        shape = (1, *shape)
    gen = torch.Generator().manual_seed(check_int(seed, "seed", minimum=0))
    return (torch.randint(0, 2, shape, generator=gen).float() * 2 - 1) * _bound(xi)


def _check_delta(delta: Any, images: torch.Tensor) -> torch.Tensor:
    delta = check_tensor(delta, "delta", ndim=(3, 4), floating=True)
    if delta.dim() == 3:
        delta = delta.unsqueeze(0)
    if delta.shape[0] != 1 or tuple(delta.shape[1:]) != tuple(images.shape[1:]):
        raise ValueError(f"delta must have shape (1, *{tuple(images.shape[1:])}), got {tuple(delta.shape)}")
    return delta.detach()


@torch.no_grad()
def fooling_rate(
    model: nn.Module,
    images: torch.Tensor,
    delta: torch.Tensor,
    batch_size: int = 64,
    *,
    clean_labels: torch.Tensor | None = None,
) -> float:
    """Share of ``images`` with ``argmax f(clip(x + delta)) != argmax f(x)`` (``clean_labels``: cached argmax f(x))."""
    model = _check_model(model, "model")
    images = _check_images(images)
    delta = _check_delta(delta, images)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    was = model.training
    model.eval()
    try:
        if clean_labels is None:
            clean = _predict(model, images, batch_size)
        else:
            clean = check_tensor(clean_labels, "clean_labels", ndim=1)
            if clean.shape[0] != images.shape[0]:
                raise ValueError(
                    f"clean_labels must hold one label per image ({images.shape[0]}), got {clean.shape[0]}"
                )
        adv = _predict(model, (images + delta).clamp(0.0, 1.0), batch_size)
    finally:
        model.train(was)
    return float((adv != clean).float().mean())


def transfer_matrix(
    surrogate_deltas: Mapping[str, torch.Tensor],
    targets: Mapping[str, nn.Module],
    images: torch.Tensor,
    *,
    batch_size: int = 64,
) -> list[dict[str, Any]]:
    """Fooling rate of every perturbation on every target: one row per perturbation, one column per target."""
    images = _check_images(images)
    if not surrogate_deltas or not targets:
        raise ValueError("surrogate_deltas and targets must not be empty")
    clean = {}
    for name, model in targets.items():
        _check_model(model, f"targets[{name!r}]")
        was = model.training
        model.eval()
        clean[name] = _predict(model, images, batch_size)
        model.train(was)
    rows = []
    for sname, delta in surrogate_deltas.items():
        row: dict[str, Any] = {"perturbation": sname}
        for tname, model in targets.items():
            row[tname] = fooling_rate(model, images, delta, batch_size, clean_labels=clean[tname])
        rows.append(row)
    return rows
