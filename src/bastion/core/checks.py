"""Input validation helpers: every message names the argument, what was expected and what came.

These raise ``TypeError`` for the wrong kind of object and ``ValueError`` for a right kind with a bad
value. Nothing here clips or casts silently.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Sequence
from typing import Any

import torch

__all__ = [
    "check_choice",
    "check_float",
    "check_image_batch",
    "check_int",
    "check_labels",
    "check_tensor",
]


def check_int(value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return ``value`` as an ``int`` after checking its type and range.

    >>> check_int(3, "budget", minimum=1)
    3
    >>> check_int(0, "budget", minimum=1)
    Traceback (most recent call last):
    ValueError: budget must be >= 1, got 0
    """
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got bool ({value!r})")
    try:
        value = operator.index(value)  # int, NumPy integers, one-element integer tensors
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})") from None
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return int(value)


def check_float(
    value: Any,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    min_inclusive: bool = True,
    max_inclusive: bool = True,
) -> float:
    """Return ``value`` as a finite ``float`` inside the given range.

    >>> check_float(0.5, "rate", minimum=0, maximum=1)
    0.5
    >>> check_float(float("nan"), "rate")
    Traceback (most recent call last):
    ValueError: rate must be a finite number, got nan
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = float(value.item())
        else:
            try:
                value = float(value)  # numpy scalars
            except (TypeError, ValueError):
                raise TypeError(f"{name} must be a number, got {type(value).__name__} ({value!r})") from None
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    if minimum is not None and (value < minimum or (not min_inclusive and value == minimum)):
        op = ">=" if min_inclusive else ">"
        raise ValueError(f"{name} must be {op} {minimum}, got {value}")
    if maximum is not None and (value > maximum or (not max_inclusive and value == maximum)):
        op = "<=" if max_inclusive else "<"
        raise ValueError(f"{name} must be {op} {maximum}, got {value}")
    return value


def check_choice(value: Any, name: str, choices: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``.

    >>> check_choice("l2", "norm", ("l2", "linf"))
    'l2'
    >>> check_choice("l1", "norm", ("l2", "linf"))
    Traceback (most recent call last):
    ValueError: norm must be one of 'l2', 'linf'; got 'l1'
    """
    choices = tuple(choices)
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {allowed}; got {value!r}")
    return value


def check_tensor(
    x: Any,
    name: str,
    *,
    ndim: int | Sequence[int] | None = None,
    floating: bool | None = None,
    finite: bool = True,
    bounds: tuple[float, float] | None = None,
    allow_empty: bool = False,
) -> torch.Tensor:
    """Check a tensor's type, rank, dtype, finiteness and value range; return it unchanged.

    Parameters
    ----------
    x:
        The object to check.
    name:
        The argument's name, used in messages.
    ndim:
        Required number of dimensions (or a sequence of allowed ones).
    floating:
        ``True`` requires a floating dtype, ``False`` an integer one, ``None`` accepts both.
    finite:
        Reject NaN and infinities (floating tensors only).
    bounds:
        ``(low, high)``: every value must lie in the closed interval.
    allow_empty:
        Accept a tensor with zero elements.

    >>> check_tensor(torch.zeros(2, 3), "x", ndim=2).shape
    torch.Size([2, 3])
    >>> check_tensor(torch.tensor([0.5, 2.0]), "x", bounds=(0, 1))
    Traceback (most recent call last):
    ValueError: x must lie in [0, 1]; got values in [0.5, 2] (1 of 2 out of range)
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.dim() not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise ValueError(f"{name} must have {want} dimensions, got shape {tuple(x.shape)}")
    if not allow_empty and x.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    if floating is True and not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
    if floating is False and (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool):
        raise TypeError(f"{name} must have an integer dtype, got {x.dtype}")
    if x.numel() == 0:
        return x
    if finite and bounds is not None and x.is_floating_point():
        # fast path (one pass; a hot path of every BlackBox query): NaN fails both comparisons and
        # +-inf fails isfinite, so anything unusual falls through to the checks that explain it
        lo, hi = (float(v) for v in torch.aminmax(x.detach()))
        if math.isfinite(lo) and math.isfinite(hi) and bounds[0] <= lo and hi <= bounds[1]:
            return x
    if finite and x.is_floating_point():
        bad = ~torch.isfinite(x)
        if bool(bad.any()):
            n_nan = int(torch.isnan(x).sum())
            raise ValueError(f"{name} contains {int(bad.sum())} non-finite values ({n_nan} NaN) out of {x.numel()}")
    if bounds is not None:
        low, high = bounds
        lo, hi = x.min(), x.max()
        if bool(lo < low) or bool(hi > high):
            n_out = int(((x < low) | (x > high)).sum())
            raise ValueError(
                f"{name} must lie in [{low:g}, {high:g}]; got values in [{float(lo):g}, {float(hi):g}] "
                f"({n_out} of {x.numel()} out of range)"
            )
    return x


def check_image_batch(
    x: Any,
    name: str = "images",
    *,
    shape: Sequence[int] | None = None,
    bounds: tuple[float, float] | None = (0.0, 1.0),
) -> torch.Tensor:
    """Check an NCHW floating image batch, optionally against a per-sample ``shape`` (C, H, W).

    >>> check_image_batch(torch.rand(4, 1, 28, 28), shape=(1, 28, 28)).shape
    torch.Size([4, 1, 28, 28])
    >>> check_image_batch(torch.rand(4, 28, 28))
    Traceback (most recent call last):
    ValueError: images must have 4 dimensions, got shape (4, 28, 28)
    """
    x = check_tensor(x, name, ndim=4, floating=True, bounds=bounds)
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"{name} must have per-sample shape {tuple(shape)} (N, C, H, W), got {tuple(x.shape)}")
    return x


def check_labels(y: Any, name: str, *, n: int | None = None, num_classes: int | None = None) -> torch.Tensor:
    """Check a 1-D integer label tensor of length ``n`` with values in ``[0, num_classes)``.

    >>> check_labels(torch.tensor([0, 2]), "labels", n=2, num_classes=3).tolist()
    [0, 2]
    """
    y = check_tensor(y, name, ndim=1, floating=False, allow_empty=n == 0)
    if n is not None and y.shape[0] != n:
        raise ValueError(f"{name} must have length {n} (one label per sample), got {y.shape[0]}")
    if num_classes is not None and y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"{name} must lie in [0, {num_classes - 1}], got values in [{int(y.min())}, {int(y.max())}]")
    return y
