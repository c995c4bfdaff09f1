"""Local cache of trained weights: safetensors + a JSON sidecar, keyed by recipe hash, integrity-checked.

Layout under :func:`cache_dir` (``$BASTION_CACHE``, default ``~/.cache/bastion``)::

    zoo/<name>-<recipe key>.safetensors   the weights (no pickle)
    zoo/<name>-<recipe key>.json          recipe, SHA-256 of the weights file, metrics, versions

A load recomputes the SHA-256 of the weights and compares it with the sidecar; a mismatch, a
truncated file or an unreadable sidecar raises :class:`CacheCorrupted` and the caller retrains.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..core.report import to_jsonable

__all__ = ["CacheCorrupted", "cache_dir", "file_sha256", "load_entry", "remove_entry", "save_entry"]

log = logging.getLogger(__name__)


class CacheCorrupted(RuntimeError):
    """A cached weights file does not match its recorded hash or cannot be read."""


def cache_dir() -> Path:
    """``$BASTION_CACHE`` if set, else ``~/.cache/bastion``."""
    return Path(os.environ.get("BASTION_CACHE") or Path.home() / ".cache" / "bastion")


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _paths(stem: str) -> tuple[Path, Path]:
    folder = cache_dir() / "zoo"
    return folder / f"{stem}.safetensors", folder / f"{stem}.json"


def save_entry(stem: str, state_dict: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write weights and sidecar atomically; the sidecar records the weights' SHA-256."""
    weights, sidecar = _paths(stem)
    weights.parent.mkdir(parents=True, exist_ok=True)
    tmp = weights.with_name(weights.name + ".tmp")
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    save_file(tensors, str(tmp), metadata={"stem": stem})
    meta = dict(meta, sha256=file_sha256(tmp), file=weights.name)
    tmp.replace(weights)
    tmp_meta = sidecar.with_name(sidecar.name + ".tmp")
    tmp_meta.write_text(json.dumps(to_jsonable(meta), indent=2) + "\n")
    tmp_meta.replace(sidecar)
    return weights


def load_entry(stem: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """Return ``(state_dict, meta)``, ``None`` on a cache miss; raise :class:`CacheCorrupted` on damage."""
    weights, sidecar = _paths(stem)
    if not weights.exists() and not sidecar.exists():
        return None
    if not weights.exists() or not sidecar.exists():
        raise CacheCorrupted(f"cache entry {stem} is incomplete (one of {weights.name}, {sidecar.name} missing)")
    try:
        meta = json.loads(sidecar.read_text())
        expected = meta["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CacheCorrupted(f"cache sidecar {sidecar} is unreadable: {exc}") from exc
    actual = file_sha256(weights)
    if actual != expected:
        raise CacheCorrupted(f"cached weights {weights} have SHA-256 {actual[:12]}..., expected {expected[:12]}...")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CacheCorrupted(f"cached weights {weights} cannot be read: {exc}") from exc
    return state, meta


def load_or_discard(stem: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """:func:`load_entry`, but a damaged entry is logged and deleted and ``None`` returned (rebuild it)."""
    try:
        return load_entry(stem)
    except CacheCorrupted as exc:
        log.warning("cache entry %s is damaged (%s); it is deleted and will be rebuilt", stem, exc)
        remove_entry(stem)
        return None


def remove_entry(stem: str) -> None:
    """Delete both files of an entry (used before retraining a corrupted one)."""
    for p in _paths(stem):
        p.unlink(missing_ok=True)
