"""Module-level workers run under :func:`bastion.distributed.launch.spawn` by the distributed tests."""

from __future__ import annotations

import torch
import torch.distributed as dist

from bastion.distributed.engine import PaRO
from bastion.distributed.gpt import TinyGPT, lm_loss
from bastion.distributed.topology import Topology
from bastion.distributed.verify import OPT, all_cases, batches, exactness, make_model, reference  # noqa: F401


def memory_and_comm(rank: int, world: int, group_size: int, words, precisions, accums):
    """Memory after step 2's last backward and engine-vs-interceptor bytes of step 2, per case."""
    from bastion.distributed.emulator import NetworkEmulator

    topo = Topology(group_size)
    data = batches(2, world, max(accums))
    out = {}
    for word in words:
        for prec in precisions:
            for accum in accums:
                model = make_model(0, torch.float32, False)
                engine = PaRO(
                    model,
                    word,
                    optimizer=OPT,
                    grad_accum_steps=accum,
                    topology=topo,
                    mixed_precision=None if prec == "fp32" else prec,
                )
                with NetworkEmulator(topo) as emu:
                    for a in range(accum):
                        lm_loss(engine, data[0][rank][a]).backward()
                    engine.step()
                    engine.comm_report(reset=True)
                    emu.reset()
                    per_micro_inter = []
                    for a in range(accum):
                        before = sum(1 for e in engine.comm.log if e[1] != "intra")
                        lm_loss(engine, data[1][rank][a]).backward()
                        per_micro_inter.append(sum(1 for e in engine.comm.log if e[1] != "intra") - before)
                    mem = engine.memory_report()
                    engine.step()
                    rep = engine.comm_report(reset=True)
                    snap = emu.snapshot()
                numel = sum(f.P for u in engine.units for f in u.flats)
                out[(word, prec, accum)] = {
                    "memory": mem,
                    "engine": {k: rep[k] for k in ("intra", "inter", "cross")},
                    "engine_calls": rep["calls"],
                    "interceptor": snap["bytes"],
                    "interceptor_calls": snap["calls"],
                    "inter_calls_per_micro": per_micro_inter,
                    "padded_numel": numel,
                    "elem": 2 if prec == "bf16" else 4,
                }
    return out


def train_steps(engine, rank: int, data, steps, accum: int) -> list[float]:
    losses = []
    for s in steps:
        total = torch.zeros((), dtype=torch.float64)
        for a in range(accum):
            loss = lm_loss(engine, data[s][rank][a])
            loss.backward()
            total += loss.detach().double()
        engine.step()
        dist.all_reduce(total)
        losses.append(float(total) / (dist.get_world_size() * accum))
    return losses


def save_consolidated(rank: int, world: int, group_size: int, word: str, directory: str, steps: int):
    """Train ``steps`` AdamW steps, save consolidated; return the full state for comparison."""
    from bastion.distributed.checkpoint import save_checkpoint

    topo = Topology(group_size)
    engine = PaRO(make_model(0, torch.float64, True), word, optimizer=OPT, grad_accum_steps=2, topology=topo)
    train_steps(engine, rank, batches(steps, world, 2), range(steps), 2)
    save_checkpoint(engine, directory, consolidated=True)
    return engine.full_state()


def load_consolidated(rank: int, world: int, group_size: int, word: str, directory: str):
    from bastion.distributed.checkpoint import load_checkpoint

    topo = Topology(group_size)
    engine = PaRO(make_model(5, torch.float64, True), word, optimizer=OPT, grad_accum_steps=2, topology=topo)
    meta = load_checkpoint(engine, directory)
    other = PaRO(TinyGPT(vocab=32, dim=8, layers=1, heads=2, seq_len=8).double(), word, optimizer=OPT, topology=topo)
    try:
        load_checkpoint(other, directory)
        error = "no error"
    except ValueError as exc:
        error = str(exc)
    return engine.full_state(), meta["steps"], error


def sharded_resume(rank: int, world: int, group_size: int, word: str, directory: str, precision):
    """Uninterrupted 4 steps vs 2 steps + sharded save + fresh engine + load + 2 steps: losses and params."""
    from bastion.distributed.checkpoint import load_checkpoint, save_checkpoint

    topo = Topology(group_size)
    data = batches(4, world, 2)
    kw = dict(optimizer=OPT, grad_accum_steps=2, topology=topo, mixed_precision=precision)
    ref = PaRO(make_model(0, torch.float32, True), word, **kw)
    ref_losses = train_steps(ref, rank, data, range(4), 2)
    first = PaRO(make_model(0, torch.float32, True), word, **kw)
    losses = train_steps(first, rank, data, range(2), 2)
    save_checkpoint(first, directory)
    second = PaRO(make_model(7, torch.float32, True), word, **kw)
    load_checkpoint(second, directory)
    losses += train_steps(second, rank, data, range(2, 4), 2)
    p_ref, s_ref = ref.full_state()
    p_new, s_new = second.full_state()
    same = all(torch.equal(p_ref[n], p_new[n]) for n in p_ref) and all(
        torch.equal(s_ref[n][k], s_new[n][k]) for n in s_ref for k in s_ref[n]
    )
    errors = {}
    other = PaRO(make_model(0, torch.float32, True), "GGG" if word != "GGG" else "NNG", **kw)
    try:
        load_checkpoint(other, directory)
    except ValueError as exc:
        errors["word"] = str(exc)
    wrong = PaRO(TinyGPT(vocab=32, dim=8, layers=1, heads=2, seq_len=8), word, **kw)
    try:
        load_checkpoint(wrong, directory)
    except ValueError as exc:
        errors["model"] = str(exc)
    return {"ref": ref_losses, "resumed": losses, "same_state": same, "errors": errors}


def misuse(rank: int, world: int, group_size: int):
    """Errors raised on every rank for misuse of a live engine."""
    topo = Topology(group_size)
    out = {}
    data = batches(1, world, 2)
    engine = PaRO(make_model(0, torch.float32, False), "NIG", optimizer=OPT, grad_accum_steps=2, topology=topo)
    lm_loss(engine, data[0][rank][0]).backward()
    try:
        engine.step()
    except ValueError as exc:
        out["early_step"] = str(exc)
    lm_loss(engine, data[0][rank][1]).backward()
    try:
        lm_loss(engine, data[0][rank][1])
    except ValueError as exc:
        out["third_forward"] = str(exc)
    engine.step()
    mixed = make_model(0, torch.float32, False)
    mixed.blocks[0].fc.bias.data = mixed.blocks[0].fc.bias.data.double()
    try:
        PaRO(mixed, "NIG", optimizer=OPT, topology=topo)
    except ValueError as exc:
        out["mixed_dtypes"] = str(exc)
    return out


def fp32_losses(rank: int, world: int, group_size: int, words, steps: int, accum: int):
    """Per-step mean losses in fp32 for each word, and one process's on the concatenated batches."""
    topo = Topology(group_size)
    data = batches(steps, world, accum)
    model = make_model(0, torch.float32, False)
    opt = OPT(model.parameters())
    ref = []
    for s in range(steps):
        total = 0.0
        for a in range(accum):
            loss = lm_loss(model, torch.cat([data[s][r][a] for r in range(world)]))
            (loss / accum).backward()
            total += float(loss.detach())
        opt.step()
        opt.zero_grad()
        ref.append(total / accum)
    out = {}
    for word in words:
        engine = PaRO(make_model(0, torch.float32, False), word, optimizer=OPT, grad_accum_steps=accum, topology=topo)
        out[word] = train_steps(engine, rank, data, range(steps), accum)
    return ref, out


class Branchy(torch.nn.Module):
    """Rank 0 uses both branches, the others only ``a``: a data-dependent unused unit."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Linear(6, 6).double()
        self.b = torch.nn.Linear(6, 6).double()

    def forward(self, x: torch.Tensor, use_b: bool) -> torch.Tensor:
        h = self.a(x)
        return self.b(h) if use_b else h


def unused_on_some_ranks(rank: int, world: int, group_size: int, words):
    """find_unused_parameters=True: equal to one process summing every rank's loss; SGD, 2 steps."""
    topo = Topology(group_size)
    x = [torch.randn(4, 6, generator=torch.Generator().manual_seed(r), dtype=torch.float64) for r in range(world)]
    ref = Branchy()
    opt = torch.optim.SGD(ref.parameters(), lr=0.5)
    for _ in range(2):
        loss = sum(ref(x[r], r == 0).pow(2).mean() for r in range(world)) / world
        loss.backward()
        opt.step()
        opt.zero_grad()
    out = {}
    for word in words:
        engine = PaRO(Branchy(), word, optimizer=lambda ps: torch.optim.SGD(ps, lr=0.5), topology=topo,
                      find_unused_parameters=True)  # fmt: skip
        for _ in range(2):
            engine(x[rank], rank == 0).pow(2).mean().backward()
            engine.step()
        params, _ = engine.full_state()
        out[word] = max((params[n] - p.detach()).abs().max().item() for n, p in ref.named_parameters())
    try:
        PaRO(Branchy(), "IIG", topology=topo, find_unused_parameters=True)
    except ValueError as exc:
        out["IIG error"] = str(exc)
    return out


def peft_peak_gathered(rank: int, world: int, group_size: int, words):
    """Peak bytes of gathered parameters during the backward of a 6-block model whose big weights are frozen."""
    topo = Topology(group_size)
    data = batches(1, world, 1)
    out = {}
    for word in words:
        torch.manual_seed(0)
        model = TinyGPT(vocab=32, dim=16, layers=6, heads=2, seq_len=8).double()
        for block in model.blocks:  # LoRA-like: the matrices frozen, biases and norms trained
            for p in (block.qkv.weight, block.fc.weight, block.out.weight, block.proj.weight):
                p.requires_grad_(False)
        engine = PaRO(model, word, optimizer=OPT, topology=topo)
        peak = [0]

        def probe(grad, engine=engine, peak=peak):
            peak[0] = max(peak[0], engine.memory_report()["gathered"])

        for block in model.blocks:  # sample the gathered bytes whenever a gradient reaches a block's norm
            block.ln1.bias.register_hook(probe)
        lm_loss(engine, data[0][rank][0]).backward()
        unit = max(f.P for u in engine.units for f in u.flats) * 8 * 2  # one unit's two flats, generously
        total = sum(f.P for u in engine.units for f in u.flats) * 8 // {"I": group_size, "G": world}[word[0]]
        out[word] = {
            "peak": peak[0],
            "one_unit_bound": unit,
            "all_units": total * {"I": group_size, "G": world}[word[0]],
        }
        engine.step()
    return out


def root_unit_rejected(rank: int, world: int, group_size: int) -> str:
    topo = Topology(group_size)
    model = make_model(0, torch.float32, False)
    try:
        PaRO(model, "IIG", topology=topo, units=[model])
    except ValueError as exc:
        return str(exc)
    return "no error"


def checkpoint_errors(rank: int, world: int, group_size: int, directory: str):
    """Clear ValueErrors for bad checkpoints, raised alike on every rank."""
    import json as _json
    from pathlib import Path

    from bastion.distributed.checkpoint import load_checkpoint, save_checkpoint

    topo = Topology(group_size)
    root = Path(directory)
    data = batches(1, world, 1)
    peft = PaRO(make_model(0, torch.float64, True), "NIG", optimizer=OPT, topology=topo)
    train_steps(peft, rank, data, range(1), 1)
    save_checkpoint(peft, root / "peft", consolidated=True)
    save_checkpoint(peft, root / "peft", consolidated=True)  # overwriting a checkpoint in place works
    save_checkpoint(peft, root / "sharded")
    out = {}

    def attempt(key, fn):
        try:
            fn()
            out[key] = "no error"
        except ValueError as exc:
            out[key] = str(exc)
        dist.barrier()

    full = PaRO(make_model(0, torch.float64, False), "NIG", optimizer=OPT, topology=topo)
    attempt("peft_into_full", lambda: load_checkpoint(full, root / "peft"))
    attempt("params_only", lambda: load_checkpoint(full, root / "peft", optimizer_state=False))
    sgd = PaRO(make_model(0, torch.float64, True), "NIG", optimizer=lambda ps: torch.optim.SGD(ps, lr=0.1),
               topology=topo)  # fmt: skip
    attempt("other_optimizer", lambda: load_checkpoint(sgd, root / "peft"))
    if rank == 0:  # flip one byte in the middle of a tensor file
        f = root / "sharded" / "rank1.safetensors"
        raw = bytearray(f.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        f.write_bytes(bytes(raw))
        meta = _json.loads((root / "peft" / "meta.json").read_text())
        del meta["steps"]
        (root / "peft" / "meta.json").write_text(_json.dumps(meta))
    dist.barrier()
    same = PaRO(make_model(0, torch.float64, True), "NIG", optimizer=OPT, topology=topo)
    attempt("flipped_byte", lambda: load_checkpoint(same, root / "sharded"))
    attempt("meta_missing_field", lambda: load_checkpoint(same, root / "peft"))
    return out
