"""PaRO: one generic engine for every valid ``p g os`` word, wrapping a module like DDP.

The training loop does not change: ``A`` forward/backward passes, then :meth:`PaRO.step`::

    engine = PaRO(model, strategy="NIG", group_size=4, optimizer=partial(torch.optim.AdamW, lr=1e-3),
                  grad_accum_steps=4)
    for micro in range(4):
        engine(x[micro]).loss.backward()      # any loss; each rank's micro-batch mean
    engine.step()                             # update, rebuild params, zero grads

How it works (``../shared/specs/paro.md``; [code] = the official DeepSpeed fork, PR #5588):

* **Units.** The module is cut into units (by default each child module, with ``ModuleList``/
  ``ModuleDict`` opened; parameters left directly on a module, or shared between units, go to the root
  unit). A unit's parameters of one dtype are flattened into a buffer padded to a multiple of ``n``
  (trainable and frozen parameters in separate buffers: frozen ones have no grads or optimizer states).
  Rank ``(k, l)`` owns intra shard ``l`` = ``[l P/m, (l+1) P/m)`` and global chunk ``l g + k`` =
  sub-chunk ``k`` of it [code]. So a global reduce-scatter is an intra RS then an inter RS, a global
  all-gather an inter AG then an intra AG; the flat world collective permutes its chunk list.
* **Parameters** live at ``p`` granularity. For ``p != N`` a unit is all-gathered before its forward,
  freed after it, and all-gathered again when the first gradient reaches its outputs; the gathered
  values go into the storage autograd saved (``untyped_storage().resize_()``), never a new tensor.
* **Gradients** of each micro-step are reduced to ``g`` granularity and accumulated as soon as the
  unit's backward is done (``N``: kept whole, no communication; ``I``: intra RS; ``G``: global RS). At
  the boundary the sum is brought to ``os`` granularity (``os=N``: global AR; ``os=I``: intra RS if
  ``g=N``, then inter AR; ``os=G``: global RS / inter RS / nothing for ``g=N/I/G``), divided by
  ``n A`` (the mean over all ranks' micro-batches), clipped over unique shards and handed to the
  user's optimizer, whose parameters are this rank's ``os`` shards (views of the parameter storage in
  full precision; an fp32 master copy under ``mixed_precision="bf16"``). Then ``p`` is rebuilt
  (``p=N``: AG intra/global from ``os=I/G``; ``p=I, os=G``: AG inter).
* With ``p, g`` in ``{N, I}`` the slow inter-group collectives run once per step, not per micro-step,
  and parameter gathers stay inside the group: the point of the paper.

Deviations from the official code, on purpose: gradients are divided once at the boundary (the
official code pre-divides by the world size); ``NII``'s inter all-reduce runs in the gradient dtype
(the official one uses fp32, twice the bytes); overflow/clip norms are reduced over all ranks (the
official IGG reduces its overflow flag inside the node only). Communication does not overlap compute
(gloo offers none; the spec's cost model keeps an overlap term for GPUs).

``collective`` picks how *global* collectives run: ``"hier"`` (PaRO-CC: intra + inter process groups),
``"flat"`` (one world ring, stock ZeRO) or ``"ho_ring"`` (our point-to-point HO-Ring,
:mod:`bastion.distributed.collectives`).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.autograd import Variable
from torch.utils._pytree import tree_flatten

from .topology import Topology
from .words import Word, equivalent_word, parse_word

__all__ = ["PaRO", "default_units"]

log = logging.getLogger(__name__)

_COLLECTIVES = ("hier", "flat", "ho_ring")
_PRECISIONS = {None: None, "fp32": None, "bf16": torch.bfloat16}


def default_units(module: nn.Module) -> list[nn.Module]:
    """Each child module that holds parameters, opening ``ModuleList``/``ModuleDict`` containers."""
    units: list[nn.Module] = []

    def visit(m: nn.Module) -> None:
        for child in m.children():
            if type(child) in (nn.ModuleList, nn.ModuleDict):  # containers have no forward of their own
                visit(child)
            elif any(True for _ in child.parameters()):
                units.append(child)

    visit(module)
    return units


# --------------------------------------------------------------------------- communication
class _Comm:
    """Issues the engine's collectives on a topology and counts the bytes each moves per rank.

    Ring accounting: an all-gather or reduce-scatter over ``q`` ranks of a full tensor of ``X`` bytes
    moves ``(q-1)/q X`` per rank, an all-reduce twice that. Classes: ``intra`` (one group), ``inter``
    (one rank per group), ``cross`` (a flat world ring spanning groups).
    """

    def __init__(self, topo: Topology, collective: str) -> None:
        self.topo = topo
        self.collective = collective
        self.phase = "init"
        self.log: list[tuple[str, str, str, int]] = []  # (phase, class, op, bytes per rank)
        n, m, g = topo.n, topo.m, topo.g
        # rank r holds global chunk perm[r] = l*g + k
        self.perm = [(r % m) * g + r // m for r in range(n)]
        self.world_class = "intra" if g == 1 else "inter" if m == 1 else "cross"

    def _count(self, cls: str, op: str, full_bytes: int, q: int) -> None:
        if q <= 1:
            return
        moved = (q - 1) * full_bytes // q
        if op == "all_reduce":
            moved *= 2
        self.log.append((self.phase, cls, op, moved))

    # -- one level
    def ag(self, scope: str, out: torch.Tensor, inp: torch.Tensor) -> None:
        group, q = self._group(scope)
        if q == 1:
            out.copy_(inp)
            return
        self._count(scope, "all_gather", out.numel() * out.element_size(), q)
        dist.all_gather_single(out, inp, group=group)

    def rs(self, scope: str, out: torch.Tensor, inp: torch.Tensor) -> None:
        group, q = self._group(scope)
        if q == 1:
            out.copy_(inp)
            return
        self._count(scope, "reduce_scatter", inp.numel() * inp.element_size(), q)
        dist.reduce_scatter_single(out, inp, group=group)

    def ar(self, scope: str, t: torch.Tensor) -> None:
        group, q = self._group(scope)
        if q == 1:
            return
        self._count(scope, "all_reduce", t.numel() * t.element_size(), q)
        dist.all_reduce(t, group=group)

    def _group(self, scope: str) -> tuple[Any, int]:
        if scope == "intra":
            return self.topo.intra, self.topo.m
        if scope == "inter":
            return self.topo.inter, self.topo.g
        raise AssertionError(scope)

    # -- global, in the chunk layout (rank k*m+l holds chunk l*g+k)
    def ag_glob(self, out: torch.Tensor, inp: torch.Tensor) -> None:
        topo = self.topo
        size = inp.numel()
        if self.collective == "hier" or topo.g == 1 or topo.m == 1:
            shard = out[topo.l * size * topo.g : (topo.l + 1) * size * topo.g]
            self.ag("inter", shard, inp)
            self.ag("intra", out, shard.clone() if topo.m > 1 else shard)
            return
        if self.collective == "flat":
            self._count(self.world_class, "all_gather", out.numel() * out.element_size(), topo.n)
            chunks = list(out.split(size))
            dist.all_gather([chunks[c] for c in self.perm], inp, group=topo.world)
            return
        from . import collectives

        tmp = torch.empty_like(out)
        collectives.all_gather(tmp, inp, topo, algorithm="ho_ring")
        self._count_ring("all_gather", out)
        src = tmp.view(topo.n, size)
        out.view(topo.n, size)[torch.tensor(self.perm, device=out.device)] = src

    def rs_glob(self, out: torch.Tensor, inp: torch.Tensor) -> None:
        topo = self.topo
        size = out.numel()
        if self.collective == "hier" or topo.g == 1 or topo.m == 1:
            shard = torch.empty(size * topo.g, dtype=inp.dtype, device=inp.device)
            self.rs("intra", shard, inp)
            self.rs("inter", out, shard)
            return
        if self.collective == "flat":
            self._count(self.world_class, "reduce_scatter", inp.numel() * inp.element_size(), topo.n)
            chunks = list(inp.split(size))
            dist.reduce_scatter(out, [chunks[c] for c in self.perm], group=topo.world)
            return
        from . import collectives

        src = inp.view(topo.n, size)[torch.tensor(self.perm, device=inp.device)].reshape(-1)
        collectives.reduce_scatter(out, src, topo, algorithm="ho_ring")
        self._count_ring("reduce_scatter", inp)

    def ar_glob(self, t: torch.Tensor) -> None:
        topo = self.topo
        if self.collective == "hier" or topo.g == 1 or topo.m == 1:
            shard = torch.empty(t.numel() // topo.m, dtype=t.dtype, device=t.device)
            if topo.m > 1:
                self.rs("intra", shard, t)
            else:
                shard = t
            self.ar("inter", shard)
            if topo.m > 1:
                self.ag("intra", t, shard)
            return
        if self.collective == "flat":
            self._count(self.world_class, "all_reduce", t.numel() * t.element_size(), topo.n)
            dist.all_reduce(t, group=topo.world)
            return
        from . import collectives

        collectives.all_reduce(t, topo, algorithm="ho_ring")
        self._count_ring("all_reduce", t)

    def _count_ring(self, op: str, full: torch.Tensor) -> None:
        # HO-Ring moves the hierarchical volumes: intra (m-1)/m X, inter (g-1)/g X/m (AR twice each)
        x = full.numel() * full.element_size()
        self._count("intra", op, x, self.topo.m)
        self._count("inter", op, x // self.topo.m, self.topo.g)

    def scalar_sum(self, value: torch.Tensor, scope: str) -> torch.Tensor:
        if scope == "world":
            if self.topo.n > 1:
                self._count(self.world_class, "all_reduce", value.numel() * value.element_size(), self.topo.n)
                dist.all_reduce(value, group=self.topo.world)
        elif scope == "intra":
            self.ar("intra", value)
        return value


# --------------------------------------------------------------------------- flat buffers
@dataclass
class _Slot:
    name: str
    param: nn.Parameter
    offset: int
    numel: int
    shape: torch.Size


class _Flat:
    """One flat, padded buffer of a unit's parameters of one dtype and one trainability."""

    def __init__(self, slots: list[tuple[str, nn.Parameter]], trainable: bool, engine: PaRO) -> None:
        topo, word = engine.topo, engine.word
        self.engine = engine
        self.trainable = trainable
        dtypes = {p.dtype for _, p in slots}
        if len(dtypes) != 1:
            desc = ", ".join(f"{n}: {p.dtype}" for n, p in slots)
            raise ValueError(f"a unit mixes parameter dtypes ({desc}); cast the module to one dtype first")
        src_dtype = dtypes.pop()
        devices = {p.device for _, p in slots}
        if len(devices) != 1:
            where = sorted(map(str, devices))
            raise ValueError(f"a unit has parameters on several devices ({where}); move the module to one first")
        self.device = devices.pop()
        if not src_dtype.is_floating_point:
            raise TypeError(f"parameters must be floating point, got {src_dtype}")
        self.dtype = engine.compute_dtype or src_dtype
        self.master_dtype = src_dtype if engine.compute_dtype is None else torch.float32
        self.slots: list[_Slot] = []
        off = 0
        for name, p in slots:
            self.slots.append(_Slot(name, p, off, p.numel(), p.shape))
            off += p.numel()
        self.numel = off
        n, m = topo.n, topo.m
        self.P = max(n, math.ceil(off / n) * n)
        self.shard = self.P // m
        self.chunk = self.P // n
        # coordinates of this rank's pieces in the full buffer
        self.shard_off = topo.l * self.shard
        self.chunk_off = self.shard_off + topo.k * self.chunk
        self.p_range = self._range(word.p)
        self.g_range = self._range(word.g)
        self.os_range = self._range(word.os)

        full = torch.zeros(self.P, dtype=self.dtype, device=self.device)
        with torch.no_grad():
            for s in self.slots:
                full[s.offset : s.offset + s.numel].copy_(s.param.detach().reshape(-1))
        if topo.n > 1:  # every rank starts from rank 0's values, as DDP does
            dist.broadcast(full, src=0, group=topo.world)
        if word.p == "N":
            self.persistent = full
            self.full = full
        else:
            a, b = self.p_range
            self.persistent = full[a:b].clone()
            self.full = full
        for s in self.slots:
            s.param.data = self.full[s.offset : s.offset + s.numel].view(s.shape)
        self.gathered = True
        if word.p != "N":
            self.free()
        # master (the optimizer's parameter): this rank's os shard, full precision
        self.master: nn.Parameter | None = None
        self.acc: torch.Tensor | None = None
        if trainable:
            a, b = self.os_range
            pa = self.p_range[0]
            piece = self.persistent[a - pa : b - pa]
            if engine.compute_dtype is None:
                self.master = nn.Parameter(piece)  # shares storage with the parameters
            else:
                with torch.no_grad():
                    master = torch.empty(b - a, dtype=self.master_dtype, device=self.device)
                    for s in self.slots:  # full-precision values of the user's parameters
                        lo, hi = max(a, s.offset), min(b, s.offset + s.numel)
                        if lo < hi:
                            master[lo - a : hi - a] = engine._initial[id(s.param)][lo - s.offset : hi - s.offset]
                    lo_pad = max(a, self.numel)
                    if lo_pad < b:
                        master[lo_pad - a :] = 0
                self.master = nn.Parameter(master)
            self.reset_grads()

    def _range(self, level: str) -> tuple[int, int]:
        if level == "N":
            return 0, self.P
        if level == "I":
            return self.shard_off, self.shard_off + self.shard
        return self.chunk_off, self.chunk_off + self.chunk

    # -- parameters
    def free(self) -> None:
        if self.engine.word.p != "N" and self.gathered:
            self.full.untyped_storage().resize_(0)
            self.gathered = False

    def gather(self) -> None:
        if self.gathered:
            return
        self.full.untyped_storage().resize_(self.P * self.full.element_size())
        comm = self.engine.comm
        if self.engine.word.p == "I":
            comm.ag("intra", self.full, self.persistent)
        else:
            comm.ag_glob(self.full, self.persistent)
        self.gathered = True

    # -- gradients
    def reset_grads(self) -> None:
        a, b = self.g_range
        self.acc = torch.zeros(b - a, dtype=self.dtype, device=self.device)

    def grad_buffer(self, fill_missing: bool) -> torch.Tensor:
        buf = torch.zeros(self.P, dtype=self.dtype, device=self.device)
        for s in self.slots:
            gr = s.param.grad
            if gr is None:
                if not fill_missing:
                    raise AssertionError("missing grad")
                continue
            buf[s.offset : s.offset + s.numel].copy_(gr.reshape(-1))
            s.param.grad = None
        return buf

    def reduce_micro(self, fill_missing: bool = False) -> None:
        """Bring this micro-step's gradient to ``g`` granularity and accumulate it."""
        word, comm = self.engine.word, self.engine.comm
        full = self.grad_buffer(fill_missing)
        if word.g == "N":
            self.acc.add_(full)
        elif word.g == "I":
            out = torch.empty(self.shard, dtype=self.dtype, device=self.device)
            comm.rs("intra", out, full)
            self.acc.add_(out)
        else:
            out = torch.empty(self.chunk, dtype=self.dtype, device=self.device)
            comm.rs_glob(out, full)
            self.acc.add_(out)

    def reduce_boundary(self) -> torch.Tensor:
        """The step's summed gradient at ``os`` granularity."""
        word, comm = self.engine.word, self.engine.comm
        acc = self.acc
        if word.os == "N":
            comm.ar_glob(acc)
            return acc
        if word.os == "I":
            if word.g == "N":
                out = torch.empty(self.shard, dtype=self.dtype, device=self.device)
                comm.rs("intra", out, acc)
                acc = out
            comm.ar("inter", acc)
            return acc
        if word.g == "N":
            out = torch.empty(self.chunk, dtype=self.dtype, device=self.device)
            comm.rs_glob(out, acc)
            return out
        if word.g == "I":
            out = torch.empty(self.chunk, dtype=self.dtype, device=self.device)
            comm.rs("inter", out, acc)
            return out
        return acc

    def rebuild(self) -> None:
        """After the update: copy the master into the parameters and bring them back to ``p``."""
        word, comm = self.engine.word, self.engine.comm
        a, b = self.os_range
        pa = self.p_range[0]
        if self.engine.compute_dtype is not None:
            with torch.no_grad():
                self.persistent[a - pa : b - pa].copy_(self.master.detach())
        if word.p == word.os:
            return
        piece = self.persistent[a - pa : b - pa].clone()
        if word.p == "N":
            if word.os == "I":
                comm.ag("intra", self.persistent, piece)
            else:
                comm.ag_glob(self.persistent, piece)
        else:  # p = I, os = G
            comm.ag("inter", self.persistent, piece)

    def unpadded_full(self, piece: torch.Tensor, level: str) -> torch.Tensor:
        """All-gather a piece at ``level`` granularity to the whole (padded) buffer."""
        comm = self.engine.comm
        if level == "N":
            return piece.clone()
        out = torch.empty(self.P, dtype=piece.dtype, device=piece.device)
        if level == "I":
            comm.ag("intra", out, piece.contiguous())
        else:
            comm.ag_glob(out, piece.contiguous())
        return out


def _piece(v: torch.Tensor, s: _Slot) -> torch.Tensor:
    return v[s.offset : s.offset + s.numel].view(s.shape) if v.dim() > 0 else v


class _Unit:
    def __init__(self, name: str, module: nn.Module, params: list[tuple[str, nn.Parameter]], engine: PaRO) -> None:
        self.name = name
        self.module = module
        self.flats: list[_Flat] = []
        trainable = [(n, p) for n, p in params if p.requires_grad]
        frozen = [(n, p) for n, p in params if not p.requires_grad]
        for group, flag in ((trainable, True), (frozen, False)):
            if group:
                self.flats.append(_Flat(group, flag, engine))
        self.n_trainable = len(trainable)
        self.has_frozen = bool(frozen)
        self.seen = 0
        self.reduced = False
        # forward calls whose input gradients have not arrived yet: a unit with frozen parameters may
        # still need them for its input gradients after its own trainable gradients are done
        self.pending_inputs = 0

    @property
    def trainable_flats(self) -> list[_Flat]:
        return [f for f in self.flats if f.trainable]

    def gather(self) -> None:
        for f in self.flats:
            f.gather()

    def free(self) -> None:
        for f in self.flats:
            f.free()


# --------------------------------------------------------------------------- the engine
class PaRO(nn.Module):
    """Partial-redundancy sharded data parallelism for any valid ``p g os`` word.

    Parameters
    ----------
    module:
        The model, identical on every rank (rank 0's values are broadcast). Parameters are re-homed
        into flat buffers: use the engine (or ``module`` itself) for forward passes afterwards.
    strategy:
        A valid word (:data:`~bastion.distributed.words.VALID_WORDS`), e.g. ``"NIG"``; ``"NNG"``/
        ``"NGG"``/``"GGG"`` are ZeRO-1/2/3, ``"NNN"`` DDP, ``"III"`` MiCS/HSDP.
    group_size:
        Ranks per group ``m`` (a node or a switch); the world size must be a multiple. With ``m = 1``
        or ``m = n`` the level ``I`` collapses (to ``N`` or ``G``): a warning says which word runs.
    optimizer:
        A callable taking an iterable of parameters, e.g. ``functools.partial(torch.optim.AdamW,
        lr=1e-3)``. It sees this rank's optimizer-state shards (one flat 1-D tensor per unit), so
        elementwise optimizers (SGD, Adam, AdamW, Adagrad...) behave exactly as on the whole model;
        optimizers that look across a tensor (LAMB, LARS, Shampoo) would not.
    grad_accum_steps:
        ``A``: backward passes per :meth:`step`. The update uses the mean gradient over all ranks'
        ``A`` micro-batches.
    collective:
        ``"hier"`` (intra + inter groups, PaRO-CC), ``"flat"`` (one world ring: stock ZeRO) or
        ``"ho_ring"`` (point-to-point HO-Ring) for global collectives.
    mixed_precision:
        ``None`` (train in the parameters' dtype) or ``"bf16"``: bf16 parameters and gradients,
        fp32 master weights and optimizer states.
    max_grad_norm:
        Clip the global gradient norm (computed over unique shards) to this value; ``None`` disables.
    units:
        Modules to shard as units; default :func:`default_units`.
    topology:
        A ready :class:`~bastion.distributed.topology.Topology` (default: built from ``group_size``).
    find_unused_parameters:
        ``False`` (default, as DDP): every rank uses the same units in every micro-step, and each unit's
        gradients are reduced as soon as its backward is done. ``True``: some ranks may skip some units
        (data-dependent branches); all reductions then wait for the end of the backward and run in unit
        order, so every rank issues the same collectives (more gradient memory at the peak). Only for
        ``p = N``: with sharded parameters every forward gathers collectively, so every rank must run
        every unit (as with FSDP).

    Notes
    -----
    * A parameter with no gradient in a micro-step contributes zeros: like FSDP's flat parameters,
      AdamW still applies weight decay and moment decay to it (one process would skip it).
    * Every forward of a unit with ``p != N`` is collective: evaluate on all ranks, not on rank 0 only.
      A parameter may be used only inside the forward of the unit that owns it (put one that is used
      elsewhere, e.g. a tied embedding, in a unit that encloses both uses, or leave it to the root).
    * Under ``mixed_precision="bf16"`` frozen parameters are kept (and saved) in bf16 only: they have
      no fp32 master, which is the memory the formula ``b_p Psi / d(p)`` counts.
    * A forward with gradients enabled after ``grad_accum_steps`` backward passes raises: call
      :meth:`step` first (or wrap a validation forward in ``torch.no_grad()``).
    """

    def __init__(
        self,
        module: nn.Module,
        strategy: str = "NIG",
        group_size: int | None = None,
        optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer] | None = None,
        grad_accum_steps: int = 1,
        collective: str = "hier",
        mixed_precision: str | None = None,
        max_grad_norm: float | None = None,
        units: list[nn.Module] | None = None,
        topology: Topology | None = None,
        find_unused_parameters: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        word = parse_word(strategy)
        if isinstance(grad_accum_steps, bool) or not isinstance(grad_accum_steps, int):
            raise TypeError(f"grad_accum_steps must be an int, got {type(grad_accum_steps).__name__}")
        if grad_accum_steps < 1:
            raise ValueError(f"grad_accum_steps must be >= 1, got {grad_accum_steps}")
        if collective not in _COLLECTIVES:
            raise ValueError(f"collective must be one of {_COLLECTIVES}, got {collective!r}")
        if mixed_precision not in _PRECISIONS:
            raise ValueError(f"mixed_precision must be None or 'bf16', got {mixed_precision!r}")
        if max_grad_norm is not None and not (isinstance(max_grad_norm, (int, float)) and max_grad_norm > 0):
            raise ValueError(f"max_grad_norm must be a positive number or None, got {max_grad_norm!r}")
        if topology is None:
            if group_size is None:
                raise ValueError("group_size is required (ranks per node or switch)")
            if isinstance(group_size, bool) or not isinstance(group_size, int):
                raise TypeError(f"group_size must be an int, got {type(group_size).__name__}")
            if group_size < 1:
                raise ValueError(f"group_size must be >= 1, got {group_size}")
            if not dist.is_initialized():
                raise RuntimeError("torch.distributed is not initialised: call init_process_group (or use torchrun)")
            world = dist.get_world_size()
            if world % group_size:
                raise ValueError(f"world size {world} is not divisible by group_size {group_size}")
            topology = Topology(group_size)
        elif group_size is not None and group_size != topology.m:
            raise ValueError(f"group_size {group_size} disagrees with topology's {topology.m}")
        self.topo = topology
        self.requested = str(word)
        running = equivalent_word(str(word), topology.m, topology.n)
        if running != str(word):
            warnings.warn(
                f"with {topology.g} group(s) of {topology.m} the level I collapses: {word} runs as {running}",
                stacklevel=2,
            )
        self.word: Word = parse_word(running)
        self.strategy = running
        self.grad_accum_steps = grad_accum_steps
        self.collective = collective
        self.mixed_precision = mixed_precision
        self.compute_dtype = _PRECISIONS[mixed_precision]
        self.max_grad_norm = max_grad_norm
        self.find_unused_parameters = bool(find_unused_parameters)
        if self.find_unused_parameters and self.word.p != "N":
            raise ValueError(
                f"find_unused_parameters=True needs replicated parameters (p = N), strategy {self.strategy} "
                "gathers them collectively in every forward, so every rank must run every unit"
            )
        self.comm = _Comm(topology, collective)
        self.module = module
        self._initial = {id(p): p.detach().reshape(-1).clone() for p in module.parameters()} if mixed_precision else {}
        if mixed_precision and topology.n > 1:
            for t in self._initial.values():
                dist.broadcast(t, src=0, group=topology.world)
        self.units = self._build_units(module, units)
        self._initial = {}
        masters = [f.master for u in self.units for f in u.trainable_flats]
        if not masters:
            raise ValueError("module has no trainable parameters")
        factory = optimizer or (lambda ps: torch.optim.AdamW(ps, lr=1e-3))
        self.optimizer = factory(masters)
        if not isinstance(self.optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must build a torch.optim.Optimizer, got {type(self.optimizer).__name__}")
        self.micro = 0
        self.steps = 0
        self.last_grad_norm: float | None = None
        self._callback_queued = False
        self._hooks: list[Any] = []
        self._install_hooks()
        self.comm.log.clear()
        self.comm.phase = "micro0"

    # ----------------------------------------------------------------- units and hooks
    def _build_units(self, module: nn.Module, units: list[nn.Module] | None) -> list[_Unit]:
        unit_modules = default_units(module) if units is None else list(units)
        names = {m: n for n, m in module.named_modules()}
        for u in unit_modules:
            if u is module:
                raise ValueError(
                    "units must be proper submodules of module; the module's own parameters form the root unit"
                )
            if u not in names:
                raise ValueError("units must be submodules of module")
        owner: dict[int, list[int]] = {}
        plist: dict[int, list[tuple[str, nn.Parameter]]] = {i: [] for i in range(len(unit_modules) + 1)}
        for i, u in enumerate(unit_modules, start=1):
            for p in u.parameters():
                owner.setdefault(id(p), []).append(i)
        subtree = [set(u.modules()) for u in unit_modules]
        for pn, p in module.named_parameters():  # deduplicated, in model order
            owners = owner.get(id(p), [])
            # the innermost of nested owning units; siblings that share a parameter leave it to the root
            inner = [i for i in owners if all(unit_modules[i - 1] in subtree[j - 1] for j in owners)]
            plist[inner[0] if len(inner) == 1 else 0].append((pn, p))
        out = []
        root = _Unit("<root>", module, plist[0], self)
        out.append(root)
        for i, u in enumerate(unit_modules, start=1):
            if plist[i]:
                out.append(_Unit(names[u], u, plist[i], self))
        return out

    def _install_hooks(self) -> None:
        for unit in self.units:
            for f in unit.trainable_flats:
                for s in f.slots:
                    self._hooks.append(s.param.register_post_accumulate_grad_hook(self._make_grad_hook(unit)))
            if unit.module is self.module:
                continue
            self._hooks.append(unit.module.register_forward_pre_hook(self._make_pre_forward(unit)))
            self._hooks.append(unit.module.register_forward_hook(self._make_post_forward(unit)))
        root = self.units[0]
        self._hooks.append(self.module.register_forward_pre_hook(self._make_pre_forward(root)))
        self._hooks.append(self.module.register_forward_hook(self._root_post_forward))

    def _make_pre_forward(self, unit: _Unit) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any) -> None:
            if unit is self.units[0] and torch.is_grad_enabled() and self.micro >= self.grad_accum_steps:
                raise ValueError(
                    f"{self.micro} backward passes since the last step(): call step() after "
                    f"grad_accum_steps={self.grad_accum_steps} backward calls"
                )
            unit.gather()

        return hook

    def _outputs_needing_grad(self, output: Any) -> list[torch.Tensor]:
        leaves, _ = tree_flatten(output)
        return [t for t in leaves if isinstance(t, torch.Tensor) and t.requires_grad]

    def _make_post_forward(self, unit: _Unit) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if self.word.p == "N":
                return
            unit.free()
            tensors = self._outputs_needing_grad(output)
            if not tensors:
                return
            torch.autograd.graph.register_multi_grad_hook(tensors, lambda grads: unit.gather(), mode="any")
            inputs = self._outputs_needing_grad(args)
            if unit.has_frozen and inputs:
                unit.pending_inputs += 1

                def inputs_done(grads: Any) -> None:
                    unit.pending_inputs -= 1
                    self._maybe_free(unit)

                torch.autograd.graph.register_multi_grad_hook(inputs, inputs_done, mode="all")

        return hook

    def _maybe_free(self, unit: _Unit) -> None:
        """Free a unit during the backward once nothing in it can be needed again."""
        if unit is self.units[0] or self.word.p == "N":
            return
        if (unit.reduced or not unit.n_trainable) and unit.pending_inputs == 0:
            unit.free()

    def _root_post_forward(self, module: nn.Module, args: Any, output: Any) -> None:
        tensors = self._outputs_needing_grad(output)
        if not tensors:
            if self.word.p != "N":
                for u in self.units:
                    u.free()
            return

        def pre_backward(grads: Any) -> None:
            self.units[0].gather()
            if not self._callback_queued:
                self._callback_queued = True
                Variable._execution_engine.queue_callback(self._post_backward)

        torch.autograd.graph.register_multi_grad_hook(tensors, pre_backward, mode="any")

    def _make_grad_hook(self, unit: _Unit) -> Callable[[torch.Tensor], None]:
        def hook(param: torch.Tensor) -> None:
            unit.seen += 1
            if unit.seen == unit.n_trainable and not unit.reduced and not self.find_unused_parameters:
                self.comm.phase = f"micro{self.micro}"
                for f in unit.trainable_flats:
                    f.reduce_micro()
                unit.reduced = True
                self._maybe_free(unit)

        return hook

    def _post_backward(self) -> None:
        self._callback_queued = False
        self.comm.phase = f"micro{self.micro}"
        # units not reduced during the backward -- all of them with find_unused_parameters=True, else those
        # with a parameter that got no gradient -- are reduced here in unit order, the same on every rank
        for unit in self.units:
            if not unit.reduced and unit.trainable_flats:
                for f in unit.trainable_flats:
                    f.reduce_micro(fill_missing=True)
            unit.reduced = False
            unit.seen = 0
        for unit in self.units:
            unit.pending_inputs = 0
            unit.free()
        self.micro += 1
        self.comm.phase = f"micro{self.micro}" if self.micro < self.grad_accum_steps else "boundary"

    # ----------------------------------------------------------------- public API
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    @torch.no_grad()
    def step(self) -> None:
        """Reduce to optimizer-state granularity, clip, update and rebuild the parameters.

        Raises ``ValueError`` unless exactly ``grad_accum_steps`` backward passes ran since the last step.
        """
        if self.micro != self.grad_accum_steps:
            raise ValueError(
                f"step() called after {self.micro} backward passes; grad_accum_steps={self.grad_accum_steps}"
            )
        self.comm.phase = "boundary"
        flats = [f for u in self.units for f in u.trainable_flats]
        scale = 1.0 / (self.topo.n * self.grad_accum_steps)
        grads = []
        for f in flats:
            gr = f.reduce_boundary().to(f.master_dtype) * scale
            grads.append(gr)
        if self.max_grad_norm is not None:
            sq = torch.zeros((), dtype=torch.float64, device=flats[0].device)
            for gr in grads:
                sq += gr.double().pow(2).sum()
            scope = {"N": "none", "I": "intra", "G": "world"}[self.word.os]
            self.comm.scalar_sum(sq, scope)
            norm = float(sq.sqrt())
            self.last_grad_norm = norm
            coef = self.max_grad_norm / (norm + 1e-6)
            if coef < 1:
                for gr in grads:
                    gr.mul_(coef)
        for f, gr in zip(flats, grads, strict=True):
            f.master.grad = gr
        self.optimizer.step()
        self.comm.phase = "update"
        for f in flats:
            f.master.grad = None
            f.rebuild()
            f.reset_grads()
        self.micro = 0
        self.steps += 1
        self.comm.phase = "micro0"

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop the accumulated gradients of the current step (``step()`` already does this)."""
        for u in self.units:
            for f in u.trainable_flats:
                f.reset_grads()
                for s in f.slots:
                    s.param.grad = None
        self.micro = 0

    # ----------------------------------------------------------------- reports
    def comm_report(self, reset: bool = True) -> dict[str, Any]:
        """Bytes and calls per link class since the last report, split by phase.

        Returns ``{"intra": bytes, "inter": bytes, "cross": bytes, "calls": {...},
        "by_phase": {phase: {class: bytes}}}`` (bytes moved per rank, ring accounting).
        """
        out: dict[str, Any] = {"intra": 0, "inter": 0, "cross": 0, "calls": {"intra": 0, "inter": 0, "cross": 0}}
        by_phase: dict[str, dict[str, int]] = {}
        for phase, cls, _op, nbytes in self.comm.log:
            out[cls] += nbytes
            out["calls"][cls] += 1
            by_phase.setdefault(phase, {"intra": 0, "inter": 0, "cross": 0})[cls] += nbytes
        out["by_phase"] = by_phase
        out["log"] = list(self.comm.log)
        if reset:
            self.comm.log.clear()
        return out

    def memory_report(self) -> dict[str, int]:
        """Resident model-state bytes on this rank, deduplicated by storage.

        Keys: ``params`` (persistent shards and any gathered unit), ``gathered`` (the gathered part),
        ``grads``, ``optimizer`` (master copies that do not share the parameters' storage and every
        optimizer state tensor), ``total``, and ``expected`` -- the spec's formula
        ``b_p Psi/d(p) + b_g Psi'/d(g) + K Psi'/d(os)`` on the padded sizes.
        """
        seen: set[int] = set()

        def size(t: torch.Tensor | None) -> int:
            if t is None:
                return 0
            st = t.untyped_storage()
            key = st.data_ptr()
            if st.nbytes() == 0 or key in seen:
                return 0
            seen.add(key)
            return st.nbytes()

        rep = {"params": 0, "gathered": 0, "grads": 0, "optimizer": 0}
        flats = [f for u in self.units for f in u.flats]
        for f in flats:
            rep["params"] += size(f.persistent)
            if f.full is not f.persistent:
                g = size(f.full)
                rep["params"] += g
                rep["gathered"] += g
        for f in flats:
            rep["grads"] += size(f.acc)
            for s in f.slots:
                rep["grads"] += size(s.param.grad)
        for f in flats:
            if f.master is not None:
                rep["optimizer"] += size(f.master)
                for v in self.optimizer.state.get(f.master, {}).values():
                    if isinstance(v, torch.Tensor) and v.dim() > 0:
                        rep["optimizer"] += size(v)
        rep["total"] = rep["params"] + rep["grads"] + rep["optimizer"]
        rep["expected"] = self.expected_state_bytes()
        return rep

    def expected_state_bytes(self, optimizer_slots: int = 2) -> int:
        """The spec's per-rank model-state formula on this engine's padded buffers.

        ``optimizer_slots`` is the number of full-size state tensors per parameter (Adam: 2).
        """
        d = {"N": 1, "I": self.topo.m, "G": self.topo.n}
        total = 0
        for u in self.units:
            for f in u.flats:
                b = f.full.element_size()
                total += b * f.P // d[self.word.p]
                if f.trainable:
                    mb = torch.empty((), dtype=f.master_dtype).element_size()
                    k = optimizer_slots * mb + (mb if self.compute_dtype is not None else 0)
                    total += b * f.P // d[self.word.g] + k * f.P // d[self.word.os]
        return total

    # ----------------------------------------------------------------- state
    @torch.no_grad()
    def full_state(self) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]]]:
        """Consolidated parameters and optimizer states (collective: call on every rank).

        Returns ``(params, states)``: ``params[name]`` in the original shape and the master dtype;
        ``states[name][key]`` each optimizer state tensor, full size; scalar states under ``name``
        as 0-d tensors.
        """
        params: dict[str, torch.Tensor] = {}
        states: dict[str, dict[str, torch.Tensor]] = {}
        for u in self.units:
            for f in u.flats:
                if f.trainable:
                    master = f.unpadded_full(f.master.detach(), self.word.os)
                else:
                    master = f.unpadded_full(f.persistent, self.word.p)
                st_full: dict[str, torch.Tensor] = {}
                if f.trainable:
                    for key, v in sorted(self.optimizer.state.get(f.master, {}).items()):
                        if isinstance(v, torch.Tensor) and v.dim() > 0:
                            st_full[key] = f.unpadded_full(v, self.word.os)
                        elif isinstance(v, torch.Tensor):
                            st_full[key] = v.clone()
                for s in f.slots:
                    params[s.name] = master[s.offset : s.offset + s.numel].view(s.shape).to("cpu", copy=True)
                    if st_full:
                        states[s.name] = {k: _piece(v, s).to("cpu", copy=True) for k, v in st_full.items()}
        return params, states

    @torch.no_grad()
    def load_full_state(
        self, params: dict[str, torch.Tensor], states: dict[str, dict[str, torch.Tensor]] | None = None
    ) -> None:
        """Load consolidated parameters (and optimizer states) into this rank's shards.

        Raises ``ValueError`` naming the first parameter that is missing, unexpected or mis-shaped, and
        for optimizer states that are missing for a trainable parameter (e.g. a PEFT checkpoint loaded
        into a fully trainable model: pass ``states=None`` to start the optimizer fresh), present for
        a frozen one, of another shape, or whose keys differ between parameters of one unit.
        """
        names = [s.name for u in self.units for f in u.flats for s in f.slots]
        if states is not None:
            frozen = [s.name for u in self.units for f in u.flats if not f.trainable for s in f.slots]
            stray = [n for n in frozen if n in states]
            if stray:
                raise ValueError(f"checkpoint has optimizer states for parameters that are frozen here: {stray[:5]}")
        missing = [n for n in names if n not in params]
        extra = [n for n in params if n not in set(names)]
        if missing or extra:
            raise ValueError(f"checkpoint does not match the model: missing {missing[:5]}, unexpected {extra[:5]}")
        for u in self.units:
            for f in u.flats:
                full = torch.zeros(f.P, dtype=f.master_dtype, device=f.device)
                for s in f.slots:
                    t = params[s.name]
                    if tuple(t.shape) != tuple(s.shape):
                        raise ValueError(
                            f"checkpoint parameter {s.name!r} has shape {tuple(t.shape)}, model {tuple(s.shape)}"
                        )
                    if not t.is_floating_point() or torch.isnan(t).any():
                        raise ValueError(f"checkpoint parameter {s.name!r} is not a finite float tensor")
                    full[s.offset : s.offset + s.numel] = t.reshape(-1).to(f.device, f.master_dtype)
                pa, pb = f.p_range
                f.persistent.copy_(full[pa:pb].to(f.dtype))
                if f.trainable:
                    a, b = f.os_range
                    if self.compute_dtype is not None:
                        f.master.copy_(full[a:b])
                    if states is not None:
                        self.optimizer.state[f.master] = self._flat_state(f, states)
        self.comm.log.clear()

    def _flat_state(self, f: _Flat, states: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """This rank's os shard of one flat's optimizer state, built from per-parameter full tensors."""
        a, b = f.os_range
        keysets = {}
        for s in f.slots:
            if s.name not in states:
                raise ValueError(
                    f"checkpoint has no optimizer state for trainable parameter {s.name!r}; "
                    "load with optimizer_state=False to start the optimizer fresh"
                )
            keysets[s.name] = frozenset(states[s.name])
        if len(set(keysets.values())) != 1:
            raise ValueError(
                f"optimizer state keys differ between parameters: { {k: sorted(v) for k, v in keysets.items()} }"
            )
        out: dict[str, torch.Tensor] = {}
        for key in sorted(next(iter(keysets.values()))):
            sample = states[f.slots[0].name][key]
            if sample.dim() == 0:
                out[key] = sample.clone()  # Adam's step counter lives on the CPU
                continue
            buf = torch.zeros(f.P, dtype=sample.dtype, device=f.device)
            for s in f.slots:
                t = states[s.name][key]
                if tuple(t.shape) != tuple(s.shape):
                    raise ValueError(
                        f"optimizer state {key!r} of {s.name!r} has shape {tuple(t.shape)}, parameter {tuple(s.shape)}"
                    )
                buf[s.offset : s.offset + s.numel] = t.reshape(-1).to(f.device, sample.dtype)
            out[key] = buf[a:b].clone()
        return out

    def extra_repr(self) -> str:
        return (
            f"strategy={self.strategy}, g={self.topo.g}, m={self.topo.m}, A={self.grad_accum_steps}, "
            f"collective={self.collective}, mixed_precision={self.mixed_precision}"
        )
