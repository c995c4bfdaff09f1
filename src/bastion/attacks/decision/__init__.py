"""Decision-based (hard-label) black-box attacks on an HSJA core.

``HSJA`` is the engine; QEBA's spatial / frequency / intrinsic variants are the same engine given a
different probe sampler. Registered in :data:`bastion.core.ATTACKS` as ``hsja``, ``qeba-s``,
``qeba-f`` and ``qeba-i`` (the last needs a basis); NonLinear-BA as ``nlba-ae``, ``nlba-vae`` and
``nlba-gan`` and PSBA as ``psba`` (these need ``generator=``, e.g. from :func:`zoo_generator`, and
PSBA a ``scale=``, e.g. from :func:`psba_scale_search`). Baselines: ``boundary`` (Brendel et al.) and
``sign-opt`` (Cheng et al.).
"""

from ...core.registry import ATTACKS
from .boundary_attack import BoundaryAttack
from .engine import HSJA, AttackResult
from .generators import AEGenerator, GANGenerator, ProgressiveGenerator, VAEGenerator, train_generator, zoo_generator
from .psba import ScaleSearch, nonlinear_ba, psba, psba_scale_search
from .samplers import (
    BasisSampler,
    DCTSampler,
    FullSampler,
    GeneratorSampler,
    ProgressiveSampler,
    SpatialSampler,
    dct_matrix,
)
from .sign_opt import SignOPT
from .subspaces import pca_basis, reference_gradients, zoo_gradient_basis, zoo_reference_gradients


def qeba(*, subspace: str = "spatial", ratio: int = 2, basis=None, **kwargs) -> HSJA:
    """QEBA (Li et al., CVPR 2020): HSJA with probes from a ``"spatial"``, ``"frequency"`` or ``"intrinsic"`` subspace.

    ``ratio`` is the spatial / frequency reduction; ``basis`` (k, d) is required for ``"intrinsic"``.
    """
    if subspace == "spatial":
        sampler = SpatialSampler(ratio=ratio)
    elif subspace == "frequency":
        sampler = DCTSampler(ratio=ratio)
    elif subspace == "intrinsic":
        if basis is None:
            raise ValueError("subspace='intrinsic' needs basis= (k, d), e.g. a PCA of reference-model gradients")
        sampler = BasisSampler(basis)
    else:
        raise ValueError(f"subspace must be one of 'spatial', 'frequency', 'intrinsic'; got {subspace!r}")
    return HSJA(sampler=sampler, **kwargs)


ATTACKS.register("hsja", HSJA)
ATTACKS.register("boundary", BoundaryAttack)
ATTACKS.register("qeba-s", lambda **kw: qeba(subspace="spatial", **kw))
ATTACKS.register("qeba-f", lambda **kw: qeba(subspace="frequency", **kw))
ATTACKS.register("qeba-i", lambda **kw: qeba(subspace="intrinsic", **kw))
for _kind in ("ae", "vae", "gan"):
    ATTACKS.register(f"nlba-{_kind}", nonlinear_ba)
ATTACKS.register("psba", psba)
ATTACKS.register("sign-opt", SignOPT)

__all__ = [
    "HSJA",
    "AEGenerator",
    "AttackResult",
    "BasisSampler",
    "BoundaryAttack",
    "DCTSampler",
    "FullSampler",
    "GANGenerator",
    "GeneratorSampler",
    "ProgressiveGenerator",
    "ProgressiveSampler",
    "ScaleSearch",
    "SignOPT",
    "SpatialSampler",
    "VAEGenerator",
    "dct_matrix",
    "nonlinear_ba",
    "pca_basis",
    "psba",
    "psba_scale_search",
    "qeba",
    "reference_gradients",
    "train_generator",
    "zoo_generator",
    "zoo_gradient_basis",
    "zoo_reference_gradients",
]
