from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from bastion.core import DATASETS
from bastion.data import (
    DataError,
    DataNotFoundError,
    ImageDataset,
    digits,
    fashion_mnist,
    foolbox_samples,
    image_folder,
    load_dataset,
    mnist5k,
)
from tests.conftest import needs_fashion


def test_mnist5k_is_real_balanced_and_split_fixed():
    train, test = mnist5k("train"), mnist5k("test")
    assert (len(train), len(test)) == (4000, 1000)
    assert train.images.dtype == torch.float32 and train.images.shape[1:] == (1, 28, 28)
    assert float(train.images.min()) == 0.0
    assert float(train.images.max()) == 1.0
    assert torch.bincount(test.labels).tolist() == [100] * 10  # stratified from 500 a class
    everything = mnist5k("all")
    assert torch.bincount(everything.labels).tolist() == [500] * 10
    again = mnist5k("test")
    assert torch.equal(test.images, again.images)
    # train and test are disjoint and together are the 5,000 digits
    key = lambda d: {bytes(row) for row in (d.images.flatten(1) * 255).round().to(torch.uint8).numpy()}  # noqa: E731
    assert len(key(train) & key(test)) < 5  # the 5k sample may hold a few duplicate images, never more


@needs_fashion
def test_fashion_mnist_full_official_split():
    train, test = fashion_mnist("train"), fashion_mnist("test")
    assert (len(train), len(test)) == (60000, 10000)
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert train.classes[9] == "Ankle boot"
    assert abs(float(train.images.mean()) - 0.2860) < 1e-3  # the published pixel mean


def test_fashion_mnist_missing_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("BASTION_FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(DataNotFoundError, match="dataset-fashion-mnist") as info:
        fashion_mnist("test")
    assert str(tmp_path) in str(info.value)


def test_fashion_mnist_truncated_file_is_reported(tmp_path, monkeypatch):
    from bastion.data import write_idx

    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((10, 28, 28), np.uint8))
    lab = write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(10, np.uint8))
    raw = (tmp_path / "t10k-images-idx3-ubyte.gz").read_bytes()
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(raw[: len(raw) - 12])
    monkeypatch.setenv("BASTION_FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz"):
        fashion_mnist("test")
    assert lab.exists()


def test_digits_split():
    tr, te = digits("train"), digits("test")
    assert (len(tr), len(te)) == (1437, 360) and tr.input_shape == (1, 8, 8)
    assert float(tr.images.max()) == 1.0


@pytest.mark.parametrize(
    ("name", "shape", "n_classes"),
    [("imagenet", (3, 224, 224), 1000), ("cifar10", (3, 32, 32), 10), ("cifar100", (3, 32, 32), 100),
     ("mnist", (1, 28, 28), 10), ("fashionMNIST", (1, 28, 28), 10)],
)  # fmt: skip
def test_foolbox_samples(name, shape, n_classes):
    ds = foolbox_samples(name)
    assert len(ds) == 20 and ds.input_shape == shape and ds.num_classes == n_classes
    if name == "imagenet":
        assert ds.labels[:3].tolist() == [243, 559, 438]  # from the file names
        assert foolbox_samples(name, size=(96, 128)).input_shape == (3, 96, 128)
    if name == "mnist":
        assert ds.labels[:3].tolist() == [7, 2, 1]


def test_registry_loads_every_dataset_by_name():
    for name in DATASETS.names():
        if name == "fashion-mnist":
            continue  # covered above (needs the Debian package)
        split = "all" if name.endswith("-samples") else "test"
        assert isinstance(load_dataset(name, split), ImageDataset)
    with pytest.raises(ValueError, match="split must be one of"):
        load_dataset("mnist5k", "validation")
    with pytest.raises(KeyError, match="unknown dataset"):
        load_dataset("mnist60k")


def test_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "cat" / "notes.txt").write_text("ignored")
    ds = image_folder(tmp_path)
    assert ds.classes == ("cat", "dog") and ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert ds.input_shape == (3, 6, 8)
    assert image_folder(tmp_path, size=(4, 4), grayscale=True).input_shape == (1, 4, 4)
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(tmp_path / "dog" / "odd.png")
    with pytest.raises(DataError, match="different sizes"):
        image_folder(tmp_path)
    (tmp_path / "dog" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"broken\.png"):
        image_folder(tmp_path, size=4)
    with pytest.raises(DataNotFoundError, match="image folder not found"):
        image_folder(tmp_path / "missing")


def test_image_dataset_validates_and_subsets():
    with pytest.raises(ValueError, match="images must lie in"):
        ImageDataset(torch.full((2, 1, 2, 2), 2.0), torch.tensor([0, 1]), ("a", "b"))
    with pytest.raises(ValueError, match="labels must lie in"):
        ImageDataset(torch.zeros(2, 1, 2, 2), torch.tensor([0, 2]), ("a", "b"))
    ds = ImageDataset(torch.rand(4, 1, 2, 2), torch.tensor([0, 1, 0, 1]), ("a", "b"))
    sub = ds.subset([3, 0])
    assert torch.equal(sub.images, ds.images[[3, 0]]) and sub.labels.tolist() == [1, 0]
    x, y = ds[1]
    assert x.shape == (1, 2, 2) and int(y) == 1


def test_data_specs(tmp_path):
    from bastion.data import parse_data_spec, write_idx

    assert len(parse_data_spec("mnist5k:test")) == 1000
    sub = parse_data_spec("mnist5k:test[100:150]")
    assert torch.equal(sub.images, mnist5k("test").images[100:150])
    assert len(parse_data_spec("digits:train[-10:]")) == 10
    write_idx(tmp_path / "x.idx", np.zeros((3, 4, 4), np.uint8))
    write_idx(tmp_path / "y.idx", np.array([0, 1, 0], np.uint8))
    assert len(parse_data_spec(f"idx:{tmp_path / 'x.idx'},{tmp_path / 'y.idx'}")) == 3
    for bad, match in [("mnist5k", "cannot parse"), ("idx:a", "IMAGES,LABELS"), ("mnist5k:test[5:5]", "no rows")]:
        with pytest.raises(ValueError, match=match):
            parse_data_spec(bad)
    with pytest.raises(DataNotFoundError):
        parse_data_spec(f"folder:{tmp_path / 'none'}")
