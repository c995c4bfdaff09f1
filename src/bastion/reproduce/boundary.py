"""Reproduction of the subspace boundary attacks (QEBA, CVPR 2020; NonLinear-BA, AISTATS 2021; PSBA,
ICML 2021) against their HSJA baseline (IEEE S&P 2020), on offline data (spec boundary.md).

Implemented so far: HSJA, QEBA-S (spatial, r=2), QEBA-F (low DCT block, r=2), QEBA-I (PCA, k=100,
of the zoo MLP's and wide/shallow net's input gradients on the 4,000 MNIST-5k training digits; the
target is never a reference) and the Boundary Attack baseline (grey images only). NonLinear-BA
(AE/VAE/GAN) and PSBA are not implemented yet and are missing from the tables.

Quick: the zoo CNN, the first 10 correctly classified test digits, untargeted L2, 1,000 queries,
``hsja`` preset. Full: the zoo CNN and ResNet-style targets, 20 digits, 2,000 queries, untargeted and
targeted (target ``(y + 1) mod 10``, starting from the first test digit the target model puts in
that class), plus EfficientNet-Lite0 on 6 targeted pairs of foolbox ImageNet photos with HSJA,
QEBA-S r=4 and QEBA-F r=4 under the ``official`` preset.

The authors' figures (CelebA ResNet-18 at 224 px, 50 targeted pairs, from their logs) are shown as
reference; ours are on 28x28 digits, where the spec's prototype found the subspace gain to be a
low-budget effect.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from .. import zoo
from ..attacks.decision import HSJA, BoundaryAttack, qeba, zoo_gradient_basis
from ..core.registry import REPRODUCTIONS
from ..data import load_dataset
from .base import ReproductionResult, claim

CHECKPOINTS = (500, 1000, 2000)
AUTHORS_CELEBA = {  # median MSE at 1K / 2K queries, from the authors' PSBA logs (spec boundary.md)
    "HSJA": (1.1e-3, 3.0e-4), "QEBA-S": (1.9e-4, 5.3e-5), "QEBA-F": (2.1e-4, 6.8e-5), "QEBA-I": (2.1e-4, 5.6e-5),
}  # fmt: skip


def _methods(ratio: int, basis: torch.Tensor | None, preset: str, seed: int) -> dict:
    methods = {
        "HSJA": HSJA(preset=preset, seed=seed),
        "QEBA-S": qeba(subspace="spatial", ratio=ratio, preset=preset, seed=seed),
        "QEBA-F": qeba(subspace="frequency", ratio=ratio, preset=preset, seed=seed),
    }
    if basis is not None:
        methods["QEBA-I"] = qeba(subspace="intrinsic", basis=basis, preset=preset, seed=seed)
        methods["Boundary Attack"] = BoundaryAttack(seed=seed)  # the baseline, on the grey images only
    return methods


def _attack_all(methods: dict, model, x, y, budget, tau, case, quiet, **kw) -> tuple[list[dict], dict]:
    rows, curves = [], {}
    for name, attack in methods.items():
        start = time.perf_counter()
        r = attack(model.net, x, y, budget=budget, preprocess=model.preprocess, quiet=quiet, **kw)
        seconds = time.perf_counter() - start
        row = {"case": case, "method": name, "images": len(y), "budget": budget}
        for q in sorted({*(q for q in CHECKPOINTS if q <= budget), budget}):
            row[f"median MSE @{q}"] = r.median_mse_at(q)
        row[f"success (MSE<={tau:g})"] = float((r.mse <= tau).float().mean())
        row["queries used (max)"] = int(r.queries.max())
        row["seconds"] = seconds
        rows.append(row)
        qs = np.linspace(0, budget, 41)[1:]
        curves[name] = (qs, [r.median_mse_at(int(q)) for q in qs])
    return rows, curves


def _digits(model, n: int):
    test = load_dataset("mnist5k", "test")
    keep = (model.predict(test.images[:200]) == test.labels[:200]).nonzero().flatten()[:n]
    return test, test.images[keep], test.labels[keep]


class BoundaryReproduction:
    """``n_images`` and ``budget`` override the quick / full sizes (tests use tiny ones)."""

    name = "boundary"
    system = "Decision-based attacks"
    title = "HSJA vs QEBA subspace probes, distance at equal queries (MNIST-5k zoo targets)"

    def __init__(self, n_images: int | None = None, budget: int | None = None) -> None:
        self.n_images, self.budget = n_images, budget

    def run(self, out_dir: Path, *, quick: bool, seed: int, quiet: bool) -> ReproductionResult:
        basis = zoo_gradient_basis(k=100, seed=seed)
        rows, all_curves = [], {}
        targets = ["mnist5k-cnn"] if quick else ["mnist5k-cnn", "mnist5k-resnet"]
        n, budget = (10, 1000) if quick else (20, 2000)
        n, budget = self.n_images or n, self.budget or budget
        q1 = min(1000, budget)
        for target in targets:
            model = zoo.load(target)
            test, x, y = _digits(model, n)
            modes = [("untargeted", {})]
            if not quick:
                t = (y + 1) % 10
                preds = model.predict(test.images)
                starts = torch.stack([test.images[((test.labels == c) & (preds == c)).nonzero()[0, 0]] for c in t])
                modes.append(("targeted", {"targets": t, "starting_points": starts}))
            for mode, kw in modes:
                case = f"{target}, {mode}"
                r, c = _attack_all(_methods(2, basis, "hsja", seed), model, x, y, budget, 1e-2, case, quiet, **kw)
                rows += r
                all_curves[case] = c
        if not quick:
            rows += self._imagenet(seed, quiet, all_curves)
        table = {(r["case"], r["method"]): r for r in rows}
        claims = []
        case = "mnist5k-cnn, untargeted"
        hs = table[(case, "HSJA")][f"median MSE @{q1}"]
        m = {f"{k} @{q1}": table[(case, k)][f"median MSE @{q1}"] for k in ("HSJA", "QEBA-S", "QEBA-F", "QEBA-I")}
        claims.append(claim(
            f"At {q1} queries QEBA-S, QEBA-F and QEBA-I each reach a lower median MSE than HSJA (zoo CNN, untargeted)",
            m, lambda v, hs=hs: all(v[f"{k} @{q1}"] < hs for k in ("QEBA-S", "QEBA-F", "QEBA-I")),
            reference={f"{k} @1K (authors, CelebA)": v[0] for k, v in AUTHORS_CELEBA.items()}
            | {"prototype here": "QEBA-S 8.7e-3, -F 9.4e-3, -I 8.8e-3 vs HSJA 1.35e-2"},
        ))  # fmt: skip
        if not quick:
            case = "EfficientNet-Lite0, targeted"
            for q in (1000, 2000):
                hs = table[(case, "HSJA")][f"median MSE @{q}"]
                m = {f"{k} @{q}": table[(case, k)][f"median MSE @{q}"] for k in ("HSJA", "QEBA-S", "QEBA-F")}
                claims.append(claim(
                    f"EfficientNet-Lite0, targeted: at {q} queries QEBA-S and QEBA-F reach a lower median MSE "
                    "than HSJA",
                    m, lambda v, hs=hs, q=q: v[f"QEBA-S @{q}"] < hs and v[f"QEBA-F @{q}"] < hs,
                    reference={"authors' CelebA ratio HSJA/QEBA": "4-6x at 1K and 2K"},
                ))  # fmt: skip
        figures = [self._figure(all_curves, out_dir)]
        return ReproductionResult(
            name=self.name, system=self.system, title=self.title, quick=quick, seed=seed,
            config={"targets": targets, "images": n, "budget": budget, "preset": "hsja", "norm": "l2",
                    "QEBA-S/F ratio": 2, "QEBA-I": "PCA k=100 of mnist5k-mlp + mnist5k-wide gradients, basis_only",
                    "success threshold": "MSE <= 1e-2 (MNIST), 1e-3 (ImageNet)",
                    "torch_threads": torch.get_num_threads()},
            tables={"Median MSE at equal queries": rows}, claims=claims, figures=figures,
            notes=["NonLinear-BA (AE/VAE/GAN), PSBA and Sign-OPT are not implemented yet.",
                   "On 28x28 digits the subspace gain is small at 1K queries and medians of 10 digits are noisy "
                   "(spec prototype: QEBA-I 8.8e-3 vs HSJA 1.35e-2); the full run uses 20 digits per target.",
                   "Authors' figures are CelebA ResNet-18 at 224 px (targeted); ours are 28x28 digits."],
        )  # fmt: skip

    def _imagenet(self, seed: int, quiet: bool, curves: dict) -> list[dict]:
        lite = zoo.load("efficientnet-lite0")
        imgs = load_dataset("imagenet-samples", "all")
        right = (lite.predict(imgs.images) == imgs.labels).nonzero().flatten().tolist()
        pairs = [(right[i], right[i + 1]) for i in range(0, 12, 2)]  # (original, starting image of the target)
        x = imgs.images[[a for a, _ in pairs]]
        y = imgs.labels[[a for a, _ in pairs]]
        starts = imgs.images[[b for _, b in pairs]]
        t = imgs.labels[[b for _, b in pairs]]
        rows, c = _attack_all(_methods(4, None, "official", seed), lite, x, y, 2000, 1e-3,
                              "EfficientNet-Lite0, targeted", quiet, targets=t, starting_points=starts)  # fmt: skip
        curves["EfficientNet-Lite0, targeted"] = c
        return rows

    @staticmethod
    def _figure(curves: dict, out_dir: Path) -> str:
        from ..core.report import new_figure, save_figure

        cases = list(curves)
        fig, axes = new_figure(1, len(cases), figsize=(5 * len(cases), 3.8))
        axes = np.atleast_1d(axes)
        for ax, case in zip(axes, cases, strict=True):
            for name, (qs, mse) in curves[case].items():
                ax.plot(qs, mse, label=name)
            ax.set_yscale("log")
            ax.set_xlabel("queries per image")
            ax.set_ylabel("median MSE")
            ax.set_title(case, fontsize=9)
            ax.legend(fontsize=8)
        save_figure(fig, out_dir / "curves.png")
        return "curves.png"


REPRODUCTIONS.register("boundary", BoundaryReproduction())
