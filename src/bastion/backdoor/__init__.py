"""Backdoor attacks on object detection (BadDet, ECCV 2022 Workshops): data, triggers, the four attacks, metrics.

Detection data in one type with COCO / VOC / YOLO readers and writers and a procedural scene
generator; the chessboard trigger and OGA, RMA, GMA, ODA; mAP@50 through torchmetrics and the attack
success rate; Detector Cleanse (fixed-box and matched variants, overlay over or around the box, any
feature pool) for any detector with a ``class_probs`` adapter; two detectors in torchvision's
convention (a small torchvision Faster R-CNN and a tiny one-stage centre-heatmap detector) with one
training loop and safetensors save / load. CLI: ``bastion backdoor poison|train|evaluate|cleanse``;
reproduction: ``bastion reproduce baddet``.
"""

from .attacks import GMA, ODA, OGA, RMA, PoisonResult, chessboard, paste
from .cleanse import CleanseResult, DetectorCleanse, background_crops, object_crops
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
from .detectors import CenterNetTiny, FasterRCNNTiny, load_detector, save_detector, train_detector
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
    "FasterRCNNTiny",
    "PoisonResult",
    "attack_success_rate",
    "background_crops",
    "check_targets",
    "chessboard",
    "load_detector",
    "map50",
    "object_crops",
    "paste",
    "read_coco",
    "read_voc",
    "read_yolo",
    "save_detector",
    "scenes",
    "train_detector",
    "write_coco",
    "write_voc",
    "write_yolo",
]
