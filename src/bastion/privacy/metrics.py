"""Membership-inference metrics from scores (larger = member), on scikit-learn's ROC.

AUC, advantage ``max(TPR - FPR)``, balanced accuracy ``(1 + advantage) / 2``, TPR at 0.1 % and 1 %
FPR (the largest TPR whose FPR does not exceed the target, with the number of non-members behind
it: with 1,000 non-members, 0.1 % FPR is one point), AUPR, and the authors' F1 at the threshold
"mean member score" and score gap (spec sgld.md section 4).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score, roc_curve

from ..core.checks import check_float

__all__ = ["MembershipMetrics", "check_scores", "membership_metrics", "tpr_at_fpr"]


@dataclass(frozen=True)
class MembershipMetrics:
    """Metrics of one attack on one member / non-member split."""

    auc: float
    advantage: float
    balanced_accuracy: float
    tpr_at_0_1pct_fpr: float
    tpr_at_1pct_fpr: float
    negatives_at_0_1pct_fpr: int
    """How many non-members may score above the threshold at 0.1 % FPR (0 means TPR at FPR 0)."""
    negatives_at_1pct_fpr: int
    aupr: float
    f1_at_mean_member: float
    gap: float
    n_members: int
    n_nonmembers: int

    def as_row(self) -> dict[str, float | int]:
        return dict(self.__dict__)


def check_scores(scores, name: str) -> np.ndarray:
    """1-D float64 array of at least 2 finite scores, else a ``ValueError`` naming ``name``."""
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().cpu().numpy()
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 elements, got {arr.shape[0]}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains {int((~np.isfinite(arr)).sum())} NaN or infinite scores")
    return arr


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """Largest TPR on the ROC curve with FPR <= ``target`` (``target`` in (0, 1)).

    >>> tpr_at_fpr(np.array([0.0, 0.01, 0.5, 1.0]), np.array([0.2, 0.4, 0.9, 1.0]), 0.01)
    0.4
    """
    check_float(target, "target FPR", minimum=0, maximum=1, min_inclusive=False, max_inclusive=False)
    ok = fpr <= target
    return float(tpr[ok].max()) if ok.any() else 0.0


def membership_metrics(member_scores, nonmember_scores) -> MembershipMetrics:
    """All metrics for scores of members and of non-members (larger score = member).

    >>> m = membership_metrics([3.0, 2.0, 1.5], [0.0, 1.0, -1.0])
    >>> m.auc, m.advantage, m.tpr_at_0_1pct_fpr
    (1.0, 1.0, 1.0)
    """
    mem = check_scores(member_scores, "member_scores")
    non = check_scores(nonmember_scores, "nonmember_scores")
    y = np.concatenate([np.ones(len(mem)), np.zeros(len(non))])
    s = np.concatenate([mem, non])
    fpr, tpr, _ = roc_curve(y, s)
    adv = float(np.max(tpr - fpr))
    pred = (s >= mem.mean()).astype(int)
    return MembershipMetrics(
        auc=float(roc_auc_score(y, s)),
        advantage=adv,
        balanced_accuracy=(1 + adv) / 2,
        tpr_at_0_1pct_fpr=tpr_at_fpr(fpr, tpr, 0.001),
        tpr_at_1pct_fpr=tpr_at_fpr(fpr, tpr, 0.01),
        negatives_at_0_1pct_fpr=int(np.floor(0.001 * len(non) + 1e-9)),
        negatives_at_1pct_fpr=int(np.floor(0.01 * len(non) + 1e-9)),
        aupr=float(average_precision_score(y, s)),
        f1_at_mean_member=float(f1_score(y, pred, zero_division=0.0)),
        gap=float(mem.mean() - non.mean()),
        n_members=len(mem),
        n_nonmembers=len(non),
    )
