"""Scaled-down reproductions, one module per paper; ``bastion reproduce NAME`` runs one.

Importing this package registers every reproduction in :data:`bastion.core.REPRODUCTIONS`.
"""

from . import antm2c as _antm2c  # noqa: F401  (registers "antm2c")
from . import baddet as _baddet  # noqa: F401  (registers "baddet")
from . import boundary as _boundary  # noqa: F401  (registers "boundary")
from . import face_patch as _face_patch  # noqa: F401  (registers "face-patch")
from . import otgnet as _otgnet  # noqa: F401  (registers "otgnet")
from . import paro as _paro  # noqa: F401  (registers "paro")
from . import sgld as _sgld  # noqa: F401  (registers "sgld")
from . import uap as _uap  # noqa: F401  (registers "uap")
from . import zoo as _zoo  # noqa: F401  (registers "zoo")
from .base import Claim, Reproduction, ReproductionResult, claim, run_reproduction
from .report import SYSTEMS, write_report

__all__ = [
    "SYSTEMS",
    "Claim",
    "Reproduction",
    "ReproductionResult",
    "claim",
    "run_reproduction",
    "write_report",
]
