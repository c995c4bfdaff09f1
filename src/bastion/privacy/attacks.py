"""Score-based membership-inference attacks behind one interface: ``score(outputs, labels)``.

A larger score means "more likely a member". ``outputs`` are logits ``(N, C)`` -- or an ensemble's
log-predictive, which every score here treats the same way since they only use normalised log
probabilities -- or, with ``kind="probs"``, probability rows.

Everything is computed in float64 from logits, never as the log of a float32 softmax (its zeros
and ties pushed an AUC from 0.57 toward 0.5, spec sgld.md section 4). The loss attack ranks by the
margin ``phi = z_y - logsumexp_{j != y} z_j``: ``loss = softplus(-phi)`` is the same order without
underflow, so logits (100, 0) and (120, 0) still get distinct scores although both cross-entropies
round to 0.

Attacks: loss (Shokri/Yeom family), Yeom's fixed threshold (Yeom et al., CSF 2018), confidence,
entropy, modified entropy (Song & Mittal, USENIX Security 2021), and the gap attack
(correct => member).
"""

from __future__ import annotations

import torch

from ..core.checks import check_choice, check_float, check_labels, check_tensor

__all__ = [
    "ATTACKS",
    "ConfidenceAttack",
    "EntropyAttack",
    "GapAttack",
    "LossAttack",
    "MembershipAttack",
    "ModifiedEntropyAttack",
    "YeomThreshold",
    "log_probs",
    "margin",
]


def log_probs(outputs: torch.Tensor, labels: torch.Tensor, kind: str = "logits") -> torch.Tensor:
    """Validated float64 log-probabilities ``(N, C)`` from logits or probability rows."""
    check_choice(kind, "kind", ("logits", "probs"))
    outputs = check_tensor(outputs, "outputs", ndim=2, floating=True)
    check_labels(labels, "labels", n=outputs.shape[0], num_classes=outputs.shape[1])
    z = outputs.detach().to(torch.float64)
    if kind == "probs":
        if (
            bool((z < 0).any())
            or bool((z > 1).any())
            or not torch.allclose(z.sum(1), torch.ones_like(z[:, 0]), atol=1e-4)
        ):
            raise ValueError("outputs with kind='probs' must be probability rows: entries in [0, 1] summing to 1")
        return z.clamp_min(1e-300).log()
    return torch.log_softmax(z, dim=1)


def margin(outputs: torch.Tensor, labels: torch.Tensor, kind: str = "logits") -> torch.Tensor:
    """``phi = z_y - logsumexp_{j != y} z_j`` in float64 (LiRA's statistic; -loss in ranking).

    >>> margin(torch.tensor([[100.0, 0.0], [120.0, 0.0]]), torch.tensor([0, 0])).tolist()
    [100.0, 120.0]
    """
    lp = log_probs(outputs, labels, kind)
    y = labels.to(torch.long).unsqueeze(1)
    own = lp.gather(1, y).squeeze(1)
    others = lp.scatter(1, y, float("-inf")).logsumexp(1)
    return own - others


class MembershipAttack:
    """Base class: ``score(outputs, labels, kind="logits")`` returns float64 scores, larger = member."""

    name = "attack"

    def score(self, outputs: torch.Tensor, labels: torch.Tensor, kind: str = "logits") -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class LossAttack(MembershipAttack):
    """Low loss => member. Scores are ``phi`` (same order as ``-loss``, no underflow)."""

    name = "loss"

    def score(self, outputs, labels, kind="logits"):
        return margin(outputs, labels, kind)


class ConfidenceAttack(MembershipAttack):
    """High probability of the true label => member."""

    name = "confidence"

    def score(self, outputs, labels, kind="logits"):
        lp = log_probs(outputs, labels, kind)
        return lp.gather(1, labels.to(torch.long).unsqueeze(1)).squeeze(1).exp()


class EntropyAttack(MembershipAttack):
    """Low predictive entropy => member (label-free)."""

    name = "entropy"

    def score(self, outputs, labels, kind="logits"):
        lp = log_probs(outputs, labels, kind)
        return (lp.exp() * lp).nan_to_num(0.0).sum(1)  # -H(p)


class ModifiedEntropyAttack(MembershipAttack):
    """Song & Mittal's modified entropy ``-(1-p_y) log p_y - sum_{j!=y} p_j log(1-p_j)``, negated."""

    name = "modified_entropy"

    def score(self, outputs, labels, kind="logits"):
        lp = log_probs(outputs, labels, kind)
        p = lp.exp()
        y = labels.to(torch.long).unsqueeze(1)
        p_y, lp_y = p.gather(1, y).squeeze(1), lp.gather(1, y).squeeze(1)
        log1m = torch.log1p(-p.clamp(max=1 - 1e-16))
        others = (p * log1m).scatter(1, y, 0.0).sum(1)
        # log(1 - p_y) computed from the other classes for accuracy when p_y -> 1
        return (1 - p_y) * lp_y + others


class GapAttack(MembershipAttack):
    """Correctly classified => member; its advantage is the train-test accuracy gap."""

    name = "gap"

    def score(self, outputs, labels, kind="logits"):
        lp = log_probs(outputs, labels, kind)
        return (lp.argmax(1) == labels.to(lp.device)).to(torch.float64)


class YeomThreshold(MembershipAttack):
    """Yeom et al.: member iff loss <= ``threshold`` (the mean training loss, see :meth:`fit`)."""

    name = "yeom"

    def __init__(self, threshold: float | None = None) -> None:
        self.threshold = None if threshold is None else check_float(threshold, "threshold", minimum=0)

    def fit(self, member_outputs, member_labels, kind: str = "logits") -> YeomThreshold:
        """Set the threshold to the mean loss on the training set (what a trainer reports)."""
        loss = torch.nn.functional.softplus(-margin(member_outputs, member_labels, kind))
        self.threshold = float(loss.mean())
        return self

    def score(self, outputs, labels, kind="logits"):
        if self.threshold is None:
            raise ValueError("YeomThreshold needs a threshold: pass threshold= or call fit(member_outputs, labels)")
        loss = torch.nn.functional.softplus(-margin(outputs, labels, kind))
        return (loss <= self.threshold).to(torch.float64)

    def __repr__(self) -> str:
        return f"YeomThreshold(threshold={self.threshold!r})"


#: The score-based attacks an audit runs, by name.
ATTACKS = {
    cls.name: cls
    for cls in (LossAttack, YeomThreshold, ConfidenceAttack, EntropyAttack, ModifiedEntropyAttack, GapAttack)
}
