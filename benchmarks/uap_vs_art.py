"""ART 1.20.1 ``UniversalPerturbation`` against our universal perturbations on the MNIST two-owner zoo (issue #9,
acceptance 5).

ART runs the Moosavi-Dezfooli loop with its DeepFool (``attacker="deepfool"``, ``delta=0.2``, ``eps=0.1``,
``norm=inf``, ``max_iter`` capped at ``--passes``) on ``--n`` of owner A's training digits (the attacker's own
data); ours: :func:`deepfool_uap` on the same digits with ART's DeepFool settings (overshoot 1e-6, 100 DeepFool
iterations, all 10 class gradients) and with its defaults (overshoot 0.02, 10 iterations), SGD-UAP on the same
digits, and the data-free UAPs (divergence with the range prior and with jigsaw images: no data at all). The
surrogate is owner A's model; fooling rates on the MNIST-5k test split (seen by neither owner): white box (the
surrogate), same architecture (owner B's model of that architecture), cross architecture (mean over owner B's
other three). Wall time of each crafting, one thread. Writes ``benchmarks/results/uap_vs_art.json``.
"""

from __future__ import annotations

import argparse
import random
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bastion.attacks.transfer.uap import DataFreeUAP, deepfool_uap, fooling_rate, sgd_uap, sign_noise
from bastion.attacks.transfer.uap_zoo import mnist_owner_data, mnist_owner_model, mnist_test
from bastion.core.report import environment, markdown_table, write_json
from bastion.zoo import ARCHITECTURES

XI = 0.1


def art_uap(model: nn.Module, images: torch.Tensor, passes: int, seed: int) -> torch.Tensor:
    from art.attacks.evasion import UniversalPerturbation
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(model, loss=nn.CrossEntropyLoss(), input_shape=tuple(images.shape[1:]), nb_classes=10,
                            clip_values=(0.0, 1.0))  # fmt: skip
    random.seed(seed)  # ART draws its pass order with the global `random`
    np.random.seed(seed)  # noqa: NPY002  (and its NumPy calls with the legacy global generator)
    attack = UniversalPerturbation(clf, attacker="deepfool", attacker_params={"verbose": False}, delta=0.2,
                                   max_iter=passes, eps=XI, norm=np.inf, verbose=False)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        attack.generate(images.numpy())
    return torch.from_numpy(np.asarray(attack.noise, dtype=np.float32))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=200, help="attacker images for the data-driven methods")
    parser.add_argument("--passes", type=int, default=3, help="max passes (ART max_iter) over those images")
    parser.add_argument("--surrogates", default="cnn,mlp")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/uap_vs_art.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    archs = tuple(ARCHITECTURES)
    own_b = {a: mnist_owner_model("B", a) for a in archs}
    test = mnist_test().images
    gen = torch.Generator().manual_seed(args.seed)
    pool = mnist_owner_data("A").images
    images = pool[torch.randperm(len(pool), generator=gen)[: args.n]]
    with torch.no_grad():
        clean_b = {a: m(test).argmax(1) for a, m in own_b.items()}
    rows = []
    for arch in args.surrogates.split(","):
        sur = mnist_owner_model("A", arch)
        methods = {
            "sign noise": lambda: sign_noise((1, 28, 28), XI, seed=args.seed),
            "ART UniversalPerturbation (deepfool)": lambda sur=sur: art_uap(sur, images, args.passes, args.seed),
            "deepfool_uap, ART's DeepFool settings": lambda sur=sur: deepfool_uap(
                sur, images, XI, max_passes=args.passes, overshoot=1e-6, df_max_iter=100, seed=args.seed).delta,
            "deepfool_uap, defaults": lambda sur=sur: deepfool_uap(
                sur, images, XI, max_passes=args.passes, seed=args.seed).delta,
            "SGD-UAP (same images)": lambda sur=sur: sgd_uap(
                sur, images, XI, steps=300, batch_size=32, seed=args.seed).delta,
            "data-free divergence, range prior": lambda sur=sur: DataFreeUAP(
                sur, xi=XI, prior="range", steps=300, batch_size=32, seed=args.seed).fit((1, 28, 28)).delta,
            "data-free divergence, jigsaw": lambda sur=sur: DataFreeUAP(
                sur, xi=XI, prior="jigsaw", steps=300, batch_size=32, seed=args.seed).fit((1, 28, 28)).delta,
        }  # fmt: skip
        art_seconds = None
        for name, make in methods.items():
            start = time.perf_counter()
            delta = make()
            seconds = time.perf_counter() - start
            if name.startswith("ART"):
                art_seconds = seconds
            row = {
                "surrogate": f"owner A {arch}",
                "method": name,
                "data": "none" if "data-free" in name or name == "sign noise" else f"{args.n} owner-A digits",
                "linf": float(delta.abs().max()),
                "white": fooling_rate(sur, test, delta, 500),
                "same-arch": fooling_rate(own_b[arch], test, delta, 500, clean_labels=clean_b[arch]),
                "cross-arch": float(
                    np.mean(
                        [fooling_rate(own_b[o], test, delta, 500, clean_labels=clean_b[o]) for o in archs if o != arch]
                    )
                ),
                "seconds": seconds,
            }
            row["ART s / this s"] = (art_seconds / seconds) if art_seconds and seconds > 0 else None
            rows.append(row)
            print(markdown_table([row]).splitlines()[-1], flush=True)
    print()
    print(markdown_table(rows))
    write_json(Path(args.out), {"rows": rows, "xi": XI, "environment": environment(), "args": vars(args)})
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
