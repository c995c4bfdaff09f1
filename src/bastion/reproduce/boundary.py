"""Reproduction of the subspace boundary attacks (QEBA, CVPR 2020; NonLinear-BA, AISTATS 2021; PSBA,
ICML 2021) against their HSJA baseline (IEEE S&P 2020), on offline data (spec boundary.md).

Methods on the grey images, all under the ``hsja`` preset: HSJA, QEBA-S (spatial, r=2), QEBA-F (low
DCT block, r=2), QEBA-I (PCA, k=100, of the zoo MLP's and wide/shallow net's input gradients on the
4,000 MNIST-5k training digits; the target is never a reference), NonLinear-BA with an AE, a VAE and a
GAN trained on those gradients, PSBA with a progressive GAN 7 -> 14 -> 28 at the scale chosen on
validation digits (test digits 200 onwards, never attacked), and the Boundary Attack and Sign-OPT
baselines. The full
run adds PSBA without the probe orientation and PSBA's frequency variant (low 14x14 DCT block).

Quick: the zoo CNN, the first 10 correctly classified test digits, untargeted L2, 1,000 queries.
Full: the zoo CNN (untargeted to 5,000 queries, so the 5K column exists) and ResNet-style targets, 20
digits, 2,000 queries, untargeted and targeted (target ``(y + 1) mod 10``, starting from the first
test digit the target model puts in that class), plus EfficientNet-Lite0 on 6 targeted pairs of
foolbox ImageNet photos with HSJA, QEBA-S r=4 and QEBA-F r=4 under the ``official`` preset
(generators at 224 px are out of reach of a CPU).

Two diagnostic tables describe each sampler (white-box, for the report only): its *probe alignment*
``d E[cos^2(u, g)]`` between probes ``u`` and the target's true input gradient ``g`` at the attacked
digits (1 for isotropic probes; higher means the probes hold more of the gradient), and the probes'
*effective dimension* (participation ratio of 200 probes). An estimate needs both: probes aligned
with the gradient but confined to a few directions cannot resolve it.

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
from ..attacks.decision import (
    HSJA,
    BoundaryAttack,
    SignOPT,
    nonlinear_ba,
    psba,
    psba_scale_search,
    qeba,
    zoo_generator,
    zoo_gradient_basis,
)
from ..core.registry import REPRODUCTIONS
from ..data import load_dataset
from .base import ReproductionResult, claim

CHECKPOINTS = (500, 1000, 2000, 5000)
AUTHORS_CELEBA = {  # median MSE at 1K / 2K / 5K queries, from the authors' PSBA logs (spec boundary.md)
    "HSJA": (1.1e-3, 3.0e-4, 6.6e-5), "QEBA-S": (1.9e-4, 5.3e-5, 1.9e-5), "QEBA-F": (2.1e-4, 6.8e-5, 1.9e-5),
    "QEBA-I": (2.1e-4, 5.6e-5, 9.6e-6), "NLBA-AE": (7.5e-4, 2.4e-4, 7.5e-5), "NLBA-VAE": (3.5e-4, 1.3e-4, 4.3e-5),
    "PSBA (28x28)": (3.7e-5, 2.8e-5, 2.4e-5), "PSBA (224)": (2.3e-4, 1.2e-4, 7.7e-5),
    "Sign-OPT": (2.5e-3, 6.2e-4, 9.9e-5),
}  # fmt: skip
QEBA = ("QEBA-S", "QEBA-F", "QEBA-I")
REPORTED = "Issue #3 reports this paper claim (3c) without making acceptance depend on it."
NLBA = ("NLBA-AE", "NLBA-VAE", "NLBA-GAN")


def _methods(ratio: int, preset: str, seed: int, grey: dict | None = None, full: bool = False) -> dict:
    """The attacks of one case; ``grey`` holds the basis, generators and PSBA scale of the MNIST targets."""
    methods = {
        "HSJA": HSJA(preset=preset, seed=seed),
        "QEBA-S": qeba(subspace="spatial", ratio=ratio, preset=preset, seed=seed),
        "QEBA-F": qeba(subspace="frequency", ratio=ratio, preset=preset, seed=seed),
    }
    if grey is not None:
        methods["QEBA-I"] = qeba(subspace="intrinsic", basis=grey["basis"], preset=preset, seed=seed)
        for name, kind in (("NLBA-AE", "ae"), ("NLBA-VAE", "vae"), ("NLBA-GAN", "gan")):
            methods[name] = nonlinear_ba(grey[kind], preset=preset, seed=seed)
        methods["PSBA"] = psba(grey["pgan"], scale=grey["scale"], preset=preset, seed=seed)
        if full:
            methods["PSBA (no orient)"] = psba(grey["pgan"], scale=grey["scale"], orient=False, preset=preset,
                                               seed=seed)  # fmt: skip
            methods["PSBA-F (f=2)"] = psba(grey["pgan"], scale=grey["scale"], frequency_ratio=2, preset=preset,
                                           seed=seed)  # fmt: skip
        methods["Boundary Attack"] = BoundaryAttack(seed=seed)  # the baselines, on the grey images only
        methods["Sign-OPT"] = SignOPT(seed=seed)
    return methods


def _probe_stats(methods: dict, model, x: torch.Tensor, seed: int, probes: int = 200) -> tuple[dict, dict]:
    """Per sampler: alignment ``d E[cos^2(u, g)]`` with the target's input gradients ``g`` at ``x``, and
    the probes' effective dimension (participation ratio ``(sum l)^2 / sum l^2`` of the eigenvalues ``l``
    of their second-moment matrix; ``probes`` isotropic unit vectors in ``d`` dims give about
    ``probes d / (probes + d)``)."""
    net = model.classifier().eval()
    xg = x.clone().requires_grad_(True)
    logits = net(xg)
    top2 = logits.topk(2, dim=1).values
    (g,) = torch.autograd.grad((top2[:, 0] - top2[:, 1]).sum(), xg)  # the margin's gradient: the boundary normal
    g = g.flatten(1)
    g = g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
    d = g.shape[1]
    align, dims = {}, {}
    for name, attack in methods.items():
        sampler = getattr(attack, "sampler", None)
        if sampler is None:
            continue
        gen = torch.Generator().manual_seed(seed)
        draws = [sampler(probes, tuple(x.shape[1:]), gen).flatten(1).double() for _ in g]
        cos2 = [((u @ gi.double()) ** 2).mean() for u, gi in zip(draws, g, strict=True)]
        align[name] = float(d * torch.stack(cos2).mean())
        lam = torch.linalg.eigvalsh(draws[0] @ draws[0].T)  # same non-zero spectrum as u^T u, cheaper
        dims[name] = float(lam.sum() ** 2 / (lam**2).sum())
    return align, dims


def _attack_all(methods: dict, model, x, y, budget, tau, case, quiet, **kw) -> tuple[list[dict], dict]:
    rows, curves = [], {}
    for name, attack in methods.items():
        start = time.perf_counter()
        r = attack(model.net, x, y, budget=budget, preprocess=model.preprocess, quiet=quiet, **kw)
        seconds = time.perf_counter() - start
        row = {"case": case, "method": name, "images": len(y), "budget": budget}
        for q in sorted({*CHECKPOINTS, budget}):
            row[f"median MSE @{q}"] = r.median_mse_at(q) if q <= budget else None
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


def _validation_digits(model, n: int):
    """Digits for PSBA's scale search: correctly classified test digits from index 200 on (never attacked)."""
    test = load_dataset("mnist5k", "test")
    keep = 200 + (model.predict(test.images[200:400]) == test.labels[200:400]).nonzero().flatten()[:n]
    return test.images[keep], test.labels[keep]


class BoundaryReproduction:
    """``n_images`` and ``budget`` override the quick / full sizes (tests use tiny ones)."""

    name = "boundary"
    system = "Decision-based attacks"
    title = "HSJA, QEBA, NonLinear-BA, PSBA and baselines: distance at equal queries (MNIST-5k zoo targets)"

    def __init__(self, n_images: int | None = None, budget: int | None = None) -> None:
        self.n_images, self.budget = n_images, budget

    def run(self, out_dir: Path, *, quick: bool, seed: int, quiet: bool) -> ReproductionResult:
        grey = {"basis": zoo_gradient_basis(k=100, seed=seed)}
        gen_meta = {}
        for kind in ("ae", "vae", "gan", "pgan"):
            grey[kind], meta = zoo_generator(kind, seed=seed, quiet=quiet)
            gen_meta[kind] = {"training": meta["training"], "recipe": meta["recipe"]}
        rows, all_curves, scale_rows, align_rows, dim_rows = [], {}, [], [], []
        targets = ["mnist5k-cnn"] if quick else ["mnist5k-cnn", "mnist5k-resnet"]
        n, budget = (10, 1000) if quick else (20, 2000)
        n, budget = self.n_images or n, self.budget or budget
        n_val, val_budget = 10, 500
        val_budget = min(val_budget, budget)
        q1 = min(1000, budget)
        for target in targets:
            model = zoo.load(target)
            test, x, y = _digits(model, n)
            xv, yv = _validation_digits(model, n_val)
            search = psba_scale_search(grey["pgan"], model.net, xv, yv, budget=val_budget, preprocess=model.preprocess,
                                       preset="hsja", seed=seed)  # fmt: skip
            grey["scale"] = search.scale
            scale_rows.append({"target": target, "chosen scale": search.scale, "validation digits": len(yv),
                               "budget per digit": val_budget, "queries spent": search.queries}
                              | {f"median MSE @ scale {k}": v for k, v in search.median_mse.items()})  # fmt: skip
            modes = [("untargeted", {})]
            if not quick:
                t = (y + 1) % 10
                preds = model.predict(test.images)
                starts = torch.stack([test.images[((test.labels == c) & (preds == c)).nonzero()[0, 0]] for c in t])
                modes.append(("targeted", {"targets": t, "starting_points": starts}))
            probes = _methods(2, "hsja", seed, grey, full=not quick)
            probes |= {f"PSBA @{s}": psba(grey["pgan"], scale=s) for s in grey["pgan"].sizes}
            align, dims = _probe_stats(probes, model, x, seed)
            align_rows.append({"target": target} | align)
            dim_rows.append({"target": target} | dims)
            for mode, kw in modes:
                case = f"{target}, {mode}"
                b = 5000 if (not quick and self.budget is None and case == "mnist5k-cnn, untargeted") else budget
                methods = _methods(2, "hsja", seed, grey, full=not quick)
                r, c = _attack_all(methods, model, x, y, b, 1e-2, case, quiet, **kw)
                rows += r
                all_curves[case] = c
        if not quick:
            rows += self._imagenet(seed, quiet, all_curves)
        table = {(r["case"], r["method"]): r for r in rows}
        claims = []
        case = "mnist5k-cnn, untargeted"

        def med(method: str, q: int, case: str = case) -> float:
            return table[(case, method)][f"median MSE @{q}"]

        hs = med("HSJA", q1)
        m = {f"{k} @{q1}": med(k, q1) for k in ("HSJA", *QEBA)}
        claims.append(claim(
            f"At {q1} queries QEBA-S, QEBA-F and QEBA-I each reach a lower median MSE than HSJA (zoo CNN, untargeted)",
            m, lambda v, hs=hs: all(v[f"{k} @{q1}"] < hs for k in QEBA),
            reference={f"{k} @1K (authors, CelebA)": v[0] for k, v in AUTHORS_CELEBA.items() if k in ("HSJA", *QEBA)}
            | {"prototype here": "QEBA-S 8.7e-3, -F 9.4e-3, -I 8.8e-3 vs HSJA 1.35e-2"},
        ))  # fmt: skip
        # reported, not gated (issue #3, 3c): the authors' own orderings, computed on our figures
        qs = [q for q in (1000, 2000, 5000) if q <= max(r["budget"] for r in rows if r["case"] == case)] or [q1]
        m = {f"{k} @{q}": med(k, q) for q in qs for k in (*QEBA, "NLBA-AE", "NLBA-VAE")}
        claims.append(claim(
            "NonLinear-BA's AE and VAE do not beat the best linear QEBA variant (zoo CNN, untargeted)",
            m, lambda v: all(min(v[f"{k} @{q}"] for k in QEBA) <= min(v[f"NLBA-AE @{q}"], v[f"NLBA-VAE @{q}"])
                             for q in qs),
            reference={f"{k} @1K/2K/5K (authors, CelebA)": v for k, v in AUTHORS_CELEBA.items()
                       if k in ("QEBA-S", "QEBA-I", "NLBA-AE", "NLBA-VAE")},
            note=REPORTED + " The authors' logs: AE/VAE worse than QEBA at every budget.",
        ))  # fmt: skip
        others = [k for k in ("HSJA", *QEBA, *NLBA, "Boundary Attack", "Sign-OPT") if (case, k) in table]
        m = {f"{k} @{q}": med(k, q) for q in qs for k in (*others, "PSBA")}
        early = [q for q in qs if q <= 2000] or qs[:1]
        claims.append(claim(
            f"PSBA at its chosen scale leads every other method up to 2K queries ({', '.join(map(str, early))})",
            m, lambda v: all(v[f"PSBA @{q}"] < min(v[f"{k} @{q}"] for k in others) for q in early),
            reference={"authors, CelebA": "PSBA-28 3.7e-5 / 2.8e-5 at 1K / 2K vs best QEBA 1.9e-4 / 5.3e-5; "
                       "plateaus to 2.4e-5 at 5K (QEBA-I 9.6e-6)"},
            note=REPORTED + " Where it fails, see the probe tables: the PGAN's probes are the best aligned with "
                 "the target's gradient but span only a few directions (a near mode-collapse of a generator "
                 "trained for about a minute on 8,000 gradients, where the authors train 50 epochs per stage "
                 "on ~500K), so the estimate cannot resolve the gradient.",
        ))  # fmt: skip
        m = {f"{k} @{q}": med(k, q) for q in qs for k in ("HSJA", "Sign-OPT")}
        claims.append(claim(
            f"Sign-OPT reaches a higher median MSE than HSJA at {', '.join(map(str, early))} queries",
            m, lambda v: all(v[f"Sign-OPT @{q}"] > v[f"HSJA @{q}"] for q in early),
            reference={"authors, CelebA": "Sign-OPT 2.5e-3 / 6.2e-4 vs HSJA 1.1e-3 / 3.0e-4 at 1K / 2K; "
                       "Sign-OPT ahead only at 10K (3.6e-5 vs 2.5e-5)"},
            note=REPORTED,
        ))  # fmt: skip
        claims.append(claim(
            "PSBA's scale search stops at a scale coarser than the full resolution (authors: 28 of 224 on CelebA)",
            {f"{r['target']}: chosen scale": r["chosen scale"] for r in scale_rows},
            lambda v: all(s < 28 for s in v.values()),
            note=REPORTED,
        ))  # fmt: skip
        if not quick:
            case = "EfficientNet-Lite0, targeted"
            for q in (1000, 2000):
                hs = med("HSJA", q, case)
                m = {f"{k} @{q}": med(k, q, case) for k in ("HSJA", "QEBA-S", "QEBA-F")}
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
                    "budget of mnist5k-cnn, untargeted": 5000 if not quick and self.budget is None else budget,
                    "QEBA-S/F ratio": 2, "QEBA-I": "PCA k=100 of mnist5k-mlp + mnist5k-wide gradients, basis_only",
                    "generators": gen_meta, "PSBA validation": {"digits": n_val, "budget": val_budget},
                    "success threshold": "MSE <= 1e-2 (MNIST), 1e-3 (ImageNet)",
                    "torch_threads": torch.get_num_threads()},
            tables={"Median MSE at equal queries": rows, "PSBA scale search (validation digits)": scale_rows,
                    "Probe alignment d E[cos^2(probe, true gradient)] (1 = isotropic)": align_rows,
                    "Probe effective dimension (participation ratio of 200 probes; isotropic ~160)": dim_rows},
            claims=claims, figures=figures,
            notes=["Sign-OPT starts from the engine's init (as every method here), not from its own search over "
                   "100 random directions.",
                   "On 28x28 digits the subspace gain is small at 1K queries and medians of 10 digits are noisy "
                   "(spec prototype: QEBA-I 8.8e-3 vs HSJA 1.35e-2); the full run uses 20 digits per target.",
                   "Generators are trained for 1-2 minutes on one core on 8,000 reference gradients (the authors: "
                   "100-200 epochs on ~500K gradients on a GPU); the alignment table shows what they learnt.",
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
        rows, c = _attack_all(_methods(4, "official", seed), lite, x, y, 2000, 1e-3,
                              "EfficientNet-Lite0, targeted", quiet, targets=t, starting_points=starts)  # fmt: skip
        curves["EfficientNet-Lite0, targeted"] = c
        return rows

    @staticmethod
    def _figure(curves: dict, out_dir: Path) -> str:
        """One panel per case (three per row), one legend; line style by family, colour by method."""
        import math

        from ..core.report import new_figure, save_figure

        cases = list(curves)
        cols = min(3, len(cases))
        rows = math.ceil(len(cases) / cols)
        fig, axes = new_figure(rows, cols, figsize=(4.6 * cols, 3.4 * rows + 0.9))
        axes = np.atleast_1d(axes).flatten()
        names = list(dict.fromkeys(name for case in cases for name in curves[case]))
        palette = [f"C{k}" for k in range(10)] + ["black", "gold", "teal", "navy"]
        colours = {name: palette[k % len(palette)] for k, name in enumerate(names)}

        def style(name: str) -> str:
            if name.startswith("NLBA"):
                return "--"
            if name.startswith("PSBA"):
                return "-."
            return ":" if name in ("Boundary Attack", "Sign-OPT") else "-"

        for ax, case in zip(axes, cases, strict=False):
            for name, (qs, mse) in curves[case].items():
                ax.plot(qs, mse, style(name), color=colours[name], label=name, linewidth=1.4)
            ax.set_yscale("log")
            ax.set_xlabel("queries per image")
            ax.set_ylabel("median MSE")
            ax.set_title(case, fontsize=9)
        for ax in axes[len(cases) :]:
            ax.set_visible(False)
        handles = {h.get_label(): h for ax in axes[: len(cases)] for h in ax.get_lines()}
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=min(6, len(handles)),
                   fontsize=8)  # fmt: skip
        save_figure(fig, out_dir / "curves.png")
        return "curves.png"


REPRODUCTIONS.register("boundary", BoundaryReproduction())
