"""Generators of probe directions learnt from reference-model gradients: NonLinear-BA and PSBA.

NonLinear-BA (Li et al., AISTATS 2021; AI-secure/NonLinear-BA) trains an auto-encoder, a VAE or a
GAN on input gradients of reference models (never the target) and probes the boundary with decoded
latents. PSBA (Zhang et al., ICML 2021; AI-secure/PSBA) trains a progressive GAN on the same
gradients and probes at the one output scale that works best for the target. What we follow (spec
boundary.md, "Probe samplers"):

- Training data: :func:`~.subspaces.reference_gradients` of the zoo's MLP and wide/shallow net on the
  4,000 MNIST-5k training digits (8,000 vectors), each L2-normalised (AE/VAE/GAN) or max-abs
  normalised and average-pooled to the stage size (PGAN).
- AE: ``double_conv(C -> c1)``, then ``down`` x [max-pool, double-conv], a 1x1 conv to the latent
  channels; the latent is L2-normalised. Decoder: ``down`` x [bilinear x2, double-conv] and a 1x1 conv;
  the output is L2-normalised and the loss is the MSE to the unit gradient. Adam 1e-3, batch 32. The
  official net uses 4 pools and 48 channels at 224 px (latent 48x14x14); at 28 px we use 2 pools to a
  4x7x7 latent (196 values, spec "Offline reproduction") and 24/32 channels.
- VAE: the same trunk with mean and log-variance heads; the sampled latent is unit-normalised before
  decoding (the official ``VAEGenerator``), loss = recon + 1e-11 KL (the official lambda),
  Adam 1e-4.
- GAN: DCGAN-style transposed convs ``z (128) -> 7 -> 14 -> 28``, tanh; WGAN critic with weights
  clipped to +-0.01, RMSprop 5e-5, five critic steps per generator step. Its data are max-abs
  normalised (the tanh range) rather than L2-normalised [R]; probes are L2-normalised either way.
- PGAN 7 -> 14 -> 28: latent 128 -> 4x4, stages (7, 14, 28) with first x7/4 then x2, pixel norm,
  equalised learning rate, leaky ReLU 0.2, tanh; WGAN-GP (lambda 10, drift 1e-3 D(x)^2), Adam 2e-4
  betas (0, 0.99), fade-in over the first half of each stage. A snapshot of the generator is kept when
  each stage ends, so probing "at scale s" uses the generator as trained for that scale.

Training lengths are cut to fit the issue's "<= 2 min on one core" (the official runs take 100-200
epochs on ~500K gradients on a GPU); they are recipe constants, so the cached weights are
reproducible, and the reproduction reports how well each generator's probes align with the target's
true gradients. Every trained generator is cached through :mod:`bastion.zoo.cache` (safetensors + a
SHA-256-checked JSON sidecar) under a key of the references' recipes and the training settings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...core.checks import check_choice, check_tensor
from ...core.progress import progress
from .samplers import _unit
from .subspaces import _zoo_key, zoo_reference_gradients

__all__ = [
    "AEGenerator",
    "GANGenerator",
    "GeneratorRecipe",
    "ProgressiveGenerator",
    "VAEGenerator",
    "train_generator",
    "zoo_generator",
    "zoo_reference_gradients",
]


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------- AE / VAE
class AEGenerator(nn.Module):
    """NonLinear-BA's auto-encoder; ``decode(z)`` maps a latent ``(n, *latent_shape)`` to a unit direction.

    ``variational=True`` adds the VAE's mean / log-variance heads (``forward`` then samples the latent).
    """

    def __init__(
        self,
        shape: tuple[int, int, int] = (1, 28, 28),
        *,
        channels: Sequence[int] = (24, 32),
        latent_channels: int = 4,
        variational: bool = False,
    ) -> None:
        super().__init__()
        c, h, w = shape
        down = len(channels)  # one max-pool per entry
        if h % 2**down or w % 2**down:
            raise ValueError(f"shape {shape} must be divisible by 2**{down} for {len(channels)} pooling stages")
        self.shape, self.variational = tuple(shape), variational
        self.latent_shape = (latent_channels, h // 2**down, w // 2**down)
        enc = [_double_conv(c, channels[0])]
        prev = channels[0]
        for ch in channels:
            enc += [nn.MaxPool2d(2), _double_conv(prev, ch)]
            prev = ch
        self.encoder = nn.Sequential(*enc)
        self.to_latent = nn.Conv2d(prev, latent_channels, 1)
        self.to_logvar = nn.Conv2d(prev, latent_channels, 1) if variational else None
        dec: list[nn.Module] = []
        prev = latent_channels
        for ch in reversed(channels):
            dec += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), _double_conv(prev, ch)]
            prev = ch
        dec.append(nn.Conv2d(prev, c, 1))
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.encoder(x)
        mu = self.to_latent(h)
        if self.to_logvar is None:
            return _unit(mu), None
        return mu, self.to_logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return _unit(self.decoder(z))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        mu, logvar = self.encode(x)
        if logvar is None:
            return self.decode(mu), None, None
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        return self.decode(_unit(z)), mu, logvar  # the official VAE decodes unit-norm latents, as probes do


class VAEGenerator(AEGenerator):
    """The VAE variant of :class:`AEGenerator`."""

    def __init__(self, shape: tuple[int, int, int] = (1, 28, 28), **kwargs) -> None:
        super().__init__(shape, variational=True, **kwargs)


# ---------------------------------------------------------------------------------------------- GAN
class GANGenerator(nn.Module):
    """DCGAN-style generator ``z (latent_dim) -> (C, H, W)`` by transposed convs, tanh output.

    ``H`` and ``W`` must be 4x the base size (two x2 stages), e.g. 28 -> base 7.
    """

    def __init__(self, shape: tuple[int, int, int] = (1, 28, 28), *, latent_dim: int = 128, width: int = 64) -> None:
        super().__init__()
        c, h, w = shape
        if h % 4 or w % 4:
            raise ValueError(f"shape {shape} must have H and W divisible by 4")
        self.shape, self.latent_shape = tuple(shape), (latent_dim,)
        self.base = (h // 4, w // 4)
        self.fc = nn.Sequential(nn.Linear(latent_dim, 2 * width * self.base[0] * self.base[1]),
                                nn.BatchNorm1d(2 * width * self.base[0] * self.base[1]), nn.ReLU(True))  # fmt: skip
        self.net = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.BatchNorm2d(width), nn.ReLU(True),
            nn.ConvTranspose2d(width, c, 4, 2, 1), nn.Tanh(),
        )  # fmt: skip
        self.width = width

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z).view(-1, 2 * self.width, *self.base))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return _unit(self(z))


class _Critic(nn.Module):
    def __init__(self, shape: tuple[int, int, int], width: int = 64) -> None:
        super().__init__()
        c, h, w = shape
        self.net = nn.Sequential(
            nn.Conv2d(c, width, 4, 2, 1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.LeakyReLU(0.2, True),
            nn.Flatten(), nn.Linear(2 * width * (h // 4) * (w // 4), 1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()


# ---------------------------------------------------------------------------------------------- PGAN
class _EqConv(nn.Module):
    """Conv with the equalised learning rate of ProGAN: weights ~ N(0, 1), scaled by He's constant at run time."""

    def __init__(self, cin: int, cout: int, k: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.scale, self.pad = math.sqrt(2.0 / (cin * k * k)), k // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.pad)


class _EqLinear(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.scale = math.sqrt(2.0 / cin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


def _pixel_norm(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class _GBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.c1, self.c2 = _EqConv(cin, cout, 3), _EqConv(cout, cout, 3)

    def forward(self, x: torch.Tensor, size: int) -> torch.Tensor:
        x = F.interpolate(x, size=(size, size), mode="nearest")
        x = _pixel_norm(F.leaky_relu(self.c1(x), 0.2))
        return _pixel_norm(F.leaky_relu(self.c2(x), 0.2))


class ProgressiveGenerator(nn.Module):
    """PSBA's progressive generator: ``z -> 4x4 -> sizes[0] -> ... -> sizes[-1]``, one output head per size.

    ``forward(z, stage, alpha)`` is the output at ``sizes[stage]`` (fading in from the previous size
    while ``alpha < 1``); ``at_scale(z, size)`` the finished output at one size.
    """

    def __init__(
        self,
        channels_out: int = 1,
        *,
        sizes: Sequence[int] = (7, 14, 28),
        widths: Sequence[int] = (32, 16, 8),
        latent_dim: int = 128,
        base_width: int = 32,
    ) -> None:
        super().__init__()
        if len(sizes) != len(widths):
            raise ValueError(f"sizes {tuple(sizes)} and widths {tuple(widths)} must have the same length")
        self.sizes, self.latent_shape = tuple(int(s) for s in sizes), (latent_dim,)
        self.base_width = base_width
        self.fc = _EqLinear(latent_dim, base_width * 16)
        self.c0 = _EqConv(base_width, base_width, 3)
        prev = base_width
        self.blocks, self.heads = nn.ModuleList(), nn.ModuleList()
        for w in widths:
            self.blocks.append(_GBlock(prev, w))
            self.heads.append(_EqConv(w, channels_out, 1))
            prev = w

    def forward(self, z: torch.Tensor, stage: int | None = None, alpha: float = 1.0) -> torch.Tensor:
        stage = len(self.sizes) - 1 if stage is None else stage
        h = _pixel_norm(F.leaky_relu(self.fc(_pixel_norm(z)), 0.2)).view(-1, self.base_width, 4, 4)
        h = _pixel_norm(F.leaky_relu(self.c0(h), 0.2))
        prev = h
        for s in range(stage + 1):
            prev, h = h, self.blocks[s](h, self.sizes[s])
        out = self.heads[stage](h)
        if alpha < 1 and stage > 0:
            skip = F.interpolate(self.heads[stage - 1](prev), size=out.shape[-2:], mode="nearest")
            out = (1 - alpha) * skip + alpha * out
        return torch.tanh(out)

    def at_scale(self, z: torch.Tensor, size: int) -> torch.Tensor:
        """The output at ``size``, from the weights as they were when that stage finished training.

        Later stages keep training the shared early blocks, so the current weights' low-resolution
        heads drift; :meth:`set_snapshots` keeps one frozen copy per scale (PSBA probes with the
        generator of that stage).
        """
        if size not in self.sizes:
            raise ValueError(f"size must be one of {self.sizes}, got {size}")
        frozen = self.__dict__.get("_frozen", {}).get(size)
        return (frozen if frozen is not None else self)(z, self.sizes.index(size))

    def set_snapshots(self, snapshots: dict[int, dict[str, torch.Tensor]]) -> None:
        """Keep one frozen copy of the generator per scale from ``{size: state_dict}``."""
        import copy

        frozen = {}
        for size, state in snapshots.items():
            if size not in self.sizes:
                raise ValueError(f"snapshot size must be one of {self.sizes}, got {size}")
            frozen_now, snaps_now = self.__dict__.pop("_frozen", None), self.__dict__.pop("snapshots", None)
            twin = copy.deepcopy(self)  # without the other scales' copies
            if frozen_now is not None:
                self.__dict__["_frozen"] = frozen_now
            if snaps_now is not None:
                self.__dict__["snapshots"] = snaps_now
            twin.load_state_dict(state)
            frozen[size] = twin.eval().requires_grad_(False)
        self.snapshots = {k: dict(v) for k, v in snapshots.items()}
        self.__dict__["_frozen"] = frozen  # plain attribute: not submodules, not in state_dict()

    def _apply(self, fn, recurse: bool = True):  # .to(), .double() ... move the per-scale copies too
        super()._apply(fn, recurse)
        for twin in self.__dict__.get("_frozen", {}).values():
            twin._apply(fn, recurse)
        return self


class _ProgressiveCritic(nn.Module):
    def __init__(self, channels_in: int, sizes: Sequence[int], widths: Sequence[int], base_width: int) -> None:
        super().__init__()
        self.sizes = tuple(sizes)
        self.from_rgb = nn.ModuleList(_EqConv(channels_in, w, 1) for w in widths)
        outs = [base_width, *widths[:-1]]
        self.blocks = nn.ModuleList(
            nn.ModuleList([_EqConv(w, w, 3), _EqConv(w, o, 3)]) for w, o in zip(widths, outs, strict=True)
        )
        self.final = _EqConv(base_width, base_width, 3)
        self.out = _EqLinear(base_width * 16, 1)

    def _block(self, s: int, h: torch.Tensor) -> torch.Tensor:
        c1, c2 = self.blocks[s]
        h = F.leaky_relu(c2(F.leaky_relu(c1(h), 0.2)), 0.2)
        size = self.sizes[s - 1] if s > 0 else 4
        return F.adaptive_avg_pool2d(h, size)

    def forward(self, x: torch.Tensor, stage: int, alpha: float = 1.0) -> torch.Tensor:
        h = self._block(stage, F.leaky_relu(self.from_rgb[stage](x), 0.2))
        if alpha < 1 and stage > 0:
            small = F.adaptive_avg_pool2d(x, self.sizes[stage - 1])
            h = (1 - alpha) * F.leaky_relu(self.from_rgb[stage - 1](small), 0.2) + alpha * h
        for s in range(stage - 1, -1, -1):
            h = self._block(s, h)
        h = F.leaky_relu(self.final(h), 0.2)
        return self.out(h.flatten(1)).flatten()


# ---------------------------------------------------------------------------------------------- training
@dataclass(frozen=True)
class GeneratorRecipe:
    """How one generator is trained; part of its cache key."""

    kind: str  # "ae", "vae", "gan", "pgan"
    epochs: int
    batch_size: int
    lr: float
    version: int = 1


RECIPES = {
    "ae": GeneratorRecipe("ae", epochs=6, batch_size=32, lr=1e-3),
    "vae": GeneratorRecipe("vae", epochs=6, batch_size=32, lr=1e-4, version=2),  # v2: unit-norm latents
    "gan": GeneratorRecipe("gan", epochs=15, batch_size=64, lr=5e-5),
    "pgan": GeneratorRecipe("pgan", epochs=3, batch_size=64, lr=2e-4),  # epochs per stage
}


def _batches(n: int, batch_size: int, gen: torch.Generator):
    perm = torch.randperm(n, generator=gen)
    for i in range(0, n - batch_size + 1, batch_size):  # full batches only (BatchNorm, GP)
        yield perm[i : i + batch_size]


def train_generator(
    kind: str,
    gradients: torch.Tensor,
    shape: tuple[int, int, int],
    *,
    recipe: GeneratorRecipe | None = None,
    seed: int = 0,
    quiet: bool = True,
) -> tuple[nn.Module, dict]:
    """Train a ``kind`` (``"ae"``, ``"vae"``, ``"gan"``, ``"pgan"``) generator on ``gradients`` ``(N, d)``.

    Returns the generator (eval mode) and a dict of training figures (final losses, seconds). For
    ``"pgan"`` the returned module carries one snapshot per stage in ``module.snapshots``.
    """
    import time

    kind = check_choice(kind, "kind", tuple(RECIPES))
    recipe = recipe or RECIPES[kind]
    gradients = check_tensor(gradients, "gradients", ndim=2, floating=True).float()
    if gradients.shape[1] != math.prod(shape):
        raise ValueError(f"gradients have {gradients.shape[1]} values per row but shape {shape} has {math.prod(shape)}")
    if len(gradients) < recipe.batch_size:
        raise ValueError(f"gradients must hold at least batch_size={recipe.batch_size} rows, got {len(gradients)}")
    if not torch.isfinite(gradients).all():
        raise ValueError("gradients contain NaN or inf")
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):  # weights drawn from the seed; the caller's RNG is restored
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        if kind in ("ae", "vae"):
            model, stats = _train_ae(kind, gradients, shape, recipe, gen, quiet)
        elif kind == "gan":
            model, stats = _train_gan(gradients, shape, recipe, gen, quiet)
        else:
            model, stats = _train_pgan(gradients, shape, recipe, gen, quiet)
    stats["seconds"] = time.perf_counter() - start
    return model.eval(), stats


def _train_ae(kind, grads, shape, recipe, gen, quiet):
    model = AEGenerator(shape, variational=kind == "vae")
    target = _unit(grads).view(-1, *shape)
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    kl_weight = 1e-11  # the official lambda: the KL term is all but switched off
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in progress(range(recipe.epochs), desc=f"train {kind}", quiet=quiet):
        for idx in _batches(len(target), recipe.batch_size, gen):
            x = target[idx]
            out, mu, logvar = model(x)
            loss = F.mse_loss(out, x)
            if mu is not None:
                kl = -0.5 * (1 + logvar - mu**2 - logvar.exp()).flatten(1).sum(1).mean()
                loss = loss + kl_weight * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        recon = F.mse_loss(model(target[:512])[0], target[:512]).item()
    return model, {"final loss": loss.item(), "reconstruction MSE (unit vectors)": recon}


def _train_gan(grads, shape, recipe, gen, quiet):
    model, critic = GANGenerator(shape), _Critic(shape)
    target = (grads / grads.abs().amax(1, keepdim=True).clamp_min(1e-12)).view(-1, *shape)
    opt_g = torch.optim.RMSprop(model.parameters(), lr=recipe.lr)
    opt_d = torch.optim.RMSprop(critic.parameters(), lr=recipe.lr)
    n_critic, step = 5, 0
    loss_d = loss_g = torch.tensor(float("nan"))
    model.train()
    for _ in progress(range(recipe.epochs), desc="train gan", quiet=quiet):
        for idx in _batches(len(target), recipe.batch_size, gen):
            z = torch.randn(len(idx), *model.latent_shape, generator=gen)
            with torch.no_grad():
                fake = model(z)
            loss_d = critic(fake).mean() - critic(target[idx]).mean()
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            for p in critic.parameters():
                p.data.clamp_(-0.01, 0.01)
            step += 1
            if step % n_critic == 0:
                z = torch.randn(len(idx), *model.latent_shape, generator=gen)
                loss_g = -critic(model(z)).mean()
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                opt_g.step()
    return model, {"critic loss (-W estimate)": loss_d.item(), "generator loss": loss_g.item()}


def _train_pgan(grads, shape, recipe, gen, quiet):
    c = shape[0]
    sizes = (shape[1] // 4, shape[1] // 2, shape[1])
    model = ProgressiveGenerator(c, sizes=sizes)
    critic = _ProgressiveCritic(c, sizes, (32, 16, 8), model.base_width)
    full = (grads / grads.abs().amax(1, keepdim=True).clamp_min(1e-12)).view(-1, *shape)
    opt_g = torch.optim.Adam(model.parameters(), lr=recipe.lr, betas=(0.0, 0.99))
    opt_d = torch.optim.Adam(critic.parameters(), lr=recipe.lr, betas=(0.0, 0.99))
    stats: dict = {}
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    for stage, size in enumerate(sizes):
        data = F.adaptive_avg_pool2d(full, size) if size != shape[1] else full
        data = data / data.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
        batches = [b for _ in range(recipe.epochs) for b in _batches(len(data), recipe.batch_size, gen)]
        fade = len(batches) // 2 if stage > 0 else 0
        loss_d = loss_g = torch.tensor(float("nan"))
        for it, idx in enumerate(progress(batches, desc=f"train pgan {size}x{size}", quiet=quiet)):
            alpha = min(1.0, (it + 1) / fade) if fade else 1.0
            real = data[idx]
            z = torch.randn(len(idx), *model.latent_shape, generator=gen)
            with torch.no_grad():
                fake = model(z, stage, alpha)
            eps = torch.rand(len(idx), 1, 1, 1, generator=gen)
            mix = (eps * real + (1 - eps) * fake).requires_grad_(True)
            (g,) = torch.autograd.grad(critic(mix, stage, alpha).sum(), mix, create_graph=True)
            gp = ((g.flatten(1).norm(dim=1) - 1) ** 2).mean()
            d_real, d_fake = critic(torch.cat([real, fake]), stage, alpha).split(len(idx))
            loss_d = d_fake.mean() - d_real.mean() + 10 * gp + 1e-3 * (d_real**2).mean()
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            z = torch.randn(len(idx), *model.latent_shape, generator=gen)
            loss_g = -critic(model(z, stage, alpha), stage, alpha).mean()
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
        stats[f"stage {size}: critic loss"] = loss_d.item()
        snapshots[size] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.set_snapshots(snapshots)
    return model, stats


# ---------------------------------------------------------------------------------------------- zoo cache
def _build(kind: str, shape: tuple[int, int, int]) -> nn.Module:
    if kind == "ae":
        return AEGenerator(shape)
    if kind == "vae":
        return VAEGenerator(shape)
    if kind == "gan":
        return GANGenerator(shape)
    return ProgressiveGenerator(shape[0], sizes=(shape[1] // 4, shape[1] // 2, shape[1]))


def zoo_generator(
    kind: str,
    dataset: str = "mnist5k",
    *,
    references: Sequence[str] = ("mnist5k-mlp", "mnist5k-wide"),
    seed: int = 0,
    quiet: bool = True,
) -> tuple[nn.Module, dict]:
    """A ``kind`` generator trained on zoo references' gradients on ``dataset``; cached like zoo weights.

    Returns ``(generator, meta)``; ``meta`` holds the recipe, the references' recipe keys and the
    training figures. For ``"pgan"`` the generator's ``snapshots`` hold one state per scale.
    """
    from ...core.registry import MODELS
    from ...data import load_dataset
    from ...zoo import cache

    kind = check_choice(kind, "kind", tuple(RECIPES))
    recipe = RECIPES[kind]
    refs = {name: MODELS.get(name).recipe.key() for name in references}
    shape = tuple(load_dataset(dataset, "test").images.shape[1:])
    stem = f"nlba-{kind}-{dataset}-{_zoo_key(refs, dataset, asdict(recipe), seed, list(shape))}"
    hit = cache.load_or_discard(stem)
    if hit is not None:
        state, meta = hit
        model = _build(kind, shape)
        if kind == "pgan":
            snaps = {s: {k.removeprefix(f"s{s}."): v for k, v in state.items() if k.startswith(f"s{s}.")}
                     for s in model.sizes}  # fmt: skip
            model.load_state_dict(snaps[model.sizes[-1]])
            model.set_snapshots(snaps)
        else:
            model.load_state_dict(state)
        return model.eval(), meta
    grads = zoo_reference_gradients(dataset, references)
    model, stats = train_generator(kind, grads, shape, recipe=recipe, seed=seed, quiet=quiet)
    if kind == "pgan":
        state = {f"s{s}.{k}": v for s, snap in model.snapshots.items() for k, v in snap.items()}
    else:
        state = model.state_dict()
    meta = {"kind": kind, "recipe": asdict(recipe), "references": refs, "dataset": dataset, "seed": seed,
            "shape": list(shape), "training": stats}  # fmt: skip
    cache.save_entry(stem, state, meta)
    return model, cache.load_entry(stem)[1]
