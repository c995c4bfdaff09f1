"""HSJA engine and QEBA samplers: budgets, correctness of results, closed forms, errors."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from bastion import zoo
from bastion.attacks.decision import (
    HSJA,
    AEGenerator,
    BasisSampler,
    BoundaryAttack,
    DCTSampler,
    FullSampler,
    ProgressiveGenerator,
    SignOPT,
    SpatialSampler,
    dct_matrix,
    nonlinear_ba,
    psba,
    qeba,
)
from bastion.attacks.decision.engine import _Run
from bastion.core import ATTACKS, BlackBox
from bastion.data import load_dataset


class Counting(nn.Module):
    """An independent query counter around a model: every row it sees is one query."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.rows = 0

    def forward(self, x):
        self.rows += x.shape[0]
        return self.net(x)


@pytest.fixture(scope="module")
def digits():
    model = zoo.load("mnist5k-cnn")
    test = load_dataset("mnist5k", "test")
    x, y = test.images[:40], test.labels[:40]
    keep = model.predict(x) == y
    return model, x[keep][:6], y[keep][:6]


@pytest.mark.parametrize("budget", [1, 7, 60, 333])
@pytest.mark.parametrize(
    "make",
    [
        lambda: HSJA(seed=0),
        lambda: qeba(subspace="frequency", seed=0),
        lambda: HSJA(norm="linf", seed=0),
        lambda: BoundaryAttack(seed=0),
        lambda: nonlinear_ba(AEGenerator((1, 28, 28)).eval(), seed=0),  # untrained decoders: the accounting
        lambda: psba(ProgressiveGenerator(1, sizes=(7, 14, 28)).eval(), scale=7, seed=0),
        lambda: SignOPT(seed=0),
    ],
)
def test_budget_never_exceeded_and_counted_independently(digits, budget, make):
    model, x, y = digits
    counted = Counting(model.net)
    result = make()(counted, x, y, budget=budget, preprocess=model.preprocess)
    assert int(result.queries.max()) <= budget
    assert int(result.queries.sum()) == counted.rows
    single = Counting(model.net)
    one = make()(single, x[:1], y[:1], budget=budget, preprocess=model.preprocess)
    assert int(one.queries[0]) == single.rows <= budget


@pytest.mark.parametrize("make", [lambda: HSJA(seed=0), lambda: BoundaryAttack(seed=0), lambda: SignOPT(seed=0)])
def test_budget_holds_with_a_users_unbudgeted_blackbox(digits, make):
    """A BlackBox given as the model is used as it is: the attack's own budget must still hold."""
    model, x, y = digits
    box = BlackBox(model.net, oracle="label", preprocess=model.preprocess, input_shape=x.shape[1:])
    result = make()(box, x[:3], y[:3], budget=120)
    assert int(result.queries.max()) <= 120
    assert box.queries[:3].tolist() == result.queries.tolist()


@pytest.mark.parametrize(
    "attack",
    [
        HSJA(seed=1),
        HSJA(norm="linf", seed=1),
        qeba(subspace="spatial", seed=1),
        BoundaryAttack(seed=1),
        SignOPT(seed=1),
    ],
)
def test_results_are_adversarial_in_bounds_and_distances_exact(digits, attack):
    model, x, y = digits
    r = attack(model.net, x, y, budget=500, preprocess=model.preprocess)
    assert bool(r.success.all()), r.reason
    assert bool((model.predict(r.adversarial[r.success]) != y[r.success]).all())
    assert float(r.adversarial.min()) >= 0.0 and float(r.adversarial.max()) <= 1.0
    diff = (r.adversarial - x).flatten(1)
    torch.testing.assert_close(r.l2, diff.norm(dim=1))
    torch.testing.assert_close(r.linf, diff.abs().amax(1))
    torch.testing.assert_close(r.mse, (diff**2).mean(1))
    for hist in r.history:  # best distance so far never increases
        dists = [h[1] for h in hist]
        assert all(b <= a + 1e-12 for a, b in itertools.pairwise(dists))
    assert r.median_mse_at(500) == pytest.approx(float(r.mse.median()), rel=1e-5)


def test_same_seed_same_result(digits):
    model, x, y = digits
    a = HSJA(seed=3)(model.net, x[:3], y[:3], budget=300, preprocess=model.preprocess)
    b = HSJA(seed=3)(model.net, x[:3], y[:3], budget=300, preprocess=model.preprocess)
    assert torch.equal(a.adversarial, b.adversarial) and torch.equal(a.queries, b.queries)


def test_targeted_attack_reaches_the_target(digits):
    model, x, y = digits
    test = load_dataset("mnist5k", "test")
    targets = (y + 1) % 10
    starts = torch.stack([test.images[(test.labels == t).nonzero()[0, 0]] for t in targets])
    r = HSJA(seed=0)(model.net, x, y, budget=400, targets=targets, starting_points=starts, preprocess=model.preprocess)
    assert bool(r.success.all())
    assert torch.equal(model.predict(r.adversarial), targets)
    assert bool((r.l2 < (starts - x).flatten(1).norm(dim=1)).all())  # it moved towards the originals


def test_already_adversarial_input_comes_back_at_distance_zero(digits):
    model, x, y = digits
    wrong = (y + 1) % 10
    r = HSJA()(model.net, x[:2], wrong[:2], budget=50, preprocess=model.preprocess)
    assert bool(r.success.all())
    assert r.l2.tolist() == [0.0, 0.0] and torch.equal(r.adversarial, x[:2])
    assert r.queries.tolist() == [1, 1]


def test_failed_init_says_why():
    constant = lambda v: torch.stack([torch.ones(len(v)), torch.zeros(len(v))], 1)  # noqa: E731  always class 0
    r = HSJA(init_tries=5)(constant, torch.rand(2, 1, 4, 4), torch.tensor([0, 0]), budget=100)
    assert not bool(r.success.any())
    assert all("no adversarial starting point" in why for why in r.reason)
    assert bool(torch.isinf(r.mse).all())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"budget": 0}, "budget must be >= 1"),
        ({"y": torch.tensor([0, 12])}, r"y must lie in \[0, 9\]"),
        ({"x": torch.rand(2, 28, 28)}, "x must have 4 dimensions"),
        ({"x": torch.full((2, 1, 28, 28), float("nan"))}, "non-finite"),
        ({"x": torch.full((2, 1, 28, 28), 1.5)}, r"x must lie in \[0, 1\]"),
        ({"y": torch.tensor([0])}, "y must have length 2"),
        ({"targets": torch.tensor([1, 2])}, "starting_points are required"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(kwargs, match):
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    args = {"x": torch.rand(2, 1, 28, 28), "y": torch.tensor([0, 1]), "budget": 10} | kwargs
    x, y, budget = args.pop("x"), args.pop("y"), args.pop("budget")
    with pytest.raises(ValueError, match=match):
        HSJA()(net, x, y, budget=budget, **args)


def test_dct_basis_and_frequency_probes():
    d = dct_matrix(28)
    torch.testing.assert_close(d.T @ d, torch.eye(28, dtype=d.dtype))
    probes = DCTSampler(ratio=4)(20, (3, 28, 28), torch.Generator().manual_seed(0)).double()
    coef = d @ probes @ d.T  # forward 2-D DCT per channel
    inside = coef[..., :7, :7]
    assert float(coef.pow(2).sum() - inside.pow(2).sum()) < 1e-10
    assert torch.allclose(probes.flatten(1).norm(dim=1), torch.ones(20, dtype=probes.dtype), atol=1e-5)
    for sampler in (FullSampler(), FullSampler(norm="linf"), SpatialSampler(ratio=2), BasisSampler(torch.randn(5, 48))):
        out = sampler(4, (3, 4, 4), torch.Generator().manual_seed(0))
        assert out.shape == (4, 3, 4, 4)
        torch.testing.assert_close(out.flatten(1).norm(dim=1), torch.ones(4))


def _linear_cosines(sampler, w: torch.Tensor, n_probes: int = 100, n_est: int = 60) -> float:
    """Mean cosine between HSJA's estimate and the true normal of a linear classifier at its boundary."""
    x_b = torch.full((1, 1, 28, 28), 0.5)
    wf = w.flatten()

    def linear(v):
        score = (v.flatten(1) - x_b.flatten(1)) @ wf
        return torch.stack([torch.zeros_like(score), score], 1)

    attack = HSJA(sampler=sampler, seed=0)
    box = BlackBox(linear, input_shape=(1, 28, 28))
    run = _Run(
        attack,
        box,
        x_b.expand(n_est, -1, -1, -1).clone(),
        torch.zeros(n_est, dtype=torch.long),
        None,
        None,
        10**9,
        (0.0, 1.0),
        True,
    )
    v, _ = run.estimate(torch.arange(n_est), torch.full((n_est,), 1e-3), torch.full((n_est,), n_probes))
    return float((v.flatten(1) @ wf / wf.norm()).mean())


def test_estimator_cosine_matches_closed_form_for_full_and_dct_probes():
    g = torch.Generator().manual_seed(0)
    expected = lambda n, b: (1 + math.pi * n / (2 * b)) ** -0.5  # noqa: E731
    w_full = torch.randn(1, 1, 28, 28, generator=g)
    cos_full = _linear_cosines(FullSampler(), w_full)
    assert cos_full == pytest.approx(expected(784, 100), rel=0.15)
    d = dct_matrix(28).float()
    for ratio, n in ((2, 196), (4, 49)):
        k = 28 // ratio
        w_low = (d[:k].T @ torch.randn(k, k, generator=g) @ d[:k]).view(1, 1, 28, 28)  # w inside the DCT block
        assert _linear_cosines(DCTSampler(ratio=ratio), w_low) == pytest.approx(expected(n, 100), rel=0.15)
    assert cos_full < 0.35  # the subspace helps only because w lies in it


def test_registry_and_qeba_factory():
    for name in ("hsja", "qeba-s", "qeba-f"):
        attack = ATTACKS.create(name, seed=0)
        assert isinstance(attack, HSJA) and "seed=0" in repr(attack)
    assert isinstance(ATTACKS.create("qeba-i", basis=torch.randn(3, 784)).sampler, BasisSampler)
    with pytest.raises(ValueError, match="needs basis"):
        ATTACKS.create("qeba-i")
    with pytest.raises(ValueError, match="subspace must be one of"):
        qeba(subspace="wavelet")
    with pytest.raises(ValueError, match="preset must be one of"):
        HSJA(preset="fast")


def test_pca_basis_matches_exact_svd_and_gradients_match_autograd():
    from bastion.attacks.decision import pca_basis, reference_gradients, zoo_gradient_basis

    g = torch.Generator().manual_seed(0)
    low = torch.randn(300, 6, generator=g) @ torch.randn(6, 80, generator=g) * 5
    a = low + 0.01 * torch.randn(300, 80, generator=g)
    basis = pca_basis(a, 6)
    torch.testing.assert_close(basis @ basis.T, torch.eye(6), atol=1e-5, rtol=0)
    exact = torch.linalg.svd(a.double(), full_matrices=False).Vh[:6].float()
    # same subspace: projecting the exact vectors onto ours loses nothing
    assert float((exact @ basis.T).norm(dim=1).min()) > 0.999
    with pytest.raises(ValueError, match="k must be <="):
        pca_basis(a, 81)

    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x = torch.rand(5, 1, 4, 4)
    grads = reference_gradients([net, net], x, batch_size=2)
    assert grads.shape == (10, 16)
    x1 = x[:1].clone().requires_grad_(True)
    out = net(x1)
    nn.functional.cross_entropy(out, out.argmax(1)).backward()
    torch.testing.assert_close(grads[0], x1.grad.flatten())
    b1 = zoo_gradient_basis(k=20)  # the two MNIST-5k references come from the zoo cache
    b2 = zoo_gradient_basis(k=20)
    assert b1.shape == (20, 784) and torch.equal(b1, b2)


def test_an_image_result_does_not_depend_on_its_batch_mates(digits):
    model, x, y = digits
    together = HSJA(seed=2)(model.net, x[:4], y[:4], budget=300, preprocess=model.preprocess)
    fewer = HSJA(seed=2)(model.net, x[:2], y[:2], budget=300, preprocess=model.preprocess)
    assert torch.equal(together.adversarial[:2], fewer.adversarial)
    assert torch.equal(together.queries[:2], fewer.queries)


def test_bisection_terminates_at_imagenet_size_with_the_hsja_preset():
    """theta = 1/(d sqrt d) = 1.7e-8 at 3x224x224 is finer than float32; the search must not stall."""
    torch.manual_seed(0)
    w = torch.randn(3 * 224 * 224)

    def linear(v):
        s = (v.flatten(1) - 0.5) @ w
        return torch.stack([s, -s], 1)

    x = 0.5 + 0.4 * torch.sign(w).view(1, 3, 224, 224) * 0.1  # class 0
    r = HSJA(seed=0)(linear, x, torch.tensor([0]), budget=500)
    assert r.success.all()
    assert len(r.history[0]) >= 3  # init + at least two full iterations within 500 queries


def test_boundary_attack_walks_towards_the_original(digits):
    model, x, y = digits
    r = BoundaryAttack(seed=0)(model.net, x, y, budget=600, preprocess=model.preprocess)
    first = torch.tensor([h[0][1] for h in r.history])
    assert bool((r.l2 < first).all())  # every image got closer than its starting point
    assert isinstance(ATTACKS.create("boundary", seed=0), BoundaryAttack)
    with pytest.raises(ValueError, match="step_adaptation must be > 1"):
        BoundaryAttack(step_adaptation=1.0)
