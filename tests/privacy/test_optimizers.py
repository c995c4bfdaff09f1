"""SG-MCMC samplers against closed forms (spec sgld.md section 6) and against torch's SGD."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from bastion.privacy import SGHMC, SGLD, polynomial_decay, pSGLD

NOISE_VAR = 0.25


def _blr_problem(seed: int = 0):
    """Bayesian linear regression: d=3 correlated features, N=100, noise sd 0.5, prior N(0, 1)."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.5, 0.3, 0.8]], dtype=torch.float64)
    x = torch.randn(100, 3, generator=g, dtype=torch.float64) @ mix.T
    y = x @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) + 0.5 * torch.randn(
        100, generator=g, dtype=torch.float64
    )
    precision = x.T @ x / NOISE_VAR + torch.eye(3, dtype=torch.float64)
    cov = torch.linalg.inv(precision)
    mean = cov @ (x.T @ y) / NOISE_VAR
    return x, y, mean, cov


def _run_chains(make_opt, temperature: float, steps: int = 6000, burn_in: int = 1500, freeze_at_burn_in=False):
    x, y, mean, cov = _blr_problem()
    theta = torch.nn.Parameter(torch.zeros(64, 3, dtype=torch.float64))  # 64 chains as one parameter
    opt = make_opt([theta], temperature)
    samples = []
    for t in range(steps):
        opt.zero_grad()
        resid = y[None, :] - theta @ x.T  # (64, N)
        loss = (resid**2 / (2 * NOISE_VAR)).mean(dim=1).sum()  # each chain's mean NLL, summed over chains
        loss.backward()
        opt.step()
        if t == burn_in and freeze_at_burn_in:
            for group in opt.param_groups:
                group["alpha"] = 1.0
        if t >= burn_in:
            samples.append(theta.detach().clone())
    s = torch.cat(samples)  # (64 * kept, 3)
    target_cov = temperature * cov
    evals, evecs = torch.linalg.eigh(target_cov)
    whiten = evecs @ torch.diag(evals.rsqrt()) @ evecs.T
    ratio = torch.linalg.eigvalsh(whiten @ torch.cov(s.T) @ whiten)
    mean_err = ((s.mean(0) - mean).abs() / target_cov.diag().sqrt()).max()
    return ratio, float(mean_err)


SAMPLERS = {
    "sgld": lambda p, t: SGLD(p, lr=3e-4, num_data=100, temperature=t, seed=1),
    "sghmc": lambda p, t: SGHMC(p, lr=1e-4, num_data=100, friction=0.1, temperature=t, seed=1),
    "psgld": lambda p, t: pSGLD(p, lr=3e-5, num_data=100, temperature=t, seed=1, alpha=0.99, eps=1e-5),
}


@pytest.mark.parametrize("temperature", [1.0, 0.25])
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_samples_match_the_closed_form_posterior(name, temperature):
    ratio, mean_err = _run_chains(SAMPLERS[name], temperature, freeze_at_burn_in=name == "psgld")
    assert float(ratio.min()) >= 0.9, ratio
    assert float(ratio.max()) <= 1.15, ratio
    assert mean_err <= 0.1, mean_err


def test_large_step_sgld_is_detectably_biased():
    ratio, _ = _run_chains(lambda p, t: SGLD(p, lr=1e-3, num_data=100, temperature=t, seed=1), 1.0)
    assert float(ratio.max()) > 1.15, ratio  # the negative control: the test can see discretisation bias


def _twin_runs(ours, theirs, steps=5):
    torch.manual_seed(0)
    net_a = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))
    net_b = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))
    net_b.load_state_dict(net_a.state_dict())
    opt_a, opt_b = ours(net_a.parameters()), theirs(net_b.parameters())
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x, y = torch.randn(8, 5, generator=g), torch.randint(0, 3, (8,), generator=g)
        for net, opt in ((net_a, opt_a), (net_b, opt_b)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    for a, b in zip(net_a.parameters(), net_b.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_zero_temperature_equals_torch_sgd():
    n, eps, sd = 500, 1e-4, 2.0
    _twin_runs(
        lambda p: SGLD(p, lr=eps, num_data=n, prior_std=sd, temperature=0.0),
        lambda p: torch.optim.SGD(p, lr=eps * n / 2, weight_decay=1 / (n * sd**2)),
    )
    _twin_runs(
        lambda p: SGHMC(p, lr=eps, num_data=n, prior_std=sd, temperature=0.0, friction=0.1),
        lambda p: torch.optim.SGD(p, lr=eps * n, momentum=0.9, weight_decay=1 / (n * sd**2)),
    )


@pytest.mark.parametrize("shape", [(100_000,), (250, 400), (10, 10, 1000)])
def test_noise_std_is_sqrt_lr_t_for_every_shape(shape):
    lr, temp = 4e-4, 0.5
    p = torch.nn.Parameter(torch.zeros(shape, dtype=torch.float64))
    opt = SGLD([p], lr=lr, num_data=10, temperature=temp, seed=3)
    p.grad = torch.zeros_like(p)
    opt.step()
    assert float(p.detach().std()) == pytest.approx(math.sqrt(lr * temp), rel=0.03)
    assert abs(float(p.detach().mean())) < 4 * math.sqrt(lr * temp) / math.sqrt(p.numel())


def test_state_dict_roundtrip_continues_the_same_chain():
    def run(opt, p, steps):
        for _ in range(steps):
            p.grad = p.detach().clone()
            opt.step()

    p1 = torch.nn.Parameter(torch.ones(20))
    opt1 = SGHMC([p1], lr=1e-3, num_data=50, seed=5)
    run(opt1, p1, 3)
    saved, p_saved = copy.deepcopy(opt1.state_dict()), p1.detach().clone()  # as torch.save would
    run(opt1, p1, 4)
    p2 = torch.nn.Parameter(p_saved)
    opt2 = SGHMC([p2], lr=1e-3, num_data=50, seed=99)
    opt2.load_state_dict(saved)
    run(opt2, p2, 4)
    assert torch.equal(p1, p2)


def test_polynomial_decay_schedule():
    p = torch.nn.Parameter(torch.zeros(2))
    opt = SGLD([p], lr=1e-3, num_data=10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, polynomial_decay(b=100.0, gamma=0.55))
    for _ in range(50):
        p.grad = torch.zeros_like(p)
        opt.step()
        sched.step()
    a = 1e-3 * 100.0**0.55
    assert opt.param_groups[0]["lr"] == pytest.approx(a * (100.0 + 50) ** -0.55)
    with pytest.raises(ValueError, match=r"gamma must be > 0\.5"):
        polynomial_decay(10.0, 0.5)


def test_lambda_lr_schedule_and_per_group_temperature():
    a, b = torch.nn.Parameter(torch.zeros(10_000)), torch.nn.Parameter(torch.zeros(10_000))
    opt = SGLD([{"params": [a]}, {"params": [b], "temperature": 0.0}], lr=1e-2, num_data=1, temperature=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: (1 + t) ** -0.55)
    for _ in range(2):
        a.grad, b.grad = torch.zeros_like(a), torch.zeros_like(b)
        opt.step()
        sched.step()
    assert float(b.detach().abs().max()) == 0.0  # T=0 group: no noise
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-2 * 3**-0.55)


def test_divergence_raises_instead_of_storing_nan():
    p = torch.nn.Parameter(torch.ones(3))
    opt = SGLD([p], lr=1.0, num_data=10_000, temperature=0.0)
    steps = 0
    with pytest.raises(FloatingPointError, match="diverged"):  # noqa: PT012 - it must diverge within the loop
        for steps in range(1, 201):  # noqa: B007
            p.grad = 1e3 * p.detach().clone() ** 3
            opt.step()
    assert steps < 200


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda p: SGLD(p, lr=0.0, num_data=10), "lr must be > 0"),
        (lambda p: SGLD(p, lr=float("nan"), num_data=10), "lr must be a finite"),
        (lambda p: SGLD(p, lr=1e-3, num_data=0), "num_data must be >= 1"),
        (lambda p: SGLD(p, lr=1e-3, num_data=10, temperature=-1), "temperature must be >= 0"),
        (lambda p: SGLD(p, lr=1e-3, num_data=10, prior_std=0), "prior_std must be > 0"),
        (lambda p: SGHMC(p, lr=1e-3, num_data=10, friction=0), "friction must be > 0"),
        (lambda p: SGHMC(p, lr=1e-3, num_data=10, friction=1.5), "friction must be <= 1"),
        (lambda p: pSGLD(p, lr=1e-3, num_data=10, alpha=1.1), "alpha must be <= 1"),
        (lambda p: pSGLD(p, lr=1e-3, num_data=10, eps=0), "eps must be > 0"),
    ],
)
def test_bad_hyper_parameters_name_the_argument(factory, match):
    with pytest.raises(ValueError, match=match):
        factory([torch.nn.Parameter(torch.zeros(2))])
