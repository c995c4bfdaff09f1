"""The tiny GPT workload: batches are pure functions of (seed, step, rank, micro); text files as bytes."""

from __future__ import annotations

import pytest
import torch

from bastion.distributed.gpt import MarkovTokens, TextTokens, TinyGPT, lm_loss


def test_markov_batches_are_reproducible_and_follow_the_chain():
    data = MarkovTokens(seed=3, vocab=64, branching=2)
    a = data.batch(5, 1, 0, 4, 12)
    assert torch.equal(a, MarkovTokens(seed=3, vocab=64, branching=2).batch(5, 1, 0, 4, 12))
    assert not torch.equal(a, data.batch(5, 2, 0, 4, 12))  # another rank, another batch
    succ = data.next[a[:, :-1]]  # every transition is one of the token's two successors
    assert (succ == a[:, 1:, None]).any(-1).all()


def test_text_file_batches_are_windows_of_its_bytes(tmp_path):
    f = tmp_path / "t.txt"
    f.write_bytes(b"hello PaRO world, " * 20)
    data = TextTokens(f, seed=0)
    b = data.batch(0, 0, 0, 3, 10)
    raw = f.read_bytes()
    for row in b.tolist():
        assert bytes(row) in raw
    model = TinyGPT(vocab=256, dim=16, layers=1, heads=2, seq_len=10)
    assert torch.isfinite(lm_loss(model, b))
    short = tmp_path / "s.txt"
    short.write_bytes(b"abc")
    with pytest.raises(ValueError, match="fewer than seq_len"):
        TextTokens(short).batch(0, 0, 0, 1, 10)
    with pytest.raises(ValueError, match="int64"):
        model(b.float())
