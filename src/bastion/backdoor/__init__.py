"""Backdoor attacks on object detection (BadDet, ECCV 2022 Workshops): data, triggers, the four attacks, metrics.

Landed so far (issue #8, partial): detection data in one type with COCO / VOC / YOLO readers and
writers and a procedural scene generator; the chessboard trigger and OGA, RMA, GMA, ODA; mAP@50
through torchmetrics and the attack success rate; Detector Cleanse for any detector with a
``class_probs`` adapter; the tiny one-stage centre-heatmap detector and its training loop. The
Faster R-CNN adapter, the CLI and the reproduction are to come.
"""

from .attacks import GMA, ODA, OGA, RMA, PoisonResult, chessboard, paste
from .cleanse import CleanseResult, DetectorCleanse, object_crops
from .data import (
    SCENE_CLASSES,
    DetectionDataset,
    check_targets,
    read_coco,
    read_voc,
    read_yolo,
    scenes,
    write_coco,
    write_voc,
    write_yolo,
)
from .detectors import CenterNetTiny, train_detector
from .metrics import attack_success_rate, map50

__all__ = [
    "GMA",
    "ODA",
    "OGA",
    "RMA",
    "SCENE_CLASSES",
    "CenterNetTiny",
    "CleanseResult",
    "DetectionDataset",
    "DetectorCleanse",
    "PoisonResult",
    "attack_success_rate",
    "check_targets",
    "chessboard",
    "map50",
    "object_crops",
    "paste",
    "read_coco",
    "read_voc",
    "read_yolo",
    "scenes",
    "train_detector",
    "write_coco",
    "write_voc",
    "write_yolo",
]
