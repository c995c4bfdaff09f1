"""Hashing golden values and the streaming pipeline's sharding, shuffling and batch counts."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from bastion.ctr.hashing import Vocabulary, bucketize, collision_rate, hash_array, hash_strings, splitmix64
from bastion.ctr.pipeline import ArrayBatches, BatchEncoder, CTRStream, ParquetSource, materialize, shard_plan


# --------------------------------------------------------------------------------------------- hashing
def test_golden_values_of_the_spec():
    assert splitmix64(0, 0) == 0xE220A8397B1DCDAF
    assert splitmix64(1, 0) == 0x910A2DEC89025CC1
    assert splitmix64(0, 1) == 0x6E789E6AA1B965F4
    h = hash_array(np.array([0, 1, 0, 1]), 0)
    assert [int(x) for x in h[:2]] == [0xE220A8397B1DCDAF, 0x910A2DEC89025CC1]
    assert int(hash_array(np.array([0]), 1)[0]) == 0x6E789E6AA1B965F4
    b = bucketize(hash_array(np.array([16_777_216, 16_777_217]), 0), 2**20)
    assert b.tolist() == [675_333, 280_566]


def test_vectorised_hash_equals_pure_python_reference():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.integers(-(2**63), 2**63 - 1, 500, dtype=np.int64), [0, -1, 2**63 - 1, -(2**63)]])
    for seed in (0, 3, 28):
        got = hash_array(x, seed)
        want = [splitmix64(int(v) & ((1 << 64) - 1), seed) for v in x]
        assert [int(g) for g in got] == want


def test_ids_that_a_float_would_merge_land_in_different_buckets():
    for a in (16_777_216, 2**53):
        b = bucketize(hash_array(np.array([a, a + 1], dtype=np.int64), 0), 2**20)
        assert b[0] != b[1]
    assert np.float32(16_777_216) == np.float32(16_777_217)  # why floats are never used
    assert float(2**53) == float(2**53 + 1)


def test_string_hash_is_blake2b_then_splitmix_and_buckets_skip_zero():
    s = ["北京", "coffee", "", "coffee"]
    h = hash_strings(s, seed=2)
    want = [splitmix64(int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little"), 2) for t in s]
    assert [int(v) for v in h] == want
    b = bucketize(hash_array(np.arange(100_000), 5), 7)
    assert b.min() == 1 and b.max() == 6
    with pytest.raises(ValueError, match="num_buckets"):
        bucketize(h, 1)
    with pytest.raises(TypeError, match="integer"):
        hash_array(np.array([1.0, 2.0]))


def test_collision_rate_matches_a_birthday_estimate():
    rate = collision_rate(np.arange(10_000), 100_001)
    # P(a value shares its bucket) ~ 1 - exp(-(n - 1) / (B - 1)) ~ 0.095
    assert 0.07 < rate < 0.12


def test_vocabulary_streams_and_maps_unknowns_to_oov():
    v = Vocabulary()
    v.partial_fit(np.array([10, 3, 3])).partial_fit(np.array([7, 10])).finalize()
    assert v.size == 5
    assert v.transform(np.array([3, 7, 10, 11, -5])).tolist() == [2, 3, 4, 1, 1]
    w = Vocabulary(min_count=2).fit(np.array([10, 3, 3, 7, 10]))
    assert w.transform(np.array([3, 7, 10])).tolist() == [2, 1, 3]
    assert Vocabulary.from_arrays(v.to_arrays()).transform(np.array([7])).tolist() == [3]
    with pytest.raises(ValueError, match="empty"):
        Vocabulary().finalize()


# -------------------------------------------------------------------------------------------- pipeline
def _write_fixture(root, n_rows=10_007, files=3, group=700):
    rng = np.random.default_rng(0)
    root.mkdir()
    rows = np.arange(n_rows)
    for i, part in enumerate(np.array_split(rows, files)):
        t = pa.table(
            {
                "row": part.astype(np.int64),
                "user_id": rng.integers(0, 50, part.size),
                "item_id": rng.integers(0, 80, part.size),
                "label": (rng.random(part.size) < 0.3).astype(np.int64),
                "scene": rng.integers(0, 5, part.size),
                "title": pa.array([f"title {j % 17}" for j in part]),
            }
        )
        pq.write_table(t, root / f"part-{i}.parquet", row_group_size=group)
    return root


class CountingEncoder:
    name, dim = "counting", 3

    def __init__(self):
        self.seen = []

    def encode(self, texts):
        self.seen.extend(texts)
        return np.array([[len(t), t.count("1"), 1.0] for t in texts], dtype=np.float32)


def _encoder(**kw):
    return BatchEncoder(["user_id", "item_id"], num_buckets=1024, extras=["row"], **kw)


def _rows(stream, workers):
    batches = list(DataLoader(stream, batch_size=None, num_workers=workers))
    rows = np.concatenate([b["row"][b["weight"] > 0].numpy() for b in batches]).astype(np.int64)
    return rows, len(batches)


@pytest.mark.parametrize("batch_size", [256, 1000])
def test_two_ranks_two_workers_read_every_row_once_with_equal_batch_counts(tmp_path, batch_size):
    src = ParquetSource(_write_fixture(tmp_path / "d"))
    seen, counts = [], []
    for rank in range(2):
        s = CTRStream(src, _encoder(), batch_size=batch_size, seed=7, rank=rank, world_size=2, buffer_rows=3000)
        rows, n_batches = _rows(s, workers=2)
        seen.append(rows)
        counts.append(n_batches)
    allrows = np.concatenate(seen)
    assert np.array_equal(np.sort(allrows), np.arange(10_007))
    assert counts[0] == counts[1] == 2 * s.batches_per_shard(2)
    with_len = CTRStream(src, _encoder(), batch_size=batch_size, rank=0, world_size=2, num_workers=2)
    assert len(DataLoader(with_len, batch_size=None, num_workers=2)) == counts[0]


def test_shuffle_is_seeded_by_seed_and_epoch(tmp_path):
    src = ParquetSource(_write_fixture(tmp_path / "d"))
    s = CTRStream(src, _encoder(), batch_size=500, seed=3, buffer_rows=2500)
    a, _ = _rows(s, 0)
    b, _ = _rows(CTRStream(src, _encoder(), batch_size=500, seed=3, buffer_rows=2500), 0)
    s.set_epoch(1)
    c, _ = _rows(s, 0)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c) and np.array_equal(np.sort(a), np.sort(c))
    assert not np.array_equal(a, np.arange(a.size))  # really shuffled
    plain, _ = _rows(CTRStream(src, _encoder(), batch_size=500, shuffle=False), 0)
    assert np.array_equal(plain, np.arange(10_007))


def test_shard_plan_tiles_the_virtual_stream_for_any_shard_count():
    units = [(0, g, n) for g, n in enumerate([5, 3, 9, 1, 4])]  # 22 rows
    for shards in (1, 3, 4, 7, 30):
        covered = []
        for k in range(shards):
            for u in shard_plan(units, shards, k, seed=1, epoch=2, shuffle=True):
                covered += [(u.row_group, r) for r in range(u.start, u.stop)]
        assert sorted(covered) == sorted((g, r) for g, n in enumerate([5, 3, 9, 1, 4]) for r in range(n))


def test_shard_with_fewer_rows_gets_a_weight_zero_padding_row(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    pq.write_table(
        pa.table(
            {
                "row": np.arange(9),
                "user_id": np.arange(9),
                "item_id": np.arange(9),
                "label": np.zeros(9, int),
                "scene": np.zeros(9, int),
            }
        ),
        root / "a.parquet",
    )
    # 9 rows over 2 shards: 4 and 5 rows; batch 5 -> one batch each, no padding; batch 4 -> 2 batches each
    counts, weights = [], []
    for rank in range(2):
        s = CTRStream(root, _encoder(), batch_size=4, rank=rank, world_size=2, shuffle=False)
        bs = list(s)
        counts.append(len(bs))
        weights.append(torch.cat([b["weight"] for b in bs]))
    assert counts == [2, 2]
    assert [int((w == 0).sum()) for w in weights] == [1, 0]  # rank 0 holds 4 rows = one batch + a padding row


def test_encoder_hashes_fits_vocab_on_train_and_encodes_each_text_once(tmp_path):
    src = ParquetSource(_write_fixture(tmp_path / "d"))
    text = CountingEncoder()
    enc = BatchEncoder(
        ["user_id", "item_id"],
        num_buckets={"user_id": 64, "item_id": 2**20},
        vocab_fields=["user_id"],
        text={"title": ("title", text)},
    )
    enc.fit(src)
    spec = enc.spec()
    assert spec.field_sizes == (52, 2**20) and spec.vector_dims == {"title": 3}
    out = materialize(src, enc)
    assert len(text.seen) == len(set(text.seen)) == 17  # each distinct title encoded once across batches
    raw = pq.read_table(src.files[0]).slice(0, 5)
    want_items = bucketize(hash_array(raw["item_id"].to_numpy(), 1), 2**20)
    assert out["ids"][:5, 1].tolist() == want_items.tolist()
    assert out["ids"][:, 0].min() >= 2  # every user of the data is in the vocab fit on it
    assert not out["cold_item"].any()
    np.testing.assert_array_equal(out["title"][:, 0], [len(f"title {j % 17}") for j in range(out["title"].shape[0])])


def test_bad_labels_scenes_and_inputs_raise(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    base = {"user_id": np.arange(4), "item_id": np.arange(4), "row": np.arange(4)}
    pq.write_table(pa.table({**base, "label": [0, 1, 2, 0], "scene": [0, 0, 0, 0]}), root / "a.parquet")
    with pytest.raises(ValueError, match="'label'"):
        list(CTRStream(root, _encoder(), batch_size=2))
    pq.write_table(pa.table({**base, "label": [0, 1, 1, 0], "scene": [0, 5, 0, 0]}), root / "a.parquet")
    with pytest.raises(ValueError, match="'scene'"):
        list(CTRStream(root, _encoder(), batch_size=2))
    with pytest.raises(ValueError, match="batch_size"):
        CTRStream(root, _encoder(), batch_size=0)
    with pytest.raises(ValueError, match="files"):
        ParquetSource([])
    with pytest.raises(ValueError, match="num_buckets"):
        BatchEncoder(["user_id"], num_buckets=1)
    pq.write_table(pa.table({"user_id": np.arange(4), "label": np.zeros(4, int)}), root / "a.parquet")
    with pytest.raises(ValueError, match="scene"):
        CTRStream(root, _encoder(), batch_size=2)


def test_array_batches_reshuffle_per_epoch_and_cover_all_rows():
    arrays = {"ids": np.arange(20).reshape(10, 2), "label": np.arange(10, dtype=np.float32)}
    b = ArrayBatches(arrays, batch_size=3, seed=1)
    e0 = torch.cat([x["label"] for x in b])
    b.set_epoch(1)
    e1 = torch.cat([x["label"] for x in b])
    assert sorted(e0.tolist()) == sorted(e1.tolist()) == list(range(10))
    assert not torch.equal(e0, e1)
    with pytest.raises(ValueError, match="first dimension"):
        ArrayBatches({"ids": np.zeros((3, 1)), "label": np.zeros(4)})


def test_nulls_map_to_padding_or_raise_and_null_text_is_empty_text(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    t = pa.table(
        {
            "row": np.arange(4),
            "user_id": pa.array([5, None, 7, 5], pa.int64()),
            "item_id": pa.array([1, 2, None, 1], pa.int64()),
            "label": [0, 1, 1, 0],
            "scene": [0, 1, 0, 1],
            "title": pa.array(["a b", None, "a b", ""]),
        }
    )
    pq.write_table(t, root / "a.parquet")
    text = CountingEncoder()
    enc = BatchEncoder(["user_id", "item_id"], num_buckets=64, vocab_fields=["user_id"], extras=["row"],
                       text={"title": ("title", text)}).fit(ParquetSource(root))  # fmt: skip
    out = materialize(root, enc)
    assert out["ids"][:, 0].tolist() == [2, 0, 3, 2]  # null user -> padding row 0, never a real id's row
    assert out["ids"][2, 1] == 0  # null hashed id -> bucket 0
    np.testing.assert_array_equal(out["title"][1], out["title"][3])  # null text = ""
    assert sorted(text.seen) == ["", "a b"]
    pq.write_table(t.set_column(4, "scene", pa.array([0, None, 0, 1], pa.int64())), root / "a.parquet")
    with pytest.raises(ValueError, match="'scene' has 1 null"):
        materialize(root, BatchEncoder(["item_id"], num_buckets=64))


def test_uncached_text_columns_do_not_grow(tmp_path):
    src = ParquetSource(_write_fixture(tmp_path / "d"))
    text = CountingEncoder()
    enc = BatchEncoder(["user_id"], num_buckets=64, text={"title": ("title", text)}, cache_text=[])
    materialize(src, enc, read_rows=1000)
    assert enc._text["title"].size == 0 and enc._text["title"].index == {}
    assert len(text.seen) > 17  # re-encoded per batch instead
    with pytest.raises(ValueError, match="cache_text"):
        BatchEncoder(["user_id"], text={"title": ("title", text)}, cache_text=["nope"])


def test_image_vectors_are_validated_and_looked_up(tmp_path):
    src = ParquetSource(_write_fixture(tmp_path / "d"))
    ids = np.arange(80, dtype=np.int64)
    vecs = np.arange(160, dtype=np.float32).reshape(80, 2)
    out = materialize(src, BatchEncoder(["user_id"], image=(ids[:60], vecs[:60])))
    raw = pq.read_table(src.files[0], columns=["item_id"])["item_id"].to_numpy()[:50]
    want = np.where((raw < 60)[:, None], vecs[np.minimum(raw, 59)], 0.0)
    np.testing.assert_array_equal(out["image"][:50], want)  # unknown items get a zero vector
    with pytest.raises(ValueError, match="unique"):
        BatchEncoder(["user_id"], image=(np.array([1, 1]), np.zeros((2, 3), np.float32)))
    bad = vecs.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        BatchEncoder(["user_id"], image=(ids, bad))


def test_encoder_state_round_trips_without_refitting(tmp_path):
    src = ParquetSource(_write_fixture(tmp_path / "d"))
    enc = BatchEncoder(["user_id", "item_id"], num_buckets=64, vocab_fields=["user_id"]).fit(src)
    arrays, meta = enc.state()
    fresh = BatchEncoder(["user_id", "item_id"], num_buckets=64, vocab_fields=["user_id"]).load_state(arrays, meta)
    a, b = materialize(src, enc), materialize(src, fresh)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert fresh.spec() == enc.spec()
    with pytest.raises(ValueError, match="vocabularies"):
        BatchEncoder(["user_id", "item_id"], vocab_fields=["item_id"]).load_state(arrays, meta)
    with pytest.raises(ValueError, match="metadata"):
        fresh.load_state(arrays, {})
