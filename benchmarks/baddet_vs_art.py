"""Our BadDet poisoners against ART 1.20.1's on the same scenes (issue #8, acceptance 7).

ART runs at ``percent_poison=1.0`` with a trigger function that stamps the crop's top-left (its
poisoners paste ``backdoor.poison`` over the crop of each box, or over the whole image for GMA).
Ours poisons the same images (every eligible one, ``indices=``). Checked: RMA (on images without a
target object, where ART's ``class_source=None`` and ours treat boxes alike), GMA and ODA give equal
images and annotations; OGA is compared in structure (one added target box per image, the trigger
inside it; ART draws its box and place with the global NumPy RNG). Timed: each library's wall time,
median of ``--repeats``, alternating order; one thread. Writes ``benchmarks/results/baddet_vs_art.json``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from bastion.backdoor import GMA, ODA, OGA, RMA, chessboard, scenes
from bastion.core.report import environment, markdown_table, write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/baddet_vs_art.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from art.attacks.poisoning import (
        BadDetGlobalMisclassificationAttack,
        BadDetObjectDisappearanceAttack,
        BadDetObjectGenerationAttack,
        BadDetRegionalMisclassificationAttack,
        PoisoningAttackBackdoor,
    )

    data = scenes(args.n, seed=0)
    trig = chessboard()
    th, tw = trig.shape[1:]
    trig_hwc = trig.permute(1, 2, 0).numpy()

    def stamp(x):
        x = x.copy()
        x[:, :th, :tw, :] = trig_hwc
        return x

    backdoor = PoisoningAttackBackdoor(stamp)
    no_target = [i for i, t in enumerate(data.targets) if not bool((t["labels"] == 0).any())]
    cases = {
        "GMA": (GMA(target=0, trigger=trig),
                BadDetGlobalMisclassificationAttack(backdoor, class_target=0, percent_poison=1.0), None),
        "ODA": (ODA(target=0, trigger=trig),
                BadDetObjectDisappearanceAttack(backdoor, class_source=0, percent_poison=1.0), None),
        "RMA": (RMA(target=0, trigger=trig),
                BadDetRegionalMisclassificationAttack(backdoor, class_target=0, percent_poison=1.0), no_target),
        "OGA": (OGA(target=0, trigger=trig),
                BadDetObjectGenerationAttack(backdoor, bbox_height=2 * th, bbox_width=2 * tw, class_target=0,
                                             percent_poison=1.0), None),
    }  # fmt: skip
    rows = []
    for name, (ours, theirs, subset) in cases.items():
        subset = list(range(args.n)) if subset is None else subset
        x, tg = data.images[subset], [data.targets[i] for i in subset]
        idx = ours.eligible(tg)
        if name == "ODA":  # ART poisons only images holding the source class: the same set as our eligible ones
            keep = idx.tolist()
            x, tg, idx = x[keep], [tg[i] for i in keep], torch.arange(len(keep))
        x_np = x.permute(0, 2, 3, 1).numpy().copy()
        y_np = [{"boxes": t["boxes"].numpy(), "labels": t["labels"].numpy()} for t in tg]
        times = {"bastion": [], "art": []}
        for r in range(args.repeats):
            for lib in ["bastion", "art"] if r % 2 == 0 else ["art", "bastion"]:
                start = time.perf_counter()
                if lib == "bastion":
                    mine = ours(x, tg, indices=idx)
                else:
                    x_art, y_art = theirs.poison(x_np.copy(), y_np)
                times[lib].append(time.perf_counter() - start)
        if name == "OGA":
            same = all(len(b["labels"]) == len(t["labels"]) + 1 and int(b["labels"][-1]) == 0 for b, t in
                       zip(y_art, tg, strict=True)) and all(len(m["labels"]) == len(t["labels"]) + 1 for m, t in
                                                             zip(mine.targets, tg, strict=True))  # fmt: skip
            check = "structure (one added target box per image)"
        else:
            same = np.array_equal(np.asarray(x_art), mine.images.permute(0, 2, 3, 1).numpy()) and all(
                np.array_equal(a["boxes"].numpy(), b["boxes"]) and np.array_equal(a["labels"].numpy(), b["labels"])
                for a, b in zip(mine.targets, y_art, strict=True)
            )
            check = "images and annotations equal"
        t_ours, t_art = statistics.median(times["bastion"]), statistics.median(times["art"])
        rows.append({"attack": name, "images": len(tg), "poisoned": len(idx), "check": check, "equal": bool(same),
                     "bastion s": t_ours, "ART s": t_art, "speed-up": t_art / t_ours})  # fmt: skip
    print(markdown_table(rows))
    write_json(Path(args.out), {"rows": rows, "environment": environment(), "args": vars(args)})
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
