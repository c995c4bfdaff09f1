"""Name -> object registries, so that the CLI can list and build every family by name (timm's pattern).

A domain package registers its entries at import time::

    from bastion.core.registry import ATTACKS

    @ATTACKS.register("hsja")
    class HSJA: ...

and ``ATTACKS.create("hsja", **kwargs)`` builds one. Tests are parametrised over ``Registry.names()``
so that every new entry gets the shared smoke and bad-input tests.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

__all__ = ["ATTACKS", "DATASETS", "MODELS", "REPRODUCTIONS", "Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """A named mapping from strings to classes or factories.

    Parameters
    ----------
    kind:
        What the entries are ("attack", "zoo model", ...), used in error messages.

    Examples
    --------
    >>> shapes = Registry("shape")
    >>> @shapes.register("square")
    ... def square(side=1.0):
    ...     return side * side
    >>> shapes.create("square", side=3.0)
    9.0
    >>> shapes.names()
    ['square']
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None) -> Any:
        """Register ``obj`` under ``name``; usable as a decorator when ``obj`` is omitted."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")

        def add(entry: T) -> T:
            if name in self._entries and self._entries[name] is not entry:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = entry
            return entry

        return add if obj is None else add(obj)

    def get(self, name: str) -> T:
        """Return the entry called ``name``; the error lists close matches and every known name."""
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(str(name), self._entries, n=3)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            known = ", ".join(sorted(self._entries)) or "(none registered)"
            raise KeyError(f"unknown {self.kind} {name!r}.{hint} Known: {known}") from None

    def create(self, name: str, /, **kwargs: Any) -> Any:
        """Call the entry called ``name`` with ``kwargs``."""
        factory = self.get(name)
        if not callable(factory):
            raise TypeError(f"{self.kind} {name!r} is not callable")
        return factory(**kwargs)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry(kind={self.kind!r}, names={self.names()!r})"


#: Datasets by name (:mod:`bastion.data`).
DATASETS: Registry[Callable[..., Any]] = Registry("dataset")
#: Zoo models by name (:mod:`bastion.zoo`).
MODELS: Registry[Any] = Registry("zoo model")
#: Attacks by name (decision-based and transfer attacks).
ATTACKS: Registry[Any] = Registry("attack")
#: Reproductions by name (:mod:`bastion.reproduce`).
REPRODUCTIONS: Registry[Any] = Registry("reproduction")
