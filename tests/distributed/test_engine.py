"""PaRO engine: exactness against one process, memory and traffic against the spec, checkpoints, errors.

Each test launches one gloo process group (4 ranks start in ~5 s, 8 in ~10 s) and runs every case in it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bastion.distributed import costmodel
from bastion.distributed.launch import spawn
from bastion.distributed.words import VALID_WORDS, parse_word

from . import workers

pytestmark = pytest.mark.timeout(600)


def test_all_words_match_one_process_in_float64():
    """4 ranks (2 x 2), 3 AdamW steps, A=2; full and partly frozen tiny transformer; hier, flat and HO-Ring."""
    cases = workers.all_cases() + [(w, "ho_ring", fr) for w in ("NNN", "NIG", "GGG") for fr in (False, True)]
    res = spawn(workers.exactness, 4, 2, cases, 3, 2)
    assert set(res) == set(cases)
    for case, r in res.items():
        assert r["max_diff"] <= 1e-10, (case, r)
        assert r["state_replicas"], case  # replicated optimizer states are bitwise equal
        assert r["replicas"], case  # replicated shards are bitwise equal


@pytest.mark.slow
def test_eight_ranks_twenty_steps_float64_and_fp32_losses():
    cases = [(w, "hier", False) for w in VALID_WORDS] + [(w, "flat", False) for w in ("NGG", "GGG")]
    res = spawn(workers.exactness, 8, 4, cases, 20, 2)
    for case, r in res.items():
        assert r["max_diff"] <= 1e-10, (case, r)
        assert r["state_replicas"] and r["replicas"], case
    ref, losses = spawn(workers.fp32_losses, 8, 4, VALID_WORDS, 20, 2)
    for word, run in losses.items():
        rel = max(abs(a - b) / abs(b) for a, b in zip(run, ref, strict=True))
        assert rel <= 1e-5, (word, rel)


def test_memory_and_traffic_match_the_spec_on_eight_ranks():
    """Resident state bytes after step 2's last backward = the formula; bytes per step = the spec's table."""
    res = spawn(workers.memory_and_comm, 8, 4, VALID_WORDS, ["fp32", "bf16"], [1, 4])
    for (word, prec, accum), r in res.items():
        mem = r["memory"]
        psi = r["padded_numel"]
        formula = costmodel.memory_bytes(word, psi, psi, world_size=8, group_size=4, precision=prec)
        assert mem["total"] == formula["total"] == mem["expected"], (word, prec, mem, formula)
        assert mem["gathered"] == 0, (word, prec)  # gathered params are freed when p != N
        table = costmodel.comm_bytes(word, psi, psi, world_size=8, group_size=4, grad_accum_steps=accum, precision=prec)
        assert r["engine"]["intra"] == table["intra"], (word, prec, accum, r["engine"], table)
        assert r["engine"]["inter"] == table["inter"], (word, prec, accum, r["engine"], table)
        assert r["engine"] == r["interceptor"], (word, prec, accum)
        assert r["engine_calls"] == r["interceptor_calls"], (word, prec, accum)
        w = parse_word(word)
        if w.p in "NI" and w.g in "NI":  # no inter-group call on any micro-step: once per step at the boundary
            assert r["inter_calls_per_micro"] == [0] * accum, (word, r["inter_calls_per_micro"])
        else:
            assert all(c > 0 for c in r["inter_calls_per_micro"]), word


def test_consolidated_checkpoint_moves_between_words_and_world_sizes(tmp_path):
    """IIG on 8 ranks (2 x 4) -> NNG on 4 ranks (2 x 2): identical parameters and Adam moments."""
    saved_params, saved_states = spawn(workers.save_consolidated, 8, 4, "IIG", str(tmp_path / "c"), 2)
    (params, states), steps, error = spawn(workers.load_consolidated, 4, 2, "NNG", str(tmp_path / "c"))
    assert steps == 2
    assert "does not match the model" in error  # another model's consolidated checkpoint
    assert saved_params.keys() == params.keys()
    for n in params:
        assert torch.equal(saved_params[n], params[n]), n
    assert saved_states.keys() == states.keys() and len(states) > 0
    for n in states:
        assert set(states[n]) == {"step", "exp_avg", "exp_avg_sq"}
        for k in states[n]:
            assert torch.equal(saved_states[n][k], states[n][k]), (n, k)
    # the files hold no padding and no pickle
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    assert meta["kind"] == "consolidated" and meta["strategy"] == "IIG" and meta["world_size"] == 8


@pytest.mark.parametrize(("word", "precision"), [("NIG", None), ("GGG", "bf16")])
def test_sharded_checkpoint_resumes_bitwise(tmp_path, word, precision):
    res = spawn(workers.sharded_resume, 4, 2, word, str(tmp_path / "s"), precision)
    assert res["resumed"] == res["ref"]
    assert res["same_state"]
    assert "consolidated" in res["errors"]["word"]
    assert "another model" in res["errors"]["model"]


def test_corrupted_checkpoint_is_a_clear_error(tmp_path):
    from bastion.distributed.checkpoint import _load, _read_meta

    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        _read_meta(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a bastion-paro checkpoint"):
        _read_meta(tmp_path)
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="corrupted"):
        _load(bad)
    with pytest.raises(ValueError, match="missing"):
        _load(tmp_path / "absent.safetensors")


def test_misuse_raises_value_errors():
    res = spawn(workers.misuse, 4, 2)
    assert "grad_accum_steps=2" in res["early_step"] and "1 backward" in res["early_step"]
    assert "call step()" in res["third_forward"]
    assert "mixes parameter dtypes" in res["mixed_dtypes"]


def test_sigkill_and_restart_resume_bitwise(tmp_path):
    """One rank is SIGKILLed after step 7 of 12 under ``torchrun --max-restarts 1``; losses equal a clean run."""
    base = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "4",
        "-m",
        "bastion.distributed.train",
        "--strategy",
        "IIG",
        "--group-size",
        "2",
        "--steps",
        "12",
        "--grad-accum",
        "2",
        "--dim",
        "32",
        "--layers",
        "2",
        "--heads",
        "2",
        "--seq-len",
        "16",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    clean, faulty = tmp_path / "clean.jsonl", tmp_path / "faulty.jsonl"
    subprocess.run([*base, "--loss-log", str(clean)], check=True, env=env, capture_output=True, cwd=tmp_path)
    proc = subprocess.run(
        [
            *base[:5],
            "--max-restarts",
            "1",
            *base[5:],
            "--loss-log",
            str(faulty),
            "--checkpoint-dir",
            str(tmp_path / "ck"),
            "--checkpoint-every",
            "1",
            "--resume",
            "--fault-after-step",
            "7",
        ],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stdout and "step_7" in proc.stdout
    assert (tmp_path / "ck" / "fault.done").exists()  # the fault really fired
    a = [json.loads(x) for x in clean.read_text().splitlines()]
    b = [json.loads(x) for x in faulty.read_text().splitlines()]
    assert [r["step"] for r in b] == list(range(1, 13))
    assert b == a


def test_words_and_arguments_are_validated():
    with pytest.raises(ValueError, match="strategy 'GGN' is not valid"):
        parse_word("GGN")
    with pytest.raises(ValueError, match="strategy 'NGI' is not valid"):
        parse_word("NGI")
    with pytest.raises(ValueError, match="3 letters"):
        parse_word("NXG")
    from bastion.distributed.topology import TopologySpec

    with pytest.raises(ValueError, match="not divisible by group_size 3"):
        TopologySpec(world_size=8, group_size=3)
    with pytest.raises(ValueError, match="group_size must be >= 1"):
        TopologySpec(world_size=8, group_size=0)


def test_engine_argument_errors_before_any_collective():
    from bastion.distributed.engine import PaRO

    m = workers.make_model(0, torch.float32, False)
    with pytest.raises(ValueError, match="grad_accum_steps must be >= 1"):
        PaRO(m, "NIG", group_size=1, grad_accum_steps=0)
    with pytest.raises(ValueError, match="collective must be one of"):
        PaRO(m, "NIG", group_size=1, collective="tree")
    with pytest.raises(ValueError, match="group_size must be >= 1"):
        PaRO(m, "NIG", group_size=0)
    with pytest.raises(ValueError, match="mixed_precision"):
        PaRO(m, "NIG", group_size=1, mixed_precision="fp16")
    with pytest.raises(ValueError, match="strategy"):
        PaRO(m, "GGN", group_size=1)


def test_world_size_not_divisible_by_group_size():
    res = spawn(_divisibility, 4)
    assert "world size 4 is not divisible by group_size 3" in res


def _divisibility(rank: int, world: int) -> str:
    from bastion.distributed.engine import PaRO

    try:
        PaRO(workers.make_model(0, torch.float32, False), "NIG", group_size=3)
    except ValueError as exc:
        return str(exc)
    return "no error"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([str(Path(__file__))]))


def test_data_dependent_unused_units_with_find_unused_parameters():
    """Rank 0 uses a branch the others skip: reductions wait and run in unit order on every rank."""
    res = spawn(workers.unused_on_some_ranks, 4, 2, ["NNN", "NIG", "NGG", "NNG"])
    assert "needs replicated parameters" in res.pop("IIG error")
    for word, diff in res.items():
        assert diff <= 1e-12, (word, diff)


def test_units_with_frozen_parameters_are_freed_during_the_backward():
    """PEFT-like model, p != N: at most a couple of units are gathered at once in the backward, not all."""
    res = spawn(workers.peft_peak_gathered, 4, 2, ["IIG", "ING", "GGG"])
    for word, r in res.items():
        assert 0 < r["peak"] <= r["one_unit_bound"], (word, r)
        assert r["peak"] < r["all_units"] / 2, (word, r)


def test_the_module_itself_is_not_a_unit():
    assert "proper submodules" in spawn(workers.root_unit_rejected, 4, 2)


def test_bad_checkpoints_are_value_errors_on_every_rank(tmp_path):
    res = spawn(workers.checkpoint_errors, 2, 1, str(tmp_path), all_ranks=True)
    for rank, out in enumerate(res):
        assert "no optimizer state for trainable parameter 'tok.weight'" in out["peft_into_full"], rank
        assert out["params_only"] == "no error", rank
        assert "holds AdamW state, this engine uses SGD" in out["other_optimizer"], rank
        if rank == 1:  # only rank 1 reads the damaged shard
            assert "SHA-256 differs" in out["flipped_byte"]
        assert "'steps' is missing" in out["meta_missing_field"], rank
