"""CSV → Parquet conversion of CTR logs in bounded memory, generic CTR readers, item-keyed vectors.

Followed: spec ``antm2c.md`` §1 (release format: header that may repeat inside a part, ``log_time`` as
``%Y-%m-%d %H:%M:%S``, the date split), §2 (streaming ``pyarrow.csv.open_csv`` → ``ParquetWriter``, zstd,
drop repeated headers, a bad ``log_time`` raises with its row number or is counted and quarantined, never
filled with a date as AMS does, which moves such rows into train; item-keyed float32 image vectors), §4
(``ParquetFile(pre_buffer=False).iter_batches``: the default pre-buffering grows memory with the file) and
§7 (bad input is a ``ValueError`` naming the column or argument).

How :func:`convert_csv` works, per input file:

1. the header line is read and checked against the schema (after the optional :class:`ColumnMapping`);
   a missing column is a ``ValueError`` naming it; columns outside the schema are not parsed;
2. the file streams in blocks (``block_size`` bytes) with every column read as text; rows equal to the
   header are dropped; each column is parsed into its Arrow type and checked (integers, label in {0, 1},
   scene in ``[0, num_scenes)``, finite numbers, times in the column's format, no empty value in id,
   label, scene and time columns);
3. a bad row raises ``ValueError`` naming the file, the row number, the column and the value
   (``bad_rows="raise"``), or is counted and written to ``quarantine.csv`` with the reason
   (``bad_rows="skip"``); rows with the wrong number of fields are handled the same way;
4. good rows go to the split of their time (``train/``, ``val/``, ``test/`` under ``out_dir``, or
   ``out_dir`` itself without a split), buffered up to ``row_group_size`` rows per split, **sorted by
   time within each buffer** (stable) and written as row groups of zstd Parquet files of at most
   ``rows_per_file`` rows (``part-00000.parquet``, ...). Files are therefore sorted within row groups and
   follow the input order across them (the release is roughly time-ordered); they are not globally sorted.

Row numbers are 1-based and count the header as row 1; blank lines are not counted (the number is the
line number of a file without blank lines or newlines inside quoted values). Memory is O(``block_size``
+ 3 × ``row_group_size`` rows), whatever the size of the files.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv
import pyarrow.parquet as pq

from ..core.checks import check_choice, check_int
from .schema import (
    SPLITS,
    TIME_FORMAT,
    Column,
    ColumnMapping,
    DateSplit,
    Schema,
    antm2c_schema,
    ctr_schema,
    missing_columns_message,
)

__all__ = [
    "ConvertSummary",
    "ItemVectors",
    "convert_csv",
    "iter_parquet_batches",
    "load_item_vectors",
    "parquet_files",
    "read_ctr_csv",
    "read_ctr_parquet",
    "save_item_vectors",
]

_INT_RE = r"^-?[0-9]+$"
_FLOAT_RE = r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$|^[+-]?(?:[nN][aA][nN]|[iI][nN][fF](?:inity)?)$"
_QUARANTINE = "quarantine.csv"
_SUMMARY = "_summary.json"


# ---------------------------------------------------------------------------------------------------
# parsing one column of text
# ---------------------------------------------------------------------------------------------------
def _np_bool(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Arrow boolean → NumPy bool, null counted as False."""
    return pc.fill_null(arr, False).to_numpy(zero_copy_only=False).astype(bool, copy=False)


def _cast_checked(values: pa.Array, target: pa.DataType, pattern: str) -> tuple[pa.Array, np.ndarray]:
    """Cast text ``values`` (nulls allowed) to ``target``; return the result and a mask of unparseable ones.

    Fast path: one Arrow cast. On failure, values that do not match ``pattern`` are nulled and the rest is
    cast again; whatever still fails (e.g. an integer beyond int64) is found element by element.
    """
    try:
        return pc.cast(values, target), np.zeros(len(values), dtype=bool)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    ok = pc.fill_null(pc.match_substring_regex(values, pattern), True)
    bad = ~_np_bool(ok)
    kept = pc.if_else(ok, values, pa.scalar(None, values.type))
    try:
        return pc.cast(kept, target), bad
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    out: list[Any] = []
    for i, s in enumerate(kept.to_pylist()):
        if s is None:
            out.append(None)
            continue
        try:
            out.append(pc.cast(pa.scalar(s, pa.string()), target).as_py())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            bad[i] = True
            out.append(None)
    return pa.array(out, type=target), bad


@dataclass
class _Problems:
    """Bad-row masks of one batch, in the order found: (column, reason, mask)."""

    items: list[tuple[str, str, np.ndarray]] = field(default_factory=list)

    def add(self, column: str, reason: str, mask: np.ndarray) -> None:
        if mask.any():
            self.items.append((column, reason, mask))

    def any_mask(self, n: int) -> np.ndarray:
        out = np.zeros(n, dtype=bool)
        for _, _, m in self.items:
            out |= m
        return out

    def first_reason(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Per row: index into ``items`` of its first problem (-1 if none)."""
        which = np.full(n, -1, dtype=np.int64)
        for k, (_, _, m) in enumerate(self.items):
            which[(which < 0) & m] = k
        return which, which >= 0


def _parse_column(col: Column, raw: pa.Array, num_scenes: int | None, problems: _Problems) -> pa.Array:
    """Text → ``col.dtype`` with the column's checks; bad values become null and are reported."""
    empty = _np_bool(pc.equal(raw, ""))
    dtype = col.dtype
    name = col.name
    if not col.nullable:
        problems.add(name, "empty value in a column that must not be null", empty)
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        # an empty text stays an empty text; an empty key or category is null
        out = raw if col.kind == "text" else pc.if_else(pa.array(empty), pa.scalar(None, raw.type), raw)
        return out.cast(dtype)
    text = pc.if_else(pa.array(empty), pa.scalar(None, raw.type), raw)
    if pa.types.is_timestamp(dtype):
        out = pc.strptime(text, format=col.time_format, unit=dtype.unit, error_is_null=True)
        bad = ~empty & _np_bool(pc.is_null(out))
        problems.add(name, f"is not a time in the format {col.time_format!r}", bad)
        return out.cast(dtype)
    if col.kind == "label":
        values, bad = _cast_checked(text, pa.float64(), _FLOAT_RE)
        problems.add(name, "is not a number", bad)
        not01 = ~_np_bool(pc.is_in(values, value_set=pa.array([0.0, 1.0]))) & ~empty & ~bad
        problems.add(name, "label must be 0 or 1", not01)
        keep = pc.if_else(pa.array(not01), pa.scalar(None, pa.float64()), values)
        return pc.cast(keep, dtype)
    if pa.types.is_integer(dtype):
        values, bad = _cast_checked(text, pa.int64(), _INT_RE)
        problems.add(name, "is not an integer" + _string_hint(col), bad)
        if col.kind == "scene":
            hi = num_scenes
            out_of = _np_bool(pc.less(values, 0))
            if hi is not None:
                out_of |= _np_bool(pc.greater_equal(values, hi))
            problems.add(name, f"scene must lie in [0, {hi if hi is not None else 'inf'})", out_of)
            values = pc.if_else(pa.array(out_of), pa.scalar(None, pa.int64()), values)
        if dtype != pa.int64():
            info = np.iinfo(dtype.to_pandas_dtype())
            over = _np_bool(pc.or_(pc.less(values, int(info.min)), pc.greater(values, int(info.max))))
            problems.add(name, f"does not fit {dtype}", over)
            values = pc.if_else(pa.array(over), pa.scalar(None, pa.int64()), values)
        return pc.cast(values, dtype)
    if pa.types.is_floating(dtype):
        values, bad = _cast_checked(text, pa.float64(), _FLOAT_RE)
        problems.add(name, "is not a number", bad)
        if dtype != pa.float64():
            values = pc.cast(values, dtype, safe=False)  # float32: a value beyond its range becomes inf
        nonfinite = _np_bool(pc.invert(pc.is_finite(values)))
        problems.add(name, "is NaN or infinite (numeric columns must be finite)", nonfinite)
        return pc.if_else(pa.array(nonfinite), pa.scalar(None, dtype), values)
    raise TypeError(f"cannot parse column {name!r} of Arrow type {dtype}")  # pragma: no cover - Column forbids


def _string_hint(col: Column) -> str:
    if col.kind == "categorical":
        return " (a string-valued categorical needs dtype=pa.string() in its schema)"
    return ""


def _check_typed_column(
    name: str, kind: str, nullable: bool, arr: pa.Array, num_scenes: int | None, problems: _Problems
) -> None:
    """The value checks of :func:`_parse_column` on an already typed column (Parquet input)."""
    if not nullable:
        problems.add(name, "null value in a column that must not be null", _np_bool(pc.is_null(arr)))
    if kind == "label" and not pa.types.is_boolean(arr.type):
        zero_one = pa.array([0, 1]).cast(arr.type)
        problems.add(
            name, "label must be 0 or 1", ~_np_bool(pc.is_in(arr, value_set=zero_one)) & _np_bool(pc.is_valid(arr))
        )
    elif kind == "scene":
        bad = _np_bool(pc.less(arr, 0))
        if num_scenes is not None:
            bad |= _np_bool(pc.greater_equal(arr, num_scenes))
        problems.add(name, f"scene must lie in [0, {num_scenes if num_scenes is not None else 'inf'})", bad)
    elif kind == "numeric" and pa.types.is_floating(arr.type):
        problems.add(
            name,
            "is NaN or infinite (numeric columns must be finite)",
            ~_np_bool(pc.is_finite(arr)) & _np_bool(pc.is_valid(arr)),
        )


# ---------------------------------------------------------------------------------------------------
# one CSV file as validated record batches
# ---------------------------------------------------------------------------------------------------
def _read_header(path: Path, delimiter: str, encoding: str) -> list[str]:
    import csv

    with pa.input_stream(str(path), compression="detect") as f:
        buf = b""
        while b"\n" not in buf:
            chunk = f.read(1 << 16)
            if not chunk:
                break
            buf += chunk
    line = buf.split(b"\n", 1)[0].rstrip(b"\r")
    if not line.strip():
        raise ValueError(f"{path} has no header line (the file is empty or starts with a blank line)")
    try:
        text = line.decode("utf-8-sig" if encoding.lower().replace("-", "") == "utf8" else encoding)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: the header line is not valid {encoding} ({e})") from None
    return next(csv.reader([text], delimiter=delimiter))


def _resolve_paths(paths: Any, name: str = "paths") -> list[Path]:
    if isinstance(paths, str | Path):
        paths = [paths]
    if not isinstance(paths, Sequence):
        raise TypeError(f"{name} must be a path or a list of paths, got {type(paths).__name__}")
    out = [Path(p) for p in paths]
    if not out:
        raise ValueError(f"{name} is empty: give at least one file")
    for i, p in enumerate(out):
        if not p.is_file():
            raise FileNotFoundError(f"{name}[{i}] = {str(p)!r} is not a file")
    return out


class _CsvFile:
    """Typed, checked record batches of one CSV file (header checked at construction)."""

    def __init__(
        self,
        path: Path,
        schema: Schema,
        mapping: ColumnMapping | None,
        *,
        bad_rows: str,
        block_size: int,
        delimiter: str,
        encoding: str,
        on_bad: Callable[[pa.Table], None] | None,
    ) -> None:
        self.path, self.schema, self.bad_rows, self.on_bad = path, schema, bad_rows, on_bad
        header = _read_header(path, delimiter, encoding)
        dup = sorted({h for h in header if header.count(h) > 1})
        if dup:
            raise ValueError(f"{path}: the header has duplicate column names {dup}")
        if mapping is not None:
            for src in mapping.mapping:
                if src not in header:
                    raise ValueError(f"mapping names source column {src!r}, which the header of {path} lacks")
        names = mapping.apply(header) if mapping is not None else list(header)
        have = set(names)
        missing = [n for n in schema.required if n not in have]
        if missing:
            after = " (after the column mapping)" if mapping is not None else ""
            raise ValueError(missing_columns_message(str(path), missing, schema.name, after))
        self.header = header
        self.present = [c for c in schema.columns if c.name in have]
        src_of = dict(zip(names, header, strict=True))
        self.sources = [src_of[c.name] for c in self.present]
        self.ignored = [h for h, n in zip(header, names, strict=True) if n not in schema]
        self.arrow_schema = pa.schema([c.field() for c in self.present])
        self.stats = {"rows_read": 0, "header_rows": 0, "bad_rows": 0, "rows": 0}
        self._invalid: list[tuple[int | None, str, int, int]] = []
        self._drained = 0
        self._skipped_idx: list[int] = []  # 0-based data-row indices the parser skipped (malformed rows)
        self._kept = 0  # data rows received from the parser so far

        def handler(row: Any) -> str:
            self._invalid.append((row.number, row.text, row.expected_columns, row.actual_columns))
            if row.number is not None:
                self._skipped_idx.append(row.number - 2)
            return "skip" if bad_rows == "skip" else "error"

        self._reader_args = dict(
            read_options=pv.ReadOptions(
                column_names=header, skip_rows=1, block_size=block_size, use_threads=False, encoding=encoding
            ),
            parse_options=pv.ParseOptions(delimiter=delimiter, invalid_row_handler=handler),
            convert_options=pv.ConvertOptions(
                include_columns=self.sources,
                column_types=dict.fromkeys(self.sources, pa.string()),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )

    def _row_numbers(self, n: int) -> np.ndarray:
        j = np.arange(self._kept, self._kept + n, dtype=np.int64)
        if self._skipped_idx:
            s = np.asarray(self._skipped_idx, dtype=np.int64)
            j = j + np.searchsorted(s - np.arange(len(s)), j, side="right")
        return j + 2

    def _drain_invalid(self) -> None:
        new = self._invalid[self._drained :]
        self._drained = len(self._invalid)
        if not new:
            return
        self.stats["bad_rows"] += len(new)
        self.stats["rows_read"] += len(new)
        if self.on_bad is not None:
            rows = [
                (n if n is not None else -1, f"has {act} fields, expected {exp}", text) for n, text, exp, act in new
            ]
            self.on_bad(
                _quarantine_table(
                    self.schema,
                    str(self.path),
                    np.array([r[0] for r in rows], dtype=np.int64),
                    [None] * len(rows),
                    [r[1] for r in rows],
                    [r[2] for r in rows],
                    {},
                )
            )

    def _raise_invalid(self, err: Exception) -> None:
        if self._invalid:
            num, text, exp, act = self._invalid[0]
            where = f"row {num}" if num is not None else "a row"
            raise ValueError(
                f"{self.path}: {where} has {act} fields, expected {exp}: {text[:120]!r} "
                "(bad_rows='skip' quarantines such rows)"
            ) from None
        raise ValueError(f"{self.path}: CSV parse error: {err}") from None

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        try:
            reader = pv.open_csv(str(self.path), **self._reader_args)
        except (pa.ArrowInvalid, UnicodeDecodeError) as e:
            self._raise_invalid(e)
        while True:
            try:
                raw = reader.read_next_batch()
            except StopIteration:
                break
            except (pa.ArrowInvalid, UnicodeDecodeError) as e:
                self._raise_invalid(e)
            if self.bad_rows == "skip":
                self._drain_invalid()
            out = self._process(raw)
            if out is not None and out.num_rows:
                yield out
        if self.bad_rows == "skip":
            self._drain_invalid()

    def _process(self, raw: pa.RecordBatch) -> pa.RecordBatch | None:
        n = raw.num_rows
        if n == 0:
            return None
        rows = self._row_numbers(n)
        self._kept += n
        self.stats["rows_read"] += n
        cols = [raw.column(s) for s in self.sources]
        # repeated header rows: every parsed column equals its header name
        is_header = _np_bool(pc.equal(cols[0], self.sources[0]))
        if is_header.any():
            for c, s in zip(cols[1:], self.sources[1:], strict=True):
                is_header &= _np_bool(pc.equal(c, s))
            if is_header.any():
                self.stats["header_rows"] += int(is_header.sum())
                keep = pa.array(~is_header)
                cols = [pc.filter(c, keep) for c in cols]
                rows = rows[~is_header]
                n = len(rows)
                if n == 0:
                    return None
        problems = _Problems()
        typed = [_parse_column(c, a, self.schema.num_scenes, problems) for c, a in zip(self.present, cols, strict=True)]
        if problems.items:
            which, bad = problems.first_reason(n)
            if self.bad_rows == "raise":
                i = int(np.flatnonzero(bad)[0])
                column, reason, _ = problems.items[which[i]]
                value = cols[[c.name for c in self.present].index(column)][i].as_py()
                raise ValueError(
                    f"{self.path}: row {int(rows[i])}, column {column!r}: value {str(value)[:80]!r} {reason} "
                    "(bad_rows='skip' quarantines such rows)"
                )
            self.stats["bad_rows"] += int(bad.sum())
            if self.on_bad is not None:
                idx = np.flatnonzero(bad)
                self.on_bad(
                    _quarantine_table(
                        self.schema,
                        str(self.path),
                        rows[idx],
                        [problems.items[k][0] for k in which[idx]],
                        [problems.items[k][1] for k in which[idx]],
                        [None] * len(idx),
                        {c.name: pc.take(a, pa.array(idx)) for c, a in zip(self.present, cols, strict=True)},
                    )
                )
            keep = pa.array(~bad)
            typed = [pc.filter(t, keep) for t in typed]
        batch = pa.RecordBatch.from_arrays(typed, schema=self.arrow_schema)
        self.stats["rows"] += batch.num_rows
        return batch


def _quarantine_schema(schema: Schema) -> pa.Schema:
    meta = [("_file", pa.string()), ("_row", pa.int64()), ("_column", pa.string()), ("_reason", pa.string())]
    return pa.schema([*meta, ("_raw", pa.string())] + [(n, pa.string()) for n in schema.names])


def _quarantine_table(
    schema: Schema,
    file: str,
    rows: np.ndarray,
    columns: list[str | None],
    reasons: list[str],
    raw: list[str | None],
    values: Mapping[str, pa.Array],
) -> pa.Table:
    n = len(rows)
    arrays = [
        pa.array([file] * n, pa.string()),
        pa.array(rows, pa.int64()),
        pa.array(columns, pa.string()),
        pa.array(reasons, pa.string()),
        pa.array(raw, pa.string()),
    ]
    arrays += [values[c].cast(pa.string()) if c in values else pa.nulls(n, pa.string()) for c in schema.names]
    return pa.Table.from_arrays(arrays, schema=_quarantine_schema(schema))


# ---------------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------------
class _PartWriter:
    """Parquet part files of one split: time-sorted row groups, at most ``rows_per_file`` rows a file."""

    def __init__(
        self,
        directory: Path,
        schema: pa.Schema,
        *,
        rows_per_file: int,
        row_group_size: int,
        compression: str,
        sort_by: str | None,
    ) -> None:
        self.directory, self.schema = directory, schema
        self.rows_per_file, self.row_group_size = rows_per_file, row_group_size
        self.compression, self.sort_by = compression, sort_by
        self.buffer: list[pa.Table] = []
        self.buffered = 0
        self.writer: pq.ParquetWriter | None = None
        self.file_rows = 0
        self.files: list[Path] = []
        self.rows = 0

    def add(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        self.buffer.append(table)
        self.buffered += table.num_rows
        if self.buffered >= self.row_group_size:
            self._flush(final=False)

    def _flush(self, *, final: bool) -> None:
        if not self.buffered:
            return
        table = pa.concat_tables(self.buffer)
        if self.sort_by is not None:
            table = table.take(pc.sort_indices(table, sort_keys=[(self.sort_by, "ascending")]))
        full = table.num_rows if final else (table.num_rows // self.row_group_size) * self.row_group_size
        self._write(table.slice(0, full))
        rest = table.slice(full)
        self.buffer = [rest] if rest.num_rows else []
        self.buffered = rest.num_rows

    def _write(self, table: pa.Table) -> None:
        offset = 0
        while offset < table.num_rows:
            if self.writer is None:
                self.directory.mkdir(parents=True, exist_ok=True)
                path = self.directory / f"part-{len(self.files):05d}.parquet"
                self.writer = pq.ParquetWriter(path, self.schema, compression=self.compression)
                self.files.append(path)
                self.file_rows = 0
            take = min(table.num_rows - offset, self.rows_per_file - self.file_rows)
            self.writer.write_table(table.slice(offset, take), row_group_size=self.row_group_size)
            offset += take
            self.file_rows += take
            self.rows += take
            if self.file_rows == self.rows_per_file:
                self.writer.close()
                self.writer = None

    def close(self) -> None:
        self._flush(final=True)
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def abort(self) -> None:
        if self.writer is not None:
            try:
                self.writer.close()
            finally:
                self.writer = None


@dataclass(frozen=True)
class ConvertSummary:
    """What :func:`convert_csv` wrote."""

    out_dir: Path
    rows: dict[str, int]
    """Rows written per split (``train``/``val``/``test``, or ``all`` without a split)."""
    files: dict[str, list[Path]]
    rows_read: int
    """Data rows read (repeated headers and bad rows included)."""
    header_rows: int
    """Repeated header rows dropped."""
    bad_rows: int
    quarantine_path: Path | None
    ignored_columns: tuple[str, ...]
    """Input columns outside the schema (not converted)."""

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "rows": dict(self.rows),
            "files": {k: [str(p.relative_to(self.out_dir)) for p in v] for k, v in self.files.items()},
            "rows_read": self.rows_read,
            "header_rows": self.header_rows,
            "bad_rows": self.bad_rows,
            "quarantine_path": None if self.quarantine_path is None else str(self.quarantine_path),
            "ignored_columns": list(self.ignored_columns),
        }


def _as_mapping(mapping: ColumnMapping | Mapping[str, str] | None, schema: Schema) -> ColumnMapping | None:
    if mapping is None:
        return None
    m = mapping if isinstance(mapping, ColumnMapping) else ColumnMapping(mapping)
    m.check(schema)
    return m


def convert_csv(
    paths: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    *,
    schema: Schema | None = None,
    mapping: ColumnMapping | Mapping[str, str] | None = None,
    bad_rows: str = "raise",
    rows_per_file: int = 2_000_000,
    row_group_size: int = 262_144,
    split: DateSplit | None = None,
    compression: str = "zstd",
    sort_by_time: bool = True,
    block_size: int = 4 << 20,
    delimiter: str = ",",
    encoding: str = "utf8",
    overwrite: bool = False,
) -> ConvertSummary:
    """Convert CSV files (e.g. ``antm2c_10m_part{0,1,2}``) to Parquet, streaming, in bounded memory.

    Parameters
    ----------
    paths:
        One CSV file or a list (``.gz``/``.bz2``/... are decompressed on the fly); each starts with a header.
    out_dir:
        Output folder: ``part-*.parquet`` there, or under ``train/``, ``val/``, ``test/`` with ``split``;
        ``quarantine.csv`` (bad rows, ``bad_rows="skip"``) and ``_summary.json``.
    schema:
        Defaults to ``antm2c_schema("public10m")``.
    mapping:
        ``{column in your files: schema column}`` (:class:`ColumnMapping`).
    bad_rows:
        ``"raise"`` (default): the first bad row is a ``ValueError`` with file, row number, column and
        value. ``"skip"``: count it and write it, with the reason, to ``quarantine.csv``.
    split:
        :class:`DateSplit` on the schema's time column (e.g. :data:`~bastion.ctr.schema.ANTM2C_SPLIT`).
    sort_by_time:
        Sort the rows of each row-group buffer by the time column (stable); see the module docstring.
    overwrite:
        Replace earlier outputs in ``out_dir`` (else existing part files are a ``FileExistsError``).

    The module docstring describes the checks; the summary is also written to ``out_dir/_summary.json``.
    """
    files = _resolve_paths(paths)
    schema = antm2c_schema("public10m") if schema is None else schema
    if not isinstance(schema, Schema):
        raise TypeError(f"schema must be a bastion.ctr.schema.Schema, got {type(schema).__name__}")
    cmap = _as_mapping(mapping, schema)
    check_choice(bad_rows, "bad_rows", ("raise", "skip"))
    rows_per_file = check_int(rows_per_file, "rows_per_file", minimum=1)
    row_group_size = check_int(row_group_size, "row_group_size", minimum=1)
    block_size = check_int(block_size, "block_size", minimum=1 << 10)
    if split is not None:
        if not isinstance(split, DateSplit):
            raise TypeError(f"split must be a DateSplit or None, got {type(split).__name__}")
        if schema.time is None:
            raise ValueError(f"split needs a time column, but schema {schema.name!r} has none")
        if schema[schema.time].optional:
            raise ValueError(
                f"split needs the time column {schema.time!r}, which schema {schema.name!r} marks optional"
            )
    try:
        pa.Codec(compression)
    except (ValueError, pa.ArrowException):
        raise ValueError(
            f"compression must be a Parquet codec such as 'zstd' or 'snappy', got {compression!r}"
        ) from None

    # open every file's header first: a missing column fails before anything is written
    out = Path(out_dir)
    quarantine: dict[str, Any] = {"writer": None, "path": out / _QUARANTINE}

    def on_bad(table: pa.Table) -> None:
        if quarantine["writer"] is None:
            quarantine["writer"] = pv.CSVWriter(str(quarantine["path"]), table.schema)
        quarantine["writer"].write_table(table)

    sources = [
        _CsvFile(
            p,
            schema,
            cmap,
            bad_rows=bad_rows,
            block_size=block_size,
            delimiter=delimiter,
            encoding=encoding,
            on_bad=on_bad,
        )
        for p in files
    ]
    layouts = {tuple(c.name for c in s.present) for s in sources}
    if len(layouts) > 1:
        raise ValueError(f"the files have different sets of schema columns: {sorted(layouts)}")
    split_names = SPLITS if split is not None else ("all",)
    dirs = {s: (out / s if split is not None else out) for s in split_names}
    old = [p for d in dirs.values() if d.is_dir() for p in sorted(d.glob("part-*.parquet"))]
    old += [p for p in (out / _QUARANTINE, out / _SUMMARY) if p.exists()]
    if old and not overwrite:
        raise FileExistsError(f"out_dir {str(out)!r} already holds outputs ({old[0].name}, ...); pass overwrite=True")
    for p in old:
        p.unlink()
    out.mkdir(parents=True, exist_ok=True)

    arrow_schema = sources[0].arrow_schema
    sort_by = schema.time if (sort_by_time and schema.time in arrow_schema.names) else None
    writers = {
        s: _PartWriter(
            dirs[s],
            arrow_schema,
            rows_per_file=rows_per_file,
            row_group_size=row_group_size,
            compression=compression,
            sort_by=sort_by,
        )
        for s in split_names
    }
    try:
        for src in sources:
            for batch in src:
                table = pa.Table.from_batches([batch])
                if split is None:
                    writers["all"].add(table)
                    continue
                code = split.assign(batch.column(schema.time))
                for k, s in enumerate(SPLITS):
                    mask = code == k
                    if mask.all():
                        writers[s].add(table)
                    elif mask.any():
                        writers[s].add(table.filter(pa.array(mask)))
        for w in writers.values():
            w.close()
    except BaseException:
        for w in writers.values():
            w.abort()
            for p in w.files:
                p.unlink(missing_ok=True)
        if quarantine["writer"] is not None:
            quarantine["writer"].close()
        quarantine["path"].unlink(missing_ok=True)
        raise
    if quarantine["writer"] is not None:
        quarantine["writer"].close()

    total = {k: sum(s.stats[k] for s in sources) for k in ("rows_read", "header_rows", "bad_rows")}
    ignored = tuple(dict.fromkeys(n for s in sources for n in s.ignored))
    if ignored:
        warnings.warn(f"columns outside schema {schema.name!r} were not converted: {list(ignored)}", stacklevel=2)
    summary = ConvertSummary(
        out_dir=out,
        rows={s: w.rows for s, w in writers.items()},
        files={s: list(w.files) for s, w in writers.items()},
        rows_read=total["rows_read"],
        header_rows=total["header_rows"],
        bad_rows=total["bad_rows"],
        quarantine_path=quarantine["path"] if quarantine["writer"] is not None else None,
        ignored_columns=ignored,
    )
    if split is not None:
        empty = [s for s in SPLITS if summary.rows[s] == 0]
        if empty:
            warnings.warn(f"split {empty} received no rows (bounds {split.train_end} / {split.val_end})", stacklevel=2)
    info = summary.as_dict()
    info["schema"] = schema.name
    info["inputs"] = [str(p) for p in files]
    if split is not None:
        info["split"] = {"train_end": split.train_end.isoformat(), "val_end": split.val_end.isoformat()}
    info["options"] = {
        "rows_per_file": rows_per_file,
        "row_group_size": row_group_size,
        "compression": compression,
        "sorted_by": sort_by,
        "bad_rows": bad_rows,
    }
    (out / _SUMMARY).write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return summary


# ---------------------------------------------------------------------------------------------------
# generic readers
# ---------------------------------------------------------------------------------------------------
def _collect(batches: Iterator[pa.RecordBatch], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_batches(list(batches), schema=schema)


def read_ctr_csv(
    path: str | Path,
    schema: Schema | None = None,
    *,
    label: str = "label",
    user: str | None = None,
    item: str | None = None,
    scene: str | None = None,
    num_scenes: int | None = None,
    time: str | None = None,
    time_format: str = TIME_FORMAT,
    categorical: Sequence[str] | Mapping[str, pa.DataType] = (),
    numeric: Sequence[str] | Mapping[str, pa.DataType] = (),
    text: Sequence[str] = (),
    mapping: ColumnMapping | Mapping[str, str] | None = None,
    bad_rows: str = "raise",
    block_size: int = 4 << 20,
    delimiter: str = ",",
    encoding: str = "utf8",
    batches: bool = False,
) -> pa.Table | Iterator[pa.RecordBatch]:
    """Read your own CTR CSV with the checks of :func:`convert_csv`: an Arrow table, or batches.

    Give a :class:`Schema`, or the column roles (built with :func:`~bastion.ctr.schema.ctr_schema`:
    categoricals are strings unless typed, numerics float64). Only the schema's columns are read. The
    header is checked at once (a missing column is a ``ValueError`` naming it), also with
    ``batches=True``. With ``bad_rows="skip"`` bad rows are dropped and counted in a warning at the end.

    >>> import tempfile, os
    >>> d = tempfile.mkdtemp(); p = os.path.join(d, "x.csv")
    >>> _ = open(p, "w").write("click,uid,genre\\n1,7,drama\\n0,8,comedy\\n")
    >>> read_ctr_csv(p, label="click", user="uid", categorical=["genre"]).to_pydict()
    {'uid': [7, 8], 'click': [1, 0], 'genre': ['drama', 'comedy']}
    """
    if schema is None:
        schema = ctr_schema(
            "csv",
            label=label,
            user=user,
            item=item,
            scene=scene,
            num_scenes=num_scenes,
            time=time,
            time_format=time_format,
            categorical=categorical,
            numeric=numeric,
            text=text,
        )
    elif not isinstance(schema, Schema):
        raise TypeError(f"schema must be a bastion.ctr.schema.Schema or None, got {type(schema).__name__}")
    check_choice(bad_rows, "bad_rows", ("raise", "skip"))
    (file,) = _resolve_paths(path, "path")
    src = _CsvFile(
        file,
        schema,
        _as_mapping(mapping, schema),
        bad_rows=bad_rows,
        block_size=check_int(block_size, "block_size", minimum=1 << 10),
        delimiter=delimiter,
        encoding=encoding,
        on_bad=None,
    )

    def gen() -> Iterator[pa.RecordBatch]:
        yield from src
        if src.stats["bad_rows"]:
            warnings.warn(f"{file}: skipped {src.stats['bad_rows']} bad rows", stacklevel=2)

    return gen() if batches else _collect(gen(), src.arrow_schema)


def parquet_files(paths: str | Path | Sequence[str | Path], name: str = "paths") -> list[Path]:
    """Parquet files of a file, a folder (every ``*.parquet`` below it, sorted) or a list of them."""
    items = [paths] if isinstance(paths, str | Path) else list(paths)
    if not items:
        raise ValueError(f"{name} is empty: give at least one Parquet file or folder")
    out: list[Path] = []
    for p in map(Path, items):
        if p.is_dir():
            found = sorted(p.rglob("*.parquet"))
            if not found:
                raise ValueError(f"{name}: folder {str(p)!r} holds no .parquet files")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"{name}: {str(p)!r} is neither a file nor a folder")
    return out


def iter_parquet_batches(
    paths: str | Path | Sequence[str | Path], *, columns: Sequence[str] | None = None, batch_size: int = 65_536
) -> Iterator[tuple[Path, pa.RecordBatch]]:
    """``(file, batch)`` pairs of Parquet files, read with ``pre_buffer=False`` (memory stays flat, spec §4)."""
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    for path in parquet_files(paths):
        f = pq.ParquetFile(path, pre_buffer=False)
        try:
            if columns is not None:
                missing = [c for c in columns if c not in f.schema_arrow.names]
                if missing:
                    raise ValueError(f"{path} is missing column {missing[0]!r} (columns={list(columns)})")
            for batch in f.iter_batches(batch_size=batch_size, columns=None if columns is None else list(columns)):
                yield path, batch
        finally:
            f.close()


def read_ctr_parquet(
    paths: str | Path | Sequence[str | Path],
    schema: Schema | None = None,
    *,
    columns: Sequence[str] | None = None,
    label: str | None = "label",
    scene: str | None = None,
    num_scenes: int | None = None,
    numeric: Sequence[str] = (),
    batch_size: int = 65_536,
    batches: bool = False,
) -> pa.Table | Iterator[pa.RecordBatch]:
    """Read CTR Parquet files (a file, a folder of parts or a list): an Arrow table or streamed batches.

    With a :class:`Schema`: every file must hold its required columns (``ValueError`` naming a missing
    one), columns are cast to the schema's types (a cast that loses values is an error) and checked like
    CSV input; the batches hold the schema's columns (or ``columns``). Without one: ``columns`` (default
    all) as stored, with ``label`` checked to be 0/1, ``scene`` in ``[0, num_scenes)`` and ``numeric``
    finite. Errors name the file, the 1-based row in it and the column.
    """
    files = parquet_files(paths)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    if schema is not None and not isinstance(schema, Schema):
        raise TypeError(f"schema must be a bastion.ctr.schema.Schema or None, got {type(schema).__name__}")
    first = pq.read_schema(files[0])
    if schema is not None:
        present = schema.validate(first, check_types=False, what=str(files[0]))
        names = list(columns) if columns is not None else list(present)
        for n in names:
            schema.column(n)
        checks = [(n, schema[n].kind, bool(schema[n].nullable)) for n in names]
        n_scenes = schema.num_scenes
        out_schema = pa.schema([schema[n].field() for n in names])
    else:
        names = list(columns) if columns is not None else list(first.names)
        roles = {label: "label", scene: "scene"} | dict.fromkeys(numeric, "numeric")
        roles.pop(None, None)
        for n in roles:
            if n not in first.names:
                raise ValueError(f"{files[0]} is missing column {n!r} (given as the {roles[n]} column)")
            if n not in names:
                names.append(n)
        checks = [(n, roles[n], roles[n] == "numeric") for n in names if n in roles]
        n_scenes = None if num_scenes is None else check_int(num_scenes, "num_scenes", minimum=1)
        out_schema = pa.schema([first.field(n) for n in names])

    def gen() -> Iterator[pa.RecordBatch]:
        offset: dict[Path, int] = {}
        for path, batch in iter_parquet_batches(files, columns=names, batch_size=batch_size):
            start = offset.get(path, 0)
            offset[path] = start + batch.num_rows
            arrays = []
            for n, f in zip(names, out_schema, strict=True):
                arr = batch.column(n)
                if arr.type != f.type:
                    try:
                        arr = pc.cast(arr, f.type, safe=True)
                    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                        raise TypeError(
                            f"{path}: column {n!r} of type {arr.type} does not cast to {f.type}: {e}"
                        ) from None
                arrays.append(arr)
            out = pa.RecordBatch.from_arrays(arrays, schema=out_schema)
            problems = _Problems()
            for n, kind, nullable in checks:
                _check_typed_column(n, kind, nullable, out.column(n), n_scenes, problems)
            if problems.items:
                which, bad = problems.first_reason(out.num_rows)
                i = int(np.flatnonzero(bad)[0])
                column, reason, _ = problems.items[which[i]]
                value = out.column(column)[i].as_py()
                raise ValueError(f"{path}: row {start + i + 1}, column {column!r}: value {value!r} {reason}")
            yield out

    return gen() if batches else _collect(gen(), out_schema)


# ---------------------------------------------------------------------------------------------------
# item-keyed content vectors
# ---------------------------------------------------------------------------------------------------
def _to_numpy(x: Any) -> Any:
    try:
        import torch

        if isinstance(x, torch.Tensor):
            return x.detach().cpu().numpy()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return x


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


class ItemVectors:
    """Item-keyed float32 vectors ``[n_items, D]`` (image or text embeddings from any encoder).

    :meth:`lookup` gives one row per requested item id, a zero row for ids it does not know;
    :meth:`index` gives rows into :meth:`padded_table` (row 0 = unknown, zeros) for an embedding layer.

    >>> v = ItemVectors(np.eye(2, dtype=np.float32), np.array([10, 42]))
    >>> v.lookup(np.array([42, 7])).tolist()
    [[0.0, 1.0], [0.0, 0.0]]
    >>> v.index(np.array([42, 7, 10])).tolist()
    [2, 0, 1]
    """

    def __init__(self, vectors: Any, item_ids: Any) -> None:
        vectors, item_ids = _to_numpy(vectors), _to_numpy(item_ids)
        if not isinstance(vectors, np.ndarray) or vectors.ndim != 2:
            raise ValueError(
                f"vectors must be a 2-D array [n_items, D], got {getattr(vectors, 'shape', type(vectors))}"
            )
        if not np.issubdtype(vectors.dtype, np.floating):
            raise TypeError(f"vectors must be floating point, got dtype {vectors.dtype}")
        ids = np.asarray(item_ids)
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"item_ids must be a 1-D integer array, got dtype {ids.dtype} and shape {ids.shape}")
        if vectors.shape[0] != ids.shape[0]:
            raise ValueError(
                f"vectors has {vectors.shape[0]} rows but item_ids has {ids.shape[0]} items (embedding rows != items)"
            )
        if ids.shape[0] == 0 or vectors.shape[1] == 0:
            raise ValueError(f"vectors must not be empty, got shape {vectors.shape}")
        if ids.dtype == np.uint64 and (ids > np.iinfo(np.int64).max).any():
            raise ValueError("item_ids holds values above 2**63 - 1; item ids are int64")
        ids = ids.astype(np.int64, copy=False)
        if vectors.dtype != np.float32:
            vectors = vectors.astype(np.float32)  # float16 exactly, float64 rounded to float32
        for start in range(0, vectors.shape[0], 1 << 16):  # chunked: vectors may be a memory map
            chunk = vectors[start : start + (1 << 16)]
            if not np.isfinite(chunk).all():
                row = start + int(np.flatnonzero(~np.isfinite(chunk).all(axis=1))[0])
                raise ValueError(f"vectors has NaN or infinite values (first in row {row}, item {int(ids[row])})")
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]
        dup = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
        if dup.size:
            raise ValueError(f"item_ids must be unique, got item {int(sorted_ids[dup[0]])} more than once")
        self.vectors = vectors
        self.item_ids = ids
        self._sorted_ids = sorted_ids
        self._order = order

    @property
    def num_items(self) -> int:
        return int(self.item_ids.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def _ids(self, ids: Any) -> np.ndarray:
        arr = np.asarray(_to_numpy(ids))
        if not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"ids must be integers (item ids), got dtype {arr.dtype}")
        return arr.astype(np.int64, copy=False)

    def index(self, ids: Any) -> Any:
        """int64 rows of ``ids`` into :meth:`padded_table`: ``1 + row`` of a known item, 0 for an unknown one."""
        is_torch = _is_torch(ids)
        q = self._ids(ids)
        pos = np.searchsorted(self._sorted_ids, q)
        pos_c = np.minimum(pos, self.num_items - 1)
        found = self._sorted_ids[pos_c] == q
        out = np.where(found, self._order[pos_c] + 1, 0).astype(np.int64)
        return _like(out, is_torch)

    def known(self, ids: Any) -> Any:
        """bool mask: which ``ids`` have a vector."""
        is_torch = _is_torch(ids)
        return _like(np.asarray(_to_numpy(self.index(self._ids(ids)))) > 0, is_torch)

    def lookup(self, ids: Any) -> Any:
        """float32 ``[*ids.shape, D]``: the vector of each id, zeros for unknown ids (NumPy or torch, like ``ids``)."""
        is_torch = _is_torch(ids)
        q = self._ids(ids)
        idx = np.asarray(self.index(q)).reshape(-1)
        out = np.zeros((idx.shape[0], self.dim), dtype=np.float32)
        hit = idx > 0
        if hit.any():
            rows = idx[hit] - 1
            order = np.argsort(rows, kind="stable")  # sorted reads: friendly to a memory-mapped file
            out_hit = np.empty((rows.shape[0], self.dim), dtype=np.float32)
            out_hit[order] = self.vectors[rows[order]]
            out[hit] = out_hit
        return _like(out.reshape(*q.shape, self.dim), is_torch)

    def padded_table(self) -> np.ndarray:
        """float32 ``[n_items + 1, D]``: a zero row, then :attr:`vectors` (rows match :meth:`index`)."""
        return np.concatenate([np.zeros((1, self.dim), np.float32), np.asarray(self.vectors, np.float32)])


def _like(arr: np.ndarray, as_torch: bool) -> Any:
    if as_torch:
        import torch

        return torch.from_numpy(np.ascontiguousarray(arr))
    return arr


def _load_array(path: Path, what: str, mmap: bool) -> np.ndarray:
    if path.suffix == ".npy":
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    raise ValueError(f"{what} file {str(path)!r} must be .npy (or give the array)")


def load_item_vectors(
    vectors: Any,
    item_ids: Any = None,
    *,
    vectors_key: str = "vectors",
    ids_key: str = "item_id",
    mmap: bool = True,
) -> ItemVectors:
    """Item-keyed vectors from an array, a ``.npy`` file (memory-mapped) or a ``.safetensors`` file.

    ``item_ids`` (int64 ``[n_items]``: the item of each row) is an array or a ``.npy`` path; a safetensors
    file may hold it under ``ids_key`` next to the vectors under ``vectors_key``. Rows != items, duplicate
    ids and NaN/inf vectors are errors.
    """
    if isinstance(vectors, str | Path):
        path = Path(vectors)
        if not path.is_file():
            raise FileNotFoundError(f"vectors: {str(path)!r} is not a file")
        if path.suffix == ".safetensors":
            from safetensors.numpy import load_file

            stored = load_file(str(path))
            if vectors_key not in stored:
                raise ValueError(f"{path} has no tensor {vectors_key!r} (vectors_key); it holds {sorted(stored)}")
            vectors = stored[vectors_key]
            if item_ids is None:
                if ids_key not in stored:
                    raise ValueError(f"{path} has no tensor {ids_key!r} (ids_key) and item_ids was not given")
                item_ids = stored[ids_key]
        else:
            vectors = _load_array(path, "vectors", mmap)
    if item_ids is None:
        raise ValueError("item_ids is required (the item id of each vector row)")
    if isinstance(item_ids, str | Path):
        item_ids = _load_array(Path(item_ids), "item_ids", mmap=False)
    return ItemVectors(vectors, item_ids)


def save_item_vectors(path: str | Path, vectors: Any, item_ids: Any) -> Path:
    """Write item vectors and their ids to a ``.safetensors`` file that :func:`load_item_vectors` reads."""
    from safetensors.numpy import save_file

    v = ItemVectors(vectors, item_ids)  # the same checks as on reading
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"path must end in .safetensors, got {str(path)!r}")
    save_file({"vectors": np.ascontiguousarray(v.vectors), "item_id": np.ascontiguousarray(v.item_ids)}, str(path))
    return path
