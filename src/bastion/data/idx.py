"""Reader for the IDX format of (Fashion-)MNIST, plain or gzipped, with strict size checks.

Format (LeCun's page): a 4-byte magic ``0x00 0x00 <dtype> <ndim>``, ``ndim`` big-endian uint32
dimensions, then the data in row-major, big-endian order.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from .errors import DataError, DataNotFoundError

__all__ = ["read_idx", "write_idx"]

_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise DataNotFoundError(f"IDX file not found: {path}")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (OSError, EOFError) as exc:  # gzip raises EOFError / BadGzipFile on truncation
        raise DataError(f"cannot read IDX file {path}: {exc}") from exc


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw) into a NumPy array of its native dtype and shape.

    Raises
    ------
    DataNotFoundError
        The file does not exist.
    DataError
        Bad magic number, unknown dtype, or a payload shorter or longer than the header declares.

    Examples
    --------
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "a.idx"
    >>> _ = write_idx(p, np.arange(6, dtype=np.uint8).reshape(2, 3))
    >>> read_idx(p).tolist()
    [[0, 1, 2], [3, 4, 5]]
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataError(f"IDX file {path} is truncated: {len(raw)} bytes, too short for a header")
    if raw[0] != 0 or raw[1] != 0:
        raise DataError(f"IDX file {path} has a bad magic number {raw[:4].hex()} (expected 0000xxyy)")
    code, ndim = raw[2], raw[3]
    if code not in _DTYPES:
        raise DataError(f"IDX file {path} has unknown dtype code 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"IDX file {path} is truncated inside its header ({len(raw)} < {header} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _DTYPES[code]
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "longer than its header says"
        raise DataError(f"IDX file {path} is {what}: {len(raw)} bytes, expected {expected} for shape {dims} of {dtype}")
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file (gzipped when the name ends in ``.gz``)."""
    path = Path(path)
    array = np.asarray(array)
    inverse = {v.newbyteorder("="): k for k, v in _DTYPES.items()}
    key = array.dtype.newbyteorder("=")
    if key not in inverse:
        raise TypeError(
            f"array dtype {array.dtype} has no IDX code; use one of uint8, int8, int16, int32, float32, float64"
        )
    code = inverse[key]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + array.astype(_DTYPES[code], copy=False).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as fh:
            fh.write(payload)
    else:
        path.write_bytes(payload)
    return path
