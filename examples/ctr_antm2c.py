"""Multi-scenario multi-modal CTR on AntM2C-shaped data, streamed from Parquet (about 1 minute on a CPU).

The same code runs on the real release after ``bastion ctr convert antm2c_10m_part*.csv --out DIR`` and an
item-keyed vector file of your image encoder's outputs (``image=...``).
"""

from __future__ import annotations

import tempfile

import torch
from torch.utils.data import DataLoader

from bastion.ctr.generator import generate
from bastion.ctr.models import build_model
from bastion.ctr.pipeline import CTRStream
from bastion.ctr.tasks import antm2c_encoder, split_dirs
from bastion.ctr.trainer import TrainConfig, evaluate_predictions, fit, predict

torch.set_num_threads(1)
with tempfile.TemporaryDirectory() as root:
    generate(root, rows=150_000, seed=0)  # train/ val/ test/ Parquet parts + item_vectors.safetensors
    encoder = antm2c_encoder(root, features=("id", "text", "image"))  # vocabularies fit on train/ only
    dirs = split_dirs(root)
    train = CTRStream(dirs["train"], encoder, batch_size=2048, seed=0)  # seeded shuffle, bounded buffer
    val = CTRStream(dirs["val"], encoder, batch_size=8192, shuffle=False)
    test = CTRStream(dirs["test"], encoder, batch_size=8192, shuffle=False)
    model = build_model("pooled", encoder.spec(), dim=16, mlp=(128, 64))  # DeepFM with the scene as a field
    result = fit(
        model, DataLoader(train, batch_size=None), val, TrainConfig(epochs=3, patience=1), set_epoch=train.set_epoch
    )
    scores = evaluate_predictions(predict(model, test))
    print(f"best epoch {result.best_epoch}, {result.samples_per_s:,.0f} samples/s")
    print(f"test AUC {scores['auc']:.4f} (oracle {scores['oracle_auc']:.4f}), gAUC {scores['gauc']:.4f}")
    print(f"cold-item AUC {scores['cold_item_auc']:.4f} on {scores['cold_item_share']:.0%} of test rows")
    print("per-scene AUC", {k: round(v, 4) for k, v in scores["scene_auc"].items()})
