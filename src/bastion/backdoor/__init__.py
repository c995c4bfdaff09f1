"""Backdoor attacks on object detection (BadDet, ECCV 2022 Workshops): data, triggers, the four attacks, metrics.

Landed so far (issue #8, partial): detection data in one type with COCO / VOC / YOLO readers and
writers and a procedural scene generator; the chessboard trigger and OGA, RMA, GMA, ODA; mAP@50
through torchmetrics. Detectors, ASR, Detector Cleanse, the CLI and the reproduction are to come.
"""

from .attacks import GMA, ODA, OGA, RMA, PoisonResult, chessboard, paste
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
from .metrics import map50

__all__ = [
    "GMA",
    "ODA",
    "OGA",
    "RMA",
    "SCENE_CLASSES",
    "DetectionDataset",
    "PoisonResult",
    "check_targets",
    "chessboard",
    "map50",
    "paste",
    "read_coco",
    "read_voc",
    "read_yolo",
    "scenes",
    "write_coco",
    "write_voc",
    "write_yolo",
]
