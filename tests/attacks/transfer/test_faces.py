"""Faces: the O-Net port (vs facenet-pytorch's own class, LFW scores), landmark masks, apply_patch, LFW helpers."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from bastion.attacks.transfer import faces
from bastion.attacks.transfer.faces import (
    MASK_KINDS,
    ONet,
    apply_patch,
    eye_band_mask,
    eye_nose_mask,
    eyeglass_mask,
    lfw_faces,
    lfw_nonfaces,
    make_mask,
    respirator_mask,
)

needs_skimage = pytest.mark.skipif(
    importlib.util.find_spec("skimage") is None,
    reason='scikit-image is not installed: pip install "scikit-image==0.26.0"',
)

# a synthetic upright face in a 32x32 image: eyes at y 12, nose tip at y 18, mouth at y 23
UPRIGHT = torch.tensor([[[10.3, 12.2], [21.7, 12.2], [16.1, 18.3], [11.4, 23.1], [20.6, 23.1]]], dtype=torch.float64)


@pytest.fixture(scope="module")
def onet():
    if importlib.util.find_spec("facenet_pytorch") is None:
        pytest.skip('facenet-pytorch is not installed: pip install --no-deps "facenet-pytorch==2.6.0"')
    return ONet.from_package()


@pytest.fixture(scope="module")
def lfw():
    if importlib.util.find_spec("skimage") is None:
        pytest.skip('scikit-image is not installed: pip install "scikit-image==0.26.0"')
    return lfw_faces(), lfw_nonfaces()


@pytest.fixture(scope="module")
def lfw_landmarks(onet, lfw):
    with torch.no_grad():
        prob, lm = onet.face_landmarks(lfw[0])
    return prob, lm


# ------------------------------------------------------------------------------------------------ data


@needs_skimage
def test_lfw_helpers_match_skimage():
    from skimage import data

    ref = torch.as_tensor(data.lfw_subset(), dtype=torch.float32)
    f, nf = lfw_faces(), lfw_nonfaces()
    assert f.shape == nf.shape == (100, 1, 25, 25)
    assert f.dtype == nf.dtype == torch.float32
    assert torch.equal(f[:, 0], ref[:100]) and torch.equal(nf[:, 0], ref[100:])
    assert float(f.min()) >= 0 and float(f.max()) <= 1 and float(nf.min()) >= 0 and float(nf.max()) <= 1
    f.fill_(0.0)  # callers get copies
    assert float(lfw_faces().max()) > 0


# ------------------------------------------------------------------------------------------------ O-Net


def test_onet_scores_lfw(onet, lfw):
    faces_, nonfaces = lfw
    with torch.no_grad():
        p_face, _ = onet.face_landmarks(faces_)
        p_non, _ = onet.face_landmarks(nonfaces)
    n_face, n_non = int((p_face > 0.5).sum()), int((p_non > 0.5).sum())
    print(f"O-Net face prob > 0.5: {n_face}/100 faces, {n_non}/100 non-faces (spec 100 / 0)")
    assert n_face >= 95
    assert n_non <= 5


def test_onet_equals_facenet_pytorch(onet, lfw):
    mtcnn = pytest.importorskip("facenet_pytorch.models.mtcnn", reason="facenet_pytorch.models.mtcnn not importable")
    ref = mtcnn.ONet(pretrained=False)
    ref.load_state_dict(torch.load(ONet.weights_path(), map_location="cpu", weights_only=True))
    ref.eval()
    gen = torch.Generator().manual_seed(0)
    z = torch.cat([onet.preprocess(torch.cat(lfw)), torch.randn(8, 3, 48, 48, generator=gen)])
    with torch.no_grad():
        box_r, lm_r, prob_r = ref(z)
        out = onet(z)
    diffs = {
        "prob": (out.face_logits.softmax(1) - prob_r).abs().max().item(),
        "box": (out.box - box_r).abs().max().item(),
        "landmarks": (out.landmarks - lm_r).abs().max().item(),
    }
    print("max |ours - facenet-pytorch ONet| over 208 inputs:", {k: f"{v:.2e}" for k, v in diffs.items()})
    assert max(diffs.values()) <= 1e-5
    # the (N, W, H, C) flatten matters: the usual (N, C, H, W) one would not match
    with torch.no_grad():
        h = z
        for conv, act, k in ((onet.conv1, onet.act1, 3), (onet.conv2, onet.act2, 3), (onet.conv3, onet.act3, 2)):
            h = torch.nn.functional.max_pool2d(act(conv(h)), k, 2, ceil_mode=True)
        h = onet.act4(onet.conv4(h)).flatten(1)
        wrong = onet.landmark_head(onet.act_fc(onet.fc(h)))
    assert (wrong - lm_r).abs().max().item() > 1e-2


def test_face_landmarks_pixel_coordinates(onet, lfw):
    x = torch.nn.functional.interpolate(lfw[0][:6], size=(30, 40), mode="bilinear", align_corners=False)
    with torch.no_grad():
        prob, lm = onet.face_landmarks(x)
        out = onet(onet.preprocess(x))
    assert prob.shape == (6,) and lm.shape == (6, 5, 2)
    assert torch.allclose(prob, out.face_logits.softmax(1)[:, 1])
    assert torch.allclose(lm[..., 0], out.landmarks[:, :5] * 40)  # x: 5 fractions of the width
    assert torch.allclose(lm[..., 1], out.landmarks[:, 5:] * 30)  # y: 5 fractions of the height
    # grey is repeated to RGB; a 48x48 input is not resized
    rgb = x.expand(-1, 3, -1, -1).contiguous()
    with torch.no_grad():
        assert torch.equal(onet.face_landmarks(rgb)[1], lm)
    z48 = torch.rand(2, 3, 48, 48)
    assert torch.equal(onet.preprocess(z48), (z48 * 255 - 127.5) / 128)


def test_landmarks_plausible(lfw_landmarks):
    _, lm = lfw_landmarks
    eye_y = lm[:, :2, 1].max(1).values
    nose_y = lm[:, 2, 1]
    mouth_y = lm[:, 3:, 1].min(1).values
    ordered = (eye_y < nose_y) & (nose_y < mouth_y)
    left_right = (lm[:, 0, 0] < lm[:, 1, 0]) & (lm[:, 3, 0] < lm[:, 4, 0])
    inside = ((lm >= 0) & (lm <= 24)).all(dim=(1, 2))
    print(f"eyes above nose above mouth: {int(ordered.sum())}/100; left/right order {int(left_right.sum())}/100")
    assert int(ordered.sum()) >= 95
    assert int(left_right.sum()) >= 95
    assert int(inside.sum()) >= 95


def test_face_landmarks_differentiable(onet, lfw):
    x = lfw[0][:2].clone().requires_grad_(True)
    prob, lm = onet.face_landmarks(x)
    (prob.sum() + lm.sum()).backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_onet_errors(onet, monkeypatch):
    with pytest.raises(ValueError, match="images"):
        onet.face_landmarks(torch.rand(2, 2, 25, 25))
    with pytest.raises(ValueError, match="images"):
        onet.face_landmarks(torch.rand(2, 1, 25, 25) + 1)
    bad = torch.rand(2, 1, 25, 25)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="images"):
        onet.face_landmarks(bad)
    with pytest.raises(ValueError, match="unexpected keys"):
        ONet.map_state_dict({**{k: v for k, v in ONet().state_dict().items()}, "extra": torch.zeros(1)})
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "facenet_pytorch" else real(name, *a)
    )
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps"):
        ONet.from_package()


# ------------------------------------------------------------------------------------------------ masks


def test_masks_on_lfw(lfw_landmarks):
    _, lm = lfw_landmarks
    lm32 = lm * 32 / 25
    shares = {}
    for kind in MASK_KINDS:
        m = make_mask(kind, lm32, 32)
        assert m.shape == (100, 1, 32, 32) and m.dtype == torch.float32
        assert torch.equal(m, m.round()) and float(m.min()) == 0 and float(m.max()) == 1
        per_face = m.mean(dim=(1, 2, 3))
        assert float(per_face.min()) > 0.02 and float(per_face.max()) < 0.6  # never empty, never the whole face
        shares[kind] = float(per_face.mean())
    print("mean mask share on the 100 LFW faces at 32 px:", {k: f"{v:.3f}" for k, v in shares.items()})
    assert 0.17 <= shares["eye"] <= 0.22  # spec ~19.5%
    assert 0.30 <= shares["eye_nose"] <= 0.38  # spec ~34%
    assert 0.10 <= shares["respirator"] <= 0.35
    assert 0.03 <= shares["eyeglass"] <= 0.15
    # regions where they belong: every eye in the band, every mouth corner under the respirator
    idx = lm32.round().long().clamp(0, 31)
    eye = make_mask("eye", lm32, 32)[:, 0]
    resp = make_mask("respirator", lm32, 32)[:, 0]
    rows = torch.arange(100)
    for k in (0, 1):
        assert int(eye[rows, idx[:, k, 1], idx[:, k, 0]].sum()) >= 98
        assert int(resp[rows, idx[:, k, 1], idx[:, k, 0]].sum()) == 0
    for k in (3, 4):
        assert int(resp[rows, idx[:, k, 1], idx[:, k, 0]].sum()) >= 98
        assert int(eye[rows, idx[:, k, 1], idx[:, k, 0]].sum()) == 0
    assert bool((make_mask("eye_nose", lm32, 32) >= eye[:, None]).all())  # the eye band is inside eye&nose


def test_eye_band_brute_force():
    # upright face: the band is the axis-aligned rectangle, checked pixel by pixel
    m = eye_band_mask(UPRIGHT, (32, 40))
    lm = UPRIGHT[0].tolist()
    d = lm[1][0] - lm[0][0]
    cx, cy = (lm[0][0] + lm[1][0]) / 2, lm[0][1]
    ref = torch.zeros(32, 40)
    for i in range(32):
        for j in range(40):
            if abs(j - cx) <= 0.95 * d and -0.45 * d <= i - cy <= 0.35 * d:
                ref[i, j] = 1
    assert m.shape == (1, 1, 32, 40)
    assert torch.equal(m[0, 0], ref)


def test_masks_rotate_and_scale_with_the_face():
    n = 32
    # rotating the landmarks by 90 degrees about the image centre rotates every mask with them
    x, y = UPRIGHT[..., 0], UPRIGHT[..., 1]
    rotated = torch.stack([y, n - 1 - x], dim=-1)  # (x, y) -> (y, n-1-x) is torch.rot90(img, 1) on pixel centres
    for kind in MASK_KINDS:
        a = make_mask(kind, UPRIGHT, n)
        b = make_mask(kind, rotated, n)
        assert int((torch.rot90(a, 1, dims=(2, 3)) != b).sum()) == 0, kind
        # twice the size and the landmarks: about the same share
        big = make_mask(kind, UPRIGHT * 2, 2 * n)
        assert abs(float(big.mean()) - float(a.mean())) < 0.03, kind


def test_mask_parts_and_clipping():
    m = eyeglass_mask(UPRIGHT, 32)[0, 0]
    (lx, ly), (rx, ry) = UPRIGHT[0, 0].round().long().tolist(), UPRIGHT[0, 1].round().long().tolist()
    assert m[ly, lx] == 0 and m[ry, rx] == 0  # the lens is open
    assert m[ly, (lx + rx) // 2] == 1  # the bridge
    assert int(m[ly].sum()) > 0 and m[ly - 8 :].sum() > 0
    nose = eye_nose_mask(UPRIGHT, 32)[0, 0]
    assert nose[18, 16] == 1 and eye_band_mask(UPRIGHT, 32)[0, 0, 18, 16] == 0
    # a face partly outside the image: the mask is cut at the border, never wraps
    shifted = UPRIGHT - torch.tensor([12.0, 0.0], dtype=torch.float64)
    cut = eye_band_mask(shifted, 32)[0, 0]
    assert cut[:, 20:].sum() == 0 and cut[:, 0].sum() > 0


def test_make_mask_dispatch_and_errors():
    for kind, fn in zip(MASK_KINDS, (eye_band_mask, eye_nose_mask, respirator_mask, eyeglass_mask), strict=True):
        assert torch.equal(make_mask(kind, UPRIGHT, 32), fn(UPRIGHT, 32))
    assert torch.equal(make_mask("eye", UPRIGHT, 32, top=0.2), eye_band_mask(UPRIGHT, 32, top=0.2))
    with pytest.raises(ValueError, match="kind"):
        make_mask("mouth", UPRIGHT, 32)
    with pytest.raises(ValueError, match="landmarks"):
        make_mask("eye", UPRIGHT[:, :4], 32)
    with pytest.raises(ValueError, match="landmarks"):
        make_mask("eye", UPRIGHT.clone().fill_(float("nan")), 32)
    same = UPRIGHT.clone()
    same[:, 1] = same[:, 0]
    with pytest.raises(ValueError, match="landmarks"):
        make_mask("eye", same, 32)
    with pytest.raises(ValueError, match="size"):
        make_mask("eye", UPRIGHT, 0)
    with pytest.raises(ValueError, match="half_width"):
        make_mask("eye", UPRIGHT, 32, half_width=-1.0)
    with pytest.raises(TypeError, match="landmarks"):
        make_mask("eye", UPRIGHT.long(), 32)


# ------------------------------------------------------------------------------------------------ apply_patch


def _case(n=3, c=3, h=32, w=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, h, w, generator=gen)
    p = torch.rand(n, c, h, w, generator=gen)
    lm = UPRIGHT.expand(n, -1, -1) + torch.randn(n, 5, 2, generator=gen, dtype=torch.float64)
    return x, p, make_mask("eye_nose", lm, (h, w))


def test_apply_patch_composition_and_gradient():
    x, p, m = _case()
    p.requires_grad_(True)
    out = apply_patch(x, p, m)
    inside = m.expand_as(x).bool()
    assert out.shape == x.shape
    assert torch.equal(out[~inside], x[~inside])  # bit for bit
    assert torch.equal(out[inside], p.detach()[inside])
    assert torch.equal(out, (1 - m) * x + m * p.detach())  # the spec's formula, exact for a binary mask
    w = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    (out * w).sum().backward()
    assert torch.equal(p.grad, w * m)  # gradient only inside
    assert float(p.grad[~inside].abs().sum()) == 0


def test_apply_patch_broadcasting():
    x, p, m = _case(n=2)
    shared = p[0]
    for patch in (shared, shared[None]):
        ref = torch.where(m.bool(), shared[None].expand_as(x), x)
        assert torch.equal(apply_patch(x, patch, m), ref)
    grey = p[:, :1]
    assert torch.equal(apply_patch(x, grey, m), torch.where(m.bool(), grey.expand_as(x), x))
    m2 = m[0, 0]
    assert torch.equal(apply_patch(x, p, m2), torch.where(m2.bool(), p, x))
    assert torch.equal(apply_patch(x, p, m.bool()), apply_patch(x, p, m))
    assert torch.equal(apply_patch(x, p, m.expand_as(x)), apply_patch(x, p, m))
    # a shared patch gets the summed gradient of all samples
    q = shared.clone().requires_grad_(True)
    apply_patch(x, q, m).sum().backward()
    assert torch.equal(q.grad, m.sum(0).expand_as(q))


def test_apply_patch_errors():
    x, p, m = _case(n=2)
    with pytest.raises(ValueError, match="patch"):
        apply_patch(x, p[:, :, :31], m)
    with pytest.raises(ValueError, match="patch"):
        apply_patch(x, torch.cat([p, p[:1]]), m)  # 3 patches for 2 images
    with pytest.raises(ValueError, match="mask"):
        apply_patch(x, p, m[:, :, :, :31])
    with pytest.raises(ValueError, match="mask"):
        apply_patch(x, p, m[:, 0])  # 3-D mask
    with pytest.raises(ValueError, match="mask must be binary"):
        apply_patch(x, p, m * 0.5)
    with pytest.raises(ValueError, match="patch"):
        apply_patch(x, p + 1.0, m)
    with pytest.raises(ValueError, match="x"):
        apply_patch(x - 1.0, p, m)
    bad = p.clone()
    bad[0, 0, 0, 0] = math.nan
    with pytest.raises(ValueError, match="patch"):
        apply_patch(x, bad, m)
    bad_x = x.clone()
    bad_x[1, 2, 3, 4] = math.nan
    with pytest.raises(ValueError, match="x"):
        apply_patch(bad_x, p, m)
    nan_mask = m.clone()
    nan_mask[0, 0, 0, 0] = math.nan
    with pytest.raises(ValueError, match="mask"):
        apply_patch(x, p, nan_mask)
    with pytest.raises(TypeError, match="patch"):
        apply_patch(x, (p * 255).long(), m)
    with pytest.raises(TypeError, match="x"):
        apply_patch(x.numpy(), p, m)


def test_module_exports():
    assert set(faces.__all__) >= {"ONet", "apply_patch", "make_mask", "lfw_faces", "lfw_nonfaces"}
