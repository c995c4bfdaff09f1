from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bastion.core import (
    Registry,
    check_choice,
    check_float,
    check_image_batch,
    check_int,
    check_labels,
    check_tensor,
    make_generator,
    seed_everything,
)


def test_check_int_accepts_integer_like_and_rejects_others():
    assert check_int(np.int64(4), "n") == 4
    assert check_int(torch.tensor(5), "n") == 5
    for bad in (True, 2.0, "3", None):
        with pytest.raises(TypeError, match="n must be an int"):
            check_int(bad, "n")
    with pytest.raises(ValueError, match="n must be <= 3, got 4"):
        check_int(4, "n", maximum=3)


def test_check_float_ranges():
    assert check_float(np.float32(0.25), "p", minimum=0, maximum=1) == 0.25
    with pytest.raises(ValueError, match="p must be > 0"):
        check_float(0.0, "p", minimum=0, min_inclusive=False)
    with pytest.raises(ValueError, match="finite"):
        check_float(float("inf"), "p")
    with pytest.raises(TypeError, match="p must be a number"):
        check_float("x", "p")


def test_check_choice_and_tensor_and_labels():
    assert check_choice("a", "mode", "ab") == "a"
    with pytest.raises(TypeError, match="y must have an integer dtype"):
        check_labels(torch.tensor([0.0]), "y")
    with pytest.raises(ValueError, match=r"y must lie in \[0, 2\]"):
        check_labels(torch.tensor([0, 3]), "y", num_classes=3)
    with pytest.raises(ValueError, match="length 3"):
        check_labels(torch.tensor([0, 1]), "y", n=3)
    with pytest.raises(ValueError, match="2 non-finite values \\(1 NaN\\)"):
        check_tensor(torch.tensor([1.0, float("nan"), float("inf")]), "x")
    with pytest.raises(ValueError, match=r"per-sample shape \(3, 8, 8\)"):
        check_image_batch(torch.rand(2, 1, 8, 8), shape=(3, 8, 8))


@pytest.mark.parametrize(
    ("values", "bounds", "match"),
    [
        ([0.2, float("nan")], (0.0, 1.0), "non-finite"),
        ([0.2, float("inf")], (float("-inf"), float("inf")), "non-finite"),  # infinite bounds admit no inf
        ([float("-inf"), 0.5], (float("-inf"), 1.0), "non-finite"),
        ([0.2, 1.5], (0.0, 1.0), "must lie in"),
        ([-1e-7, 0.5], (0.0, 1.0), "must lie in"),
    ],
)
def test_check_tensor_bounds_fast_path_still_rejects_nan_inf_and_range(values, bounds, match):
    with pytest.raises(ValueError, match=match):
        check_tensor(torch.tensor(values), "x", bounds=bounds)
    ok = torch.tensor([bounds[0] if math.isfinite(bounds[0]) else -3.0, 0.5])
    assert check_tensor(ok, "x", bounds=bounds) is ok


def test_registry_lookup_errors_name_close_matches():
    reg = Registry("widget")
    reg.register("alpha", dict)
    with pytest.raises(KeyError, match="Did you mean 'alpha'"):
        reg.get("alpah")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("alpha", list)
    assert "alpha" in reg and len(reg) == 1 and list(reg) == ["alpha"]
    assert reg.create("alpha", a=1) == {"a": 1}


def test_seed_everything_and_generators_reproduce():
    seed_everything(7)
    a = (torch.rand(3), np.random.rand(3))  # noqa: NPY002
    seed_everything(7)
    b = (torch.rand(3), np.random.rand(3))  # noqa: NPY002
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    g = make_generator(11)
    assert make_generator(g) is g
    assert torch.equal(torch.randn(4, generator=make_generator(11)), torch.randn(4, generator=g))
    with pytest.raises(ValueError, match="seed"):
        seed_everything(-1)
    with pytest.raises(TypeError, match="seed must be an int"):
        make_generator(1.5)
