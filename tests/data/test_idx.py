from __future__ import annotations

import gzip

import numpy as np
import pytest

from bastion.data import DataError, DataNotFoundError, idx_dataset, read_idx, write_idx


@pytest.mark.parametrize("suffix", [".idx", ".idx.gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32, np.float64])
def test_roundtrip(tmp_path, suffix, dtype):
    arr = (np.arange(2 * 3 * 5) - 7).astype(dtype).reshape(2, 3, 5)
    if dtype == np.uint8:
        arr = np.arange(30, dtype=np.uint8).reshape(2, 3, 5)
    path = write_idx(tmp_path / f"a{suffix}", arr)
    out = read_idx(path)
    assert out.dtype == arr.dtype.newbyteorder("=") and np.array_equal(out, arr)


def test_big_endian_layout_matches_the_format(tmp_path):
    # hand-made file: magic 0x00000C01 (int32, 1 dim), dim 2, values 1 and 258 big-endian
    raw = bytes([0, 0, 0x0C, 1, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 1, 2])
    (tmp_path / "h.idx").write_bytes(raw)
    assert read_idx(tmp_path / "h.idx").tolist() == [1, 258]


def test_truncated_file_names_path_and_sizes(tmp_path):
    path = write_idx(tmp_path / "img.idx", np.zeros((4, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"img\.idx is truncated: .* expected 3152"):
        read_idx(path)


def test_truncated_gzip_stream(tmp_path):
    path = write_idx(tmp_path / "img.idx.gz", np.zeros((64, 28, 28), np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"img\.idx\.gz"):
        read_idx(path)


def test_bad_magic_and_missing_file(tmp_path):
    (tmp_path / "bad.idx").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(DataError, match="bad magic number"):
        read_idx(tmp_path / "bad.idx")
    (tmp_path / "code.idx").write_bytes(b"\x00\x00\x07\x01\x00\x00\x00\x01\x05")
    with pytest.raises(DataError, match="unknown dtype code 0x07"):
        read_idx(tmp_path / "code.idx")
    with pytest.raises(DataNotFoundError, match=r"nope\.idx"):
        read_idx(tmp_path / "nope.idx")


def test_user_idx_dataset(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 256, (6, 5, 5), dtype=np.uint8)
    labels = np.array([0, 1, 2, 0, 1, 2], np.uint8)
    ds = idx_dataset(write_idx(tmp_path / "x.gz", imgs), write_idx(tmp_path / "y.gz", labels))
    assert ds.images.shape == (6, 1, 5, 5) and ds.num_classes == 3
    np.testing.assert_allclose(ds.images[:, 0].numpy() * 255, imgs, atol=1e-4)
    with pytest.raises(DataError, match="shapes"):
        idx_dataset(tmp_path / "x.gz", write_idx(tmp_path / "y5.gz", labels[:5]))


def test_gzip_with_wrong_payload_length(tmp_path):
    with gzip.open(tmp_path / "long.idx.gz", "wb") as fh:
        fh.write(bytes([0, 0, 8, 1, 0, 0, 0, 2, 1, 2, 3]))
    with pytest.raises(DataError, match="longer than its header says"):
        read_idx(tmp_path / "long.idx.gz")
