"""CTR metrics against scikit-learn and brute-force loops (spec antm2c.md §2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score

from bastion.ctr.metrics import (
    StreamingAUC,
    auc,
    cold_warm_auc,
    gauc,
    grouped_auc,
    logloss,
    scene_auc,
)


def _data(n: int, seed: int, *, decimals: int | None = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = 1 / (1 + np.exp(-(rng.normal(size=n) + 0.8 * y)))
    if decimals is not None:
        p = np.round(p, decimals)  # many ties
    return y, p


@pytest.mark.parametrize(("n", "seed", "decimals"), [(7, 0, 1), (500, 1, 2), (20_000, 2, 2), (50_000, 3, None)])
def test_auc_equals_sklearn_with_ties(n, seed, decimals):
    y, p = _data(n, seed, decimals=decimals)
    if y.min() == y.max():
        y[0] = 1 - y[0]
    assert abs(auc(y, p) - roc_auc_score(y, p)) < 1e-9


def test_auc_integer_scores_inputs_and_small_cases():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 3000)
    s = rng.integers(0, 4, 3000)  # four distinct scores: almost all pairs tied or ordered
    assert abs(auc(y, s) - roc_auc_score(y, s)) < 1e-9
    # torch, bool labels, float32 scores give the same answer
    ref = auc(y, s.astype(np.float64))
    assert auc(torch.from_numpy(y.astype(bool)), torch.from_numpy(s.astype(np.float32))) == pytest.approx(ref, abs=0)
    # by hand: all tied -> 0.5; perfect -> 1; reversed -> 0
    assert auc([0, 1, 0, 1], [0.3, 0.3, 0.3, 0.3]) == 0.5
    assert auc([0, 0, 1], [0.1, 0.2, 0.3]) == 1.0
    assert auc([0, 0, 1], [0.3, 0.2, 0.1]) == 0.0
    assert auc([1, 0, 1, 0], [0.9, 0.5, 0.5, 0.1]) == pytest.approx((2 + 1 + 0.5) / 4)


def test_logloss_equals_sklearn_and_documented_clipping():
    y, p = _data(10_000, 7, decimals=None)
    p = np.clip(p, 0.01, 0.99)
    assert abs(logloss(y, p) - log_loss(y, p)) < 1e-12
    # p at 0 and 1: clipped to [1e-7, 1 - 1e-7] by definition
    y2 = np.array([1, 0, 1, 0])
    p2 = np.array([0.0, 1.0, 1.0, 0.0])
    expect = -(np.log(1e-7) + np.log(1e-7) + np.log(1 - 1e-7) + np.log(1 - 1e-7)) / 4
    assert logloss(y2, p2) == pytest.approx(expect, rel=1e-9)  # 1 - (1 - 1e-7) is not 1e-7 in float64
    with pytest.raises(ValueError, match=r"p must hold probabilities in \[0, 1\]"):
        logloss([0, 1], [0.5, 1.2])


def test_scene_auc_by_hand_from_sklearn_and_skipped_scene():
    rng = np.random.default_rng(11)
    n = 6000
    scene = rng.integers(0, 4, n)
    y, p = _data(n, 12)
    y[scene == 3] = 1  # scene 3: one class only
    with pytest.warns(RuntimeWarning, match="scene 3"):
        r = scene_auc(y, p, scene, num_scenes=5)
    assert r.skipped == (3,)
    assert sorted(r.per_scene) == [0, 1, 2]
    num = den = 0.0
    for s in (0, 1, 2):
        m = scene == s
        ref = roc_auc_score(y[m], p[m])
        assert abs(r.per_scene[s] - ref) < 1e-9
        assert r.rows[s] == int(m.sum())
        num += m.sum() * ref
        den += m.sum()
    assert abs(r.weighted - num / den) < 1e-9
    # not an average of per-scene AUCs (the scenes differ in size)
    sizes = np.array([r.rows[s] for s in (0, 1, 2)], dtype=float)
    assert sizes.std() > 0
    with pytest.raises(ValueError, match=r"scene must lie in \[0, 3\)"):
        scene_auc(y, p, scene, num_scenes=3)


def test_gauc_matches_brute_force_per_user_loop():
    rng = np.random.default_rng(21)
    n = 8000
    user = rng.integers(0, 700, n) * 13 + 5  # sparse, unsorted keys; many users with one class or one row
    y, p = _data(n, 22)
    got = gauc(y, p, user)
    num = den = 0.0
    used = 0
    for u in np.unique(user):
        m = user == u
        if y[m].min() == y[m].max():
            continue
        num += m.sum() * roc_auc_score(y[m], p[m])
        den += m.sum()
        used += 1
    assert used > 100
    assert abs(got - num / den) < 1e-9
    keys, aucs, rows, pos = grouped_auc(y, p, user)
    assert keys.tolist() == np.unique(user).tolist()
    assert rows.sum() == n
    assert pos.sum() == y.sum()
    assert int((~np.isnan(aucs)).sum()) == used
    with pytest.raises(ValueError, match="no user"):
        gauc([0, 1], [0.2, 0.3], [1, 2])


def test_cold_warm_auc_against_sklearn_subsets():
    y, p = _data(4000, 31)
    cold = np.random.default_rng(32).random(4000) < 0.2
    r = cold_warm_auc(y, p, cold)
    assert abs(r["all"] - roc_auc_score(y, p)) < 1e-9
    assert abs(r["cold"] - roc_auc_score(y[cold], p[cold])) < 1e-9
    assert abs(r["warm"] - roc_auc_score(y[~cold], p[~cold])) < 1e-9
    assert (r["n_cold"], r["n_warm"]) == (int(cold.sum()), int((~cold).sum()))
    with pytest.warns(RuntimeWarning, match="cold rows"):
        r2 = cold_warm_auc([0, 1, 1], [0.1, 0.9, 0.5], [False, False, True])
    assert np.isnan(r2["cold"]) and r2["warm"] == 1.0


def test_streaming_auc_within_1e3_of_exact_on_1m_rows():
    y, p = _data(1_000_000, 41, decimals=None)
    exact = auc(y, p)
    m = StreamingAUC()  # 2**20 bins
    for chunk in np.array_split(np.arange(len(y)), 7):  # batches of uneven size
        m.update(y[chunk], p[chunk])
    got = m.compute()
    assert abs(got - exact) < 1e-3
    # it is exactly the AUC of the scores rounded down to their bin (ties within a bin count 1/2)
    q = np.minimum(np.floor(p * 2**20), 2**20 - 1)
    assert abs(got - auc(y, q)) < 1e-12
    # coarse bins: still equals the quantised exact AUC, and differs from the exact one
    c = StreamingAUC(bins=8)
    c.update(y, p)
    q8 = np.minimum(np.floor(p * 8), 7)
    assert abs(c.compute() - auc(y, q8)) < 1e-12
    assert abs(c.compute() - exact) > 1e-3
    # merging two workers' histograms = one stream; never an average of per-batch AUCs
    a, b = StreamingAUC(bins=4096), StreamingAUC(bins=4096)
    a.update(y[:1000], p[:1000])
    b.update(y[1000:3000], p[1000:3000])
    whole = StreamingAUC(bins=4096)
    whole.update(y[:3000], p[:3000])
    assert a.merge(b).compute() == whole.compute()
    assert a.count == 3000


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: auc([], []), "y is empty"),
        (lambda: auc([0, 1, 1], [0.1, 0.2]), "p must have one score per label"),
        (lambda: auc([0, 2, 1], [0.1, 0.2, 0.3]), r"y must hold labels in \{0, 1\}"),
        (lambda: auc([0.0, 0.5, 1.0], [0.1, 0.2, 0.3]), r"y must hold labels in \{0, 1\}"),
        (lambda: auc([0, 1, 1], [0.1, float("nan"), 0.3]), "p has 1 NaN or infinite"),
        (lambda: auc([1, 1, 1], [0.1, 0.2, 0.3]), "both classes"),
        (lambda: auc([[0, 1]], [[0.1, 0.2]]), "y must be 1-D"),
        (lambda: logloss([0, 1], [0.1, float("inf")]), "p has 1 NaN or infinite"),
        (lambda: gauc([0, 1], [0.1, 0.2], [1]), "user must have one entry per label"),
        (lambda: scene_auc([0, 1], [0.1, 0.2], [0, -1]), "scene must be >= 0"),
        (lambda: scene_auc([0, 1], [0.1, float("nan")], [0, 0]), "p has 1 NaN"),
        (lambda: cold_warm_auc([0, 1], [0.1, 0.2], [0, 2]), "cold_mask must be boolean"),
        (lambda: StreamingAUC(bins=16).update([0, 1], [0.5, 1.5]), r"p must hold probabilities in \[0, 1\]"),
        (lambda: StreamingAUC(bins=16).compute(), "both classes"),
        (lambda: StreamingAUC(bins=1), "bins must be >= 2"),
    ],
)
def test_errors_name_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_scene_with_one_class_everywhere_is_an_error():
    with pytest.warns(RuntimeWarning), pytest.raises(ValueError, match="no scene holds both classes"):
        scene_auc([1, 1, 0], [0.1, 0.2, 0.3], [0, 0, 1])
