"""Transfer attacks (issue #9): MI/DI/TI gradient transfer, face recognition patches, universal perturbations.

Landed so far: the composable gradient-transfer core (:mod:`.core`; bit-equal to torchattacks' MIFGSM / DIFGSM),
the face tools (:mod:`.faces`: MTCNN O-Net landmarks, patch masks from 5 landmarks, ``apply_patch``) and a
pure-PyTorch port of dlib's face-recognition ResNet (:mod:`.dlib_port`, equal to dlib to 4e-7). The patch
attacks on a generative manifold and the data-free universal perturbations are still to come (issue #9).
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

__all__ = [
    "DLIB_THRESHOLD",
    "GOALS",
    "MASK_KINDS",
    "NORMS",
    "DlibFaceResNet",
    "ONet",
    "TransferAttack",
    "TransferResult",
    "apply_patch",
    "cosine_loss",
    "cross_entropy_loss",
    "gaussian_kernel",
    "input_diversity",
    "lfw_faces",
    "lfw_nonfaces",
    "make_mask",
    "momentum_update",
    "parse_dlib_dat",
    "project",
    "to_chip",
    "translation_invariant",
]
