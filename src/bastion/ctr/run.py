"""The AntM2C training job: streamed training (DDP under ``torchrun``), early stopping, test metrics, reload.

Followed: spec ``antm2c.md`` §2 (tasks and metrics: overall, per-scene and weighted AUC, gAUC, cold/warm rows,
vocabularies fit on train only), §3 (defaults: d = 16, MLP 400-400-400, batch 4096, Adam 1e-3 on dense weights,
lazy Adam on the fused sparse table), §4 (stream Parquet, reshuffle per ``(seed, epoch)``, shard per rank x
DataLoader worker, DDP via ``torchrun`` with gloo on CPU; sparse gradients all-reduce on gloo, checked in
``tests/ctr/test_run_ddp.py``) and §7 (``weights_only`` checkpoints, no pickle anywhere).

::

    torchrun --nproc_per_node 2 -m bastion.ctr.run --data DIR --model deepfm --out runs/deepfm
    bastion ctr train --data DIR --model deepfm --out runs/deepfm       # one process, same function
    bastion ctr evaluate --model-dir runs/deepfm --data DIR             # reload and score test/

``--batch-size`` is the *global* batch: each of ``W`` ranks reads ``batch_size / W`` rows a step, so one step
of any world size averages the gradient over the same number of rows (DDP averages the ranks' means). Every
rank fits the same vocabularies from ``train/`` and builds the same model from ``seed``.

Outputs under ``out`` (written by rank 0):

- ``model.pt``: the model's ``state_dict`` (tensors only; loads with ``torch.load(weights_only=True)``) and
  ``model.json`` (best epoch, validation AUC);
- ``encoder.safetensors``: the exact vocabularies (sorted int64 ids) of the encoder, which also define the
  cold-start rows; hashed fields and text encoders are deterministic and need no state;
- ``config.json``: the :class:`RunConfig` and the :class:`~bastion.ctr.features.FeatureSpec`;
- ``metrics.json``: test metrics, best validation AUC, per-epoch history, samples/s.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from ..core.checks import check_choice, check_float, check_int
from .features import FeatureSpec
from .models import MODEL_NAMES, build_model
from .pipeline import BatchEncoder, CTRStream
from .tasks import FEATURE_GROUPS, antm2c_encoder, split_dirs
from .trainer import TrainConfig, evaluate_predictions, fit, load_checkpoint, predict, save_checkpoint

__all__ = [
    "RunConfig",
    "encoder_state",
    "evaluate_ctr",
    "load_encoder_state",
    "load_trained",
    "main",
    "train_ctr",
]

CONFIG_FILE = "config.json"
MODEL_FILE = "model.pt"
ENCODER_FILE = "encoder.safetensors"
METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class RunConfig:
    """Everything :func:`train_ctr` needs; saved as ``config.json`` so :func:`evaluate_ctr` can rebuild the run.

    >>> RunConfig(data="d", mlp=[64, 32]).mlp
    (64, 32)
    >>> RunConfig(data="d", features=("text",))
    Traceback (most recent call last):
    ValueError: features must include 'id' (the categorical fields every model embeds), got ('text',)
    """

    data: str
    model: str = "deepfm"
    features: Sequence[str] = ("id", "text", "image")
    text: str = "hashed"
    image: str | None = None
    num_buckets: int = 2**16
    dim: int = 16
    mlp: Sequence[int] | None = None
    batch_size: int = 4096
    eval_batch_size: int = 8192
    lr: float = 1e-3
    epochs: int = 1
    patience: int = 2
    seed: int = 0
    workers: int = 0
    buffer_rows: int = 1 << 20
    max_steps: int | None = None
    sparse_optimizer: str = "row_adam"
    mixed_precision: str | None = None
    out: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Keyword arguments for :func:`~bastion.ctr.models.build_model` (e.g. ``fusion``, ``experts``)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", str(self.data))
        object.__setattr__(self, "features", tuple(self.features))
        for f in self.features:
            check_choice(f, "features", FEATURE_GROUPS)
        if "id" not in self.features:
            raise ValueError(
                f"features must include 'id' (the categorical fields every model embeds), got {self.features}"
            )
        if len(set(self.features)) != len(self.features):
            raise ValueError(f"features must not repeat a group, got {self.features}")
        check_choice(self.model, "model", MODEL_NAMES)
        check_choice(self.text, "text", ("hashed", "minilm"))
        if self.image is not None:
            object.__setattr__(self, "image", str(self.image))
        check_int(self.num_buckets, "num_buckets", minimum=2)
        check_int(self.dim, "dim", minimum=1)
        if self.mlp is not None:
            mlp = tuple(self.mlp)
            for i, w in enumerate(mlp):
                check_int(w, f"mlp[{i}]", minimum=1)
            object.__setattr__(self, "mlp", mlp)
        check_int(self.batch_size, "batch_size", minimum=1)
        check_int(self.eval_batch_size, "eval_batch_size", minimum=1)
        check_float(self.lr, "lr", minimum=0.0, min_inclusive=False)
        check_int(self.epochs, "epochs", minimum=1)
        check_int(self.patience, "patience", minimum=1)
        check_int(self.seed, "seed", minimum=0)
        check_int(self.workers, "workers", minimum=0)
        check_int(self.buffer_rows, "buffer_rows", minimum=1)
        if self.max_steps is not None:
            check_int(self.max_steps, "max_steps", minimum=1)
        check_choice(self.sparse_optimizer, "sparse_optimizer", ("row_adam", "sparse_adam"))
        check_choice(self.mixed_precision, "mixed_precision", (None, "bf16"))
        if self.out is not None:
            object.__setattr__(self, "out", str(self.out))
        object.__setattr__(self, "extra", dict(self.extra))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["features"], d["mlp"] = list(self.features), None if self.mlp is None else list(self.mlp)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"config has unknown key(s) {unknown} (written by another bastion version?)")
        return cls(**d)


# ------------------------------------------------------------------------------------------- encoder state
def encoder_state(encoder: BatchEncoder) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The fitted state of ``encoder`` as arrays + string metadata: :meth:`BatchEncoder.state`."""
    return encoder.state()


def load_encoder_state(
    encoder: BatchEncoder, arrays: Mapping[str, np.ndarray], meta: Mapping[str, str]
) -> BatchEncoder:
    """Put the vocabularies of :func:`encoder_state` into ``encoder``: :meth:`BatchEncoder.load_state`."""
    return encoder.load_state(arrays, meta)


def _save_encoder(encoder: BatchEncoder, path: Path) -> None:
    from safetensors.numpy import save_file

    arrays, meta = encoder_state(encoder)
    tmp = path.with_name(path.name + ".tmp")
    save_file(arrays, str(tmp), metadata=meta)
    os.replace(tmp, path)


def _load_encoder_file(encoder: BatchEncoder, path: Path) -> BatchEncoder:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata() or {}
        arrays = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    return load_encoder_state(encoder, arrays, meta)


# -------------------------------------------------------------------------------------------------- helpers
def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _spec_dict(spec: FeatureSpec) -> dict[str, Any]:
    return {
        "field_names": list(spec.field_names),
        "field_sizes": list(spec.field_sizes),
        "num_scenes": spec.num_scenes,
        "vector_dims": dict(spec.vector_dims),
    }


def _encoder(cfg: RunConfig, data: str | os.PathLike[str], *, fit: bool = True) -> BatchEncoder:
    return antm2c_encoder(data, cfg.features, text=cfg.text, image=cfg.image, num_buckets=cfg.num_buckets, fit=fit)


def _loader(stream: CTRStream, workers: int) -> DataLoader:
    return DataLoader(stream, batch_size=None, num_workers=workers)


def _stream(path: Path, encoder: BatchEncoder, cfg: RunConfig, *, train: bool, rank: int, world: int) -> CTRStream:
    return CTRStream(
        path,
        encoder,
        batch_size=cfg.batch_size // world if train else cfg.eval_batch_size,
        shuffle=train,
        seed=cfg.seed,
        buffer_rows=cfg.buffer_rows,
        rank=rank,
        world_size=world,
        num_workers=cfg.workers,
    )


def _count_parameters(model: torch.nn.Module) -> dict[str, int]:
    from .trainer import split_parameters

    sparse, dense = split_parameters(model)
    return {"sparse": sum(p.numel() for p in sparse), "dense": sum(p.numel() for p in dense)}


# -------------------------------------------------------------------------------------------------- train
def train_ctr(config: RunConfig, *, quiet: bool = True) -> dict[str, Any]:
    """Train ``config.model`` on ``config.data`` (train/ streamed, val/ for early stopping), score test/.

    Runs as one process, or as one rank of a job when a ``torch.distributed`` process group with more than
    one rank is initialised (``torchrun``; :func:`main` does it). Returns the metrics dict (also written to
    ``out/metrics.json`` with the model, the encoder state and the config when ``config.out`` is set):
    ``test`` (AUC, logloss, per-scene and weighted AUC, gAUC, cold/warm AUC, oracle AUC when ``p_true`` is
    in the data), ``val_auc`` (best epoch), ``history``, ``samples_per_s`` (all ranks together) and more.
    """
    if not isinstance(config, RunConfig):
        raise TypeError(f"config must be a RunConfig, got {type(config).__name__}")
    cfg = config
    rank, world = _world()
    if cfg.batch_size % world:
        raise ValueError(
            f"batch_size ({cfg.batch_size}, the global batch) must be a multiple of the world size {world}"
        )
    t_start = time.perf_counter()
    dirs = split_dirs(cfg.data)
    encoder = _encoder(cfg, cfg.data)
    spec = encoder.spec()
    train_s = _stream(dirs["train"], encoder, cfg, train=True, rank=rank, world=world)
    val_s = _stream(dirs["val"], encoder, cfg, train=False, rank=rank, world=world)
    test_s = _stream(dirs["test"], encoder, cfg, train=False, rank=rank, world=world)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, spec, dim=cfg.dim, mlp=cfg.mlp, **cfg.extra)
    tcfg = TrainConfig(
        epochs=cfg.epochs,
        lr=cfg.lr,
        patience=cfg.patience,
        max_steps=cfg.max_steps,
        seed=cfg.seed,
        quiet=quiet or rank != 0,
        sparse_optimizer=cfg.sparse_optimizer,
        mixed_precision=cfg.mixed_precision,
    )
    res = fit(model, _loader(train_s, cfg.workers), _loader(val_s, cfg.workers), tcfg, set_epoch=train_s.set_epoch)
    test = evaluate_predictions(predict(model, _loader(test_s, cfg.workers)))
    rows = torch.tensor([float(res.train_rows), res.train_seconds], dtype=torch.float64)
    if world > 1:
        total = rows.clone()
        dist.all_reduce(total[:1])
        slowest = rows[1:].clone()
        dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
        rows = torch.cat([total[:1], slowest])
    metrics: dict[str, Any] = {
        "model": cfg.model,
        "features": list(cfg.features),
        "text": cfg.text,
        "data": str(Path(cfg.data).resolve()),
        "world_size": world,
        "batch_size": cfg.batch_size,
        "batch_size_per_rank": cfg.batch_size // world,
        "test": test,
        "val_auc": res.best_val_auc,
        "best_epoch": res.best_epoch,
        "epochs_run": len(res.history),
        "steps": res.steps,
        "history": res.history,
        "train_rows": int(rows[0]),
        "train_seconds": float(rows[1]),
        "samples_per_s": float(rows[0] / rows[1]) if rows[1] > 0 else float("nan"),
        "samples_per_s_per_rank": res.samples_per_s,
        "parameters": _count_parameters(model),
        "spec": _spec_dict(spec),
        "wall_s": time.perf_counter() - t_start,
    }
    if cfg.out is not None and rank == 0:
        _write_outputs(Path(cfg.out), cfg, model, encoder, spec, metrics)
    if world > 1:
        dist.barrier()  # the outputs exist before any rank returns
    return metrics


def _write_outputs(out: Path, cfg: RunConfig, model, encoder: BatchEncoder, spec: FeatureSpec, metrics) -> None:
    from ..core.report import write_json

    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, out / MODEL_FILE, {"best_epoch": metrics["best_epoch"], "val_auc": metrics["val_auc"]})
    _save_encoder(encoder, out / ENCODER_FILE)
    conf = cfg.to_dict()
    conf["data"] = str(Path(cfg.data).resolve())
    if cfg.image is not None:
        conf["image"] = str(Path(cfg.image).resolve())
    write_json(out / CONFIG_FILE, {"run": conf, "spec": _spec_dict(spec), "world_size": metrics["world_size"]})
    write_json(out / METRICS_FILE, metrics)


# ------------------------------------------------------------------------------------------------ reload
def load_trained(
    model_dir: str | os.PathLike[str], data: str | os.PathLike[str] | None = None
) -> tuple[torch.nn.Module, BatchEncoder, RunConfig]:
    """Rebuild a trained model and its encoder from a :func:`train_ctr` output folder.

    ``data`` (default: the folder trained on) supplies the Parquet layout, the item vectors when the run
    used the default ``item_vectors.safetensors``, and is checked against the saved feature spec.
    """
    d = Path(model_dir)
    missing = [n for n in (CONFIG_FILE, MODEL_FILE, ENCODER_FILE) if not (d / n).is_file()]
    if missing:
        raise ValueError(f"model_dir {str(d)!r} is not a bastion ctr train output (missing {missing})")
    saved = json.loads((d / CONFIG_FILE).read_text())
    if not isinstance(saved, dict) or "run" not in saved or "spec" not in saved:
        raise ValueError(f"{d / CONFIG_FILE} lacks 'run' and 'spec'")
    cfg = RunConfig.from_dict(saved["run"])
    root = cfg.data if data is None else str(data)
    encoder = _load_encoder_file(_encoder(cfg, root, fit=False), d / ENCODER_FILE)  # saved vocabularies
    spec = encoder.spec()
    if _spec_dict(spec) != saved["spec"]:
        raise ValueError(
            f"data {root!r} does not give the features the model was trained on: got {_spec_dict(spec)}, "
            f"saved {saved['spec']}"
        )
    model = build_model(cfg.model, spec, dim=cfg.dim, mlp=cfg.mlp, **cfg.extra)
    load_checkpoint(model, d / MODEL_FILE)
    model.eval()
    return model, encoder, cfg


def evaluate_ctr(
    model_dir: str | os.PathLike[str],
    data: str | os.PathLike[str] | None = None,
    *,
    split: str = "test",
    batch_size: int = 8192,
    workers: int = 0,
) -> dict[str, Any]:
    """Reload a :func:`train_ctr` output and score ``split`` of ``data`` (default: the data trained on).

    Returns :func:`~bastion.ctr.trainer.evaluate_predictions`'s metrics under ``split``, with the model name
    and the data folder. One process (no process group needed).
    """
    check_choice(split, "split", ("train", "val", "test"))
    check_int(batch_size, "batch_size", minimum=1)
    check_int(workers, "workers", minimum=0)
    model, encoder, cfg = load_trained(model_dir, data)
    root = cfg.data if data is None else str(data)
    stream = CTRStream(
        split_dirs(root)[split],
        encoder,
        batch_size=batch_size,
        shuffle=False,
        rank=0,
        world_size=1,
        num_workers=workers,
    )
    t0 = time.perf_counter()
    scores = evaluate_predictions(predict(model, _loader(stream, workers)))
    return {
        "model": cfg.model,
        "model_dir": str(Path(model_dir).resolve()),
        "data": str(Path(root).resolve()),
        split: scores,
        "seconds": time.perf_counter() - t0,
    }


# ---------------------------------------------------------------------------------------------- torchrun
def main(argv: list[str] | None = None) -> int:
    """``python -m bastion.ctr.run`` / ``torchrun -m bastion.ctr.run``: the options of ``bastion ctr train``.

    Initialises gloo from torchrun's environment when ``WORLD_SIZE`` > 1 (restart-safe store prefixes, see
    :func:`bastion.distributed.launch.init_from_env`); one torch thread per rank unless ``--threads``.
    """
    import click

    from .cli import train_command

    torch.set_num_threads(1)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized()
    if distributed:
        from ..distributed.launch import init_from_env

        init_from_env("gloo")
    try:
        train_command.main(args=argv, prog_name="python -m bastion.ctr.run", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    finally:
        if distributed:
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    code = main()
    # a rare gloo abort at interpreter exit after all work is written (see bastion.distributed.train)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
