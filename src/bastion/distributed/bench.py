"""PaRO against torch's own data-parallel engines on one emulated cluster (8 gloo ranks = 2 groups x 4).

Every contender trains the same tiny GPT on the same Markov batches, fp32, AdamW, ``A`` micro-steps per
step, under one :class:`~bastion.distributed.emulator.NetworkEmulator`. Contenders:

* PaRO words (``collective="hier"``), flat ZeRO-2/3 (``NGG``/``GGG`` with ``collective="flat"``);
* ``ddp``: ``DistributedDataParallel`` with ``no_sync`` on all but the last micro-step (an all-reduce
  comm hook routes its buckets through ``torch.distributed.all_reduce``, so the interceptor sees them);
* ``ddp+zero``: DDP plus ``ZeroRedundancyOptimizer`` (ZeRO-1 in torch);
* ``fsdp2``: ``fully_shard`` on a 1-D mesh (FULL_SHARD, one unit per block);
* ``hsdp``: ``fully_shard`` on a 2-D (replicate=g, shard=m) mesh, i.e. MiCS/III with an inter all-reduce
  every micro-step; ``hsdp-lazy``: the same with ``set_requires_all_reduce(False)`` until the last
  micro-step (the inter all-reduce once per step).

Calibration (the spec's, fixed before any contender runs and stored with the results): measure PaRO
``NNN``'s compute per step, price flat ZeRO-3's traffic with the cost model and choose ``B_e`` so that
their ratio is ``rho_c`` (:func:`~bastion.distributed.emulator.calibrate_link`). Each run is priced
under every calibrated link at once: the charged communication depends only on what was issued.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from functools import partial
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from . import costmodel
from .emulator import NetworkEmulator, StepClock, calibrate_link
from .engine import PaRO
from .gpt import MarkovTokens, TinyGPT, lm_loss
from .netmodel import Link
from .topology import Topology

__all__ = ["BASELINES", "BenchConfig", "run_benchmark", "state_bytes"]

BASELINES = ("ddp", "ddp+zero", "fsdp2", "hsdp", "hsdp-lazy")


class BenchConfig(dict):
    """Plain settings (a dict, so it pickles to worker processes)."""

    def __init__(
        self,
        *,
        group_size: int = 4,
        dim: int = 128,
        layers: int = 4,
        heads: int = 4,
        seq_len: int = 32,
        micro_batch: int = 4,
        grad_accum: int = 4,
        steps: int = 4,
        ring_mb: float = 8.0,
        warmup: int = 1,
        rhos: tuple[float, ...] = (1.0, 4.0),
        lr: float = 1e-3,
        seed: int = 0,
    ) -> None:
        super().__init__(
            group_size=group_size, dim=dim, layers=layers, heads=heads, seq_len=seq_len, micro_batch=micro_batch,
            grad_accum=grad_accum, steps=steps, ring_mb=ring_mb, warmup=warmup, rhos=tuple(rhos), lr=lr, seed=seed,
        )  # fmt: skip


def _model(cfg: dict) -> TinyGPT:
    torch.manual_seed(cfg["seed"])
    return TinyGPT(vocab=256, dim=cfg["dim"], layers=cfg["layers"], heads=cfg["heads"], seq_len=cfg["seq_len"])


def state_bytes(module: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """Deduplicated storage bytes of parameters (local shards of DTensors), gradients and optimizer state."""
    seen: set[int] = set()

    def size(t: Any) -> int:
        if t is None:
            return 0
        if hasattr(t, "to_local"):
            t = t.to_local()
        st = t.untyped_storage()
        if st.nbytes() == 0 or st.data_ptr() in seen:
            return 0
        seen.add(st.data_ptr())
        return st.nbytes()

    out = {"params": 0, "grads": 0, "optimizer": 0}
    for p in module.parameters():
        out["params"] += size(p)
    for p in module.parameters():
        out["grads"] += size(p.grad)
    for st in optimizer.state.values():
        for v in st.values():
            if isinstance(v, torch.Tensor) and v.dim() > 0:
                out["optimizer"] += size(v)
    out["total"] = sum(out.values())
    return out


class _Runner:
    """One contender: ``micro(a, batch)`` runs forward/backward; ``update()`` finishes the step."""

    def __init__(self, name: str, cfg: dict, topo: Topology, accum: int) -> None:
        self.name, self.accum = name, accum
        model = _model(cfg)
        opt = partial(torch.optim.AdamW, lr=cfg["lr"], weight_decay=0.01)
        n = topo.n
        self.engine: PaRO | None = None
        if name in BASELINES:
            if name.startswith("ddp"):
                from torch.nn.parallel import DistributedDataParallel as DDP

                self.model = DDP(model, bucket_cap_mb=25)

                def hook(state, bucket):
                    buf = bucket.buffer().div_(n)
                    return dist.all_reduce(buf, async_op=True).get_future().then(lambda f: f.value()[0])

                self.model.register_comm_hook(None, hook)
                if name == "ddp+zero":
                    from torch.distributed.optim import ZeroRedundancyOptimizer

                    self.opt = ZeroRedundancyOptimizer(
                        self.model.parameters(), optimizer_class=torch.optim.AdamW, lr=cfg["lr"], weight_decay=0.01
                    )
                else:
                    self.opt = opt(self.model.parameters())
            else:
                from torch.distributed.device_mesh import init_device_mesh
                from torch.distributed.fsdp import fully_shard

                if name == "fsdp2":
                    mesh = init_device_mesh("cpu", (n,))
                else:
                    mesh = init_device_mesh("cpu", (topo.g, topo.m), mesh_dim_names=("replicate", "shard"))
                for block in model.blocks:
                    fully_shard(block, mesh=mesh)
                fully_shard(model, mesh=mesh)
                self.model = model
                self.opt = opt(model.parameters())
        else:
            word, _, collective = name.partition("/")
            self.engine = PaRO(
                model, word, optimizer=opt, grad_accum_steps=accum, collective=collective or "hier", topology=topo
            )
            self.model = self.engine

    def micro(self, a: int, batch: torch.Tensor) -> torch.Tensor:
        last = a == self.accum - 1
        if self.engine is not None:
            loss = lm_loss(self.engine, batch)
            loss.backward()
            return loss.detach()
        ctx: Any = contextlib.nullcontext()
        if self.name.startswith("ddp") and not last:
            ctx = self.model.no_sync()
        if self.name == "hsdp-lazy":
            self.model.set_requires_all_reduce(last)
        with ctx:
            loss = lm_loss(self.model, batch)
            (loss / self.accum).backward()
        return loss.detach()

    def update(self) -> None:
        if self.engine is not None:
            self.engine.step()
        else:
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)

    def states(self) -> dict[str, int]:
        if self.engine is not None:
            rep = self.engine.memory_report()
            return {k: rep[k] for k in ("params", "grads", "optimizer", "total")}
        return state_bytes(self.model, self.opt)


def _run_one(name: str, cfg: dict, topo: Topology, accum: int, links: dict[str, Link], data: MarkovTokens) -> dict:
    runner = _Runner(name, cfg, topo, accum)
    rank = topo.rank
    with NetworkEmulator(topo) as emu:
        clock = StepClock(emu, links)
        losses, states = [], None
        for step in range(cfg["warmup"] + cfg["steps"]):
            clock.start()
            total = torch.zeros((), dtype=torch.float64)
            for a in range(accum):
                batch = data.batch(step, rank, a, cfg["micro_batch"], cfg["seq_len"])
                total += runner.micro(a, batch).double()
            if step == 1 and states is None:
                states = runner.states()  # after step 2's last backward
            runner.update()
            clock.stop()
            with emu.uncharged():  # the loss average is bookkeeping, not training traffic
                dist.all_reduce(total)
            losses.append(float(total) / (topo.n * accum))
        med = clock.median(cfg["warmup"])
    return {"name": name, "accum": accum, **med, "losses": losses, "states": states or runner.states()}


def _worker(rank: int, world: int, cfg: dict, names: list[str], accum_one: list[str]) -> dict:
    torch.manual_seed(cfg["seed"])
    topo = Topology(cfg["group_size"])
    data = MarkovTokens(seed=cfg["seed"])
    A = cfg["grad_accum"]
    t0 = time.perf_counter()
    # calibration: NNN's compute per step, flat ZeRO-3's bytes from the cost model
    probe = _run_one("NNN", cfg, topo, A, {}, data)
    compute = probe["compute"]
    engine_probe = PaRO(_model(cfg), "GGG", grad_accum_steps=A, collective="flat", topology=topo)
    psi = sum(f.P for u in engine_probe.units for f in u.flats)
    units = sum(1 for u in engine_probe.units for _ in u.flats)
    del engine_probe
    z3 = costmodel.comm_bytes("GGG", psi, psi, world_size=world, group_size=topo.m, grad_accum_steps=A,
                              precision="fp32", collective="flat")  # fmt: skip
    msg = 4 * psi / units
    ring_steps = 3 * A * units * (world - 1)
    links = {
        f"rho={rho:g}": calibrate_link(rho, z3["cross"], compute, topo.m, msg, ring_steps=ring_steps)
        for rho in cfg["rhos"]
    }
    ring = _ring_timings(topo, links, cfg.get("ring_mb", 8))
    rows = [_run_one(name, cfg, topo, A, links, data) for name in names]
    rows += [_run_one(name, cfg, topo, 1, links, data) for name in accum_one]
    return {
        "calibration": {
            "nnn_compute_s": compute,
            "zero3_flat_bytes": z3["cross"],
            "padded_params": psi,
            "units": units,
            "message_bytes": msg,
            "links": {k: dataclasses.asdict(v) for k, v in links.items()},
        },
        "rows": rows,
        "collectives": ring,
        "wall_s": time.perf_counter() - t0,
    }


def _ring_timings(topo: Topology, links: dict[str, Link], megabytes: float) -> dict[str, Any]:
    """A live all-gather of ``megabytes`` (output, fp32) by each algorithm, priced under each link;
    plus whether each result equals ``dist.all_gather_single`` bit for bit."""
    from . import collectives

    numel = int(megabytes * 2**20 / 4) // topo.n
    g = torch.Generator().manual_seed(1234 + topo.rank)
    inp = torch.randn(numel, generator=g)
    ref = torch.empty(numel * topo.n)
    dist.all_gather_single(ref, inp)
    first = next(iter(links.values()))
    out: dict[str, Any] = {"bytes": numel * topo.n * 4}
    for alg in ("flat", "hier", "ho_ring"):
        res = torch.empty_like(ref)
        with NetworkEmulator(topo) as emu:
            collectives.all_gather(res, inp, topo, algorithm=alg, link=first if alg == "ho_ring" else None)
            # a ring runs at its slowest rank's pace (in a flat ring only the boundary ranks send across)
            times = {k: emu.max_over_ranks(sum(emu.comm_seconds(link).values())) for k, link in links.items()}
        ok = torch.tensor([float(torch.equal(res, ref))])
        dist.all_reduce(ok, op=dist.ReduceOp.MIN)
        out[alg] = {"seconds": times, "bitwise_equal_all_ranks": bool(ok.item() == 1.0)}
    return out


def run_benchmark(cfg: BenchConfig, names: list[str], accum_one: list[str] | None = None, world: int = 8) -> dict:
    """Run every contender in one 8-rank gloo launch; return calibration, rows and predictions.

    Each row: median virtual ``step[rho=...]``, ``comm[rho=...]``, ``compute`` seconds, bytes per class
    per step, per-step losses, state bytes (after step 2's last backward) and ``samples/s`` per link.
    """
    from .launch import spawn

    if world % cfg["group_size"]:
        raise ValueError(f"world {world} is not divisible by group_size {cfg['group_size']}")
    res = spawn(_worker, world, dict(cfg), list(names), list(accum_one or []))
    cal = res["calibration"]
    links = {k: Link(**v) for k, v in cal["links"].items()}
    g = world // cfg["group_size"]
    for row in res["rows"]:
        batch = world * row["accum"] * cfg["micro_batch"]
        for k in links:
            row[f"samples/s[{k}]"] = batch / row[f"step[{k}]"]
        name = row["name"]
        word, _, collective = name.partition("/")
        if name not in BASELINES:  # the cost model's prediction at the measured compute
            for k, link in links.items():
                pred = costmodel.step_time(
                    word, cal["padded_params"], cal["padded_params"], world_size=world, group_size=cfg["group_size"],
                    grad_accum_steps=row["accum"], precision="fp32", link=link,
                    t_micro=cal["nnn_compute_s"] / cfg["grad_accum"], collective=collective or "hier",
                    unit_bytes=cal["message_bytes"],
                )  # fmt: skip
                row[f"predicted[{k}]"] = pred["total"]
    res["config"] = dict(cfg)
    res["groups"] = g
    res["ratio_note"] = (
        "compute is measured thread CPU time; communication is charged by the alpha-beta model for what each "
        "system issued; wall time is not comparable (8 ranks share 2 cores)"
    )
    return res


def ordering_agreement(rows: list[dict], link_key: str, margin: float = 0.10) -> dict[str, Any]:
    """Of pairs (same ``A``) whose emulated times differ by more than ``margin``, the share the cost model
    orders alike."""
    have = [r for r in rows if f"predicted[{link_key}]" in r]
    agree = total = 0
    bad = []
    for i, a in enumerate(have):
        for b in have[i + 1 :]:
            if a["accum"] != b["accum"]:
                continue
            ta, tb = a[f"step[{link_key}]"], b[f"step[{link_key}]"]
            if max(ta, tb) <= (1 + margin) * min(ta, tb):
                continue
            total += 1
            pa, pb = a[f"predicted[{link_key}]"], b[f"predicted[{link_key}]"]
            if (ta < tb) == (pa < pb):
                agree += 1
            else:
                bad.append((a["name"], b["name"]))
    return {"pairs": total, "agree": agree, "share": agree / total if total else math.nan, "disagree": bad}
