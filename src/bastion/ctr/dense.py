"""Float32 dense layers for the CTR models through oneDNN on CPU.

Why: PyTorch's CPU ``nn.Linear`` calls MKL's ``sgemm``. On this project's AMD EPYC machine (AVX-512, one thread)
MKL runs at an AVX2 rate (108-110 GFLOPS), while oneDNN, shipped inside PyTorch as the library behind its CPU
convolutions, uses AVX-512: each of the MLP's three (4096 x 464) x (464 x 400) products (forward, grad input,
grad weight) takes 13.8-14.1 ms in MKL and 5.9-7.3 ms in oneDNN, both IEEE float32 (max error 1.1e-6 of the
largest output against a float64 product; ``python benchmarks/ctr_bench.py --part gemm``). The MLP of DeepFM
at batch 4096 was ~80% of a training step, so the layer choice matters. On Intel CPUs MKL uses AVX-512
itself, so the gain there should be smaller.

How: :func:`linear` runs ``y = act(x W^T + b)`` as one oneDNN primitive (``torch.ops.mkldnn._linear_pointwise``,
the operator TorchInductor's CPU backend uses, with ReLU fused), and its backward as two more (``g W`` and
``g^T x``) with the ReLU mask read from the saved output. It is on by default on every CPU (measured faster
on the AMD machine above; elsewhere ``--part gemm`` tells in seconds whether it pays) and takes a call only
when: the tensors are CPU float32, the input is 2-D, autocast is off (``mixed_precision="bf16"`` keeps
``F.linear`` under autocast), ``torch.backends.mkldnn.enabled`` is true, nothing traces or transforms the
call (``torch.compile``, ``torch.jit`` tracing, ``torch.func``/``vmap``), the product has at least
:data:`MIN_MACS` multiply-adds (oneDNN costs ~10 us a call: 12 us against MKL's 2 us at 64 x 64 x 1, 29 us
against 40 us at 256 x 128 x 64), and the operator is present. Anywhere else it is ``F.linear`` (+
``relu``). The backward is first-order only (``once_differentiable``).

:class:`MLP` is an ``nn.Sequential`` of ``Linear``/``ReLU``/``Dropout`` (its state dict is the plain
Sequential's) whose forward fuses each Linear with a following ReLU. A Linear or ReLU with hooks (pruning,
old-style weight norm, per-sample-gradient hooks, taps), or any global module hook, is called as the module
itself so that its hooks run.

Switch it off with ``BASTION_ONEDNN=0`` (read once, at import) or :func:`set_onednn` / :func:`use_onednn`;
``tests/ctr/test_dense.py`` checks values and gradients against ``F.linear`` + autograd.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

__all__ = ["MLP", "linear", "onednn_active", "onednn_available", "set_onednn", "use_onednn"]

#: below this many multiply-adds per call (rows x in x out) MKL's lower call overhead wins (see the docstring)
MIN_MACS = 1 << 20

_enabled = os.environ.get("BASTION_ONEDNN", "1").strip().lower() not in ("0", "false", "no", "off")
_available: bool | None = None


def onednn_available() -> bool:
    """Whether this PyTorch build offers oneDNN's fused linear on CPU (checked once, on a small product)."""
    global _available
    if _available is None:
        try:
            op = torch.ops.mkldnn._linear_pointwise
            x, w = torch.ones(2, 3), torch.ones(4, 3)
            _available = bool(torch.backends.mkldnn.is_available()) and torch.equal(
                op(x, w, None, "none", [], ""), torch.full((2, 4), 3.0)
            )
        except (AttributeError, RuntimeError, NotImplementedError):
            _available = False
    return _available


def set_onednn(enabled: bool) -> None:
    """Use oneDNN for eligible float32 CPU layers (``True``, the default) or always ``F.linear``."""
    global _enabled
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, got {type(enabled).__name__}")
    _enabled = enabled


@contextlib.contextmanager
def use_onednn(enabled: bool) -> Iterator[None]:
    """Context manager form of :func:`set_onednn`; restores the previous setting on exit."""
    previous = _enabled
    set_onednn(enabled)
    try:
        yield
    finally:
        set_onednn(previous)


def onednn_active() -> bool:
    """Whether :func:`linear` would take the oneDNN path for an eligible float32 CPU call now."""
    return _enabled and onednn_available()


def _transformed() -> bool:
    """Whether a compiler, tracer or functorch transform sees this call (the custom Function would break it)."""
    return bool(torch.compiler.is_compiling() or torch.jit.is_tracing() or torch._C._are_functorch_transforms_active())


def _eligible(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    if not (_enabled and x.dim() == 2 and x.device.type == "cpu" and weight.device.type == "cpu"):
        return False
    if x.dtype != torch.float32 or weight.dtype != torch.float32 or (bias is not None and bias.dtype != torch.float32):
        return False
    if torch.is_autocast_enabled("cpu") or not torch.backends.mkldnn.enabled or _transformed():
        return False
    if x.shape[0] * weight.shape[0] * weight.shape[1] < MIN_MACS:
        return False
    return onednn_available()


class _OneDNNLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, relu: bool):  # type: ignore[override]
        op = torch.ops.mkldnn._linear_pointwise
        y = op(x, weight, bias, "relu" if relu else "none", [], "")
        ctx.relu = relu
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x if ctx.needs_input_grad[1] else None, weight, y if relu else None)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # type: ignore[override]
        op = torch.ops.mkldnn._linear_pointwise
        x, weight, y = ctx.saved_tensors
        g = grad.contiguous()
        if ctx.relu:
            g = torch.ops.aten.threshold_backward(g, y, 0.0)
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = op(g, weight.t(), None, "none", [], "")  # g W
        if ctx.needs_input_grad[1]:
            gw = op(g.t(), x.t(), None, "none", [], "")  # g^T x
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = g.sum(0)
        return gx, gw, gb, None


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *, relu: bool = False):
    """``relu(x W^T + b)`` (or without ``relu``), through oneDNN where eligible, else ``F.linear``."""
    if _eligible(x, weight, bias):
        return _OneDNNLinear.apply(x, weight, bias, relu)
    y = F.linear(x, weight, bias)
    return torch.relu(y) if relu else y


def _hooked(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks)


def _global_hooks() -> bool:
    g = torch.nn.modules.module
    return bool(
        g._global_forward_hooks
        or g._global_forward_pre_hooks
        or g._global_backward_hooks
        or g._global_backward_pre_hooks
    )


class MLP(nn.Sequential):
    """``nn.Sequential`` of Linear / ReLU / Dropout whose forward runs each Linear(+ReLU) through :func:`linear`.

    Holds the same modules, and so the same state-dict keys, as the plain Sequential. Other modules, and a
    Linear or ReLU with hooks (or any global module hook), are called as modules, so their hooks run.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        mods = list(self)
        plain = _global_hooks()
        i = 0
        while i < len(mods):
            m = mods[i]
            if type(m) is nn.Linear and not plain and not _hooked(m):
                fuse = i + 1 < len(mods) and type(mods[i + 1]) is nn.ReLU and not _hooked(mods[i + 1])
                x = linear(x, m.weight, m.bias, relu=fuse)
                i += 2 if fuse else 1
            else:
                x = m(x)
                i += 1
        return x
