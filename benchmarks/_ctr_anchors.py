"""Anchor side of the CTR side-by-side benchmark: DeepCTR-Torch 0.3.0 and FuxiCTR 2.3.10 DeepFM runners.

Each runner trains the library's *own* DeepFM with the library's *own* training loop on already-encoded
integer ids and is meant to run in its own subprocess, so that ``peak_rss_mib`` (``ru_maxrss`` of the
process at the end, after data load, training and test prediction) belongs to one library only::

    python benchmarks/_ctr_anchors.py deepctr DATA.npz --json OUT.json [--threads 1] [--seed 0]
    python benchmarks/_ctr_anchors.py fuxictr DATA.npz --json OUT.json [--threads 1] [--seed 0]

``DATA.npz`` holds ``train_ids`` / ``test_ids`` (int64 ``[N, F]``, local ids per field, 0 = null, field ``f``
in ``[0, field_sizes[f])``), ``train_label`` / ``test_label`` (float32 ``[N]`` in {0, 1}) and
``field_sizes`` (int64 ``[F]``). Both runners return ``library, version, test_auc`` (sklearn
``roc_auc_score`` on the test split), ``train_seconds`` (wall time of the training epochs only),
``samples_per_s`` (= ``n_train * epochs / train_seconds``), ``peak_rss_mib``, ``n_train``, ``n_test``, plus
``torch_version``, ``threads``, ``epochs``, ``seed`` and ``import_rss_mib`` (peak RSS after the
library imports, before the data: torch alone is ~0.5 GiB).

Settings matched to our DeepFM (config: ``dim=16, mlp=(400, 400, 400), batch_size=4096, lr=1e-3, epochs=1``):

- both: DeepFM = LR + FM + MLP(concat of field embeddings), embedding dim 16 for every field, one
  embedding table per field sized ``field_sizes[f]`` (the null id 0 is an ordinary row, as both libraries
  treat it: neither sets ``padding_idx`` on this path), MLP 400-400-400 ReLU, no dropout, no batch norm,
  no L2 anywhere, BCE loss, ``torch.optim.Adam(lr=1e-3)`` (dense Adam over all parameters, embeddings
  included: neither library uses sparse gradients), batch 4096, shuffled every epoch, seeded,
  ``torch.set_num_threads(threads)`` (``OMP/MKL/OPENBLAS_NUM_THREADS`` too when run from the CLI), CPU only.
- DeepCTR-Torch: ``deepctr_torch.models.DeepFM`` with ``SparseFeat(name, field_size, 16)`` for both the
  linear and the DNN columns, ``l2_reg_linear=0, l2_reg_embedding=0, l2_reg_dnn=0`` (its defaults are
  1e-5 / 1e-5 / 0), ``dnn_dropout=0, dnn_use_bn=False, dnn_activation="relu"``, ``seed`` (it calls
  ``torch.manual_seed``), ``model.fit(..., batch_size=4096, epochs=1, shuffle=True, verbose=0)``.
  Timing comes from a ``deepctr_torch.callbacks.Callback`` between ``on_epoch_begin`` and ``on_epoch_end``,
  so the ``np.concatenate`` + ``TensorDataset`` build inside ``fit`` is excluded and the per-sample
  ``TensorDataset`` indexing + collate inside the epoch is included (it is its loop).
  Its import-time PyPI version check (a thread calling ``requests.get`` without timeout) is short-circuited.
  Not matched, kept as the library does it: its loss is ``binary_cross_entropy(reduction="sum")`` (Adam
  is nearly invariant to that scale), init is ``N(0, 1e-4)`` for embeddings *and* DNN weights
  (``init_std``), one global output bias and none on the DNN output layer, and it feeds the model one
  float32 ``[B, F]`` tensor, so ids must be < 2^24 (checked: larger ids would silently collide).
- FuxiCTR: ``fuxictr.pytorch.models.BaseModel`` + its layers (``FeatureEmbedding``, ``FactorizationMachine``,
  ``MLP_Block``; same parameter shapes as DeepCTR-Torch's DeepFM plus one bias, on the MLP output layer)
  composed as the textbook DeepFM in FuxiCTR's model interface (the repo's model-zoo DeepFM file is not in
  the PyPI wheel and is not copied here), with ``embedding_dim=16,
  hidden_units=[400, 400, 400], hidden_activations="ReLU", net_dropout=0, batch_norm=False,
  embedding_regularizer=None, net_regularizer=None, optimizer="adam", loss="binary_crossentropy",
  learning_rate=1e-3`` (mean BCE), ``fuxictr.pytorch.torch_utils.seed_everything(seed)``. The feature map
  is built directly (``FeatureMap`` with ``{"source": "", "type": "categorical", "vocab_size": size}``
  per field: the spec FuxiCTR's own ``FeatureProcessor`` writes, minus the fit/pickle/``eval`` of dtypes),
  data goes through its ``RankDataLoader(data_format="npz", shuffle=True, num_workers=0)`` from per-column
  ``.npz`` files written to a temporary folder (written before the clock starts). Training is
  ``BaseModel.train_epoch`` per epoch with the state ``BaseModel.fit`` sets up, minus ``fit``'s end-of-epoch
  validation / checkpoint / early stopping / reload (evaluation is excluded from ``train_seconds`` for all
  libraries; test AUC is computed once after training from ``model.predict``).
  Not matched, kept as the library does it: ``train_step`` clips gradients to norm 10 (``fit``'s default
  ``max_gradient_norm``), embeddings init ``N(0, 1e-4)`` and MLP ``xavier_normal_``, ``num_workers=0``
  instead of its loader default 1 (a worker process would escape ``RUSAGE_SELF`` and the 1-thread budget);
  its ``NpzDataset`` column-stacks ids and label into one float64 array and collates per row.
  Its package imports ``ray`` (only used by its parquet dataset builder, never on this path); when ``ray``
  is not installed a placeholder module that raises on any use is registered so the import succeeds
  (a real ``ray`` would only add import-time memory to FuxiCTR's peak RSS).

Minimal installs next to torch (torch itself untouched): ``deepctr-torch==0.3.0`` (deps already present:
scikit-learn, tqdm, requests), ``fuxictr==2.3.10`` with ``--no-deps`` plus ``polars==2.1.0`` and ``h5py==3.16.0``
(``PyYAML``, ``pandas``, ``scikit-learn``, ``tqdm`` already present; ``ray``, ``pydantic`` not needed).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import resource
import sys
import tempfile
import time
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DEFAULT_CONFIG", "RUNNERS", "load_npz", "run_deepctr", "run_fuxictr"]

DEFAULT_CONFIG: dict[str, Any] = {
    "dim": 16,
    "mlp": (400, 400, 400),
    "batch_size": 4096,
    "lr": 1e-3,
    "epochs": 1,
    "seed": 0,
    "threads": 1,
}

_FLOAT32_EXACT = 2**24  # DeepCTR-Torch casts ids to float32: integers above 2^24 are not all representable
_KEYS = ("train_ids", "train_label", "test_ids", "test_label", "field_sizes")


def load_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Load and validate the benchmark arrays from ``path`` (see the module docstring for the layout)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"npz path {str(path)!r} is not a file")
    with np.load(path) as z:
        missing = [k for k in _KEYS if k not in z.files]
        if missing:
            raise ValueError(f"npz {str(path)!r} lacks arrays {missing}; expected {list(_KEYS)}")
        data = {k: z[k] for k in _KEYS}
    _check_data(data)
    return data


def _check_data(data: Mapping[str, np.ndarray]) -> None:
    missing = [k for k in _KEYS if k not in data]
    if missing:
        raise ValueError(f"data lacks arrays {missing}; expected {list(_KEYS)}")
    sizes = np.asarray(data["field_sizes"])
    if sizes.ndim != 1 or sizes.size == 0 or not np.issubdtype(sizes.dtype, np.integer) or (sizes < 1).any():
        raise ValueError(f"field_sizes must be a non-empty 1-D array of positive integers, got {sizes!r}")
    for split in ("train", "test"):
        ids, label = np.asarray(data[f"{split}_ids"]), np.asarray(data[f"{split}_label"])
        if not np.issubdtype(ids.dtype, np.integer) or ids.ndim != 2 or ids.shape[1] != sizes.size:
            raise ValueError(
                f"{split}_ids must be an integer [N, {sizes.size}] array, got {ids.dtype} {list(ids.shape)}"
            )
        if ids.shape[0] == 0:
            raise ValueError(f"{split}_ids is empty")
        if label.shape != (ids.shape[0],):
            raise ValueError(f"{split}_label must have shape [{ids.shape[0]}], got {list(label.shape)}")
        if not np.isin(label, (0.0, 1.0)).all():
            raise ValueError(f"{split}_label must hold only 0 and 1")
        bad = np.flatnonzero((ids.min(axis=0) < 0) | (ids.max(axis=0) >= sizes))
        if bad.size:
            f = int(bad[0])
            raise ValueError(
                f"{split}_ids[:, {f}] must lie in [0, field_sizes[{f}]={int(sizes[f])}), "
                f"got range [{int(ids[:, f].min())}, {int(ids[:, f].max())}]"
            )
    if np.unique(np.asarray(data["test_label"])).size < 2:
        raise ValueError("test_label holds one class only: AUC is undefined")


def _config(config: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(config) - set(DEFAULT_CONFIG) - {"npz"})
    if unknown:
        raise ValueError(f"config has unknown keys {unknown}; known: {[*sorted(DEFAULT_CONFIG), 'npz']}")
    cfg = {**DEFAULT_CONFIG, **config}
    for key in ("dim", "batch_size", "epochs", "threads"):
        if not isinstance(cfg[key], int) or isinstance(cfg[key], bool) or cfg[key] < 1:
            raise ValueError(f"config[{key!r}] must be a positive int, got {cfg[key]!r}")
    mlp = tuple(cfg["mlp"])
    if not mlp or not all(isinstance(h, int) and h >= 1 for h in mlp):
        raise ValueError(f"config['mlp'] must be a non-empty sequence of positive ints, got {cfg['mlp']!r}")
    cfg["mlp"] = mlp
    if not (isinstance(cfg["lr"], float | int) and cfg["lr"] > 0):
        raise ValueError(f"config['lr'] must be a positive number, got {cfg['lr']!r}")
    return cfg


def _resolve(data: Mapping[str, np.ndarray] | None, config: Mapping[str, Any]) -> tuple[dict, dict]:
    cfg = _config(config)
    if data is None:
        if "npz" not in cfg:
            raise ValueError("data is None and config has no 'npz' path to load it from")
        data = load_npz(cfg["npz"])
    else:
        _check_data(data)
    return dict(data), cfg


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def _result(
    library: str, version: str, auc: float, seconds: float, data: Mapping, cfg: Mapping, import_rss: float
) -> dict[str, Any]:
    import torch

    n_train, n_test = int(data["train_ids"].shape[0]), int(data["test_ids"].shape[0])
    return {
        "library": library,
        "version": version,
        "test_auc": float(auc),
        "train_seconds": float(seconds),
        "samples_per_s": n_train * cfg["epochs"] / seconds,
        "peak_rss_mib": _peak_rss_mib(),
        "import_rss_mib": import_rss,
        "n_train": n_train,
        "n_test": n_test,
        "torch_version": torch.__version__,
        "threads": cfg["threads"],
        "epochs": cfg["epochs"],
        "seed": cfg["seed"],
        "device": "cpu",
    }


def _field_names(n: int) -> list[str]:
    return [f"f{i:03d}" for i in range(n)]


# --------------------------------------------------------------------------------------------- DeepCTR-Torch
def _import_deepctr_offline() -> types.ModuleType:
    """Import ``deepctr_torch`` without its import-time PyPI version check: ``__init__`` starts a non-daemon
    thread doing ``requests.get`` with no timeout, which can hold the process on an offline machine. During
    the import ``requests.get`` raises at once (the thread prints its "check manually" line) and the thread
    is joined before ``requests.get`` is restored."""
    if "deepctr_torch" in sys.modules:
        return sys.modules["deepctr_torch"]
    import threading

    import requests

    def _offline(*args: Any, **kwargs: Any) -> Any:
        raise requests.ConnectionError("version check disabled by ctr_anchors")

    before = set(threading.enumerate())
    real_get, requests.get = requests.get, _offline
    try:
        import deepctr_torch
    finally:
        for thread in set(threading.enumerate()) - before:
            thread.join()
        requests.get = real_get
    return deepctr_torch


def run_deepctr(data: Mapping[str, np.ndarray] | None, config: Mapping[str, Any]) -> dict[str, Any]:
    """Train DeepCTR-Torch's DeepFM for ``config['epochs']`` epochs and score the test split.

    ``data`` may be ``None``, then it is loaded from ``config['npz']``. Run in a fresh process so that
    ``peak_rss_mib`` is this library's alone.
    """
    cfg = _config(config)
    import torch

    torch.set_num_threads(cfg["threads"])
    deepctr_torch = _import_deepctr_offline()
    from deepctr_torch.callbacks import Callback
    from deepctr_torch.inputs import SparseFeat
    from deepctr_torch.models import DeepFM
    from sklearn.metrics import roc_auc_score

    import_rss = _peak_rss_mib()
    data, cfg = _resolve(data, config)
    if int(np.max(data["field_sizes"])) > _FLOAT32_EXACT:
        raise ValueError(
            f"field_sizes must be <= 2^24 for DeepCTR-Torch (it passes ids as float32), "
            f"got max {int(np.max(data['field_sizes']))}"
        )
    names = _field_names(len(data["field_sizes"]))
    columns = [
        SparseFeat(name, vocabulary_size=int(size), embedding_dim=cfg["dim"])
        for name, size in zip(names, data["field_sizes"], strict=True)
    ]
    model = DeepFM(
        columns,
        columns,
        use_fm=True,
        dnn_hidden_units=cfg["mlp"],
        l2_reg_linear=0.0,
        l2_reg_embedding=0.0,
        l2_reg_dnn=0.0,
        seed=cfg["seed"],
        dnn_dropout=0.0,
        dnn_activation="relu",
        dnn_use_bn=False,
        task="binary",
        device="cpu",
    )
    model.compile(torch.optim.Adam(model.parameters(), lr=cfg["lr"]), "binary_crossentropy")

    class _EpochClock(Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds = 0.0
            self._start = 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds += time.perf_counter() - self._start

    clock = _EpochClock()
    train_x = {name: data["train_ids"][:, i] for i, name in enumerate(names)}
    train_y = data["train_label"].astype(np.float32)
    model.fit(
        train_x,
        train_y,
        batch_size=cfg["batch_size"],
        epochs=cfg["epochs"],
        verbose=0,
        shuffle=True,
        callbacks=[clock],
    )
    test_x = {name: data["test_ids"][:, i] for i, name in enumerate(names)}
    pred = model.predict(test_x, batch_size=cfg["batch_size"]).reshape(-1)
    auc = roc_auc_score(data["test_label"], pred)
    return _result("deepctr-torch", deepctr_torch.__version__, auc, clock.seconds, data, cfg, import_rss)


# -------------------------------------------------------------------------------------------------- FuxiCTR
def _ensure_ray_importable() -> None:
    """Register a placeholder ``ray`` if it is missing; FuxiCTR imports it at package import but this path
    (in-memory feature map, npz loader, BaseModel loop) never calls it. Any use raises."""
    if "ray" in sys.modules or importlib.util.find_spec("ray") is not None:
        return

    def _missing(name: str):
        if name.startswith("__"):  # import machinery and introspection probe dunders: plain AttributeError
            raise AttributeError(name)
        raise RuntimeError(f"ray.{name} used, but ray is not installed (placeholder for FuxiCTR's import only)")

    def _module(name: str) -> types.ModuleType:
        mod = types.ModuleType(name)
        mod.__path__ = []  # a package, so submodule imports resolve through sys.modules
        mod.__getattr__ = _missing  # type: ignore[method-assign]  # PEP 562
        sys.modules[name] = mod
        return mod

    ray = _module("ray")
    ray_data = _module("ray.data")
    datasource = _module("ray.data.datasource")
    provider = _module("ray.data.datasource.filename_provider")
    provider.FilenameProvider = type("FilenameProvider", (), {})
    ray.data, ray_data.datasource, datasource.filename_provider = ray_data, datasource, provider
    ray_data.SaveMode = types.SimpleNamespace()
    ray_data.TaskPoolStrategy = lambda *a, **k: _missing("data.TaskPoolStrategy")


def _fuxictr_deepfm_class() -> type:
    """A DeepFM assembled from FuxiCTR's own parts: its ``BaseModel`` (compile, training loop, parameter
    init), ``FeatureEmbedding``, ``FactorizationMachine`` (LR + FM) and ``MLP_Block``. The wheel ships these
    parts but not the model zoo's DeepFM file, which is not copied here; the composition below is the
    textbook DeepFM (logit = LR + FM + MLP(concat of field embeddings)) in FuxiCTR's model interface."""
    from fuxictr.pytorch.layers import FactorizationMachine, FeatureEmbedding, MLP_Block
    from fuxictr.pytorch.models import BaseModel

    class FuxiDeepFM(BaseModel):
        def __init__(self, feature_map, *, embedding_dim, hidden_units, learning_rate=1e-3, **kwargs):
            super().__init__(feature_map, model_id="DeepFM", gpu=-1, **kwargs)
            self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)
            self.fm = FactorizationMachine(feature_map)
            self.mlp = MLP_Block(
                input_dim=feature_map.sum_emb_out_dim(),
                output_dim=1,
                hidden_units=list(hidden_units),
                hidden_activations="ReLU",
                output_activation=None,
                dropout_rates=0,
                batch_norm=False,
            )
            self.compile(kwargs["optimizer"], kwargs["loss"], learning_rate)
            self.reset_parameters()
            self.model_to_device()

        def forward(self, inputs):
            x = self.get_inputs(inputs)
            emb = self.embedding_layer(x)
            logit = self.fm(x, emb) + self.mlp(emb.flatten(start_dim=1))
            return {"y_pred": self.output_activation(logit)}

    return FuxiDeepFM


def run_fuxictr(data: Mapping[str, np.ndarray] | None, config: Mapping[str, Any]) -> dict[str, Any]:
    """Train FuxiCTR's DeepFM with its BaseModel loop for ``config['epochs']`` epochs and score the test split.

    ``data`` may be ``None``, then it is loaded from ``config['npz']``. Run in a fresh process so that
    ``peak_rss_mib`` is this library's alone.
    """
    cfg = _config(config)
    import torch

    torch.set_num_threads(cfg["threads"])
    _ensure_ray_importable()
    import logging
    from collections import OrderedDict

    import fuxictr
    from fuxictr.features import FeatureMap
    from fuxictr.pytorch.dataloaders import RankDataLoader
    from fuxictr.pytorch.torch_utils import seed_everything
    from sklearn.metrics import roc_auc_score

    logging.getLogger().setLevel(logging.WARNING)
    import_rss = _peak_rss_mib()
    data, cfg = _resolve(data, config)
    names = _field_names(len(data["field_sizes"]))
    with tempfile.TemporaryDirectory(prefix="fuxictr_anchor_") as tmp:
        for split in ("train", "test"):
            cols = {name: data[f"{split}_ids"][:, i] for i, name in enumerate(names)}
            np.savez(os.path.join(tmp, f"{split}.npz"), label=data[f"{split}_label"].astype(np.float32), **cols)
        feature_map = FeatureMap("anchor", tmp)
        feature_map.features = OrderedDict(
            (name, {"source": "", "type": "categorical", "vocab_size": int(size)})
            for name, size in zip(names, data["field_sizes"], strict=True)
        )
        feature_map.labels = ["label"]
        feature_map.default_emb_dim = cfg["dim"]
        feature_map.num_fields = feature_map.get_num_fields()
        feature_map.total_features = int(np.sum(data["field_sizes"]))
        feature_map.set_column_index()

        seed_everything(cfg["seed"])
        model = _fuxictr_deepfm_class()(
            feature_map,
            learning_rate=cfg["lr"],
            embedding_dim=cfg["dim"],
            hidden_units=list(cfg["mlp"]),
            embedding_regularizer=None,
            net_regularizer=None,
            optimizer="adam",
            loss="binary_crossentropy",
            verbose=0,
            model_root=tmp,
            metrics=["AUC"],
        )
        train_gen, _ = RankDataLoader(
            feature_map,
            stage="train",
            train_data=os.path.join(tmp, "train.npz"),
            batch_size=cfg["batch_size"],
            shuffle=True,
            data_format="npz",
            num_workers=0,
        )
        test_gen = RankDataLoader(
            feature_map,
            stage="test",
            test_data=os.path.join(tmp, "test.npz"),
            batch_size=cfg["batch_size"],
            shuffle=False,
            data_format="npz",
            num_workers=0,
        )
        # The state BaseModel.fit() sets before its epoch loop (max_gradient_norm: fit's default), with
        # evaluation pushed past the end of training so train_epoch() never stops to validate.
        model._max_gradient_norm = 10.0
        model._best_metric = -np.inf
        model._stopping_steps = 0
        model._stop_training = False
        model._steps_per_epoch = len(train_gen)
        model._total_steps = 0
        model._batch_index = 0
        model._eval_steps = model._steps_per_epoch * cfg["epochs"] + 1
        start = time.perf_counter()
        for epoch in range(cfg["epochs"]):
            model._epoch_index = epoch
            model.train_epoch(train_gen)
        seconds = time.perf_counter() - start
        pred = model.predict(test_gen)
        auc = roc_auc_score(data["test_label"], pred)
    return _result("fuxictr", fuxictr.__version__, auc, seconds, data, cfg, import_rss)


RUNNERS = {"deepctr": run_deepctr, "fuxictr": run_fuxictr}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run one CTR anchor library on an npz split; write JSON.")
    parser.add_argument("library", choices=sorted(RUNNERS))
    parser.add_argument("npz")
    parser.add_argument("--json", required=True, help="output JSON path")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=DEFAULT_CONFIG["epochs"])
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # before torch is imported (runners import it lazily)
    config = {"npz": args.npz, "threads": args.threads, "seed": args.seed, "epochs": args.epochs}
    with contextlib.redirect_stdout(sys.stderr):  # the libraries print progress; stdout gets the JSON only
        result = RUNNERS[args.library](None, config)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
