"""The audit on a model trained here with SGLD and a posterior ensemble (the README's flow)."""

from __future__ import annotations

import pytest
import torch

from bastion.data import load_dataset
from bastion.privacy import SGLD, PosteriorEnsemble, audit, train_classifier


def test_audit_of_an_sgld_ensemble():
    data = load_dataset("mnist5k", "train")
    x, y = data.images.flatten(1), data.labels
    x_train, y_train, x_test, y_test = x[:300], y[:300], x[300:600], y[300:600]
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(784, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = SGLD(net.parameters(), lr=1e-3, num_data=300, temperature=0.03, seed=0)
    ens = PosteriorEnsemble(burn_in=4, max_samples=4)
    train_classifier(net, x_train, y_train, opt, epochs=8, batch_size=32, ensemble=ens)
    assert len(ens) == 4
    result = audit(lambda v: ens.log_predictive(net, v), (x_train, y_train), (x_test, y_test))
    assert set(result.metrics) == {"loss", "yeom", "confidence", "entropy", "modified_entropy", "gap"}
    assert result.member_accuracy > 0.7
    # the gap attack's advantage is the accuracy gap, exactly (ART's rule-based attack agrees)
    assert result.metrics["gap"].advantage == pytest.approx(max(result.accuracy_gap, 0.0), abs=1e-12)
    assert result.metrics["gap"].gap == pytest.approx(result.accuracy_gap, abs=1e-12)
    # loss and confidence rank identically (both monotone in the true-class probability)
    assert result.metrics["loss"].auc == pytest.approx(result.metrics["confidence"].auc, abs=1e-9)
    with pytest.raises(ValueError, match="members needs at least 2"):
        audit(net, (x_train[:1], y_train[:1]), (x_test, y_test))
    with pytest.raises(ValueError, match="length 5"):
        audit(net, (x_train[:5], y_train[:4]), (x_test, y_test))


def _noisy_mlp_recipe(x, y, seed):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(784, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    y = y.clone()
    flip = torch.rand(len(y), generator=torch.Generator().manual_seed(seed)) < 0.2
    y[flip] = (y[flip] + 1) % 10
    train_classifier(
        net, x, y, torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9), epochs=25, batch_size=32, seed=seed
    )
    return net


def test_audit_with_a_recipe_adds_shadow_and_lira():
    data = load_dataset("mnist5k", "all")
    x, y = data.images.flatten(1), data.labels
    target = _noisy_mlp_recipe(x[:300], y[:300], seed=50)
    result = audit(
        target, (x[:300], y[:300]), (x[300:600], y[300:600]),
        train_fn=_noisy_mlp_recipe, shadow_data=(x[1000:2200], y[1000:2200]), n_shadows=2, lira_models=8, seed=1,
    )  # fmt: skip
    assert {"shadow", "lira_online", "lira_offline"} <= set(result.metrics)
    assert result.metrics["shadow"].auc > 0.6
    assert result.metrics["lira_online"].auc > 0.6
    with pytest.raises(ValueError, match="need a training recipe"):
        audit(target, (x[:10], y[:10]), (x[10:20], y[10:20]), lira_models=4)
    with pytest.raises(ValueError, match="even"):
        audit(target, (x[:10], y[:10]), (x[10:20], y[10:20]), train_fn=_noisy_mlp_recipe, lira_models=3)


def test_zoo_trainer_reproduces_the_zoo_model_exactly():
    from bastion import zoo

    train = load_dataset("mnist5k", "train")
    retrained = zoo.trainer("mnist5k-mlp")(train.images, train.labels, 0)
    cached = zoo.load("mnist5k-mlp").classifier()
    x = load_dataset("mnist5k", "test").images[:100]
    with torch.no_grad():
        assert torch.equal(retrained(x), cached(x))
    with pytest.raises(ValueError, match="pretrained"):
        zoo.trainer("efficientnet-lite0")
