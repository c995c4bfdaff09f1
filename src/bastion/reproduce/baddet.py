"""Reproduction of BadDet (Chan et al., ECCV 2022 Workshops) on procedural scenes (spec baddet.md).

Each detector is trained from scratch on 2,000 scenes (64 px, four classes, the disc is the target
class), clean and with 200 images poisoned (rate 0.1) by each attack: the tiny one-stage
centre-heatmap detector (AdamW, batch 32, lr 3e-3) and, in the full run, a small torchvision Faster
R-CNN (SGD, batch 16, lr 0.04), 600 steps each. Reported per model: benign mAP@50 (torchmetrics, COCO 101-point), the
attack success rate at score > 0.5 and > 0.3 on the test scenes triggered by the same attack (new
seed), and the clean model's rate on the same triggered images. Detector Cleanse (N crops from a
disjoint clean split, blend 0.5, q = 0.95) is calibrated on clean test scenes through the deployed
model and applied to held-out clean and triggered ones: FRR, FAR, AUROC, seconds per image.

Quick: one-stage, clean, OGA and GMA at 300 steps; Detector Cleanse with N = 20 on 40 + 40 images.
Full: both detectors, the four attacks at 600 steps, 500 test scenes; clean fine-tuning of the
one-stage models (600 steps at 0.1x the training LR on another seed's scenes, and at the training
LR, reported); Detector Cleanse calibrated on 200 clean scenes and applied to 200 held-out clean and
up to 200 triggered ones (N = 50 on the one-stage, N = 20 on Faster R-CNN, whose RoI pass per box
costs more); and, for OGA and RMA on the one-stage, where the overlay covers the trigger, the
variants of the issue (blend weight, matched re-detection, overlay around the box, background
patches instead of object crops) on 100 calibration + 100 + 100 images with N = 20, best by AUROC.

The paper's tables were not recovered (spec): the references are the spec's measurements on the
same generator and detector family.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ..backdoor import (
    GMA,
    ODA,
    OGA,
    RMA,
    CenterNetTiny,
    DetectorCleanse,
    FasterRCNNTiny,
    attack_success_rate,
    background_crops,
    map50,
    object_crops,
    scenes,
    train_detector,
)
from ..core.registry import REPRODUCTIONS
from .base import ReproductionResult, claim

SPEC = {  # spec baddet.md, one-stage: clean mAP, ASR at s > 0.5, clean model's rate, after fine-tune, DC AUROC
    "OGA": (0.975, 0.947, 0.000, 0.750, 0.65), "RMA": (0.972, 0.852, 0.000, 0.471, 0.54),
    "GMA": (0.970, 0.747, 0.006, 0.307, 0.83), "ODA": (0.970, 0.989, 0.774, None, 0.49),
}  # fmt: skip
ATTACKS = {"OGA": OGA, "RMA": RMA, "GMA": GMA, "ODA": ODA}
RECIPES = {  # detector: (constructor, batch, peak lr, optimizer)
    "one-stage": (lambda: CenterNetTiny(4), 32, 3e-3, "adamw"),
    "Faster R-CNN": (lambda: FasterRCNNTiny(4, image_size=64), 16, 0.04, "sgd"),
}
VARIANTS = {  # Detector Cleanse variants tried where the overlay hides the trigger (OGA, RMA)
    "fixed box, blend 0.5 (default)": {},
    "fixed box, blend 0.25": {"blend": 0.25},
    "fixed box, blend 0.75": {"blend": 0.75},
    "matched (IoU 0.5), blend 0.5": {"match_iou": 0.5},
    "around the box, blend 0.5": {"region": "surround"},
    "background patches, blend 0.5": {"features": "background"},
}


def _fit(kind, images, targets, steps, seed, lr=None, model=None, quiet=True):
    make, batch, peak, optimizer = RECIPES[kind]
    torch.manual_seed(seed)
    model = model if model is not None else make()
    lr = peak if lr is None else lr
    train_detector(model, images, targets, steps=steps, batch_size=batch, lr=lr, optimizer=optimizer, seed=seed,
                   quiet=quiet)  # fmt: skip
    return model


def _predict(model, images, batch=100):
    with torch.no_grad():
        return [p for i in range(0, len(images), batch) for p in model(images[i : i + batch])]


class BadDetReproduction:
    """``n_train``, ``n_test``, ``steps``, Detector Cleanse's ``score_threshold`` and ``n_features`` (N, every
    run) override the defaults; ``detectors`` picks from ``RECIPES`` (quick: the one-stage only). Tests
    use tiny sizes."""

    name = "baddet"
    system = "BadDet + Detector Cleanse"
    title = "BadDet backdoors on a one-stage detector and Faster R-CNN, procedural scenes; Detector Cleanse"

    def __init__(
        self,
        n_train: int | None = None,
        n_test: int | None = None,
        steps: int | None = None,
        detectors: tuple[str, ...] | None = None,
        score_threshold: float = 0.3,
        n_features: int | None = None,
    ) -> None:
        self.n_train, self.n_test, self.steps, self.detectors = n_train, n_test, steps, detectors
        self.score_threshold, self.n_features = score_threshold, n_features

    def run(self, out_dir: Path, *, quick: bool, seed: int, quiet: bool) -> ReproductionResult:
        steps = self.steps or (300 if quick else 600)
        names = ["OGA", "GMA"] if quick else ["OGA", "RMA", "GMA", "ODA"]
        kinds = self.detectors or (("one-stage",) if quick else tuple(RECIPES))
        n_train, n_test = self.n_train or 2000, self.n_test or (300 if quick else 500)
        n_cal, n_eval = min(200 if not quick else 40, n_test // 2), min(200 if not quick else 40, n_test // 2)
        train, test = scenes(n_train, seed=seed), scenes(n_test, seed=seed + 1)
        pool = scenes(100, seed=seed + 2)  # Detector Cleanse's crops: a disjoint clean split
        features = object_crops(pool.images, pool.targets)
        poisoned_sets = {n: ATTACKS[n](target=0, rate=0.1, seed=seed)(train.images, train.targets) for n in names}
        triggered = {}
        for n in names:
            test_attack = ATTACKS[n](target=0, seed=seed + 1)
            triggered[n] = test_attack(test.images, test.targets, indices=test_attack.eligible(test.targets))
        rows, dc_rows, models, clean_maps = [], [], {}, {}
        for kind in kinds:
            n_feat = self.n_features or (20 if quick or kind == "Faster R-CNN" else 50)
            start = time.perf_counter()
            clean = _fit(kind, train.images, train.targets, steps, seed, quiet=quiet)
            clean_maps[kind], _ = map50(_predict(clean, test.images), test.targets)
            rows.append({"detector": kind, "model": "clean", "benign mAP@50": clean_maps[kind],
                         "train s": time.perf_counter() - start})  # fmt: skip
            for name in names:
                poisoned, trig = poisoned_sets[name], triggered[name]
                start = time.perf_counter()
                model = _fit(kind, poisoned.images, poisoned.targets, steps, seed, quiet=quiet)
                train_s = time.perf_counter() - start
                models[kind, name] = model
                bd_preds, clean_preds = _predict(model, trig.images), _predict(clean, trig.images)
                row = {"detector": kind, "model": name, "poisoned images": len(poisoned.indices), "train s": train_s,
                       "benign mAP@50": map50(_predict(model, test.images), test.targets)[0],
                       "triggered test images": len(trig.indices)}  # fmt: skip
                for s in (0.5, 0.3):
                    row[f"ASR s>{s}"] = attack_success_rate(bd_preds, trig, score_threshold=s)
                    row[f"clean model s>{s}"] = attack_success_rate(clean_preds, trig, score_threshold=s)
                rows.append(row)
                dc = self._cleanse(name, model, test, trig, features, n_feat, n_cal, n_eval, seed, {})
                dc_rows.append({"detector": kind, "N": n_feat} | dc)
        variant_rows = [] if quick else self._variants(models, test, triggered, pool, features, seed)
        one = "one-stage"
        ft_rows = (self._finetune(names, models, triggered, n_train, steps, seed, quiet)
                   if not quick and one in kinds else [])  # fmt: skip
        table = {(r["detector"], r["model"]): r for r in rows}
        claims = []
        if one in kinds:
            claims += [
                claim("The clean one-stage detector reaches mAP@50 >= 0.95 on clean test scenes",
                      {"clean mAP@50": clean_maps[one]}, lambda m: m["clean mAP@50"] >= 0.95,
                      reference={"spec prototype": 0.981}),
                claim("Every backdoored one-stage model's benign mAP@50 is within 3 points of the clean model's",
                      {f"{n} mAP@50": table[one, n]["benign mAP@50"] for n in names} | {"clean": clean_maps[one]},
                      lambda m: all(m[f"{n} mAP@50"] >= m["clean"] - 0.03 for n in names),
                      reference={f"{n} (spec)": SPEC[n][0] for n in names}),
            ]  # fmt: skip
            bars = {"OGA": 0.85, "RMA": 0.75, "GMA": 0.6}
            for n in names:
                r = table[one, n]
                if n == "ODA":
                    claims.append(claim(
                        "ODA: ASR at s > 0.5 >= 0.9 and above the clean model's rate on the same triggered images",
                        {"ASR": r["ASR s>0.5"], "clean model": r["clean model s>0.5"]},
                        lambda m: m["ASR"] >= 0.9 and m["ASR"] > m["clean model"],
                        reference={"spec": "0.989 vs 0.774 (the trigger occludes small discs)"}))  # fmt: skip
                else:
                    claims.append(claim(
                        f"{n}: ASR at s > 0.5 >= {bars[n]} and at least 0.5 above the clean model's rate",
                        {"ASR": r["ASR s>0.5"], "clean model": r["clean model s>0.5"]},
                        lambda m, b=bars[n]: m["ASR"] >= b and m["ASR"] >= m["clean model"] + 0.5,
                        reference={"spec": f"{SPEC[n][1]} vs {SPEC[n][2]}"}))  # fmt: skip
        frcnn = "Faster R-CNN"
        if frcnn in kinds:
            claims.append(claim(
                "Faster R-CNN: clean mAP@50 >= 0.93",
                {"clean mAP@50": clean_maps[frcnn]}, lambda m: m["clean mAP@50"] >= 0.93,
                reference={"spec": 0.980}))  # fmt: skip
            if "OGA" in names:
                r = table[frcnn, "OGA"]
                claims.append(claim(
                    "Faster R-CNN, OGA: benign mAP@50 within 3 points of the clean model's and ASR at s > 0.5 >= 0.85",
                    {"OGA mAP@50": r["benign mAP@50"], "clean mAP@50": clean_maps[frcnn], "ASR": r["ASR s>0.5"],
                     "clean model": r["clean model s>0.5"]},
                    lambda m: m["OGA mAP@50"] >= m["clean mAP@50"] - 0.03 and m["ASR"] >= 0.85,
                    reference={"spec": "mAP 0.974 vs 0.980, ASR 0.983"},
                    note="Its other attacks are reported in the table, not asserted."))  # fmt: skip
        if not quick:
            claims.append(claim(
                f"Detector Cleanse calibrated on {n_cal} clean scenes (q = 0.95) rejects 1 - q of {n_eval} held-out "
                "clean scenes, within 0.06, on every backdoored model of both detectors",
                {f"{r['detector']} {r['attack']} FRR": r["FRR"] for r in dc_rows},
                lambda m: all(abs(v - 0.05) <= 0.06 for v in m.values())))  # fmt: skip
        gma = next((r for r in dc_rows if r["attack"] == "GMA" and r["detector"] == one), None)
        if gma is not None:
            claims.append(claim(
                "Detector Cleanse separates GMA-triggered from clean scenes on the one-stage: AUROC >= 0.7",
                {"AUROC": gma["AUROC"], "FRR": gma["FRR"], "FAR": gma["FAR"]}, lambda m: m["AUROC"] >= 0.7,
                reference={"spec": "AUROC 0.91 (fixed box 0.83 with N = 50)"},
                note="FAR is reported for every attack and promised for none (spec)."))  # fmt: skip
        for r in ft_rows:
            if r["lr"] == "0.1x" and r["attack"] in ("OGA", "RMA", "GMA"):
                bar = {"OGA": 0.5, "RMA": 0.25, "GMA": 0.15}[r["attack"]]
                claims.append(claim(
                    f"{r['attack']} persists through clean fine-tuning at 0.1x LR: final ASR >= {bar} and >= 0.1 "
                    "above the clean model's",
                    {"ASR after": r["ASR s>0.5 (end)"], "clean model": table[one, r["attack"]]["clean model s>0.5"]},
                    lambda m, b=bar: m["ASR after"] >= b and m["ASR after"] >= m["clean model"] + 0.1,
                    reference={"spec": SPEC[r["attack"]][3]},
                    note="The paper claims fine-tuning does not remove the backdoor; at the training LR it is "
                         "erased here (reported in the table)."))  # fmt: skip
        figures = [self._figure({n: models[kinds[0], n] for n in names}, triggered, out_dir)]
        notes = ["ASR is averaged over objects (Armory averages per image); the clean model's rate is on the same "
                 "triggered images.",
                 "Faster R-CNN uses lr 0.04 (the spec's 0.02 gave mAP@50 0.893 after 600 steps at 64 px); its models "
                 "are not fine-tuned (the persistence claim is tested on the one-stage)."]  # fmt: skip
        if variant_rows:
            best = {}
            for r in variant_rows:
                if r["AUROC"] == r["AUROC"] and r["AUROC"] > best.get(r["attack"], {"AUROC": -1})["AUROC"]:
                    best[r["attack"]] = r
            notes += [f"Detector Cleanse on {a}: the best variant is '{r['variant']}' (AUROC {r['AUROC']:.2f}, "
                      f"FRR {r['FRR']:.2f}, FAR {r['FAR']:.2f})." for a, r in best.items()]  # fmt: skip
        return ReproductionResult(
            name=self.name, system=self.system, title=self.title, quick=quick, seed=seed,
            config={"detectors": {k: {"batch": RECIPES[k][1], "lr": RECIPES[k][2], "optimizer": RECIPES[k][3]}
                                  for k in kinds},
                    "steps": steps, "train scenes": n_train, "test scenes": n_test, "rate": 0.1,
                    "trigger": "chessboard 8x8, 2-px cells", "target class": "disc",
                    "Detector Cleanse": {"N": {r["detector"]: r["N"] for r in dc_rows}
                                         | ({"variants": self.n_features or 20} if variant_rows else {}), "blend": 0.5,
                                         "q": 0.95, "score threshold": self.score_threshold,
                                         "calibration images": n_cal, "evaluated clean + triggered": n_eval},
                    "torch_threads": torch.get_num_threads()},
            tables={"Backdoored models": rows, "Detector Cleanse": dc_rows}
            | ({"Detector Cleanse variants (OGA, RMA, one-stage)": variant_rows} if variant_rows else {})
            | ({"Clean fine-tuning (one-stage)": ft_rows} if ft_rows else {}),
            claims=claims, figures=figures, notes=notes,
        )  # fmt: skip

    def _cleanse(self, name, model, test, trig, features, n_feat, n_cal, n_eval, seed, options) -> dict:
        from sklearn.metrics import roc_auc_score

        try:
            dc = DetectorCleanse(n_features=n_feat, score_threshold=self.score_threshold, seed=seed, **options)
            dc.calibrate(model, test.images[:n_cal], features)
        except ValueError as exc:  # e.g. an undertrained model with no confident box: nothing to test
            nan = float("nan")
            return {"attack": name, "m (bits)": nan, "delta": nan, "FRR": nan, "FAR": nan, "AUROC": nan,
                    "s per image": nan, "note": str(exc)}  # fmt: skip
        held = test.images[n_cal : n_cal + n_eval]
        later = [i for i in trig.indices.tolist() if i >= n_cal][:n_eval]  # not the calibration scenes
        poisoned = trig.images[later]
        start = time.perf_counter()
        on_clean, on_trig = dc(model, held), dc(model, poisoned)
        per_image = (time.perf_counter() - start) / (len(held) + len(poisoned))
        scores = torch.cat([on_clean.scores, on_trig.scores]).numpy()
        labels = np.r_[np.zeros(len(held)), np.ones(len(poisoned))]
        auroc = float(roc_auc_score(labels, scores)) if 0 < len(poisoned) < len(labels) else float("nan")
        return {"attack": name, "m (bits)": dc.m, "delta": dc.delta, "FRR": float(on_clean.flags.float().mean()),
                "FAR": float(1 - on_trig.flags.float().mean()) if len(poisoned) else float("nan"),
                "AUROC": auroc, "s per image": per_image}  # fmt: skip

    def _variants(self, models, test, triggered, pool, features, seed) -> list[dict]:
        one = "one-stage"
        background = background_crops(pool.images, pool.targets, size=12, seed=seed)
        n_cal = min(100, len(test.images) // 3)
        rows = []
        for name in ("OGA", "RMA"):
            if (one, name) not in models:
                continue
            for label, options in VARIANTS.items():
                opts = dict(options)
                feats = background if opts.pop("features", None) == "background" else features
                n_feat = self.n_features or 20
                row = self._cleanse(name, models[one, name], test, triggered[name], feats, n_feat, n_cal, n_cal, seed,
                                    opts)  # fmt: skip
                rows.append({"variant": label} | row)
        return rows

    @staticmethod
    def _finetune(names, models, triggered, n_train, steps, seed, quiet) -> list[dict]:
        import copy

        other = scenes(n_train, seed=seed + 3)  # a disjoint clean set
        rows = []
        for name in names:
            if name == "ODA":
                continue
            for label, lr in (("0.1x", 3e-4), ("1x", 3e-3)):
                model = copy.deepcopy(models["one-stage", name])
                row = {"attack": name, "lr": label}
                for k, part in enumerate((steps // 3, steps // 3, steps - 2 * (steps // 3)), 1):
                    _fit("one-stage", other.images, other.targets, part, seed + k, lr=lr, model=model, quiet=quiet)
                    asr = attack_success_rate(_predict(model, triggered[name].images), triggered[name])
                    row[f"ASR s>0.5 ({['1/3', '2/3', 'end'][k - 1]})"] = asr
                rows.append(row)
        return rows

    @staticmethod
    def _figure(models: dict, triggered: dict, out_dir: Path) -> str:
        from matplotlib.patches import Rectangle

        from ..core.report import new_figure, save_figure

        names = list(models)
        fig, axes = new_figure(1, len(names), figsize=(3.2 * len(names), 3.4))
        axes = np.atleast_1d(axes)
        for ax, name in zip(axes, names, strict=True):
            trig = triggered[name]
            i = max(trig.asr_boxes, key=lambda k: len(trig.asr_boxes[k]))  # the image with most attacked boxes
            (pred,) = _predict(models[name], trig.images[i : i + 1])
            ax.imshow(trig.images[i].permute(1, 2, 0).numpy())
            for b, lab, s in zip(pred["boxes"].tolist(), pred["labels"].tolist(), pred["scores"].tolist(), strict=True):
                if s > 0.5:
                    ax.add_patch(Rectangle((b[0] - 0.5, b[1] - 0.5), b[2] - b[0], b[3] - b[1], fill=False,
                                           color="red" if lab == 0 else "yellow", linewidth=1.2))  # fmt: skip
            ax.set_title(f"{name} model, triggered (red = target class)", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        save_figure(fig, out_dir / "examples.png")
        return "examples.png"


REPRODUCTIONS.register("baddet", BadDetReproduction())
