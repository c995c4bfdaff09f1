"""RowSparseAdam against torch.optim.SparseAdam, step by step."""

from __future__ import annotations

import pytest
import torch

from bastion.ctr.optim import RowSparseAdam


def _run(opt_cls, steps=6, seed=0):
    torch.manual_seed(seed)
    emb = torch.nn.Embedding(50, 4, sparse=True)
    opt = opt_cls(emb.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        ids = torch.randint(0, 12, (64,), generator=g)  # duplicates and untouched rows 12..49
        target = torch.randn(64, 4, generator=g)
        opt.zero_grad()
        ((emb(ids) - target) ** 2).sum().backward()
        opt.step()
    return emb.weight.detach(), opt


def test_matches_torch_sparse_adam():
    ours, opt = _run(RowSparseAdam)
    ref, ref_opt = _run(torch.optim.SparseAdam)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    p = next(iter(opt.state))
    q = next(iter(ref_opt.state))
    torch.testing.assert_close(opt.state[p]["exp_avg_sq"], ref_opt.state[q]["exp_avg_sq"], rtol=1e-5, atol=1e-7)
    untouched = ours[12:]
    torch.manual_seed(0)
    assert torch.equal(untouched, torch.nn.Embedding(50, 4).weight.detach()[12:])  # rows never seen never move


def test_rejects_dense_gradients_and_bad_arguments():
    w = torch.nn.Parameter(torch.zeros(3, 2))
    w.grad = torch.ones(3, 2)
    with pytest.raises(RuntimeError, match="sparse gradients"):
        RowSparseAdam([w]).step()
    with pytest.raises(ValueError, match="lr"):
        RowSparseAdam([w], lr=0.0)
    with pytest.raises(ValueError, match="eps"):
        RowSparseAdam([w], eps=0.0)
    with pytest.raises(ValueError, match="betas"):
        RowSparseAdam([w], betas=(0.9, 1.0))
