"""CTR metrics: exact and streaming AUC, logloss, per-scene and weighted AUC, gAUC, cold/warm AUC.

Followed: spec ``antm2c.md`` §2 (exact AUC with ties counted ½, equal to scikit-learn's; a streaming AUC
from 2^20 score bins checked against the exact one; logloss with p clipped to [1e-7, 1 - 1e-7] as the
metric's definition; gAUC weighted by rows over users with both classes; the multi-scenario summary
Σ n_s·AUC_s / Σ n_s; a scene with one class is skipped with a warning; never an average of per-batch
AUCs) and §7 (bad input is a ``ValueError`` naming the argument).

All AUCs come from one sort-based routine, O(n log n) and vectorised over groups (scenes, users): rows
are sorted by (group, score), runs of equal scores are ties, and for each run the positives count the
negatives below them plus half the tied negatives. The counts are exact int64 sums (up to ~3e9 rows),
so the only rounding is the final division.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.checks import check_float, check_int

__all__ = [
    "SceneAUC",
    "StreamingAUC",
    "auc",
    "cold_warm_auc",
    "gauc",
    "grouped_auc",
    "logloss",
    "scene_auc",
]

LOGLOSS_EPS = 1e-7


# ---------------------------------------------------------------------------------------------------
# input checks
# ---------------------------------------------------------------------------------------------------
def _np(x: Any, name: str) -> np.ndarray:
    if type(x).__module__.startswith("torch"):
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be array-like, got {type(x).__name__}: {e}") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    return arr


def _labels(y: Any, name: str = "y") -> np.ndarray:
    """int64 0/1 labels; anything else is a ``ValueError`` naming ``name``."""
    arr = _np(y, name)
    if arr.dtype == bool:
        return arr.astype(np.int64)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"{name} must hold 0/1 labels (bool, int or float), got dtype {arr.dtype}")
    ok = (arr == 0) | (arr == 1)
    if not ok.all():
        bad = arr[~ok]
        raise ValueError(f"{name} must hold labels in {{0, 1}}; got {int((~ok).sum())} other values, e.g. {bad[0]!r}")
    return arr.astype(np.int64)


def _scores(p: Any, n: int, name: str = "p", *, probability: bool = False) -> np.ndarray:
    arr = _np(p, name)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        raise TypeError(f"{name} must hold numeric scores, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if arr.shape[0] != n:
        raise ValueError(f"{name} must have one score per label: length {arr.shape[0]}, labels {n}")
    finite = np.isfinite(arr)
    if not finite.all():
        n_nan = int(np.isnan(arr).sum())
        raise ValueError(f"{name} has {int((~finite).sum())} NaN or infinite scores ({n_nan} NaN)")
    if probability and (arr.min() < 0 or arr.max() > 1):
        raise ValueError(
            f"{name} must hold probabilities in [0, 1]; got values in [{arr.min():g}, {arr.max():g}] "
            "(apply a sigmoid to logits first)"
        )
    return arr


def _groups(g: Any, n: int, name: str) -> np.ndarray:
    arr = _np(g, name)
    if arr.shape[0] != n:
        raise ValueError(f"{name} must have one entry per label: length {arr.shape[0]}, labels {n}")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise ValueError(f"{name} has NaN or infinite entries")
    return arr


# ---------------------------------------------------------------------------------------------------
# the one AUC routine
# ---------------------------------------------------------------------------------------------------
def _auc_counts(y: np.ndarray, p: np.ndarray, g: np.ndarray | None) -> tuple[np.ndarray, ...]:
    """Per group: (group keys, positives, negatives, 2 × concordant-pair count with ties as ½).

    ``g`` = None is one group. The pair count is exact (int64).
    """
    n = y.shape[0]
    if g is None:
        order = np.argsort(p, kind="stable")
        gi = np.zeros(n, dtype=np.int64)
        keys = np.zeros(1, dtype=np.int64)
    else:
        keys, gi = np.unique(g, return_inverse=True)
        gi = gi.reshape(-1).astype(np.int64)
        order = np.lexsort((p, gi))
    gs, ps, ys = gi[order], p[order], y[order]
    new_run = np.empty(n, dtype=bool)
    new_run[0] = True
    np.not_equal(ps[1:], ps[:-1], out=new_run[1:])
    new_run[1:] |= gs[1:] != gs[:-1]
    starts = np.flatnonzero(new_run)
    pos_run = np.add.reduceat(ys, starts)
    neg_run = np.diff(np.append(starts, n)) - pos_run
    run_group = gs[starts]
    # negatives scored below each run, within its group
    cum_neg = np.cumsum(neg_run) - neg_run
    first_run = np.flatnonzero(np.r_[True, run_group[1:] != run_group[:-1]])
    group_base = np.repeat(cum_neg[first_run], np.diff(np.append(first_run, len(starts))))
    below = cum_neg - group_base
    twice = 2 * pos_run * below + pos_run * neg_run
    n_groups = keys.shape[0]
    present = run_group[first_run]
    pos = np.zeros(n_groups, dtype=np.int64)
    neg = np.zeros(n_groups, dtype=np.int64)
    pairs = np.zeros(n_groups, dtype=np.int64)
    pos[present] = np.add.reduceat(pos_run, first_run)
    neg[present] = np.add.reduceat(neg_run, first_run)
    pairs[present] = np.add.reduceat(twice, first_run)
    return keys, pos, neg, pairs


def _ratio(pairs: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    denom = 2.0 * pos.astype(np.float64) * neg.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, pairs / np.where(denom > 0, denom, 1.0), np.nan)


def auc(y: Any, p: Any) -> float:
    """Exact ROC AUC: P(score of a positive > score of a negative), ties counted ½ (= scikit-learn's).

    >>> auc([0, 1, 0, 1], [0.1, 0.9, 0.5, 0.5])
    0.875
    """
    yy = _labels(y)
    pp = _scores(p, yy.shape[0])
    _, pos, neg, pairs = _auc_counts(yy, pp, None)
    if pos[0] == 0 or neg[0] == 0:
        raise ValueError(f"y must hold both classes for an AUC; got {int(pos[0])} positives, {int(neg[0])} negatives")
    return float(_ratio(pairs, pos, neg)[0])


def grouped_auc(y: Any, p: Any, groups: Any, *, name: str = "groups") -> tuple[np.ndarray, ...]:
    """Exact AUC per group: ``(keys, auc, rows, positives)``; ``auc`` is NaN for a group with one class.

    >>> keys, a, rows, pos = grouped_auc([0, 1, 1, 0, 1], [0.2, 0.8, 0.1, 0.3, 0.4], ["u", "u", "v", "v", "v"])
    >>> keys.tolist(), a.tolist(), rows.tolist()
    (['u', 'v'], [1.0, 0.5], [2, 3])
    """
    yy = _labels(y)
    pp = _scores(p, yy.shape[0])
    gg = _groups(groups, yy.shape[0], name)
    keys, pos, neg, pairs = _auc_counts(yy, pp, gg)
    return keys, _ratio(pairs, pos, neg), pos + neg, pos


def logloss(y: Any, p: Any, *, eps: float = LOGLOSS_EPS) -> float:
    """Mean binary cross-entropy of probabilities ``p``, clipped to ``[eps, 1 - eps]`` (the metric's definition).

    ``p`` outside [0, 1] is an error (nothing but the ``eps`` ends is clipped). With down-sampled negatives
    (AntM2C) the value is not comparable with other datasets'.

    >>> round(logloss([1, 0], [0.8, 0.4]), 6)
    0.366985
    """
    eps = check_float(eps, "eps", minimum=0, maximum=0.5, min_inclusive=False, max_inclusive=False)
    yy = _labels(y)
    pp = np.clip(_scores(p, yy.shape[0], probability=True), eps, 1 - eps)
    return float(-np.mean(np.where(yy == 1, np.log(pp), np.log(1 - pp))))


@dataclass(frozen=True)
class SceneAUC:
    """Per-scene AUCs and their row-weighted mean ``Σ n_s AUC_s / Σ n_s`` over scenes with both classes."""

    per_scene: dict[int, float]
    rows: dict[int, int]
    weighted: float
    skipped: tuple[int, ...]
    """Scenes with one class only (no AUC; left out of the weighted mean)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "per_scene": dict(self.per_scene),
            "rows": dict(self.rows),
            "weighted": self.weighted,
            "skipped": list(self.skipped),
        }


def scene_auc(y: Any, p: Any, scene: Any, *, num_scenes: int | None = None) -> SceneAUC:
    """Exact AUC of each scene and the weighted summary; a scene with one class is skipped with a warning.

    >>> r = scene_auc([0, 1, 0, 1, 0, 1], [0.1, 0.9, 0.6, 0.4, 0.2, 0.7], [0, 0, 1, 1, 1, 1])
    >>> r.per_scene, round(r.weighted, 4)
    ({0: 1.0, 1: 0.75}, 0.8333)
    """
    yy = _labels(y)
    pp = _scores(p, yy.shape[0])
    ss = _groups(scene, yy.shape[0], "scene")
    if not (np.issubdtype(ss.dtype, np.integer) or ss.dtype == bool):
        raise TypeError(f"scene must hold integer scene indices, got dtype {ss.dtype}")
    if ss.min() < 0:
        raise ValueError(f"scene must be >= 0, got {int(ss.min())}")
    if num_scenes is not None:
        num_scenes = check_int(num_scenes, "num_scenes", minimum=1)
        if ss.max() >= num_scenes:
            raise ValueError(f"scene must lie in [0, {num_scenes}), got {int(ss.max())}")
    keys, pos, neg, pairs = _auc_counts(yy, pp, ss.astype(np.int64))
    aucs = _ratio(pairs, pos, neg)
    ok = (pos > 0) & (neg > 0)
    skipped = tuple(int(k) for k in keys[~ok])
    if skipped:
        detail = ", ".join(
            f"scene {int(k)}: {int(a)} pos / {int(b)} neg"
            for k, a, b in zip(keys, pos, neg, strict=True)
            if k in skipped
        )
        warnings.warn(f"skipping scenes with one class (no AUC): {detail}", RuntimeWarning, stacklevel=2)
    if not ok.any():
        raise ValueError("no scene holds both classes: no AUC can be computed")
    rows = pos + neg
    weighted = float(np.sum(rows[ok] * aucs[ok]) / np.sum(rows[ok]))
    return SceneAUC(
        per_scene={int(k): float(a) for k, a, o in zip(keys, aucs, ok, strict=True) if o},
        rows={int(k): int(r) for k, r in zip(keys, rows, strict=True)},
        weighted=weighted,
        skipped=skipped,
    )


def gauc(y: Any, p: Any, user: Any) -> float:
    """Group AUC: ``Σ_u n_u AUC_u / Σ_u n_u`` over users with both classes (``n_u`` = the user's rows).

    >>> gauc([0, 1, 1, 0, 1, 1], [0.2, 0.8, 0.1, 0.3, 0.4, 0.9], [7, 7, 8, 8, 8, 9])
    0.7
    """
    keys, aucs, rows, _ = grouped_auc(y, p, user, name="user")
    ok = ~np.isnan(aucs)
    if not ok.any():
        raise ValueError(f"no user among {keys.shape[0]} has both classes: gAUC is undefined")
    return float(np.sum(rows[ok] * aucs[ok]) / np.sum(rows[ok]))


def cold_warm_auc(y: Any, p: Any, cold_mask: Any) -> dict[str, float]:
    """Exact AUC on all, cold and warm rows: ``{"all", "cold", "warm", "n_cold", "n_warm"}``.

    A subset with one class (or none) gets NaN and a warning.

    >>> r = cold_warm_auc([0, 1, 0, 1, 0, 1], [0.1, 0.9, 0.6, 0.4, 0.2, 0.3], [1, 1, 1, 1, 0, 0])
    >>> r["cold"], r["warm"], r["n_cold"]
    (0.75, 1.0, 4)
    """
    yy = _labels(y)
    pp = _scores(p, yy.shape[0])
    cm = _groups(cold_mask, yy.shape[0], "cold_mask")
    if cm.dtype != bool:
        if not np.issubdtype(cm.dtype, np.integer) or not np.isin(cm, (0, 1)).all():
            raise ValueError(f"cold_mask must be boolean (or 0/1), got dtype {cm.dtype}")
        cm = cm.astype(bool)
    keys, pos, neg, pairs = _auc_counts(yy, pp, cm.astype(np.int64))
    aucs = _ratio(pairs, pos, neg)
    out: dict[str, float] = {"all": auc(yy, pp)}
    for key, label in ((1, "cold"), (0, "warm")):
        hit = np.flatnonzero(keys == key)
        val = float(aucs[hit[0]]) if hit.size else float("nan")
        if np.isnan(val):
            warnings.warn(f"{label} rows hold fewer than two classes: {label} AUC is NaN", RuntimeWarning, stacklevel=2)
        out[label] = val
    out["n_cold"] = int(cm.sum())
    out["n_warm"] = int((~cm).sum())
    return out


class StreamingAUC:
    """AUC over a stream of batches from histograms of probabilities in ``bins`` equal bins of [0, 1].

    Scores in one bin count as tied, so the result is the exact AUC of the scores rounded down to their
    bin (within about 1e-6 of the exact AUC for 2^20 bins unless scores pile up inside one bin). Histograms
    add up: :meth:`merge` combines workers (or all-reduce :attr:`pos` and :attr:`neg`).

    >>> m = StreamingAUC(bins=1000)
    >>> m.update([0, 1], [0.1, 0.9]); m.update([0, 1], [0.6, 0.4])
    >>> m.compute()
    0.75
    """

    def __init__(self, bins: int = 2**20) -> None:
        self.bins = check_int(bins, "bins", minimum=2)
        self.pos = np.zeros(self.bins, dtype=np.int64)
        self.neg = np.zeros(self.bins, dtype=np.int64)

    def reset(self) -> None:
        self.pos[:] = 0
        self.neg[:] = 0

    @property
    def count(self) -> int:
        return int(self.pos.sum() + self.neg.sum())

    def update(self, y: Any, p: Any) -> None:
        """Add a batch of 0/1 labels and probabilities in [0, 1]."""
        yy = _labels(y)
        pp = _scores(p, yy.shape[0], probability=True)
        idx = np.minimum((pp * self.bins).astype(np.int64), self.bins - 1)
        is_pos = yy == 1
        self.pos += np.bincount(idx[is_pos], minlength=self.bins)
        self.neg += np.bincount(idx[~is_pos], minlength=self.bins)

    def merge(self, other: StreamingAUC) -> StreamingAUC:
        """Add another accumulator's counts (same ``bins``) into this one; returns ``self``."""
        if not isinstance(other, StreamingAUC) or other.bins != self.bins:
            raise ValueError(f"other must be a StreamingAUC with bins={self.bins}")
        self.pos += other.pos
        self.neg += other.neg
        return self

    def compute(self) -> float:
        n_pos, n_neg = int(self.pos.sum()), int(self.neg.sum())
        if n_pos == 0 or n_neg == 0:
            raise ValueError(f"the stream must hold both classes for an AUC; got {n_pos} positives, {n_neg} negatives")
        below = np.cumsum(self.neg) - self.neg
        twice = int(np.sum(2 * self.pos * below + self.pos * self.neg))
        return twice / (2.0 * n_pos * n_neg)
