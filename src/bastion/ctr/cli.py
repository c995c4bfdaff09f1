"""``bastion ctr``: generate or convert AntM2C-layout data, train (DDP via ``torchrun``), evaluate, benchmark.

::

    bastion ctr generate data/syn --rows 1000000 --seed 0
    bastion ctr convert antm2c_10m_part0 antm2c_10m_part1 antm2c_10m_part2 --out data/antm2c
    bastion ctr train --data data/syn --model deepfm --out runs/deepfm
    torchrun --nproc_per_node 2 -m bastion.ctr.run --data data/syn --model deepfm --out runs/deepfm2
    bastion ctr evaluate --model-dir runs/deepfm --data data/syn
    bastion ctr bench -- --quick

``train`` is :func:`bastion.ctr.run.train_ctr` in one process; ``python -m bastion.ctr.run`` takes the same
options (this module's :data:`train_command`) and runs one rank of a ``torchrun`` job. Heavy imports happen
inside the commands, so ``bastion --help`` stays fast.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import click

__all__ = ["ctr", "train_command"]

MODEL_CHOICES = (
    "lr", "fm", "dnn", "wdl", "deepfm", "dcn", "dcnv2", "autoint", "xdeepfm",
    "per_scene", "pooled", "shared_bottom", "mmoe", "ple", "star",
)  # fmt: skip
"""bastion.ctr.models.MODEL_NAMES (kept here so that ``--help`` needs no import; a test checks they agree)."""
TIME_FORMATS = ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"]


def _is_rank0() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _echo(msg: str = "") -> None:
    if _is_rank0():
        click.echo(msg)


def _ints(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        out = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(
            f"expected comma-separated positive integers such as 400,400,400, got {value!r}"
        ) from None
    if not out or min(out) < 1:
        raise click.BadParameter(f"expected comma-separated positive integers such as 400,400,400, got {value!r}")
    return out


def _features(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    groups = ("id", "text", "image")
    out = tuple(v.strip() for v in value.split(",") if v.strip())
    bad = [v for v in out if v not in groups]
    if bad or not out:
        raise click.BadParameter(f"expected a comma-separated subset of {','.join(groups)}, got {value!r}")
    if "id" not in out:
        raise click.BadParameter("must include 'id' (the categorical fields every model embeds)")
    if len(set(out)) != len(out):
        raise click.BadParameter(f"names a group twice: {value!r}")
    return out


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def _show_scores(scores: dict[str, Any]) -> None:
    from ..core.report import markdown_table

    keys = [
        ("rows", "n"),
        ("AUC", "auc"),
        ("logloss", "logloss"),
        ("weighted scene AUC", "weighted_auc"),
        ("gAUC", "gauc"),
        ("cold-item AUC", "cold_item_auc"),
        ("warm-item AUC", "warm_item_auc"),
        ("cold-item share", "cold_item_share"),
        ("cold-user AUC", "cold_user_auc"),
        ("warm-user AUC", "warm_user_auc"),
        ("oracle AUC (p_true)", "oracle_auc"),
        ("oracle cold-item AUC", "oracle_cold_item_auc"),
    ]
    rows = [{"metric": name, "value": _fmt(scores[k])} for name, k in keys if k in scores]
    _echo(markdown_table(rows))
    if scores.get("scene_auc"):
        _echo(markdown_table([{"scene": s, "AUC": _fmt(a)} for s, a in scores["scene_auc"].items()]))


# --------------------------------------------------------------------------------------------------- group
@click.group("ctr")
def ctr() -> None:
    """AntM2C multi-scenario multi-modal CTR: data, training (DDP via torchrun), evaluation, benchmark."""


@ctr.command("generate")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--rows", type=click.IntRange(min=1), default=1_000_000, show_default=True, help="rows in all splits")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--negative-keep", type=click.FloatRange(min=0, max=1, min_open=True), default=None,
              help="keep this share of negatives (down-sampling as in the release); default: keep all")  # fmt: skip
@click.option("--image-dim", type=click.IntRange(min=1), default=64, show_default=True, help="item vector width")
@click.option("--checks", is_flag=True, help="print the spec's sanity figures (reads the data once)")
@click.option("--overwrite", is_flag=True, help="replace the Parquet parts already in OUT")
def ctr_generate(out: str, rows: int, seed: int, negative_keep: float | None, image_dim: int, checks: bool,
                 overwrite: bool) -> None:  # fmt: skip
    """Write an AntM2C-shaped synthetic data set (37 columns + p_true) under OUT/{train,val,test}/."""
    from .generator import generate, generator_checks

    root = Path(out)
    old = [p for s in ("train", "val", "test") for p in sorted((root / s).glob("*.parquet"))]
    if old and not overwrite:
        raise click.UsageError(f"{out} already holds Parquet parts ({old[0]}, ...); pass --overwrite or pick a new OUT")
    for p in old:
        p.unlink()
    try:
        data = generate(root, rows=rows, seed=seed, negative_keep=negative_keep, image_dim=image_dim, quiet=False)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(f"generated {sum(data.rows.values()):,} rows ({data.n_users:,} users, {data.n_items:,} items) -> {out}")
    click.echo("  " + ", ".join(f"{s} {n:,}" for s, n in data.rows.items()) + f"; item vectors {data.item_vectors}")
    if checks:
        from ..core.report import markdown_table

        click.echo(markdown_table([{"check": k, "value": _fmt(v)} for k, v in generator_checks(data).items()]))


@ctr.command("convert")
@click.argument("csv", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="output folder")
@click.option("--bad-rows", type=click.Choice(["raise", "skip"]), default="raise", show_default=True,
              help="raise on the first bad row, or skip it into OUT/quarantine.csv")  # fmt: skip
@click.option("--no-split", is_flag=True, help="write OUT/part-*.parquet without a time split")
@click.option("--train-end", type=click.DateTime(TIME_FORMATS), default=None,
              help="train: log_time <= this [default: 2023-08-03 00:00:00, the release's split]")  # fmt: skip
@click.option("--val-end", type=click.DateTime(TIME_FORMATS), default=None,
              help="val: train-end < log_time <= this; test after [default: 2023-08-05 00:00:00]")  # fmt: skip
@click.option("--rows-per-file", type=click.IntRange(min=1), default=2_000_000, show_default=True)
@click.option("--overwrite", is_flag=True, help="replace earlier outputs in OUT")
def ctr_convert(csv: tuple[str, ...], out: str, bad_rows: str, no_split: bool, train_end, val_end,
                rows_per_file: int, overwrite: bool) -> None:  # fmt: skip
    """Convert the release's CSV parts (header, 37 columns) to zstd Parquet, split by log_time."""
    from .convert import convert_csv
    from .schema import ANTM2C_SPLIT, DateSplit

    if no_split and (train_end is not None or val_end is not None):
        raise click.UsageError("--no-split cannot be combined with --train-end / --val-end")
    split = None
    try:
        if not no_split:
            split = DateSplit(train_end or ANTM2C_SPLIT.train_end, val_end or ANTM2C_SPLIT.val_end)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            summary = convert_csv(list(csv), out, bad_rows=bad_rows, split=split, rows_per_file=rows_per_file,
                                  overwrite=overwrite)  # fmt: skip
    except (ValueError, TypeError, FileExistsError, FileNotFoundError) as exc:
        raise click.UsageError(str(exc)) from exc
    for w in caught:
        click.echo(f"warning: {w.message}", err=True)
    click.echo(f"converted {summary.rows_read:,} rows from {len(csv)} file(s) -> {out}")
    click.echo("  " + ", ".join(f"{s} {n:,}" for s, n in summary.rows.items())
               + f"; repeated headers dropped {summary.header_rows}, bad rows {summary.bad_rows}")  # fmt: skip
    if summary.quarantine_path is not None:
        click.echo(f"  bad rows with their reasons: {summary.quarantine_path}")


# --------------------------------------------------------------------------------------------------- train
@ctr.command("train")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False),
              help="a folder with train/, val/, test/ Parquet (ctr generate or convert)")  # fmt: skip
@click.option("--model", type=click.Choice(MODEL_CHOICES), default="deepfm", show_default=True)
@click.option("--features", default="id,text,image", show_default=True, callback=_features,
              help="feature groups: id (user, item, 27 deep features), text, image")  # fmt: skip
@click.option("--text", type=click.Choice(["hashed", "minilm"]), default="hashed", show_default=True,
              help="item-title encoder (user and entity text always use hashed bigrams)")  # fmt: skip
@click.option("--image", type=click.Path(exists=True, dir_okay=False), default=None,
              help="item vectors (safetensors: item_id, vectors) [default: DATA/item_vectors.safetensors]")  # fmt: skip
@click.option("--num-buckets", type=click.IntRange(min=2), default=2**16, show_default=True,
              help="hash buckets per deep feature")  # fmt: skip
@click.option("--dim", type=click.IntRange(min=1), default=16, show_default=True, help="embedding width d")
@click.option("--mlp", default=None, callback=_ints, help="MLP widths, e.g. 400,400,400 [default: the model's]")
@click.option("--batch-size", type=click.IntRange(min=1), default=4096, show_default=True,
              help="global batch: split evenly over the torchrun ranks")  # fmt: skip
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--patience", type=click.IntRange(min=1), default=2, show_default=True,
              help="stop after this many epochs without a better val AUC")  # fmt: skip
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True, help="DataLoader workers")
@click.option("--buffer-rows", type=click.IntRange(min=1), default=1 << 20, show_default=True,
              help="shuffle buffer rows per reader")  # fmt: skip
@click.option("--max-steps", type=click.IntRange(min=1), default=None, help="stop after this many steps")
@click.option("--sparse-optimizer", type=click.Choice(["row_adam", "sparse_adam"]), default="row_adam",
              show_default=True, help="lazy Adam on the embedding table")  # fmt: skip
@click.option("--bf16", is_flag=True, help="bfloat16 autocast for the training forward")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch threads [default: bastion --threads, or 1 per rank under torchrun]")  # fmt: skip
@click.option("--out", type=click.Path(file_okay=False), default="report/ctr", show_default=True,
              help="folder for model.pt, encoder.safetensors, config.json, metrics.json")  # fmt: skip
def ctr_train(data: str, model: str, features: tuple[str, ...], text: str, image: str | None, num_buckets: int,
              dim: int, mlp: tuple[int, ...] | None, batch_size: int, lr: float, epochs: int, patience: int,
              seed: int, workers: int, buffer_rows: int, max_steps: int | None, sparse_optimizer: str, bf16: bool,
              threads: int | None, out: str) -> None:  # fmt: skip
    """Train a CTR model on DATA (streamed), early-stop on val AUC, score test; write a reloadable OUT."""
    import torch

    from .run import RunConfig, train_ctr

    if threads is not None:
        torch.set_num_threads(threads)
    try:
        cfg = RunConfig(data=data, model=model, features=features, text=text, image=image, num_buckets=num_buckets,
                        dim=dim, mlp=mlp, batch_size=batch_size, lr=lr, epochs=epochs, patience=patience, seed=seed,
                        workers=workers, buffer_rows=buffer_rows, max_steps=max_steps,
                        sparse_optimizer=sparse_optimizer, mixed_precision="bf16" if bf16 else None,
                        out=out)  # fmt: skip
        m = train_ctr(cfg, quiet=False)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        raise click.UsageError(str(exc)) from exc
    _echo(f"{model} on {data} ({'+'.join(features)}, {m['world_size']} process(es)): {m['train_rows']:,} train rows, "
          f"{m['steps']} steps, {m['epochs_run']} epoch(s), best epoch {m['best_epoch']} (val AUC {m['val_auc']:.4f}), "
          f"{m['samples_per_s']:,.0f} samples/s")  # fmt: skip
    _echo(f"test split of {data}:")
    _show_scores(m["test"])
    _echo(f"wrote {out}")


train_command = ctr_train
"""The ``train`` command; :func:`bastion.ctr.run.main` runs it under ``torchrun``."""


@ctr.command("evaluate")
@click.option("--model-dir", required=True, type=click.Path(exists=True, file_okay=False), help="a ctr train --out")
@click.option("--data", type=click.Path(exists=True, file_okay=False), default=None,
              help="data in the same layout [default: the folder trained on]")  # fmt: skip
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="test", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=8192, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True, help="DataLoader workers")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="write the metrics as JSON")
def ctr_evaluate(model_dir: str, data: str | None, split: str, batch_size: int, workers: int, out: str | None) -> None:
    """Reload a trained model and its vocabularies; score a split (test by default)."""
    from ..core.report import write_json
    from .run import evaluate_ctr

    try:
        res = evaluate_ctr(model_dir, data, split=split, batch_size=batch_size, workers=workers)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(f"{res['model']} from {model_dir} on the {split} split of {res['data']} ({res['seconds']:.1f} s):")
    _show_scores(res[split])
    if out:
        write_json(out, res)
        click.echo(f"wrote {out}")


# --------------------------------------------------------------------------------------------------- bench
def bench_script() -> Path:
    """Where ``benchmarks/ctr_bench.py`` lives in a source checkout (it is not installed with the package)."""
    return Path(__file__).resolve().parents[3] / "benchmarks" / "ctr_bench.py"


@ctr.command("bench", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def ctr_bench(args: tuple[str, ...]) -> None:
    """Run benchmarks/ctr_bench.py of the source checkout with ARGS (e.g. -- --quick; -- --help lists them)."""
    script = bench_script()
    if not script.is_file():
        raise click.ClickException(
            f"the CTR benchmark is not part of the installed package: it is benchmarks/ctr_bench.py in the bastion "
            f"source checkout (looked for {script}). Run it there: python benchmarks/ctr_bench.py"
        )
    code = subprocess.call([sys.executable, str(script), *args])
    if code:
        raise click.exceptions.Exit(code)
