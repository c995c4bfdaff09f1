"""Cost of an SGLD step against an SGD step (issue #4, acceptance 4), one torch thread.

For the zoo's small CNN (conv32-conv64-fc128) at batch 128 and the mnist1k MLP (784-128-128-10) at
batch 64: the full training step (forward, backward, step) and ``step()`` alone, SGD with momentum
vs SGLD, interleaved repeats in one run, median of the per-repeat ratios. Target: full-step ratio
<= 1.2 on the CNN (spec measured 0.86-1.04); the MLP ratio (1.25-1.6) and the step-only ratio (4-9)
are printed, not asserted. Writes ``benchmarks/results/sgld_step.json``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bastion.core.report import environment, markdown_table, write_json
from bastion.privacy import SGLD
from bastion.zoo import SmallCNN


def _mlp() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)
    )


def _time(net: nn.Module, opt, x, y, steps: int, step_only: bool) -> float:
    total = 0.0
    for _ in range(steps):
        if step_only:
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            start = time.perf_counter()
            opt.step()
            total += time.perf_counter() - start
        else:
            start = time.perf_counter()
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
            total += time.perf_counter() - start
    return total / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", default="benchmarks/results/sgld_step.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    rows = []
    for name, build, batch in (("zoo CNN", SmallCNN, 128), ("MLP 784-128-128-10", _mlp, 64)):
        torch.manual_seed(0)
        x, y = torch.rand(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
        nets = {"SGD": build(), "SGLD": build()}
        opts = {
            "SGD": torch.optim.SGD(nets["SGD"].parameters(), lr=0.05, momentum=0.9),
            "SGLD": SGLD(nets["SGLD"].parameters(), lr=1e-4, num_data=1000, temperature=0.03),
        }
        for step_only in (False, True):
            ratios, times = [], {"SGD": [], "SGLD": []}
            for r in range(args.repeats):
                order = ("SGD", "SGLD") if r % 2 == 0 else ("SGLD", "SGD")
                t = {k: _time(nets[k], opts[k], x, y, args.steps, step_only) for k in order}
                ratios.append(t["SGLD"] / t["SGD"])
                for k in t:
                    times[k].append(t[k])
            rows.append({
                "model": name, "batch": batch, "what": "step() only" if step_only else "full step",
                "SGD ms": 1e3 * statistics.median(times["SGD"]), "SGLD ms": 1e3 * statistics.median(times["SGLD"]),
                "SGLD/SGD (median of repeats)": statistics.median(ratios),
            })  # fmt: skip
    print(markdown_table(rows))
    cnn_full = rows[0]["SGLD/SGD (median of repeats)"]
    print(f"\nCNN full-step ratio {cnn_full:.2f} (target <= 1.2): {'met' if cnn_full <= 1.2 else 'NOT met'}")
    write_json(
        Path(args.out), {"rows": rows, "cnn_full_step_ratio": cnn_full, "target": 1.2, "environment": environment()}
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
