"""SG-MCMC samplers as drop-in ``torch.optim.Optimizer``s: SGLD, pSGLD and SGHMC.

Papers: Welling & Teh, "Bayesian Learning via Stochastic Gradient Langevin Dynamics", ICML 2011;
Li, Chen, Carlson & Carin, "Preconditioned SGLD for Deep Neural Networks", AAAI 2016; Chen, Fox &
Guestrin, "Stochastic Gradient Hamiltonian Monte Carlo", ICML 2014. Used by Wu et al.,
"Characterizing Membership Privacy in Stochastic Gradient Langevin Dynamics", AAAI 2020.

Conventions (spec sgld.md, section 2). The loss given to ``backward()`` is the minibatch **mean**
negative log-likelihood ``g``; ``num_data`` ``N`` is the size of the set the chain is conditioned on;
the prior is ``N(0, prior_std**2 I)``. The potential's gradient is
``grad U = N * g + theta / prior_std**2`` (the prior term is not multiplied by ``N``), and the
chain targets the tempered posterior ``p(theta | D) ** (1 / temperature)``.

* SGLD:  ``theta <- theta - (lr/2) grad U + sqrt(lr T) xi``.  At ``T = 0`` it is
  ``torch.optim.SGD(lr=lr*N/2, weight_decay=1/(N prior_std**2))``.
* pSGLD: ``V <- alpha V + (1-alpha) g*g``, ``G = 1/(eps + sqrt V)``,
  ``theta <- theta - (lr/2) G grad U + sqrt(lr T G) xi`` (the Gamma correction term is dropped, as
  in the paper's experiments; ``alpha = 1`` freezes ``V``).
* SGHMC: ``v <- (1-friction) v - lr grad U + N(0, 2 friction lr T)``, ``theta <- theta + v``. At
  ``T = 0`` it is ``SGD(lr=lr*N, momentum=1-friction, weight_decay=1/(N prior_std**2))``.

We implement these textbook samplers, not the authors' BayesNet variant (batch-summed loss and a
per-tensor noise scale, which amounts to a shape-dependent temperature). Noise is drawn from the
optimizer's own generator (seeded by ``seed``), saved and restored by ``state_dict``. A step that
produces a non-finite parameter raises ``FloatingPointError`` (``lr * N * curvature`` must stay below
about 2) instead of silently storing NaN samples.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch.optim import Optimizer

from ..core.checks import check_float, check_int

__all__ = ["SGHMC", "SGLD", "pSGLD", "polynomial_decay"]


def polynomial_decay(b: float, gamma: float = 0.55):
    """Multiplier for ``LambdaLR`` giving Welling & Teh's ``lr_t = a (b + t) ** -gamma``.

    With ``LambdaLR(opt, polynomial_decay(b, gamma))`` the step size is ``lr0 * (b / (b + t)) ** gamma``,
    i.e. ``a = lr0 * b ** gamma``. ``gamma`` in (0.5, 1] satisfies the Robbins-Monro conditions.

    >>> f = polynomial_decay(10.0, 0.55)
    >>> f(0), round(f(10), 4)
    (1.0, 0.683)
    """
    b = check_float(b, "b", minimum=0, min_inclusive=False)
    gamma = check_float(gamma, "gamma", minimum=0.5, maximum=1.0, min_inclusive=False)
    return lambda t: (b / (b + t)) ** gamma


def _check_common(lr: float, num_data: int, prior_std: float, temperature: float) -> None:
    check_float(lr, "lr", minimum=0, min_inclusive=False)
    check_int(num_data, "num_data", minimum=1)
    check_float(prior_std, "prior_std", minimum=0, min_inclusive=False)
    check_float(temperature, "temperature", minimum=0)


class _SGMCMC(Optimizer):
    """Shared mechanics: validated groups, an own generator per device, finite checks."""

    def __init__(self, params: Iterable, defaults: dict[str, Any], seed: int, check_finite: bool) -> None:
        _check_common(defaults["lr"], defaults["num_data"], defaults["prior_std"], defaults["temperature"])
        super().__init__(params, defaults)
        self._seed = check_int(seed, "seed", minimum=0)
        self._generators: dict[torch.device, torch.Generator] = {}
        self.check_finite = bool(check_finite)
        self._steps = 0

    def _generator(self, device: torch.device) -> torch.Generator:
        gen = self._generators.get(device)
        if gen is None:
            gen = torch.Generator(device=device)
            gen.manual_seed(self._seed + 7919 * len(self._generators))
            self._generators[device] = gen
        return gen

    def _noise(self, p: torch.Tensor) -> torch.Tensor:
        return torch.randn(p.shape, generator=self._generator(p.device), device=p.device, dtype=p.dtype)

    def _noise_list(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        """Standard normal noise shaped like ``params``: one draw for all when they share device and dtype."""
        if len({(p.device, p.dtype) for p in params}) > 1:
            return [self._noise(p) for p in params]
        flat = torch.randn(
            sum(p.numel() for p in params), generator=self._generator(params[0].device),
            device=params[0].device, dtype=params[0].dtype,
        )  # fmt: skip
        return [chunk.view_as(p) for chunk, p in zip(flat.split([p.numel() for p in params]), params, strict=True)]

    def _validate_group(self, group: dict[str, Any]) -> None:
        _check_common(group["lr"], group["num_data"], group["prior_std"], group["temperature"])

    @torch.no_grad()
    def step(self, closure=None):
        """One sampler step on every parameter with a gradient; returns ``closure()``'s loss if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        touched = []
        for group in self.param_groups:
            self._validate_group(group)
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                self._update(group, params)
                touched.extend(params)
        self._finish(touched)
        return loss

    def _update(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        raise NotImplementedError

    def _finish(self, params: list[torch.Tensor]) -> None:
        self._steps += 1
        # one fused reduction: a norm is NaN / inf as soon as any entry is
        if self.check_finite and params and not bool(torch.isfinite(torch.stack(torch._foreach_norm(params))).all()):
            raise FloatingPointError(
                f"{type(self).__name__} diverged at step {self._steps}: non-finite parameters. "
                "Lower lr (lr * num_data * curvature must stay below about 2)."
            )

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["sgmcmc"] = {
            "seed": self._seed,
            "steps": self._steps,
            "generators": {str(d): g.get_state() for d, g in self._generators.items()},
        }
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        extra = state_dict.pop("sgmcmc", None)
        super().load_state_dict(state_dict)
        if extra is not None:
            self._seed = int(extra["seed"])
            self._steps = int(extra["steps"])
            self._generators = {}
            for dev, gstate in extra["generators"].items():
                gen = torch.Generator(device=torch.device(dev))
                gen.set_state(gstate)
                self._generators[torch.device(dev)] = gen

    def __repr__(self) -> str:
        g = self.param_groups[0]
        keys = [k for k in self.defaults if k != "differentiable"]
        args = ", ".join(f"{k}={g[k]!r}" for k in keys)
        return f"{type(self).__name__}({args}, seed={self._seed})"


class SGLD(_SGMCMC):
    """Stochastic gradient Langevin dynamics (Welling & Teh 2011).

    Parameters
    ----------
    params:
        Parameters or parameter groups (each group may set its own ``lr`` and ``temperature``).
    lr:
        Step size ``epsilon`` (a ``LambdaLR`` schedule multiplies it).
    num_data:
        ``N``, the number of examples the chain is conditioned on.
    prior_std:
        Standard deviation of the Gaussian prior.
    temperature:
        ``T``; 1 samples the posterior, 0 is SGD, ``T < 1`` is a cold posterior.
    seed:
        Seeds the optimizer's own noise generator.
    check_finite:
        Raise ``FloatingPointError`` as soon as a parameter becomes non-finite.

    Examples
    --------
    >>> w = torch.nn.Parameter(torch.zeros(3))
    >>> opt = SGLD([w], lr=1e-3, num_data=100, temperature=1.0, seed=0)
    >>> loss = ((w - 1) ** 2).mean(); loss.backward(); opt.step()
    >>> opt
    SGLD(lr=0.001, num_data=100, prior_std=1.0, temperature=1.0, seed=0)
    """

    def __init__(
        self,
        params: Iterable,
        lr: float,
        num_data: int,
        *,
        prior_std: float = 1.0,
        temperature: float = 1.0,
        seed: int = 0,
        check_finite: bool = True,
    ) -> None:
        defaults = {"lr": lr, "num_data": num_data, "prior_std": prior_std, "temperature": temperature}
        super().__init__(params, defaults, seed, check_finite)

    def _update(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        lr, n, var, temp = group["lr"], group["num_data"], group["prior_std"] ** 2, group["temperature"]
        # theta <- theta - (lr/2) (N g + theta / var), as two fused multi-tensor updates
        torch._foreach_mul_(params, 1.0 - lr / (2 * var))
        torch._foreach_add_(params, [p.grad for p in params], alpha=-lr * n / 2)
        if temp > 0:
            torch._foreach_add_(params, self._noise_list(params), alpha=math.sqrt(lr * temp))


class pSGLD(_SGMCMC):  # the paper's spelling
    """Preconditioned SGLD with an RMSprop preconditioner (Li et al. 2016), Gamma term dropped.

    Parameters are those of :class:`SGLD` plus ``alpha`` (RMSprop decay; 1 freezes ``V``) and
    ``eps`` (``lambda`` in the paper, the preconditioner's damping; the spec's reproduction uses
    1e-3, the paper's default is 1e-5).
    """

    def __init__(
        self,
        params: Iterable,
        lr: float,
        num_data: int,
        *,
        prior_std: float = 1.0,
        temperature: float = 1.0,
        alpha: float = 0.99,
        eps: float = 1e-5,
        seed: int = 0,
        check_finite: bool = True,
    ) -> None:
        check_float(alpha, "alpha", minimum=0, maximum=1)
        check_float(eps, "eps", minimum=0, min_inclusive=False)
        defaults = {
            "lr": lr, "num_data": num_data, "prior_std": prior_std, "temperature": temperature,
            "alpha": alpha, "eps": eps,
        }  # fmt: skip
        super().__init__(params, defaults, seed, check_finite)

    def _validate_group(self, group: dict[str, Any]) -> None:
        super()._validate_group(group)
        check_float(group["alpha"], "alpha", minimum=0, maximum=1)
        check_float(group["eps"], "eps", minimum=0, min_inclusive=False)

    def _update(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        lr, n, var, temp = group["lr"], group["num_data"], group["prior_std"] ** 2, group["temperature"]
        alpha, eps = group["alpha"], group["eps"]
        for p in params:
            state = self.state[p]
            if "square_avg" not in state:
                state["square_avg"] = torch.zeros_like(p)
            v = state["square_avg"]
            if alpha < 1:
                v.mul_(alpha).addcmul_(p.grad, p.grad, value=1 - alpha)
            precond = v.sqrt().add_(eps).reciprocal_()
            grad_u = p.grad.mul(n).add_(p, alpha=1.0 / var)
            p.addcmul_(precond, grad_u, value=-lr / 2)
            if temp > 0:
                p.addcmul_(precond.mul_(lr * temp).sqrt_(), self._noise(p))


class SGHMC(_SGMCMC):
    """Stochastic gradient Hamiltonian Monte Carlo (Chen et al. 2014), with the noise estimate B = 0.

    ``lr`` is ``eta`` and ``friction`` is ``alpha`` in the paper's SGD-with-momentum form: the
    momentum of plain SGD is ``1 - friction``. Do not add torch momentum on top.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float,
        num_data: int,
        *,
        prior_std: float = 1.0,
        temperature: float = 1.0,
        friction: float = 0.1,
        seed: int = 0,
        check_finite: bool = True,
    ) -> None:
        check_float(friction, "friction", minimum=0, maximum=1, min_inclusive=False)
        defaults = {
            "lr": lr, "num_data": num_data, "prior_std": prior_std, "temperature": temperature,
            "friction": friction,
        }  # fmt: skip
        super().__init__(params, defaults, seed, check_finite)

    def _validate_group(self, group: dict[str, Any]) -> None:
        super()._validate_group(group)
        check_float(group["friction"], "friction", minimum=0, maximum=1, min_inclusive=False)

    def _update(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        lr, n, var, temp = group["lr"], group["num_data"], group["prior_std"] ** 2, group["temperature"]
        fr = group["friction"]
        noise_std = math.sqrt(2 * fr * lr * temp)
        for p in params:
            state = self.state[p]
            if "momentum" not in state:
                state["momentum"] = torch.zeros_like(p)
            v = state["momentum"]
            grad_u = p.grad.mul(n).add_(p, alpha=1.0 / var)
            v.mul_(1 - fr).add_(grad_u, alpha=-lr)
            if noise_std > 0:
                v.add_(self._noise(p), alpha=noise_std)
            p.add_(v)
