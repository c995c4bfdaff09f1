"""Transfer attacks (issue #9): MI/DI/TI gradient transfer, face-recognition patches, universal perturbations.

- :mod:`.core`: the composable gradient-transfer core (I-FGSM, MI, DI, TI under a mask, ensembles; bit-equal to
  torchattacks' MIFGSM / DIFGSM).
- :mod:`.faces`: MTCNN O-Net landmarks, patch masks from 5 landmarks, ``apply_patch``, skimage's LFW faces;
  :mod:`.dlib_port`: a pure-PyTorch port of dlib's face-recognition ResNet (equal to dlib to 4e-7).
- :mod:`.patch`: TAP-MIM / DIM / TIDIM patches, FAR and best-accuracy thresholds, ``evaluate_patch_attack``;
  :mod:`.generative`: GenAP (the patch on a generator's manifold) with eigenface (PCA) and conv-VAE generators.
- :mod:`.synthfaces` (procedural faces, differentiable renderer) and :mod:`.face_zoo` (Track S embedders, Track R
  students, pairs, thresholds, the dlib target) for ``bastion reproduce face-patch``.
- :mod:`.uap`: data-free universal perturbations (divergence / logit / KL / GD-UAP energy / FFF activation;
  range, jigsaw, class-impression, public or no prior), the SGD-UAP and DeepFool-UAP baselines, ``fooling_rate``
  and ``transfer_matrix``; :mod:`.uap_zoo`: EfficientNet-Lite0/1/2 targets, ImageNet views, the MNIST-5k
  two-owner zoo, for ``bastion reproduce uap``.
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
from .uap import (
    OBJECTIVES,
    PRIORS,
    DataFreeUAP,
    UAPResult,
    deepfool,
    deepfool_uap,
    fff,
    fooling_rate,
    gd_uap,
    sgd_uap,
    sign_noise,
    transfer_matrix,
)

__all__ = [
    "DLIB_THRESHOLD",
    "GOALS",
    "MASK_KINDS",
    "NORMS",
    "OBJECTIVES",
    "PRIORS",
    "ConvVAE",
    "DataFreeUAP",
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
    "UAPResult",
    "apply_patch",
    "best_accuracy_threshold",
    "cosine_loss",
    "cross_entropy_loss",
    "deepfool",
    "deepfool_uap",
    "evaluate_patch_attack",
    "fff",
    "fit_vae",
    "fooling_rate",
    "gaussian_kernel",
    "gd_uap",
    "input_diversity",
    "invert",
    "lfw_faces",
    "lfw_nonfaces",
    "make_mask",
    "momentum_update",
    "pair_scores",
    "parse_dlib_dat",
    "project",
    "sgd_uap",
    "sign_noise",
    "threshold_at_far",
    "to_chip",
    "transfer_matrix",
    "translation_invariant",
    "white_black_gap",
]
