"""Shared mechanics every system uses. Imports nothing from other bastion packages."""

from .blackbox import BlackBox, BudgetExhausted, QueryResult
from .checks import check_choice, check_float, check_image_batch, check_int, check_labels, check_tensor
from .progress import progress
from .registry import ATTACKS, DATASETS, MODELS, REPRODUCTIONS, Registry
from .seed import make_generator, seed_everything

__all__ = [
    "ATTACKS",
    "DATASETS",
    "MODELS",
    "REPRODUCTIONS",
    "BlackBox",
    "BudgetExhausted",
    "QueryResult",
    "Registry",
    "check_choice",
    "check_float",
    "check_image_batch",
    "check_int",
    "check_labels",
    "check_tensor",
    "make_generator",
    "progress",
    "seed_everything",
]
