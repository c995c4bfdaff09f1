"""Feature hashing and out-of-core vocabularies for categorical ids (spec section 4).

Ids are hashed by default with SplitMix64's finaliser, seeded per field::

    h(x, s) = mix64((x + (s + 1) * GAMMA) mod 2**64),  GAMMA = 0x9E3779B97F4A7C15
    mix64(z): z = (z ^ z >> 30) * 0xBF58476D1CE4E5B9; z = (z ^ z >> 27) * 0x94D049BB133111EB; z ^ z >> 31
    bucket = 1 + h mod (B - 1)          (bucket 0 is reserved for null)

``h(0, 0)`` is SplitMix64's first output from seed 0. int64 ids are reinterpreted as uint64 bits (never
through a float, so 2**53 and 2**53 + 1 stay apart); strings are the 8-byte little-endian blake2b digest of
their UTF-8 bytes, then ``h``. Python's ``hash()`` is salted per process and never used.

:class:`Vocabulary` is the exact alternative: distinct values counted on the training split only, kept as a
sorted int64 array, looked up with ``np.searchsorted`` (0 = null/pad, 1 = out-of-vocabulary).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..core.checks import check_int

__all__ = [
    "GAMMA",
    "Vocabulary",
    "bucketize",
    "collision_rate",
    "hash_array",
    "hash_strings",
    "mix64",
    "splitmix64",
]

GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_MASK = (1 << 64) - 1


def splitmix64(x: int, seed: int = 0) -> int:
    """Pure-Python reference of ``h(x, seed)`` on one integer (the golden values of the spec).

    >>> hex(splitmix64(0, 0)), hex(splitmix64(1, 0)), hex(splitmix64(0, 1))
    ('0xe220a8397b1dcdaf', '0x910a2dec89025cc1', '0x6e789e6aa1b965f4')
    """
    z = (int(x) + (int(seed) + 1) * 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on a uint64 array (wrapping arithmetic, returns a new array)."""
    z = np.asarray(z, dtype=np.uint64).copy()
    with np.errstate(over="ignore"):
        z ^= z >> np.uint64(30)
        z *= _M1
        z ^= z >> np.uint64(27)
        z *= _M2
        z ^= z >> np.uint64(31)
    return z


def hash_array(values: np.ndarray, seed: int = 0) -> np.ndarray:
    """``h(x, seed)`` of an integer array, elementwise, as uint64.

    Signed ids are reinterpreted as their two's-complement uint64 bits; floats are refused because a float
    cannot carry every int64 exactly.

    >>> hex(int(hash_array(np.array([1]), 0)[0]))
    '0x910a2dec89025cc1'
    """
    values = np.asarray(values)
    if values.dtype.kind not in "iu":
        raise TypeError(f"values must be an integer array (hash strings with hash_strings), got dtype {values.dtype}")
    seed = check_int(seed, "seed", minimum=0)
    x = values.astype(np.int64, copy=False).view(np.uint64) if values.dtype.kind == "i" else values.astype(np.uint64)
    salt = np.uint64(((seed + 1) * 0x9E3779B97F4A7C15) & _MASK)
    with np.errstate(over="ignore"):
        return mix64(x + salt)


def _blake8(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def hash_strings(values: Sequence[str] | pa.Array | pa.ChunkedArray | np.ndarray, seed: int = 0) -> np.ndarray:
    """``h(blake2b8(utf8(s)), seed)`` of each string, as uint64; null strings hash like ``""``.

    Only the distinct strings are digested (Arrow dictionary encoding), so a column with few distinct values
    costs little however long it is.
    """
    arr = values if isinstance(values, pa.Array | pa.ChunkedArray) else pa.array(np.asarray(values, dtype=object))
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type) or pa.types.is_dictionary(arr.type)):
        raise TypeError(f"values must be strings, got Arrow type {arr.type}")
    enc = arr if pa.types.is_dictionary(arr.type) else pc.dictionary_encode(arr)
    uniques = enc.dictionary.to_pylist()
    digests = np.fromiter((_blake8(u or "") for u in uniques), dtype=np.uint64, count=len(uniques))
    codes = enc.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    out = np.empty(len(codes), dtype=np.uint64)
    valid = codes >= 0
    out[valid] = digests[codes[valid]]
    out[~valid] = np.uint64(_blake8(""))
    return hash_array(out, seed)


def bucketize(hashes: np.ndarray, num_buckets: int) -> np.ndarray:
    """``1 + h mod (B - 1)`` as int64: buckets ``1..B-1``, 0 stays free for null.

    >>> int(bucketize(hash_array(np.array([16777216]), 0), 2**20)[0])
    675333
    """
    num_buckets = check_int(num_buckets, "num_buckets", minimum=2)
    h = np.asarray(hashes, dtype=np.uint64)
    return (np.uint64(1) + h % np.uint64(num_buckets - 1)).astype(np.int64)


def collision_rate(values: np.ndarray, num_buckets: int, seed: int = 0) -> float:
    """Share of distinct values that share their bucket with another distinct value."""
    distinct = np.unique(np.asarray(values))
    if distinct.size == 0:
        raise ValueError("values must not be empty")
    b = bucketize(hash_array(distinct, seed), num_buckets)
    _, counts = np.unique(b, return_counts=True)
    return float(counts[counts > 1].sum() / distinct.size)


class Vocabulary:
    """An exact id vocabulary fit on the training split: sorted distinct values, ``searchsorted`` lookup.

    Index 0 is null/padding, 1 is out-of-vocabulary (the shared row of cold items and users), known values
    are ``2..len(values)+1``. ``min_count`` drops rare values to OOV. Fit streams: call :meth:`partial_fit`
    per record batch, then :meth:`finalize`.

    >>> v = Vocabulary().fit([5, 3, 5, 9])
    >>> v.transform(np.array([3, 5, 9, 7])).tolist(), v.size
    ([2, 3, 4, 1], 5)
    """

    def __init__(self, min_count: int = 1) -> None:
        self.min_count = check_int(min_count, "min_count", minimum=1)
        self._values: np.ndarray | None = None
        self._counts: np.ndarray | None = None
        self.values_: np.ndarray | None = None

    def partial_fit(self, values: Iterable[int] | np.ndarray) -> Vocabulary:
        v = np.asarray(values)
        if v.dtype.kind not in "iu":
            raise TypeError(f"values must be integers, got dtype {v.dtype}")
        u, c = np.unique(v.astype(np.int64, copy=False), return_counts=True)
        if self._values is None:
            self._values, self._counts = u, c
        else:  # merge two sorted count tables
            allv = np.concatenate([self._values, u])
            allc = np.concatenate([self._counts, c])
            merged, inv = np.unique(allv, return_inverse=True)
            self._counts = np.bincount(inv, weights=allc, minlength=merged.size).astype(np.int64)
            self._values = merged
        return self

    def finalize(self) -> Vocabulary:
        if self._values is None:
            raise ValueError("Vocabulary was fit on no values (empty training split?)")
        self.values_ = self._values[self._counts >= self.min_count]
        return self

    def fit(self, values: Iterable[int] | np.ndarray) -> Vocabulary:
        return self.partial_fit(values).finalize()

    @property
    def size(self) -> int:
        """Rows an embedding table needs: null + OOV + known values."""
        if self.values_ is None:
            raise RuntimeError("Vocabulary is not fit yet")
        return int(self.values_.size) + 2

    def transform(self, values: np.ndarray) -> np.ndarray:
        if self.values_ is None:
            raise RuntimeError("Vocabulary is not fit yet")
        v = np.asarray(values).astype(np.int64, copy=False)
        pos = np.searchsorted(self.values_, v)
        pos_c = np.minimum(pos, max(self.values_.size - 1, 0))
        found = (pos < self.values_.size) & (self.values_[pos_c] == v) if self.values_.size else np.zeros(v.shape, bool)
        return np.where(found, pos + 2, 1).astype(np.int64)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Arrays to save with safetensors/npz (no pickle)."""
        if self.values_ is None:
            raise RuntimeError("Vocabulary is not fit yet")
        return {"values": self.values_, "min_count": np.array([self.min_count], dtype=np.int64)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Vocabulary:
        vals = np.asarray(arrays["values"])
        if vals.dtype != np.int64 or vals.ndim != 1 or (vals.size > 1 and np.any(np.diff(vals) <= 0)):
            raise ValueError("values must be a strictly increasing int64 vector")
        v = cls(int(np.asarray(arrays.get("min_count", [1]))[0]))
        v.values_ = vals
        return v
