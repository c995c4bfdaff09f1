"""LiRA: synthetic closed form, batched reference models against separately trained ones, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bastion.privacy import BatchedMLP, balanced_keep_matrix, lira_scores, membership_metrics, train_batched


def _synthetic(n_models, n_points=2000, seed=0):
    keep = balanced_keep_matrix(n_models, n_points, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    stats = keep.double() + torch.randn(n_models, n_points, generator=g, dtype=torch.float64)
    return stats, keep


def test_online_lira_approaches_the_bayes_auc_with_many_models():
    bayes = 0.5 * (1 + math.erf(1 / 2))  # Phi(1/sqrt(2)) = 0.760 for N(1,1) vs N(0,1)
    stats, keep = _synthetic(64)
    s = lira_scores(stats, keep)
    auc = membership_metrics(s[keep], s[~keep]).auc
    assert abs(auc - bayes) <= 0.02, auc


def test_fix_variance_helps_with_few_models():
    stats, keep = _synthetic(16)
    auc = {}
    for name, kw in {"online": {}, "fixed": {"fix_variance": True}, "offline": {"online": False}}.items():
        s = lira_scores(stats, keep, **kw)
        auc[name] = membership_metrics(s[keep], s[~keep]).auc
    assert auc["fixed"] > auc["online"]  # spec: 0.69 -> 0.72 at M=16
    # with a common OUT law for every point, the one-sided offline test ranks almost like phi itself
    assert abs(auc["offline"] - 0.5 * (1 + math.erf(1 / 2))) <= 0.02


def test_offline_one_sided_score_is_monotone_in_phi():
    stats, keep = _synthetic(8, n_points=50)
    s = lira_scores(stats, keep, online=False)
    s2 = lira_scores(stats + 0.5 * (torch.arange(8) == 0)[:, None], keep, online=False)
    assert bool((s2[0] > s[0]).all())  # raising the target's phi raises every one of its scores


def test_keep_matrix_is_balanced_and_seeded():
    k = balanced_keep_matrix(16, 101, seed=3)
    assert k.sum(0).tolist() == [8] * 101
    assert torch.equal(k[0] ^ k[1], torch.ones(101, dtype=torch.bool))
    assert torch.equal(k, balanced_keep_matrix(16, 101, seed=3))
    assert not torch.equal(k, balanced_keep_matrix(16, 101, seed=4))


@pytest.mark.parametrize(
    ("call", "err", "match"),
    [
        (lambda: lira_scores(torch.zeros(4, 10), torch.zeros(4, 9, dtype=torch.bool)), ValueError, "shape of stats"),
        (
            lambda: lira_scores(torch.zeros(1, 10), torch.zeros(1, 10, dtype=torch.bool)),
            ValueError,
            "at least 2 models",
        ),
        (lambda: lira_scores(torch.zeros(2, 3), torch.zeros(2, 3)), TypeError, "boolean"),
        (
            lambda: lira_scores(torch.full((2, 3), float("nan")), torch.zeros(2, 3, dtype=torch.bool)),
            ValueError,
            "non-finite",
        ),
        (lambda: balanced_keep_matrix(3, 10), ValueError, "even"),
        (lambda: balanced_keep_matrix(1, 10), ValueError, "n_models must be >= 2"),
    ],
)
def test_errors(call, err, match):
    with pytest.raises(err, match=match):
        call()


def test_batched_mlp_equals_separate_mlps_trained_the_same_way():
    torch.manual_seed(0)
    x, y = torch.randn(40, 6), torch.randint(0, 3, (40,))
    keep = balanced_keep_matrix(4, 40, seed=0)
    batched = BatchedMLP(4, (6, 5, 3), generator=torch.Generator().manual_seed(1))
    init = [(w.detach().clone(), b.detach().clone()) for w, b in zip(batched.weights, batched.biases, strict=True)]
    opt = torch.optim.SGD(batched.parameters(), lr=0.1)
    train_batched(batched, x, y, keep, opt, epochs=3, batch_size=8, seed=2)
    # replay model 2 alone with the same shuffles: same weights
    g = torch.Generator().manual_seed(2)
    idx_in = torch.stack([row.nonzero().flatten() for row in keep])
    w1, b1 = init[0][0][2].clone().requires_grad_(), init[0][1][2].clone().requires_grad_()
    w2, b2 = init[1][0][2].clone().requires_grad_(), init[1][1][2].clone().requires_grad_()
    single = torch.optim.SGD([w1, b1, w2, b2], lr=0.1)
    for _ in range(3):
        perm = idx_in.gather(1, torch.argsort(torch.rand(4, 20, generator=g), dim=1))[2]
        for i in range(0, 20, 8):
            rows = perm[i : i + 8]
            out = torch.relu(x[rows] @ w1 + b1) @ w2 + b2
            single.zero_grad()
            F.cross_entropy(out, y[rows]).backward()
            single.step()
    torch.testing.assert_close(batched.weights[0][2], w1.detach())
    torch.testing.assert_close(batched.weights[1][2], w2.detach())
    assert batched(x).shape == (4, 40, 3)
    with pytest.raises(ValueError, match="flattened features"):
        batched(torch.randn(3, 5, 6))
