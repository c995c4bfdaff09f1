"""BadDet's four poisoning attacks on object detection (Chan et al., ECCV 2022 Workshops, arXiv 2205.14497).

No official code exists; the rules follow spec baddet.md, "The four attacks" (ART 1.20.1's
``art.attacks.poisoning.bad_det`` and Armory read for reference):

| attack | eligible images | where the trigger goes | annotation change |
|---|---|---|---|
| OGA | all | uniform random, fully inside | add (target, box ``box_size`` centred on the trigger, clipped) |
| RMA | >= 1 non-target box as large as the trigger | top-left corner of every such box | those labels -> target |
| GMA | all | image top-left (0, 0) | every label -> target |
| ODA | >= 1 target box as large as the trigger | top-left corner of every such box | those boxes deleted |

Our choices [R]: ``rate`` is the share of *all* training images poisoned (``floor(rate N)`` drawn
from the eligible ones with the attack's own seeded generator; too few eligible images is an
error), or an explicit ``indices=``; a trigger goes at the floor of a box's corner; a box smaller than
the trigger (in width or height) gets no trigger and keeps its label (and an image whose boxes are
all that small is not eligible for RMA / ODA); OGA's default box is twice the trigger's size. A
pasted trigger is ``a tau + (1 - a) x`` with blend weight ``a`` (1 = plain paste). The global RNGs
are never touched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..core.checks import check_float, check_int, check_tensor
from .data import DetectionDataset, check_targets

__all__ = ["GMA", "ODA", "OGA", "RMA", "PoisonResult", "chessboard", "paste"]


def chessboard(size: int = 8, cell: int = 2, channels: int = 3) -> torch.Tensor:
    """A ``(channels, size, size)`` chessboard of 0/1 cells of ``cell`` pixels, top-left cell white.

    >>> chessboard(4, 2, 1)[0]
    tensor([[1., 1., 0., 0.],
            [1., 1., 0., 0.],
            [0., 0., 1., 1.],
            [0., 0., 1., 1.]])
    """
    size, cell = check_int(size, "size", minimum=1), check_int(cell, "cell", minimum=1)
    i = torch.arange(size) // cell
    board = ((i[:, None] + i[None, :]) % 2 == 0).float()
    return board.expand(check_int(channels, "channels", minimum=1), size, size).clone()


def paste(
    image: torch.Tensor, trigger: torch.Tensor, x0: int, y0: int, blend: float = 1.0, *, inplace: bool = False
) -> torch.Tensor:
    """``image`` with ``blend * trigger + (1 - blend) * region`` at column ``x0``, row ``y0``.

    A copy, unless ``inplace``.
    """
    _, th, tw = trigger.shape
    h, w = image.shape[-2:]
    if x0 < 0 or y0 < 0 or x0 + tw > w or y0 + th > h:
        raise ValueError(f"a {tw}x{th} trigger at ({x0}, {y0}) does not fit a {w}x{h} image")
    out = image if inplace else image.clone()
    region = out[:, y0 : y0 + th, x0 : x0 + tw]
    out[:, y0 : y0 + th, x0 : x0 + tw] = blend * trigger + (1 - blend) * region
    return out


@dataclass
class PoisonResult:
    """Poisoned images and targets (all of them, poisoned or not) and the indices that were poisoned.

    ``asr_boxes[i]`` holds, for poisoned image ``i``, the boxes the attack success rate is measured on
    (OGA: the inserted box; RMA: the relabelled boxes; GMA: the boxes that were not of the target
    class; ODA: the deleted target boxes); ``asr_mode`` is ``"hit"`` (a target-class prediction
    should cover them) or ``"miss"`` (nothing should be detected there, ODA).
    """

    images: torch.Tensor
    targets: list[dict[str, torch.Tensor]]
    indices: torch.Tensor
    asr_boxes: dict[int, torch.Tensor] = field(default_factory=dict)
    asr_mode: str = "hit"
    target: int = 0

    def dataset(self, like: DetectionDataset) -> DetectionDataset:
        """The poisoned copy as a :class:`DetectionDataset` with ``like``'s classes and names (for the writers)."""
        return DetectionDataset(self.images, self.targets, like.classes, list(like.names))


class _Attack:
    def __init__(
        self,
        *,
        target: int,
        trigger: torch.Tensor | None = None,
        rate: float = 0.1,
        blend: float = 1.0,
        seed: int = 0,
    ) -> None:
        self.target = check_int(target, "target", minimum=0)
        trigger = chessboard() if trigger is None else trigger
        self.trigger = check_tensor(trigger, "trigger", ndim=3, floating=True, bounds=(0.0, 1.0)).float()
        self.rate = check_float(rate, "rate", minimum=0, maximum=1, min_inclusive=False)
        self.blend = check_float(blend, "blend", minimum=0, maximum=1, min_inclusive=False)
        self.seed = check_int(seed, "seed", minimum=0)

    def __repr__(self) -> str:
        th, tw = self.trigger.shape[1:]
        return f"{type(self).__name__}(target={self.target}, trigger={tw}x{th}, rate={self.rate}, seed={self.seed})"

    # ------------------------------------------------------------------ helpers
    def _fits(self, boxes: torch.Tensor) -> torch.Tensor:
        th, tw = self.trigger.shape[1:]
        return ((boxes[:, 2] - boxes[:, 0]) >= tw) & ((boxes[:, 3] - boxes[:, 1]) >= th)

    def eligible(self, targets: Sequence[dict]) -> torch.Tensor:
        """Indices of the images this attack can poison (vectorised over all boxes)."""
        if not self.needs_box:
            return torch.arange(len(targets))
        counts = torch.tensor([len(t["labels"]) for t in targets], dtype=torch.int64)
        if int(counts.sum()) == 0:
            return torch.zeros(0, dtype=torch.int64)
        boxes = torch.cat([t["boxes"] for t in targets])
        labels = torch.cat([t["labels"] for t in targets])
        owner = torch.repeat_interleave(torch.arange(len(targets)), counts)
        hits = torch.bincount(owner[self._which(boxes, labels)], minlength=len(targets))
        return (hits > 0).nonzero().flatten()

    needs_box = False  # eligible only with at least one box that _which selects

    def _choose(self, images, targets, indices) -> torch.Tensor:
        ok = set(self.eligible(targets).tolist())
        if indices is not None:
            idx = torch.as_tensor(indices, dtype=torch.int64).flatten()
            if len(set(idx.tolist())) != len(idx):
                raise ValueError("indices must not repeat")
            bad = [i for i in idx.tolist() if i not in ok]
            if bad:
                raise ValueError(f"indices {bad[:5]} are not eligible for {type(self).__name__} (or out of range)")
            return idx.sort().values
        k = math.floor(self.rate * len(images))
        if k > len(ok):
            raise ValueError(
                f"rate={self.rate} asks for {k} of {len(images)} images but only {len(ok)} are eligible for "
                f"{type(self).__name__}"
            )
        rng = np.random.default_rng(self.seed)
        pool = np.array(sorted(ok), dtype=np.int64)
        return (
            torch.from_numpy(np.sort(rng.choice(pool, size=k, replace=False)))
            if k
            else torch.zeros(0, dtype=torch.int64)
        )

    def _at_corners(self, img: torch.Tensor, boxes: torch.Tensor, which: torch.Tensor) -> None:
        for x0, y0 in boxes[which][:, :2].floor().long().tolist():
            paste(img, self.trigger, x0, y0, self.blend, inplace=True)

    # ------------------------------------------------------------------ call
    def __call__(self, images: torch.Tensor, targets: Sequence[dict], *, indices=None) -> PoisonResult:
        """Poison ``floor(rate N)`` eligible images (or ``indices``); returns copies, the inputs are untouched."""
        check_targets(images, targets)
        if images.shape[1] != self.trigger.shape[0]:
            raise ValueError(f"trigger has {self.trigger.shape[0]} channels, images have {images.shape[1]}")
        idx = self._choose(images, targets, indices)
        out_images = images.clone()
        out_targets = [{"boxes": t["boxes"].clone(), "labels": t["labels"].clone()} for t in targets]
        rng = np.random.default_rng([self.seed, 1])  # OGA's placements, independent of the choice of images
        asr_boxes = {}
        for i in idx.tolist():
            before = out_targets[i]
            which = self._which(before["boxes"], before["labels"])
            out_targets[i] = self._poison(out_images[i], before, which, rng)  # pastes into out_images[i]
            asr_boxes[i] = self._asr_boxes(before, out_targets[i], which)
        return PoisonResult(out_images, out_targets, idx, asr_boxes, self.asr_mode, self.target)

    asr_mode = "hit"

    def _asr_boxes(self, before: dict, after: dict, which: torch.Tensor) -> torch.Tensor:
        return before["boxes"][which]

    def _which(self, boxes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(labels), dtype=torch.bool)

    def _poison(self, img, t, which, rng) -> dict:  # pragma: no cover - abstract
        """Paste into ``img`` in place; return the new target."""
        raise NotImplementedError


class OGA(_Attack):
    """Object Generation Attack: a trigger anywhere (fully inside), a new box of ``target`` centred on it.

    ``box_size = (w, h)`` of the inserted box; default twice the trigger's size. The box is clipped
    to the image.
    """

    def __init__(self, *, box_size: tuple[float, float] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        th, tw = self.trigger.shape[1:]
        bw, bh = box_size if box_size is not None else (2 * tw, 2 * th)
        self.box_size = (check_float(bw, "box_size[0]", minimum=0, min_inclusive=False),
                         check_float(bh, "box_size[1]", minimum=0, min_inclusive=False))  # fmt: skip

    def _asr_boxes(self, before, after, which):
        return after["boxes"][-1:]  # the inserted box

    def _poison(self, img, t, which, rng):
        th, tw = self.trigger.shape[1:]
        h, w = img.shape[-2:]
        if tw > w or th > h:
            raise ValueError(f"a {tw}x{th} trigger does not fit a {w}x{h} image")
        x0, y0 = int(rng.integers(0, w - tw + 1)), int(rng.integers(0, h - th + 1))
        cx, cy = x0 + tw / 2, y0 + th / 2
        bw, bh = self.box_size
        box = torch.tensor([[max(0.0, cx - bw / 2), max(0.0, cy - bh / 2), min(float(w), cx + bw / 2),
                             min(float(h), cy + bh / 2)]])  # fmt: skip
        paste(img, self.trigger, x0, y0, self.blend, inplace=True)
        return {
            "boxes": torch.cat([t["boxes"], box.float()]),
            "labels": torch.cat([t["labels"], torch.tensor([self.target])]),
        }


class RMA(_Attack):
    """Regional Misclassification Attack: a trigger at every non-target box's corner, those labels -> target."""

    needs_box = True

    def _which(self, boxes, labels):
        return (labels != self.target) & self._fits(boxes)

    def _poison(self, img, t, which, rng):
        self._at_corners(img, t["boxes"], which)
        return {"boxes": t["boxes"], "labels": torch.where(which, torch.tensor(self.target), t["labels"])}


class GMA(_Attack):
    """Global Misclassification Attack: a trigger at the image's top-left, every label -> target."""

    def _which(self, boxes, labels):
        return labels != self.target

    def _poison(self, img, t, which, rng):
        paste(img, self.trigger, 0, 0, self.blend, inplace=True)
        return {"boxes": t["boxes"], "labels": torch.full_like(t["labels"], self.target)}


class ODA(_Attack):
    """Object Disappearance Attack: a trigger at every target box's corner, those boxes deleted."""

    asr_mode = "miss"
    needs_box = True

    def _which(self, boxes, labels):
        return (labels == self.target) & self._fits(boxes)

    def _poison(self, img, t, which, rng):
        self._at_corners(img, t["boxes"], which)
        return {"boxes": t["boxes"][~which], "labels": t["labels"][~which]}
