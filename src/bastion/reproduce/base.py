"""The contract every reproduction follows: claims computed from measurements, results on disk.

A reproduction is a registered object with ``name``, ``system``, ``title`` and a
``run(out_dir, quick=..., seed=..., quiet=...)`` method returning a :class:`ReproductionResult`.
:func:`run_reproduction` times it, stamps the environment and writes ``DIR/NAME/result.json``.

Each :class:`Claim` states one sentence, the figures it rests on (``measured``) and ``holds``, which
is *computed* from ``measured`` by a predicate -- never typed in. The figures of the paper (or of the
issue that set the target) go in ``reference``, labelled as theirs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..core.registry import REPRODUCTIONS
from ..core.report import environment, to_jsonable, write_json

__all__ = ["Claim", "Reproduction", "ReproductionResult", "claim", "run_reproduction"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claim:
    """One claim, the measured figures it rests on, and whether it holds on our data."""

    claim: str
    measured: dict[str, Any]
    holds: bool
    reference: dict[str, Any] = field(default_factory=dict)
    note: str = ""


def claim(
    text: str,
    measured: dict[str, Any],
    predicate: Callable[[dict[str, Any]], bool],
    *,
    reference: dict[str, Any] | None = None,
    note: str = "",
) -> Claim:
    """Build a :class:`Claim` whose ``holds`` is ``predicate(measured)``.

    >>> c = claim("accuracy is at least 0.9", {"accuracy": 0.93}, lambda m: m["accuracy"] >= 0.9)
    >>> c.holds
    True
    """
    return Claim(text, dict(measured), bool(predicate(measured)), dict(reference or {}), note)


@dataclass
class ReproductionResult:
    """What a reproduction returns and writes as ``result.json``."""

    name: str
    system: str
    title: str
    quick: bool
    seed: int
    config: dict[str, Any]
    tables: dict[str, list[dict[str, Any]]]
    claims: list[Claim]
    figures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0
    environment: dict[str, Any] = field(default_factory=dict)

    @property
    def all_hold(self) -> bool:
        return all(c.holds for c in self.claims)

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self)


class Reproduction(Protocol):
    name: str
    system: str
    title: str

    def run(self, out_dir: Path, *, quick: bool, seed: int, quiet: bool) -> ReproductionResult: ...


def run_reproduction(
    name: str, out: str | Path = "report", *, quick: bool = False, seed: int = 0, quiet: bool = True
) -> ReproductionResult:
    """Run reproduction ``name``; write ``out/name/result.json`` and its figures; return the result."""
    repro = REPRODUCTIONS.get(name)
    out_dir = Path(out) / name
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result = repro.run(out_dir, quick=quick, seed=seed, quiet=quiet)
    result.wall_seconds = time.perf_counter() - start
    result.environment = environment()
    write_json(out_dir / "result.json", result.to_dict())
    log.info(
        "reproduction %s: %d/%d claims hold (%.1f s)",
        name,
        sum(c.holds for c in result.claims),
        len(result.claims),
        result.wall_seconds,
    )
    return result
