"""SynthFaces: 32-px procedural RGB faces with a differentiable renderer (Track S of the face-patch reproduction).

Followed (spec ``specs/transfer.md``):

- **A.2 "Track S"** [V as a description, not as code]: 32-px procedural faces where an identity is a
  vector of shape and colour parameters; 200 identities x 12 views to train, 60 x 10 held out, disjoint
  identities (:func:`train_set`, :func:`heldout_set`); the renderer's identity parameters serve as a
  patch generator (:class:`RendererGenerator`, "renderer parameters (Track S)" in A.2 "Generators on CPU").
- Landmarks in the convention of :mod:`.faces`: 5 points (left eye, right eye, nose tip, mouth left,
  mouth right; "left" = smaller x), ``(x, y)`` in 0-based pixel coordinates with pixel ``(i, j)`` centred
  at ``x = j, y = i``, so :func:`faces.make_mask` draws the masks from them.

Everything else is a reconstruction [R]; our choices:

- **Parameters.** A parameter vector is *standardised*: ``physical = mean + std * p`` per entry
  (:data:`PARAMS`, :func:`physical`). The first :data:`N_ID` = 31 entries are the identity (face oval
  half-width/half-height and jaw taper, skin luminance and red/blue tint, eye height, half inter-ocular
  distance, eye radii, iris RGB, brow height/thickness/tilt/darkness, nose length/width, mouth offset/
  half-width/lip thickness, lip RGB, hairline, hair RGB, hair side width), the last :data:`N_VIEW` = 13
  the view (shift x/y, log-scale, roll, light gain, horizontal/vertical light gradient, smile, eye
  openness, brow raise, background RGB). ``p = 0`` is the mean face in the neutral view. Sampling:
  ``p ~ N(0, 1)`` clamped to ``[-2.5, 2.5]`` (identities and views alike); ``|p| <= 3`` stays a
  plausible face by construction of the ranges.
- **Rendering.** Face coordinates ``(u, v)`` (pixels, origin at the face centre, image pixel
  ``(x, y) = c + t + s R(roll) (u, v)`` with ``c = (15.5, 16.5)``). Layers back to front, each an
  alpha ``sigmoid(-sd / 0.35)`` of a smooth signed distance ``sd`` (ellipses: ``(r - 1) sqrt(a b)``;
  boxes and strokes built from ``sqrt(x^2 + 1e-3)`` instead of ``|x|``): background, back hair (an
  ellipse around the head cut off 1.5 px below the eye line), face oval (its half-width narrows below
  the centre by the jaw taper, through a softplus), fringe (skin above an arched hairline is hair),
  sclera (white ellipses), iris (a disc inside the sclera), brows (tilted strokes), nose (a darker ridge
  and tip), lips (a stroke along a parabola bent by the smile). Then lighting ``gain * (1 + gx X / 16 +
  gy Y / 16)`` in image coordinates and a clamp to ``[0, 1]``. Every step is smooth in the parameters
  (the clamps only act at extreme values), so gradients reach all of them.
- **Views** add i.i.d. Gaussian pixel noise (std 0.02, then clamp) in the dataset, not in
  :func:`render` (which is deterministic).
- **Seeds.** ``SynthFaces(n_ids, views_per_id, seed)`` draws identities, then views, then noise from one
  CPU generator seeded with ``seed``: same seed, same bits. :func:`train_set` uses ``seed`` and
  :func:`heldout_set` ``seed + 1_000_003``; with continuous parameters the identities are distinct with
  probability 1 (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...core.checks import check_float, check_int, check_tensor

__all__ = [
    "ID_NAMES",
    "IMAGE_SIZE",
    "N_ID",
    "N_PARAMS",
    "N_VIEW",
    "PARAMS",
    "VIEW_NAMES",
    "RendererGenerator",
    "SynthFaces",
    "heldout_set",
    "landmarks",
    "physical",
    "render",
    "train_set",
]

IMAGE_SIZE = 32
_CENTRE = (15.5, 16.5)  # (x, y) of the face centre in the image
_SOFT = 0.35  # edge softness of every shape, pixels
_TRUNC = 2.5  # sampling clamp of standardised parameters

# (name, mean, std) -- identity first, then view. Units: pixels in face coordinates, colours in [0, 1].
PARAMS: tuple[tuple[str, float, float], ...] = (
    ("face_hw", 9.5, 0.7),
    ("face_hh", 12.0, 0.7),
    ("jaw_taper", 0.25, 0.08),
    ("skin_lum", 0.62, 0.11),
    ("skin_r", 0.12, 0.04),
    ("skin_b", -0.10, 0.04),
    ("eye_y", -2.5, 0.5),
    ("eye_dx", 4.5, 0.4),
    ("eye_rx", 1.7, 0.2),
    ("eye_ry", 1.05, 0.15),
    ("iris_r", 0.35, 0.12),
    ("iris_g", 0.28, 0.10),
    ("iris_b", 0.25, 0.12),
    ("brow_dy", 2.3, 0.3),
    ("brow_th", 0.75, 0.15),
    ("brow_tilt", 0.0, 0.12),
    ("brow_dark", 0.45, 0.12),
    ("nose_len", 4.6, 0.45),
    ("nose_w", 1.3, 0.22),
    ("mouth_dy", 3.0, 0.35),
    ("mouth_hw", 2.8, 0.35),
    ("lip_th", 0.75, 0.15),
    ("lip_r", 0.70, 0.08),
    ("lip_g", 0.35, 0.07),
    ("lip_b", 0.35, 0.07),
    ("hairline", -8.0, 0.8),
    ("hair_r", 0.30, 0.12),
    ("hair_g", 0.22, 0.09),
    ("hair_b", 0.15, 0.07),
    ("hair_side", 1.4, 0.45),
    ("hair_top", 1.0, 0.35),
    # ---- view
    ("shift_x", 0.0, 0.6),
    ("shift_y", 0.0, 0.6),
    ("log_scale", 0.0, 0.04),
    ("roll", 0.0, 0.05),
    ("light_gain", 1.0, 0.08),
    ("light_gx", 0.0, 0.10),
    ("light_gy", 0.0, 0.06),
    ("smile", 0.0, 0.35),
    ("eye_open", 0.0, 0.12),
    ("brow_raise", 0.0, 0.2),
    ("bg_r", 0.5, 0.14),
    ("bg_g", 0.5, 0.14),
    ("bg_b", 0.5, 0.14),
)
N_ID = 31
N_PARAMS = len(PARAMS)
N_VIEW = N_PARAMS - N_ID
ID_NAMES = tuple(p[0] for p in PARAMS[:N_ID])
VIEW_NAMES = tuple(p[0] for p in PARAMS[N_ID:])
_INDEX = {name: i for i, (name, _, _) in enumerate(PARAMS)}


def _check_params(params: torch.Tensor, name: str = "params", width: int = N_PARAMS) -> torch.Tensor:
    check_tensor(params, name, ndim=2, floating=True)
    if params.shape[1] != width:
        raise ValueError(f"{name} must have shape (N, {width}), got {tuple(params.shape)}")
    return params


def physical(params: torch.Tensor) -> dict[str, torch.Tensor]:
    """Standardised parameters (N, P) -> dict of physical values, each (N,): ``mean + std * p``."""
    params = _check_params(params)
    mean = params.new_tensor([p[1] for p in PARAMS])
    std = params.new_tensor([p[2] for p in PARAMS])
    phys = mean + std * params
    return {name: phys[:, i] for name, i in _INDEX.items()}


def _sabs(x: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(x * x + 1e-3)


def _alpha(sd: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(-sd / _SOFT)


def _ellipse_sd(u: torch.Tensor, v: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    r = torch.sqrt((u / a) ** 2 + (v / b) ** 2 + 1e-6)
    return (r - 1.0) * torch.sqrt(a * b)


def _blend(img: torch.Tensor, alpha: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    # img (N, 3, H, W), alpha (N, H, W), colour (N, 3)
    a = alpha.unsqueeze(1)
    return img * (1.0 - a) + a * colour[:, :, None, None]


def _geometry(q: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Face-coordinate positions of the features (used by the renderer and the landmarks)."""
    eye_v = q["eye_y"]
    nose_v = eye_v + q["nose_len"]
    mouth_v = nose_v + q["mouth_dy"]
    return {"eye_v": eye_v, "nose_v": nose_v, "mouth_v": mouth_v}


def _to_image(q: dict[str, torch.Tensor], u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    s = torch.exp(q["log_scale"])
    c, sn = torch.cos(q["roll"]), torch.sin(q["roll"])
    x = _CENTRE[0] + q["shift_x"] + s * (c * u - sn * v)
    y = _CENTRE[1] + q["shift_y"] + s * (sn * u + c * v)
    return x, y


def landmarks(params: torch.Tensor) -> torch.Tensor:
    """5 landmarks (N, 5, 2) ``(x, y)`` pixels: left eye, right eye, nose tip, mouth left, mouth right.

    Eye centres, the nose tip and the mouth corners of :func:`render`'s shapes, through the view's
    shift, scale and roll. Differentiable.
    """
    q = physical(params)
    g = _geometry(q)
    zero = torch.zeros_like(q["eye_dx"])
    us = torch.stack([-q["eye_dx"], q["eye_dx"], zero, -q["mouth_hw"], q["mouth_hw"]], dim=1)
    vs = torch.stack([g["eye_v"], g["eye_v"], g["nose_v"], g["mouth_v"], g["mouth_v"]], dim=1)
    x, y = _to_image({k: t[:, None] for k, t in q.items()}, us, vs)
    return torch.stack([x, y], dim=2)


def render(params: torch.Tensor, size: int = IMAGE_SIZE) -> torch.Tensor:
    """Render standardised parameters (N, :data:`N_PARAMS`) to RGB faces (N, 3, size, size) in [0, 1].

    Deterministic and differentiable in ``params`` (soft shapes: sigmoids of smooth signed distances).
    ``size`` other than 32 samples the same 32-px canvas more densely (pixel centres at ``(j + 0.5) 32 /
    size - 0.5``).
    """
    params = _check_params(params)
    size = check_int(size, "size", minimum=8)
    q0 = physical(params)
    n = params.shape[0]
    q = {k: t[:, None, None] for k, t in q0.items()}  # (N, 1, 1) for broadcasting over the grid
    g = _geometry(q)
    coords = (torch.arange(size, dtype=params.dtype, device=params.device) + 0.5) * (IMAGE_SIZE / size) - 0.5
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    # image -> face coordinates
    s = torch.exp(q["log_scale"])
    c, sn = torch.cos(q["roll"]), torch.sin(q["roll"])
    dx = xx[None] - _CENTRE[0] - q["shift_x"]
    dy = yy[None] - _CENTRE[1] - q["shift_y"]
    u = (c * dx + sn * dy) / s
    v = (-sn * dx + c * dy) / s

    def rgb(*names: str) -> torch.Tensor:
        return torch.stack([q0[k] for k in names], dim=1).clamp(0.0, 1.0)

    lum = q0["skin_lum"]
    skin = torch.stack([lum + q0["skin_r"], lum, lum + q0["skin_b"]], dim=1).clamp(0.0, 1.0)
    hair = rgb("hair_r", "hair_g", "hair_b")
    bg = rgb("bg_r", "bg_g", "bg_b")
    img = bg[:, :, None, None].expand(n, 3, size, size)

    # back hair: an ellipse around the head, down to 1.5 px below the eye line
    hw, hh = q["face_hw"], q["face_hh"]
    back = _alpha(_ellipse_sd(u, v + 0.5 * q["hair_top"], hw + q["hair_side"], hh + q["hair_top"]))
    back = back * torch.sigmoid((g["eye_v"] + 1.5 - v) / _SOFT)
    img = _blend(img, back, hair)
    # face oval, narrowing towards the chin
    taper = 1.0 - q["jaw_taper"] * F.softplus(v, beta=2.0) / hh
    face = _alpha(_ellipse_sd(u, v, hw * taper, hh))
    img = _blend(img, face, skin)
    # fringe: skin above an arched hairline is hair
    fringe = face * torch.sigmoid((q["hairline"] + 0.05 * u * u - v) / _SOFT)
    img = _blend(img, fringe, hair)
    # eyes
    open_ = torch.exp(q["eye_open"])
    iris_col = rgb("iris_r", "iris_g", "iris_b")
    white = torch.full_like(iris_col, 0.95)
    for side in (-1.0, 1.0):
        eu = u - side * q["eye_dx"]
        ev = v - g["eye_v"]
        sclera = _alpha(_ellipse_sd(eu, ev, q["eye_rx"], q["eye_ry"] * open_))
        img = _blend(img, sclera, white)
        r_iris = 0.8 * q["eye_ry"]
        iris = sclera * _alpha(torch.sqrt(eu * eu + ev * ev + 1e-6) - r_iris)
        img = _blend(img, iris, iris_col)
        # brow: a tilted stroke above the eye (tilt > 0 raises the outer end)
        bu = eu
        bv = v - (g["eye_v"] - q["brow_dy"] - q["brow_raise"] - side * q["brow_tilt"] * bu)
        brow = _alpha(_sabs(bu) - 1.25 * q["eye_rx"]) * _alpha(_sabs(bv) - 0.5 * q["brow_th"])
        img = _blend(img, brow * face, hair * q0["brow_dark"][:, None])
    # nose: a darker ridge from below the eye line to the tip, and a darker tip
    ridge_mid = 0.5 * (g["eye_v"] + 1.0 + g["nose_v"])
    ridge_half = 0.5 * (g["nose_v"] - g["eye_v"] - 1.0)
    ridge = _alpha(_sabs(u) - 0.3 * q["nose_w"]) * _alpha(_sabs(v - ridge_mid) - ridge_half)
    img = _blend(img, 0.35 * ridge, skin * 0.8)
    tip = _alpha(_ellipse_sd(u, v - g["nose_v"] + 0.3, q["nose_w"], 0.7))
    img = _blend(img, 0.6 * tip, skin * 0.72)
    # mouth: a stroke along a parabola; the smile lowers its centre (corners stay on the landmarks)
    mhw = q["mouth_hw"]
    curve = g["mouth_v"] + 0.6 * q["smile"] * (1.0 - (u / mhw) ** 2)
    lips = _alpha(_sabs(u) - mhw) * _alpha(_sabs(v - curve) - 0.5 * q["lip_th"])
    img = _blend(img, lips, rgb("lip_r", "lip_g", "lip_b"))
    # lighting in image coordinates
    light = q["light_gain"] * (
        1.0 + q["light_gx"] * (xx[None] - 15.5) / 16.0 + q["light_gy"] * (yy[None] - 15.5) / 16.0
    )
    return (img * light[:, None]).clamp(0.0, 1.0)


def _sample(gen: torch.Generator, n: int, width: int) -> torch.Tensor:
    return torch.randn(n, width, generator=gen, dtype=torch.float64).clamp(-_TRUNC, _TRUNC).float()


@dataclass(frozen=True)
class SynthFacesData:
    """Tensors of a :class:`SynthFaces` set (see there)."""

    images: torch.Tensor
    labels: torch.Tensor
    params: torch.Tensor
    id_params: torch.Tensor
    landmarks: torch.Tensor


class SynthFaces(torch.utils.data.Dataset):
    """``n_ids`` random identities x ``views_per_id`` random views, rendered at 32 px with pixel noise.

    Attributes (all CPU tensors): ``images`` float32 (N, 3, 32, 32) in [0, 1] with ``N = n_ids *
    views_per_id``, identity-major (view ``j`` of identity ``i`` at row ``i * views_per_id + j``);
    ``labels`` int64 (N,); ``params`` (N, :data:`N_PARAMS`) standardised parameters of each image;
    ``id_params`` (n_ids, :data:`N_ID`); ``landmarks`` (N, 5, 2) ``(x, y)`` pixels. ``dataset[i]`` is
    ``(image, label)``. Same ``seed``, same bits.
    """

    def __init__(self, n_ids: int, views_per_id: int, seed: int = 0, *, noise: float = 0.02) -> None:
        self.n_ids = check_int(n_ids, "n_ids", minimum=1)
        self.views_per_id = check_int(views_per_id, "views_per_id", minimum=1)
        self.seed = check_int(seed, "seed", minimum=0)
        self.noise = check_float(noise, "noise", minimum=0.0, maximum=0.5)
        gen = torch.Generator().manual_seed(self.seed)
        id_params = _sample(gen, self.n_ids, N_ID)
        n = self.n_ids * self.views_per_id
        view_params = _sample(gen, n, N_VIEW)
        params = torch.cat([id_params.repeat_interleave(self.views_per_id, dim=0), view_params], dim=1)
        images = torch.cat([render(params[i : i + 256]) for i in range(0, n, 256)])
        if self.noise > 0:
            eps = torch.randn(images.shape, generator=gen, dtype=torch.float32)
            images = (images + self.noise * eps).clamp(0.0, 1.0)
        self.images = images
        self.labels = torch.arange(self.n_ids).repeat_interleave(self.views_per_id)
        self.params = params
        self.id_params = id_params
        self.landmarks = landmarks(params)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.labels[i]

    def data(self) -> SynthFacesData:
        return SynthFacesData(self.images, self.labels, self.params, self.id_params, self.landmarks)

    def __repr__(self) -> str:
        return f"SynthFaces(n_ids={self.n_ids}, views_per_id={self.views_per_id}, seed={self.seed}, noise={self.noise})"


HELDOUT_SEED_OFFSET = 1_000_003


def train_set(seed: int = 0) -> SynthFaces:
    """The spec's training set: 200 identities x 12 views (seed ``seed``)."""
    return SynthFaces(200, 12, seed)


def heldout_set(seed: int = 0) -> SynthFaces:
    """The spec's held-out set: 60 identities x 10 views (seed ``seed + 1_000_003``, disjoint identities)."""
    return SynthFaces(60, 10, check_int(seed, "seed", minimum=0) + HELDOUT_SEED_OFFSET)


class RendererGenerator(nn.Module):
    """The renderer as a patch generator: ``forward(z)`` renders identity parameters ``z`` in a fixed view.

    ``z`` (N, :attr:`latent_dim`) are standardised (whitened) identity parameters: ``z = 0`` is the mean
    face, identities are sampled from ``N(0, 1)`` clamped to ``[-2.5, 2.5]``, ``|z| <= 3`` stays
    plausible. ``view`` (:data:`N_VIEW`,) or (N, :data:`N_VIEW`) standardised view parameters, default
    the neutral view (zeros); a buffer, so ``.to()`` moves it. Output (N, 3, 32, 32) in [0, 1]. No
    encoder: invert by optimising ``z``.
    """

    latent_dim: int = N_ID

    def __init__(self, view: torch.Tensor | None = None) -> None:
        super().__init__()
        if view is None:
            view = torch.zeros(N_VIEW)
        check_tensor(view, "view", ndim=(1, 2), floating=True)
        if view.shape[-1] != N_VIEW:
            raise ValueError(f"view must have {N_VIEW} entries in its last dimension, got shape {tuple(view.shape)}")
        self.register_buffer("view", view.detach().clone().float())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = _check_params(z, "z", N_ID)
        view = self.view.to(z)
        view = view.expand(z.shape[0], N_VIEW) if view.dim() == 1 else view
        if view.shape[0] != z.shape[0]:
            raise ValueError(f"view has {view.shape[0]} rows, z has {z.shape[0]}")
        return render(torch.cat([z, view], dim=1))

    def landmarks(self, z: torch.Tensor) -> torch.Tensor:
        """Landmarks (N, 5, 2) of ``forward(z)``."""
        z = _check_params(z, "z", N_ID)
        view = self.view.to(z)
        view = view.expand(z.shape[0], N_VIEW) if view.dim() == 1 else view
        return landmarks(torch.cat([z, view], dim=1))
