"""The HSJA engine: one batched HopSkipJump loop that every subspace attack reuses.

Paper: Chen, Jordan & Wainwright, "HopSkipJumpAttack: A Query-Efficient Decision-Based Attack", IEEE
S&P 2020 (arXiv 1904.02144); official code Jianbo-Lab/HSJA. QEBA (Li et al., CVPR 2020),
NonLinear-BA (AISTATS 2021) and PSBA (ICML 2021) keep this loop and change only the probe sampler
(:mod:`.samplers`). What we follow (spec boundary.md, "Engine"):

1. Init: the original if already adversarial (distance 0); else uniform noise until adversarial
   (``init_tries`` per image; targeted attacks need ``starting_points``), then a binary search
   towards the original to tolerance 0.001.
2. Per iteration ``t``: ``delta = 0.1 (hi - lo)`` at ``t = 1``, else ``sqrt(d) theta dist`` (L2) or
   ``d theta dist`` (Linf) with ``dist`` the current iterate's distance (Foolbox's choice). ``B_t``
   probes; the direction actually sent is recomputed from the clipped probe; the estimator is
   ``mean_b (s_b - mean s) u_b`` (``mean s * mean u`` when all signs agree), normalised (Linf: sign).
3. Geometric step ``eps = dist / sqrt(t)``, halved until adversarial (at most ``max_halvings``, then
   the step is rejected), then a binary search back to the boundary (L2: blend towards the original
   to tolerance ``theta``; Linf: radius search with clipping, tolerance ``min(theta dist, theta)``).

Presets: ``"hsja"`` (theta = gamma / (d sqrt d) for L2, gamma / d^2 for Linf; ``B_t = 100 sqrt t`` capped
at 1e4) and ``"official"`` (theta = 0.01 / sqrt d or 0.01 / d; ``B_t = 100``), the setting of all three
AI-secure codes.

Accounting: every query goes through a :class:`~bastion.core.BlackBox` with ``sample_ids``; images run
in lockstep but each is charged only for its own queries and stops at its own hard ``budget``. An
iteration is planned to fit what is left (the probe count shrinks; the step and search stop when the
budget does), so the budget is never exceeded.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ...core.blackbox import BlackBox
from ...core.checks import check_choice, check_float, check_image_batch, check_int, check_labels
from ...core.progress import progress
from .samplers import FullSampler

__all__ = ["HSJA", "AttackResult", "DecisionAttack", "auto_batch_size"]


@dataclass
class AttackResult:
    """Per-image outcome of a decision-based attack.

    ``history[i]`` lists ``(queries, distance, mse)`` after init and after every iteration of image
    ``i``: the best (smallest) distance so far, in the attack's norm, and its MSE. ``reason[i]`` says
    why an image failed ("" if it did not).
    """

    adversarial: torch.Tensor
    success: torch.Tensor
    l2: torch.Tensor
    linf: torch.Tensor
    mse: torch.Tensor
    queries: torch.Tensor
    history: list[list[tuple[int, float, float]]] = field(repr=False)
    reason: list[str] = field(default_factory=list)

    def mse_at(self, queries: int) -> torch.Tensor:
        """Per-image MSE of the best (in the attack's norm) adversarial within ``queries`` queries; inf if none."""
        out = torch.full((len(self.history),), float("inf"))
        for i, hist in enumerate(self.history):
            vals = [m for q, _, m in hist if q <= queries]  # the history holds the best so far: take the last
            if vals:
                out[i] = vals[-1]
        return out

    def median_mse_at(self, queries: int) -> float:
        return float(self.mse_at(queries).median())


def auto_batch_size(d: int) -> int:
    """A forward chunk for inputs of ``d`` values: ``16384 / d`` rounded down to a power of two, in [1, 64].

    >>> auto_batch_size(784), auto_batch_size(3 * 32 * 32), auto_batch_size(3 * 224 * 224)
    (16, 4, 1)
    """
    return int(min(64, max(1, 2 ** math.floor(math.log2(max(1.0, 16384 / d))))))


_RESOLUTION = 1e-7  # relative tolerance floor of the boundary bisections (float32 images)


def _dist(a: torch.Tensor, b: torch.Tensor, norm: str) -> torch.Tensor:
    diff = (a - b).flatten(1)
    return diff.norm(dim=1) if norm == "l2" else diff.abs().amax(dim=1)


class DecisionAttack:
    """What every attack on this engine shares: the call signature, input checks and the oracle set-up.

    A subclass names its per-call state machine in ``_run_class`` (a subclass of the engine's run).
    """

    _run_class: type

    def __call__(
        self,
        model,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        budget: int,
        targets: torch.Tensor | None = None,
        starting_points: torch.Tensor | None = None,
        preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
        bounds: tuple[float, float] = (0.0, 1.0),
        quiet: bool = True,
    ) -> AttackResult:
        """Attack ``x`` (true labels ``y``); targeted when ``targets`` is given (needs ``starting_points``).

        ``model`` is an ``nn.Module`` / callable returning logits (wrapped in a label-only
        :class:`BlackBox` with ``preprocess``) or a label-oracle ``BlackBox`` (used as it is). Each
        image gets at most ``budget`` queries, init included.
        """
        args = prepare(self, model, x, y, budget, targets, starting_points, preprocess, bounds)
        return self._run_class(self, *args, bounds, quiet).run()


class HSJA(DecisionAttack):
    """HopSkipJump with a pluggable probe sampler.

    Parameters
    ----------
    sampler:
        Probe directions (:mod:`.samplers`); ``None`` is HSJA's full space.
    norm:
        ``"l2"`` or ``"linf"``.
    preset:
        ``"hsja"`` or ``"official"`` (see the module docstring).
    gamma:
        The ``hsja`` preset's theta scale.
    max_probes:
        Cap on probes per iteration.
    init_tries:
        Uniform-noise draws per image for the untargeted start.
    max_halvings:
        Geometric step-size halvings before a step is rejected.
    seed:
        Seeds all randomness of the attack.
    batch_size:
        Chunk size of the model's forward passes; ``None`` picks ``16384 / d`` rounded down to a
        power of two in [1, 64]. On one CPU thread small chunks were faster per image here: the
        zoo CNN (d = 784) took 150-170 ms per 1,000 rows at 16-32 and 265 ms at 256;
        EfficientNet-Lite0 (d = 150,528) ran 53 images/s at 1 and 18 at 32.

    Examples
    --------
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    >>> x = torch.rand(2, 1, 4, 4)
    >>> y = net(x).argmax(1)
    >>> result = HSJA(seed=0)(net, x, y, budget=200)
    >>> bool((result.queries <= 200).all())
    True
    """

    def __init__(
        self,
        *,
        sampler: Callable[[int, tuple[int, ...], torch.Generator], torch.Tensor] | None = None,
        norm: str = "l2",
        preset: str = "hsja",
        gamma: float = 1.0,
        max_probes: int = 10_000,
        init_tries: int = 100,
        max_halvings: int = 25,
        seed: int = 0,
        batch_size: int | None = None,
    ) -> None:
        self.norm = check_choice(norm, "norm", ("l2", "linf"))
        self.sampler = sampler if sampler is not None else FullSampler(norm=self.norm)
        if not callable(self.sampler):
            raise TypeError(f"sampler must be callable, got {type(self.sampler).__name__}")
        self.preset = check_choice(preset, "preset", ("hsja", "official"))
        self.gamma = check_float(gamma, "gamma", minimum=0, min_inclusive=False)
        self.max_probes = check_int(max_probes, "max_probes", minimum=1)
        self.init_tries = check_int(init_tries, "init_tries", minimum=1)
        self.max_halvings = check_int(max_halvings, "max_halvings", minimum=0)
        self.seed = check_int(seed, "seed", minimum=0)
        self.batch_size = None if batch_size is None else check_int(batch_size, "batch_size", minimum=1)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(sampler={self.sampler!r}, norm={self.norm!r}, preset={self.preset!r}, "
            f"gamma={self.gamma}, max_probes={self.max_probes}, init_tries={self.init_tries}, "
            f"max_halvings={self.max_halvings}, seed={self.seed})"
        )

    # ------------------------------------------------------------------ schedule
    def theta(self, d: int) -> float:
        if self.preset == "hsja":
            return self.gamma / (d * math.sqrt(d)) if self.norm == "l2" else self.gamma / d**2
        return 0.01 / math.sqrt(d) if self.norm == "l2" else 0.01 / d

    def num_probes(self, t: int) -> int:
        if self.preset == "hsja":
            return min(int(100 * math.sqrt(t)), self.max_probes)
        return min(100, self.max_probes)


def prepare(attack, model, x, y, budget, targets, starting_points, preprocess, bounds):
    """Validate a decision attack's inputs; wrap ``model`` in a label-only, masking :class:`BlackBox`.

    Returns ``(box, x, y, targets, starting_points, budget)``; shared by every attack on this engine.
    """
    budget = check_int(budget, "budget", minimum=1)
    x = check_image_batch(x, "x", bounds=bounds)
    n = x.shape[0]
    y = check_labels(y, "y", n=n)
    if targets is not None:
        targets = check_labels(targets, "targets", n=n)
        if starting_points is None:
            raise ValueError("starting_points are required for a targeted attack (images classified as the targets)")
    if starting_points is not None:
        starting_points = check_image_batch(starting_points, "starting_points", shape=x.shape[1:], bounds=bounds)
        if starting_points.shape[0] != n:
            raise ValueError(f"starting_points must have one image per input ({n}), got {starting_points.shape[0]}")
    if isinstance(model, BlackBox):
        if model.oracle != "label":
            raise ValueError(f"a BlackBox given as model must be a label oracle, got oracle={model.oracle!r}")
        box = model
    else:
        chunk = attack.batch_size or auto_batch_size(x[0].numel())
        box = BlackBox(model, oracle="label", bounds=bounds, preprocess=preprocess, input_shape=x.shape[1:],
                       budget=budget, on_exhausted="mask", batch_size=chunk)  # fmt: skip
    return box, x, y, targets, starting_points, budget


class _Run:
    """The state of one call: per-image iterates, distances, counters."""

    def __init__(self, attack: HSJA, box: BlackBox, x, y, targets, starts, budget, bounds, quiet):
        self.a, self.box, self.x0, self.y, self.targets, self.starts = attack, box, x, y, targets, starts
        self.budget, self.lo, self.hi, self.quiet = budget, bounds[0], bounds[1], quiet
        self.n, self.shape = x.shape[0], tuple(x.shape[1:])
        self.d = math.prod(self.shape)
        self.theta = attack.theta(self.d)
        # one stream per image: an image's probes do not depend on which other images share the batch
        self.gens = [torch.Generator().manual_seed(attack.seed * 1_000_003 + i) for i in range(self.n)]
        self.start_counts = self._counts()
        self.x_adv = x.clone()
        self.found = torch.zeros(self.n, dtype=torch.bool)
        self.active = torch.zeros(self.n, dtype=torch.bool)
        self.reason = [""] * self.n
        self.history: list[list[tuple[int, float, float]]] = [[] for _ in range(self.n)]
        self.t = torch.zeros(self.n, dtype=torch.int64)
        self.best = x.clone()
        self.best_dist = torch.full((self.n,), float("inf"))

    # ------------------------------------------------------------------ helpers
    def _counts(self) -> torch.Tensor:
        q = self.box.queries
        out = torch.zeros(self.n, dtype=torch.int64)
        out[: min(len(q), self.n)] = q[: self.n]
        return out

    def used(self) -> torch.Tensor:
        return self._counts() - self.start_counts

    def remaining(self) -> torch.Tensor:
        return (self.budget - self.used()).clamp_min(0)

    def is_adv(self, rows: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(adversarial, answered) for rows charged to images ``ids``; unanswered rows count as not adversarial."""
        if len(ids) == 0:
            empty = torch.zeros(0, dtype=torch.bool)
            return empty, empty
        res = self.box.query(rows.clamp(self.lo, self.hi), ids)
        labels = res.outputs
        adv = labels != self.y[ids] if self.targets is None else labels == self.targets[ids]
        return adv & res.answered, res.answered

    def dist(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        ids = torch.arange(self.n) if ids is None else ids
        return _dist(self.x_adv[ids], self.x0[ids], self.a.norm)

    def record(self, ids: torch.Tensor) -> None:
        used = self.used()
        diff = (self.x_adv[ids] - self.x0[ids]).flatten(1)
        dist = diff.norm(dim=1) if self.a.norm == "l2" else diff.abs().amax(1)
        for k, i in enumerate(ids.tolist()):
            if dist[k] < self.best_dist[i]:  # keep the best adversarial iterate
                self.best_dist[i] = dist[k]
                self.best[i] = self.x_adv[i]
            best = float(self.best_dist[i])
            best_mse = float(((self.best[i] - self.x0[i]) ** 2).mean())
            self.history[i].append((int(used[i]), best, best_mse))

    # ------------------------------------------------------------------ phases
    def init(self) -> None:
        all_ids = torch.arange(self.n)
        already, _ = self.is_adv(self.x0, all_ids)
        c = self.box.num_classes
        for name, lab in (("y", self.y), ("targets", self.targets)):
            if c is not None and lab is not None and int(lab.max()) >= c:
                raise ValueError(
                    f"{name} must lie in [0, {c - 1}] (the model has {c} classes), got max {int(lab.max())}"
                )
        self.found |= already
        for i in already.nonzero().flatten().tolist():
            self.reason[i] = ""
        need = ~already
        if self.targets is not None or self.starts is not None:
            ids = need.nonzero().flatten()
            ok, answered = self.is_adv(self.starts[ids], ids)
            for k, i in enumerate(ids.tolist()):
                if ok[k]:
                    self.x_adv[i] = self.starts[i]
                    self.found[i] = True
                else:
                    what = "the target" if self.targets is not None else "adversarial"
                    self.reason[i] = f"starting point is not {what}" if answered[k] else "budget exhausted at init"
        else:
            for _ in range(self.a.init_tries):
                ids = (need & ~self.found & (self.remaining() > 0)).nonzero().flatten()
                if len(ids) == 0:
                    break
                noise = torch.stack([torch.rand(self.shape, generator=self.gens[i]) for i in ids.tolist()])
                noise = noise * (self.hi - self.lo) + self.lo
                ok, _ = self.is_adv(noise, ids)
                self.x_adv[ids[ok]] = noise[ok]
                self.found[ids[ok]] = True
            # noise is often classified as one class (an '8' for MNIST CNNs): fall back to the other
            # inputs of the batch, as Foolbox's dataset attack does; each try is one counted query
            order = torch.arange(self.n)  # other inputs in batch order
            for j in order.tolist():
                ids = (need & ~self.found & (self.remaining() > 0)).nonzero().flatten()
                ids = ids[ids != j]
                if len(ids) == 0:
                    continue
                ok, _ = self.is_adv(self.x0[j].expand(len(ids), *self.shape), ids)
                self.x_adv[ids[ok]] = self.x0[j]
                self.found[ids[ok]] = True
            for i in (need & ~self.found).nonzero().flatten().tolist():
                self.reason[i] = (
                    f"no adversarial starting point in {self.a.init_tries} uniform-noise tries "
                    "nor among the other inputs of the batch; pass starting_points"
                )
        ids = (need & self.found).nonzero().flatten()
        self.blend_search(ids, self.x_adv[ids].clone(), tol=torch.full((len(ids),), 1e-3))
        self.record(torch.arange(self.n)[self.found])
        self.active = need & self.found

    def _bisect(self, ids: torch.Tensor, hi: torch.Tensor, tol: torch.Tensor, point) -> torch.Tensor:
        """Shrink ``[0, hi]`` per image until ``hi - lo <= tol`` keeping ``point(hi)`` adversarial.

        ``point(values, k)`` builds the query points of rows ``k``; an image stops when its budget does.
        The interval is float64 and the tolerance is floored at ``1e-7 * hi``, about float32's
        resolution: the ``hsja`` preset's tolerance at ImageNet size (1.7e-8) is finer than a float32
        image can express, and such a bisection kept querying the same image until the budget ran out.
        """
        hi = hi.to(torch.float64)
        tol = torch.maximum(tol.to(torch.float64), _RESOLUTION * hi)
        lo = torch.zeros(len(ids), dtype=torch.float64)
        while True:
            mid_all = (lo + hi) / 2
            go = ((hi - lo) > tol) & (mid_all > lo) & (mid_all < hi) & (self.remaining()[ids] > 0)
            if not bool(go.any()):
                return hi
            k = go.nonzero().flatten()
            mid = mid_all[k]
            ok, answered = self.is_adv(point(mid, k), ids[k])
            hi[k] = torch.where(ok, mid, hi[k])
            lo[k] = torch.where(~ok & answered, mid, lo[k])

    def _expand(self, v: torch.Tensor) -> torch.Tensor:
        return v.to(self.x0.dtype).view(-1, *[1] * len(self.shape))

    def blend_search(self, ids: torch.Tensor, cand: torch.Tensor, tol: torch.Tensor) -> None:
        """L2 binary search on (1 - a) x0 + a cand, a in [0, 1]; sets x_adv to the adversarial end."""
        x0 = self.x0[ids]

        def blend(a, k):
            return (1 - self._expand(a)) * x0[k] + self._expand(a) * cand[k]

        hi = self._bisect(ids, torch.ones(len(ids)), tol, blend)
        self.x_adv[ids] = blend(hi, torch.arange(len(ids))).clamp(self.lo, self.hi)

    def radius_search(self, ids: torch.Tensor, cand: torch.Tensor, tol: torch.Tensor) -> None:
        """Linf binary search on the radius r of clip(cand, x0 - r, x0 + r)."""
        x0 = self.x0[ids]

        def project(r, k):
            return torch.maximum(torch.minimum(cand[k], x0[k] + self._expand(r)), x0[k] - self._expand(r))

        hi = self._bisect(ids, _dist(cand, x0, "linf"), tol, project)
        self.x_adv[ids] = project(hi, torch.arange(len(ids))).clamp(self.lo, self.hi)

    def search_rounds(self) -> int:
        return math.ceil(math.log2(1 / max(self.theta, _RESOLUTION))) + 1

    def estimate(
        self, ids: torch.Tensor, delta: torch.Tensor, counts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Monte-Carlo estimate of the boundary normal at ``x_adv[ids]`` from ``counts`` probes each.

        Returns unit directions (Linf: their signs) and the raw estimates' norms (0: no information).
        """
        owner = torch.repeat_interleave(torch.arange(len(ids)), counts)
        u = torch.cat(
            [
                self.a.sampler(int(c), self.shape, self.gens[i])
                for i, c in zip(ids.tolist(), counts.tolist(), strict=True)
            ]
        )
        u = u.to(self.x0.dtype)
        base = self.x_adv[ids][owner]
        if getattr(self.a.sampler, "orient", False):  # PSBA: every probe points towards the original
            towards = (self.x0[ids] - self.x_adv[ids])[owner].flatten(1)
            flip = (u.flatten(1) * towards).sum(1) < 0
            u[flip] = -u[flip]
        dl = delta[owner].view(-1, *[1] * len(self.shape))
        probes = (base + dl * u).clamp(self.lo, self.hi)
        u = (probes - base) / dl  # the direction actually sent
        adv, _ = self.is_adv(probes, ids[owner])
        s = adv.to(u.dtype) * 2 - 1
        mean_s = torch.zeros(len(ids)).index_add_(0, owner, s) / counts
        same = mean_s.abs() == 1
        coef = torch.where(same[owner], mean_s[owner], s - mean_s[owner])
        v = torch.zeros((len(ids), *self.shape)).index_add_(0, owner, coef.view(-1, *[1] * len(self.shape)) * u)
        v = v / counts.view(-1, *[1] * len(self.shape))
        norms = v.flatten(1).norm(dim=1)
        v = v / (norms.view(-1, *[1] * len(self.shape)) + 1e-12)
        return (v.sign() if self.a.norm == "linf" else v), norms

    def iterate(self) -> None:
        ids = (self.active & (self.remaining() > self.search_rounds() + 1)).nonzero().flatten()
        for i in (self.active & (self.remaining() <= self.search_rounds() + 1)).nonzero().flatten().tolist():
            self.active[i] = False
        if len(ids) == 0:
            return
        self.t[ids] += 1
        t = self.t[ids]
        dist = self.dist(ids)
        scale = math.sqrt(self.d) if self.a.norm == "l2" else self.d
        delta = torch.where(t == 1, torch.full_like(dist, 0.1 * (self.hi - self.lo)), scale * self.theta * dist)
        # probes: B_t, shrunk to leave room for one step query and a full boundary search
        room = self.remaining()[ids] - self.search_rounds() - 1
        counts = torch.minimum(torch.tensor([self.a.num_probes(int(v)) for v in t]), room).clamp_min(1)
        v, norms = self.estimate(ids, delta, counts)
        moving = norms > 0  # a zero estimate keeps x_t
        # geometric step: eps = dist / sqrt(t), halved until adversarial
        eps = dist / t.to(dist.dtype).sqrt()
        accepted = torch.zeros(len(ids), dtype=torch.bool)
        cand = self.x_adv[ids].clone()
        for _ in range(self.a.max_halvings + 1):
            k = (moving & ~accepted & (self.remaining()[ids] > 0)).nonzero().flatten()
            if len(k) == 0:
                break
            trial = (self.x_adv[ids[k]] + eps[k].view(-1, *[1] * len(self.shape)) * v[k]).clamp(self.lo, self.hi)
            ok, _ = self.is_adv(trial, ids[k])
            cand[k[ok]] = trial[ok]
            accepted[k[ok]] = True
            eps[k[~ok]] /= 2
        k = accepted.nonzero().flatten()
        if len(k):
            if self.a.norm == "l2":
                self.blend_search(ids[k], cand[k], tol=torch.full((len(k),), self.theta))
            else:
                tol = torch.minimum(dist[k] * self.theta, torch.full_like(dist[k], self.theta))
                self.radius_search(ids[k], cand[k], tol=tol)
        self.record(ids)

    def run(self) -> AttackResult:
        self.init()
        for _ in progress(itertools.count(), desc="HSJA iterations", quiet=self.quiet):
            if not bool(self.active.any()):
                break
            self.iterate()
        best = self.best  # every iterate is adversarial by construction; this is the closest one
        diff = (best - self.x0).flatten(1)
        l2, linf = diff.norm(dim=1), diff.abs().amax(1)
        inf = torch.full((self.n,), float("inf"))
        return AttackResult(
            adversarial=best,
            success=self.found.clone(),
            l2=torch.where(self.found, l2, inf),
            linf=torch.where(self.found, linf, inf),
            mse=torch.where(self.found, (diff**2).mean(1), inf),
            queries=self.used(),
            history=self.history,
            reason=self.reason,
        )


HSJA._run_class = _Run
