"""The trainer: learning, early stopping on validation AUC, padding rows, checkpoints, evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from bastion.ctr.features import FeatureSpec
from bastion.ctr.models import build_model
from bastion.ctr.pipeline import ArrayBatches
from bastion.ctr.trainer import TrainConfig, evaluate_predictions, fit, load_checkpoint, predict, split_parameters


def _data(n, seed):
    rng = np.random.default_rng(seed)
    ids = np.stack([rng.integers(1, 30, n), rng.integers(1, 40, n)], 1)
    item_effect = np.random.default_rng(99).normal(0, 1.5, 40)
    p = 1 / (1 + np.exp(-(item_effect[ids[:, 1]] - 0.3)))
    return {
        "ids": ids.astype(np.int64),
        "label": (rng.random(n) < p).astype(np.float32),
        "scene": rng.integers(0, 2, n),
        "user": ids[:, 0].copy(),
        "p_true": p.astype(np.float32),
        "cold_item": ids[:, 1] >= 35,
    }


SPEC = FeatureSpec(["user", "item"], [30, 40], num_scenes=2)


def test_fit_learns_restores_the_best_epoch_and_checkpoints(tmp_path):
    torch.manual_seed(0)
    model = build_model("deepfm", SPEC, dim=4, mlp=(16,))
    train = ArrayBatches(_data(6000, 0), batch_size=256, seed=0)
    val = ArrayBatches(_data(2000, 1), batch_size=1000, shuffle=False)
    res = fit(
        model,
        train,
        val,
        TrainConfig(epochs=4, lr=1e-2, patience=1),
        checkpoint_dir=tmp_path,
        set_epoch=train.set_epoch,
    )
    aucs = [h["val_auc"] for h in res.history]
    assert res.best_val_auc == max(aucs) and res.best_epoch == int(np.argmax(aucs))
    pred = predict(model, val)
    assert abs(roc_auc_score(pred["label"], pred["p"]) - res.best_val_auc) < 1e-9  # best weights restored
    assert res.best_val_auc > 0.7  # the item effect is learnt
    fresh = load_checkpoint(build_model("deepfm", SPEC, dim=4, mlp=(16,)), tmp_path / "best.pt")
    torch.testing.assert_close(predict(fresh, val)["p"], pred["p"])
    assert res.train_rows == 6000 * len(res.history) and res.samples_per_s > 0


def test_padding_rows_carry_no_loss_and_no_prediction():
    torch.manual_seed(0)
    d = _data(64, 2)
    batch = {k: torch.from_numpy(np.asarray(v)) for k, v in d.items()}
    w = torch.ones(64)
    w[::2] = 0.0
    model = build_model("fm", SPEC, dim=4)
    from bastion.ctr.trainer import _loss

    full = _loss(model(batch), {**batch, "weight": w})
    half = {k: v[1::2] for k, v in batch.items()}
    torch.testing.assert_close(full, _loss(model(half), half))
    pred = predict(model, [{**batch, "weight": w}])
    assert pred["p"].shape == (32,)


def test_evaluate_predictions_matches_sklearn():
    rng = np.random.default_rng(3)
    d = _data(3000, 3)
    p = np.clip(d["p_true"] + rng.normal(0, 0.2, 3000), 0.01, 0.99)
    out = evaluate_predictions({**d, "p": p})
    assert abs(out["auc"] - roc_auc_score(d["label"], p)) < 1e-9
    cold = d["cold_item"]
    assert abs(out["cold_item_auc"] - roc_auc_score(d["label"][cold], p[cold])) < 1e-9
    assert abs(out["oracle_auc"] - roc_auc_score(d["label"], d["p_true"])) < 1e-9
    s0 = d["scene"] == 0
    assert abs(out["scene_auc"]["0"] - roc_auc_score(d["label"][s0], p[s0])) < 1e-9


def test_sparse_tables_get_the_lazy_optimizer_and_config_errors():
    model = build_model("deepfm", SPEC, dim=4, mlp=(8,))
    sparse, dense = split_parameters(model)
    assert sparse and all(p.dim() == 2 for p in sparse)
    assert {id(p) for p in sparse}.isdisjoint(id(p) for p in dense)
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=0.0)
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="sparse_optimizer"):
        TrainConfig(sparse_optimizer="sgd")
    with pytest.raises(ValueError, match="no batches"):
        fit(build_model("fm", SPEC, dim=4), [], None)
