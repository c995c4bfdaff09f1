"""Shared fixtures. One torch thread: the machines are shared and small."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    """An empty, private zoo cache for tests that write or damage cache files."""
    monkeypatch.setenv("BASTION_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def fashion_mnist_available() -> bool:
    from bastion.data import fashion_mnist_dir

    return (fashion_mnist_dir() / "train-images-idx3-ubyte.gz").is_file()


needs_fashion = pytest.mark.skipif(
    not fashion_mnist_available(), reason="Debian package dataset-fashion-mnist is not installed"
)
