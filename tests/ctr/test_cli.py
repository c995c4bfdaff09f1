"""``bastion ctr``: generate -> train -> evaluate, convert on the release's CSV format, usage errors, bench.

The evaluate check is independent of the trainer's scoring: the reloaded model's test predictions are
recomputed here over an in-memory encoding of the test split and scored with scikit-learn.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from sklearn.metrics import roc_auc_score

import bastion.ctr.cli as ctr_cli
from bastion.cli import main
from bastion.ctr.models import MODEL_NAMES
from bastion.ctr.pipeline import materialize
from bastion.ctr.run import load_trained
from tests.ctr.test_schema_convert import COLUMNS, FMT, _rows, _write

SMALL = ["--dim", "4", "--mlp", "16", "--num-buckets", "64", "--batch-size", "256"]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("ctrcli") / "syn"
    assert main(["ctr", "generate", str(root), "--rows", "4000", "--seed", "2", "--image-dim", "8"]) == 0
    return root


def test_generate_train_evaluate_round_trip(generated, tmp_path, capsys):
    meta = json.loads((generated / "meta.json").read_text())
    assert sum(meta["rows"].values()) == 4000 and meta["config"]["image_dim"] == 8
    out = tmp_path / "run"
    argv = ["ctr", "train", "--data", str(generated), *SMALL, "--epochs", "1", "--max-steps", "4", "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "4 steps" in text and "| AUC |" in text and f"wrote {out}" in text
    m = json.loads((out / "metrics.json").read_text())
    assert m["steps"] == 4 and m["train_rows"] == 4 * 256 and m["world_size"] == 1
    for key in ("auc", "logloss", "weighted_auc", "gauc", "cold_item_auc", "warm_item_auc", "oracle_auc"):
        assert np.isfinite(m["test"][key]), key
    assert set(m["test"]["scene_auc"]) <= {"0", "1", "2", "3", "4"}

    assert main(["ctr", "evaluate", "--model-dir", str(out), "--out", str(tmp_path / "eval.json")]) == 0
    assert "| AUC |" in capsys.readouterr().out
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert ev["test"]["auc"] == pytest.approx(m["test"]["auc"], abs=1e-12)
    assert ev["test"]["n"] == m["test"]["n"] == meta["rows"]["test"]

    # independent scoring: reload, encode test/ in memory, predict in one go, sklearn's AUC
    model, encoder, cfg = load_trained(out)
    arrays = materialize(generated / "test", encoder)
    batch = {k: torch.from_numpy(v) for k, v in arrays.items()}
    with torch.no_grad():
        p = torch.sigmoid(model(batch)).numpy()
    assert roc_auc_score(arrays["label"], p) == pytest.approx(m["test"]["auc"], abs=1e-6)
    assert cfg.max_steps == 4 and cfg.model == "deepfm"
    # cold rows: test items without a train row, counted here from the raw Parquet
    train_items = pq.read_table(generated / "train", columns=["item_id"])["item_id"].to_numpy()
    test_items = pq.read_table(generated / "test", columns=["item_id"])["item_id"].to_numpy()
    cold = ~np.isin(test_items, train_items)
    assert 0 < cold.mean() < 1
    assert m["test"]["cold_item_share"] == pytest.approx(float(cold.mean()), abs=1e-12)
    assert ev["test"]["cold_item_auc"] == pytest.approx(m["test"]["cold_item_auc"], abs=1e-12)


def test_evaluate_rejects_data_with_other_features(generated, tmp_path):
    out = tmp_path / "run"
    argv = ["ctr", "train", "--data", str(generated), *SMALL, "--features", "id", "--max-steps", "1"]
    assert main([*argv, "--out", str(out)]) == 0
    cfg = json.loads((out / "config.json").read_text())
    cfg["run"]["num_buckets"] = 32  # as if trained with other buckets: the spec no longer matches
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="does not give the features"):
        load_trained(out)


def test_convert_release_csv_then_train(tmp_path, capsys):
    rows = _rows(150, seed=5)
    rows[60][2] = "2023-08-0x 12:00:00"  # one bad log_time
    csv = tmp_path / "antm2c_10m_part0"
    _write(csv, rows, extra={70: COLUMNS})  # a repeated header inside the part
    out = tmp_path / "conv"
    assert main(["ctr", "convert", str(csv), "--out", str(out)]) == 2  # raise on the bad row (default)
    assert "row 62" in capsys.readouterr().err  # row numbers count the header as row 1
    assert main(["ctr", "convert", str(csv), "--out", str(out), "--bad-rows", "skip"]) == 0
    text = capsys.readouterr().out
    good = [r for i, r in enumerate(rows) if i != 60]
    times = [dt.datetime.strptime(r[2], FMT) for r in good]
    want = {
        "train": sum(t <= dt.datetime(2023, 8, 3) for t in times),
        "val": sum(dt.datetime(2023, 8, 3) < t <= dt.datetime(2023, 8, 5) for t in times),
        "test": sum(t > dt.datetime(2023, 8, 5) for t in times),
    }
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["rows"] == want and summary["bad_rows"] == 1 and summary["header_rows"] == 1
    assert "bad rows 1" in text and "quarantine.csv" in text
    # custom bounds: everything up to Aug 4 noon is train
    out2 = tmp_path / "conv2"
    assert main(["ctr", "convert", str(csv), "--out", str(out2), "--bad-rows", "skip",
                 "--train-end", "2023-08-04 12:00:00", "--val-end", "2023-08-06"]) == 0  # fmt: skip
    rows2 = json.loads((out2 / "_summary.json").read_text())["rows"]
    assert rows2["train"] == sum(t <= dt.datetime(2023, 8, 4, 12) for t in times)
    # no split
    assert main(["ctr", "convert", str(csv), "--out", str(tmp_path / "flat"), "--bad-rows", "skip", "--no-split"]) == 0
    assert json.loads((tmp_path / "flat" / "_summary.json").read_text())["rows"] == {"all": 149}
    # the converted release trains end to end (Chinese text, null deep features, no p_true, no images)
    run = tmp_path / "run"
    argv = ["ctr", "train", "--data", str(out), *SMALL, "--features", "id,text", "--batch-size", "16"]
    assert main([*argv, "--max-steps", "2", "--out", str(run)]) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert m["test"]["n"] == want["test"] and "oracle_auc" not in m["test"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["ctr", "generate", "{tmp}/g", "--rows", "0"], "--rows"),
        (["ctr", "generate", "{tmp}/g", "--negative-keep", "0"], "--negative-keep"),
        (["ctr", "train", "--data", "{tmp}/nowhere"], "does not exist"),
        (["ctr", "train", "--data", "{tmp}"], "train/, val/ and test/"),
        (["ctr", "train", "--data", "{tmp}", "--model", "nope"], "'nope' is not one of"),
        (["ctr", "train", "--data", "{tmp}", "--features", "text,image"], "must include 'id'"),
        (["ctr", "train", "--data", "{tmp}", "--features", "id,audio"], "subset of id,text,image"),
        (["ctr", "train", "--data", "{tmp}", "--mlp", "64,x"], "comma-separated positive integers"),
        (["ctr", "train", "--data", "{tmp}", "--batch-size", "0"], "--batch-size"),
        (["ctr", "evaluate", "--model-dir", "{tmp}"], "not a bastion ctr train output"),
        (["ctr", "convert", "{tmp}/missing.csv", "--out", "{tmp}/o"], "does not exist"),
        (["ctr", "convert", "{tmp}/a.csv", "--out", "{tmp}/o", "--no-split", "--val-end", "2023-08-05"],
         "--no-split cannot"),
        (["ctr", "convert", "{tmp}/a.csv", "--out", "{tmp}/o", "--train-end", "2023-08-06"], "before val_end"),
    ],
)  # fmt: skip
def test_bad_arguments_are_usage_errors(tmp_path, capsys, argv, message):
    _write(tmp_path / "a.csv", _rows(5))
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_generate_refuses_to_mix_with_old_parts(generated, capsys):
    assert main(["ctr", "generate", str(generated), "--rows", "100"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_model_choices_match_the_registry():
    assert ctr_cli.MODEL_CHOICES == MODEL_NAMES


def test_bench_runs_the_checkout_script_or_says_where_it_lives(monkeypatch, tmp_path, capfd):
    script = ctr_cli.bench_script()
    if script.is_file():
        assert main(["ctr", "bench", "--", "--help"]) == 0
        assert "--quick" in capfd.readouterr().out
    monkeypatch.setattr(ctr_cli, "bench_script", lambda: tmp_path / "benchmarks" / "ctr_bench.py")
    assert main(["ctr", "bench"]) == 1
    err = capfd.readouterr().err
    assert "benchmarks/ctr_bench.py" in err and "source checkout" in err
