"""The one progress-bar helper (tqdm): off in the API by default, on in the CLI, silent off a TTY."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

__all__ = ["progress"]

T = TypeVar("T")


def progress(
    iterable: Iterable[T],
    *,
    total: int | None = None,
    desc: str | None = None,
    quiet: bool = True,
    unit: str = "it",
) -> Iterator[T]:
    """Wrap ``iterable`` in a progress bar unless ``quiet`` or stderr is not a terminal.

    Parameters
    ----------
    iterable:
        What to iterate over.
    total:
        Its length when ``len(iterable)`` is not defined.
    desc:
        A short label shown left of the bar.
    quiet:
        ``True`` (the library default) shows nothing; the CLI passes ``quiet=False``.
    unit:
        The unit shown in the rate.

    Examples
    --------
    >>> list(progress(range(3), desc="demo"))
    [0, 1, 2]
    """
    disable = quiet or not sys.stderr.isatty()
    return iter(tqdm(iterable, total=total, desc=desc, disable=disable, unit=unit, leave=False))
