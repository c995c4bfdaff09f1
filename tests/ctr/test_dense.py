"""bastion.ctr.dense: the oneDNN float32 layer path equals F.linear + autograd, and steps aside where it must."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from bastion.ctr import dense
from bastion.ctr.dense import MLP, linear, onednn_available, set_onednn, use_onednn
from bastion.ctr.features import FeatureSpec
from bastion.ctr.models import build_model

needs_onednn = pytest.mark.skipif(not onednn_available(), reason="this PyTorch build has no oneDNN linear on CPU")


def _took_onednn(y: torch.Tensor) -> bool:
    return y.grad_fn is not None and "OneDNNLinear" in type(y.grad_fn).__name__


def _reference(x, w, b, relu):
    """Float64 autograd reference: values and the gradients of sum(y * r)."""
    xd, wd = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    bd = None if b is None else b.detach().double().requires_grad_()
    y = F.linear(xd, wd, bd)
    return (torch.relu(y) if relu else y), xd, wd, bd


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


@needs_onednn
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("strided", [False, True])
def test_values_and_gradients_match_float64(relu, with_bias, strided):
    g = torch.Generator().manual_seed(0)
    base = torch.randn(300, 2 * 96, generator=g)
    x = (base[:, ::2] if strided else base[:, :96].contiguous()).requires_grad_()  # a non-contiguous view too
    w = torch.randn(64, 96, generator=g, requires_grad=True)
    b = torch.randn(64, generator=g, requires_grad=True) if with_bias else None
    y = linear(x, w, b, relu=relu)
    assert _took_onednn(y)
    r = torch.randn(y.shape, generator=g)
    (y * r).sum().backward()
    yd, xd, wd, bd = _reference(x, w, b, relu)
    (yd * r.double()).sum().backward()
    assert _rel(y, yd) < 1e-5
    assert _rel(x.grad, xd.grad) < 1e-5
    assert _rel(w.grad, wd.grad) < 1e-5
    if with_bias:
        assert _rel(b.grad, bd.grad) < 1e-5
    if relu:
        assert (y >= 0).all() and int((y == 0).sum()) > 0  # the mask is exercised


@needs_onednn
def test_input_without_grad_gets_none_and_weights_still_learn():
    x = torch.randn(512, 64)
    w = torch.randn(48, 64, requires_grad=True)
    y = linear(x, w, None, relu=True)
    assert _took_onednn(y)
    y.sum().backward()
    assert x.grad is None and w.grad is not None


@pytest.mark.parametrize(
    "case",
    ["small", "float64", "three_dims", "disabled", "autocast", "mkldnn_off"],
)
def test_falls_back_to_f_linear(case):
    x, w, b = torch.randn(512, 64), torch.randn(48, 64, requires_grad=True), torch.randn(48)
    ctx = use_onednn(True)
    if case == "small":
        x = torch.randn(4, 64)
    elif case == "float64":
        x, w, b = x.double(), w.detach().double().requires_grad_(), b.double()
    elif case == "three_dims":
        x = torch.randn(8, 64, 64)
    elif case == "disabled":
        ctx = use_onednn(False)
    elif case == "mkldnn_off":
        ctx = torch.backends.mkldnn.flags(enabled=False)
    with ctx:
        if case == "autocast":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                y = linear(x, w, b, relu=True)
            assert y.dtype == torch.bfloat16
        else:
            y = linear(x, w, b, relu=True)
            ref = torch.relu(F.linear(x, w, b))
            assert torch.equal(y, ref)
    assert not _took_onednn(y)


def test_use_onednn_restores_and_set_onednn_checks_its_type():
    before = dense._enabled
    with use_onednn(not before):
        assert dense._enabled is (not before)
    assert dense._enabled is before
    with pytest.raises(TypeError, match="enabled"):
        set_onednn(1)


def test_mlp_keeps_the_sequential_state_dict_and_its_outputs():
    torch.manual_seed(0)
    layers = _stack()
    plain = nn.Sequential(*layers)
    fused = MLP(*layers)
    assert list(fused.state_dict()) == list(plain.state_dict())
    x = torch.randn(256, 96)
    fused.eval()
    plain.eval()
    assert _rel(fused(x), plain(x)) < 1e-5
    fused.train()
    plain.train()
    torch.manual_seed(1)
    a = fused(x)
    torch.manual_seed(1)
    b = plain(x)
    assert _rel(a, b) < 1e-5  # dropout draws the same mask: the module order is unchanged


def _counting(monkeypatch) -> list[int]:
    count = [0]
    original = dense._OneDNNLinear.apply

    def apply(*args):
        count[0] += 1
        return original(*args)

    monkeypatch.setattr(dense._OneDNNLinear, "apply", apply)
    return count


def _stack() -> list[nn.Module]:
    return [nn.Linear(96, 128), nn.ReLU(), nn.Dropout(0.3), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 1)]


@needs_onednn
def test_mlp_backward_in_train_mode_matches_the_plain_sequential(monkeypatch):
    torch.manual_seed(0)
    fused = MLP(*_stack())
    plain = nn.Sequential(*[m for m in fused])  # the same modules, so the same weights
    x = torch.randn(512, 96, requires_grad=True)
    count = _counting(monkeypatch)
    grads = []
    for net in (fused, plain):
        net.zero_grad(set_to_none=True)
        x.grad = None
        torch.manual_seed(1)  # the same dropout mask
        net(x).square().sum().backward()
        grads.append([x.grad.clone(), *[p.grad.clone() for p in net.parameters()]])
    assert count[0] == 2  # the two 128-wide layers; the 128 -> 1 head is below MIN_MACS
    for a, b in zip(*grads, strict=True):
        assert _rel(a, b) < 1e-5


def test_mlp_on_an_empty_batch():
    fused = MLP(*_stack())
    x = torch.zeros(0, 96, requires_grad=True)
    out = fused(x)
    assert out.shape == (0, 1)
    out.sum().backward()
    assert x.grad.shape == (0, 96)


@needs_onednn
def test_hooked_layers_run_as_modules(monkeypatch):
    """A forward pre-hook (here: pruning's weight mask) must run, so that layer leaves the fast path."""
    torch.manual_seed(0)
    layers = _stack()
    prune.l1_unstructured(layers[0], "weight", amount=0.5)
    fused, plain = MLP(*layers), nn.Sequential(*layers)
    fused.eval()
    x = torch.randn(512, 96)
    with torch.no_grad():
        layers[0].weight_orig.mul_(2.0)  # the hook recomputes weight = weight_orig * mask at each call
    count = _counting(monkeypatch)
    assert _rel(fused(x), plain.eval()(x)) < 1e-5
    assert count[0] == 1  # only the un-hooked 128 x 128 layer took oneDNN
    handle = torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: None)
    try:
        fused(x)
    finally:
        handle.remove()
    assert count[0] == 1  # a global hook: every layer runs as a module


@needs_onednn
def test_torch_func_and_tracing_fall_back(monkeypatch):
    torch.manual_seed(0)
    fused = MLP(*_stack()).eval()
    x = torch.randn(512, 96)
    params = dict(fused.named_parameters())
    count = _counting(monkeypatch)

    def loss(p):
        return torch.func.functional_call(fused, p, (x,)).square().sum()

    g = torch.func.grad(loss)(params)
    loss(params).backward()
    assert count[0] == 2  # the plain call took oneDNN (2 layers), torch.func.grad did not
    for name, p in fused.named_parameters():
        assert _rel(g[name], p.grad) < 1e-5
    traced = torch.jit.trace(fused, x)
    assert _rel(traced(x), fused(x)) < 1e-5


@needs_onednn
def test_deepfm_training_step_matches_the_mkl_path(monkeypatch):
    """One DeepFM forward/backward with oneDNN on and off: same loss and gradients to float32 precision."""
    spec = FeatureSpec(["a", "b", "c"], [50, 60, 70])
    torch.manual_seed(0)
    model = build_model("deepfm", spec, dim=16, mlp=(400, 400, 400))
    g = torch.Generator().manual_seed(0)
    batch = {
        "ids": torch.stack([torch.randint(0, s, (1024,), generator=g) for s in (50, 60, 70)], 1),
        "label": torch.randint(0, 2, (1024,), generator=g).float(),
    }
    grads = {}
    count = _counting(monkeypatch)
    for on in (True, False):
        model.zero_grad(set_to_none=True)
        before = count[0]
        with use_onednn(on):
            loss = F.binary_cross_entropy_with_logits(model(batch), batch["label"])
        loss.backward()
        assert count[0] - before == (3 if on else 0)  # the three 400-wide layers (the 400 -> 1 head is small)
        grads[on] = (loss.detach(), {n: p.grad.to_dense() for n, p in model.named_parameters()})
    assert abs(float(grads[True][0] - grads[False][0])) < 1e-6
    for name, gr in grads[True][1].items():
        assert _rel(gr, grads[False][1][name]) < 1e-4, name
