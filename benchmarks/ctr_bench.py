"""CTR benchmark: flat memory of the streaming pipeline, and bastion vs DeepCTR-Torch 0.3.0 vs FuxiCTR 2.3.10.

Two parts, each measurement in its own subprocess so that its peak RSS (``ru_maxrss``) is its own:

1. **Memory** (issue #6, acceptance 1): generating 50M rows; one pipeline pass (read -> hash -> batches,
   shuffle on, 4096 rows a batch) over 10M and over 50M generated rows; one DeepFM epoch (streamed) on 1M
   and on 5M rows. Targets: pipeline 50M / 10M peak RSS <= 1.2 and both < 3 GiB; generation < 2 GiB;
   DeepFM 5M vs 1M within 20 %.
2. **Side by side** (acceptance 2): one generated data set (>= 500K rows), encoded once by bastion (user and
   item ids by vocabulary, 27 hashed deep features: 29 fields, ids < 2^24), written to one ``.npz`` that all
   three libraries read; DeepFM d = 16, MLP 400-400-400, batch 4096, Adam 1e-3, 1 epoch, 1 thread; the three
   run back to back, ``--repeats`` times, repeat r with seed r for every library (medians reported, and each
   seed's AUC gap to that seed's better anchor). bastion trains with its fused sparse table
   (lazy row-wise Adam) and dense Adam, the anchors with their own loops (``benchmarks/_ctr_anchors.py``).
   The acceptance figures are float32 throughout. bastion's MLP layers run through oneDNN on CPU
   (:mod:`bastion.ctr.dense`; the anchors' ``nn.Linear`` calls MKL), so three more rows attribute the
   differences: ``bastion-mkl`` is bastion with every layer through ``F.linear`` (``set_onednn(False)``);
   ``bastion-anchor-emb`` takes the anchors' embedding settings (dense Adam over every table row, init
   N(0, 1e-4)) to show how much of the AUC difference those two choices make; ``bastion-bf16`` is bastion
   with ``mixed_precision="bf16"`` (autocast forward), a setting the anchors do not offer on a CPU. A ``gemm``
   child times the MLP's three products (first-layer shape) in MKL and oneDNN with their float32 error
   against a float64 product, and names the CPU.

::

    python benchmarks/ctr_bench.py                     # both parts, full sizes (~30 min on 2 cores)
    python benchmarks/ctr_bench.py --part side --rows 600000 --repeats 3
    python benchmarks/ctr_bench.py --quick             # small sizes, a smoke run

Writes ``benchmarks/results/ctr_bench.json`` (or ``--json``) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GIB = 1024.0


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _threads(n: int) -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    import torch

    torch.set_num_threads(n)


# ------------------------------------------------------------------------------------------ children
def child_generate(out: str, rows: int, seed: int) -> dict:
    from bastion.ctr.generator import generate

    t0 = time.perf_counter()
    d = generate(out, rows=rows, seed=seed)
    return {"rows": sum(d.rows.values()), "seconds": time.perf_counter() - t0, "peak_rss_mib": _rss_mib()}


def child_pipeline(data: str, batch_size: int) -> dict:
    """One pass over train+val+test, read -> hash -> shuffled batches; nothing kept."""
    from bastion.ctr.pipeline import BatchEncoder, CTRStream, ParquetSource

    _threads(1)
    files = sorted(Path(data).glob("*/*.parquet"))
    enc = BatchEncoder(["user_id", "item_id", *[f"deep_features_{i}" for i in range(27)]], num_buckets=2**20)
    stream = CTRStream(ParquetSource(files), enc, batch_size=batch_size, seed=0, shuffle=True)
    t0 = time.perf_counter()
    rows = batches = 0
    checksum = 0
    for b in stream:
        rows += int(b["label"].shape[0])
        batches += 1
        checksum ^= int(b["ids"][0, 0])
    dt = time.perf_counter() - t0
    return {"rows": rows, "batches": batches, "seconds": dt, "rows_per_s": rows / dt, "peak_rss_mib": _rss_mib()}


def child_train_stream(data: str, batch_size: int) -> dict:
    """One streamed DeepFM epoch (spec sizes) over a generated train split."""
    import torch

    from bastion.ctr.models import build_model
    from bastion.ctr.pipeline import BatchEncoder, CTRStream, ParquetSource
    from bastion.ctr.trainer import TrainConfig, fit

    _threads(1)
    enc = BatchEncoder(["user_id", "item_id", *[f"deep_features_{i}" for i in range(27)]], num_buckets=2**16)
    stream = CTRStream(ParquetSource(Path(data) / "train"), enc, batch_size=batch_size, seed=0)
    torch.manual_seed(0)
    model = build_model("deepfm", enc.spec(), dim=16, mlp=(400, 400, 400))
    res = fit(model, stream, None, TrainConfig(epochs=1))
    return {
        "rows": res.train_rows,
        "seconds": res.train_seconds,
        "samples_per_s": res.samples_per_s,
        "peak_rss_mib": _rss_mib(),
    }


VARIANTS = {
    "fp32": "bastion",
    "fp32-mkl": "bastion-mkl",
    "fp32-anchor-emb": "bastion-anchor-emb",
    "bf16": "bastion-bf16",
}


def child_bastion(npz: str, threads: int, seed: int, precision: str = "fp32") -> dict:
    """bastion's side of the side-by-side: the same arrays the anchors read."""
    import numpy as np
    import torch

    _threads(threads)
    from bastion.ctr import dense
    from bastion.ctr.features import FeatureSpec
    from bastion.ctr.metrics import auc
    from bastion.ctr.models import build_model
    from bastion.ctr.pipeline import ArrayBatches
    from bastion.ctr.trainer import TrainConfig, fit, predict

    if precision not in VARIANTS:
        raise ValueError(f"precision must be one of {sorted(VARIANTS)}, got {precision!r}")
    dense.set_onednn(precision != "fp32-mkl")  # fp32-mkl: every layer through F.linear (MKL), for attribution
    onednn_calls = [0]  # counts the layers that really took oneDNN (not just the switch)
    onednn_apply = dense._OneDNNLinear.apply

    def counted(*args):
        onednn_calls[0] += 1
        return onednn_apply(*args)

    dense._OneDNNLinear.apply = counted
    mp = "bf16" if precision == "bf16" else None
    # fp32-anchor-emb: the anchors' embedding settings (dense Adam over every row, init N(0, 1e-4)) to show
    # where the AUC difference comes from
    emb_kw = {"sparse": False, "init_std": 1e-4} if precision == "fp32-anchor-emb" else {}
    import_rss = _rss_mib()
    with np.load(npz) as z:
        data = {k: z[k] for k in z.files}
    sizes = [int(s) for s in data["field_sizes"]]
    spec = FeatureSpec([f"f{i:03d}" for i in range(len(sizes))], sizes)
    train = ArrayBatches(
        {"ids": data["train_ids"], "label": data["train_label"].astype(np.float32)}, batch_size=4096, seed=seed
    )
    test = ArrayBatches(
        {"ids": data["test_ids"], "label": data["test_label"].astype(np.float32)}, batch_size=16384, shuffle=False
    )
    torch.manual_seed(seed)
    model = build_model("deepfm", spec, dim=16, mlp=(400, 400, 400), **emb_kw)
    model.validate_inputs = False  # the anchors check nothing per batch either
    res = fit(
        model, train, None, TrainConfig(epochs=1, lr=1e-3, seed=seed, mixed_precision=mp), set_epoch=train.set_epoch
    )
    train_calls = onednn_calls[0]
    pred = predict(model, test)
    n_params = sum(p.numel() for p in model.parameters())
    return {
        "library": VARIANTS[precision],
        "onednn_layer_calls_per_step": train_calls / max(res.steps, 1),
        "version": _version(),
        "test_auc": auc(pred["label"], pred["p"]),
        "train_seconds": res.train_seconds,
        "samples_per_s": res.samples_per_s,
        "peak_rss_mib": _rss_mib(),
        "import_rss_mib": import_rss,
        "n_train": int(train.n),
        "n_test": int(test.n),
        "threads": threads,
        "parameters": int(n_params),
    }


def child_gemm(threads: int) -> dict:
    """The MLP's three products at DeepFM's first-layer shape, MKL (``F.linear`` / ``mm``) vs oneDNN."""
    import torch

    _threads(threads)
    from bastion.ctr.dense import onednn_available

    lp = torch.ops.mkldnn._linear_pointwise if onednn_available() else None
    g = torch.Generator().manual_seed(0)
    b, k, n = 4096, 29 * 16, 400
    x, w, gy = torch.randn(b, k, generator=g), torch.randn(n, k, generator=g), torch.randn(b, n, generator=g)
    cases = {
        "forward x W^T": (lambda: x @ w.t(), lambda: lp(x, w, None, "none", [], ""), x.double() @ w.double().t()),
        "grad input g W": (lambda: gy @ w, lambda: lp(gy, w.t(), None, "none", [], ""), gy.double() @ w.double()),
        "grad weight g^T x": (
            lambda: gy.t() @ x, lambda: lp(gy.t(), x.t(), None, "none", [], ""), gy.double().t() @ x.double()
        ),
    }  # fmt: skip

    def best_ms(fn, reps: int = 15) -> float:
        fn()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return 1000 * min(times)

    flop = 2.0 * b * k * n
    rows = []
    for name, (mkl, onednn, ref) in cases.items():
        row = {"product": name, "mkl_ms": best_ms(mkl)}
        row["mkl_gflops"] = flop / row["mkl_ms"] / 1e6
        row["mkl_max_rel_err"] = float((mkl().double() - ref).abs().max() / ref.abs().max())
        if lp is not None:
            row["onednn_ms"] = best_ms(onednn)
            row["onednn_gflops"] = flop / row["onednn_ms"] / 1e6
            row["onednn_max_rel_err"] = float((onednn().double() - ref).abs().max() / ref.abs().max())
            row["speedup"] = row["mkl_ms"] / row["onednn_ms"]
        rows.append(row)
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.is_file() else []
    cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "unknown")
    return {"shape": [b, k, n], "threads": threads, "cpu": cpu, "onednn_available": lp is not None, "rows": rows}


def _version() -> str:
    import bastion

    return bastion.__version__


CHILDREN = {
    "generate": child_generate,
    "pipeline": child_pipeline,
    "train_stream": child_train_stream,
    "bastion": child_bastion,
    "gemm": child_gemm,
}


def _run_child(kind: str, *args: str, timeout: float = 3600) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    if kind in ("deepctr", "fuxictr"):
        cmd = [sys.executable, str(HERE / "_ctr_anchors.py"), kind, *args, "--json", out]
    else:
        cmd = [sys.executable, __file__, "--child", kind, *args, "--json", out]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    res = json.loads(Path(out).read_text())
    os.unlink(out)
    res["process_seconds"] = time.perf_counter() - t0
    return res


# ------------------------------------------------------------------------------------------------ parts
def memory_part(work: Path, small: int, big: int, train_small: int, train_big: int) -> dict:
    out: dict = {}
    for rows in (small, big):
        print(f"memory: generating {rows:,} rows", flush=True)
        out[f"generate_{rows}"] = _run_child("generate", str(work / f"g{rows}"), str(rows), "0")
    for rows in (small, big):
        print(f"memory: pipeline pass over {rows:,} rows", flush=True)
        out[f"pipeline_{rows}"] = _run_child("pipeline", str(work / f"g{rows}"), "4096")
    for rows in (train_small, train_big):
        d = work / f"t{rows}"
        print(f"memory: DeepFM epoch on {rows:,} generated rows", flush=True)
        _run_child("generate", str(d), str(int(rows / 0.625) + 1), "1")  # train is ~62.5 % of the 8 days
        out[f"train_{rows}"] = _run_child("train_stream", str(d), "4096")
    p_small, p_big = out[f"pipeline_{small}"]["peak_rss_mib"], out[f"pipeline_{big}"]["peak_rss_mib"]
    t_small, t_big = out[f"train_{train_small}"]["peak_rss_mib"], out[f"train_{train_big}"]["peak_rss_mib"]
    out["summary"] = {
        "pipeline_rss_ratio": p_big / p_small,
        "pipeline_rss_gib": [p_small / GIB, p_big / GIB],
        "generate_big_rss_gib": out[f"generate_{big}"]["peak_rss_mib"] / GIB,
        "train_rss_ratio": t_big / t_small,
        "train_rss_gib": [t_small / GIB, t_big / GIB],
        "holds": {
            "pipeline ratio <= 1.2": p_big / p_small <= 1.2,
            "pipeline < 3 GiB": max(p_small, p_big) < 3 * GIB,
            "generate < 2 GiB": out[f"generate_{big}"]["peak_rss_mib"] < 2 * GIB,
            "train within 20 %": abs(t_big / t_small - 1) <= 0.2,
        },
    }
    return out


def side_part(work: Path, rows: int, repeats: int, threads: int) -> dict:
    import numpy as np

    from bastion.ctr.generator import generate
    from bastion.ctr.pipeline import BatchEncoder, ParquetSource, materialize

    data = work / "side"
    if not (data / "meta.json").is_file():
        print(f"side: generating {rows:,} rows", flush=True)
        generate(data, rows=rows, seed=0)
    enc = BatchEncoder(
        ["user_id", "item_id", *[f"deep_features_{i}" for i in range(27)]],
        num_buckets=2**16,
        vocab_fields=["user_id", "item_id"],
        cold_flags=False,
    )
    enc.fit(ParquetSource(data / "train"))
    train, test = materialize(data / "train", enc), materialize(data / "test", enc)
    sizes = np.asarray(enc.spec().field_sizes, dtype=np.int64)
    npz = work / "side.npz"
    np.savez(
        npz,
        train_ids=train["ids"],
        train_label=train["label"],
        test_ids=test["ids"],
        test_label=test["label"],
        field_sizes=sizes,
    )
    gemm = _run_child("gemm", str(threads))
    precision = {lib: key for key, lib in VARIANTS.items()}
    runs: dict[str, list[dict]] = {lib: [] for lib in ("bastion", "deepctr", "fuxictr", *list(VARIANTS.values())[1:])}
    for r in range(repeats):
        for lib in runs:
            print(f"side: repeat {r + 1}/{repeats}: {lib}", flush=True)
            if lib.startswith("bastion"):  # repeat r runs every library with seed r
                runs[lib].append(_run_child("bastion", str(npz), str(threads), str(r), precision[lib]))
            else:
                runs[lib].append(_run_child(lib, str(npz), "--threads", str(threads), "--seed", str(r)))
    med = {
        lib: {
            k: statistics.median(x[k] for x in rs)
            for k in ("test_auc", "samples_per_s", "peak_rss_mib", "train_seconds")
        }
        for lib, rs in runs.items()
    }
    best_anchor_auc = max(med["deepctr"]["test_auc"], med["fuxictr"]["test_auc"])
    ours = med["bastion"]
    summary = {
        "rows": rows,
        "n_train": int(train["label"].size),
        "n_test": int(test["label"].size),
        "fields": int(sizes.size),
        "auc_gap_to_better_anchor": ours["test_auc"] - best_anchor_auc,
        "speedup_vs_deepctr": ours["samples_per_s"] / med["deepctr"]["samples_per_s"],
        "speedup_vs_fuxictr": ours["samples_per_s"] / med["fuxictr"]["samples_per_s"],
    }
    summary["note"] = (
        "identical data, split, model sizes, batch, lr and epochs; bastion updates its embedding table with "
        "lazy row-wise Adam (SparseAdam semantics: only rows in the batch move) where both anchors run dense "
        "Adam over every embedding row, so part of the speed gap is that optimizer choice"
    )
    summary["onednn_layer_calls_per_step"] = runs["bastion"][0]["onednn_layer_calls_per_step"]
    summary["mkl_layers_speedup_vs_deepctr"] = med["bastion-mkl"]["samples_per_s"] / med["deepctr"]["samples_per_s"]
    summary["anchor_emb_auc_gap_to_better_anchor"] = med["bastion-anchor-emb"]["test_auc"] - best_anchor_auc
    for lib in ("bastion", "bastion-anchor-emb"):  # per seed: each repeat's gap to that seed's better anchor
        summary[f"{lib}_auc_gap_per_seed"] = [
            runs[lib][r]["test_auc"] - max(runs["deepctr"][r]["test_auc"], runs["fuxictr"][r]["test_auc"])
            for r in range(repeats)
        ]
    summary["bf16_speedup_vs_deepctr"] = med["bastion-bf16"]["samples_per_s"] / med["deepctr"]["samples_per_s"]
    summary["bf16_auc_gap_to_better_anchor"] = med["bastion-bf16"]["test_auc"] - best_anchor_auc
    summary["holds"] = {
        "AUC within 0.005 of the better anchor": abs(summary["auc_gap_to_better_anchor"]) <= 0.005
        or summary["auc_gap_to_better_anchor"] > 0,
        ">= 2x DeepCTR-Torch": summary["speedup_vs_deepctr"] >= 2.0,
        ">= 1.5x FuxiCTR": summary["speedup_vs_fuxictr"] >= 1.5,
    }
    return {"runs": runs, "median": med, "summary": summary, "gemm": gemm}


def _print(result: dict) -> None:
    if "memory" in result:
        m = result["memory"]
        print("\n| measurement | rows | seconds | peak RSS MiB |\n|---|---|---|---|")
        for k, v in m.items():
            if k != "summary":
                print(f"| {k} | {v.get('rows', '')} | {v.get('seconds', 0):.1f} | {v['peak_rss_mib']:.0f} |")
        print(json.dumps(m["summary"], indent=1))
    if "side" in result and "median" in result["side"]:
        s = result["side"]
        print("\n| library | test AUC | samples/s | train s | peak RSS MiB |  (medians)\n|---|---|---|---|---|")
        for lib, v in s["median"].items():
            print(
                f"| {lib} | {v['test_auc']:.4f} | {v['samples_per_s']:.0f} | {v['train_seconds']:.1f} | "
                f"{v['peak_rss_mib']:.0f} |"
            )
        print(json.dumps(s["summary"], indent=1))
    gm = result.get("side", {}).get("gemm")
    if gm:
        print(f"\nGEMM {gm['shape']} on {gm['cpu']}, {gm['threads']} thread(s)")
        print("| product | MKL ms | oneDNN ms | speed-up | oneDNN max rel err |\n|---|---|---|---|---|")
        for r in gm["rows"]:
            nan = float("nan")
            print(f"| {r['product']} | {r['mkl_ms']:.2f} | {r.get('onednn_ms', nan):.2f} | "
                  f"{r.get('speedup', nan):.2f} | {r.get('onednn_max_rel_err', nan):.1e} |")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=["memory", "side", "gemm", "all"], default="all")
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    ap.add_argument("--rows", type=int, default=None, help="generated rows of the side-by-side data (>= 500K)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", default=None, help="folder for generated data (default: a temporary one)")
    ap.add_argument("--json", default=str(HERE / "results" / "ctr_bench.json"))
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args, rest = ap.parse_known_args(argv)
    if args.child:
        out = rest[rest.index("--json") + 1] if "--json" in rest else args.json
        pos = [a for i, a in enumerate(rest) if a != "--json" and (i == 0 or rest[i - 1] != "--json")]
        fn = CHILDREN[args.child]
        conv = [int(a) if a.isdigit() else a for a in pos]
        Path(out).write_text(json.dumps(fn(*conv)))
        return 0
    if args.rows is not None and args.rows < 1:
        ap.error("--rows must be >= 1")
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    tmp = tempfile.TemporaryDirectory(prefix="bastion-ctr-bench-") if args.work is None else None
    work = Path(args.work or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    result: dict = {"quick": args.quick, "threads": args.threads}
    t0 = time.perf_counter()
    try:
        if args.part in ("memory", "all"):
            sizes = (
                (200_000, 1_000_000, 100_000, 500_000) if args.quick else (10_000_000, 50_000_000, 1_000_000, 5_000_000)
            )
            result["memory"] = memory_part(work, *sizes)
        if args.part == "gemm":  # the side part runs it too
            result["side"] = {"gemm": _run_child("gemm", str(args.threads))}
        if args.part in ("side", "all"):
            rows = args.rows or (120_000 if args.quick else 800_000)
            result["side"] = side_part(work, rows, 1 if args.quick else args.repeats, args.threads)
    finally:
        if tmp is not None:
            tmp.cleanup()
    result["wall_seconds"] = time.perf_counter() - t0
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1))
    _print(result)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
