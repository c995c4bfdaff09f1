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
