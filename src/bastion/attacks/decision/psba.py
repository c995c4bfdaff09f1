"""NonLinear-BA and PSBA as HSJA configurations, and PSBA's scale search.

NonLinear-BA (AISTATS 2021) is the HSJA loop with probes decoded by a generator trained on reference
gradients (:class:`~.samplers.GeneratorSampler`); PSBA (ICML 2021) uses one output scale of a
progressive generator (:class:`~.samplers.ProgressiveSampler`), chosen per target model.

Scale choice: the official code takes ``--scale`` and the authors compared runs at all six scales
(spec boundary.md, "PSBA"). Ours is a reconstruction [R]: try the scales coarse to fine on
*validation* images (never the evaluation ones), each with a small budget, keep the scale with the
lowest median MSE and stop as soon as the next scale is worse. The queries spent are returned so a
report can charge them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ...core.checks import check_image_batch, check_int, check_labels
from .engine import HSJA
from .samplers import GeneratorSampler, ProgressiveSampler

__all__ = ["ScaleSearch", "nonlinear_ba", "psba", "psba_scale_search"]


def nonlinear_ba(generator, *, latent: str | None = None, **kwargs) -> HSJA:
    """NonLinear-BA: HSJA with probes ``generator.decode(z)`` (or ``generator(z)``).

    ``generator`` needs a ``latent_shape``; ``latent`` defaults to ``"unit"`` for AE / VAE decoders
    (objects with ``encode``) and ``"gaussian"`` otherwise (GANs). Other keywords go to :class:`HSJA`.
    """
    shape = getattr(generator, "latent_shape", None)
    if shape is None:
        raise TypeError("generator must have a latent_shape attribute (e.g. an AEGenerator or GANGenerator)")
    if latent is None:
        latent = "unit" if hasattr(generator, "encode") else "gaussian"
    decode = getattr(generator, "decode", generator)
    return HSJA(sampler=GeneratorSampler(decode, shape, latent=latent), **kwargs)


def psba(generator, *, scale: int, frequency_ratio: int | None = None, orient: bool = True, **kwargs) -> HSJA:
    """PSBA: HSJA with probes from ``generator.at_scale(z, scale)`` (see :class:`ProgressiveSampler`)."""
    sampler = ProgressiveSampler(generator, scale, frequency_ratio=frequency_ratio, orient=orient)
    return HSJA(sampler=sampler, **kwargs)


@dataclass
class ScaleSearch:
    """Outcome of :func:`psba_scale_search`: the chosen scale, each tried scale's median MSE, queries spent."""

    scale: int
    median_mse: dict[int, float] = field(default_factory=dict)
    queries: int = 0


def psba_scale_search(
    generator,
    model,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    *,
    budget: int = 500,
    scales=None,
    preprocess=None,
    frequency_ratio: int | None = None,
    orient: bool = True,
    **kwargs,
) -> ScaleSearch:
    """Pick PSBA's scale for ``model``: coarse to fine on validation images, stop when the next is worse.

    ``scales`` defaults to ``generator.sizes``. Each try attacks ``x_val`` (untargeted) with
    ``budget`` queries per image; other keywords (``preset``, ``seed``, ``norm``) go to :class:`HSJA`.
    """
    from ...core.blackbox import BlackBox

    if isinstance(model, BlackBox):
        raise TypeError(
            "psba_scale_search needs the model itself (nn.Module or callable), not a BlackBox: one box's "
            "per-sample query counts would carry over from scale to scale and starve the later ones"
        )
    budget = check_int(budget, "budget", minimum=1)
    x_val = check_image_batch(x_val, "x_val")
    y_val = check_labels(y_val, "y_val", n=x_val.shape[0])
    scales = tuple(sorted(scales if scales is not None else getattr(generator, "sizes", ())))
    if not scales:
        raise ValueError("scales must name at least one scale (or the generator must have .sizes)")
    out = ScaleSearch(scale=scales[0])
    best = float("inf")
    for s in scales:
        attack = psba(generator, scale=s, frequency_ratio=frequency_ratio, orient=orient, **kwargs)
        result = attack(model, x_val, y_val, budget=budget, preprocess=preprocess)
        out.queries += int(result.queries.sum())
        med = result.median_mse_at(budget)
        out.median_mse[s] = med
        if med < best:
            best, out.scale = med, s
        else:
            break
    return out
