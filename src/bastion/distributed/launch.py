"""Run a function on ``world_size`` local gloo processes (tests, benchmarks, examples).

``torchrun`` is the launcher for real jobs; this helper is for in-process use where a test or a
benchmark needs a fresh process group: ``spawn(fn, world_size, *args)`` calls ``fn(rank, world_size,
*args)`` in each process after ``init_process_group("gloo")`` and returns rank 0's return value.
Every process uses one torch thread.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

__all__ = ["free_port", "init_from_env", "spawn"]


def init_from_env(backend: str | None = None) -> None:
    """``init_process_group`` from torchrun's environment, safe across ``--max-restarts``.

    On a restart, torchrun (2.14) hands the workers the same agent store, which still holds the previous
    attempt's gloo addresses; the new workers then connect to dead ports ("connectFullMesh failed").
    Keys are therefore prefixed with ``TORCHELASTIC_RESTART_COUNT``. Outside torchelastic this is
    plain ``init_process_group(backend)``.
    """
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True" and "MASTER_ADDR" in os.environ:
        from datetime import timedelta

        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        world = int(os.environ["WORLD_SIZE"])
        store = dist.TCPStore(
            os.environ["MASTER_ADDR"],
            int(os.environ["MASTER_PORT"]),
            world,
            is_master=False,
            timeout=timedelta(minutes=5),
        )
        dist.init_process_group(
            backend,
            store=dist.PrefixStore(f"bastion/attempt_{attempt}", store),
            rank=int(os.environ["RANK"]),
            world_size=world,
        )
    else:
        dist.init_process_group(backend)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, out_dir: str, fn: Callable[..., Any], args: tuple) -> None:
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
    )
    try:
        result = fn(rank, world_size, *args)
        torch.save({"ok": True, "result": result}, Path(out_dir) / f"{rank}.pt")
        dist.barrier()  # nobody tears down while a peer is still in a collective
    except BaseException:
        torch.save({"ok": False, "error": traceback.format_exc()}, Path(out_dir) / f"{rank}.pt")
        raise
    finally:
        dist.destroy_process_group()
    # see bastion.distributed.train._exit_quietly: a rare gloo abort at exit, after the work is saved
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def spawn(fn: Callable[..., Any], world_size: int, *args: Any, all_ranks: bool = False) -> Any:
    """Run ``fn(rank, world_size, *args)`` on ``world_size`` gloo processes; return rank 0's result.

    ``fn`` must be importable (module level). Its return value must be saveable with ``torch.save``
    (tensors, numbers, lists, dicts). With ``all_ranks=True`` the list of every rank's result comes
    back. A failure on any rank re-raises here with that rank's traceback.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    with tempfile.TemporaryDirectory(prefix="bastion-spawn-") as tmp:
        port = free_port()
        try:
            mp.spawn(_worker, args=(world_size, port, tmp, fn, args), nprocs=world_size, join=True)
        except Exception as exc:  # mp.spawn raises ProcessRaisedException with the child's traceback
            errors, done = [], 0
            for r in range(world_size):
                f = Path(tmp) / f"{r}.pt"
                if f.exists():
                    rec = torch.load(f, weights_only=False)  # our own temp file, written above
                    if not rec["ok"]:
                        errors.append(f"rank {r}:\n{rec['error']}")
                    else:
                        done += 1
            if errors or done < world_size:
                raise RuntimeError("\n".join(errors) or str(exc)) from exc
            # every rank returned its result and only the teardown failed (a rare gloo abort at exit)
            warnings.warn(f"spawn: all ranks finished but a process exited badly at teardown: {exc}", stacklevel=2)
        results = [torch.load(Path(tmp) / f"{r}.pt", weights_only=False)["result"] for r in range(world_size)]
    return results if all_ranks else results[0]
