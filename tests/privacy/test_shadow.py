"""Shokri shadow-model attack on real digits: learns leakage that the loss attack also sees."""

from __future__ import annotations

import pytest
import torch

from bastion.data import load_dataset
from bastion.privacy import LossAttack, ShadowModelAttack, logits_of, membership_metrics, train_classifier


def _train_fn(x, y, seed):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(784, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    # label noise makes members memorable, as in the spec's q=0.2 regime
    y = y.clone()
    flip = torch.rand(len(y), generator=torch.Generator().manual_seed(seed)) < 0.2
    y[flip] = (y[flip] + 1) % 10
    train_classifier(net, x, y, opt, epochs=30, batch_size=32, seed=seed)
    return lambda v: logits_of(net, v)


@pytest.fixture(scope="module")
def setup():
    data = load_dataset("mnist5k", "all")
    x, y = data.images.flatten(1), data.labels
    target = _train_fn(x[:400], y[:400], seed=100)
    return x, y, target


@pytest.mark.parametrize(
    ("features", "per_class"), [("logits+label", False), ("sorted_probs", False), ("sorted_probs", True)]
)
def test_shadow_attack_detects_membership(setup, features, per_class):
    x, y, target = setup
    attack = ShadowModelAttack(n_shadows=2, features=features, per_class=per_class, seed=0).fit(
        _train_fn, x[1000:2600], y[1000:2600]
    )
    mem, non = target(x[:400]), target(x[400:800])
    m = membership_metrics(attack.score(mem, y[:400]), attack.score(non, y[400:800]))
    loss = membership_metrics(LossAttack().score(mem, y[:400]), LossAttack().score(non, y[400:800]))
    assert m.auc > 0.6, m.auc
    assert m.auc > loss.auc - 0.1  # in the same league as the loss attack on the same target


def test_shadow_attack_errors():
    with pytest.raises(ValueError, match="per_class=True needs"):
        ShadowModelAttack(per_class=True)
    with pytest.raises(ValueError, match="not fitted"):
        ShadowModelAttack().score(torch.zeros(2, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="at least 8 shadow examples"):
        ShadowModelAttack(n_shadows=4).fit(_train_fn, torch.zeros(5, 784), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="features must be one of"):
        ShadowModelAttack(features="probs")
    fitted = ShadowModelAttack().fit_features(
        torch.randn(20, 3), torch.randint(0, 3, (20,)), torch.randn(20, 3), torch.randint(0, 3, (20,))
    )
    with pytest.raises(ValueError, match="3 classes like the shadows"):
        fitted.score(torch.zeros(2, 4), torch.tensor([0, 1]))
