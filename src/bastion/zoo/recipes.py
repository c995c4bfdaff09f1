"""Deterministic training recipes for the small zoo classifiers.

A :class:`Recipe` holds every setting that changes the weights; its :meth:`Recipe.key` (a hash of
those settings) names the cache entry, so a changed recipe can never load stale weights. Training
runs inside ``torch.random.fork_rng`` seeded from the recipe, with its own generator for shuffling
and augmentation: the same recipe on the same software gives bit-identical weights on CPU, and the
caller's global RNG state is left untouched.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.checks import check_float, check_int
from ..core.progress import progress
from ..data import ImageDataset, load_dataset

__all__ = ["Normalize", "Recipe", "TrainResult", "accuracy", "train_recipe"]


class Normalize(nn.Module):
    """``(x - mean) / std`` with scalar or per-channel statistics; kept beside the weights."""

    def __init__(self, mean: float | tuple[float, ...], std: float | tuple[float, ...]):
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
        if bool((std_t <= 0).any()):
            raise ValueError(f"std must be positive, got {std}")
        self.register_buffer("mean", mean_t, persistent=False)
        self.register_buffer("std", std_t, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


@dataclass(frozen=True)
class Recipe:
    """Everything that determines a zoo model's weights.

    Parameters
    ----------
    arch:
        Name of the architecture (a key of :data:`bastion.zoo.models.ARCHITECTURES`).
    dataset:
        Training data set name (``bastion.core.DATASETS``); its ``test`` split is the held-out set.
    epochs, batch_size, lr, weight_decay:
        AdamW with a one-cycle learning-rate schedule peaking at ``lr``.
    shift:
        Random translation augmentation of up to ``shift`` pixels (one offset per batch).
    seed:
        Seeds initialisation, shuffling, augmentation and dropout.
    train_subset:
        Train on the first ``train_subset`` rows of a seeded permutation only (fast tests).
    version:
        Bump to invalidate cached weights when the training code changes.
    """

    arch: str
    dataset: str
    epochs: int
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    shift: int = 0
    seed: int = 0
    train_subset: int | None = None
    version: int = 1

    def __post_init__(self) -> None:
        check_int(self.epochs, "epochs", minimum=1)
        check_int(self.batch_size, "batch_size", minimum=1)
        check_float(self.lr, "lr", minimum=0, min_inclusive=False)
        check_float(self.weight_decay, "weight_decay", minimum=0)
        check_int(self.shift, "shift", minimum=0, maximum=8)
        check_int(self.seed, "seed", minimum=0)
        if self.train_subset is not None:
            check_int(self.train_subset, "train_subset", minimum=1)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def key(self) -> str:
        """16 hex digits of the SHA-256 of the recipe's canonical JSON."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class TrainResult:
    """What :func:`train_recipe` returns."""

    state_dict: dict[str, torch.Tensor]
    train_seconds: float
    threads: int
    final_loss: float
    n_train: int


def _shift_batch(x: torch.Tensor, shift: int, fill: float, gen: torch.Generator) -> torch.Tensor:
    if shift == 0:
        return x
    h, w = x.shape[-2:]
    padded = F.pad(x, (shift, shift, shift, shift), value=fill)
    dy, dx = torch.randint(0, 2 * shift + 1, (2,), generator=gen).tolist()
    return padded[..., dy : dy + h, dx : dx + w]


def train_recipe(
    recipe: Recipe,
    build: Callable[[], nn.Module],
    preprocess: nn.Module,
    *,
    train_data: ImageDataset | None = None,
    quiet: bool = True,
) -> TrainResult:
    """Train ``build()`` on ``recipe.dataset``'s train split; deterministic for a given recipe.

    The caller's global RNG state is restored afterwards (``torch.random.fork_rng``).
    """
    data = train_data if train_data is not None else load_dataset(recipe.dataset, "train")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        gen = torch.Generator().manual_seed(recipe.seed)
        x_all, y_all = data.images, data.labels
        if recipe.train_subset is not None and recipe.train_subset < len(data):
            keep = torch.randperm(len(data), generator=gen)[: recipe.train_subset]
            x_all, y_all = x_all[keep], y_all[keep]
        n = x_all.shape[0]
        net = build()
        preprocess.eval()
        opt = torch.optim.AdamW(net.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
        steps_per_epoch = (n + recipe.batch_size - 1) // recipe.batch_size
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=recipe.epochs * steps_per_epoch)
        start = time.perf_counter()
        loss = torch.zeros(())
        net.train()
        for _ in progress(
            range(recipe.epochs), desc=f"train {recipe.arch} on {recipe.dataset}", quiet=quiet, unit="epoch"
        ):
            perm = torch.randperm(n, generator=gen)
            for i in range(0, n, recipe.batch_size):
                idx = perm[i : i + recipe.batch_size]
                xb = _shift_batch(x_all[idx], recipe.shift, 0.0, gen)
                loss = F.cross_entropy(net(preprocess(xb)), y_all[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
        seconds = time.perf_counter() - start
    net.eval()
    return TrainResult(
        state_dict={k: v.detach().clone() for k, v in net.state_dict().items()},
        train_seconds=seconds,
        threads=torch.get_num_threads(),
        final_loss=float(loss.detach()),
        n_train=n,
    )


@torch.no_grad()
def accuracy(classifier: nn.Module, data: ImageDataset, *, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``classifier`` (preprocessing included) on ``data``."""
    classifier.eval()
    correct = 0
    for i in range(0, len(data), batch_size):
        correct += int((classifier(data.images[i : i + batch_size]).argmax(1) == data.labels[i : i + batch_size]).sum())
    return correct / len(data)
