"""SynthFaces: differentiable renderer (finite differences), determinism, landmarks, identity structure."""

from __future__ import annotations

import pytest
import torch

from bastion.attacks.transfer import faces
from bastion.attacks.transfer import synthfaces as sf


def _random_params(n: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, sf.N_PARAMS, generator=g, dtype=torch.float64).clamp(-2, 2).to(dtype)


def test_parameter_layout():
    assert sf.N_ID + sf.N_VIEW == sf.N_PARAMS == len(sf.PARAMS)
    assert sf.RendererGenerator.latent_dim == sf.N_ID == len(sf.ID_NAMES)
    assert len(set(sf.ID_NAMES) | set(sf.VIEW_NAMES)) == sf.N_PARAMS
    q = sf.physical(torch.zeros(1, sf.N_PARAMS))
    assert q["face_hw"].item() == pytest.approx(9.5) and q["light_gain"].item() == pytest.approx(1.0)


def test_render_shape_range_dtype():
    x = sf.render(_random_params(3, 0, torch.float32))
    assert x.shape == (3, 3, 32, 32) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    x64 = sf.render(_random_params(1, 0))
    assert x64.dtype == torch.float64
    assert sf.render(torch.zeros(2, sf.N_PARAMS), size=64).shape == (2, 3, 64, 64)


def test_render_finite_differences_match_autograd():
    """Central differences (float64) vs autograd on a random linear read-out of the image."""
    p = _random_params(2, 1).requires_grad_(True)
    w = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    def loss(q: torch.Tensor) -> torch.Tensor:
        return (sf.render(q) * w).sum()

    (grad,) = torch.autograd.grad(loss(p), p)
    # every parameter of every image moves the image
    assert bool((grad.abs() > 1e-8).all()), grad
    h = 1e-5
    names = ["face_hw", "skin_lum", "eye_dx", "eye_ry", "brow_tilt", "nose_w", "lip_th", "hairline", "hair_g"]
    names += ["shift_x", "log_scale", "roll", "light_gx", "smile", "eye_open", "bg_b"]
    idx = [sf.PARAMS.index(next(t for t in sf.PARAMS if t[0] == n)) for n in names]
    with torch.no_grad():
        for row in range(2):
            for j in idx:
                e = torch.zeros_like(p)
                e[row, j] = h
                fd = (loss(p + e) - loss(p - e)) / (2 * h)
                assert float(fd) == pytest.approx(float(grad[row, j]), rel=1e-4, abs=1e-6), sf.PARAMS[j][0]
        d = torch.randn(p.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        fd = (loss(p + h * d) - loss(p - h * d)) / (2 * h)
        assert float(fd) == pytest.approx(float((grad * d).sum()), rel=1e-5)


def test_same_seed_same_bits_and_different_seed_differs():
    a, b = sf.SynthFaces(6, 3, seed=7), sf.SynthFaces(6, 3, seed=7)
    for name in ("images", "labels", "params", "id_params", "landmarks"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    c = sf.SynthFaces(6, 3, seed=8)
    assert not torch.equal(a.images, c.images)
    assert a.images.shape == (18, 3, 32, 32) and a.labels.tolist() == [i for i in range(6) for _ in range(3)]
    img, lab = a[4]
    assert torch.equal(img, a.images[4]) and int(lab) == 1
    # views of one identity share identity parameters and differ in view parameters
    assert torch.equal(a.params[0, : sf.N_ID], a.params[2, : sf.N_ID])
    assert not torch.equal(a.params[0, sf.N_ID :], a.params[2, sf.N_ID :])


def test_spec_sets_sizes_and_disjoint_identities():
    tr, ho = sf.train_set(0), sf.heldout_set(0)
    assert (tr.n_ids, tr.views_per_id, len(tr)) == (200, 12, 2400)
    assert (ho.n_ids, ho.views_per_id, len(ho)) == (60, 10, 600)
    d = torch.cdist(tr.id_params.double(), ho.id_params.double())
    assert float(d.min()) > 1.0  # 31-d standard normal identities: no held-out identity is a training one


def _face_coords(params: torch.Tensor, pts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent inverse of the view transform: image (x, y) -> face (u, v)."""
    q = sf.physical(params)
    s = torch.exp(q["log_scale"])[:, None]
    c, sn = torch.cos(q["roll"])[:, None], torch.sin(q["roll"])[:, None]
    dx = pts[..., 0] - 15.5 - q["shift_x"][:, None]
    dy = pts[..., 1] - 16.5 - q["shift_y"][:, None]
    return (c * dx + sn * dy) / s, (-sn * dx + c * dy) / s


def test_landmarks_order_and_inside_face():
    d = sf.SynthFaces(40, 3, seed=3)
    lm = d.landmarks
    assert lm.shape == (120, 5, 2)
    assert bool(((lm >= 0) & (lm <= 31)).all())
    le, re, nose, ml, mr = lm.unbind(1)
    assert bool((le[:, 0] < re[:, 0]).all()) and bool((ml[:, 0] < mr[:, 0]).all())
    eye_y = (le[:, 1] + re[:, 1]) / 2
    mouth_y = (ml[:, 1] + mr[:, 1]) / 2
    assert bool((eye_y < nose[:, 1]).all()) and bool((nose[:, 1] < mouth_y).all())
    assert bool((le[:, 0] < nose[:, 0]).all()) and bool((nose[:, 0] < re[:, 0]).all())
    u, v = _face_coords(d.params, lm)
    q = sf.physical(d.params)
    r2 = (u / q["face_hw"][:, None]) ** 2 + (v / q["face_hh"][:, None]) ** 2
    assert float(r2.max()) < 0.6  # well inside the face oval


def test_landmarks_sit_on_the_rendered_features():
    p = torch.zeros(1, sf.N_PARAMS)
    img = sf.render(p)[0]
    lm = sf.landmarks(p)[0]
    iris = torch.tensor([sf.PARAMS[i][1] for i in range(10, 13)])
    for k in (0, 1):
        x, y = (round(float(t)) for t in lm[k])
        assert torch.allclose(img[:, y, x], iris, atol=0.08)
    # the eye-band mask of faces.make_mask covers both eyes and not the mouth
    m = faces.make_mask("eye", sf.landmarks(p), 32)[0, 0]
    for k, inside in ((0, 1.0), (1, 1.0), (3, 0.0), (4, 0.0)):
        x, y = (round(float(t)) for t in lm[k])
        assert float(m[y, x]) == inside


def test_identity_separation_in_pixel_space():
    d = sf.SynthFaces(20, 6, seed=11)
    same = d.labels[:, None] == d.labels[None, :]
    off = ~torch.eye(len(d), dtype=torch.bool)
    # whole image (background colour is a view nuisance), then the central face region
    for x, ratio in ((d.images, 0.95), (d.images[:, :, 10:25, 9:24], 0.8)):
        dist = torch.cdist(x.flatten(1).double(), x.flatten(1).double())
        assert float(dist[same & off].mean()) < ratio * float(dist[~same].mean())


def test_renderer_generator():
    g = sf.RendererGenerator()
    z = torch.zeros(2, g.latent_dim, requires_grad=True)
    x = g(z)
    assert x.shape == (2, 3, 32, 32)
    assert torch.equal(x.detach(), sf.render(torch.zeros(2, sf.N_PARAMS)))
    x[:, :, 8:20].sum().backward()
    assert z.grad is not None and float(z.grad.abs().sum()) > 0
    assert g.landmarks(torch.zeros(1, g.latent_dim)).shape == (1, 5, 2)
    view = torch.randn(sf.N_VIEW)
    gv = sf.RendererGenerator(view)
    zz = torch.randn(3, sf.N_ID)
    assert torch.equal(gv(zz), sf.render(torch.cat([zz, view.expand(3, -1)], 1)))
    big = g(3 * torch.ones(1, sf.N_ID)), g(-3 * torch.ones(1, sf.N_ID))
    assert all(float(t.min()) >= 0 and float(t.max()) <= 1 for t in big)
    with pytest.raises(ValueError, match="z"):
        g(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="view"):
        sf.RendererGenerator(torch.zeros(3))


def test_bad_inputs():
    with pytest.raises(ValueError, match="params"):
        sf.render(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="n_ids"):
        sf.SynthFaces(0, 3)
    with pytest.raises(TypeError, match="seed"):
        sf.SynthFaces(2, 3, seed=1.5)
