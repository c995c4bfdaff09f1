"""Zoo models: held-out accuracy targets of issue #2, Lite0 on real ImageNet photos, registry contract.

The MNIST-5k models train in about a minute altogether and are cached in the user's cache (keyed by
recipe hash), so a second run only loads them. The Fashion-MNIST models take minutes each: `slow`.
"""

from __future__ import annotations

import pytest
import torch

from bastion import zoo
from bastion.core import MODELS, BlackBox
from bastion.data import load_dataset
from bastion.zoo import accuracy
from tests.conftest import needs_fashion

SMALL = [n for n, e in MODELS.items() if e.recipe is not None]
TARGET = {
    ("mnist5k", True): 0.91,
    ("mnist5k", False): 0.965,
    ("fashion-mnist", True): 0.86,
    ("fashion-mnist", False): 0.89,
}


def _check_accuracy(name: str) -> None:
    model = zoo.load(name)
    entry = MODELS.get(name)
    acc = accuracy(model.classifier(), load_dataset(entry.eval_dataset, "test"))
    assert acc == pytest.approx(model.meta["test_accuracy"], abs=1e-9)  # recorded figure is the real one
    assert acc >= TARGET[(entry.eval_dataset, name.endswith("-mlp"))], f"{name}: {acc:.4f}"


@pytest.mark.parametrize("name", [n for n in SMALL if n.startswith("mnist5k")])
def test_mnist5k_accuracy_targets(name):
    _check_accuracy(name)


@needs_fashion
@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in SMALL if n.startswith("fashion-mnist")])
def test_fashion_mnist_accuracy_targets(name):
    _check_accuracy(name)


def test_efficientnet_lite0_classifies_imagenet_samples():
    model = zoo.load("efficientnet-lite0")
    samples = load_dataset("imagenet-samples", "all")
    pred = model.predict(samples.images)
    assert int((pred == samples.labels).sum()) >= 17
    assert model.preprocess(torch.ones(1, 3, 1, 1)).flatten().tolist() == pytest.approx([1.0] * 3)  # (255-127)/128
    assert model.preprocess(torch.zeros(1, 3, 1, 1)).flatten().tolist() == pytest.approx([-127 / 128] * 3)


def test_lite0_file_hash_is_checked(monkeypatch, tmp_path):
    from bastion.zoo import models

    fake = tmp_path / "models"
    fake.mkdir()
    (fake / models._LITE0_FILE).write_bytes(b"tampered")
    monkeypatch.setattr(models, "package_data_dir", lambda *a, **k: fake / models._LITE0_FILE)
    with pytest.raises(zoo.CacheCorrupted, match="SHA-256"):
        models._lite0_weights()


@pytest.mark.parametrize("name", MODELS.names())
def test_every_entry_builds_and_declares_its_preprocessing(name):
    entry = MODELS.get(name)
    net = entry.build().eval()
    x = torch.rand(2, *entry.input_shape)
    with torch.no_grad():
        out = net(entry.preprocess()(x))
    assert out.shape == (2, len(entry.classes))
    assert entry.preprocess_spec["type"] in {"normalize", "scale_shift"}
    assert name in repr(zoo.ZooModel(name, net, entry.preprocess(), entry.input_shape, entry.classes, {}))


def test_zoo_blackbox_matches_owner_predictions():
    model = zoo.load("mnist5k-cnn")
    x = load_dataset("mnist5k", "test").images[:50]
    box = model.blackbox(budget=1)
    assert isinstance(box, BlackBox) and box.input_shape == (1, 28, 28)
    assert torch.equal(box(x), model.predict(x))
    assert box.queries.tolist() == [1] * 50
    rows = {r["name"]: r for r in zoo.list_models()}
    assert rows["mnist5k-cnn"]["cached"] and rows["mnist5k-cnn"]["test_accuracy"] >= 0.965
