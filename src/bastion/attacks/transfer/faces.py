"""Faces for the patch attacks: MTCNN O-Net landmarks, 5-landmark masks, patch composition, skimage's LFW subset.

Followed (spec ``specs/transfer.md``):

- **A "Threat model"** [V]: the adversarial face is ``x* = (1 - M) * x + M * p`` with a binary mask ``M``
  built from 5 landmarks; the four regions are the eye band, eye & nose, respirator (nose tip to chin)
  and eyeglass frame (:func:`apply_patch`, :func:`make_mask`).
- **A.1 "Landmarks"** [V]: the MTCNN O-Net of ``facenet-pytorch`` 2.6.0, re-implemented here and loaded
  from the package's ``data/onet.pt`` with ``torch.load(weights_only=True)`` (:class:`ONet`): 48x48 RGB
  input normalised as ``(255 x - 127.5) / 128``; conv3-PReLU-maxpool3/2, conv3-PReLU-maxpool3/2,
  conv3-PReLU-maxpool2/2 (all pools in ceil mode), conv2-PReLU; the feature map is permuted to
  ``(N, W, H, C)`` before flattening (the weights come from a column-major original); fc256-PReLU; heads
  of 2 (softmax, index 1 = face), 4 (box regression) and 10 (five x's then five y's, as fractions of
  the crop). The landmark convention follows facenet-pytorch's ``detect_face``: ``x = W * fraction``
  in 0-based pixel-index coordinates (pixel ``(i, j)`` has its centre at ``x = j, y = i``).
- **A.1 "Faces"** [V]: ``skimage.data.lfw_subset()`` holds 200 grey 25x25 crops, the first 100 faces
  and the last 100 non-faces (its docstring), no identity labels (:func:`lfw_faces`,
  :func:`lfw_nonfaces`).

Reconstructions [R]: the mask geometry. Neither paper gives it (AT3D draws its regions on a 3DMM UV
map); here every region is drawn in a face frame fixed by the eyes: origin at the eye midpoint, axis
``u`` along the eye line (left to right in the image), axis ``v`` perpendicular to it pointing towards
the mouth, unit ``d`` = inter-ocular distance, so the masks rotate and scale with the face. Pixels are
sampled at their centres. Defaults (all keyword arguments, in units of ``d``):

- eye band: the rectangle ``|s| <= 0.95``, ``-0.45 <= t <= 0.35`` (both eyes and brows, not the nose
  tip) -- 19.6% of the 32-px LFW faces (spec's prototype: about 19.5%);
- eye & nose: the eye band plus a trapezoid from the eye line (half-width 0.7, centred between the
  eyes) down to 0.4 below the nose tip (half-width 0.95, centred on the nose tip) -- 33.6% (spec's
  prototype: about 34%, which needs this broad stem over the nose and inner cheeks; a narrow nose-only
  stem, half-widths 0.25 / 0.45 and 0.15 below the tip, gives about 24%);
- respirator: a hexagon from 0.1 above the nose tip (half-width 0.75) through the mouth corners (0.35
  beyond each) down to an estimated chin (the mouth line plus 0.6 of the eye-to-mouth distance,
  half-width 0.45) -- 21.8%;
- eyeglass frame: two elliptic lens rims around the eyes (semi-axes 0.42 x 0.30, rim 0.12 thick, at
  least one pixel), a bridge between them and temples out to ``|s| <= 1.2`` -- 6.9%.

(Area shares: mean over the 100 LFW faces, O-Net landmarks on the 25-px crops times 32/25, masks at 32 px.
Landmarks rescale with the image by the size ratio, as ``x = W * fraction`` implies.)
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ...core.checks import check_choice, check_float, check_image_batch, check_int, check_tensor

__all__ = [
    "MASK_KINDS",
    "ONet",
    "ONetOutput",
    "apply_patch",
    "eye_band_mask",
    "eye_nose_mask",
    "eyeglass_mask",
    "lfw_faces",
    "lfw_nonfaces",
    "make_mask",
    "respirator_mask",
]

FACENET_INSTALL = 'pip install --no-deps "facenet-pytorch==2.6.0"'
SKIMAGE_INSTALL = 'pip install "scikit-image==0.26.0"'

# ---------------------------------------------------------------------------------------------------- O-Net

# our parameter name -> facenet-pytorch's (the file's) key
_ONET_KEYS = {
    "conv1.weight": "conv1.weight",
    "conv1.bias": "conv1.bias",
    "act1.weight": "prelu1.weight",
    "conv2.weight": "conv2.weight",
    "conv2.bias": "conv2.bias",
    "act2.weight": "prelu2.weight",
    "conv3.weight": "conv3.weight",
    "conv3.bias": "conv3.bias",
    "act3.weight": "prelu3.weight",
    "conv4.weight": "conv4.weight",
    "conv4.bias": "conv4.bias",
    "act4.weight": "prelu4.weight",
    "fc.weight": "dense5.weight",
    "fc.bias": "dense5.bias",
    "act_fc.weight": "prelu5.weight",
    "face_head.weight": "dense6_1.weight",
    "face_head.bias": "dense6_1.bias",
    "box_head.weight": "dense6_2.weight",
    "box_head.bias": "dense6_2.bias",
    "landmark_head.weight": "dense6_3.weight",
    "landmark_head.bias": "dense6_3.bias",
}


class ONetOutput(NamedTuple):
    """Raw O-Net heads: ``face_logits`` [N, 2] (index 1 = face), ``box`` [N, 4] (offsets as crop fractions),
    ``landmarks`` [N, 10] (five x's then five y's, as crop fractions)."""

    face_logits: torch.Tensor
    box: torch.Tensor
    landmarks: torch.Tensor


class ONet(nn.Module):
    """MTCNN's output network (Zhang et al. 2016) as in facenet-pytorch 2.6.0; build with :meth:`from_package`.

    :meth:`forward` takes already normalised 48x48 RGB crops; :meth:`face_landmarks` takes face crops
    of any size in [0, 1] and does the resizing and normalisation (differentiably).
    """

    input_size = 48

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3)
        self.act1 = nn.PReLU(32)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.act2 = nn.PReLU(64)
        self.conv3 = nn.Conv2d(64, 64, 3)
        self.act3 = nn.PReLU(64)
        self.conv4 = nn.Conv2d(64, 128, 2)
        self.act4 = nn.PReLU(128)
        self.fc = nn.Linear(3 * 3 * 128, 256)
        self.act_fc = nn.PReLU(256)
        self.face_head = nn.Linear(256, 2)
        self.box_head = nn.Linear(256, 4)
        self.landmark_head = nn.Linear(256, 10)
        self.eval()

    @classmethod
    def weights_path(cls) -> Path:
        """``data/onet.pt`` inside the installed ``facenet_pytorch`` (found without importing it)."""
        spec = importlib.util.find_spec("facenet_pytorch")
        if spec is None or not spec.submodule_search_locations:
            raise ModuleNotFoundError(
                f"the O-Net weights ship with facenet-pytorch, which is not installed: {FACENET_INSTALL}"
            )
        path = Path(next(iter(spec.submodule_search_locations)), "data", "onet.pt")
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found inside the installed facenet-pytorch; reinstall: {FACENET_INSTALL}"
            )
        return path

    @classmethod
    def from_package(cls) -> ONet:
        """The pretrained O-Net, weights read from facenet-pytorch's ``data/onet.pt`` (weights only, no pickle)."""
        path = cls.weights_path()
        state = torch.load(path, map_location="cpu", weights_only=True)
        net = cls()
        net.load_state_dict(cls.map_state_dict(state))
        return net.eval()

    @staticmethod
    def map_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Rename facenet-pytorch's O-Net keys to ours; ValueError on missing or unexpected keys."""
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict of tensors, got {type(state).__name__}")
        missing = sorted(set(_ONET_KEYS.values()) - set(state))
        extra = sorted(set(state) - set(_ONET_KEYS.values()))
        if missing or extra:
            raise ValueError(f"state is not an O-Net state dict: missing keys {missing}, unexpected keys {extra}")
        return {ours: state[theirs] for ours, theirs in _ONET_KEYS.items()}

    def forward(self, z: torch.Tensor) -> ONetOutput:
        """Heads for normalised crops ``z`` [N, 3, 48, 48] (``(255 x - 127.5) / 128``)."""
        z = F.max_pool2d(self.act1(self.conv1(z)), 3, 2, ceil_mode=True)  # 46 -> 23
        z = F.max_pool2d(self.act2(self.conv2(z)), 3, 2, ceil_mode=True)  # 21 -> 10
        z = F.max_pool2d(self.act3(self.conv3(z)), 2, 2, ceil_mode=True)  # 8 -> 4
        z = self.act4(self.conv4(z))  # 3x3x128
        z = z.permute(0, 3, 2, 1).reshape(z.shape[0], -1)  # (N, W, H, C): the original is column-major
        z = self.act_fc(self.fc(z))
        return ONetOutput(self.face_head(z), self.box_head(z), self.landmark_head(z))

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] crops [N, 1 or 3, H, W] -> normalised RGB [N, 3, 48, 48] (bilinear resize, grey repeated)."""
        images = check_image_batch(images, "images")
        if images.shape[1] not in (1, 3):
            raise ValueError(f"images must have 1 (grey) or 3 (RGB) channels, got shape {tuple(images.shape)}")
        weight = self.conv1.weight
        x = images.to(device=weight.device, dtype=weight.dtype)
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        x = x.expand(-1, 3, -1, -1)
        return (x * 255.0 - 127.5) / 128.0

    def face_landmarks(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Face probability [N] and 5 landmarks [N, 5, 2] (x, y) in pixel coordinates of ``images``.

        ``images`` are face crops [N, C, H, W] in [0, 1] (C = 1 is repeated to RGB). Landmark order:
        left eye, right eye, nose, mouth left, mouth right ("left" = smaller x in the image). Pixel
        coordinates are 0-based with pixel ``(i, j)`` centred at ``(x=j, y=i)``; ``x = W * fraction`` as in
        facenet-pytorch. Differentiable; wrap in ``torch.no_grad()`` when no gradient is needed.
        """
        out = self(self.preprocess(images))
        prob = out.face_logits.softmax(dim=1)[:, 1]
        h, w = images.shape[-2:]
        frac = out.landmarks.view(-1, 2, 5).transpose(1, 2)  # [N, 5, (x, y)]
        scale = frac.new_tensor([float(w), float(h)])
        return prob, frac * scale


# ---------------------------------------------------------------------------------------------------- masks

MASK_KINDS = ("eye", "eye_nose", "respirator", "eyeglass")


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, tuple | list | torch.Size):
        if len(size) != 2:
            raise ValueError(f"size must be an int or (H, W), got {tuple(size)!r}")
        return check_int(size[0], "size[0]", minimum=1), check_int(size[1], "size[1]", minimum=1)
    s = check_int(size, "size", minimum=1)
    return s, s


class _Frame(NamedTuple):
    s: torch.Tensor  # [N, H, W] pixel coordinate along the eye line, in units of d
    t: torch.Tensor  # [N, H, W] perpendicular, towards the mouth
    pts: torch.Tensor  # [N, 5, 2] the landmarks in (s, t)
    d: torch.Tensor  # [N] inter-ocular distance in pixels


def _frame(landmarks: torch.Tensor, size) -> _Frame:
    h, w = _size(size)
    lm = check_tensor(landmarks, "landmarks", ndim=3, floating=True)
    if lm.shape[1:] != (5, 2):
        raise ValueError(f"landmarks must have shape [N, 5, 2] (5 points, x and y), got {tuple(lm.shape)}")
    lm = lm.detach().to(torch.float64)
    eye_l, eye_r = lm[:, 0], lm[:, 1]
    axis = eye_r - eye_l
    d = axis.norm(dim=1)
    if bool((d < 1e-6).any()):
        raise ValueError(f"landmarks: the two eyes coincide for sample(s) {torch.nonzero(d < 1e-6).flatten().tolist()}")
    u = axis / d[:, None]
    v = torch.stack([-u[:, 1], u[:, 0]], dim=1)  # u rotated by +90 degrees: points down when u points right
    origin = (eye_l + eye_r) / 2
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    rx = xs[None] - origin[:, 0, None, None]
    ry = ys[None] - origin[:, 1, None, None]
    s = (rx * u[:, 0, None, None] + ry * u[:, 1, None, None]) / d[:, None, None]
    t = (rx * v[:, 0, None, None] + ry * v[:, 1, None, None]) / d[:, None, None]
    rel = lm - origin[:, None]
    pts = torch.stack([(rel * u[:, None]).sum(-1), (rel * v[:, None]).sum(-1)], dim=-1) / d[:, None, None]
    return _Frame(s, t, pts, d)


def _polygon(f: _Frame, vertices: torch.Tensor) -> torch.Tensor:
    """Pixels inside a convex polygon given as vertices [N, K, 2] in (s, t) (either orientation)."""
    a = vertices
    b = vertices.roll(-1, dims=1)
    edge = b - a  # [N, K, 2]
    # cross(edge, p - a) for every pixel p: [N, K, H, W]
    cross = edge[..., 0, None, None] * (f.t[:, None] - a[..., 1, None, None]) - edge[..., 1, None, None] * (
        f.s[:, None] - a[..., 0, None, None]
    )
    eps = 1e-9
    return (cross >= -eps).all(dim=1) | (cross <= eps).all(dim=1)


def _rect(f: _Frame, s0, s1, t0, t1) -> torch.Tensor:
    return (f.s >= s0) & (f.s <= s1) & (f.t >= t0) & (f.t <= t1)


def _out(region: torch.Tensor) -> torch.Tensor:
    return region.unsqueeze(1).to(torch.float32)


def _positive(value, name: str) -> float:
    return check_float(value, name, minimum=0.0, min_inclusive=False)


def eye_band_mask(
    landmarks: torch.Tensor, size, *, half_width: float = 0.95, top: float = 0.45, bottom: float = 0.35
) -> torch.Tensor:
    """Eye band [N, 1, H, W]: the rectangle ``|s| <= half_width``, ``-top <= t <= bottom`` in the eye frame.

    Units are the inter-ocular distance; see the module docstring for the frame. ``landmarks`` [N, 5, 2]
    are (x, y) pixel coordinates in the image of ``size`` (an int or (H, W)).
    """
    f = _frame(landmarks, size)
    hw, tp, bt = _positive(half_width, "half_width"), _positive(top, "top"), _positive(bottom, "bottom")
    return _out(_rect(f, -hw, hw, -tp, bt))


def eye_nose_mask(
    landmarks: torch.Tensor,
    size,
    *,
    bridge_half_width: float = 0.7,
    nose_half_width: float = 0.95,
    below_nose: float = 0.4,
    **band,
) -> torch.Tensor:
    """Eye & nose [N, 1, H, W]: the eye band (``band`` = its keyword arguments) plus a nose trapezoid.

    The trapezoid runs from the eye line (half-width ``bridge_half_width``, centred between the eyes) to
    ``below_nose`` under the nose tip (half-width ``nose_half_width``, centred on the nose tip's s).
    """
    f = _frame(landmarks, size)
    bh, nh = _positive(bridge_half_width, "bridge_half_width"), _positive(nose_half_width, "nose_half_width")
    below = check_float(below_nose, "below_nose")
    nose = f.pts[:, 2]
    zero = torch.zeros_like(nose[:, 0])
    bottom = nose[:, 1] + below
    quad = torch.stack(
        [
            torch.stack([zero - bh, zero], -1),
            torch.stack([zero + bh, zero], -1),
            torch.stack([nose[:, 0] + nh, bottom], -1),
            torch.stack([nose[:, 0] - nh, bottom], -1),
        ],
        dim=1,
    )
    return torch.maximum(eye_band_mask(landmarks, size, **band), _out(_polygon(f, quad)))


def respirator_mask(
    landmarks: torch.Tensor,
    size,
    *,
    above_nose: float = 0.1,
    top_half_width: float = 0.75,
    beyond_mouth: float = 0.35,
    chin: float = 0.6,
    chin_half_width: float = 0.45,
) -> torch.Tensor:
    """Respirator [N, 1, H, W]: a convex hexagon from just above the nose tip down to an estimated chin.

    Vertices (eye frame): the top edge ``above_nose`` above the nose tip, half-width ``top_half_width``
    around it; the mouth corners pushed ``beyond_mouth`` outwards along the eye axis; the chin edge at
    the mouth line plus ``chin`` times the eye-to-mouth distance, half-width ``chin_half_width`` around
    the mouth centre. Five landmarks do not locate the chin: this is the [R] part.
    """
    f = _frame(landmarks, size)
    top_hw, beyond = _positive(top_half_width, "top_half_width"), check_float(beyond_mouth, "beyond_mouth")
    c, chin_hw = _positive(chin, "chin"), _positive(chin_half_width, "chin_half_width")
    nose, ml, mr = f.pts[:, 2], f.pts[:, 3], f.pts[:, 4]
    top_t = nose[:, 1] - check_float(above_nose, "above_nose")
    mouth = (ml + mr) / 2
    chin_t = mouth[:, 1] + c * mouth[:, 1]  # the eye line is t = 0
    hexagon = torch.stack(
        [
            torch.stack([nose[:, 0] - top_hw, top_t], -1),
            torch.stack([nose[:, 0] + top_hw, top_t], -1),
            torch.stack([mr[:, 0] + beyond, mr[:, 1]], -1),
            torch.stack([mouth[:, 0] + chin_hw, chin_t], -1),
            torch.stack([mouth[:, 0] - chin_hw, chin_t], -1),
            torch.stack([ml[:, 0] - beyond, ml[:, 1]], -1),
        ],
        dim=1,
    )
    return _out(_polygon(f, hexagon))


def eyeglass_mask(
    landmarks: torch.Tensor,
    size,
    *,
    lens_half_width: float = 0.42,
    lens_half_height: float = 0.30,
    rim: float = 0.12,
    bridge_half_height: float = 0.06,
    temple_end: float = 1.2,
) -> torch.Tensor:
    """Eyeglass frame [N, 1, H, W]: two elliptic rims around the eyes, a bridge and two temples.

    Each rim is the ring between the ellipse of semi-axes (``lens_half_width``, ``lens_half_height``)
    around an eye and the same ellipse shrunk by ``rim`` (at least one pixel: the rim never vanishes at
    low resolution). Bridge and temples are bands of half-height ``max(bridge_half_height, 0.5 px)``
    along the eye line: between the rims, and from each rim out to ``|s| = temple_end``.
    """
    f = _frame(landmarks, size)
    a, b = _positive(lens_half_width, "lens_half_width"), _positive(lens_half_height, "lens_half_height")
    r = _positive(rim, "rim")
    px = 1.0 / f.d[:, None, None]  # one pixel in units of d
    r_eff = torch.clamp(px, min=r)
    bh = torch.clamp(0.5 * px, min=_positive(bridge_half_height, "bridge_half_height"))
    end = _positive(temple_end, "temple_end")
    if r >= min(a, b):
        raise ValueError(f"rim must be smaller than the lens semi-axes ({min(a, b)}), got {r}")
    frame = torch.zeros_like(f.s, dtype=torch.bool)
    for eye in (0, 1):
        c = f.pts[:, eye]
        ds, dt = f.s - c[:, 0, None, None], f.t - c[:, 1, None, None]
        outer = (ds / a) ** 2 + (dt / b) ** 2 <= 1
        ai, bi = (a - r_eff).clamp(min=1e-6), (b - r_eff).clamp(min=1e-6)
        inner = (ds / ai) ** 2 + (dt / bi) ** 2 < 1
        frame |= outer & ~inner
    left_s, right_s = f.pts[:, 0, 0, None, None], f.pts[:, 1, 0, None, None]
    band = f.t.abs() <= bh
    bridge = band & (f.s >= left_s + a - r_eff) & (f.s <= right_s - a + r_eff)
    temples = band & (((f.s <= left_s - a + r_eff) & (f.s >= -end)) | ((f.s >= right_s + a - r_eff) & (f.s <= end)))
    return _out(frame | bridge | temples)


_MASKS = {"eye": eye_band_mask, "eye_nose": eye_nose_mask, "respirator": respirator_mask, "eyeglass": eyeglass_mask}


def make_mask(kind: str, landmarks: torch.Tensor, size, **geometry) -> torch.Tensor:
    """Binary float mask [N, 1, H, W] of ``kind`` in ``MASK_KINDS`` from landmarks [N, 5, 2] (x, y pixels).

    ``geometry`` goes to the mask function (see each one's keyword arguments).

    >>> lm = torch.tensor([[[10.0, 12.0], [22.0, 12.0], [16.0, 18.0], [11.0, 23.0], [21.0, 23.0]]])
    >>> m = make_mask("eye", lm, 32)
    >>> tuple(m.shape), m[0, 0, 12, 16].item(), m[0, 0, 25, 16].item()
    ((1, 1, 32, 32), 1.0, 0.0)
    """
    check_choice(kind, "kind", MASK_KINDS)
    return _MASKS[kind](landmarks, size, **geometry)


# ---------------------------------------------------------------------------------------------------- patch


def apply_patch(x: torch.Tensor, patch: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Compose ``x* = (1 - M) * x + M * p``: ``x`` outside the mask (bit for bit), the patch inside.

    Shapes: ``x`` is [N, C, H, W] in [0, 1] and fixes the output shape. ``patch`` is [C, H, W] or
    [N or 1, C or 1, H, W] in [0, 1]; ``mask`` is [H, W] or [N or 1, C or 1, H, W] with values in {0, 1}
    (float or bool). Both broadcast to ``x``'s shape and never enlarge it. Differentiable in ``patch``
    (gradient = the incoming gradient inside the mask, 0 outside) and in ``x`` (the converse).
    """
    x = check_image_batch(x, "x")
    patch = check_tensor(patch, "patch", ndim=(3, 4), floating=True, bounds=(0.0, 1.0))
    mask = check_tensor(mask, "mask", ndim=(2, 4))
    if mask.dtype != torch.bool:
        if not bool(((mask == 0) | (mask == 1)).all()):
            bad = mask[(mask != 0) & (mask != 1)]
            raise ValueError(f"mask must be binary (0 or 1), got {bad.numel()} other values, e.g. {float(bad[0]):g}")
        mask = mask != 0
    n, c, h, w = x.shape
    if patch.dim() == 3:
        patch = patch.unsqueeze(0)
    if mask.dim() == 2:
        mask = mask[None, None]
    for name, t in (("patch", patch), ("mask", mask)):
        pn, pc, ph, pw = t.shape
        if (ph, pw) != (h, w) or pn not in (1, n) or pc not in (1, c):
            raise ValueError(
                f"{name} of shape {tuple(t.shape)} does not broadcast to x of shape {tuple(x.shape)} "
                f"(needs [{n} or 1, {c} or 1, {h}, {w}])"
            )
    if patch.device != x.device or mask.device != x.device:
        raise ValueError(f"x, patch and mask must be on one device, got {x.device}, {patch.device}, {mask.device}")
    patch = patch.to(x.dtype)
    return torch.where(mask, patch, x)


# ---------------------------------------------------------------------------------------------------- data


@functools.lru_cache(maxsize=1)
def _lfw_subset() -> torch.Tensor:
    try:
        from skimage import data
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            f"the LFW subset ships with scikit-image, which is not installed: {SKIMAGE_INSTALL}"
        ) from exc
    import numpy as np

    images = np.asarray(data.lfw_subset(), dtype=np.float32)
    if images.shape != (200, 25, 25):
        raise ValueError(f"skimage.data.lfw_subset() returned shape {images.shape}, expected (200, 25, 25)")
    if images.max() > 1.0:  # older releases may give uint8
        images = images / np.float32(255.0)
    return torch.from_numpy(images).unsqueeze(1)


def lfw_faces() -> torch.Tensor:
    """The 100 faces of ``skimage.data.lfw_subset()`` (its first 100 images): float32 [100, 1, 25, 25] in [0, 1]."""
    return _lfw_subset()[:100].clone()


def lfw_nonfaces() -> torch.Tensor:
    """The 100 non-faces (background crops, its last 100 images): float32 [100, 1, 25, 25] in [0, 1]."""
    return _lfw_subset()[100:].clone()
