"""Membership attacks and metrics against brute force, closed forms and edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bastion.data import load_dataset
from bastion.privacy import (
    ATTACKS,
    EntropyAttack,
    GapAttack,
    LossAttack,
    ModifiedEntropyAttack,
    PosteriorEnsemble,
    YeomThreshold,
    margin,
    membership_metrics,
    pinsker_advantage,
    sgld_kl_bound,
    yeom_dp_advantage_bound,
)


def _brute_auc(pos, neg):
    pos, neg = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return float((pos > neg).mean() + 0.5 * (pos == neg).mean())


def _brute_advantage(pos, neg):
    best = 0.0
    for t in np.concatenate([pos, neg, [np.inf]]):
        best = max(best, float((pos >= t).mean() - (neg >= t).mean()))
    return best


def test_metrics_match_brute_force():
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(0.5, 1, 300), rng.normal(0, 1, 400)
    pos[:20] = neg[:20]  # ties
    m = membership_metrics(pos, neg)
    assert m.auc == pytest.approx(_brute_auc(pos, neg), abs=1e-12)
    assert m.advantage == pytest.approx(_brute_advantage(pos, neg), abs=1e-12)
    assert m.balanced_accuracy == pytest.approx((1 + m.advantage) / 2)
    assert m.gap == pytest.approx(pos.mean() - neg.mean())
    thr = pos.mean()
    tp, fp = (pos >= thr).sum(), (neg >= thr).sum()
    assert m.f1_at_mean_member == pytest.approx(2 * tp / (2 * tp + fp + (len(pos) - tp)))
    # TPR at 1 % FPR: largest TPR whose FPR <= 4/400
    best = max((pos >= t).mean() for t in np.concatenate([pos, neg, [np.inf]]) if (neg >= t).mean() <= 0.01)
    assert m.tpr_at_1pct_fpr == pytest.approx(best)
    assert (m.negatives_at_1pct_fpr, m.negatives_at_0_1pct_fpr) == (4, 0)  # 400 non-members


def test_perfect_separation():
    m = membership_metrics(np.arange(10, 20.0), np.arange(10.0))
    assert (m.auc, m.advantage, m.tpr_at_0_1pct_fpr, m.tpr_at_1pct_fpr) == (1.0, 1.0, 1.0, 1.0)


@pytest.mark.parametrize(
    ("mem", "non", "match"),
    [
        ([1.0], [0.0, 1.0], "member_scores needs at least 2"),
        ([1.0, 2.0], [0.0], "nonmember_scores needs at least 2"),
        ([1.0, float("nan")], [0.0, 1.0], "NaN"),
        ([[1.0, 2.0]], [0.0, 1.0], "1-D"),
    ],
)
def test_metric_input_errors(mem, non, match):
    with pytest.raises(ValueError, match=match):
        membership_metrics(mem, non)


def test_margin_does_not_underflow_where_cross_entropy_does():
    logits = torch.tensor([[100.0, 0.0], [120.0, 0.0]])
    labels = torch.tensor([0, 0])
    assert F.cross_entropy(logits.double(), labels, reduction="none").tolist() == [0.0, 0.0]
    s = LossAttack().score(logits, labels)
    assert s[1] > s[0]
    assert float(F.softplus(-s[0])) == pytest.approx(math.exp(-100), rel=1e-9)  # 3.7e-44


def test_margin_ranks_like_minus_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits, labels = 3 * torch.randn(500, 10, generator=g), torch.randint(0, 10, (500,), generator=g)
    ce = F.cross_entropy(logits.double(), labels, reduction="none")
    phi = margin(logits, labels)
    torch.testing.assert_close(F.softplus(-phi), ce)


def test_scores_from_probs_equal_scores_from_logits():
    g = torch.Generator().manual_seed(1)
    logits, labels = torch.randn(50, 4, generator=g), torch.randint(0, 4, (50,), generator=g)
    probs = logits.double().softmax(1)
    for name, cls in ATTACKS.items():
        attack = cls(threshold=1.0) if name == "yeom" else cls()
        torch.testing.assert_close(attack.score(logits, labels), attack.score(probs, labels, kind="probs"))


def test_entropy_and_modified_entropy_closed_forms():
    p = torch.tensor([[0.7, 0.2, 0.1]], dtype=torch.float64)
    y = torch.tensor([0])
    h = -(p * p.log()).sum()
    assert float(EntropyAttack().score(p, y, kind="probs")[0]) == pytest.approx(-float(h))
    mentr = -(0.3 * math.log(0.7) + 0.2 * math.log(0.8) + 0.1 * math.log(0.9))
    assert float(ModifiedEntropyAttack().score(p, y, kind="probs")[0]) == pytest.approx(-mentr)


def test_gap_and_yeom_threshold():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
    labels = torch.tensor([0, 0, 1])
    assert GapAttack().score(logits, labels).tolist() == [1.0, 0.0, 0.0]
    yeom = YeomThreshold().fit(logits[:1], labels[:1])
    assert yeom.threshold == pytest.approx(math.log1p(math.exp(-2)))
    assert yeom.score(logits, labels).tolist() == [1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="needs a threshold"):
        YeomThreshold().score(logits, labels)


@pytest.mark.parametrize(
    ("outputs", "labels", "kind", "err", "match"),
    [
        (torch.tensor([[0.5, 0.7]]), torch.tensor([0]), "probs", ValueError, "probability rows"),
        (torch.tensor([[-0.1, 1.1]]), torch.tensor([0]), "probs", ValueError, "probability rows"),
        (torch.zeros(3, 2), torch.tensor([0, 1]), "logits", ValueError, "length 3"),
        (torch.zeros(2, 2), torch.tensor([0, 2]), "logits", ValueError, r"labels must lie in \[0, 1\]"),
        (torch.full((2, 2), float("nan")), torch.tensor([0, 1]), "logits", ValueError, "non-finite"),
        (torch.zeros(2, 2), torch.tensor([0, 1]), "scores", ValueError, "kind must be one of"),
    ],
)
def test_attack_input_errors(outputs, labels, kind, err, match):
    with pytest.raises(err, match=match):
        LossAttack().score(outputs, labels, kind=kind)


def test_model_that_saw_neither_set_gives_chance_auc():
    torch.manual_seed(0)
    data = load_dataset("mnist5k", "train")
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    for _ in range(3):
        for i in range(0, 2000, 64):
            opt.zero_grad()
            F.cross_entropy(net(data.images[i : i + 64]), data.labels[i : i + 64]).backward()
            opt.step()
    with torch.no_grad():
        a, b = net(data.images[2000:3000]), net(data.images[3000:4000])
    for name in ("loss", "confidence", "entropy", "modified_entropy"):
        m = membership_metrics(
            ATTACKS[name]().score(a, data.labels[2000:3000]), ATTACKS[name]().score(b, data.labels[3000:4000])
        )
        assert abs(m.auc - 0.5) <= 0.04, (name, m.auc)


def test_posterior_ensemble_averages_probabilities_not_logits(tmp_path):
    net = torch.nn.Linear(3, 4)
    x = torch.randn(5, 3)
    probs = []
    for directory in (None, tmp_path):
        ens = PosteriorEnsemble(burn_in=2, thin=1, max_samples=3, directory=directory)
        torch.manual_seed(0)
        kept = []
        for _ in range(6):
            torch.nn.init.normal_(net.weight)
            if ens.collect(net):
                kept.append(torch.softmax(net(x).double(), 1).detach())
        assert len(ens) == 3
        lp = ens.log_predictive(net, x)
        torch.testing.assert_close(lp.exp(), torch.stack(kept[-3:]).mean(0))  # FIFO: the last three
        probs.append(lp)
    torch.testing.assert_close(probs[0], probs[1])
    assert len(list(tmp_path.glob("*.safetensors"))) == 3
    with pytest.raises(ValueError, match="burn_in must be >= 0"):
        PosteriorEnsemble(burn_in=-1)
    with pytest.raises(ValueError, match="thin must be >= 1"):
        PosteriorEnsemble(thin=0)
    with pytest.raises(ValueError, match="no samples"):
        PosteriorEnsemble().log_predictive(net, x)


def test_theory_bounds():
    kl = sgld_kl_bound(1.0, 64, 1000, 0.03, 1e-4, n_steps=640)
    assert kl == pytest.approx(1.0 * 1000 * 640 * 1e-4 / (2 * 0.03 * 64))
    assert pinsker_advantage(kl) == 1.0  # vacuous at useful settings, as the spec says
    assert sgld_kl_bound(1.0, 64, 1000, 0.06, 1e-4, n_steps=640) == pytest.approx(kl / 2)  # colder = looser
    assert pinsker_advantage(0.02) == pytest.approx(0.1)
    assert yeom_dp_advantage_bound(0.1) == pytest.approx(math.expm1(0.1))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        sgld_kl_bound(1.0, 64, 1000, 0.0, 1e-4, n_steps=10)
