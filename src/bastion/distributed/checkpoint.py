"""PaRO checkpoints: sharded (each rank its own shards) and consolidated (whole tensors), safetensors + JSON.

No pickle anywhere: tensors go to ``.safetensors`` files, everything else to ``meta.json``.

* **Sharded** -- ``DIR/rank{r}.safetensors`` with this rank's parameter shards, master copies and
  optimizer-state shards. Fast, but it loads only under the same word, world size, group size and
  precision.
* **Consolidated** -- ``DIR/model.safetensors`` (every parameter, original name and shape, master
  precision) and ``DIR/optimizer.safetensors`` (``NAME::STATE``), written by rank 0. It loads under any
  word, world size or group size: each rank slices what it owns.

A checkpoint is complete once ``meta.json`` exists: it is written last, after every rank has written
and fsync'ed its file, into a temporary directory that is then renamed (an older checkpoint at the same
path is moved aside first and removed only after the rename). :func:`latest_checkpoint` therefore never
returns a half-written one (a rank killed mid-save leaves only a ``*.tmp`` directory). ``meta.json``
records the SHA-256 of every tensor file; loading verifies it, so a flipped byte is an error, not a
silently different model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .engine import PaRO

__all__ = ["latest_checkpoint", "load_checkpoint", "model_fingerprint", "save_checkpoint"]

FORMAT = "bastion-paro"
VERSION = 1


def model_fingerprint(engine: PaRO) -> str:
    """SHA-256 of the parameter names, shapes and trainability, in unit order."""
    h = hashlib.sha256()
    for u in engine.units:
        for f in u.flats:
            for s in f.slots:
                h.update(f"{s.name}:{tuple(s.shape)}:{f.trainable};".encode())
    return h.hexdigest()


def _barrier(engine: PaRO) -> None:
    if engine.topo.n > 1:
        dist.barrier(group=engine.topo.world)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write(tensors: dict[str, torch.Tensor], path: Path) -> None:
    save_file(tensors, str(path))
    with path.open("rb") as fh:  # on disk before meta.json says the checkpoint is complete
        os.fsync(fh.fileno())


def _scalar(v: torch.Tensor) -> torch.Tensor:
    return v.detach().reshape(1).clone()


def save_checkpoint(
    engine: PaRO, directory: str | Path, *, consolidated: bool = False, extra: dict | None = None
) -> Path:
    """Save at a step boundary (collective: call on every rank). Returns the checkpoint directory.

    ``extra`` (JSON-serialisable, from rank 0) is stored in ``meta.json``, e.g. the data position.
    """
    if engine.micro != 0:
        raise ValueError(f"save_checkpoint must be called at a step boundary; {engine.micro} backward passes pending")
    final = Path(directory)
    tmp = final.with_name(final.name + ".tmp")
    rank = engine.topo.rank
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier(engine)
    meta: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "kind": "consolidated" if consolidated else "sharded",
        "strategy": engine.strategy,
        "world_size": engine.topo.n,
        "group_size": engine.topo.m,
        "mixed_precision": engine.mixed_precision,
        "steps": engine.steps,
        "fingerprint": model_fingerprint(engine),
        "optimizer": type(engine.optimizer).__name__,
        "param_groups": [
            {k: v for k, v in g.items() if k != "params" and _jsonable(v)} for g in engine.optimizer.param_groups
        ],
        "extra": extra or {},
    }
    if consolidated:
        params, states = engine.full_state()
        if rank == 0:
            _write({k: v.contiguous() for k, v in params.items()}, tmp / "model.safetensors")
            flat_states = {
                f"{name}::{key}": (v.contiguous() if v.dim() > 0 else _scalar(v))
                for name, st in states.items()
                for key, v in st.items()
            }
            _write(flat_states, tmp / "optimizer.safetensors")
    else:
        tensors: dict[str, torch.Tensor] = {}
        for i, f in enumerate(_flats(engine)):
            tensors[f"{i}.param"] = f.persistent.contiguous()
            if f.trainable:
                if engine.compute_dtype is not None:
                    tensors[f"{i}.master"] = f.master.detach().contiguous()
                for key, v in engine.optimizer.state.get(f.master, {}).items():
                    if isinstance(v, torch.Tensor):
                        tensors[f"{i}.state.{key}"] = v.contiguous() if v.dim() > 0 else _scalar(v)
        _write(tensors, tmp / f"rank{rank}.safetensors")
        meta["layout"] = [{"numel": f.numel, "padded": f.P, "trainable": f.trainable} for f in _flats(engine)]
    _barrier(engine)
    if rank == 0:
        meta["files"] = {p.name: _sha256(p) for p in sorted(tmp.glob("*.safetensors"))}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        old = final.with_name(final.name + ".old.tmp")
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    _barrier(engine)
    return final


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v)
    except TypeError:
        return False
    return True


def _flats(engine: PaRO) -> list:
    return [f for u in engine.units for f in u.flats]


def _read_meta(directory: Path) -> dict[str, Any]:
    path = directory / "meta.json"
    if not path.exists():
        raise ValueError(f"{directory} is not a complete PaRO checkpoint: no meta.json")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} checkpoint")
    if meta.get("version") != VERSION:
        raise ValueError(f"{path} has version {meta.get('version')}, this bastion reads {VERSION}")
    required = {"kind": str, "strategy": str, "world_size": int, "group_size": int, "steps": int,
                "fingerprint": str, "optimizer": str, "files": dict}  # fmt: skip
    for key, typ in required.items():
        if not isinstance(meta.get(key), typ):
            raise ValueError(f"{path}: field {key!r} is missing or not a {typ.__name__}")
    return meta


def _load(path: Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise ValueError(f"checkpoint file {path} is missing")
    if sha256 is not None and _sha256(path) != sha256:
        raise ValueError(f"checkpoint file {path} is corrupted: its SHA-256 differs from meta.json's")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"checkpoint file {path} is corrupted or not safetensors: {exc}") from exc


def load_checkpoint(engine: PaRO, directory: str | Path, *, optimizer_state: bool = True) -> dict[str, Any]:
    """Load a checkpoint into ``engine`` (collective). Returns its ``meta.json`` (``extra`` included).

    A sharded checkpoint needs the same strategy, world size, group size and precision; a consolidated
    one loads under any. ``optimizer_state=False`` loads only the parameters of a consolidated
    checkpoint (e.g. a PEFT run's checkpoint into full fine-tuning). Raises ``ValueError`` for another
    model's checkpoint (fingerprint or parameter names/shapes differ), another optimizer class, a
    corrupted file (SHA-256 or format) or a mismatched layout.
    """
    directory = Path(directory)
    meta = _read_meta(directory)
    files = meta["files"]
    if optimizer_state and meta["optimizer"] != type(engine.optimizer).__name__:
        raise ValueError(
            f"checkpoint {directory} holds {meta['optimizer']} state, this engine uses "
            f"{type(engine.optimizer).__name__}; pass optimizer_state=False to load the parameters only"
        )
    if meta["kind"] == "consolidated":
        params = _load(directory / "model.safetensors", files.get("model.safetensors"))
        if not optimizer_state:
            engine.load_full_state(params, None)
            engine.steps = int(meta["steps"])
            return meta
        flat = _load(directory / "optimizer.safetensors", files.get("optimizer.safetensors"))
        states: dict[str, dict[str, torch.Tensor]] = {}
        for k, v in flat.items():
            name, _, key = k.rpartition("::")
            if key == "step" and v.numel() == 1:
                v = v.reshape(())
            states.setdefault(name, {})[key] = v
        engine.load_full_state(params, states)
    elif meta["kind"] == "sharded":
        if meta["fingerprint"] != model_fingerprint(engine):
            raise ValueError(f"checkpoint {directory} was saved from another model (parameter names/shapes differ)")
        want = (engine.strategy, engine.topo.n, engine.topo.m, engine.mixed_precision)
        have = (meta["strategy"], meta["world_size"], meta["group_size"], meta["mixed_precision"])
        if want != have:
            raise ValueError(
                f"sharded checkpoint {directory} is (strategy, world, group, precision) = {have}, this run {want}; "
                "save a consolidated checkpoint to change any of them"
            )
        if not optimizer_state:
            raise ValueError("optimizer_state=False needs a consolidated checkpoint")
        name = f"rank{engine.topo.rank}.safetensors"
        tensors = _load(directory / name, files.get(name))
        with torch.no_grad():
            for i, f in enumerate(_flats(engine)):
                t = tensors.get(f"{i}.param")
                if t is None or t.shape != f.persistent.shape or t.dtype != f.persistent.dtype:
                    raise ValueError(f"checkpoint {directory}: shard {i} does not match this model's layout")
                f.persistent.copy_(t)
                if f.trainable:
                    if engine.compute_dtype is not None:
                        f.master.copy_(tensors[f"{i}.master"])
                    st = engine.optimizer.state[f.master]
                    prefix = f"{i}.state."
                    for key, v in tensors.items():
                        if key.startswith(prefix):
                            name = key[len(prefix) :]
                            scalar = name == "step" and v.numel() == 1  # Adam's step counter stays on the CPU
                            st[name] = v.reshape(()) if scalar else v.to(f.device, copy=True)
                if engine.word.p != "N" and f.gathered:
                    f.free()
    else:
        raise ValueError(f"{directory}/meta.json has unknown kind {meta.get('kind')!r}")
    engine.steps = int(meta["steps"])
    engine.comm.log.clear()
    return meta


def latest_checkpoint(root: str | Path) -> Path | None:
    """The complete ``step_*`` checkpoint with the highest step under ``root``, or ``None``."""
    root = Path(root)
    if not root.is_dir():
        return None
    best: tuple[int, Path] | None = None
    for d in root.glob("step_*"):
        if d.suffix == ".tmp" or not (d / "meta.json").exists():
            continue
        try:
            step = int(d.name.split("_", 1)[1])
        except ValueError:
            continue
        if best is None or step > best[0]:
            best = (step, d)
    return None if best is None else best[1]
