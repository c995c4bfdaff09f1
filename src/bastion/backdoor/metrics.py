"""Detection metrics. mAP comes from torchmetrics (COCO 101-point AP), never computed by hand.

``map50`` wraps ``torchmetrics.detection.MeanAveragePrecision(iou_thresholds=[0.5],
class_metrics=True, backend=...)`` with either COCO backend (``"faster_coco_eval"``, default, or
``"pycocotools"``); classes without ground truth come back as -1 and are left out of the per-class
dict. Spec baddet.md's hand case (one image, two boxes, predictions 0.9 hit, 0.8 miss, 0.7 hit) gives
(51 + 50 * 2/3) / 101 = 0.834983 on both.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..core.checks import check_choice

__all__ = ["attack_success_rate", "map50"]


def map50(
    predictions: Sequence[dict], targets: Sequence[dict], *, backend: str = "faster_coco_eval"
) -> tuple[float, dict[int, float]]:
    """mAP@50 over ``targets`` (``boxes``, ``labels``) and ``predictions`` (plus ``scores``); and AP per class.

    >>> gt = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]), "labels": torch.tensor([1, 1])}]
    >>> pr = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [40, 40, 50, 50], [20, 20, 30, 30]]),
    ...        "scores": torch.tensor([0.9, 0.8, 0.7]), "labels": torch.tensor([1, 1, 1])}]
    >>> abs(map50(pr, gt)[0] - (51 + 50 * 2 / 3) / 101) < 1e-6  # 0.834983...
    True
    """
    from torchmetrics.detection import MeanAveragePrecision

    backend = check_choice(backend, "backend", ("faster_coco_eval", "pycocotools"))
    if len(predictions) != len(targets):
        raise ValueError(f"predictions and targets must pair up, got {len(predictions)} and {len(targets)}")
    for i, p in enumerate(predictions):
        if not {"boxes", "scores", "labels"} <= set(p):
            raise ValueError(f"prediction {i} must have 'boxes', 'scores' and 'labels'")
    metric = MeanAveragePrecision(iou_thresholds=[0.5], class_metrics=True, backend=backend)
    metric.update(
        [{k: p[k].detach().cpu() for k in ("boxes", "scores", "labels")} for p in predictions],
        [{"boxes": t["boxes"].detach().cpu(), "labels": t["labels"].detach().cpu()} for t in targets],
    )
    out = metric.compute()
    classes = out["classes"].flatten().tolist()
    per_class = out["map_per_class"].flatten().tolist()
    ap = {int(c): float(v) for c, v in zip(classes, per_class, strict=True) if v >= 0}
    return float(out["map_50"]), ap


def attack_success_rate(
    predictions: Sequence[dict],
    result,
    *,
    score_threshold: float = 0.5,
    iou_threshold: float = 0.5,
) -> float:
    """Share of ``result.asr_boxes`` (over objects, all poisoned images) on which the attack succeeded.

    Armory's definitions (spec baddet.md, "Metrics"), IoU > ``iou_threshold`` and score >
    ``score_threshold``: ``"hit"`` attacks (OGA, RMA, GMA) succeed on a box covered by a prediction
    of the target class; ``"miss"`` (ODA) on a box that no prediction of any class covers.
    ``predictions`` has one dict per image of ``result.images``. Evaluate the clean model on the
    same images for its baseline rate. Returns NaN when there is no box to measure.
    """
    from torchvision.ops import box_iou

    from ..core.checks import check_float

    score_threshold = check_float(score_threshold, "score_threshold", minimum=0, maximum=1)
    iou_threshold = check_float(iou_threshold, "iou_threshold", minimum=0, maximum=1)
    if len(predictions) != len(result.images):
        raise ValueError(f"predictions must have one dict per image ({len(result.images)}), got {len(predictions)}")
    hits = total = 0
    for i, boxes in result.asr_boxes.items():
        if len(boxes) == 0:
            continue
        p = predictions[i]
        keep = p["scores"] > score_threshold
        if result.asr_mode == "hit":
            keep &= p["labels"] == result.target
        pred = p["boxes"][keep]
        covered = (
            (box_iou(boxes, pred) > iou_threshold).any(1) if len(pred) else torch.zeros(len(boxes), dtype=torch.bool)
        )
        hits += int(covered.sum()) if result.asr_mode == "hit" else int((~covered).sum())
        total += len(boxes)
    return hits / total if total else float("nan")
