"""QEBA-I's intrinsic subspace: a PCA of reference models' input gradients (not of images).

Following AI-secure/QEBA (spec boundary.md, "QEBA-I"): for each reference model (never the target),
the gradient of ``CE(f(x), argmax f(x))`` with respect to the ``[0, 1]`` input, for every reference
image; the basis is the top-``k`` right singular vectors of the stacked gradients, found with a
randomised range finder and **without centring** (the code's ``basis_only`` runs then probe along
single basis vectors). The grey-image reproduction uses the zoo's MLP and wide/shallow nets as
references and the 4,000 MNIST-5k training digits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...core.checks import check_image_batch, check_int

__all__ = ["pca_basis", "reference_gradients", "zoo_gradient_basis", "zoo_reference_gradients"]


def reference_gradients(models: Sequence[nn.Module], images: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
    """Input gradients ``(len(models) * N, d)`` of each model's CE loss at its own top-1 label.

    Each model maps ``[0, 1]`` images to logits (preprocessing included).
    """
    images = check_image_batch(images, "images")
    if not models:
        raise ValueError("models must hold at least one reference model")
    out = []
    for model in models:
        model.eval()
        for i in range(0, len(images), batch_size):
            x = images[i : i + batch_size].clone().requires_grad_(True)
            logits = model(x)
            loss = F.cross_entropy(logits, logits.argmax(1).detach(), reduction="sum")
            (grad,) = torch.autograd.grad(loss, x)
            out.append(grad.flatten(1))
    return torch.cat(out)


def pca_basis(
    vectors: torch.Tensor, k: int, *, seed: int = 0, oversample: int = 10, power_iters: int = 4
) -> torch.Tensor:
    """Top-``k`` right singular vectors ``(k, d)`` of ``vectors`` (no centring), randomised range finder.

    Halko, Martinsson & Tropp (2011), Algorithm 4.4 with ``power_iters`` subspace iterations.
    """
    k = check_int(k, "k", minimum=1)
    a = vectors.to(torch.float64)
    n, d = a.shape
    if k > min(n, d):
        raise ValueError(f"k must be <= min(n, d) = {min(n, d)}, got {k}")
    g = torch.Generator().manual_seed(seed)
    omega = torch.randn(n, min(k + oversample, n), generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(a.T @ omega)  # (d, k+p): range of A^T
    for _ in range(power_iters):
        q, _ = torch.linalg.qr(a @ q)
        q, _ = torch.linalg.qr(a.T @ q)
    b = a @ q  # (n, k+p)
    _, _, vh = torch.linalg.svd(b, full_matrices=False)
    return (vh[:k] @ q.T).to(torch.float32)  # rows: orthonormal basis of the top-k right singular space


def _zoo_key(*parts) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def zoo_reference_gradients(
    dataset: str = "mnist5k", references: Sequence[str] = ("mnist5k-mlp", "mnist5k-wide")
) -> torch.Tensor:
    """Zoo references' input gradients ``(len(references) * N, d)`` on ``dataset``'s training split, cached.

    The training data of QEBA-I's basis and of the NonLinear-BA / PSBA generators. The cache key
    hashes the references' recipe keys and the data set; the file is integrity-checked like every
    zoo entry.
    """
    from ... import zoo
    from ...core.registry import MODELS
    from ...data import load_dataset
    from ...zoo import cache

    recipes = {name: MODELS.get(name).recipe.key() for name in references}
    stem = f"refgrad-{dataset}-{_zoo_key(recipes, dataset, 'refgrad-v1')}"
    hit = cache.load_or_discard(stem)
    if hit is not None:
        return hit[0]["gradients"]
    images = load_dataset(dataset, "train").images
    grads = reference_gradients([zoo.load(name).classifier() for name in references], images)
    cache.save_entry(stem, {"gradients": grads}, {"references": recipes, "dataset": dataset, "rows": len(grads)})
    return grads


def zoo_gradient_basis(
    dataset: str = "mnist5k",
    *,
    references: Sequence[str] = ("mnist5k-mlp", "mnist5k-wide"),
    k: int = 100,
    seed: int = 0,
) -> torch.Tensor:
    """QEBA-I basis ``(k, d)`` from zoo reference models' gradients on ``dataset``'s training split, cached.

    The cache key hashes the references' recipe keys, the data set, ``k`` and ``seed``; the file is
    integrity-checked like every zoo entry.
    """
    from ...core.registry import MODELS
    from ...zoo import cache

    recipes = {name: MODELS.get(name).recipe.key() for name in references}
    stem = f"qeba-i-basis-{dataset}-{_zoo_key(recipes, dataset, k, seed, 'qeba-i-v1')}"
    hit = cache.load_or_discard(stem)
    if hit is not None:
        return hit[0]["basis"]
    basis = pca_basis(zoo_reference_gradients(dataset, references), k, seed=seed)
    cache.save_entry(stem, {"basis": basis}, {"references": recipes, "dataset": dataset, "k": k, "seed": seed})
    return basis
