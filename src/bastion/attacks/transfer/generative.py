"""Adversarial patches on a generative model's manifold (GenAP): the patch is ``G(w)``, optimised over ``w``.

Followed (spec ``specs/transfer.md``, section A "GenAP", a reconstruction [R] beyond the paper's abstract;
neither the paper nor AT3D releases GenAP code):

- ``p = G(w)``; the composed face is ``x* = (1 - M) x^a + M G(w)`` with the binary mask of
  :func:`faces.make_mask`; the loss is TAP's (:func:`core.cosine_loss`: ``-mean cos(f(x*), f(x^t))``, dodging
  ``+cos`` to the enrolled image), the mean over an ensemble of substitutes, reference embeddings detached.
- No pixel ``eps`` ball: the latent is clipped, ``|w_i| <= latent_bound`` (whitened units, so 2-4 is the
  plausible range), optionally also to a box of half-width ``radius`` around the start code (the spec's
  "latent ball around the victim's code").
- Update: ``"sign"`` = MI on the latent (``g <- mu g + grad / mean|grad|``, ``w <- w - lr sign(g)``) or
  ``"adam"`` (``torch.optim.Adam`` on ``w``). DI (probability ``di``) on the composed input, as in TAP.
- Start: ``"inversion"`` minimises ``||M (G(w) - x^t)||^2`` over ``w`` (Adam, ``inversion_steps``, from the
  encoder's code when one is available, else 0) -- the victim inversion of the spec; ``"encoder"`` = the
  encoder's mean code of the victim; ``"mean"`` = ``w = 0`` (the mean face for a whitened generator). For
  dodging the image inverted is the enrolled one unless ``run(init_image=...)`` names another.

Generators shipped here (spec A.2 "Generators on CPU"):

- :class:`PCAGenerator`, eigenfaces (the analogue of AT3D's 3DMM texture space): ``G(z) = clip01(mean +
  (z * s) V)`` with the top-``k`` principal directions ``V`` and their standard deviations ``s`` (whitened
  coefficients ``z``), fitted by an SVD in float64; :meth:`PCAGenerator.encode` is the exact projection.
- :class:`ConvVAE`, a small convolutional VAE for 32-px faces (:func:`fit_vae`: Adam, ELBO with a Bernoulli
  likelihood, flips and 1-px shifts as augmentation, seeded). Blurry on 60-2,400 faces, as the spec warns.

Any ``nn.Module`` with an integer ``latent_dim`` attribute that maps (N, latent_dim) codes to (N, C, H, W)
images in [0, 1] is a generator (e.g. :class:`~bastion.attacks.transfer.synthfaces.RendererGenerator`); an
``encode(images) -> (N, latent_dim)`` method makes it its own encoder.

Our choices [R]: the last iterate is returned (like TAP); ``lr`` defaults to 0.05 (Adam) / ``latent_bound /
steps * 1.5`` (sign, the analogue of TAP's ``1.5 eps / N``); ``patience`` counts steps without a lower batch
loss, off by default.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...core.checks import check_choice, check_float, check_image_batch, check_int, check_tensor
from ...core.progress import progress
from .core import EarlyStop, TransferAttack, _input_diversity, _momentum_update, check_mask
from .faces import MASK_KINDS
from .patch import PATCH_GOALS, PatchResult, check_patch_mask, reference_embeddings, resolve_mask

__all__ = [
    "GENAP_INITS",
    "GENAP_OPTIMIZERS",
    "ConvVAE",
    "GenerativePatchAttack",
    "GenerativePatchResult",
    "PCAGenerator",
    "fit_vae",
    "invert",
]

GENAP_INITS = ("inversion", "encoder", "mean")
GENAP_OPTIMIZERS = ("sign", "adam")


# --------------------------------------------------------------------------------------------- generators
class PCAGenerator(nn.Module):
    """Eigenfaces: ``G(z) = clip01(mean + (z * std) @ components)``, ``z`` whitened (z ~ N(0, I) on the data).

    Build with :meth:`fit`. ``components``: (k, D) orthonormal rows; ``std``: (k,) standard deviations of the
    training coefficients (unbiased); ``mean``: (C, H, W).

    >>> g = PCAGenerator.fit(torch.rand(20, 1, 4, 4, generator=torch.Generator().manual_seed(0)), k=5)
    >>> g.latent_dim, tuple(g(torch.zeros(2, 5)).shape)
    (5, (2, 1, 4, 4))
    """

    def __init__(self, mean: torch.Tensor, components: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        mean = check_tensor(mean, "mean", ndim=3, floating=True)
        components = check_tensor(components, "components", ndim=2, floating=True)
        std = check_tensor(std, "std", ndim=1, floating=True)
        if components.shape[1] != mean.numel():
            raise ValueError(f"components must have {mean.numel()} columns (C*H*W of mean), got {components.shape[1]}")
        if std.shape[0] != components.shape[0]:
            raise ValueError(f"std must have one entry per component ({components.shape[0]}), got {std.shape[0]}")
        if bool((std <= 0).any()):
            raise ValueError("std must be positive for every component")
        self.register_buffer("mean", mean.detach().clone())
        self.register_buffer("components", components.detach().clone())
        self.register_buffer("std", std.detach().clone())

    @property
    def latent_dim(self) -> int:
        return int(self.components.shape[0])

    @classmethod
    def fit(cls, images: torch.Tensor, k: int = 40) -> PCAGenerator:
        """Principal components of ``images`` (N, C, H, W in [0, 1]); ``k`` <= N - 1 (float64 SVD)."""
        images = check_image_batch(images, "images")
        n = images.shape[0]
        k = check_int(k, "k", minimum=1, maximum=max(1, min(n - 1, images[0].numel())))
        x = images.detach().to(torch.float64).flatten(1)
        mean = x.mean(0)
        _, s, vh = torch.linalg.svd(x - mean, full_matrices=False)
        std = s[:k] / math.sqrt(n - 1)
        if bool((std <= 1e-12).any()):
            raise ValueError(f"images span fewer than k={k} directions; lower k")
        dtype = images.dtype
        return cls(mean.reshape(images.shape[1:]).to(dtype), vh[:k].to(dtype), std.to(dtype))

    def _check_z(self, z: Any) -> torch.Tensor:
        z = check_tensor(z, "z", ndim=2, floating=True)
        if z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (N, {self.latent_dim}), got {tuple(z.shape)}")
        return z

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = self._check_z(z)
        flat = self.mean.flatten() + (z * self.std) @ self.components
        return flat.clamp(0.0, 1.0).view(z.shape[0], *self.mean.shape)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """The whitened coefficients of ``images`` (exact projection onto the components)."""
        images = check_image_batch(images, "images", shape=tuple(self.mean.shape))
        images = images.to(self.mean)
        return ((images.flatten(1) - self.mean.flatten()) @ self.components.T) / self.std


class ConvVAE(nn.Module):
    """A small convolutional VAE for ``size`` x ``size`` images (``size`` divisible by 8), Bernoulli decoder.

    ``forward(z)`` decodes to [0, 1] images (the generator interface); :meth:`encode` returns the posterior
    mean; :meth:`elbo_loss` is the training loss. Train with :func:`fit_vae`.
    """

    def __init__(self, channels: int = 3, size: int = 32, latent_dim: int = 32, width: int = 32) -> None:
        super().__init__()
        self.channels = check_int(channels, "channels", minimum=1)
        self.size = check_int(size, "size", minimum=8)
        if self.size % 8:
            raise ValueError(f"size must be divisible by 8, got {size}")
        self.latent_dim = check_int(latent_dim, "latent_dim", minimum=1)
        w = check_int(width, "width", minimum=1)
        s = self.size // 8
        self._s, self._w = s, w
        self.enc = nn.Sequential(
            nn.Conv2d(self.channels, w, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(w, 2 * w, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Flatten(),
        )  # fmt: skip
        self.mu = nn.Linear(4 * w * s * s, self.latent_dim)
        self.logvar = nn.Linear(4 * w * s * s, self.latent_dim)
        self.dec_in = nn.Linear(self.latent_dim, 4 * w * s * s)
        self.dec = nn.Sequential(
            nn.ReLU(),
            nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(w, self.channels, 4, 2, 1),
        )  # fmt: skip

    def posterior(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)`` of q(z | images)."""
        h = self.enc(images)
        return self.mu(h), self.logvar(h).clamp(-12.0, 8.0)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """The posterior mean code of ``images`` (N, C, size, size in [0, 1])."""
        images = check_image_batch(images, "images", shape=(self.channels, self.size, self.size))
        return self.posterior(images.to(self.mu.weight))[0]

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.dec(self.dec_in(z).view(z.shape[0], 4 * self._w, self._s, self._s))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = check_tensor(z, "z", ndim=2, floating=True)
        if z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (N, {self.latent_dim}), got {tuple(z.shape)}")
        return torch.sigmoid(self.decode_logits(z))

    def elbo_loss(self, images: torch.Tensor, generator: torch.Generator | None = None, beta: float = 1.0):
        """Negative ELBO per image (sum over pixels of the Bernoulli NLL + ``beta`` KL), batch mean."""
        mu, logvar = self.posterior(images)
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype)
        z = mu + torch.exp(0.5 * logvar) * eps
        rec = F.binary_cross_entropy_with_logits(self.decode_logits(z), images, reduction="none").flatten(1).sum(1)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)
        return (rec + beta * kl).mean()


def fit_vae(
    images: torch.Tensor,
    *,
    latent_dim: int = 32,
    width: int = 32,
    epochs: int = 200,
    batch_size: int = 32,
    lr: float = 2e-3,
    beta: float = 1.0,
    augment: bool = True,
    seed: int = 0,
    quiet: bool = True,
) -> ConvVAE:
    """Train a :class:`ConvVAE` on ``images`` (N, C, H, W in [0, 1], H = W divisible by 8); returns it in eval mode.

    ``augment``: random horizontal flips and 1-pixel shifts (replicate padding) per batch. Seeded: the same
    seed gives the same weights on CPU.
    """
    images = check_image_batch(images, "images")
    n, c, h, w = images.shape
    if h != w:
        raise ValueError(f"images must be square, got {h}x{w}")
    if n < 2:
        raise ValueError(f"images must hold at least 2 images, got {n}")
    epochs = check_int(epochs, "epochs", minimum=1)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    lr = check_float(lr, "lr", minimum=0.0, min_inclusive=False)
    beta = check_float(beta, "beta", minimum=0.0)
    seed = check_int(seed, "seed", minimum=0)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = ConvVAE(c, h, latent_dim, width)
    opt = torch.optim.Adam(vae.parameters(), lr=lr)
    data = images.detach().float()
    vae.train()
    for _ in progress(range(epochs), desc="VAE", quiet=quiet, unit="epoch"):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            xb = data[perm[i : i + batch_size]]
            if augment:
                flip = torch.rand(xb.shape[0], generator=gen) < 0.5
                xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(-1), xb)
                dx, dy = (int(v) for v in torch.randint(-1, 2, (2,), generator=gen))
                xb = F.pad(xb, (1, 1, 1, 1), mode="replicate")[:, :, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
            loss = vae.elbo_loss(xb, gen, beta)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return vae.eval()


# --------------------------------------------------------------------------------------------- inversion
def _positive(value: Any, name: str) -> float:
    return check_float(value, name, minimum=0.0, min_inclusive=False)


def _check_generator(generator: Any) -> nn.Module:
    if not isinstance(generator, nn.Module):
        raise TypeError(
            f"generator must be an nn.Module mapping (N, latent_dim) codes to images, got {type(generator)}"
        )
    dim = getattr(generator, "latent_dim", None)
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise TypeError(f"generator must have a positive int attribute latent_dim, got {dim!r}")
    return generator


def _code_options(generator: nn.Module, like: torch.Tensor) -> dict[str, Any]:
    """dtype and device of the generator's codes: those of its first floating tensor, else the images'."""
    for t in (*generator.parameters(), *generator.buffers()):
        if t.is_floating_point():
            return {"dtype": t.dtype, "device": t.device}
    return {"dtype": like.dtype, "device": like.device}


def _generate(generator: nn.Module, w: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``G(w)`` checked against the faces' (C, H, W) and cast to their dtype and device."""
    out = generator(w)
    if not isinstance(out, torch.Tensor) or out.dim() != 4 or tuple(out.shape[1:]) != tuple(like.shape[1:]):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"generator output must be (N, C, H, W) = (N, {', '.join(map(str, like.shape[1:]))}) like the faces, "
            f"got {shape}"
        )
    return out.to(dtype=like.dtype, device=like.device)


def _check_range(images: torch.Tensor) -> None:
    if not bool(torch.isfinite(images).all()) or bool((images < 0).any() | (images > 1).any()):
        raise ValueError("generator output must lie in [0, 1]; squash or clip it inside the generator")


def invert(
    generator: nn.Module,
    images: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    steps: int = 200,
    lr: float = 0.05,
    start: torch.Tensor | None = None,
    latent_bound: float | None = 3.0,
) -> torch.Tensor:
    """Codes ``w`` (N, latent_dim) minimising ``||M (G(w) - images)||^2`` (Adam from ``start``, default 0).

    ``mask`` (bool, broadcastable to ``images``) restricts the fit to the patch region; ``latent_bound``
    clips the codes after every step.
    """
    generator = _check_generator(generator)
    images = check_image_batch(images, "images")
    steps = check_int(steps, "steps", minimum=1)
    lr = check_float(lr, "lr", minimum=0.0, min_inclusive=False)
    bound = (
        None if latent_bound is None else check_float(latent_bound, "latent_bound", minimum=0.0, min_inclusive=False)
    )
    n = images.shape[0]
    opts = _code_options(generator, images)
    if start is None:
        w = torch.zeros(n, generator.latent_dim, **opts)
    else:
        w = check_tensor(start, "start", ndim=2, floating=True).detach().clone().to(**opts)
        if w.shape != (n, generator.latent_dim):
            raise ValueError(f"start must have shape ({n}, {generator.latent_dim}), got {tuple(w.shape)}")
    w.requires_grad_(True)
    weight = (
        torch.ones_like(images) if mask is None else check_mask(mask, images, "mask").to(images.dtype).expand_as(images)
    )
    opt = torch.optim.Adam([w], lr=lr)
    was = generator.training
    generator.eval()
    try:
        with torch.enable_grad():
            for _ in range(steps):
                err = ((_generate(generator, w, images) - images) * weight).pow(2).flatten(1).sum(1).sum()
                opt.zero_grad(set_to_none=True)
                err.backward()
                opt.step()
                if bound is not None:
                    with torch.no_grad():
                        w.clamp_(-bound, bound)
    finally:
        generator.train(was)
    return w.detach()


# --------------------------------------------------------------------------------------------- attack
@dataclass
class GenerativePatchResult(PatchResult):
    """:class:`PatchResult` plus the codes: ``latent`` (final ``w``) and ``latent_start`` (``w0``)."""

    latent: torch.Tensor | None = None
    latent_start: torch.Tensor | None = None


class GenerativePatchAttack:
    """GenAP: a masked patch ``G(w)`` whose latent ``w`` is optimised on substitute embedders.

    Parameters
    ----------
    substitutes:
        An embedder ([0, 1] images -> (N, d)) or a sequence of them (ensemble: mean loss).
    generator:
        ``nn.Module`` with int ``latent_dim``, (N, latent_dim) -> (N, C, H, W) in [0, 1], the faces' shape.
    goal:
        ``"impersonate"`` or ``"dodge"``.
    mask_kind, mask:
        As :class:`~bastion.attacks.transfer.patch.TransferPatchAttack`.
    steps:
        Latent updates (>= 1).
    optimizer:
        ``"sign"`` (MI sign steps on ``w``) or ``"adam"``.
    lr:
        Step size; ``None``: 0.05 (Adam) or ``1.5 latent_bound / steps`` (sign).
    mu:
        Momentum decay of ``"sign"``.
    latent_bound:
        ``|w_i| <= latent_bound`` after every step (``None``: unbounded).
    radius:
        Also keep ``|w_i - w0_i| <= radius`` (a box around the start code; ``None``: off).
    init:
        ``"inversion"``, ``"encoder"`` or ``"mean"`` (see the module docstring).
    encoder:
        Callable images -> (N, latent_dim) codes; default the generator's ``encode`` method if it has one.
    inversion_steps, inversion_lr:
        Adam steps and rate of the victim inversion.
    di:
        DI probability on the composed input (0 = off).
    patience:
        Stop after this many steps without a lower batch loss (``None``: never).
    seed:
        Seeds DI.
    """

    def __init__(
        self,
        substitutes: Callable[..., Any] | Sequence[Callable[..., Any]],
        generator: nn.Module,
        *,
        goal: str = "impersonate",
        mask_kind: str | None = None,
        mask: torch.Tensor | None = None,
        steps: int = 200,
        optimizer: str = "adam",
        lr: float | None = None,
        mu: float = 1.0,
        latent_bound: float | None = 3.0,
        radius: float | None = None,
        init: str = "inversion",
        encoder: Callable[[torch.Tensor], torch.Tensor] | None = None,
        inversion_steps: int = 200,
        inversion_lr: float = 0.05,
        di: float = 0.0,
        patience: int | None = None,
        seed: int = 0,
    ) -> None:
        self.goal = check_choice(goal, "goal", PATCH_GOALS)
        self.generator = _check_generator(generator)
        if mask_kind is not None and mask is not None:
            raise ValueError("give mask or mask_kind, not both")
        self.mask_kind = None if mask_kind is None else check_choice(mask_kind, "mask_kind", MASK_KINDS)
        self.mask = check_patch_mask(mask)
        self.steps = check_int(steps, "steps", minimum=1)
        self.optimizer = check_choice(optimizer, "optimizer", GENAP_OPTIMIZERS)
        self.latent_bound = (
            None
            if latent_bound is None
            else check_float(latent_bound, "latent_bound", minimum=0.0, min_inclusive=False)
        )
        self.radius = None if radius is None else check_float(radius, "radius", minimum=0.0)
        if lr is None:
            lr = 0.05 if self.optimizer == "adam" else 1.5 * (self.latent_bound or 3.0) / self.steps
        self.lr = check_float(lr, "lr", minimum=0.0, min_inclusive=False)
        self.mu = check_float(mu, "mu", minimum=0.0)
        self.init = check_choice(init, "init", GENAP_INITS)
        if encoder is None:
            encoder = getattr(generator, "encode", None)
        elif not callable(encoder):
            raise TypeError(f"encoder must be callable, got {type(encoder).__name__}")
        self.encoder = encoder
        if self.init == "encoder" and self.encoder is None:
            raise ValueError("init='encoder' needs an encoder: pass encoder= or a generator with an encode() method")
        self.inversion_steps = check_int(inversion_steps, "inversion_steps", minimum=1)
        self.inversion_lr = check_float(inversion_lr, "inversion_lr", minimum=0.0, min_inclusive=False)
        self.di = check_float(di, "di", minimum=0.0, maximum=1.0)
        self.patience = None if patience is None else check_int(patience, "patience", minimum=1)
        self.seed = check_int(seed, "seed", minimum=0)
        # the ensemble-loss mechanics (substitute checks, mean loss) are the gradient-transfer core's
        self.core = TransferAttack(substitutes, "dodge" if self.goal == "dodge" else "impersonate", steps=1, eps=0.0)

    @property
    def substitutes(self) -> tuple[Callable[..., Any], ...]:
        return self.core.substitutes

    def __repr__(self) -> str:
        region = self.mask_kind if self.mask_kind is not None else ("mask" if self.mask is not None else None)
        return (
            f"{type(self).__name__}(substitutes={len(self.substitutes)}, generator={type(self.generator).__name__}"
            f"(latent_dim={self.generator.latent_dim}), goal={self.goal!r}, region={region!r}, steps={self.steps}, "
            f"optimizer={self.optimizer!r}, lr={self.lr:g}, latent_bound={self.latent_bound}, radius={self.radius}, "
            f"init={self.init!r}, di={self.di:g}, patience={self.patience}, seed={self.seed})"
        )

    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        owner = getattr(self.encoder, "__self__", self.encoder)  # a bound encode() method: its module
        was = owner.training if isinstance(owner, nn.Module) else None
        try:
            if was is not None:
                owner.eval()  # BatchNorm statistics untouched, no batch dependence
            with torch.no_grad():
                w = self.encoder(images)
        finally:
            if was is not None:
                owner.train(was)
        if not isinstance(w, torch.Tensor) or w.shape != (images.shape[0], self.generator.latent_dim):
            shape = tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__
            raise ValueError(f"encoder output must be (N, {self.generator.latent_dim}), got {shape}")
        return check_tensor(w, "encoder output", floating=True).detach().to(**_code_options(self.generator, images))

    def _clip(self, w: torch.Tensor, w0: torch.Tensor) -> torch.Tensor:
        if self.radius is not None:
            w = torch.maximum(torch.minimum(w, w0 + self.radius), w0 - self.radius)
        if self.latent_bound is not None:
            w = w.clamp(-self.latent_bound, self.latent_bound)
        return w

    def start_codes(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``w0`` for ``image`` (the victim, or what ``init_image`` names) under ``mask``."""
        n = image.shape[0]
        if self.init == "mean":
            return torch.zeros(n, self.generator.latent_dim, **_code_options(self.generator, image))
        w0 = self._encode(image) if self.encoder is not None else None
        if self.init == "encoder":
            assert w0 is not None
        else:
            w0 = invert(
                self.generator,
                image,
                mask,
                steps=self.inversion_steps,
                lr=self.inversion_lr,
                start=None if w0 is None else self._clip(w0, w0),
                latent_bound=self.latent_bound,
            )
        return self._clip(w0, w0)

    def run(
        self,
        attacker: torch.Tensor,
        victim: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        landmarks: torch.Tensor | None = None,
        init_image: torch.Tensor | None = None,
        record: bool = False,
        callback: Callable[[int, torch.Tensor, float], Any] | None = None,
    ) -> GenerativePatchResult:
        """Attack ``attacker`` towards ``victim`` (impersonate) / away from the enrolled ``victim`` (dodge).

        Shapes, ``mask`` and ``landmarks`` as :meth:`TransferPatchAttack.run`. ``init_image`` (same shape):
        the image inverted / encoded for the start code (default ``victim``). ``record`` keeps every
        composed iterate; ``callback(step, adversarial, loss)`` runs after every update.
        """
        attacker = check_image_batch(attacker, "attacker")
        victim = check_image_batch(victim, "victim")
        if victim.shape != attacker.shape:
            raise ValueError(
                f"victim must have attacker's shape {tuple(attacker.shape)} (one victim per attacker), "
                f"got {tuple(victim.shape)}"
            )
        if init_image is not None:
            init_image = check_image_batch(init_image, "init_image")
            if init_image.shape != attacker.shape:
                raise ValueError(f"init_image must have attacker's shape {tuple(attacker.shape)}")
        m = resolve_mask(attacker, self.mask if mask is None else mask, self.mask_kind, landmarks)
        refs = reference_embeddings(self.substitutes, victim)
        tlist = self.core._targets(refs, attacker.shape[0])
        gen = self.generator
        modules = [s for s in self.substitutes if isinstance(s, nn.Module)] + [gen]
        modes = [mod.training for mod in modules]
        for mod in modules:
            mod.eval()
        try:
            w0 = self.start_codes(victim if init_image is None else init_image, m)
            with torch.no_grad():
                start = torch.where(m, _generate(gen, w0, attacker), attacker)
            _check_range(start)
            w = w0.clone()
            g = torch.zeros_like(w)
            opt = torch.optim.Adam([w.requires_grad_(True)], lr=self.lr) if self.optimizer == "adam" else None
            dgen = torch.Generator().manual_seed(self.seed)
            history = [start.clone()] if record else None
            losses: list[float] = []
            stop = EarlyStop(self.patience)
            with torch.enable_grad():
                for step in range(1, self.steps + 1):
                    wv = w if opt is not None else w.detach().requires_grad_(True)
                    xin = torch.where(m, _generate(gen, wv, attacker), attacker)
                    composed = xin.detach()
                    if self.di > 0:
                        xin = _input_diversity(xin, self.di, 0.9, dgen)
                    loss = self.core._loss(xin, tlist)
                    if opt is not None:
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
                        with torch.no_grad():
                            w.copy_(self._clip(w, w0))
                    else:
                        (grad,) = torch.autograd.grad(loss, wv)
                        g = _momentum_update(g, grad, self.mu)
                        w = self._clip(w - self.lr * torch.sign(g), w0).detach()
                    value = float(loss.detach())
                    losses.append(value)
                    if history is not None or callback is not None:
                        with torch.no_grad():
                            cur = torch.where(m, _generate(gen, w.detach(), attacker), attacker)
                        if history is not None:
                            history.append(cur.clone())
                        if callback is not None:
                            callback(step, cur.clone(), value)
                    if self.patience is not None:
                        if self.di > 0:  # stop on the iterate's own loss, not on a random resize's (see core)
                            with torch.no_grad():
                                value = float(self.core._loss(composed, tlist))
                        if stop(value):
                            break
            w = w.detach()
            with torch.no_grad():
                adv = torch.where(m, _generate(gen, w, attacker), attacker)
            _check_range(adv)
        finally:
            for mod, mode in zip(modules, modes, strict=True):
                mod.train(mode)
        return GenerativePatchResult(
            adversarial=adv,
            patch=torch.where(m, adv, torch.zeros_like(adv)),
            mask=m,
            start=start,
            losses=losses,
            steps=len(losses),
            history=history,
            latent=w,
            latent_start=w0,
        )

    __call__ = run
