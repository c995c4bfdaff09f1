"""Two small detectors in torchvision's convention, and one training loop for both.

``FasterRCNNTiny``: torchvision's ``FasterRCNN`` class with a 6-conv stride-8 backbone (spec baddet.md,
"Measured here": about 0.6 M parameters), ``min_size = max_size`` = the image side so that small
images are not resized to 800 px, anchors of 8-24 px, 300 / 100 RPN proposals and 64 RPN and RoI
samples per image. Labels are shifted by one inside (torchvision reserves 0 for background) and
shifted back on output, so both detectors take and return the data set's 0-based classes. Its
``class_probs`` is the spec's recipe: the RoI head's softmax over C + 1 classes (background in
column 0) at given, fixed boxes. Trained with SGD, batch 16, one-cycle to lr 0.04 for 600 steps on the
64-px scenes: benign mAP@50 0.976 in 135 s on one thread (the spec's lr 0.02 gave 0.893 at 600 steps;
resizing to 128 px instead costs about 4x the time).

``CenterNetTiny``, the one-stage centre-heatmap detector (CenterNet-style):

Spec baddet.md, "Measured here": stride 4, about 0.3 M parameters, 6-9 ms per 64-px training image
on one CPU thread. A global-context branch (max-pooled features through two 1x1 convolutions, added
to every cell) lets a pattern anywhere in the image reach every cell: without it GMA's corner trigger
was out of the receptive field of most objects (ASR 0.013 after 300 steps). Heads on the stride-4
feature map: a class heatmap (sigmoid, the penalty-reduced
focal loss of CenterNet, Zhou et al. 2019, with Gaussian targets of radius from the box size), the
box size in pixels and the sub-cell offset of the centre (L1 at centre cells). Decoding keeps the
3x3 local maxima of the heatmap (top ``max_detections``), score = peak value, box = centre +- size/2.

It follows torchvision's detection convention (a list of images in, a list of ``boxes`` / ``scores``
/ ``labels`` dicts out; labels here are the data set's 0-based classes, no background) and has
``class_probs(images, boxes)`` for Detector Cleanse: the class scores at each box's centre cell,
normalised to sum to one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign

from ..core.checks import check_float, check_int
from ..core.progress import progress

__all__ = ["CenterNetTiny", "FasterRCNNTiny", "load_detector", "save_detector", "train_detector"]


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class CenterNetTiny(nn.Module):
    """Centre-heatmap detector for ``num_classes`` classes on small RGB images (stride 4)."""

    stride = 4

    def __init__(self, num_classes: int, *, width: int = 48, max_detections: int = 20) -> None:
        super().__init__()
        self.num_classes = check_int(num_classes, "num_classes", minimum=1)
        self.max_detections = check_int(max_detections, "max_detections", minimum=1)
        self.config = {"num_classes": num_classes, "width": check_int(width, "width", minimum=8),
                       "max_detections": max_detections}  # fmt: skip
        w = width
        self.body = nn.Sequential(
            _block(3, w // 2, 1), _block(w // 2, w, 2), _block(w, w, 1), _block(w, 2 * w, 2),
            _block(2 * w, 2 * w, 1), _block(2 * w, 2 * w, 1),
            nn.Conv2d(2 * w, 2 * w, 3, 1, 2, dilation=2), nn.ReLU(inplace=True),
        )  # fmt: skip
        # global context: a pattern anywhere in the image (GMA's corner trigger) must reach every cell,
        # beyond the convolutions' receptive field; max-pooled features, added back everywhere
        self.context = nn.Sequential(nn.Conv2d(2 * w, 2 * w, 1), nn.ReLU(inplace=True), nn.Conv2d(2 * w, 2 * w, 1))
        self.heat = nn.Sequential(nn.Conv2d(2 * w, w, 3, 1, 1), nn.ReLU(inplace=True), nn.Conv2d(w, num_classes, 1))
        self.box = nn.Sequential(nn.Conv2d(2 * w, w, 3, 1, 1), nn.ReLU(inplace=True), nn.Conv2d(w, 4, 1))
        nn.init.constant_(self.heat[-1].bias, -2.19)  # prior 0.1, as CenterNet

    def heads(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.body(images)
        f = f + self.context(F.adaptive_max_pool2d(f, 1))
        return self.heat(f), self.box(f)  # logits (N, C, h, w); (size w, size h, offset x, offset y)

    def forward(self, images: torch.Tensor | Sequence[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        x = images if isinstance(images, torch.Tensor) else torch.stack(list(images))
        heat, box = self.heads(x)
        prob = heat.sigmoid()
        peaks = prob * (F.max_pool2d(prob, 3, 1, 1) == prob)
        n, c, h, w = prob.shape
        scores, idx = peaks.flatten(1).topk(min(self.max_detections, c * h * w))
        labels = idx // (h * w)
        cell = idx % (h * w)
        cy, cx = (cell // w).float(), (cell % w).float()
        out = []
        for i in range(n):
            bw = box[i, 0].flatten()[cell[i]].clamp_min(0)
            bh = box[i, 1].flatten()[cell[i]].clamp_min(0)
            ox, oy = box[i, 2].flatten()[cell[i]], box[i, 3].flatten()[cell[i]]
            px, py = (cx[i] + ox) * self.stride, (cy[i] + oy) * self.stride
            boxes = torch.stack([px - bw / 2, py - bh / 2, px + bw / 2, py + bh / 2], 1)
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, x.shape[-1])
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, x.shape[-2])
            out.append({"boxes": boxes, "scores": scores[i], "labels": labels[i]})
        return out

    def class_probs(self, images: torch.Tensor, boxes: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Class scores at each box's centre cell, normalised to one: ``[(K_i, C), ...]``."""
        heat, _ = self.heads(images)
        prob = heat.sigmoid()
        h, w = prob.shape[-2:]
        out = []
        for i, b in enumerate(boxes):
            cx = ((b[:, 0] + b[:, 2]) / 2 / self.stride).long().clamp(0, w - 1)
            cy = ((b[:, 1] + b[:, 3]) / 2 / self.stride).long().clamp(0, h - 1)
            p = prob[i][:, cy, cx].T  # (K, C)
            out.append(p / p.sum(1, keepdim=True).clamp_min(1e-12))
        return out

    # ------------------------------------------------------------------ training targets and loss
    def loss(self, images: torch.Tensor, targets: Sequence[dict]) -> torch.Tensor:
        heat, box = self.heads(images)
        h, w = heat.shape[-2:]
        gt = torch.zeros_like(heat)
        ys, xs = torch.arange(h, dtype=torch.float32)[:, None], torch.arange(w, dtype=torch.float32)[None, :]
        reg_idx, reg_val = [], []
        for i, t in enumerate(targets):
            for b, lab in zip(t["boxes"].tolist(), t["labels"].tolist(), strict=True):
                bw, bh = b[2] - b[0], b[3] - b[1]
                fx, fy = (b[0] + b[2]) / 2 / self.stride, (b[1] + b[3]) / 2 / self.stride
                ix, iy = min(w - 1, int(fx)), min(h - 1, int(fy))
                sigma = max(0.5, 0.15 * max(bw, bh) / self.stride)
                g = torch.exp(-((xs - ix) ** 2 + (ys - iy) ** 2) / (2 * sigma**2))
                gt[i, lab] = torch.maximum(gt[i, lab], g)
                reg_idx.append((i, iy, ix))
                reg_val.append([bw, bh, fx - ix, fy - iy])
        p = heat.sigmoid().clamp(1e-4, 1 - 1e-4)
        pos = gt.eq(1).float()
        focal = -(pos * (1 - p) ** 2 * p.log() + (1 - pos) * (1 - gt) ** 4 * p**2 * (1 - p).log()).sum()
        loss = focal / pos.sum().clamp_min(1)
        if reg_idx:
            ii, yy, xx = (torch.tensor(v) for v in zip(*reg_idx, strict=True))
            pred = box[ii, :, yy, xx]  # (K, 4)
            val = torch.tensor(reg_val)
            loss = loss + 0.1 * F.l1_loss(pred[:, :2], val[:, :2]) + F.l1_loss(pred[:, 2:], val[:, 2:])
        return loss


class FasterRCNNTiny(nn.Module):
    """torchvision ``FasterRCNN`` for ``num_classes`` classes (0-based, no background) on small images.

    ``image_size`` is the side the transform keeps (``min_size = max_size``); the backbone has six 3x3
    convolutions, three of stride 2, ending in ``width`` channels.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        image_size: int = 64,
        width: int = 64,
        anchor_sizes: Sequence[int] = (8, 12, 16, 24),
        max_detections: int = 20,
    ) -> None:
        super().__init__()
        self.num_classes = check_int(num_classes, "num_classes", minimum=1)
        image_size = check_int(image_size, "image_size", minimum=16)
        width = check_int(width, "width", minimum=8)
        if not anchor_sizes or any(int(a) <= 0 for a in anchor_sizes):
            raise ValueError(f"anchor_sizes must be positive pixel sizes, got {anchor_sizes!r}")
        self.config = {"num_classes": num_classes, "image_size": image_size, "width": width,
                       "anchor_sizes": [int(a) for a in anchor_sizes], "max_detections": max_detections}  # fmt: skip
        body = nn.Sequential(
            _block(3, 24, 2), _block(24, 48, 1), _block(48, 64, 2), _block(64, 64, 1),
            _block(64, 96, 2), _block(96, width, 1),
        )  # fmt: skip
        body.out_channels = width
        self.model = FasterRCNN(
            body, num_classes=None, min_size=image_size, max_size=image_size,
            rpn_anchor_generator=AnchorGenerator(sizes=(tuple(anchor_sizes),), aspect_ratios=((0.5, 1.0, 2.0),)),
            box_roi_pool=MultiScaleRoIAlign(["0"], output_size=7, sampling_ratio=2),
            box_head=TwoMLPHead(width * 7 * 7, 128), box_predictor=FastRCNNPredictor(128, num_classes + 1),
            rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=100,
            rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=100,
            rpn_batch_size_per_image=64, box_batch_size_per_image=64,
            box_detections_per_img=check_int(max_detections, "max_detections", minimum=1),
        )  # fmt: skip

    @staticmethod
    def _images(images: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return list(images.unbind(0)) if isinstance(images, torch.Tensor) else list(images)

    def forward(self, images: torch.Tensor | Sequence[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        if self.training:
            raise RuntimeError("FasterRCNNTiny in train mode computes losses: call .loss(images, targets) or .eval()")
        out = self.model(self._images(images))
        return [{"boxes": o["boxes"], "scores": o["scores"], "labels": o["labels"] - 1} for o in out]

    def loss(self, images: torch.Tensor, targets: Sequence[dict]) -> torch.Tensor:
        """Sum of torchvision's four losses (RPN objectness and box, RoI class and box)."""
        shifted = [{"boxes": t["boxes"].float(), "labels": t["labels"].long() + 1} for t in targets]
        losses = self.model(self._images(images), shifted)
        return sum(losses.values())

    def class_probs(self, images: torch.Tensor, boxes: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """RoI softmax over background + classes at fixed ``boxes`` (image pixels): ``[(K_i, C + 1), ...]``."""
        m = self.model
        imgs = self._images(images)
        t, _ = m.transform(imgs)
        scaled = []
        for img, b, (h, w) in zip(imgs, boxes, t.image_sizes, strict=True):
            ratio = torch.tensor([w / img.shape[-1], h / img.shape[-2]] * 2, dtype=torch.float32, device=b.device)
            scaled.append(b.float().reshape(-1, 4) * ratio)
        feats = m.backbone(t.tensors)
        feats = {"0": feats} if isinstance(feats, torch.Tensor) else feats
        r = m.roi_heads.box_roi_pool(feats, scaled, t.image_sizes)
        logits, _ = m.roi_heads.box_predictor(m.roi_heads.box_head(r))
        return list(logits.softmax(-1).split([len(b) for b in scaled]))


DETECTORS = {"onestage": CenterNetTiny, "faster-rcnn": FasterRCNNTiny}


def save_detector(model: CenterNetTiny | FasterRCNNTiny, path: str | Path, **meta) -> Path:
    """Write ``path/model.safetensors`` (weights, no pickle) and ``path/model.json`` (kind, config, ``meta``)."""
    from safetensors.torch import save_file

    from ..core.report import write_json

    kind = next((k for k, v in DETECTORS.items() if type(model) is v), None)
    if kind is None:
        raise TypeError(f"model must be a CenterNetTiny or FasterRCNNTiny, got {type(model).__name__}")
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
    write_json(out / "model.json", {"detector": kind, "config": model.config} | meta)
    return out


def load_detector(path: str | Path) -> tuple[CenterNetTiny | FasterRCNNTiny, dict]:
    """Read what :func:`save_detector` wrote; returns the model (eval mode) and its JSON metadata."""
    import json

    from safetensors.torch import load_file

    folder = Path(path)
    if not (folder / "model.json").is_file() or not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"{folder} must hold model.json and model.safetensors (bastion backdoor train --out)")
    try:
        meta = json.loads((folder / "model.json").read_text())
        cls = DETECTORS[meta["detector"]]
        model = cls(**meta["config"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{folder / 'model.json'} is not a bastion detector description: {exc}") from exc
    try:
        model.load_state_dict(load_file(str(folder / "model.safetensors")))
    except Exception as exc:  # SafetensorError (corrupt file), RuntimeError (shapes unlike the JSON's config)
        raise ValueError(f"{folder / 'model.safetensors'} does not match {folder / 'model.json'}: {exc}") from exc
    return model.eval(), meta


def _hflip(boxes: torch.Tensor, width: int) -> torch.Tensor:
    return torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1)


def train_detector(
    model: CenterNetTiny | FasterRCNNTiny,
    images: torch.Tensor,
    targets: Sequence[dict],
    *,
    steps: int = 600,
    batch_size: int = 32,
    lr: float = 3e-3,
    optimizer: str = "adamw",
    flips: bool = True,
    seed: int = 0,
    quiet: bool = True,
) -> list[float]:
    """Train any detector with a ``loss(images, targets)`` method; returns the loss per step.

    ``optimizer="adamw"`` (weight decay 1e-4; the one-stage recipe: batch 32, lr 3e-3) or ``"sgd"``
    (momentum 0.9, weight decay 1e-4; the Faster R-CNN recipe: batch 16, lr 0.04), both with a
    one-cycle schedule peaking at ``lr``; random horizontal flips of image and boxes.
    """
    steps = check_int(steps, "steps", minimum=1)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    lr = check_float(lr, "lr", minimum=0, min_inclusive=False)
    if optimizer not in ("adamw", "sgd"):
        raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {optimizer!r}")
    if len(images) != len(targets) or len(images) == 0:
        raise ValueError(
            f"images and targets must be non-empty and of equal length, got {len(images)} and {len(targets)}"
        )
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = (torch.optim.AdamW(params, lr=lr, weight_decay=1e-4) if optimizer == "adamw"
           else torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4))  # fmt: skip
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    model.train()
    losses = []
    w = images.shape[-1]
    for _ in progress(range(steps), desc="train detector", quiet=quiet):
        idx = torch.randint(0, len(images), (batch_size,), generator=gen)
        x = images[idx].clone()
        tg = [targets[int(i)] for i in idx]
        if flips:
            flip = torch.rand(batch_size, generator=gen) < 0.5
            x[flip] = x[flip].flip(-1)
            tg = [{"boxes": _hflip(t["boxes"], w) if f else t["boxes"], "labels": t["labels"]}
                  for t, f in zip(tg, flip.tolist(), strict=True)]  # fmt: skip
        loss = model.loss(x, tg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"detector training diverged at step {len(losses)} (loss {losses[-1]})")
    model.eval()
    return losses
