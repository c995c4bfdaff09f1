"""Column schemas of CTR data: the AntM2C release, the papers' declared feature groups, and user data.

Followed: spec ``antm2c.md`` §1 (the public release's 37 columns, its date split) and §2 (schema with kind
and owner per column, a column mapping for user data, explicit datetime split bounds). The ``"paper"``
schema is our reconstruction **[R]** of the feature groups the papers declare (about 200 features, five
text and one image feature); its categorical and numeric column names are invented.

A :class:`Schema` is a tuple of :class:`Column` (name, kind, owner, Arrow type, nullability). It checks an
Arrow schema or table (:meth:`Schema.validate`: a missing column is a ``ValueError`` naming it) and tells
the converter how to parse each CSV column (:mod:`bastion.ctr.convert`). :class:`ColumnMapping` maps the
header of a user's file onto the schema's names; :class:`DateSplit` holds the train/val/test bounds.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..core.checks import check_choice, check_int

__all__ = [
    "ANTM2C_SPLIT",
    "KINDS",
    "OWNERS",
    "SPLITS",
    "TIME_FORMAT",
    "Column",
    "ColumnMapping",
    "DateSplit",
    "Schema",
    "antm2c_schema",
    "ctr_schema",
]

KINDS = ("id", "categorical", "numeric", "text", "image", "label", "scene", "time")
"""What a column holds: an entity key, a categorical field, a number, text, an image key, the click label,
the scene index, the event time."""
OWNERS = ("user", "item", "context")
"""Whom a column describes (the row itself, e.g. its scene or time, is ``"context"``)."""
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
"""``log_time`` format of the AntM2C release."""
SPLITS = ("train", "val", "test")

_DEFAULT_TYPES: dict[str, pa.DataType] = {
    "id": pa.int64(),
    "categorical": pa.int64(),
    "numeric": pa.float64(),
    "text": pa.string(),
    "image": pa.string(),
    "label": pa.int8(),
    "scene": pa.int64(),
    "time": pa.timestamp("ms"),  # Parquet has no seconds unit: [s] would read back as [ms]
}
_NOT_NULL_KINDS = ("id", "label", "scene", "time")


@dataclass(frozen=True)
class Column:
    """One column: its name, what it holds (``kind``), whom it describes (``owner``) and its Arrow type.

    ``dtype`` defaults by kind (ids and categoricals int64, numeric float64, text and image keys string,
    label int8, scene int64, time ``timestamp[ms]``, which Parquet stores as is); ``nullable`` defaults
    to ``False`` for id, label, scene and time, ``True`` otherwise (an empty CSV field of a nullable
    column becomes null, never a made-up value). ``optional`` columns may be absent from a file.
    ``time_format`` (time columns only) is the ``strptime`` format of the CSV text.

    >>> Column("scene", "scene", "context").dtype
    DataType(int64)
    >>> Column("x", "colour", "item")
    Traceback (most recent call last):
    ValueError: kind of column 'x' must be one of 'id', 'categorical', 'numeric', 'text', 'image', 'label', \
'scene', 'time'; got 'colour'
    """

    name: str
    kind: str
    owner: str
    dtype: pa.DataType | None = None
    nullable: bool | None = None
    optional: bool = False
    time_format: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"column name must be a non-empty string, got {self.name!r}")
        check_choice(self.kind, f"kind of column {self.name!r}", KINDS)
        check_choice(self.owner, f"owner of column {self.name!r}", OWNERS)
        dtype = _DEFAULT_TYPES[self.kind] if self.dtype is None else self.dtype
        if not isinstance(dtype, pa.DataType):
            raise TypeError(f"dtype of column {self.name!r} must be a pyarrow DataType, got {type(dtype).__name__}")
        allowed = {
            "label": pa.types.is_integer,
            "scene": pa.types.is_integer,
            "time": pa.types.is_timestamp,
            "numeric": lambda t: pa.types.is_floating(t) or pa.types.is_integer(t),
            "id": lambda t: pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t),
            "categorical": lambda t: pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t),
            "text": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
            "image": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t),
        }[self.kind]
        if not allowed(dtype):
            raise TypeError(f"dtype {dtype} does not fit a {self.kind!r} column ({self.name!r})")
        object.__setattr__(self, "dtype", dtype)
        nullable = self.kind not in _NOT_NULL_KINDS if self.nullable is None else bool(self.nullable)
        object.__setattr__(self, "nullable", nullable)
        if self.kind == "time":
            fmt = TIME_FORMAT if self.time_format is None else self.time_format
            if not isinstance(fmt, str) or "%" not in fmt:
                raise ValueError(f"time_format of column {self.name!r} must be a strptime format, got {fmt!r}")
            object.__setattr__(self, "time_format", fmt)
        elif self.time_format is not None:
            raise ValueError(f"time_format is only for time columns; column {self.name!r} is {self.kind!r}")

    def field(self) -> pa.Field:
        """The Arrow field (name, type, nullability)."""
        return pa.field(self.name, self.dtype, nullable=bool(self.nullable))

    def renamed(self, name: str) -> Column:
        return Column(
            name, self.kind, self.owner, self.dtype, self.nullable, self.optional, self.time_format, self.description
        )


@dataclass(frozen=True)
class Schema:
    """An ordered set of :class:`Column`, with the number of scenes when a scene column exists.

    >>> s = antm2c_schema("public10m")
    >>> len(s), s.label, s.scene, s.time, s.num_scenes
    (37, 'label', 'scene', 'log_time', 5)
    >>> [c.name for c in s.by_kind("text")][:2]
    ['bill_entity_seq', 'service_entity_seq']
    """

    name: str
    columns: tuple[Column, ...]
    num_scenes: int | None = None
    description: str = ""
    reconstruction: bool = False
    """True when the columns are our reconstruction, not the data's own (``antm2c_schema("paper")``)."""
    _index: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        cols = tuple(self.columns)
        if not cols:
            raise ValueError(f"schema {self.name!r} needs at least one column")
        for c in cols:
            if not isinstance(c, Column):
                raise TypeError(f"schema columns must be Column objects, got {type(c).__name__}")
        names = [c.name for c in cols]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"schema {self.name!r} has duplicate column names: {dup}")
        for kind in ("label", "scene", "time"):
            of_kind = [c.name for c in cols if c.kind == kind]
            if len(of_kind) > 1:
                raise ValueError(f"schema {self.name!r} may have at most one {kind} column, got {of_kind}")
        object.__setattr__(self, "columns", cols)
        has_scene = any(c.kind == "scene" for c in cols)
        if self.num_scenes is not None:
            if not has_scene:
                raise ValueError(f"num_scenes is given but schema {self.name!r} has no scene column")
            object.__setattr__(self, "num_scenes", check_int(self.num_scenes, "num_scenes", minimum=1))
        object.__setattr__(self, "_index", {n: i for i, n in enumerate(names)})

    # -- access -------------------------------------------------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def __len__(self) -> int:
        return len(self.columns)

    def __iter__(self) -> Iterator[Column]:
        return iter(self.columns)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __getitem__(self, name: str) -> Column:
        return self.column(name)

    def column(self, name: str) -> Column:
        """The column called ``name``; ``ValueError`` naming it when the schema has none."""
        if name not in self._index:
            raise ValueError(f"schema {self.name!r} has no column {name!r}")
        return self.columns[self._index[name]]

    def by_kind(self, *kinds: str) -> tuple[Column, ...]:
        for k in kinds:
            check_choice(k, "kind", KINDS)
        return tuple(c for c in self.columns if c.kind in kinds)

    def by_owner(self, owner: str) -> tuple[Column, ...]:
        check_choice(owner, "owner", OWNERS)
        return tuple(c for c in self.columns if c.owner == owner)

    def _one(self, kind: str) -> str | None:
        cols = self.by_kind(kind)
        return cols[0].name if cols else None

    @property
    def label(self) -> str | None:
        """Name of the label column (None if the schema has none)."""
        return self._one("label")

    @property
    def scene(self) -> str | None:
        return self._one("scene")

    @property
    def time(self) -> str | None:
        return self._one("time")

    @property
    def required(self) -> tuple[str, ...]:
        """Names of the columns every file must have (all but ``optional`` ones)."""
        return tuple(c.name for c in self.columns if not c.optional)

    def arrow_schema(self, names: Sequence[str] | None = None) -> pa.Schema:
        """The Arrow schema of all columns, or of ``names`` in schema order."""
        keep = None if names is None else set(names)
        if keep is not None:
            for n in keep:
                self.column(n)
        return pa.schema([c.field() for c in self.columns if keep is None or c.name in keep])

    # -- derived schemas ----------------------------------------------------------------------------
    def select(self, names: Sequence[str]) -> Schema:
        """A schema of ``names`` (in the given order)."""
        cols = tuple(self.column(n) for n in names)
        scenes = self.num_scenes if any(c.kind == "scene" for c in cols) else None
        return Schema(self.name, cols, scenes, self.description, self.reconstruction)

    def rename(self, mapping: Mapping[str, str]) -> Schema:
        """A schema whose columns ``old`` are called ``mapping[old]`` (the other columns keep their names).

        >>> antm2c_schema().rename({"user_id": "uid"}).names[:2]
        ('uid', 'item_id')
        """
        for old in mapping:
            self.column(old)
        cols = tuple(c.renamed(mapping.get(c.name, c.name)) for c in self.columns)
        return Schema(self.name, cols, self.num_scenes, self.description, self.reconstruction)

    # -- checks -------------------------------------------------------------------------------------
    def validate(self, data: Any, *, check_types: bool = True, what: str = "data") -> tuple[str, ...]:
        """Check that ``data`` (an Arrow schema, table or record batch) has this schema's columns.

        A missing required column is a ``ValueError`` naming it; with ``check_types`` a column of another
        Arrow type is a ``TypeError`` naming the column, the expected and the found type. Returns the names
        of the schema columns present, in schema order (extra columns are allowed and ignored).

        >>> s = antm2c_schema()
        >>> s.validate(s.arrow_schema().remove(9))
        Traceback (most recent call last):
        ValueError: data is missing column 'scene' required by schema 'public10m'
        """
        if isinstance(data, pa.Schema):
            arrow = data
        elif isinstance(data, pa.Table | pa.RecordBatch):
            arrow = data.schema
        else:
            raise TypeError(f"{what} must be a pyarrow Schema, Table or RecordBatch, got {type(data).__name__}")
        have = set(arrow.names)
        missing = [n for n in self.required if n not in have]
        if missing:
            raise ValueError(missing_columns_message(what, missing, self.name))
        present = tuple(c.name for c in self.columns if c.name in have)
        if check_types:
            for n in present:
                got, want = arrow.field(n).type, self.column(n).dtype
                if got != want:
                    raise TypeError(f"{what} column {n!r} must have Arrow type {want}, got {got}")
        return present


def missing_columns_message(what: str, missing: Sequence[str], schema_name: str, suffix: str = "") -> str:
    """``"<what> is missing column 'x' required by schema 's'"`` (at most 12 names, then a count)."""
    listed = ", ".join(repr(m) for m in missing[:12])
    if len(missing) > 12:
        listed += f" and {len(missing) - 12} more"
    word = "column" if len(missing) == 1 else "columns"
    return f"{what} is missing {word} {listed} required by schema {schema_name!r}{suffix}"


@dataclass(frozen=True)
class ColumnMapping:
    """Map the header of a user's file onto a schema: ``{name in your file: schema column name}``.

    Unmapped header names are kept as they are. Two header names mapping onto one schema column is an
    error, and so is a target that the schema does not have (:meth:`check`).

    >>> m = ColumnMapping({"uid": "user_id", "click": "label"})
    >>> m.apply(["uid", "item_id", "click"])
    ['user_id', 'item_id', 'label']
    >>> m.source_of("label")
    'click'
    """

    mapping: Mapping[str, str]

    def __post_init__(self) -> None:
        if not isinstance(self.mapping, Mapping):
            raise TypeError(f"mapping must be a dict {{source name: schema name}}, got {type(self.mapping).__name__}")
        pairs = dict(self.mapping)
        for src, dst in pairs.items():
            if not isinstance(src, str) or not isinstance(dst, str) or not src or not dst:
                raise ValueError(f"mapping entries must be non-empty strings, got {src!r}: {dst!r}")
        targets = list(pairs.values())
        dup = sorted({t for t in targets if targets.count(t) > 1})
        if dup:
            raise ValueError(f"mapping sends several source columns onto {dup}")
        object.__setattr__(self, "mapping", pairs)

    def check(self, schema: Schema) -> None:
        """``ValueError`` naming a target column the schema lacks."""
        for src, dst in self.mapping.items():
            if dst not in schema:
                raise ValueError(f"mapping sends {src!r} to {dst!r}, which schema {schema.name!r} has no column for")

    def apply(self, names: Sequence[str]) -> list[str]:
        """The header ``names`` renamed; ``ValueError`` if the result has a duplicate name."""
        out = [self.mapping.get(n, n) for n in names]
        dup = sorted({n for n in out if out.count(n) > 1})
        if dup:
            raise ValueError(f"after the column mapping, the header has duplicate column names {dup}")
        return out

    def source_of(self, target: str) -> str:
        for src, dst in self.mapping.items():
            if dst == target:
                return src
        return target


def _naive(value: Any, name: str) -> _dt.datetime:
    if not isinstance(value, _dt.datetime):
        raise TypeError(f"{name} must be a datetime.datetime, got {type(value).__name__} ({value!r})")
    if value.tzinfo is not None:
        raise ValueError(f"{name} must be a naive datetime (log times carry no time zone), got {value!r}")
    return value


@dataclass(frozen=True)
class DateSplit:
    """Train / validation / test bounds on the event time, as explicit datetimes.

    ``train``: ``time <= train_end``; ``val``: ``train_end < time <= val_end``; ``test``: ``time > val_end``
    (the AntM2C release's split is :data:`ANTM2C_SPLIT`: 2023-08-03 and 2023-08-05, midnight).

    >>> s = DateSplit(_dt.datetime(2023, 8, 3), _dt.datetime(2023, 8, 5))
    >>> s.assign(np.array(["2023-08-03T00:00:00", "2023-08-03T00:00:01", "2023-08-06"], "datetime64[s]")).tolist()
    [0, 1, 2]
    """

    train_end: _dt.datetime
    val_end: _dt.datetime

    def __post_init__(self) -> None:
        a = _naive(self.train_end, "train_end")
        b = _naive(self.val_end, "val_end")
        if not a < b:
            raise ValueError(f"train_end must be before val_end, got {a} and {b}")

    def assign(self, times: Any) -> np.ndarray:
        """int8 split index per row (0 train, 1 val, 2 test) of Arrow timestamps or NumPy datetime64.

        Null or NaT times are a ``ValueError``: a row without a time has no split.
        """
        if isinstance(times, pa.ChunkedArray | pa.Array):
            if not pa.types.is_timestamp(times.type):
                raise TypeError(f"times must be timestamps, got Arrow type {times.type}")
            if times.type.tz is not None:
                raise ValueError(f"times must be naive timestamps, got time zone {times.type.tz!r}")
            if times.null_count:
                raise ValueError(f"times has {times.null_count} null values; a row without a time has no split")
            ty = times.type
            after_train = pc.greater(times, pa.scalar(self.train_end, ty)).to_numpy(zero_copy_only=False)
            after_val = pc.greater(times, pa.scalar(self.val_end, ty)).to_numpy(zero_copy_only=False)
        else:
            arr = np.asarray(times)
            if not np.issubdtype(arr.dtype, np.datetime64):
                raise TypeError(f"times must be Arrow timestamps or numpy datetime64, got dtype {arr.dtype}")
            if np.isnat(arr).any():
                raise ValueError(f"times has {int(np.isnat(arr).sum())} NaT values; a row without a time has no split")
            after_train = arr > np.datetime64(self.train_end)
            after_val = arr > np.datetime64(self.val_end)
        return (after_train.astype(np.int8) + after_val.astype(np.int8)).astype(np.int8)


ANTM2C_SPLIT = DateSplit(_dt.datetime(2023, 8, 3), _dt.datetime(2023, 8, 5))
"""The split third parties use on the release (spec §1): train <= 2023-08-03 00:00:00 < val <= 2023-08-05
00:00:00 < test."""


def _public10m(deep_feature_type: pa.DataType) -> Schema:
    cols = [
        Column("user_id", "id", "user", description="user key"),
        Column("item_id", "id", "item", description="item key; images are {item_id}.png"),
        Column("log_time", "time", "context", time_format=TIME_FORMAT, description="impression time"),
        Column("label", "label", "context", description="click 0/1 (negatives down-sampled)"),
        Column("bill_entity_seq", "text", "user", description="per-row user text: bill entities"),
        Column("service_entity_seq", "text", "user", description="per-row user text: service entities"),
        Column("query_entity_seq", "text", "user", description="per-row user text: query entities"),
        Column("item_entity_names", "text", "item", description="item entity names (varies per row)"),
        Column("item_title", "text", "item", description="item title (per item)"),
        Column("scene", "scene", "context", description="scenario 0-4 (business names unpublished)"),
    ]
    cols += [
        Column(f"deep_features_{i}", "categorical", "context", dtype=deep_feature_type, description="anonymous")
        for i in range(27)
    ]
    return Schema(
        "public10m",
        tuple(cols),
        num_scenes=5,
        description="AntM2C public release antm2c_10m_part{0,1,2}: 37 columns (spec antm2c.md §1, [T])",
    )


def _paper() -> Schema:
    cols = [
        Column("user_id", "id", "user"),
        Column("item_id", "id", "item"),
        Column("log_time", "time", "context", time_format=TIME_FORMAT),
        Column("label", "label", "context"),
        Column("scene", "scene", "context"),
    ]
    cols += [Column(f"cat_{i:03d}", "categorical", "context", description="[R] invented name") for i in range(150)]
    cols += [Column(f"num_{i:02d}", "numeric", "context", description="[R] invented name") for i in range(40)]
    for name, owner in (
        ("bill_entity_seq", "user"),
        ("service_entity_seq", "user"),
        ("query_entity_seq", "user"),
        ("item_entity_names", "item"),
        ("item_title", "item"),
    ):
        cols.append(Column(name, "text", owner, description="text feature (release name)"))
    cols.append(Column("item_image", "image", "item", description="[R] image key; vectors are item-keyed"))
    return Schema(
        "paper",
        tuple(cols),
        num_scenes=5,
        description=(
            "[R] reconstruction of the papers' declared groups: 150 categorical, 40 numeric, 5 text, 1 image "
            "(+ user, item, time, label, scene); categorical/numeric/image names are invented, the text names "
            "are the release's. v1 has 5 scenarios, the SIGIR version 4."
        ),
        reconstruction=True,
    )


def antm2c_schema(name: str = "public10m", *, deep_feature_type: pa.DataType | None = None) -> Schema:
    """The AntM2C schema ``"public10m"`` (the release's 37 columns, in order) or ``"paper"`` ([R]).

    ``deep_feature_type`` (public10m only; default int64) is the Arrow type of ``deep_features_0..26``;
    pass ``pa.string()`` if your copy stores them as strings.

    >>> antm2c_schema("public10m").names[:4]
    ('user_id', 'item_id', 'log_time', 'label')
    >>> s = antm2c_schema("paper")
    >>> [len(s.by_kind(k)) for k in ("categorical", "numeric", "text", "image")], s.reconstruction
    ([150, 40, 5, 1], True)
    """
    check_choice(name, "name", ("public10m", "paper"))
    if name == "paper":
        if deep_feature_type is not None:
            raise ValueError("deep_feature_type applies to the 'public10m' schema only")
        return _paper()
    return _public10m(pa.int64() if deep_feature_type is None else deep_feature_type)


def ctr_schema(
    name: str = "custom",
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
    owners: Mapping[str, str] | None = None,
    id_type: pa.DataType | None = None,
    categorical_type: pa.DataType | None = None,
) -> Schema:
    """A schema for your own CTR data from column roles.

    ``user`` / ``item`` are id columns (``id_type``, default int64); ``categorical`` columns default to
    strings (``categorical_type``; any CSV token is a category; pass a mapping ``{name: pa.int64()}``
    for integer ones); ``numeric`` defaults to float64. Owners default to user / item for the id
    columns and ``"context"`` otherwise (override with ``owners``).

    >>> s = ctr_schema(label="click", user="uid", categorical=["genre"], numeric=["age"])
    >>> s.names, s.label, s["genre"].dtype
    (('uid', 'click', 'genre', 'age'), 'click', DataType(string))
    """
    owners = dict(owners or {})
    id_type = pa.int64() if id_type is None else id_type
    categorical_type = pa.string() if categorical_type is None else categorical_type
    cols: list[Column] = []

    def own(n: str, default: str) -> str:
        return owners.get(n, default)

    if user is not None:
        cols.append(Column(user, "id", own(user, "user"), dtype=id_type))
    if item is not None:
        cols.append(Column(item, "id", own(item, "item"), dtype=id_type))
    if time is not None:
        cols.append(Column(time, "time", own(time, "context"), time_format=time_format))
    cols.append(Column(label, "label", own(label, "context")))
    if scene is not None:
        cols.append(Column(scene, "scene", own(scene, "context")))
    elif num_scenes is not None:
        raise ValueError("num_scenes is given without a scene column")
    cat = dict(categorical) if isinstance(categorical, Mapping) else dict.fromkeys(categorical, categorical_type)
    num = dict(numeric) if isinstance(numeric, Mapping) else dict.fromkeys(numeric, pa.float64())
    cols += [Column(n, "categorical", own(n, "context"), dtype=t) for n, t in cat.items()]
    cols += [Column(n, "numeric", own(n, "context"), dtype=t) for n, t in num.items()]
    cols += [Column(n, "text", own(n, "context")) for n in text]
    unknown = sorted(set(owners) - {c.name for c in cols})
    if unknown:
        raise ValueError(f"owners names columns that are not in the schema: {unknown}")
    return Schema(name, tuple(cols), num_scenes=num_scenes)
