"""Probe samplers for the HSJA engine: where the random directions of gradient estimation come from.

A sampler is any callable ``sampler(n, shape, generator) -> Tensor (n, *shape)`` returning directions
of unit L2 norm; the engine is given one (Foolbox style: the subspace is an object, not a copy of the
engine). Papers: HSJA (Chen, Jordan & Wainwright, IEEE S&P 2020) draws from the full space; QEBA
(Li et al., CVPR 2020) from a spatial (``SpatialSampler``), frequency (``DCTSampler``) or intrinsic
(``BasisSampler`` on a PCA of reference-model gradients) subspace; NonLinear-BA decodes latents with a
generator (``GeneratorSampler``), PSBA (ICML 2021) with one scale of a progressive generator
(``ProgressiveSampler``). A sampler with a true ``orient`` attribute has its probes' signs flipped by
the engine to point towards the original (PSBA's code). Shapes follow the official code (AI-secure/QEBA); see spec
boundary.md, "Probe samplers".
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ...core.checks import check_choice, check_int, check_tensor

__all__ = [
    "BasisSampler",
    "DCTSampler",
    "FullSampler",
    "GeneratorSampler",
    "ProgressiveSampler",
    "SpatialSampler",
    "dct_matrix",
]


def _unit(v: torch.Tensor) -> torch.Tensor:
    flat = v.flatten(1)
    return (flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)).view_as(v)


class FullSampler:
    """HSJA's probes: N(0, I) for L2, U[-1, 1]^d for Linf, normalised to unit L2."""

    def __init__(self, *, norm: str = "l2") -> None:
        self.norm = check_choice(norm, "norm", ("l2", "linf"))

    def __call__(self, n: int, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        if self.norm == "l2":
            v = torch.randn((n, *shape), generator=generator)
        else:
            v = torch.rand((n, *shape), generator=generator) * 2 - 1
        return _unit(v)

    def __repr__(self) -> str:
        return f"FullSampler(norm={self.norm!r})"


class SpatialSampler:
    """QEBA-S: N(0, 1) at (C, H/r, W/r), bilinearly upsampled to (C, H, W)."""

    def __init__(self, *, ratio: int = 2) -> None:
        self.ratio = check_int(ratio, "ratio", minimum=1)

    def __call__(self, n: int, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        c, h, w = shape
        low = torch.randn((n, c, max(1, h // self.ratio), max(1, w // self.ratio)), generator=generator)
        return _unit(F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False))

    def __repr__(self) -> str:
        return f"SpatialSampler(ratio={self.ratio})"


def dct_matrix(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Orthonormal DCT-II matrix ``D`` (``D @ x`` transforms, ``D.T @ X`` inverts).

    >>> d = dct_matrix(8)
    >>> bool(torch.allclose(d @ d.T, torch.eye(8, dtype=d.dtype), atol=1e-12))
    True
    """
    n = check_int(n, "n", minimum=1)
    k = torch.arange(n, dtype=dtype)[:, None]
    i = torch.arange(n, dtype=dtype)[None, :]
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d


class DCTSampler:
    """QEBA-F: per channel, Gaussian coefficients in the low (H/r x W/r) block of the 2-D DCT-II, inverted."""

    def __init__(self, *, ratio: int = 2) -> None:
        self.ratio = check_int(ratio, "ratio", minimum=1)
        self._cache: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def _bases(self, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        if (h, w) not in self._cache:
            bh, bw = max(1, h // self.ratio), max(1, w // self.ratio)
            self._cache[(h, w)] = (dct_matrix(h)[:bh].float(), dct_matrix(w)[:bw].float())
        return self._cache[(h, w)]

    def __call__(self, n: int, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        c, h, w = shape
        dh, dw = self._bases(h, w)  # (bh, h), (bw, w): the low-frequency rows
        coef = torch.randn((n, c, dh.shape[0], dw.shape[0]), generator=generator)
        return _unit(dh.T @ coef @ dw)  # inverse 2-D DCT of a block-limited spectrum

    def __repr__(self) -> str:
        return f"DCTSampler(ratio={self.ratio})"


class BasisSampler:
    """Probes from a user's or a learned basis ``(k, d)`` (QEBA-I uses a PCA of reference gradients).

    ``mode="basis_only"`` (the official runs): each probe is one random basis vector with a random
    sign; ``mode="gaussian"``: a Gaussian combination of all basis vectors.
    """

    def __init__(self, basis: torch.Tensor, *, mode: str = "basis_only") -> None:
        basis = check_tensor(basis, "basis", ndim=2, floating=True)
        self.basis = basis.to(torch.float32)
        self.mode = check_choice(mode, "mode", ("basis_only", "gaussian"))

    def __call__(self, n: int, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        d = math.prod(shape)
        if self.basis.shape[1] != d:
            raise ValueError(f"basis has {self.basis.shape[1]} columns but images have {d} values {tuple(shape)}")
        if self.mode == "basis_only":
            idx = torch.randint(0, self.basis.shape[0], (n,), generator=generator)
            sign = torch.randint(0, 2, (n, 1), generator=generator).float() * 2 - 1
            v = self.basis[idx] * sign
        else:
            v = torch.randn((n, self.basis.shape[0]), generator=generator) @ self.basis
        return _unit(v.view(n, *shape))

    def __repr__(self) -> str:
        return f"BasisSampler(k={self.basis.shape[0]}, d={self.basis.shape[1]}, mode={self.mode!r})"


class GeneratorSampler:
    """NonLinear-BA style: decode Gaussian latents with ``generator``; outputs resized if needed, unit norm.

    ``latent="unit"`` (AE / VAE, the official code) normalises each latent to unit L2 norm;
    ``latent="gaussian"`` (GAN) feeds N(0, I) latents as the generator was trained on.
    """

    def __init__(
        self,
        generator: Callable[[torch.Tensor], torch.Tensor],
        latent_shape: tuple[int, ...],
        *,
        latent: str = "unit",
    ) -> None:
        if not callable(generator):
            raise TypeError(f"generator must be callable, got {type(generator).__name__}")
        self.generator = generator
        self.latent_shape = tuple(check_int(s, "latent_shape entry", minimum=1) for s in latent_shape)
        self.latent = check_choice(latent, "latent", ("unit", "gaussian"))

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z)

    @torch.no_grad()
    def __call__(self, n: int, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        z = torch.randn((n, *self.latent_shape), generator=generator)
        if self.latent == "unit":
            z = _unit(z)
        out = self._decode(z)
        if tuple(out.shape[1:]) != tuple(shape):
            if out.dim() != 4 or out.shape[1] != shape[0]:
                raise ValueError(f"generator output {tuple(out.shape[1:])} cannot be resized to {tuple(shape)}")
            out = F.interpolate(out, size=shape[1:], mode="bilinear", align_corners=False)
        if not torch.isfinite(out).all():
            raise FloatingPointError(f"{self!r} produced NaN or inf probes")
        return _unit(out.float())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(latent_shape={self.latent_shape}, latent={self.latent!r})"


class ProgressiveSampler(GeneratorSampler):
    """PSBA: probes from a progressive generator's output at one ``scale``, upsampled bilinearly.

    ``generator.at_scale(z, scale)`` gives the ``scale x scale`` output (see
    :class:`~.generators.ProgressiveGenerator`; a user's object with that method plugs in).
    ``frequency_ratio=f`` keeps only the low ``(H/f x W/f)`` DCT block of each upsampled probe (PSBA's
    frequency variant). ``orient=True`` (PSBA's code, our default) asks the engine to flip each probe's
    sign so that it points towards the original: ``<u, x_t - x*> <= 0``.
    """

    def __init__(self, generator, scale: int, *, frequency_ratio: int | None = None, orient: bool = True) -> None:
        if not callable(getattr(generator, "at_scale", None)):
            raise TypeError(f"generator must have an at_scale(z, scale) method, got {type(generator).__name__}")
        super().__init__(generator.at_scale, generator.latent_shape, latent="gaussian")
        self.progressive = generator
        self.scale = check_int(scale, "scale", minimum=1)
        self.frequency_ratio = None if frequency_ratio is None else check_int(frequency_ratio, "frequency_ratio",
                                                                              minimum=1)  # fmt: skip
        self.orient = bool(orient)
        self._dct = DCTSampler(ratio=self.frequency_ratio) if self.frequency_ratio else None

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.progressive.at_scale(z, self.scale)

    @torch.no_grad()
    def __call__(self, n: int, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        out = super().__call__(n, shape, generator)
        if self._dct is None:
            return out
        dh, dw = self._dct._bases(shape[1], shape[2])
        return _unit(dh.T @ (dh @ out @ dw.T) @ dw)  # project on the low-frequency block

    def __repr__(self) -> str:
        return f"ProgressiveSampler(scale={self.scale}, frequency_ratio={self.frequency_ratio}, orient={self.orient})"
