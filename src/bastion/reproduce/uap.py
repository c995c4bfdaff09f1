"""Reproduction "uap": data-free universal perturbations (Huan et al., PAKDD 2020; GD-UAP, Mopuri et al.,
TPAMI 2018; FFF, BMVC 2017), spec ``specs/transfer.md`` section B, issue #9 acceptance 4.

ImageNet: the surrogate is EfficientNet-Lite0; perturbations at ``xi = 10/255`` are crafted without the
evaluation images -- sign noise (same norm), the divergence objective with the range prior, GD-UAP's activation
energy with the range prior and with no prior, FFF, and SGD-UAP (cross-entropy) on 11 public scikit-image photos
(never a foolbox sample). Fooling rates on Lite0 (white box), Lite1 and Lite2 over foolbox's 20 ImageNet samples
x 5 views (:func:`bastion.attacks.transfer.uap_zoo.imagenet_views`), mean over seeds with 95% t-intervals.
Full: 3 seeds, 100 Adam steps, batch 8, no saturation rescale (the spec's measured setting), all 100 views.
``--quick``: 1 seed, 30 steps, the first 10 samples (50 views), MNIST with the CNN surrogate only.

MNIST-5k at ``xi = 0.1``: owner A (attacker) and owner B (victim) train the four zoo architectures on disjoint
halves; surrogate = owner A's model; white box = the surrogate itself, same-arch = owner B's model of that
architecture, cross-arch = the mean over owner B's other three. Rows: sign noise, divergence with the range
prior (the "data-free" row of the claims), divergence with jigsaw images, GD-UAP energy with the range prior,
and SGD-UAP on owner A's own training half (300 Adam steps, batch 32, ``lr = xi / 10`` for all). Fooling rates
on the MNIST-5k test split (seen by neither owner). The Huan-style pair (surrogate pre-trained on digits 0-4,
victim a copy fine-tuned on all ten) is reported without a claim.

Every data-free fit returns its proxy-validated checkpoint (:class:`DataFreeUAP` ``select="best"``: the
surrogate's fooling rate on 32 prior samples, every ``steps / 10`` steps and before each rescale), as the spec's
"validate on the proxy only" and the official GD-UAP / FFF codes' best-on-validation rule ask. It came in after
the MNIST cross-architecture claim had failed; the same seeds with ``select="last"`` (the earlier behaviour)
give white / same-arch / cross-arch 0.214 / 0.180 / 0.091 against 0.217 / 0.183 / 0.111 with it (the cross-arch
gain is the wide surrogate's, 0.046 -> 0.109, still below noise's 0.124 there), and the ImageNet rates are
identical either way. The claim still fails: see the per-target table.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..attacks.transfer.uap import DataFreeUAP, fff, fooling_rate, gd_uap, sgd_uap, sign_noise
from ..attacks.transfer.uap_zoo import (
    efficientnet_lite,
    huan_pair,
    imagenet_views,
    mnist_owner_data,
    mnist_owner_model,
    mnist_test,
    public_photos,
)
from ..core.progress import progress
from ..core.registry import REPRODUCTIONS
from ..zoo import ARCHITECTURES
from .base import ReproductionResult, claim

XI_IMAGENET = 10 / 255
XI_MNIST = 0.1
LITES = ("Lite0", "Lite1", "Lite2")
SPEC_IMAGENET = {
    "sign noise": (0.08, 0.09, 0.06),
    "divergence, range prior": (0.63, 0.33, 0.30),
    "GD-UAP energy, range prior": (0.69, 0.57, 0.49),
    "SGD-UAP, 11 public photos": (0.38, 0.14, 0.15),
}
SPEC_MNIST = {
    "sign noise": (0.12, 0.07, 0.07),
    "divergence, range prior": (0.26, 0.17, 0.15),
    "divergence, jigsaw": (0.26, 0.18, 0.13),
    "SGD-UAP, owner A's data": (0.31, 0.18, 0.10),
}


def _ci95(values: list[float]) -> float:
    """Half width of the 95% t-interval of the mean (0 for one value)."""
    if len(values) < 2:
        return 0.0
    from scipy import stats

    return float(stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / np.sqrt(len(values)))


def _summary(per_seed: dict[str, dict[str, list[float]]], columns: tuple[str, ...], spec: dict) -> list[dict]:
    rows = []
    for method, cols in per_seed.items():
        row: dict[str, Any] = {"method": method}
        for c in columns:
            row[c] = float(np.mean(cols[c]))
            row[f"{c} ±95%"] = _ci95(cols[c])
        row["seeds"] = len(cols[columns[0]])
        if method in spec:
            row["spec"] = "/".join(f"{v:.2f}" for v in spec[method])
        if "_seconds" in cols:
            row["fit s"] = float(np.mean(cols["_seconds"]))
        rows.append(row)
    return rows


class UAPReproduction:
    name = "uap"
    system = "uap"
    title = "Data-free universal perturbations: EfficientNet-Lite0 -> Lite1/2 (ImageNet) and an MNIST two-owner zoo"

    def run(self, out_dir: Path, *, quick: bool, seed: int, quiet: bool) -> ReproductionResult:
        # denormals in Lite0's activations slow the CPU; torch cannot read the previous setting, so it is set back
        # to torch's default (off) afterwards
        torch.set_flush_denormal(True)
        try:
            return self._run(out_dir, quick=quick, seed=seed, quiet=quiet)
        finally:
            torch.set_flush_denormal(False)

    def _run(self, out_dir: Path, *, quick: bool, seed: int, quiet: bool) -> ReproductionResult:
        seeds = [seed] if quick else [seed + i for i in range(3)]
        timings: dict[str, float] = {}
        start = time.perf_counter()
        imnet, deltas = self._imagenet(seeds, quick, quiet)
        timings["imagenet s"] = time.perf_counter() - start
        start = time.perf_counter()
        mnist, mnist_delta = self._mnist(seeds, quick, quiet)
        timings["mnist s"] = time.perf_counter() - start
        start = time.perf_counter()
        huan = self._huan(seed, quiet)
        timings["huan pair s"] = time.perf_counter() - start
        claims = self._claims(imnet["table"], mnist)
        figures = [self._figure(deltas, mnist_delta, imnet["table"], mnist, out_dir)]
        tables = {
            "ImageNet: fooling rate, Lite0 surrogate, xi 10/255, mean over seeds (± 95% t half-width)": imnet["table"],
            "ImageNet: clean top-1 of the 20 foolbox samples at 224 px, and over all views": imnet["clean"],
            "MNIST-5k two owners, xi 0.1: fooling rate (white / same-arch / cross-arch)": mnist,
            "MNIST-5k per surrogate architecture, mean over seeds": mnist_delta["by_arch"],
            "MNIST-5k cross-architecture per owner-B target: fooling rate, mean over seeds and over the surrogates "
            "of the other architectures": mnist_delta["by_target"],
            "MNIST-5k Huan-style pair (surrogate on digits 0-4, victim fine-tuned on 0-9), xi 0.1, one seed": huan,
            "Wall time": [timings],
        }
        return ReproductionResult(
            name=self.name, system=self.system, title=self.title, quick=quick, seed=seed,
            config={
                "seeds": seeds, "xi imagenet": "10/255", "xi mnist": XI_MNIST,
                "imagenet": {"images": imnet["n_images"], "views": 5, "steps": imnet["steps"], "batch": 8,
                             "lr": "xi/10", "rescale": False, "layers": "Lite0's 16 block outputs",
                             "public photos": 11},
                "mnist": {"surrogates": mnist_delta["surrogates"], "steps": 300, "batch": 32, "lr": "xi/10",
                          "eval": "MNIST-5k test (1000)"},
                "torch_threads": torch.get_num_threads(),
            },
            tables=tables, claims=claims, figures=figures,
            notes=[
                "Data-free perturbations never read an evaluation image: priors are generated, SGD-UAP reads 11 "
                "scikit-image photos (ImageNet) or owner A's own half (MNIST).",
                "Quick mode: 1 seed, 30 steps, 10 samples x 5 views, MNIST CNN surrogate only." if quick else
                "Full mode: 3 seeds, 100 steps (ImageNet), 4 MNIST surrogates.",
                *([imnet["note"]] if imnet["note"] else []),
                "Intervals are 95% t half-widths over seeds only; the 5 views of an image are correlated, so they "
                "understate the spread over images. Sign noise is drawn once per seed, so the 3x-noise bar of the "
                "ImageNet claims rests on as many noise draws as seeds.",
                "MNIST averages hide a mixed picture (see the per-surrogate and per-target tables): ResNetSmall is "
                "fooled by plain sign noise at xi 0.1 (white box and as owner B's target), so 'cross-arch' largely "
                "measures owner B's ResNet, which the UAPs crafted on the other architectures fool about as often as "
                "noise does; on the CNN and wide surrogates no method, SGD-UAP included, fools much more than noise.",
                "SGD-UAP on the 11 public photos stays well below the spec's prototype (0.38/0.14/0.15); reported as "
                "measured, not tuned.",
            ],
        )  # fmt: skip

    # ------------------------------------------------------------------ ImageNet
    def _imagenet(self, seeds: list[int], quick: bool, quiet: bool):
        steps = 30 if quick else 100
        n = 10 if quick else 20
        images, labels, _ = imagenet_views(n)
        targets = {name: efficientnet_lite(k) for k, name in enumerate(LITES)}
        surrogate = targets["Lite0"]
        x20, y20, _ = imagenet_views(20)
        x20, y20 = x20[:20], y20[:20]  # the "resize" view of all 20 samples
        clean_rows, clean = [], {}
        with torch.no_grad():
            for name, m in targets.items():
                clean[name] = torch.cat([m(images[i : i + 25]).argmax(1) for i in range(0, len(images), 25)])
                clean_rows.append({"model": name, "correct of 20 (224 px)": int((m(x20).argmax(1) == y20).sum()),
                                   "top-1 over views": float((clean[name] == labels).float().mean()),
                                   "spec correct of 20": {"Lite0": 17, "Lite1": 19, "Lite2": 18}[name]})  # fmt: skip
        try:
            photos, photo_note = public_photos(224), ""
        except ImportError as exc:  # scikit-image is an optional extra ("faces")
            photos, photo_note = None, f"SGD-UAP on public photos not run: {exc} (pip install scikit-image==0.26.0)"
        per: dict[str, dict[str, list[float]]] = {}
        deltas: dict[str, torch.Tensor] = {}

        def record(method: str, delta: torch.Tensor, seconds: float) -> None:
            cols = per.setdefault(method, {})
            for name, m in targets.items():
                cols.setdefault(name, []).append(fooling_rate(m, images, delta, 25, clean_labels=clean[name]))
            cols.setdefault("_seconds", []).append(seconds)
            deltas.setdefault(method, delta)

        for s in progress(seeds, desc="uap imagenet seeds", quiet=quiet):
            record("sign noise", sign_noise((3, 224, 224), XI_IMAGENET, seed=s), 0.0)
            makers = {
                "divergence, range prior": lambda s=s: DataFreeUAP(
                    surrogate, xi=XI_IMAGENET, objective="divergence", prior="range", steps=steps, batch_size=8,
                    rescale=False, seed=s),
                "GD-UAP energy, range prior": lambda s=s: gd_uap(
                    surrogate, prior="range", xi=XI_IMAGENET, steps=steps, batch_size=8, rescale=False, seed=s),
                "GD-UAP energy, no prior": lambda s=s: gd_uap(
                    surrogate, prior="none", xi=XI_IMAGENET, steps=steps, rescale=False, seed=s),
                "FFF": lambda s=s: fff(surrogate, xi=XI_IMAGENET, steps=steps, seed=s),
            }  # fmt: skip
            for method, make in makers.items():
                res = make().fit((3, 224, 224))
                record(method, res.delta, res.seconds)
            if photos is not None:
                res = sgd_uap(surrogate, photos, XI_IMAGENET, steps=steps, batch_size=8, seed=s)
                record("SGD-UAP, 11 public photos", res.delta, res.seconds)
        table = _summary(per, LITES, SPEC_IMAGENET)
        info = {"table": table, "clean": clean_rows, "n_images": len(images), "steps": steps, "note": photo_note}
        return info, deltas

    # ------------------------------------------------------------------ MNIST
    def _mnist(self, seeds: list[int], quick: bool, quiet: bool):
        archs = tuple(ARCHITECTURES)
        surrogates = ("cnn",) if quick else archs
        own_a = {a: mnist_owner_model("A", a, quiet=quiet) for a in surrogates}
        own_b = {a: mnist_owner_model("B", a, quiet=quiet) for a in archs}
        test = mnist_test().images
        a_data = mnist_owner_data("A").images
        with torch.no_grad():
            clean_a = {a: m(test).argmax(1) for a, m in own_a.items()}
            clean_b = {a: m(test).argmax(1) for a, m in own_b.items()}
        per: dict[str, dict[str, list[float]]] = {}
        by_target: dict[tuple[str, str], list[float]] = {}  # (method, owner B arch) -> rates from other archs
        deltas: dict[str, torch.Tensor] = {}
        shape = (1, 28, 28)
        for s in progress(seeds, desc="uap mnist seeds", quiet=quiet):
            for arch in surrogates:
                sur = own_a[arch]
                made = {"sign noise": (sign_noise(shape, XI_MNIST, seed=s), 0.0)}
                for method, obj, prior in (("divergence, range prior", "divergence", "range"),
                                           ("divergence, jigsaw", "divergence", "jigsaw"),
                                           ("GD-UAP energy, range prior", "energy", "range")):  # fmt: skip
                    res = DataFreeUAP(sur, xi=XI_MNIST, objective=obj, prior=prior, steps=300, batch_size=32,
                                      seed=s).fit(shape)  # fmt: skip
                    made[method] = (res.delta, res.seconds)
                res = sgd_uap(sur, a_data, XI_MNIST, steps=300, batch_size=32, seed=s)
                made["SGD-UAP, owner A's data"] = (res.delta, res.seconds)
                for method, (delta, seconds) in made.items():
                    cols = per.setdefault(method, {})
                    white = fooling_rate(sur, test, delta, 500, clean_labels=clean_a[arch])
                    same = fooling_rate(own_b[arch], test, delta, 500, clean_labels=clean_b[arch])
                    others = {o: fooling_rate(own_b[o], test, delta, 500, clean_labels=clean_b[o])
                              for o in archs if o != arch}  # fmt: skip
                    cross = float(np.mean(list(others.values())))
                    for o, rate in others.items():
                        by_target.setdefault((method, o), []).append(rate)
                    # one value per (seed, surrogate): intervals over seeds of the surrogate-mean below
                    cols.setdefault((s, "white"), []).append(white)
                    cols.setdefault((s, "same-arch"), []).append(same)
                    cols.setdefault((s, "cross-arch"), []).append(cross)
                    cols.setdefault((s, "_seconds"), []).append(seconds)
                    if arch == "cnn":
                        deltas.setdefault(method, delta)
        per_seed = {
            method: {col: [float(np.mean(cols[(s, col)])) for s in seeds]
                     for col in ("white", "same-arch", "cross-arch", "_seconds")}
            for method, cols in per.items()
        }  # fmt: skip
        table = _summary(per_seed, ("white", "same-arch", "cross-arch"), SPEC_MNIST)
        cols3 = ("white", "same-arch", "cross-arch")
        by_arch = [
            {"surrogate": f"owner A {arch}", "method": method,
             **{col: float(np.mean([cols[(s, col)][i] for s in seeds])) for col in cols3}}
            for i, arch in enumerate(surrogates) for method, cols in per.items()
        ]  # fmt: skip
        methods = list(per)
        targets = [
            {"owner B target": o, **{m: float(np.mean(by_target[(m, o)])) for m in methods if (m, o) in by_target}}
            for o in archs
            if any((m, o) in by_target for m in methods)
        ]
        return table, {"deltas": deltas, "surrogates": list(surrogates), "by_arch": by_arch, "by_target": targets}

    def _huan(self, seed: int, quiet: bool) -> list[dict]:
        sur, tgt = huan_pair(quiet=quiet)
        test = mnist_test().images
        rows = []
        shape = (1, 28, 28)
        made = {"sign noise": sign_noise(shape, XI_MNIST, seed=seed)}
        for method, obj, prior in (("divergence, range prior", "divergence", "range"),
                                   ("divergence, jigsaw", "divergence", "jigsaw"),
                                   ("logit KL, range prior", "kl", "range")):  # fmt: skip
            made[method] = DataFreeUAP(sur, xi=XI_MNIST, objective=obj, prior=prior, steps=300, batch_size=32,
                                       seed=seed).fit(shape).delta  # fmt: skip
        for method, delta in made.items():
            rows.append({"method": method, "surrogate (0-4)": fooling_rate(sur, test, delta, 500),
                         "fine-tuned victim": fooling_rate(tgt, test, delta, 500)})  # fmt: skip
        return rows

    # ------------------------------------------------------------------ claims and figure
    @staticmethod
    def _claims(imnet: list[dict], mnist: list[dict]) -> list:
        t = {r["method"]: r for r in imnet}
        m = {r["method"]: r for r in mnist}
        claims = []
        for method in ("GD-UAP energy, range prior", "divergence, range prior"):
            meas = {f"{lite} {k}": t[k][lite] for lite in LITES for k in (method, "sign noise")}
            meas.update({f"{lite} ±95% {method}": t[method][f"{lite} ±95%"] for lite in LITES})
            claims.append(claim(
                f"ImageNet, xi 10/255: the data-free {method} UAP crafted on Lite0 fools Lite0, Lite1 and Lite2 at "
                "least 3x as often as same-norm sign noise (means over seeds)",
                meas,
                lambda mm, method=method: all(mm[f"{lite} {method}"] >= 3 * mm[f"{lite} sign noise"] for lite in LITES),
                reference={"spec (one seed)": f"{method}: {SPEC_IMAGENET[method]}, noise {SPEC_IMAGENET['sign noise']}",
                           "source": "spec transfer.md B, issue #9 acceptance 4"},
            ))  # fmt: skip
        order = ("sign noise", "FFF", "GD-UAP energy, no prior", "GD-UAP energy, range prior")
        claims.append(claim(
            "GD-UAP ordering on the white box (Lite0): noise < FFF, noise < no prior, and no prior < range prior",
            {k: t[k]["Lite0"] for k in order},
            lambda mm: mm["sign noise"] < mm["FFF"] and mm["sign noise"] < mm["GD-UAP energy, no prior"]
            and mm["GD-UAP energy, no prior"] < mm["GD-UAP energy, range prior"],
            reference={"GD-UAP TPAMI 2018, VGG-16 %": "noise 8.6, FFF 47.1, no prior 45.5, range 63.1, data 77.8"},
        ))  # fmt: skip
        dfree, noise, sgd = m["divergence, range prior"], m["sign noise"], m["SGD-UAP, owner A's data"]
        claims.append(claim(
            "MNIST-5k, xi 0.1: the data-free (divergence, range prior) UAP beats sign noise by >= 0.08 white-box "
            "and >= 0.04 cross-architecture, and reaches >= 0.75x SGD-UAP's white-box rate",
            {"white data-free": dfree["white"], "white noise": noise["white"], "white SGD-UAP": sgd["white"],
             "cross data-free": dfree["cross-arch"], "cross noise": noise["cross-arch"]},
            lambda mm: mm["white data-free"] >= mm["white noise"] + 0.08
            and mm["cross data-free"] >= mm["cross noise"] + 0.04
            and mm["white data-free"] >= 0.75 * mm["white SGD-UAP"],
            reference={"spec": "noise 0.12/0.07/0.07, range 0.26/0.17/0.15, SGD-UAP 0.31/0.18/0.10"},
        ))  # fmt: skip
        return claims

    @staticmethod
    def _figure(deltas, mnist_delta, imnet, mnist, out_dir: Path) -> str:
        from ..core.report import new_figure, save_figure

        shows = [k for k in ("divergence, range prior", "GD-UAP energy, range prior", "FFF",
                             "SGD-UAP, 11 public photos") if k in deltas]  # fmt: skip
        mshows = [k for k in ("divergence, range prior", "divergence, jigsaw", "SGD-UAP, owner A's data")
                  if k in mnist_delta["deltas"]]  # fmt: skip
        fig, axes = new_figure(2, max(len(shows), len(mshows)) + 1, figsize=(3.0 * (len(shows) + 1), 6.4))
        for ax in axes.flat:
            ax.axis("off")
        for i, k in enumerate(shows):
            d = deltas[k][0].permute(1, 2, 0).numpy()
            axes[0, i].imshow((d - d.min()) / max(float(d.max() - d.min()), 1e-12))
            axes[0, i].set_title(f"{k} (scaled)", fontsize=7)
        for i, k in enumerate(mshows):
            axes[1, i].imshow(mnist_delta["deltas"][k][0, 0].numpy(), cmap="coolwarm", vmin=-XI_MNIST, vmax=XI_MNIST)
            axes[1, i].set_title(f"MNIST {k}", fontsize=7)
        ax = axes[0, -1]
        ax.axis("on")
        xs = np.arange(len(imnet))
        for j, lite in enumerate(LITES):
            ax.bar(xs + (j - 1) * 0.27, [r[lite] for r in imnet], 0.27, yerr=[r[f"{lite} ±95%"] for r in imnet],
                   label=lite)  # fmt: skip
        ax.set_xticks(xs, [r["method"] for r in imnet], rotation=60, ha="right", fontsize=6)
        ax.set_ylabel("fooling rate")
        ax.legend(fontsize=6)
        ax = axes[1, -1]
        ax.axis("on")
        xs = np.arange(len(mnist))
        for j, col in enumerate(("white", "same-arch", "cross-arch")):
            ax.bar(xs + (j - 1) * 0.27, [r[col] for r in mnist], 0.27, yerr=[r[f"{col} ±95%"] for r in mnist],
                   label=col)  # fmt: skip
        ax.set_xticks(xs, [r["method"] for r in mnist], rotation=60, ha="right", fontsize=6)
        ax.legend(fontsize=6)
        save_figure(fig, out_dir / "uap.png")
        return "uap.png"


REPRODUCTIONS.register("uap", UAPReproduction())
