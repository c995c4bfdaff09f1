"""PaRO against torch's engines on 8 gloo ranks (2 groups x 4) under the emulated slow link (issue #5, acc. 5).

One run, one launch: the 10 main PaRO words, flat ZeRO-2/3 (our engine, ``collective="flat"``), DDP,
DDP + ``ZeroRedundancyOptimizer``, FSDP2 1-D (FULL_SHARD), HSDP eager and lazy, at A=4 and again at A=1
on the same calibrated links (rho_c = 1 and 4). Each rank uses one torch thread. Virtual step time =
measured compute (thread CPU time) + modelled communication of what each system issued; wall time is
not comparable (8 ranks share the cores). Prints a table and writes
``benchmarks/results/paro_vs_fsdp.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bastion.core.report import environment, markdown_table, write_json
from bastion.distributed.bench import BASELINES, BenchConfig, ordering_agreement, run_benchmark
from bastion.distributed.words import MAIN_WORDS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=4, help="timed steps per contender (after 1 warm-up)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/paro_vs_fsdp.json"))
    args = ap.parse_args()
    names = [*MAIN_WORDS, "NGG/flat", "GGG/flat", *BASELINES]
    cfg = BenchConfig(steps=args.steps)
    res = run_benchmark(cfg, names, accum_one=names)
    rows = res["rows"]
    table = [
        {
            "system": r["name"], "A": r["accum"],
            "samples/s rho=1": r["samples/s[rho=1]"], "samples/s rho=4": r["samples/s[rho=4]"],
            "compute s": r["compute"], "comm s rho=1": r["comm[rho=1]"], "comm s rho=4": r["comm[rho=4]"],
            "intra MB": r["bytes_intra"] / 1e6, "inter+cross MB": (r["bytes_inter"] + r["bytes_cross"]) / 1e6,
            "state MB": r["states"]["total"] / 1e6, "final loss": r["losses"][-1],
        }
        for r in rows
    ]  # fmt: skip
    print(markdown_table(table, floatfmt=".4g"))
    summary = []
    for key in ("rho=1", "rho=4"):
        by = {r["name"]: r for r in rows if r["accum"] == cfg["grad_accum"]}
        best = max((by[w] for w in MAIN_WORDS), key=lambda r: r[f"samples/s[{key}]"])
        sharded = max((by[w] for w in MAIN_WORDS if w != "NNN"), key=lambda r: r[f"samples/s[{key}]"])
        row = {"link": key, "best word": best["name"], "best sharded": sharded["name"]}
        for other in ("fsdp2", "GGG/flat", "hsdp", "hsdp-lazy", "ddp"):
            row[f"best / {other}"] = best[f"samples/s[{key}]"] / by[other][f"samples/s[{key}]"]
        summary.append(row)
    print()
    print(markdown_table(summary, floatfmt=".3g"))
    agree = {k: ordering_agreement(rows, k) for k in ("rho=1", "rho=4")}
    print("\ncost model vs emulation, pairs > 10 % apart ordered alike:",
          {k: f"{v['agree']}/{v['pairs']}" for k, v in agree.items()})  # fmt: skip
    print(f"\nwall time of the launch: {res['wall_s']:.1f} s (8 ranks on the shared cores)")
    write_json(args.out, {**res, "summary": summary, "agreement": agree, "environment": environment()})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
