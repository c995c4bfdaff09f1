"""The AntM2C tasks on Parquet data in the release's layout (spec section 2, [R]).

- **T1 single-scenario**: train and test on one scene's rows.
- **T2 multi-scenario**: one model over all scenes; per-scene AUC and the row-weighted mean
  ``sum_s n_s AUC_s / sum_s n_s``.
- **T3 cold start**: a test row is cold-item (cold-user) when its item (user) has no *training* row; unseen
  ids share one out-of-vocabulary embedding row (the exact vocabularies are fit on ``train/`` only).
- **T4 modalities**: ID only, + text, + image, all; scored on all, warm and cold rows.

Feature groups of the ``public10m`` layout:

- ``"id"``: ``user_id`` and ``item_id`` (exact vocabularies) and the 27 ``deep_features_*`` (hashed);
- ``"text"``: the item title (MiniLM, or the hashed bigram encoder offline), the user's three entity
  sequences joined (hashed bigrams) and the row's item entity names (hashed bigrams);
- ``"image"``: the item-keyed vectors of ``item_vectors.safetensors`` (or a file of the user's).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.checks import check_choice
from .features import FeatureSpec
from .models import build_model
from .pipeline import ArrayBatches, BatchEncoder, ParquetSource, materialize
from .trainer import TrainConfig, evaluate_predictions, fit, predict

__all__ = ["FEATURE_GROUPS", "SPLITS", "antm2c_encoder", "load_splits", "run_arrays", "split_dirs"]

FEATURE_GROUPS = ("id", "text", "image")
SPLITS = ("train", "val", "test")
DEEP = [f"deep_features_{i}" for i in range(27)]


def split_dirs(root: str | os.PathLike[str]) -> dict[str, Path]:
    """``{train, val, test}`` folders of a converted or generated data set; errors name what is missing."""
    root = Path(root)
    out = {s: root / s for s in SPLITS}
    missing = [str(p) for p in out.values() if not p.is_dir() or not any(p.glob("*.parquet"))]
    if missing:
        raise ValueError(
            f"data must be a folder with train/, val/ and test/ Parquet parts (bastion ctr convert or generate); "
            f"missing or empty: {missing}"
        )
    return out


def _text_encoder(kind: str, dim: int = 64, seed: int = 0):
    from .text import HashedTextEncoder, MiniLMEncoder

    check_choice(kind, "text", ("hashed", "minilm"))
    return MiniLMEncoder() if kind == "minilm" else HashedTextEncoder(dim=dim, seed=seed)


def antm2c_encoder(
    root: str | os.PathLike[str],
    features: Sequence[str] = ("id", "text", "image"),
    *,
    text: str = "hashed",
    image: str | os.PathLike[str] | None = None,
    num_buckets: int = 2**16,
    extras: Sequence[str] = ("p_true",),
    fit: bool = True,
) -> BatchEncoder:
    """A :class:`BatchEncoder` for the ``public10m`` layout with the chosen feature groups, fit on ``train/``
    (``fit=False`` skips the pass over ``train/`` when saved vocabularies will be loaded with
    :meth:`BatchEncoder.load_state`)."""
    features = tuple(features)
    for f in features:
        check_choice(f, "features", FEATURE_GROUPS)
    if "id" not in features:
        raise ValueError("features must include 'id' (the categorical fields every model embeds)")
    dirs = split_dirs(root)
    train = ParquetSource(dirs["train"])
    names = train.schema.names
    text_cols: dict[str, Any] = {}
    if "text" in features:
        hashed = _text_encoder("hashed")
        text_cols = {
            "title": ("item_title", _text_encoder(text)),
            "user_text": (["bill_entity_seq", "service_entity_seq", "query_entity_seq"], hashed),
            "entity": ("item_entity_names", hashed),
        }
    img = None
    if "image" in features:
        from .convert import load_item_vectors

        path = Path(image) if image is not None else Path(root) / "item_vectors.safetensors"
        if not path.is_file():
            raise ValueError(f"image: no item vector file at {path} (pass image=... or drop 'image' from features)")
        vectors = load_item_vectors(path, mmap=False)  # validates shapes, finiteness and unique ids
        img = (np.asarray(vectors.item_ids), np.asarray(vectors.vectors))
    enc = BatchEncoder(
        ["user_id", "item_id", *DEEP],
        num_buckets=num_buckets,
        vocab_fields=["user_id", "item_id"],
        text=text_cols,
        cache_text=["title"] if text_cols else [],  # per-row text is nearly unique per row: never cached
        image=img,
        extras=[e for e in extras if e in names],
    )
    return enc.fit(train) if fit else enc


def load_splits(root: str | os.PathLike[str], encoder: BatchEncoder) -> dict[str, dict[str, np.ndarray]]:
    """Encode all three splits into memory (for data sets that fit; stream larger ones with CTRStream)."""
    return {s: materialize(d, encoder) for s, d in split_dirs(root).items()}


def run_arrays(
    splits: Mapping[str, Mapping[str, np.ndarray]],
    spec: FeatureSpec,
    model: str = "deepfm",
    *,
    train_scenes: Sequence[int] | None = None,
    eval_scenes: Sequence[int] | None = None,
    dim: int = 16,
    mlp: Sequence[int] | None = None,
    batch_size: int = 4096,
    config: TrainConfig | None = None,
    scene_names: list[str] | None = None,
    model_kw: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``model`` on in-memory splits (optionally only some scenes: T1) and score the test split.

    Returns the test metrics of :func:`~bastion.ctr.trainer.evaluate_predictions` plus ``val_auc``,
    ``train_samples_per_s``, ``epochs_run`` and ``best_epoch``.
    """
    cfg = config or TrainConfig()
    torch.manual_seed(cfg.seed)

    def mask(split: str, scenes: Sequence[int] | None) -> np.ndarray | None:
        if scenes is None:
            return None
        return np.isin(splits[split]["scene"], np.asarray(list(scenes)))

    keys = [k for k in splits["train"] if k in ("ids", "scene", "label", "weight", *spec.vector_dims)]
    eval_keys = list(splits["test"])
    train = ArrayBatches(
        splits["train"], batch_size=batch_size, seed=cfg.seed, select=mask("train", train_scenes), keys=keys
    )
    val = ArrayBatches(splits["val"], batch_size=8192, shuffle=False, select=mask("val", train_scenes), keys=eval_keys)
    test = ArrayBatches(
        splits["test"], batch_size=8192, shuffle=False, select=mask("test", eval_scenes), keys=eval_keys
    )
    net = build_model(model, spec, dim=dim, mlp=mlp, **dict(model_kw or {}))
    t0 = time.perf_counter()
    res = fit(net, train, val, cfg, set_epoch=train.set_epoch)
    scores = evaluate_predictions(predict(net, test), scene_names=scene_names)
    scores.update(
        model=model,
        val_auc=res.best_val_auc,
        best_epoch=res.best_epoch,
        epochs_run=len(res.history),
        train_samples_per_s=res.samples_per_s,
        train_rows=int(train.n),
        wall_s=time.perf_counter() - t0,
    )
    return scores
