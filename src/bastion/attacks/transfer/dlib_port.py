"""A pure-PyTorch port of dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``).

The target model of the face-patch transfer attacks (spec ``transfer.md`` A.1): a 150x150 RGB face chip goes
to a 128-d embedding, unnormalised (norm about 1.4); two faces are the same person when the L2 distance of
their embeddings is below :data:`DLIB_THRESHOLD` (0.6). The port reads dlib's own ``.dat`` file (shipped
by the CC0 PyPI package ``face-recognition-models`` 0.3.0), needs no compiler and no dlib, and is
differentiable, so the real recogniser can also be attacked white-box.

What is followed [V] (spec A.1; checked byte by byte against the file and against the ``dlib-bin`` 20.0.1
wheel, see ``tests/attacks/transfer/test_dlib_port.py``):

- the serialisation primitives of dlib ``dlib/serialize.h`` / ``float_details.h`` / ``dnn/tensor.h``: an
  integer is a control byte (low 4 bits: byte count, bit 7: sign) then the little-endian magnitude; a
  string is an integer length then the bytes; a bool is ASCII ``'0'``/``'1'``; a scalar float is an integer
  mantissa and an integer exponent (value ``m * 2**e``; exponents 32000/32001/32002 mean +inf/-inf/NaN,
  confirmed with ``dlib.drectangle.__getstate__``); a tensor is version 2, four integer dims, raw
  little-endian float32; an alias tensor is version 1 and four dims (no data);
- the field order of the ``serialize`` functions of ``dlib/dnn/core.h`` and ``dlib/dnn/layers.h``: the
  loss (``loss_metric_2``: margin, distance threshold), then the nesting (one version integer per
  ``add_layer`` (2; 3 for the one holding the input layer) and per tag/skip layer (1), outermost first),
  then one record per layer from input to output: ``input_rgb_image_sized`` (channel means, rows,
  columns), then for each layer its details (``con_4``, ``affine_``, ``relu_``, ``max_pool_2``,
  ``avg_pool_2``, ``add_prev_``, ``fc_2``), three bools and three (empty) state tensors; the innermost
  layer also carries the sample-expansion integer;
- the network of dlib's ``dnn_face_recognition_ex.cpp`` (``anet_type``): conv 7x7/2 pad 0 (32) -> affine
  -> relu -> max-pool 3/2 -> residual stages 3x32, down64 + 3x64, down128 + 2x128, down256 + 2x256,
  down256 -> global mean -> fc 256->128 without bias. A block is conv-affine-relu-conv-affine plus the
  shortcut, then relu; stride-2 convs have no padding, the others pad 1; the down shortcut is a 2x2/2
  average pool; ``add_prev`` zero-pads both inputs to the larger C, H, W (top-left aligned), which
  matters at 8 -> 3 vs 4 and 4 -> 1 vs 2 pixels. Input: ``(pixel - mean) / 256`` per channel with means
  R 122.782, G 117.001, B 104.298 (read from the file); 5,614,592 parameters.

What is a reconstruction [R]: nothing in the arithmetic. The topology is not stored in the file (tag and
skip layers leave only a version integer), so :class:`DlibFaceResNet` rebuilds it from the record
sequence and checks it against the nesting integers; files of another topology are refused.
"""

from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...core.checks import check_image_batch, check_int

__all__ = [
    "DLIB_INSTALL_HINT",
    "DLIB_THRESHOLD",
    "DlibFaceResNet",
    "DlibNetFile",
    "DlibRecord",
    "default_dat_path",
    "parse_dlib_dat",
    "read_bool",
    "read_float",
    "read_int",
    "read_string",
    "to_chip",
]

#: dlib's same-person rule: L2 distance of the two 128-d embeddings below this.
DLIB_THRESHOLD = 0.6
#: Side of the aligned face chip dlib's recogniser takes.
CHIP_SIZE = 150
DLIB_INSTALL_HINT = (
    "pip install face-recognition-models==0.3.0  (CC0, 100 MB sdist; bastion only reads its .dat file; "
    "importing the package itself needs setuptools<81 for pkg_resources)"
)
_MODEL_PACKAGE = "face_recognition_models"
_MODEL_FILE = Path("models") / "dlib_face_recognition_resnet_model_v1.dat"

# float_details markers (dlib/float_details.h): exponent values that stand for non-finite numbers
_EXP_INF, _EXP_NINF, _EXP_NAN = 32000, 32001, 32002
_MAX_STRING = 1 << 16  # no dlib layer name or tag comes near this; a larger length means a damaged file


# --------------------------------------------------------------------------------------------------
# serialisation primitives
# --------------------------------------------------------------------------------------------------


def read_int(data: bytes | memoryview, offset: int = 0) -> tuple[int, int]:
    """Decode one dlib integer at ``offset``; return ``(value, next_offset)``.

    A control byte (low 4 bits: number of magnitude bytes, at most 8; bit 7: negative; bits 4-6 zero)
    followed by the little-endian magnitude.

    >>> read_int(b"\\x01\\x05")
    (5, 2)
    >>> read_int(b"\\x82\\x2c\\x01")
    (-300, 3)
    """
    n_data = len(data)
    if offset >= n_data:
        raise ValueError(f"truncated dlib data: an integer expected at offset {offset}, file ends at {n_data}")
    control = data[offset]
    size = control & 0x0F
    if size > 8 or control & 0x70:
        raise ValueError(f"bad dlib integer control byte 0x{control:02x} at offset {offset}")
    end = offset + 1 + size
    if end > n_data:
        raise ValueError(
            f"truncated dlib data: an integer of {size} bytes at offset {offset} runs past the end ({n_data})"
        )
    value = int.from_bytes(bytes(data[offset + 1 : end]), "little")
    return (-value if control & 0x80 else value), end


def read_float(data: bytes | memoryview, offset: int = 0) -> tuple[float, int]:
    """Decode one dlib scalar float (integer mantissa, integer exponent); return ``(value, next_offset)``.

    >>> read_float(b"\\x01\\x10\\x81\\x04")  # 16 * 2**-4
    (1.0, 4)
    """
    mantissa, pos = read_int(data, offset)
    exponent, pos = read_int(data, pos)
    if exponent == _EXP_INF:
        return math.inf, pos
    if exponent == _EXP_NINF:
        return -math.inf, pos
    if exponent == _EXP_NAN:
        return math.nan, pos
    if not -20000 < exponent < 20000:
        raise ValueError(f"bad dlib float exponent {exponent} at offset {offset}")
    try:
        return math.ldexp(float(mantissa), exponent), pos
    except OverflowError:
        raise ValueError(f"dlib float at offset {offset} overflows: {mantissa} * 2**{exponent}") from None


def read_string(data: bytes | memoryview, offset: int = 0) -> tuple[str, int]:
    """Decode one dlib string (integer length, then the bytes); return ``(text, next_offset)``.

    >>> read_string(b"\\x01\\x05relu_")
    ('relu_', 7)
    """
    length, pos = read_int(data, offset)
    if not 0 <= length <= _MAX_STRING:
        raise ValueError(f"bad dlib string length {length} at offset {offset}")
    end = pos + length
    if end > len(data):
        raise ValueError(
            f"truncated dlib data: a string of {length} bytes at offset {offset} runs past the end ({len(data)})"
        )
    try:
        return bytes(data[pos:end]).decode("ascii"), end
    except UnicodeDecodeError:
        raise ValueError(f"dlib string at offset {offset} is not ASCII") from None


def read_bool(data: bytes | memoryview, offset: int = 0) -> tuple[bool, int]:
    """Decode one dlib bool (ASCII ``'0'`` or ``'1'``); return ``(value, next_offset)``."""
    if offset >= len(data):
        raise ValueError(f"truncated dlib data: a bool expected at offset {offset}, file ends at {len(data)}")
    char = data[offset]
    if char not in (0x30, 0x31):
        raise ValueError(f"bad dlib bool byte 0x{char:02x} at offset {offset} (expected '0' or '1')")
    return char == 0x31, offset + 1


class _Reader:
    """A cursor over the file that says where it is (offset, record) when something is wrong."""

    def __init__(self, data: bytes, source: str) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.source = source
        self.where = "the header"

    def _call(self, fn, what: str):
        try:
            value, self.pos = fn(self.data, self.pos)
        except ValueError as err:
            raise ValueError(f"{self.source}: {err} (reading {what} of {self.where})") from None
        return value

    def int(self, what: str, *, minimum: int | None = None) -> int:
        at = self.pos
        value = self._call(read_int, what)
        if minimum is not None and value < minimum:
            raise ValueError(f"{self.source}: {what} of {self.where} must be >= {minimum}, got {value} at offset {at}")
        return value

    def float(self, what: str) -> float:
        return self._call(read_float, what)

    def string(self, what: str) -> str:
        return self._call(read_string, what)

    def bool(self, what: str) -> bool:
        return self._call(read_bool, what)

    def alias(self, what: str) -> tuple[int, int, int, int]:
        at = self.pos
        version = self.int(f"{what} version")
        if version != 1:
            raise ValueError(f"{self.source}: {what} of {self.where} has version {version} at offset {at}, expected 1")
        return tuple(self.int(f"{what} dim {i}", minimum=0) for i in range(4))  # type: ignore[return-value]

    def tensor(self, what: str) -> np.ndarray:
        at = self.pos
        version = self.int(f"{what} version")
        if version != 2:
            raise ValueError(f"{self.source}: {what} of {self.where} has version {version} at offset {at}, expected 2")
        dims = tuple(self.int(f"{what} dim {i}", minimum=0) for i in range(4))
        count = math.prod(dims)
        end = self.pos + 4 * count
        if end > len(self.data):
            raise ValueError(
                f"{self.source}: truncated dlib data: {what} of {self.where} (shape {dims}, {4 * count} bytes "
                f"from offset {self.pos}) runs past the end ({len(self.data)})"
            )
        values = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.pos).astype(np.float32)
        self.pos = end
        return values.reshape(dims)

    def fail(self, message: str, at: int | None = None) -> ValueError:
        at = self.pos if at is None else at
        return ValueError(f"{self.source}: {message} (offset {at}, {self.where})")


# --------------------------------------------------------------------------------------------------
# file structure
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DlibRecord:
    """One serialised layer: its dlib name (``"con_4"``...), where it starts, its settings and its parameters.

    ``params`` is the flat ``params`` tensor of the layer (float32; ``None`` for layers without one);
    ``state`` holds the three bools every ``add_layer`` writes after the details.
    """

    kind: str
    offset: int
    fields: dict[str, Any] = field(default_factory=dict)
    params: np.ndarray | None = field(default=None, repr=False, compare=False)
    state: tuple[bool, ...] = ()

    @property
    def num_params(self) -> int:
        return 0 if self.params is None else int(self.params.size)


@dataclass(frozen=True)
class DlibNetFile:
    """A parsed dlib DNN file: the loss, the nesting integers (outermost first) and the records, input first."""

    path: str
    loss: DlibRecord
    versions: tuple[int, ...]
    records: tuple[DlibRecord, ...]
    sample_expansion_factor: int
    size: int

    @property
    def num_params(self) -> int:
        return sum(r.num_params for r in self.records)

    def kinds(self) -> list[str]:
        return [r.kind for r in self.records]


def _read_input_rgb_image_sized(r: _Reader) -> dict[str, Any]:
    means = tuple(r.float(f"mean {c}") for c in "RGB")
    rows = r.int("rows", minimum=1)
    cols = r.int("cols", minimum=1)
    return {"means": means, "rows": rows, "cols": cols}


def _read_con_4(r: _Reader) -> tuple[dict[str, Any], np.ndarray]:
    params = r.tensor("params")
    f: dict[str, Any] = {"num_filters": r.int("num_filters", minimum=1)}
    for name in ("nr", "nc", "stride_y", "stride_x"):
        f[name] = r.int(name, minimum=1)
    for name in ("padding_y", "padding_x"):
        f[name] = r.int(name, minimum=0)
    f["filters"] = r.alias("filters")
    f["biases"] = r.alias("biases")
    for name in ("learning_rate_multiplier", "weight_decay_multiplier", "bias_lr_multiplier", "bias_wd_multiplier"):
        f[name] = r.float(name)
    return f, params


def _read_affine_(r: _Reader) -> tuple[dict[str, Any], np.ndarray]:
    params = r.tensor("params")
    f = {"gamma": r.alias("gamma"), "beta": r.alias("beta"), "mode": r.int("mode")}
    return f, params


def _read_pool_2(r: _Reader) -> dict[str, Any]:
    f = {name: r.int(name, minimum=0) for name in ("nr", "nc")}
    f.update({name: r.int(name, minimum=1) for name in ("stride_y", "stride_x")})
    f.update({name: r.int(name, minimum=0) for name in ("padding_y", "padding_x")})
    return f


def _read_fc_2(r: _Reader) -> tuple[dict[str, Any], np.ndarray]:
    f: dict[str, Any] = {"num_outputs": r.int("num_outputs", minimum=1), "num_inputs": r.int("num_inputs", minimum=0)}
    params = r.tensor("params")
    f["weights"] = r.alias("weights")
    f["biases"] = r.alias("biases")
    f["bias_mode"] = r.int("bias_mode")
    for name in ("learning_rate_multiplier", "weight_decay_multiplier", "bias_lr_multiplier", "bias_wd_multiplier"):
        f[name] = r.float(name)
    return f, params


_LAYER_READERS = {
    "con_4": _read_con_4,
    "affine_": _read_affine_,
    "relu_": None,
    "max_pool_2": _read_pool_2,
    "avg_pool_2": _read_pool_2,
    "add_prev_": None,
    "fc_2": _read_fc_2,
}
_INPUT_KINDS = {"input_rgb_image_sized": _read_input_rgb_image_sized}
_LOSS_KINDS = ("loss_metric_2",)


def _name_at(data: memoryview, pos: int) -> str | None:
    """The known record name serialised at ``pos``, if any (used to find the end of the nesting integers)."""
    try:
        text, _ = read_string(data, pos)
    except ValueError:
        return None
    return text if text in _LAYER_READERS or text in _INPUT_KINDS else None


def _check_layer(r: _Reader, rec: DlibRecord) -> None:
    """Consistency of a layer's settings with its parameter tensor."""
    f, p = rec.fields, rec.params
    if rec.kind == "con_4":
        out_c, _, kh, kw = f["filters"]
        want = math.prod(f["filters"]) + math.prod(f["biases"])
        if out_c != f["num_filters"] or (kh, kw) != (f["nr"], f["nc"]) or f["biases"] != (1, out_c, 1, 1):
            raise r.fail(f"con_4 settings disagree: {f['num_filters']} filters of {f['nr']}x{f['nc']}, "
                         f"filters {f['filters']}, biases {f['biases']}", rec.offset)  # fmt: skip
    elif rec.kind == "affine_":
        want = math.prod(f["gamma"]) + math.prod(f["beta"])
        if f["gamma"] != f["beta"]:
            raise r.fail(f"affine_ gamma {f['gamma']} and beta {f['beta']} differ in shape", rec.offset)
    elif rec.kind == "fc_2":
        n_in, n_out = f["num_inputs"], f["num_outputs"]
        want = n_in * n_out + (n_out if f["bias_mode"] == 0 else 0)
        if f["weights"][:2] != (n_in, n_out):
            raise r.fail(f"fc_2 weights {f['weights']} disagree with {n_in} inputs, {n_out} outputs", rec.offset)
    else:
        return
    if p is None or p.size != want:
        raise r.fail(
            f"{rec.kind} params hold {0 if p is None else p.size} values, its settings need {want}", rec.offset
        )


def parse_dlib_dat(path: str | os.PathLike[str]) -> DlibNetFile:
    """Parse a dlib DNN ``.dat`` file made of the layers of dlib's face-recognition ResNet.

    Reads the loss, the nesting integers and one :class:`DlibRecord` per layer, input first. Nothing is
    executed or unpickled; any damage (a bad control byte, an unknown layer, a truncated tensor,
    trailing bytes) raises ``ValueError`` naming the byte offset and the record.
    """
    source = os.fspath(path)
    with open(source, "rb") as fh:
        data = fh.read()
    r = _Reader(data, source)

    r.where = "the loss layer"
    loss_version = r.int("version")
    if loss_version != 1:
        raise r.fail(f"add_loss_layer version {loss_version}, expected 1", 0)
    loss_offset = r.pos
    loss_kind = r.string("name")
    if loss_kind not in _LOSS_KINDS:
        raise r.fail(f"unsupported loss {loss_kind!r} (supported: {', '.join(_LOSS_KINDS)})", loss_offset)
    loss = DlibRecord(loss_kind, loss_offset, {"margin": r.float("margin"), "distance_threshold": r.float("threshold")})

    r.where = "the layer nesting"
    versions: list[int] = []
    while _name_at(r.data, r.pos) is None:
        at = r.pos
        version = r.int(f"nesting integer {len(versions)}")
        if version not in (1, 2, 3):
            raise r.fail(f"nesting integer {len(versions)} is {version} (expected 1, 2 or 3)", at)
        versions.append(version)
    if not versions or versions[-1] != 3 or versions.count(3) != 1:
        raise r.fail(f"the nesting must end with the input layer's version 3; got {versions[-5:]}")

    records: list[DlibRecord] = []
    r.where = "record 0"
    at = r.pos
    kind = r.string("name")
    if kind not in _INPUT_KINDS:
        raise r.fail(f"record 0 must be an input layer ({', '.join(_INPUT_KINDS)}), got {kind!r}", at)
    records.append(DlibRecord(kind, at, _INPUT_KINDS[kind](r)))

    n_layers = sum(v != 1 for v in versions)
    expansion = 0
    for index in range(1, n_layers + 1):
        r.where = f"record {index}"
        at = r.pos
        kind = r.string("name")
        if kind not in _LAYER_READERS:
            raise r.fail(f"unknown layer {kind!r} (supported: {', '.join(_LAYER_READERS)})", at)
        r.where = f"record {index} ({kind} at offset {at})"
        reader = _LAYER_READERS[kind]
        fields, params = {}, None
        if reader is not None:
            out = reader(r)
            fields, params = out if isinstance(out, tuple) else (out, None)
        state = tuple(r.bool(name) for name in ("setup_called", "gradient_input_is_stale", "output_disabled"))
        for name in ("x_grad", "cached_output", "params_grad"):
            r.tensor(name)
        if index == 1:
            expansion = r.int("sample_expansion_factor", minimum=1)
        rec = DlibRecord(kind, at, fields, params, state)
        _check_layer(r, rec)
        records.append(rec)
    r.where = "the end of the file"
    if r.pos != len(data):
        raise r.fail(f"{len(data) - r.pos} bytes left after the {n_layers} layers the nesting announces")
    return DlibNetFile(source, loss, tuple(versions), tuple(records), expansion, len(data))


def default_dat_path() -> Path:
    """The model file of the installed ``face-recognition-models`` package (located without importing it)."""
    spec = importlib.util.find_spec(_MODEL_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        candidate = Path(loc) / _MODEL_FILE
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"dlib's face-recognition model ({_MODEL_FILE.name}) is not installed; run: {DLIB_INSTALL_HINT}"
    )


# --------------------------------------------------------------------------------------------------
# the network
# --------------------------------------------------------------------------------------------------


def _frozen(array: np.ndarray, shape: tuple[int, ...]) -> nn.Parameter:
    return nn.Parameter(torch.from_numpy(np.ascontiguousarray(array)).reshape(shape), requires_grad=False)


class _Conv(nn.Module):
    """dlib ``con_``: cross-correlation, weights (out, in, kh, kw) then the bias, in one params tensor."""

    def __init__(self, rec: DlibRecord) -> None:
        super().__init__()
        f = rec.fields
        n_weight = math.prod(f["filters"])
        self.weight = _frozen(rec.params[:n_weight], f["filters"])
        self.bias = _frozen(rec.params[n_weight:], (f["num_filters"],))
        self.stride = (f["stride_y"], f["stride_x"])
        self.padding = (f["padding_y"], f["padding_x"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)


class _Affine(nn.Module):
    """dlib ``affine_`` in conv mode (a frozen batch norm): ``gamma * x + beta`` per channel."""

    def __init__(self, rec: DlibRecord) -> None:
        super().__init__()
        channels = math.prod(rec.fields["gamma"])
        self.gamma = _frozen(rec.params[:channels], (1, channels, 1, 1))
        self.beta = _frozen(rec.params[channels:], (1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma + self.beta


def _add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib ``add_prev_``: sum after zero-padding both inputs to the larger C, H, W (top-left aligned)."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return pad(a) + pad(b)


class _Block(nn.Module):
    """``relu(add_prev(affine(con(relu(affine(con(x))))), shortcut(x)))``; the down shortcut is avg-pool 2/2."""

    def __init__(self, conv1: DlibRecord, aff1: DlibRecord, conv2: DlibRecord, aff2: DlibRecord, down: bool) -> None:
        super().__init__()
        self.conv1, self.aff1 = _Conv(conv1), _Affine(aff1)
        self.conv2, self.aff2 = _Conv(conv2), _Affine(aff2)
        self.down = down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.aff2(self.conv2(torch.relu(self.aff1(self.conv1(x)))))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        return torch.relu(_add_prev(y, shortcut))


def _fields_match(rec: DlibRecord, kind: str, **expected: Any) -> bool:
    return rec.kind == kind and all(rec.fields.get(k) == v for k, v in expected.items())


def _expected_versions(downs: list[bool]) -> list[int]:
    """The nesting integers ``anet_type`` serialises, outermost first, for blocks with these down flags."""
    versions = [2, 2]  # fc_no_bias, avg_pool_everything
    for down in reversed(downs):
        # relu, add_prev, [avg_pool, skip1, tag2,] affine, con, relu, affine, con, tag1
        versions += [2, 2] + ([2, 1, 1] if down else []) + [2] * 5 + [1]
    return [*versions, 2, 2, 2, 3]  # max_pool, relu, affine, con(input)


class DlibFaceResNet(nn.Module):
    """dlib's face-recognition ResNet (``anet_type``) in PyTorch; eval-only, parameters frozen.

    ``forward(x)``: ``x`` float ``[N, 3, 150, 150]`` RGB in [0, 1] (``uint8 / 255``, an aligned chip as
    ``dlib.get_face_chip`` makes), returns the ``[N, 128]`` float32 embedding, unnormalised, as
    ``dlib.face_recognition_model_v1.compute_face_descriptor`` does. Differentiable in ``x``. On CUDA,
    cuDNN's TF32 convolutions (``torch.backends.cudnn.allow_tf32``, on by default) cost the 1e-5 match.
    """

    def __init__(self, net: DlibNetFile) -> None:
        super().__init__()
        if not isinstance(net, DlibNetFile):
            raise TypeError(f"net must be a DlibNetFile (from parse_dlib_dat), got {type(net).__name__}")
        recs = list(net.records)
        src = net.path

        def refuse(i: int, want: str) -> ValueError:
            got = f"{recs[i].kind} {recs[i].fields}" if i < len(recs) else "the end of the records"
            off = f" at offset {recs[i].offset}" if i < len(recs) else ""
            return ValueError(f"{src}: not dlib's face ResNet: record {i}{off} should be {want}, got {got}")

        inp = recs[0]
        if inp.kind != "input_rgb_image_sized":
            raise refuse(0, "input_rgb_image_sized")
        self.chip_size = (inp.fields["rows"], inp.fields["cols"])
        means = torch.tensor(inp.fields["means"], dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("mean", means, persistent=False)

        i = 1
        stem_kinds = ("con_4", "affine_", "relu_", "max_pool_2")
        for j, kind in enumerate(stem_kinds):
            if i + j >= len(recs) or recs[i + j].kind != kind:
                raise refuse(i + j, kind)
        if not _fields_match(recs[1], "con_4", stride_y=2, stride_x=2, padding_y=0, padding_x=0):
            raise refuse(1, "con_4 with stride 2, padding 0")
        if not _fields_match(recs[4], "max_pool_2", nr=3, nc=3, stride_y=2, stride_x=2, padding_y=0, padding_x=0):
            raise refuse(4, "max_pool_2 3x3/2 padding 0")
        self.stem_conv, self.stem_affine = _Conv(recs[1]), _Affine(recs[2])
        i = 5

        blocks: list[_Block] = []
        while i < len(recs) and recs[i].kind == "con_4":
            down = recs[i].fields["stride_y"] == 2
            pad1 = 0 if down else 1
            stride1 = 2 if down else 1
            if not _fields_match(
                recs[i], "con_4", nr=3, nc=3, stride_y=stride1, stride_x=stride1, padding_y=pad1, padding_x=pad1
            ):
                raise refuse(i, f"con_4 3x3/{stride1} padding {pad1}")
            if i + 1 >= len(recs) or recs[i + 1].kind != "affine_":
                raise refuse(i + 1, "affine_")
            if i + 2 >= len(recs) or recs[i + 2].kind != "relu_":
                raise refuse(i + 2, "relu_")
            if i + 3 >= len(recs) or not _fields_match(
                recs[i + 3], "con_4", nr=3, nc=3, stride_y=1, stride_x=1, padding_y=1, padding_x=1
            ):
                raise refuse(i + 3, "con_4 3x3/1 padding 1")
            if i + 4 >= len(recs) or recs[i + 4].kind != "affine_":
                raise refuse(i + 4, "affine_")
            j = i + 5
            if down:
                pool = dict(nr=2, nc=2, stride_y=2, stride_x=2, padding_y=0, padding_x=0)
                if j >= len(recs) or not _fields_match(recs[j], "avg_pool_2", **pool):
                    raise refuse(j, "avg_pool_2 2x2/2 (the down shortcut)")
                j += 1
            for kind in ("add_prev_", "relu_"):
                if j >= len(recs) or recs[j].kind != kind:
                    raise refuse(j, kind)
                j += 1
            blocks.append(_Block(recs[i], recs[i + 1], recs[i + 3], recs[i + 4], down))
            i = j
        if not blocks:
            raise refuse(i, "a residual block (con_4)")
        self.blocks = nn.ModuleList(blocks)

        if i >= len(recs) or not _fields_match(recs[i], "avg_pool_2", nr=0, nc=0, padding_y=0, padding_x=0):
            raise refuse(i, "avg_pool_2 over everything (0x0 window)")
        i += 1
        if i >= len(recs) or recs[i].kind != "fc_2" or recs[i].fields["bias_mode"] != 1:
            raise refuse(i, "fc_2 without bias")
        fc = recs[i].fields
        self.fc_weight = _frozen(recs[i].params, (fc["num_inputs"], fc["num_outputs"]))
        if i + 1 != len(recs):
            raise refuse(i + 1, "the end of the records")
        for rec in recs:
            if rec.kind == "affine_" and rec.fields["mode"] != 0:
                raise ValueError(f"{src}: affine_ at offset {rec.offset} is in fc mode, expected conv mode (0)")

        want = _expected_versions([b.down for b in blocks])
        if list(net.versions) != want:
            raise ValueError(
                f"{src}: the nesting integers ({len(net.versions)}) do not match the ResNet the records describe "
                f"({len(want)}): the tag/skip layers are not where dlib's face ResNet has them"
            )
        self.margin = net.loss.fields["margin"]
        self.distance_threshold = net.loss.fields["distance_threshold"]
        self.eval()

    @classmethod
    def from_dat(cls, path: str | os.PathLike[str] | None = None) -> DlibFaceResNet:
        """Load the network from a ``.dat`` file; by default the installed ``face-recognition-models`` one."""
        if path is None:
            path = default_dat_path()
        elif not isinstance(path, str | os.PathLike):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        return cls(parse_dlib_dat(path))

    def train(self, mode: bool = True) -> DlibFaceResNet:
        """The port has no train-mode behaviour (dlib's affine layers are frozen batch norms); stays in eval."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_image_batch(x, "x", shape=(3, *self.chip_size))
        x = (x.to(self.mean.dtype) * 255.0 - self.mean) / 256.0
        x = torch.relu(self.stem_affine(self.stem_conv(x)))
        x = F.max_pool2d(x, 3, 2)
        for block in self.blocks:
            x = block(x)
        x = x.mean(dim=(2, 3))
        return x @ self.fc_weight


def to_chip(images: torch.Tensor, size: int = CHIP_SIZE) -> torch.Tensor:
    """Bilinear resize of a face batch ``[N, 1 or 3, H, W]`` in [0, 1] to ``[N, 3, size, size]``; grey -> RGB.

    For small, already centred faces (e.g. ``skimage.data.lfw_subset``, 25x25); differentiable. Not dlib's
    landmark alignment (``get_face_chip``).
    """
    images = check_image_batch(images, "images")
    size = check_int(size, "size", minimum=1)
    if images.shape[1] not in (1, 3):
        raise ValueError(f"images must have 1 (grey) or 3 (RGB) channels, got shape {tuple(images.shape)}")
    if images.shape[2:] != (size, size):
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False).clamp(0.0, 1.0)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return images
