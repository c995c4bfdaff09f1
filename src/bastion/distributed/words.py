"""PaRO strategy words: ``p g os``, each ``N`` (replicated), ``I`` (sharded in the group) or ``G`` (global).

A word lists the granularity of the parameters, the gradients and the optimizer states, in that order
(the official DeepSpeed fork, PR deepspeedai/DeepSpeed#5588). ``NNG``/``NGG``/``GGG`` are ZeRO-1/2/3,
``NNN`` is DDP and ``III`` is MiCS/HSDP.

Validity rule (our reconstruction; true of every word the official code ships): a rank owns the optimizer
states of what it updates, so ``d(os) >= max(d(p), d(g))`` with ``d(N)=1 < d(I)=m < d(G)=n``. Parameters
and gradients are otherwise free: ``ING`` (params finer than grads) is meant for PEFT
(deepspeedai/DeepSpeed#5607). The rule leaves 14 of the 27 words.

>>> parse_word("nig")
Word(p='N', g='I', os='G')
>>> len(VALID_WORDS)
14
>>> equivalent_word("IIG", group_size=1, world_size=8)
'NNG'
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

__all__ = ["LEVELS", "MAIN_WORDS", "VALID_WORDS", "ZERO_WORDS", "Word", "degree", "equivalent_word", "parse_word"]

LEVELS = "NIG"
_RANK = {"N": 0, "I": 1, "G": 2}


class Word(NamedTuple):
    """The granularity of parameters, gradients and optimizer states."""

    p: str
    g: str
    os: str

    def __str__(self) -> str:
        return self.p + self.g + self.os


def _valid(p: str, g: str, os: str) -> bool:
    return _RANK[os] >= max(_RANK[p], _RANK[g])


VALID_WORDS: tuple[str, ...] = tuple("".join(w) for w in itertools.product(LEVELS, repeat=3) if _valid(*w))
#: The official ``paro_strategy`` list plus DDP and MiCS/HSDP: the words the benchmark compares.
MAIN_WORDS: tuple[str, ...] = ("NNN", "NNG", "NGG", "GGG", "III", "NII", "NIG", "IIG", "IGG", "ING")
#: Stock ZeRO stages 1-3 (run with ``collective="flat"`` they are DeepSpeed's ZeRO).
ZERO_WORDS = {"zero1": "NNG", "zero2": "NGG", "zero3": "GGG"}


def parse_word(word: object) -> Word:
    """Parse and validate a strategy word (case-insensitive).

    Raises ``ValueError`` naming ``strategy`` for a word outside ``{N,I,G}^3`` or one that breaks
    ``d(os) >= max(d(p), d(g))`` (``GGN``, ``NGI``...).
    """
    if not isinstance(word, str):
        raise TypeError(f"strategy must be a 3-letter string such as 'NIG', got {type(word).__name__}")
    w = word.strip().upper()
    if len(w) != 3 or any(c not in LEVELS for c in w):
        raise ValueError(f"strategy must be 3 letters from N, I, G (params, grads, optimizer states), got {word!r}")
    if not _valid(*w):
        raise ValueError(
            f"strategy {w!r} is not valid: optimizer states must be at least as sharded as params and grads "
            f"(d(os) >= max(d(p), d(g)) with N < I < G); valid words: {', '.join(VALID_WORDS)}"
        )
    return Word(w[0], w[1], w[2])


def degree(level: str, group_size: int, world_size: int) -> int:
    """How many ways a state of this level is split: ``N`` 1, ``I`` m, ``G`` n."""
    return {"N": 1, "I": group_size, "G": world_size}[level]


def equivalent_word(word: str, group_size: int, world_size: int) -> str:
    """The word that actually runs: with one rank per group ``I`` is ``N``; with one group ``I`` is ``G``."""
    w = str(parse_word(word))
    if group_size == 1:
        w = w.replace("I", "N")
    elif group_size == world_size:
        w = w.replace("I", "G")
    return w
