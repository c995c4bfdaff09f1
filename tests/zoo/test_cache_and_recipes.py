from __future__ import annotations

import logging

import pytest
import torch

from bastion import zoo
from bastion.zoo import ARCHITECTURES, Normalize, Recipe, train_recipe
from bastion.zoo import cache as zcache


def _train(arch: str, seed: int = 0):
    recipe = Recipe(arch, "mnist5k", epochs=1, batch_size=64, shift=2, seed=seed, train_subset=256)
    return train_recipe(recipe, lambda: ARCHITECTURES[arch](), Normalize(0.13, 0.31)).state_dict


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_same_seed_same_weights_other_seed_other_weights(arch):
    a, b, c = _train(arch), _train(arch), _train(arch, seed=1)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


def test_training_leaves_global_rng_untouched():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _train("mlp")
    assert torch.equal(torch.rand(3), expected)


def test_recipe_key_changes_with_any_setting_and_validates():
    base = Recipe("cnn", "mnist5k", epochs=3)
    assert base.key() == Recipe("cnn", "mnist5k", epochs=3).key()
    assert (
        len(
            {
                base.key(),
                Recipe("cnn", "mnist5k", epochs=4).key(),
                Recipe("cnn", "mnist5k", epochs=3, seed=1).key(),
            }
        )
        == 3
    )
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        Recipe("cnn", "mnist5k", epochs=0)
    with pytest.raises(ValueError, match="lr must be > 0"):
        Recipe("cnn", "mnist5k", epochs=1, lr=0.0)


def test_cache_roundtrip_and_corruption_detected(tmp_cache):
    state = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(2)}
    path = zcache.save_entry("m-abc", state, {"note": "x"})
    loaded, meta = zcache.load_entry("m-abc")
    assert torch.equal(loaded["w"], state["w"]) and meta["note"] == "x" and len(meta["sha256"]) == 64
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x01  # one flipped bit inside a tensor: safetensors alone would not notice
    path.write_bytes(bytes(raw))
    with pytest.raises(zcache.CacheCorrupted, match="SHA-256"):
        zcache.load_entry("m-abc")
    path.with_suffix(".json").write_text("{not json")
    with pytest.raises(zcache.CacheCorrupted, match="unreadable"):
        zcache.load_entry("m-abc")
    path.unlink()
    with pytest.raises(zcache.CacheCorrupted, match="incomplete"):
        zcache.load_entry("m-abc")
    assert zcache.load_entry("never-saved") is None


def test_zoo_load_detects_corrupt_cache_and_retrains(tmp_cache, caplog):
    first = zoo.load("mnist5k-mlp")
    assert first.meta["test_accuracy"] > 0.9
    weights = next((tmp_cache / "zoo").glob("mnist5k-mlp-*.safetensors"))
    raw = bytearray(weights.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    weights.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING):
        second = zoo.load("mnist5k-mlp")
    assert "corrupted" in caplog.text
    # retrained, deterministically: the same weights as before the damage, and a clean cache again
    for (k, v), (k2, v2) in zip(first.net.state_dict().items(), second.net.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2)
    assert zcache.load_entry(weights.stem) is not None


def test_zoo_load_without_training(tmp_cache):
    with pytest.raises(FileNotFoundError, match="bastion zoo train mnist5k-cnn"):
        zoo.load("mnist5k-cnn", train_if_missing=False)
    with pytest.raises(KeyError, match="unknown zoo model"):
        zoo.load("mnist5k-vit")
