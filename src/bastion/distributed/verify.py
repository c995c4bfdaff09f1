"""Checks of the PaRO engine against one process: used by the tests and by ``bastion reproduce paro``.

:func:`exactness` runs inside a gloo process group (see :func:`bastion.distributed.launch.spawn`): for
each (word, collective, partly-frozen) case it trains a tiny GPT for a few AdamW steps and compares
the consolidated parameters with one process trained on the concatenated batches (each micro-step's
batch of every rank, loss divided by ``A``), and checks that replicated shards are bitwise equal.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.distributed as dist

from .engine import PaRO
from .gpt import MarkovTokens, TinyGPT, lm_loss
from .topology import Topology
from .words import VALID_WORDS

__all__ = ["OPT", "all_cases", "batches", "exactness", "make_model", "reference"]

OPT = partial(torch.optim.AdamW, lr=1e-2, weight_decay=0.1)


def make_model(seed: int, dtype: torch.dtype, frozen: bool) -> TinyGPT:
    torch.manual_seed(seed)
    model = TinyGPT(vocab=32, dim=16, layers=2, heads=2, seq_len=8).to(dtype)
    if frozen:  # PEFT-like: freeze the embeddings and the first block's attention and one LayerNorm
        for p in (*model.tok.parameters(), *model.blocks[0].qkv.parameters(), *model.blocks[1].ln1.parameters()):
            p.requires_grad_(False)
    return model


def batches(steps: int, world: int, accum: int, bsz: int = 2):
    data = MarkovTokens(seed=1, vocab=32)
    return [[[data.batch(s, r, a, bsz, 8) for a in range(accum)] for r in range(world)] for s in range(steps)]


def reference(dtype: torch.dtype, frozen: bool, steps: int, world: int, accum: int, data) -> dict[str, torch.Tensor]:
    """One process on the concatenated batches: the mean over all ranks' micro-batches."""
    model = make_model(0, dtype, frozen)
    opt = OPT([p for p in model.parameters() if p.requires_grad])
    for s in range(steps):
        for a in range(accum):
            batch = torch.cat([data[s][r][a] for r in range(world)])
            (lm_loss(model, batch) / accum).backward()
        opt.step()
        opt.zero_grad()
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def exactness(rank: int, world: int, group_size: int, cases, steps: int, accum: int):
    """Every case: (word, collective, frozen). Returns max |dparam| vs one process and replica checks."""
    topo = Topology(group_size)
    data = batches(steps, world, accum)
    refs = {fr: reference(torch.float64, fr, steps, world, accum, data) for fr in (False, True)}
    out = {}
    for word, collective, frozen in cases:
        model = make_model(0, torch.float64, frozen)
        engine = PaRO(model, word, optimizer=OPT, grad_accum_steps=accum, collective=collective, topology=topo)
        for s in range(steps):
            for a in range(accum):
                lm_loss(engine, data[s][rank][a]).backward()
            engine.step()
        params, _ = engine.full_state()
        diff = max((params[n] - refs[frozen][n]).abs().max().item() for n in params)
        # replicated optimizer states (os = N: every rank; os = I: the same intra shard in every group)
        states = torch.cat(
            [v.reshape(-1) for u in engine.units for f in u.trainable_flats
             for v in engine.optimizer.state[f.master].values() if v.dim() > 0]
        )  # fmt: skip
        group = {"N": topo.world, "I": topo.inter, "G": None}[engine.word.os]
        same = True
        if group is not None:
            size = dist.get_world_size(group)
            peers = [torch.empty_like(states) for _ in range(size)]
            dist.all_gather(peers, states, group=group)
            same = all(torch.equal(peers[0], t) for t in peers)
        # replicated parameter storage (N: all ranks; I: same local index in every group) bitwise equal
        pers = torch.cat([f.persistent for u in engine.units for f in u.flats])
        peers = [torch.empty_like(pers) for _ in range(topo.g)]
        dist.all_gather(peers, pers, group=topo.inter)
        replicas = engine.word.p == "G" or all(torch.equal(peers[0], t) for t in peers)
        if engine.word.p == "N":
            allp = [torch.empty_like(pers) for _ in range(world)]
            dist.all_gather(allp, pers)
            replicas = replicas and all(torch.equal(allp[0], t) for t in allp)
        out[(word, collective, frozen)] = {"max_diff": diff, "state_replicas": same, "replicas": replicas}
    return out


def all_cases():
    cases = [(w, "hier", False) for w in VALID_WORDS] + [(w, "hier", True) for w in VALID_WORDS]
    cases += [(w, "flat", fr) for w in ("NGG", "GGG") for fr in (False, True)]
    return cases
