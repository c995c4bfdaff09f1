"""Streaming Parquet → batches for CTR training at any row count, in bounded memory (spec section 4).

The pipeline never holds a split in memory:

1. **Units.** A split is a list of Parquet files; its units are their row groups, counted from the footers
   only. Each epoch the units are permuted with a generator seeded by ``(seed, epoch)``.
2. **Shards.** The permuted units form one virtual row stream of N rows. Shard ``k = rank * num_workers +
   worker_id`` of ``S = world_size * num_workers`` takes the contiguous slice ``[k N / S, (k+1) N / S)`` of it,
   so every row is read exactly once per epoch and shards differ by at most one row. Every shard yields the
   same number of batches ``K = ceil(ceil(N / S) / batch_size)``: DDP ranks that disagree on the batch count
   hang. In the rare case where a shard's rows fall one short of its last batch, that batch carries a single
   padding row whose ``weight`` is 0 (the trainer's loss and the metrics skip weight-0 rows).
3. **Reading.** ``pq.ParquetFile(path, pre_buffer=False).iter_batches(row_groups=[g], columns=...)``: the
   default ``pre_buffer=True`` grows resident memory with every row group read until the file is closed
   (spec, measured).
4. **Shuffle.** Rows pass through a bounded buffer (``buffer_rows``, default 2**20): when it fills, it is
   permuted and emitted as full batches; the remainder stays for the next fill.
5. **Encoding** (:class:`BatchEncoder`, in the reading process, per record batch): integer ids hashed per
   field with SplitMix64 (:mod:`bastion.ctr.hashing`) or looked up in vocabularies fit on the training split;
   text encoded once per distinct text and cached; item image vectors looked up by item id.

Batches are dicts in the layout of :mod:`bastion.ctr.features`, plus ``weight`` (float32, 1 for real rows).
Use ``torch.utils.data.DataLoader(stream, batch_size=None, num_workers=w)``; call :meth:`CTRStream.set_epoch`
before each epoch.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..core.checks import check_int
from .features import FeatureSpec
from .hashing import Vocabulary, bucketize, hash_array, hash_strings

__all__ = [
    "ArrayBatches",
    "BatchEncoder",
    "CTRStream",
    "ParquetSource",
    "TextEncoder",
    "Unit",
    "materialize",
    "shard_plan",
]


@dataclass(frozen=True)
class Unit:
    """One row group of one file, and the slice of it a shard reads."""

    file: int
    row_group: int
    start: int
    stop: int


class ParquetSource:
    """A list of Parquet files read as row-group units; only footers are read here."""

    def __init__(self, files: Sequence[str | os.PathLike[str]] | str | os.PathLike[str]) -> None:
        if isinstance(files, str | os.PathLike):
            p = Path(files)
            files = sorted(p.glob("*.parquet")) if p.is_dir() else [p]
        files = [Path(f) for f in files]
        if not files:
            raise ValueError("files must name at least one Parquet file (got an empty list or an empty folder)")
        for f in files:
            if not f.is_file():
                raise ValueError(f"files: {f} does not exist")
        self.files = files
        self.unit_rows: list[tuple[int, int, int]] = []  # (file, row_group, rows)
        schema = None
        for i, f in enumerate(files):
            md = pq.ParquetFile(f).metadata
            fs = md.schema.to_arrow_schema()
            if schema is None:
                schema = fs
            elif not fs.equals(schema):
                raise ValueError(f"files: {f} has another schema than {files[0]}")
            for g in range(md.num_row_groups):
                n = md.row_group(g).num_rows
                if n:
                    self.unit_rows.append((i, g, n))
        self.schema: pa.Schema = schema
        self.num_rows = sum(n for _, _, n in self.unit_rows)
        if self.num_rows == 0:
            raise ValueError(f"files hold no rows ({len(files)} file(s))")

    def read(self, unit: Unit, columns: Sequence[str], batch_rows: int = 65_536) -> Iterator[pa.RecordBatch]:
        """Record batches of ``unit``'s slice, only ``columns``, streamed without pre-buffering."""
        pf = pq.ParquetFile(self.files[unit.file], pre_buffer=False)
        try:
            pos = 0
            for rb in pf.iter_batches(batch_size=batch_rows, row_groups=[unit.row_group], columns=list(columns)):
                lo, hi = max(unit.start - pos, 0), min(unit.stop - pos, rb.num_rows)
                pos += rb.num_rows
                if hi > lo:
                    yield rb.slice(lo, hi - lo)
                if pos >= unit.stop:
                    break
        finally:
            pf.close()


def shard_plan(
    unit_rows: Sequence[tuple[int, int, int]], num_shards: int, shard: int, *, seed: int, epoch: int, shuffle: bool
) -> list[Unit]:
    """The units (with row slices) shard ``shard`` of ``num_shards`` reads this epoch.

    >>> plan = shard_plan([(0, 0, 5), (0, 1, 5)], 2, 1, seed=0, epoch=0, shuffle=False)
    >>> [(u.row_group, u.start, u.stop) for u in plan]
    [(1, 0, 5)]
    """
    order = np.arange(len(unit_rows))
    if shuffle:
        order = np.random.default_rng([seed, epoch, 0x5EED]).permutation(len(unit_rows))
    sizes = np.array([unit_rows[i][2] for i in order], dtype=np.int64)
    ends = np.cumsum(sizes)
    starts = ends - sizes
    total = int(ends[-1]) if ends.size else 0
    lo, hi = shard * total // num_shards, (shard + 1) * total // num_shards
    plan = []
    for j, i in enumerate(order):
        a, b = max(lo, int(starts[j])), min(hi, int(ends[j]))
        if b > a:
            f, g, _ = unit_rows[i]
            plan.append(Unit(f, g, a - int(starts[j]), b - int(starts[j])))
    return plan


class TextEncoder(Protocol):
    """What the pipeline needs of a text encoder: a name, a width and ``encode(list[str]) -> [n, dim]``."""

    name: str
    dim: int

    def encode(self, texts: list[str]) -> np.ndarray: ...


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()


class _TextColumn:
    """Encodes each distinct text of a batch once; with ``cache`` also keeps the vectors across batches.

    Cache item-level text (titles: about one text per item). Per-row text (user sequences, entity names)
    is nearly unique per row, so a cache would grow with the data; those columns are encoded per batch.
    """

    def __init__(self, encoder: TextEncoder, cache: bool = True) -> None:
        self.encoder = encoder
        self.cache = cache
        self.index: dict[bytes, int] = {}
        self.table = np.zeros((1024, encoder.dim), dtype=np.float32)
        self.size = 0
        self.calls = 0

    def _encode(self, texts: list[str]) -> np.ndarray:
        vecs = np.asarray(self.encoder.encode(texts), dtype=np.float32)
        self.calls += 1
        if vecs.shape != (len(texts), self.encoder.dim):
            raise ValueError(
                f"text encoder {self.encoder.name!r} returned shape {vecs.shape}, expected ({len(texts)}, "
                f"{self.encoder.dim})"
            )
        return vecs

    def __call__(self, column: pa.Array | pa.ChunkedArray) -> np.ndarray:
        col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        enc = pc.dictionary_encode(pc.fill_null(col, ""))  # a null text is the empty text
        uniques = enc.dictionary.to_pylist()
        codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        if not self.cache:
            return self._encode(uniques)[codes]
        keys = [_digest(u) for u in uniques]
        missing = [i for i, k in enumerate(keys) if k not in self.index]
        if missing:
            vecs = self._encode([uniques[i] for i in missing])
            need = self.size + len(missing)
            if need > self.table.shape[0]:  # grow geometrically: amortised O(1) per new text
                grown = np.zeros((max(need, 2 * self.table.shape[0]), self.encoder.dim), dtype=np.float32)
                grown[: self.size] = self.table[: self.size]
                self.table = grown
            self.table[self.size : need] = vecs
            for j, i in enumerate(missing):
                self.index[keys[i]] = self.size + j
            self.size = need
        rows = np.fromiter((self.index[k] for k in keys), dtype=np.int64, count=len(keys))
        return self.table[rows[codes]]


@dataclass
class BatchEncoder:
    """Turns record batches into model batches: categorical ids, scene, label, text and image vectors.

    Parameters
    ----------
    categorical:
        Integer or string columns used as categorical fields, in field order.
    num_buckets:
        Hash buckets per hashed field (an int for all, or a mapping by column); bucket 0 is null.
    vocab_fields:
        Columns looked up in exact vocabularies fit on the training split (0 pad, 1 OOV, so unseen users and
        items share one row) instead of hashed; call :meth:`fit` first.
    text:
        ``{vector name: (column or list of columns joined with " | ", encoder)}``.
    cache_text:
        Vector names whose texts are cached across batches (default: all). Leave per-row text out: it is
        nearly unique per row, so its cache would grow with the data.
    image:
        ``(item id array int64 [n], vectors float32 [n, D])``: looked up by ``image_key`` (zero for unknown).
    label, scene, user, item:
        Column names; ``scene`` may be ``None`` for single-scenario data (then scene 0 everywhere).
    extras:
        Float columns carried along untouched (e.g. ``p_true``).
    """

    categorical: Sequence[str]
    num_buckets: int | Mapping[str, int] = 2**16
    vocab_fields: Sequence[str] = ()
    text: Mapping[str, tuple[str | Sequence[str], TextEncoder]] = field(default_factory=dict)
    cache_text: Sequence[str] | None = None
    image: tuple[np.ndarray, np.ndarray] | None = None
    image_key: str = "item_id"
    label: str = "label"
    scene: str | None = "scene"
    num_scenes: int = 5
    user: str | None = "user_id"
    item: str | None = "item_id"
    extras: Sequence[str] = ()
    cold_flags: bool = True
    vocabs: dict[str, Vocabulary] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.categorical = list(self.categorical)
        if not self.categorical:
            raise ValueError("categorical must name at least one column")
        self.vocab_fields = list(self.vocab_fields)
        for c in self.vocab_fields:
            if c not in self.categorical:
                raise ValueError(f"vocab_fields: {c!r} is not one of the categorical columns")
        nb = self.num_buckets
        self._buckets = {c: int(nb[c]) if isinstance(nb, Mapping) else int(nb) for c in self.categorical}
        for c, b in self._buckets.items():
            if b <= 1:
                raise ValueError(f"num_buckets[{c!r}] must be > 1, got {b}")
        cached = set(self.text) if self.cache_text is None else set(self.cache_text)
        unknown = cached - set(self.text)
        if unknown:
            raise ValueError(f"cache_text names {sorted(unknown)}, which are not text vectors ({sorted(self.text)})")
        self._text = {name: _TextColumn(enc, cache=name in cached) for name, (_, enc) in self.text.items()}
        if self.image is not None:
            from .convert import ItemVectors

            # validates: rows == ids, float, finite, unique ids
            self._image = ItemVectors(np.asarray(self.image[1]), np.asarray(self.image[0]))
        self._cold_vocabs = {}

    # ---------------------------------------------------------------------------------------------- fit
    def columns(self, available: Sequence[str] | None = None) -> list[str]:
        cols = [self.label, *self.categorical]
        for _, (src, _) in self.text.items():
            cols += [src] if isinstance(src, str) else list(src)
        for c in (self.scene, self.user, self.item, self.image_key if self.image is not None else None):
            if c:
                cols.append(c)
        cols += list(self.extras)
        out = list(dict.fromkeys(cols))
        if available is not None:
            missing = [c for c in out if c not in available]
            if missing:
                raise ValueError(f"column(s) {missing} are missing from the data (have {list(available)})")
        return out

    def fit(self, train: ParquetSource) -> BatchEncoder:
        """Fit the vocabularies (and the cold-start reference sets of users and items) on the training split."""
        need = list(dict.fromkeys([*self.vocab_fields, *[c for c in (self.user, self.item) if c]]))
        if not need:
            return self
        self.columns(train.schema.names)
        vocabs = {c: Vocabulary() for c in need}
        for f in train.files:
            pf = pq.ParquetFile(f, pre_buffer=False)
            for rb in pf.iter_batches(batch_size=1 << 18, columns=need):
                for c in need:
                    col = rb.column(c).drop_null()
                    if len(col):
                        vocabs[c].partial_fit(_int_ids(col, c))
            pf.close()
        for c in need:
            vocabs[c].finalize()
        self.vocabs = {c: vocabs[c] for c in self.vocab_fields}
        self._cold_vocabs = {c: vocabs[c] for c in (self.user, self.item) if c}
        return self

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """The fitted vocabularies as arrays plus string metadata, for safetensors (no pickle).

        Each vocabulary is stored once (``{column}.values``, ``{column}.min_count``), whether it is a field's
        lookup table (``vocab_fields``) or the reference set of the cold-start flags (user and item).
        """
        import json

        vocabs = {**self._cold_vocabs, **self.vocabs}
        arrays = {f"{c}.{k}": np.ascontiguousarray(a) for c, v in vocabs.items() for k, a in v.to_arrays().items()}
        meta = {"vocab_fields": json.dumps(sorted(self.vocabs)), "cold_fields": json.dumps(sorted(self._cold_vocabs))}
        return arrays, meta

    def load_state(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, str]) -> BatchEncoder:
        """Restore what :meth:`state` saved into an encoder built with the same recipe; returns ``self``."""
        import json

        try:
            vocab_fields, cold_fields = json.loads(meta["vocab_fields"]), json.loads(meta["cold_fields"])
        except (KeyError, json.JSONDecodeError) as exc:
            raise ValueError(
                f"encoder state lacks its metadata ({exc}); was it written by BatchEncoder.state?"
            ) from None
        if sorted(vocab_fields) != sorted(self.vocab_fields):
            raise ValueError(
                f"encoder state has vocabularies for {vocab_fields}, the encoder needs {self.vocab_fields}"
            )
        vocabs = {}
        for col in dict.fromkeys([*vocab_fields, *cold_fields]):
            if f"{col}.values" not in arrays:
                raise ValueError(f"encoder state is missing the vocabulary of {col!r}")
            vocabs[col] = Vocabulary.from_arrays({k: arrays[f"{col}.{k}"] for k in ("values", "min_count")})
        self.vocabs = {c: vocabs[c] for c in vocab_fields}
        self._cold_vocabs = {c: vocabs[c] for c in cold_fields}
        return self

    def spec(self) -> FeatureSpec:
        sizes = []
        for c in self.categorical:
            if c in self.vocab_fields:
                if c not in self.vocabs:
                    raise RuntimeError(f"the vocabulary of {c!r} is not fit: call BatchEncoder.fit(train) first")
                sizes.append(self.vocabs[c].size)
            else:
                sizes.append(self._buckets[c])
        dims = {name: enc.dim for name, (_, enc) in self.text.items()}
        if self.image is not None:
            dims["image"] = int(np.asarray(self.image[1]).shape[1])
        return FeatureSpec(self.categorical, sizes, num_scenes=self.num_scenes if self.scene else 1, vector_dims=dims)

    # ------------------------------------------------------------------------------------------- encode
    def encode(self, rb: pa.RecordBatch | pa.Table) -> dict[str, np.ndarray]:
        n = rb.num_rows
        ids = np.empty((n, len(self.categorical)), dtype=np.int64)
        for j, c in enumerate(self.categorical):
            col = rb.column(c)
            if c in self.vocab_fields:
                ids[:, j] = self.vocabs[c].transform(_int_ids(col, c, nulls="zero"))
                nulls = _null_mask(col)
                if nulls is not None:
                    ids[nulls, j] = 0  # null -> the padding row, never a real id's row
            else:
                if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
                    h = hash_strings(col, seed=j)
                else:
                    h = hash_array(_int_ids(col, c, nulls="zero"), seed=j)
                b = bucketize(h, self._buckets[c])
                nulls = _null_mask(col)
                if nulls is not None:
                    b[nulls] = 0
                ids[:, j] = b
        out: dict[str, np.ndarray] = {"ids": ids}
        label = _numeric(rb.column(self.label), self.label)
        if not np.all((label == 0) | (label == 1)):
            bad = label[(label != 0) & (label != 1)][:3]
            raise ValueError(f"column {self.label!r} must hold 0/1 labels, found {bad.tolist()}")
        out["label"] = label.astype(np.float32)
        if self.scene:
            scene = _int_ids(rb.column(self.scene), self.scene)
            if n and (scene.min() < 0 or scene.max() >= self.num_scenes):
                raise ValueError(
                    f"column {self.scene!r} must lie in [0, {self.num_scenes}), got {scene.min()}..{scene.max()}"
                )
            out["scene"] = scene
        else:
            out["scene"] = np.zeros(n, dtype=np.int64)
        if self.user:
            out["user"] = _int_ids(rb.column(self.user), self.user, nulls="zero")
        for name, (src, _) in self.text.items():
            out[name] = self._text[name](_text_column(rb, src))
        if self.image is not None:
            key = _int_ids(rb.column(self.image_key), self.image_key, nulls="zero")  # null: no item, zero vector
            out["image"] = np.asarray(self._image.lookup(key), dtype=np.float32)
        if self.cold_flags:
            for c, flag in ((self.item, "cold_item"), (self.user, "cold_user")):
                if c and c in self._cold_vocabs:
                    out[flag] = self._cold_vocabs[c].transform(_int_ids(rb.column(c), c, nulls="zero")) == 1
        for c in self.extras:
            out[c] = _numeric(rb.column(c), c).astype(np.float32)
        return out

    def text_encoder_calls(self) -> dict[str, int]:
        """How many times each text encoder was called in this process (for tests and reports)."""
        return {name: col.calls for name, col in self._text.items()}


def _null_mask(col: pa.Array | pa.ChunkedArray) -> np.ndarray | None:
    if col.null_count == 0:
        return None
    return col.is_null().to_numpy(zero_copy_only=False)


def _int_ids(col: pa.Array | pa.ChunkedArray, name: str, *, nulls: str = "raise") -> np.ndarray:
    """int64 values of an integer column; ``nulls="raise"`` (ids that must be there: scene) or ``"zero"``
    (the caller maps null rows itself)."""
    if not (pa.types.is_integer(col.type)):
        raise TypeError(f"column {name!r} must hold integers, got Arrow type {col.type}")
    if col.null_count:
        if nulls == "raise":
            raise ValueError(f"column {name!r} has {col.null_count} null value(s)")
        col = col.fill_null(0)
    return col.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


def _numeric(col: pa.Array | pa.ChunkedArray, name: str) -> np.ndarray:
    if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
        raise TypeError(f"column {name!r} must be numeric, got Arrow type {col.type}")
    if col.null_count:
        raise ValueError(f"column {name!r} has {col.null_count} null value(s)")
    a = col.to_numpy(zero_copy_only=False)
    if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        raise ValueError(f"column {name!r} has NaN or infinite values")
    return a


def _text_column(rb: pa.RecordBatch | pa.Table, src: str | Sequence[str]) -> pa.Array:
    if isinstance(src, str):
        return rb.column(src)
    cols = [pc.fill_null(rb.column(c), "") for c in src]
    return pc.binary_join_element_wise(*cols, " | ")


class CTRStream(IterableDataset):
    """An epoch of batches from Parquet files: seeded unit shuffle, shards per rank x worker, bounded buffer.

    Parameters
    ----------
    source:
        A :class:`ParquetSource` (or what it takes: files or a folder).
    encoder:
        A :class:`BatchEncoder` (fit first if it uses vocabularies).
    batch_size:
        Rows per batch (> 0).
    shuffle:
        Permute units and rows each epoch (seeded by ``seed`` and the epoch); ``False`` reads in file order.
    buffer_rows:
        Rows held in the shuffle buffer (the bound on memory besides one record batch).
    rank, world_size:
        This process's place in a DDP job (default: from ``torch.distributed`` if initialised, else 0 / 1).
    num_workers:
        The DataLoader's ``num_workers``, for ``len()`` only (sharding reads the worker info itself).
    """

    def __init__(
        self,
        source: ParquetSource | Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
        encoder: BatchEncoder,
        *,
        batch_size: int = 4096,
        shuffle: bool = True,
        seed: int = 0,
        buffer_rows: int = 1 << 20,
        rank: int | None = None,
        world_size: int | None = None,
        read_rows: int = 65_536,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.num_workers = check_int(num_workers, "num_workers", minimum=0)
        self.source = source if isinstance(source, ParquetSource) else ParquetSource(source)
        self.encoder = encoder
        self.batch_size = check_int(batch_size, "batch_size", minimum=1)
        self.buffer_rows = check_int(buffer_rows, "buffer_rows", minimum=1)
        self.read_rows = check_int(read_rows, "read_rows", minimum=1)
        self.seed = check_int(seed, "seed", minimum=0)
        self.shuffle = bool(shuffle)
        if rank is None or world_size is None:
            dist_on = torch.distributed.is_available() and torch.distributed.is_initialized()
            rank = torch.distributed.get_rank() if dist_on else 0
            world_size = torch.distributed.get_world_size() if dist_on else 1
        self.world_size = check_int(world_size, "world_size", minimum=1)
        self.rank = check_int(rank, "rank", minimum=0, maximum=self.world_size - 1)
        self.epoch = 0
        self._columns = encoder.columns(self.source.schema.names)
        if encoder.vocab_fields and not encoder.vocabs:
            raise ValueError("encoder has vocab_fields but is not fit: call encoder.fit(train_source) first")
        if max(encoder.spec().field_sizes) >= 2**31:
            raise ValueError("field sizes must be < 2**31 (ids are buffered as int32)")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = check_int(epoch, "epoch", minimum=0)

    def batches_per_shard(self, num_workers: int = 1) -> int:
        shards = self.world_size * max(1, num_workers)
        return max(1, math.ceil(math.ceil(self.source.num_rows / shards) / self.batch_size))

    def __len__(self) -> int:
        """Batches this rank yields in an epoch, over all its DataLoader workers (pass ``num_workers``)."""
        w = max(1, self.num_workers)
        return self.batches_per_shard(w) * w

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        workers, worker = (1, 0) if info is None else (info.num_workers, info.id)
        shards = self.world_size * workers
        shard = self.rank * workers + worker
        plan = shard_plan(self.source.unit_rows, shards, shard, seed=self.seed, epoch=self.epoch, shuffle=self.shuffle)
        k_batches = self.batches_per_shard(workers)
        rng = np.random.default_rng([self.seed, self.epoch, shard, 0xB0F])
        emitted = 0
        buf: list[dict[str, np.ndarray]] = []
        held = 0

        def flush(final: bool) -> Iterator[dict[str, torch.Tensor]]:
            nonlocal buf, held, emitted
            if not buf:
                return
            keys = list(buf[0])
            block = {}
            for k in keys:  # one key at a time, dropping the parts as we go: peak ~2x one key, not 3x the buffer
                block[k] = np.concatenate([b.pop(k) for b in buf])
            buf = []
            n = len(block["label"])
            # batches gather their rows through the permutation (fancy indexing copies): no permuted copy
            # of the block, and no batch is a view that would keep the block alive after it is consumed
            order = rng.permutation(n) if self.shuffle else np.arange(n)
            full = n // self.batch_size
            for i in range(full):
                rows = order[i * self.batch_size : (i + 1) * self.batch_size]
                emitted += 1
                yield _to_torch({k: v[rows] for k, v in block.items()}, 1.0)
            rows = order[full * self.batch_size :]
            rest = {k: v[rows] for k, v in block.items()}
            del block
            n_rest = n - full * self.batch_size
            if final and n_rest:
                emitted += 1
                yield _to_torch(rest, 1.0)
                buf, held = [], 0
            else:
                buf, held = ([rest] if n_rest else []), n_rest

        last_template = None
        for unit in plan:
            for rb in self.source.read(unit, self._columns, self.read_rows):
                enc = self.encoder.encode(rb)
                enc["ids"] = enc["ids"].astype(np.int32)  # half the buffer; widened again per batch
                if last_template is None:
                    last_template = {k: v[:1].copy() for k, v in enc.items()}
                buf.append(enc)
                held += rb.num_rows
                if held >= self.buffer_rows:
                    yield from flush(False)
        yield from flush(True)
        if emitted < k_batches:  # short by at most one batch: one weight-0 padding row keeps ranks in step
            if last_template is None:
                last_template = self.encoder.encode(
                    self.source.read(self.source_first_unit(), self._columns, 1).__next__()
                )
            pad = {k: v[:1] for k, v in last_template.items()}
            emitted += 1
            yield _to_torch(pad, 0.0)
        if emitted != k_batches:  # pragma: no cover - guarded by the shard arithmetic
            raise RuntimeError(f"shard {shard} produced {emitted} batches, expected {k_batches}")

    def source_first_unit(self) -> Unit:
        f, g, n = self.source.unit_rows[0]
        return Unit(f, g, 0, min(n, 1))


def _writable(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    return a if a.flags.writeable else a.copy()


def _to_torch(block: Mapping[str, np.ndarray], weight: float) -> dict[str, torch.Tensor]:
    out: dict[str, Any] = {k: torch.from_numpy(_writable(v)) for k, v in block.items()}
    out["ids"] = out["ids"].to(torch.int64)
    out["weight"] = torch.full((len(block["label"]),), weight, dtype=torch.float32)
    return out


class ArrayBatches:
    """Re-iterable batches over in-memory arrays (a small split, or MovieLens): seeded reshuffle per epoch.

    ``arrays`` maps batch keys to arrays with the same first dimension (the layout of
    :mod:`bastion.ctr.features`). ``select`` (a boolean mask or index array) restricts the rows once.

    >>> b = ArrayBatches({"ids": np.zeros((5, 2), np.int64), "label": np.ones(5, np.float32)}, batch_size=2)
    >>> [len(x["label"]) for x in b], len(b)
    ([2, 2, 1], 3)
    """

    def __init__(
        self,
        arrays: Mapping[str, np.ndarray],
        *,
        batch_size: int = 4096,
        shuffle: bool = True,
        seed: int = 0,
        select: np.ndarray | None = None,
        keys: Sequence[str] | None = None,
    ) -> None:
        self.batch_size = check_int(batch_size, "batch_size", minimum=1)
        keys = list(keys) if keys is not None else list(arrays)
        missing = [k for k in keys if k not in arrays]
        if missing:
            raise ValueError(f"arrays is missing key(s) {missing}")
        lengths = {k: len(arrays[k]) for k in keys}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"arrays must share their first dimension, got {lengths}")
        self.arrays = {k: np.asarray(arrays[k]) for k in keys}
        if select is not None:
            self.arrays = {k: v[select] for k, v in self.arrays.items()}
        self.n = len(next(iter(self.arrays.values())))
        if self.n == 0:
            raise ValueError("arrays hold no rows (after select)")
        self.shuffle = bool(shuffle)
        self.seed = check_int(seed, "seed", minimum=0)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = check_int(epoch, "epoch", minimum=0)

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n) if self.shuffle else None
        for i in range(0, self.n, self.batch_size):
            idx = order[i : i + self.batch_size] if order is not None else slice(i, i + self.batch_size)
            yield {k: torch.from_numpy(_writable(v[idx])) for k, v in self.arrays.items()}


def materialize(
    source: ParquetSource | Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    encoder: BatchEncoder,
    *,
    read_rows: int = 1 << 17,
) -> dict[str, np.ndarray]:
    """Encode a whole (small) split into arrays, in file order. Memory grows with the split: for big data
    stream with :class:`CTRStream` instead."""
    src = source if isinstance(source, ParquetSource) else ParquetSource(source)
    cols = encoder.columns(src.schema.names)
    parts: list[dict[str, np.ndarray]] = []
    for f, g, n in src.unit_rows:
        for rb in src.read(Unit(f, g, 0, n), cols, read_rows):
            parts.append(encoder.encode(rb))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
