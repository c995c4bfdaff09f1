"""PaRO: partial-redundancy sharded data parallelism on ``torch.distributed``, with HO-Ring collectives.

* :class:`PaRO` (``engine``) wraps a module like DDP for any of the 14 valid ``p g os`` words
  (:mod:`.words`); :mod:`.checkpoint` saves sharded or consolidated safetensors checkpoints.
* :mod:`.collectives`: flat, hierarchical and HO-Ring all-gather / reduce-scatter / all-reduce on
  point-to-point ops, with their schedules; :mod:`.netmodel` the alpha-beta link.
* :mod:`.emulator`: a virtual clock for a slow inter-group link on one machine (it also times DDP,
  FSDP2 and HSDP); :mod:`.bench` the side-by-side benchmark.
* :mod:`.costmodel`: memory and traffic formulas, step times, the cluster simulator and the advisor
  behind ``bastion train advise``.
* :mod:`.train`: ``torchrun -m bastion.distributed.train`` on a tiny GPT (:mod:`.gpt`).
"""

from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .engine import PaRO, default_units
from .netmodel import Link
from .topology import Topology, TopologySpec
from .words import MAIN_WORDS, VALID_WORDS, equivalent_word, parse_word

__all__ = [
    "MAIN_WORDS",
    "VALID_WORDS",
    "Link",
    "PaRO",
    "Topology",
    "TopologySpec",
    "default_units",
    "equivalent_word",
    "latest_checkpoint",
    "load_checkpoint",
    "parse_word",
    "save_checkpoint",
]
