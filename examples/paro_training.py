"""PaRO in one script: 4 local gloo ranks (2 groups x 2) train a tiny GPT with NIG, then the advisor.

Run: ``.venv/bin/python examples/paro_training.py`` (about 20 s on 2 cores). For real jobs use
``torchrun --nproc-per-node 8 -m bastion.distributed.train --strategy NIG --group-size 4``.
"""

from __future__ import annotations

from functools import partial

import torch

from bastion.distributed import PaRO, save_checkpoint
from bastion.distributed.costmodel import advise
from bastion.distributed.gpt import MarkovTokens, TinyGPT, lm_loss
from bastion.distributed.launch import spawn


def train(rank: int, world: int, out_dir: str) -> dict:
    torch.manual_seed(0)
    model = TinyGPT(vocab=256, dim=64, layers=2, heads=4, seq_len=32)
    engine = PaRO(
        model, "NIG", group_size=2, optimizer=partial(torch.optim.AdamW, lr=3e-3), grad_accum_steps=4
    )  # params replicated, grads sharded in the group, optimizer states sharded globally
    data = MarkovTokens(seed=0)
    losses, last = [], {}
    for step in range(30):
        engine.comm_report(reset=True)
        for micro in range(4):
            loss = lm_loss(engine, data.batch(step, rank, micro, batch_size=8, seq_len=32))
            loss.backward()  # intra-group reduce-scatter only: no inter-group traffic on micro-steps
        engine.step()  # inter-group reduce-scatter once, AdamW on this rank's shard, all-gathers
        losses.append(float(loss.detach()))
        last = engine.comm_report(reset=True)  # bytes this rank moved in this step
    save_checkpoint(engine, f"{out_dir}/nig-final", consolidated=True)  # loads under any word / world size
    return {"losses": losses, "memory": engine.memory_report(), "comm": last}


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        res = spawn(train, 4, tmp)
    print(f"loss {res['losses'][0]:.3f} -> {res['losses'][-1]:.3f} after 30 steps")
    mem = res["memory"]
    print(f"rank 0 model states: {mem['total']:,} bytes (formula: {mem['expected']:,}); gathered: {mem['gathered']}")
    comm = res["comm"]
    print(
        f"one step's traffic, rank 0: intra {comm['intra']:,} B, inter {comm['inter']:,} B "
        f"(inter bytes on micro-steps: {sum(v['inter'] for k, v in comm['by_phase'].items() if k.startswith('micro'))})"
    )
    print("\nadvisor, LLaMA-7B on 64 A100s (8 per node, 25 GB/s between nodes), A=4, micro-batch 2:")
    for row in advise("llama-7b", "a100-ib", 64, 4, 2)[:5]:
        print(f"  {row['strategy']:6s} fits={row['fits']} tokens/s={row['tokens_per_s']:,.0f}")
