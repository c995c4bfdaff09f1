"""Membership privacy of SG-MCMC: samplers, posterior ensembles, membership-inference audits.

May import :mod:`bastion.core`, :mod:`bastion.data` and :mod:`bastion.zoo` only.
"""

from .attacks import (
    ATTACKS,
    ConfidenceAttack,
    EntropyAttack,
    GapAttack,
    LossAttack,
    MembershipAttack,
    ModifiedEntropyAttack,
    YeomThreshold,
    log_probs,
    margin,
)
from .audit import AuditResult, audit, roc_figure
from .ensemble import PosteriorEnsemble
from .lira import BatchedMLP, balanced_keep_matrix, lira_scores, train_batched
from .metrics import MembershipMetrics, membership_metrics, tpr_at_fpr
from .optimizers import SGHMC, SGLD, polynomial_decay, pSGLD
from .shadow import ShadowModelAttack
from .theory import (
    langevin_kl_bound,
    pinsker_advantage,
    sgld_advantage_bound,
    sgld_kl_bound,
    yeom_dp_advantage_bound,
)
from .training import logits_of, train_classifier

__all__ = [
    "ATTACKS",
    "SGHMC",
    "SGLD",
    "AuditResult",
    "BatchedMLP",
    "ConfidenceAttack",
    "EntropyAttack",
    "GapAttack",
    "LossAttack",
    "MembershipAttack",
    "MembershipMetrics",
    "ModifiedEntropyAttack",
    "PosteriorEnsemble",
    "ShadowModelAttack",
    "YeomThreshold",
    "audit",
    "balanced_keep_matrix",
    "langevin_kl_bound",
    "lira_scores",
    "log_probs",
    "logits_of",
    "margin",
    "membership_metrics",
    "pSGLD",
    "pinsker_advantage",
    "polynomial_decay",
    "roc_figure",
    "sgld_advantage_bound",
    "sgld_kl_bound",
    "tpr_at_fpr",
    "train_batched",
    "train_classifier",
    "yeom_dp_advantage_bound",
]
