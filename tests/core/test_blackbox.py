from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from bastion.core import BlackBox, BudgetExhausted


class CountingNet(nn.Module):
    """A linear classifier on 1x4x4 inputs that records the size of every forward batch."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(16, 3)
        self.drop = nn.Dropout(0.9)
        self.batches: list[int] = []

    def forward(self, x):
        self.batches.append(x.shape[0])
        return self.lin(self.drop(x.flatten(1)))


def make(**kw):
    torch.manual_seed(0)
    net = CountingNet()
    return net, BlackBox(net, input_shape=(1, 4, 4), **kw)


def test_budget_answers_exactly_b_then_refuses():
    net, box = make(budget=5)
    x = torch.rand(3, 1, 4, 4)
    for _ in range(5):
        box(x)
    assert box.queries.tolist() == [5, 5, 5]
    with pytest.raises(BudgetExhausted) as info:
        box(x[:1])
    assert info.value.sample_ids.tolist() == [0]
    assert box.queries.tolist() == [5, 5, 5]
    assert sum(net.batches) == 15  # the refused call never reached the model


def test_raise_mode_is_atomic_across_samples():
    net, box = make(budget=2)
    box(torch.rand(1, 1, 4, 4), sample_ids=torch.tensor([1]))
    assert net.batches == [1]
    # sample 0 has room for 2 but sample 1 only for 1: the whole call is refused
    with pytest.raises(BudgetExhausted):
        box(torch.rand(4, 1, 4, 4), sample_ids=torch.tensor([0, 0, 1, 1]))
    assert box.queries.tolist() == [0, 1]
    assert box.remaining().tolist() == [2, 1]
    assert net.batches == [1]


def test_mask_mode_answers_in_row_order_up_to_budget():
    net, box = make(budget=3, on_exhausted="mask")
    ids = torch.tensor([0, 1, 0, 0, 1, 0, 2])
    x = torch.rand(len(ids), 1, 4, 4)
    res = box.query(x, sample_ids=ids)
    assert res.answered.tolist() == [True, True, True, True, True, False, True]
    assert (res.outputs[~res.answered] == -1).all()
    assert (res.outputs[res.answered] >= 0).all()
    assert box.queries.tolist() == [3, 2, 1]
    res2 = box.query(x[:3], sample_ids=torch.tensor([1, 1, 0]))
    assert res2.answered.tolist() == [True, False, False]
    assert box.queries.tolist() == [3, 3, 1]
    assert sum(net.batches) == 7  # masked rows are never evaluated


def test_mask_mode_scores_are_nan_where_not_answered():
    _, box = make(budget=1, on_exhausted="mask", oracle="probs")
    res = box.query(torch.rand(2, 1, 4, 4), sample_ids=torch.tensor([0, 0]))
    assert res.answered.tolist() == [True, False]
    assert torch.isnan(res.outputs[1]).all() and torch.isfinite(res.outputs[0]).all()


def test_counts_exact_with_chunks_and_sample_ids():
    net, box = make(batch_size=4)
    ids = torch.tensor([2, 2, 0, 5, 5, 5, 1, 2, 0, 3, 3])
    box(torch.rand(len(ids), 1, 4, 4), sample_ids=ids)
    assert net.batches == [4, 4, 3]
    assert box.queries.tolist() == torch.bincount(ids).tolist()
    assert box.total_queries == len(ids)
    box(torch.rand(10, 1, 4, 4))
    assert net.batches[-3:] == [4, 4, 2]
    assert box.total_queries == 21


def test_chunked_answers_equal_one_big_batch():
    torch.manual_seed(1)
    x = torch.rand(37, 1, 4, 4)
    _, small = make(batch_size=5, oracle="logits")
    _, big = make(batch_size=1000, oracle="logits")
    torch.testing.assert_close(small(x), big(x))


def test_labels_probs_logits_and_preprocessing_agree_with_direct_call():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    pre = lambda x: (x - 0.5) / 0.25  # noqa: E731
    x = torch.rand(6, 1, 4, 4)
    with torch.no_grad():
        logits = net(pre(x))
    assert torch.equal(BlackBox(net, preprocess=pre)(x), logits.argmax(1))
    torch.testing.assert_close(BlackBox(net, preprocess=pre, oracle="logits")(x), logits)
    probs = BlackBox(net, preprocess=pre, oracle="probs")(x)
    torch.testing.assert_close(probs.sum(1), torch.ones(6))
    torch.testing.assert_close(probs, logits.softmax(1))


def test_module_put_in_eval_mode_and_kept_there(caplog):
    net, box = make()
    assert not net.training and not net.drop.training
    x = torch.rand(8, 1, 4, 4)
    first = box(x)
    net.train()
    with caplog.at_level(logging.WARNING):
        again = box(x)
    assert "training mode" in caplog.text
    assert not net.training
    assert torch.equal(first, again)  # dropout p=0.9 would scramble answers in training mode


def test_no_gradient_leaks():
    _, box = make(oracle="logits")
    x = torch.rand(4, 1, 4, 4, requires_grad=True)
    out = box(x)
    assert not out.requires_grad and out.grad_fn is None
    with pytest.raises(RuntimeError):
        out.sum().backward()
    assert x.grad is None


@pytest.mark.parametrize(
    ("x", "err", "match"),
    [
        (torch.full((2, 1, 4, 4), float("nan")), ValueError, "non-finite"),
        (torch.full((2, 1, 4, 4), 1.5), ValueError, r"must lie in \[0, 1\]"),
        (-torch.ones(2, 1, 4, 4) * 1e-6, ValueError, "must lie in"),
        (torch.rand(2, 1, 4, 5), ValueError, "per-sample shape"),
        (torch.rand(16), ValueError, "batch"),
        (torch.ones(2, 1, 4, 4, dtype=torch.uint8), TypeError, "floating dtype"),
        (torch.rand(0, 1, 4, 4), ValueError, "empty"),
        ([[0.5]], TypeError, "torch.Tensor"),
    ],
)
def test_bad_inputs_raise_clear_errors(x, err, match):
    net, box = make(budget=10)
    with pytest.raises(err, match=match):
        box(x)
    assert box.total_queries == 0 and net.batches == []


@pytest.mark.parametrize(
    ("kwargs", "err", "match"),
    [
        ({"budget": 0}, ValueError, "budget must be >= 1"),
        ({"budget": 2.5}, TypeError, "budget must be an int"),
        ({"oracle": "scores"}, ValueError, "oracle must be one of"),
        ({"bounds": (1.0, 0.0)}, ValueError, "low < high"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"on_exhausted": "clip"}, ValueError, "on_exhausted"),
        ({"input_shape": (1, -4)}, ValueError, "input_shape"),
    ],
)
def test_bad_construction_raises(kwargs, err, match):
    with pytest.raises(err, match=match):
        BlackBox(nn.Linear(2, 2), **kwargs)


def test_bad_sample_ids():
    _, box = make()
    x = torch.rand(3, 1, 4, 4)
    with pytest.raises(ValueError, match="one id per row"):
        box(x, sample_ids=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="non-negative"):
        box(x, sample_ids=torch.tensor([0, -1, 2]))
    with pytest.raises(TypeError, match="integer dtype"):
        box(x, sample_ids=torch.tensor([0.0, 1.0, 2.0]))


def test_label_callable_and_oracle_mismatch():
    labels_only = lambda x: (x.flatten(1).mean(1) > 0.5).long()  # noqa: E731
    x = torch.tensor([[0.9, 0.9], [0.1, 0.2]])
    assert BlackBox(labels_only)(x).tolist() == [1, 0]
    with pytest.raises(TypeError, match="returns scores"):
        BlackBox(labels_only, oracle="probs")(x)
    with pytest.raises(ValueError, match="logits"):
        BlackBox(lambda x: x.sum())(x)


def test_input_shape_fixed_by_first_call_and_reset():
    box = BlackBox(nn.Sequential(nn.Flatten(), nn.Linear(6, 2)), budget=1)
    box(torch.rand(2, 2, 3))
    assert box.input_shape == (2, 3)
    with pytest.raises(ValueError, match="per-sample shape"):
        box(torch.rand(2, 3, 2))
    box.reset()
    assert box.total_queries == 0
    box(torch.rand(2, 2, 3))  # the budget is available again after reset
    assert "budget=1" in repr(box) and "oracle='label'" in repr(box)


def test_remaining_without_budget_is_unbounded():
    _, box = make()
    box(torch.rand(2, 1, 4, 4))
    assert (box.remaining() == torch.iinfo(torch.int64).max).all()


def test_float64_input_is_cast_to_model_dtype_not_rejected():
    _, box = make(oracle="logits")
    x = torch.rand(3, 1, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(box(x), box(x.float()))
