"""Transfer attacks (issue #9): MI/DI/TI gradient transfer, face recognition patches, universal perturbations.

Landed so far: the composable gradient-transfer core (:mod:`.core`; bit-equal to torchattacks' MIFGSM / DIFGSM),
the face tools (:mod:`.faces`: MTCNN O-Net landmarks, patch masks from 5 landmarks, ``apply_patch``), a
pure-PyTorch port of dlib's face-recognition ResNet (:mod:`.dlib_port`, equal to dlib to 4e-7), and TAP-MIM /
DIM / TIDIM patches with FAR and best-accuracy thresholds and their evaluation (:mod:`.patch`). The patch
attack on a generative manifold and the data-free universal perturbations are still to come (issue #9).
"""

from .core import (
    GOALS,
    NORMS,
    TransferAttack,
    TransferResult,
    cosine_loss,
    cross_entropy_loss,
    gaussian_kernel,
    input_diversity,
    momentum_update,
    project,
    translation_invariant,
)
from .dlib_port import DLIB_THRESHOLD, DlibFaceResNet, parse_dlib_dat, to_chip
from .faces import MASK_KINDS, ONet, apply_patch, lfw_faces, lfw_nonfaces, make_mask
from .generative import ConvVAE, GenerativePatchAttack, GenerativePatchResult, PCAGenerator, fit_vae, invert
from .patch import (
    PatchEvaluation,
    PatchResult,
    Threshold,
    TransferPatchAttack,
    best_accuracy_threshold,
    evaluate_patch_attack,
    pair_scores,
    threshold_at_far,
    white_black_gap,
)

__all__ = [
    "DLIB_THRESHOLD",
    "GOALS",
    "MASK_KINDS",
    "NORMS",
    "ConvVAE",
    "DlibFaceResNet",
    "GenerativePatchAttack",
    "GenerativePatchResult",
    "ONet",
    "PCAGenerator",
    "PatchEvaluation",
    "PatchResult",
    "Threshold",
    "TransferAttack",
    "TransferPatchAttack",
    "TransferResult",
    "apply_patch",
    "best_accuracy_threshold",
    "cosine_loss",
    "cross_entropy_loss",
    "evaluate_patch_attack",
    "fit_vae",
    "gaussian_kernel",
    "input_diversity",
    "invert",
    "lfw_faces",
    "lfw_nonfaces",
    "make_mask",
    "momentum_update",
    "pair_scores",
    "parse_dlib_dat",
    "project",
    "threshold_at_far",
    "to_chip",
    "translation_invariant",
    "white_black_gap",
]
