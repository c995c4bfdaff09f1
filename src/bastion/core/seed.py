"""One way to seed everything, and explicit generators for library code.

Library code never draws from the global NumPy or torch RNG: it takes ``seed=`` (or a
``torch.Generator``) and builds its own generator with :func:`make_generator`. ``seed_everything`` is
for scripts and tests that also want Python's, NumPy's and torch's global state fixed.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["make_generator", "seed_everything"]

_MAX_SEED = 2**63 - 1


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} ({seed!r})")
    seed = int(seed)
    if not 0 <= seed <= _MAX_SEED:
        raise ValueError(f"seed must be in [0, 2**63 - 1], got {seed}")
    return seed


def seed_everything(seed: int) -> int:
    """Seed Python's ``random``, NumPy's global RNG and torch (CPU and CUDA).

    Parameters
    ----------
    seed:
        A non-negative integer below ``2**63``.

    Returns
    -------
    int
        The seed, so that it can be recorded next to results.

    Examples
    --------
    >>> seed_everything(0)
    0
    >>> a = torch.rand(2); _ = seed_everything(0); bool((a == torch.rand(2)).all())
    True
    """
    seed = _check_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seeding the global RNG is this function's job
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    return seed


def make_generator(seed: int | torch.Generator, device: str | torch.device = "cpu") -> torch.Generator:
    """Return a ``torch.Generator`` seeded with ``seed`` (or ``seed`` itself if it is one).

    Examples
    --------
    >>> g1, g2 = make_generator(3), make_generator(3)
    >>> bool((torch.rand(4, generator=g1) == torch.rand(4, generator=g2)).all())
    True
    """
    if isinstance(seed, torch.Generator):
        return seed
    g = torch.Generator(device=device)
    g.manual_seed(_check_seed(seed))
    return g
