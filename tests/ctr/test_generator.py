"""The generator's checks from the spec (section 5), determinism and memory-free chunking."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from safetensors.numpy import load_file

from bastion.ctr.generator import (
    CHECK_BOUNDS,
    GeneratorConfig,
    generate,
    generator_checks,
    public10m_arrow_schema,
)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    return generate(root / "d", rows=300_000, seed=0, chunk_rows=100_000, rows_per_file=80_000)


def test_spec_checks_hold(generated):
    c = generator_checks(generated)
    # the spec's bounds (section 5), which the reproduction's table also reads
    assert CHECK_BOUNDS == {
        "ctr_gap_max": (0.0, 0.01),  # each scene's click rate matches its mean true probability
        "traffic_gap_max": (0.0, 0.01),  # scene shares are the configured ones
        "zipf_slope_top1000": (-1.3, -0.9),
        "scenes_per_user": (2.0, 3.5),
        "oracle_auc_test": (0.80, 0.90),
        "cold_item_test_share": (0.15, 0.25),
    }
    for name, (lo, hi) in CHECK_BOUNDS.items():
        assert lo <= c[name] <= hi, (name, c[name])


def test_layout_schema_splits_and_item_vectors(generated):
    assert sum(generated.rows.values()) == 300_000
    assert all(len(generated.files[s]) >= 1 for s in ("train", "val", "test"))
    t = pq.read_table(generated.files["train"][0])
    assert t.schema.equals(public10m_arrow_schema())
    assert len(t.schema) == 38  # the release's 37 columns + p_true
    times = {
        s: pq.read_table(generated.files[s][0], columns=["log_time"])["log_time"].to_pylist()
        for s in ("train", "val", "test")
    }
    assert max(times["train"]) <= "2023-08-03 00:00:00" < min(times["val"])
    assert max(times["val"]) <= "2023-08-05 00:00:00" < min(times["test"])
    assert times["train"] == sorted(times["train"])  # rows come in time order
    scene = t["scene"].to_numpy()
    items = t["item_id"].to_numpy()
    per_scene = [set(items[scene == s]) for s in range(5)]
    assert all(not (per_scene[a] & per_scene[b]) for a in range(5) for b in range(a + 1, 5))  # disjoint item ids
    vec = load_file(str(generated.item_vectors))
    assert vec["vectors"].shape == (generated.n_items, 64) and vec["item_id"].shape == (generated.n_items,)
    assert set(np.unique(items)) <= set(vec["item_id"].tolist())
    meta = json.loads((generated.root / "meta.json").read_text())
    assert meta["rows"] == generated.rows


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    a = generate(tmp_path / "a", rows=20_000, seed=5, chunk_rows=7_000)
    b = generate(tmp_path / "b", rows=20_000, seed=5, chunk_rows=7_000)
    c = generate(tmp_path / "c", rows=20_000, seed=6, chunk_rows=7_000)
    for s in ("train", "val", "test"):
        for fa, fb in zip(a.files[s], b.files[s], strict=True):
            assert fa.read_bytes() == fb.read_bytes()
    assert a.files["train"][0].read_bytes() != c.files["train"][0].read_bytes()
    assert a.item_vectors.read_bytes() == b.item_vectors.read_bytes()


def test_down_sampling_raises_the_positive_share_and_keeps_the_truth_calibrated(tmp_path):
    full = generate(tmp_path / "full", rows=60_000, seed=1)
    down = generate(tmp_path / "down", rows=60_000, seed=1, negative_keep=0.5)
    y0 = pq.read_table(full.files["train"][0], columns=["label"])["label"].to_numpy().mean()
    t = pq.read_table(down.files["train"][0], columns=["label", "p_true"])
    y, p = t["label"].to_numpy(), t["p_true"].to_numpy()
    assert sum(down.rows.values()) == 60_000
    for split in ("train", "val", "test"):  # down-sampling thins the whole time range, every split keeps rows
        assert abs(down.rows[split] / full.rows[split] - 1) < 0.1
    # keeping half the negatives turns a share q of positives into q / (q + (1 - q) / 2)
    assert abs(y.mean() - y0 / (y0 + 0.5 * (1 - y0))) < 0.02
    assert abs(y.mean() - p.mean()) < 0.01


def test_bad_config_raises():
    with pytest.raises(ValueError, match="rows"):
        GeneratorConfig(rows=0)
    with pytest.raises(ValueError, match="scene_traffic"):
        GeneratorConfig(scene_traffic=(0.5, 0.5, 0.5, 0.1, 0.1))
    with pytest.raises(ValueError, match="negative_keep"):
        GeneratorConfig(negative_keep=0.0)
    with pytest.raises(TypeError, match="unexpected"):
        generate("/nonexistent-never-written", rows=10, not_a_knob=1)
