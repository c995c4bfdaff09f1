"""What BlackBox costs on top of calling the model: validation, accounting, chunking.

Times the raw classifier (``preprocess`` + ``net`` under ``no_grad``, evaluated in the same chunks)
against ``BlackBox`` on the same inputs, for several chunk sizes, interleaved, on the zoo's MNIST-5k
CNN and EfficientNet-Lite0, one torch thread, best of ``--repeats``. ``overhead`` is the relative
extra time (0.02 = 2 %). Prints a table and writes ``benchmarks/results/blackbox_overhead.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from bastion import zoo
from bastion.core.report import environment, markdown_table, write_json
from bastion.data import load_dataset


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/blackbox_overhead.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cases = [
        ("mnist5k-cnn", load_dataset("mnist5k", "test").images[:1000], (64, 256, 1000)),
        ("efficientnet-lite0", load_dataset("imagenet-samples", "all").images[:16], (4, 16)),
    ]
    rows = []
    for name, x, chunks in cases:
        model = zoo.load(name)
        clf = model.classifier()

        for chunk in chunks:

            def raw(clf=clf, x=x, chunk=chunk):
                with torch.no_grad():
                    torch.cat([clf(x[i : i + chunk]).argmax(1) for i in range(0, len(x), chunk)])

            box = model.blackbox(batch_size=chunk)
            # interleave so that machine load hits both alike; best of repeats for each
            raw_s, bb_s = [], []
            for _ in range(args.repeats):
                raw_s.append(best_of(raw, 1))
                bb_s.append(best_of(lambda box=box, x=x: box(x), 1))
            rows.append({
                "model": name, "n": len(x), "chunk": chunk, "raw ms": 1e3 * min(raw_s),
                "blackbox ms": 1e3 * min(bb_s), "overhead": min(bb_s) / min(raw_s) - 1,
                "queries counted per call": box.total_queries // args.repeats,
            })  # fmt: skip
    print(markdown_table(rows))
    write_json(Path(args.out), {"rows": rows, "repeats": args.repeats, "environment": environment()})
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
