"""``audit``: every membership attack on a trained model, whatever trained it.

Given a model (or an ensemble's log-predictive function), members and non-members, it reports each
score-based attack's metrics and the train/test accuracy gap. With a training recipe ``train_fn``
(``train_fn(x, y, seed)`` returns a callable mapping inputs to logits, trained like the target) it
adds Shokri's shadow-model attack (on ``shadow_data``, disjoint from the target's training data)
and LiRA with ``lira_models`` reference models, each trained on a random half of
members + non-members (online and offline scores).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_curve
from torch import nn

from ..core.checks import check_int, check_labels, check_tensor
from ..core.report import new_figure, save_figure
from .attacks import ATTACKS, YeomThreshold, margin
from .lira import balanced_keep_matrix, lira_target_scores
from .metrics import MembershipMetrics, membership_metrics
from .shadow import ShadowModelAttack
from .training import logits_of

__all__ = ["AuditResult", "audit", "roc_figure"]


@dataclass
class AuditResult:
    """Metrics of every attack, plus accuracies; ``scores`` keeps the raw scores for plots."""

    metrics: dict[str, MembershipMetrics]
    member_accuracy: float
    nonmember_accuracy: float
    scores: dict[str, tuple[np.ndarray, np.ndarray]] = field(repr=False, default_factory=dict)

    @property
    def accuracy_gap(self) -> float:
        return self.member_accuracy - self.nonmember_accuracy

    def rows(self) -> list[dict]:
        return [{"attack": name, **m.as_row()} for name, m in self.metrics.items()]


def audit(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    members: tuple[torch.Tensor, torch.Tensor],
    nonmembers: tuple[torch.Tensor, torch.Tensor],
    *,
    kind: str = "logits",
    train_fn: Callable[[torch.Tensor, torch.Tensor, int], Callable[[torch.Tensor], torch.Tensor]] | None = None,
    shadow_data: tuple[torch.Tensor, torch.Tensor] | None = None,
    n_shadows: int = 4,
    lira_models: int = 0,
    seed: int = 0,
) -> AuditResult:
    """Run every score-based attack of :data:`bastion.privacy.attacks.ATTACKS`.

    Parameters
    ----------
    model:
        An ``nn.Module`` returning logits, or any callable returning logits / log-probabilities
        (e.g. ``lambda x: ensemble.log_predictive(net, x)``), or probabilities with ``kind="probs"``.
    members, nonmembers:
        ``(x, y)`` pairs. Yeom's threshold is the mean loss on the members (the training loss).
    train_fn, shadow_data, n_shadows:
        The recipe and the disjoint data for Shokri's attack (``"shadow"``).
    lira_models:
        Reference models for LiRA (``"lira_online"``, ``"lira_offline"``); 0 skips it, else even >= 2.
    seed:
        Seeds the shadow slicing and the LiRA keep matrix; reference model ``m`` gets ``seed + m``.
    """
    if (shadow_data is not None or lira_models) and train_fn is None:
        raise ValueError("shadow_data and lira_models need a training recipe: pass train_fn")
    lira_models = check_int(lira_models, "lira_models", minimum=0)
    xm, ym = members
    xn, yn = nonmembers
    for name, (x, y) in {"members": (xm, ym), "nonmembers": (xn, yn)}.items():
        check_tensor(x, f"{name} x", floating=True)
        check_labels(y, f"{name} y", n=x.shape[0])
        if x.shape[0] < 2:
            raise ValueError(f"{name} needs at least 2 examples, got {x.shape[0]}")
    if isinstance(model, nn.Module):
        out_m, out_n = logits_of(model, xm), logits_of(model, xn)
    else:
        with torch.no_grad():
            out_m, out_n = model(xm).to(torch.float64), model(xn).to(torch.float64)
    metrics, scores = {}, {}
    for name, cls in ATTACKS.items():
        attack = YeomThreshold().fit(out_m, ym, kind) if cls is YeomThreshold else cls()
        sm = attack.score(out_m, ym, kind).numpy()
        sn = attack.score(out_n, yn, kind).numpy()
        metrics[name] = membership_metrics(sm, sn)
        scores[name] = (sm, sn)
    if shadow_data is not None:
        shadow = ShadowModelAttack(n_shadows=n_shadows, seed=seed).fit(train_fn, *shadow_data)
        sm, sn = shadow.score(out_m, ym, kind).numpy(), shadow.score(out_n, yn, kind).numpy()
        metrics["shadow"], scores["shadow"] = membership_metrics(sm, sn), (sm, sn)
    if lira_models:
        x_pool, y_pool = torch.cat([xm, xn]), torch.cat([ym, yn])
        keep = balanced_keep_matrix(lira_models, len(y_pool), seed=seed)
        ref = []
        for m in range(lira_models):
            predict = train_fn(x_pool[keep[m]], y_pool[keep[m]], seed + m)
            with torch.no_grad():
                ref.append(margin(predict(x_pool).to(torch.float64), y_pool))
        target = margin(torch.cat([out_m, out_n]), y_pool, kind)
        for name, online in (("lira_online", True), ("lira_offline", False)):
            s = lira_target_scores(target, torch.stack(ref), keep, online=online).numpy()
            sm, sn = s[: len(ym)], s[len(ym) :]
            metrics[name], scores[name] = membership_metrics(sm, sn), (sm, sn)
    acc_m = float((out_m.argmax(1) == ym).double().mean())
    acc_n = float((out_n.argmax(1) == yn).double().mean())
    return AuditResult(metrics, acc_m, acc_n, scores)


def roc_figure(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str = "") -> Path:
    """Log-log ROC curves (members positive) of several ``(member_scores, nonmember_scores)``."""
    fig, ax = new_figure(figsize=(5.2, 4.6))
    for label, (sm, sn) in curves.items():
        y = np.concatenate([np.ones(len(sm)), np.zeros(len(sn))])
        fpr, tpr, _ = roc_curve(y, np.concatenate([sm, sn]))
        ax.plot(np.maximum(fpr, 1e-4), np.maximum(tpr, 1e-4), label=label)
    ax.plot([1e-4, 1], [1e-4, 1], "k:", lw=1, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(1e-3, 1)
    ax.set_ylim(1e-3, 1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=7, loc="lower right")
    if title:
        ax.set_title(title, fontsize=9)
    return save_figure(fig, path)
