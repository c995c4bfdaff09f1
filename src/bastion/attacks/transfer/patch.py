"""Transferable adversarial patches on face recognition (TAP) and their evaluation: thresholds, ASR, white-black gap.

Followed (spec ``specs/transfer.md``):

- **A "Threat model"** [V]: embedder ``f``, similarity ``J`` = cosine (dlib: L2, same person below
  ``tau``). Impersonation: attacker ``x^a``, victim ``x^t``, success when ``J(x*, x^t) > tau``; dodging:
  enrolled ``x^e`` of the attacker, success when ``J(x*, x^e) < tau`` (L2: reversed). ``x* = (1 - M) x^a
  + M p`` with a binary mask from 5 landmarks (:func:`faces.make_mask`). Loss ``-mean cos(f(x*),
  f(x^t))`` (dodge ``+cos`` to ``f(x^e)``), reference features computed once per substitute, detached
  (:func:`core.cosine_loss`).
- **A "TAP"** [V: AT3D ``attacks/base.py``, ``MIM_attack.py``]: :class:`TransferPatchAttack` drives
  :class:`core.TransferAttack` under the mask: ``p0`` = the victim's region (``init="victim"``, AT3D's
  start), ball around ``p0``, ``p <- clip01(clip_[p0 +- eps](p - alpha sign g))`` (``norm="linf"``) or
  AT3D's released l2 step (``"l2_rms"``); defaults eps 40/255, 400 steps, mu 1, ``alpha = 1.5 eps /
  steps``, stop after 20 non-improving steps. ``method``: ``"mim"`` (MI only), ``"dim"`` (+ DI,
  probability 0.5), ``"tidim"`` (+ TI, kernel length 5, nsig 3: the spec's 3-5 px at 32 px).
- **A "Metric"** [V]: per target, ASR = mean ``1[J > tau]`` (dodge ``<``; L2 reversed), also against a
  held-out view of the victim; mean similarity; white-black gap (:func:`white_black_gap`). ``tau`` at
  FAR 1e-3 = the 99.9th percentile of impostor scores, recorded with its rule and pair count
  (:func:`threshold_at_far`); RobFR's best-accuracy threshold as an option (:func:`best_accuracy_threshold`).

Reconstructions / our choices [R]:

- Quantile: linear interpolation between order statistics (NumPy's default, ``torch.quantile``), in
  float64. Decisions are strict: same person iff ``score > tau`` (similarity) or ``score < tau``
  (distance), so the empirical FAR at ``tau`` is at most ``far`` up to one pair.
- Best accuracy: every cut point is tried -- ``tau`` equal to each distinct score, and one below (similarity) /
  above (distance) all scores -- with the strict decision above; counts by binary search on the sorted
  scores (exact, ``O(n log n)``). Ties between cut points go to the lowest (similarity) / highest (distance)
  ``tau``. RobFR sweeps a grid of candidate thresholds; over all cut points the maximum accuracy is the
  same or higher.
- ``init="noise"``: uniform noise in the mask, from a generator seeded with ``seed``. ``mask_kind``: the
  mask is drawn with :func:`faces.make_mask` from landmarks passed to :meth:`TransferPatchAttack.run` or,
  when none are, from MTCNN O-Net landmarks of the attacker's image.
- ``white_black_gap`` = the white-box figure minus the mean black-box one (ASR or cosine; the spec's gaps are on
  cosine: TAP white 0.74, black 0.20, "gap 0.54").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...core.checks import check_choice, check_float, check_image_batch, check_int, check_tensor
from .core import NORMS, TransferAttack, check_mask, gaussian_kernel
from .faces import MASK_KINDS, make_mask

__all__ = [
    "INITS",
    "METHODS",
    "PATCH_GOALS",
    "SIMILARITIES",
    "PatchEvaluation",
    "PatchResult",
    "Threshold",
    "TransferPatchAttack",
    "best_accuracy_threshold",
    "evaluate_patch_attack",
    "pair_scores",
    "threshold_at_far",
    "white_black_gap",
]

PATCH_GOALS = ("impersonate", "dodge")
METHODS = ("mim", "dim", "tidim")
INITS = ("victim", "attacker", "noise")
SIMILARITIES = ("cosine", "l2")
TI_LENGTH, TI_NSIG = 5, 3.0  # TI kernel for 32-px faces (spec: 3-5 px at 32 px)
DI_PROB = 0.5


# --------------------------------------------------------------------------------------------- thresholds
@dataclass(frozen=True)
class Threshold:
    """A decision threshold with its provenance.

    ``value``: ``tau``. ``higher_is_same``: same person iff ``score > tau`` (similarity) or, when
    ``False``, ``score < tau`` (distance). ``far``: the target false-accept rate (``None`` for rules that
    do not fix one). ``n_pairs``: the scores it was computed from. ``rule``: how. ``accuracy``: the
    accuracy reached (best-accuracy rule only).
    """

    value: float
    far: float | None
    n_pairs: int
    rule: str
    higher_is_same: bool = True
    accuracy: float | None = None

    def accepts(self, scores: torch.Tensor) -> torch.Tensor:
        """Bool tensor: which ``scores`` count as "same person" under this threshold (strict)."""
        return scores > self.value if self.higher_is_same else scores < self.value

    def __float__(self) -> float:
        return float(self.value)


def _scores(scores: Any, name: str) -> torch.Tensor:
    if not isinstance(scores, torch.Tensor):
        try:
            scores = torch.as_tensor(scores, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"{name} must be a tensor or a sequence of numbers, got {type(scores).__name__}") from None
    check_tensor(scores, name, floating=True)
    return scores.detach().reshape(-1).to(device="cpu", dtype=torch.float64)


def threshold_at_far(impostor_scores: Any, far: float = 1e-3, *, higher_is_same: bool = True) -> Threshold:
    """``tau`` at a false-accept rate: the ``1 - far`` quantile of impostor similarities (distances: the ``far`` one).

    Linear interpolation between order statistics (``torch.quantile``'s default), float64, any size.

    >>> t = threshold_at_far(torch.arange(1001.0), far=1e-2)
    >>> t.value, t.n_pairs, t.rule
    (990.0, 1001, 'quantile 0.99 of impostor scores (linear)')
    """
    s = _scores(impostor_scores, "impostor_scores")
    far = check_float(far, "far", minimum=0.0, maximum=1.0, min_inclusive=False, max_inclusive=False)
    if not isinstance(higher_is_same, bool):
        raise TypeError(f"higher_is_same must be a bool, got {type(higher_is_same).__name__}")
    q = 1.0 - far if higher_is_same else far
    value = float(_quantile(s, q))  # = torch.quantile(s, q), without its 16M-element limit
    return Threshold(
        value=value,
        far=far,
        n_pairs=int(s.numel()),
        rule=f"quantile {q:g} of impostor scores (linear)",
        higher_is_same=higher_is_same,
    )


def _quantile(s: torch.Tensor, q: float) -> torch.Tensor:
    v = torch.sort(s).values
    pos = q * (v.numel() - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, v.numel() - 1)
    return v[lo] + (pos - lo) * (v[hi] - v[lo])


def best_accuracy_threshold(genuine: Any, impostor: Any, *, higher_is_same: bool = True) -> Threshold:
    """RobFR's rule: the ``tau`` that maximises accuracy over genuine + impostor pairs, exact over all cut points.

    Decision: same iff ``score > tau`` (``higher_is_same``) or ``score < tau``. Candidates: every distinct
    score and one value beyond all of them (accept everything); ties go to the lowest (highest for
    distances) ``tau``. Vectorised: counts by binary search on the sorted scores.

    >>> t = best_accuracy_threshold([0.9, 0.8, 0.3], [0.1, 0.2, 0.85])
    >>> t.value, round(t.accuracy, 4)
    (0.2, 0.8333)
    """
    g = _scores(genuine, "genuine")
    i = _scores(impostor, "impostor")
    if not isinstance(higher_is_same, bool):
        raise TypeError(f"higher_is_same must be a bool, got {type(higher_is_same).__name__}")
    if not higher_is_same:  # distance: score < tau  <=>  -score > -tau
        g, i = -g, -i
    allv = torch.cat([g, i])
    cands = torch.unique(allv)  # sorted ascending
    below = cands[:1] - (1.0 + cands[:1].abs())  # accept-all cut point
    cands = torch.cat([below, cands])
    gs, is_ = torch.sort(g).values, torch.sort(i).values
    # genuine accepted: g > tau -> n_g - #(g <= tau); impostors rejected: #(i <= tau)
    g_acc = g.numel() - torch.searchsorted(gs, cands, right=True)
    i_rej = torch.searchsorted(is_, cands, right=True)
    acc = (g_acc + i_rej).to(torch.float64) / float(allv.numel())
    k = int(torch.argmax(acc))  # first maximum = lowest tau (in the flipped space for distances)
    tau = float(cands[k])
    if not higher_is_same:
        tau = -tau
    return Threshold(
        value=tau,
        far=None,
        n_pairs=int(allv.numel()),
        rule=f"best accuracy over all cut points ({g.numel()} genuine + {i.numel()} impostor)",
        higher_is_same=higher_is_same,
        accuracy=float(acc[k]),
    )


# --------------------------------------------------------------------------------------------- attack
@dataclass
class PatchResult:
    """What :meth:`TransferPatchAttack.run` returns.

    ``adversarial``: ``x*`` (N, C, H, W). ``patch``: the optimised pixels, ``x*`` inside the mask and 0
    outside. ``mask``: the bool mask used (broadcastable to ``x*``). ``start``: ``x*``'s start (``p0``
    composed into the attacker). ``losses``: per-step ensemble loss (before each update). ``steps``:
    updates made. ``history``: with ``record=True``, every iterate ``[p0, p1, ...]``.
    """

    adversarial: torch.Tensor
    patch: torch.Tensor
    mask: torch.Tensor
    start: torch.Tensor
    losses: list[float]
    steps: int
    history: list[torch.Tensor] | None = field(default=None, repr=False)


def _check_embedding(emb: Any, n: int, name: str) -> torch.Tensor:
    if not isinstance(emb, torch.Tensor) or emb.dim() != 2 or emb.shape[0] != n:
        shape = tuple(emb.shape) if isinstance(emb, torch.Tensor) else type(emb).__name__
        raise ValueError(f"{name} output must be (N, d) with N = {n}, got {shape}")
    check_tensor(emb, f"{name} output", floating=True)
    return emb


def check_patch_mask(mask: Any) -> torch.Tensor | None:
    """Validate a constructor's fixed mask: (H, W) or 4-D, binary, selecting at least one pixel."""
    if mask is None:
        return None
    mask = check_tensor(mask, "mask", ndim=(2, 4))
    if mask.dtype != torch.bool and bool(((mask != 0) & (mask != 1)).any()):
        raise ValueError("mask must be binary (0 or 1)")
    if not bool((mask != 0).any()):
        raise ValueError("mask must select at least one pixel, got an all-zero mask")
    return mask


def resolve_mask(x: torch.Tensor, mask: Any, mask_kind: str | None, landmarks: Any) -> torch.Tensor:
    """The bool mask for ``x``: ``mask`` if given, else ``mask_kind`` drawn from ``landmarks`` (or O-Net's on ``x``)."""
    if mask is None and mask_kind is not None:
        if landmarks is None:
            from .faces import ONet

            with torch.no_grad():
                _, landmarks = ONet.from_package().face_landmarks(x)
        landmarks = check_tensor(landmarks, "landmarks", ndim=3, floating=True)
        if landmarks.shape != (x.shape[0], 5, 2):
            raise ValueError(f"landmarks must have shape ({x.shape[0]}, 5, 2), got {tuple(landmarks.shape)}")
        mask = make_mask(mask_kind, landmarks, tuple(x.shape[-2:]))
    if mask is None:
        raise ValueError("mask is required: pass mask (here or to the constructor) or mask_kind")
    m = check_mask(mask, x, "mask")
    per_image = m.flatten(1).any(dim=1) if m.shape[0] > 1 else m.flatten().any().reshape(1)
    if not bool(per_image.all()):
        raise ValueError(f"mask must select at least one pixel per image; {int((~per_image).sum())} select none")
    return m


def reference_embeddings(substitutes: Sequence[Callable[..., Any]], reference: torch.Tensor) -> list[torch.Tensor]:
    """Each substitute's embedding of ``reference`` (eval mode, no grad), detached; modes restored afterwards."""
    reference = check_image_batch(reference, "victim")
    refs = []
    modules = [s for s in substitutes if isinstance(s, nn.Module)]
    modes = [mod.training for mod in modules]
    try:
        for mod in modules:
            mod.eval()
        with torch.no_grad():
            for k, sub in enumerate(substitutes):
                refs.append(_check_embedding(sub(reference), reference.shape[0], f"substitutes[{k}]").detach())
    finally:
        for mod, mode in zip(modules, modes, strict=True):
            mod.train(mode)
    return refs


class TransferPatchAttack:
    """TAP: a masked patch optimised on substitute embedders (MI-FGSM, optionally DI / TI) to transfer.

    Parameters
    ----------
    substitutes:
        An embedder (``[0, 1]`` images -> (N, d)) or a sequence of them (ensemble: mean loss).
    goal:
        ``"impersonate"`` (raise the cosine to the victim) or ``"dodge"`` (lower it to the enrolled image).
    mask_kind, mask:
        The region: a fixed binary ``mask`` ((H, W) or (N or 1, C or 1, H, W)), or a ``mask_kind`` in
        ``faces.MASK_KINDS`` drawn per image from landmarks (see :meth:`run`). Not both.
    eps:
        Ball radius around ``p0`` in [0, 1] units (default 40/255; ``"l2_rms"``: the RMS radius).
    steps:
        Number of updates (AT3D: 400).
    alpha:
        Step size; ``None`` = ``1.5 eps / steps`` (AT3D).
    mu:
        Momentum decay.
    method:
        ``"mim"``, ``"dim"`` (DI, p = 0.5) or ``"tidim"`` (DI + TI, Gaussian kernel length 5, nsig 3).
    norm:
        ``"linf"`` or ``"l2_rms"``.
    init:
        ``p0``: ``"victim"`` (the victim's pixels in the mask; for dodging the enrolled image's),
        ``"attacker"`` (the attacker's own) or ``"noise"`` (uniform, seeded).
    patience:
        Early stop after this many steps without a lower loss (``None``: never).
    seed:
        Seeds DI and the noise start.
    """

    def __init__(
        self,
        substitutes: Callable[..., Any] | Sequence[Callable[..., Any]],
        *,
        goal: str = "impersonate",
        mask_kind: str | None = None,
        mask: torch.Tensor | None = None,
        eps: float = 40 / 255,
        steps: int = 400,
        alpha: float | None = None,
        mu: float = 1.0,
        method: str = "mim",
        norm: str = "linf",
        init: str = "victim",
        patience: int | None = 20,
        seed: int = 0,
    ) -> None:
        self.goal = check_choice(goal, "goal", PATCH_GOALS)
        if mask_kind is not None and mask is not None:
            raise ValueError("give mask or mask_kind, not both")
        self.mask_kind = None if mask_kind is None else check_choice(mask_kind, "mask_kind", MASK_KINDS)
        self.mask = check_patch_mask(mask)
        self.eps = check_float(eps, "eps", minimum=0.0)
        self.steps = check_int(steps, "steps", minimum=1)
        self.alpha = 1.5 * self.eps / self.steps if alpha is None else check_float(alpha, "alpha", minimum=0.0)
        self.method = check_choice(method, "method", METHODS)
        self.norm = check_choice(norm, "norm", NORMS)
        self.init = check_choice(init, "init", INITS)
        self.seed = check_int(seed, "seed", minimum=0)
        self.core = TransferAttack(
            substitutes,
            "dodge" if self.goal == "dodge" else "impersonate",
            steps=self.steps,
            eps=self.eps,
            alpha=self.alpha,
            mu=mu,
            di=DI_PROB if self.method in ("dim", "tidim") else 0.0,
            ti_kernel=gaussian_kernel(TI_LENGTH, TI_NSIG) if self.method == "tidim" else None,
            norm=self.norm,
            patience=patience,
            seed=self.seed,
        )
        self.mu, self.patience = self.core.mu, self.core.patience

    @property
    def substitutes(self) -> tuple[Callable[..., Any], ...]:
        return self.core.substitutes

    def __repr__(self) -> str:
        region = self.mask_kind if self.mask_kind is not None else ("mask" if self.mask is not None else None)
        return (
            f"{type(self).__name__}(substitutes={len(self.substitutes)}, goal={self.goal!r}, region={region!r}, "
            f"eps={self.eps:g}, steps={self.steps}, alpha={self.alpha:g}, mu={self.mu:g}, method={self.method!r}, "
            f"norm={self.norm!r}, init={self.init!r}, patience={self.patience}, seed={self.seed})"
        )

    def _mask(self, x: torch.Tensor, mask: Any, landmarks: Any) -> torch.Tensor:
        return resolve_mask(x, self.mask if mask is None else mask, self.mask_kind, landmarks)

    def reference_embeddings(self, reference: torch.Tensor) -> list[torch.Tensor]:
        """Each substitute's embedding of ``reference`` (the victim, or the enrolled image), detached."""
        return reference_embeddings(self.substitutes, reference)

    def run(
        self,
        attacker: torch.Tensor,
        victim: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        landmarks: torch.Tensor | None = None,
        record: bool = False,
        callback: Callable[[int, torch.Tensor, float], Any] | None = None,
    ) -> PatchResult:
        """Attack ``attacker`` (N, C, H, W in [0, 1]) towards ``victim`` (impersonation) / away from it (dodging).

        ``victim`` is the victim's image (impersonate) or the attacker's enrolled image (dodge), same shape
        as ``attacker``. ``mask`` overrides the constructor's; with ``mask_kind``, ``landmarks`` (N, 5, 2)
        (x, y pixels) place it, or O-Net finds them on ``attacker``. ``record`` / ``callback``: see
        :meth:`core.TransferAttack.run`.
        """
        attacker = check_image_batch(attacker, "attacker")
        victim = check_image_batch(victim, "victim")
        if victim.shape != attacker.shape:
            raise ValueError(
                f"victim must have attacker's shape {tuple(attacker.shape)} (one victim per attacker), "
                f"got {tuple(victim.shape)}"
            )
        m = self._mask(attacker, mask, landmarks)
        refs = self.reference_embeddings(victim)
        if self.init == "victim":
            init = victim
        elif self.init == "noise":
            gen = torch.Generator().manual_seed(self.seed)
            init = torch.rand(attacker.shape, generator=gen, dtype=attacker.dtype).to(attacker.device)
        else:
            init = None
        res = self.core.run(attacker, refs, init=init, mask=m, record=record, callback=callback)
        adv = res.adversarial
        patch = torch.where(m, adv, torch.zeros_like(adv))
        return PatchResult(
            adversarial=adv,
            patch=patch,
            mask=m,
            start=res.start,
            losses=res.losses,
            steps=res.steps,
            history=res.history,
        )

    __call__ = run


# --------------------------------------------------------------------------------------------- evaluation
def pair_scores(a: torch.Tensor, b: torch.Tensor, similarity: str = "cosine") -> torch.Tensor:
    """Row-wise scores of two (N, d) embedding batches: cosine similarity or L2 distance.

    >>> pair_scores(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]]), "l2").tolist()
    [2.2360680103302]
    """
    similarity = check_choice(similarity, "similarity", SIMILARITIES)
    check_tensor(a, "a", ndim=2, floating=True)
    check_tensor(b, "b", ndim=2, floating=True)
    if a.shape != b.shape:
        raise ValueError(f"b must have a's shape {tuple(a.shape)}, got {tuple(b.shape)}")
    if similarity == "cosine":
        return F.cosine_similarity(a, b.to(a), dim=1)
    return (a - b.to(a)).norm(dim=1)


@dataclass(frozen=True)
class PatchEvaluation:
    """One target's figures: ASR, mean score (cosine or L2) against the victim, and against a held-out view."""

    asr: float
    mean_similarity: float
    threshold: float
    similarity: str
    n: int
    asr_held_out: float | None = None
    mean_similarity_held_out: float | None = None


def _per_name(value: Any, names: Sequence[str], argname: str) -> dict[str, Any]:
    if isinstance(value, Mapping):
        missing = [k for k in names if k not in value]
        if missing:
            raise ValueError(f"{argname} has no entry for embedder(s) {missing}")
        return {k: value[k] for k in names}
    return dict.fromkeys(names, value)


def evaluate_patch_attack(
    embedders: Mapping[str, Callable[[torch.Tensor], torch.Tensor]],
    adversarial: torch.Tensor,
    victim: torch.Tensor,
    *,
    threshold: Mapping[str, Threshold | float] | Threshold | float,
    held_out_victim: torch.Tensor | None = None,
    similarity: str | Mapping[str, str] = "cosine",
    goal: str = "impersonate",
) -> dict[str, PatchEvaluation]:
    """ASR and mean similarity of ``adversarial`` against ``victim`` (and a held-out view) per target embedder.

    Success: impersonation ``J > tau`` (cosine) / ``L2 < tau``; dodging the reverse (``victim`` is then
    the enrolled image). ``threshold`` and ``similarity`` may be one value for all or a dict per name; a
    :class:`Threshold` must agree with the similarity's direction.
    """
    if not isinstance(embedders, Mapping) or not embedders:
        raise ValueError("embedders must be a non-empty dict name -> embedder")
    names = list(embedders)
    for k in names:
        if not callable(embedders[k]):
            raise TypeError(f"embedders[{k!r}] must be callable, got {type(embedders[k]).__name__}")
    goal = check_choice(goal, "goal", PATCH_GOALS)
    adversarial = check_image_batch(adversarial, "adversarial")
    victim = check_image_batch(victim, "victim")
    if victim.shape[0] != adversarial.shape[0]:
        raise ValueError(
            f"victim must have one image per adversarial image ({adversarial.shape[0]}), got {victim.shape[0]}"
        )
    if held_out_victim is not None:
        held_out_victim = check_image_batch(held_out_victim, "held_out_victim")
        if held_out_victim.shape[0] != adversarial.shape[0]:
            raise ValueError(
                f"held_out_victim must have one image per adversarial image ({adversarial.shape[0]}), "
                f"got {held_out_victim.shape[0]}"
            )
    sims = _per_name(similarity, names, "similarity")
    taus = _per_name(threshold, names, "threshold")
    n = adversarial.shape[0]
    out: dict[str, PatchEvaluation] = {}
    for k in names:
        sim = check_choice(sims[k], f"similarity[{k!r}]", SIMILARITIES)
        higher = sim == "cosine"
        t = taus[k]
        if isinstance(t, Threshold):
            if t.higher_is_same != higher:
                raise ValueError(
                    f"threshold[{k!r}] has higher_is_same={t.higher_is_same}, which does not fit similarity {sim!r}"
                )
            tau = t.value
        else:
            tau = check_float(t, f"threshold[{k!r}]")
        f = embedders[k]
        was = f.training if isinstance(f, nn.Module) else None
        try:
            if isinstance(f, nn.Module):
                f.eval()
            with torch.no_grad():
                e_adv = _check_embedding(f(adversarial), n, f"embedders[{k!r}]")
                e_vic = _check_embedding(f(victim), n, f"embedders[{k!r}]")
                e_held = (
                    None if held_out_victim is None else _check_embedding(f(held_out_victim), n, f"embedders[{k!r}]")
                )
        finally:
            if was is not None:
                f.train(was)

        def rate(scores: torch.Tensor, tau=tau, higher=higher) -> float:
            same = scores > tau if higher else scores < tau
            success = same if goal == "impersonate" else ~same
            return float(success.to(torch.float64).mean())

        s = pair_scores(e_adv, e_vic, sim)
        sh = None if e_held is None else pair_scores(e_adv, e_held, sim)
        out[k] = PatchEvaluation(
            asr=rate(s),
            mean_similarity=float(s.to(torch.float64).mean()),
            threshold=float(tau),
            similarity=sim,
            n=n,
            asr_held_out=None if sh is None else rate(sh),
            mean_similarity_held_out=None if sh is None else float(sh.to(torch.float64).mean()),
        )
    return out


def white_black_gap(white: float, black: float | Sequence[float] | Mapping[str, float]) -> float:
    """White-box figure minus the mean black-box figure: ASR, or cosine (the spec's prototype gaps are on cosine).

    Values must lie in [-1, 1] (ASR in [0, 1], cosine in [-1, 1]).

    >>> white_black_gap(0.74, [0.20, 0.25, 0.15])
    0.54
    """
    w = check_float(white, "white", minimum=-1.0, maximum=1.0)
    if isinstance(black, Mapping):
        black = list(black.values())
    if isinstance(black, int | float | torch.Tensor) and not isinstance(black, bool):
        black = [black]
    vals = [check_float(v, f"black[{i}]", minimum=-1.0, maximum=1.0) for i, v in enumerate(black)]
    if not vals:
        raise ValueError("black must hold at least one value")
    return round(w - sum(vals) / len(vals), 12)
