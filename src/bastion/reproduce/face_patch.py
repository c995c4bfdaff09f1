"""Reproduction of Xiao et al., "Improving Transferability of Adversarial Patches on Face Recognition with
Generative Models", CVPR 2021 (arXiv 2106.15058), with AT3D's 2D baselines (Yang et al., CVPR 2023), on the
two offline tracks of spec ``transfer.md`` section A.2.

Neither paper has official GenAP code or offline data here (CelebA-HQ, ArcFace, commercial APIs). The spec's
prototypes define two scaled-down tracks:

- **Track S** (everything trained here): SynthFaces (32-px procedural faces, :mod:`..attacks.transfer.synthfaces`)
  and 4 ArcFace / CosFace embedders (3 architectures, :func:`..attacks.transfer.face_zoo.load_track_s`). Pairs
  among the 60 held-out identities; each embedder in turn is the white-box substitute, the other 3 are the
  black-box targets; ``tau`` per embedder at FAR 1e-3 of its held-out impostor pairs. Rows: clean, victim
  paste, TAP-MIM at eps 40/255 and eps 1, GenAP on a conv VAE (latent 32, trained on SynthFaces train) and on
  the renderer's identity parameters (rendered in the attacker's view, so the patch is aligned). The white-
  black gap is taken on the cosine (spec: TAP white 0.74, black 0.20, "gap 0.54").
- **Track R** (the unseen target is dlib's ResNet, a real model): skimage's 100 LFW faces at 32 px, students
  trained on faces 0-59 only (:func:`..attacks.transfer.face_zoo.load_track_r`: distilled from dlib or
  independent ArcFace), 40 attacker -> victim pairs among faces 60-99, held-out victim view = the mirrored
  victim; dlib ``tau`` at FAR 1e-3 over the 4,950 pairs of the 100 faces (spec 0.449). Rows: clean, same-norm
  sign noise, victim paste, TAP-MIM / DIM / TIDIM (eps 40/255), GenAP-PCA (eigenfaces, k 40) and GenAP-VAE,
  each per provenance and on the ensemble of both; eye band and eye&nose; impersonation; dodging (enrolled =
  the attacker's mirror) at eps 8/16/40; white-box TAP on the dlib port; and the strongest attempts the issue
  lists (both provenances + DI, victim-inversion start, a latent box around the victim's code, bounds 2/3/4,
  each generator's white-box reach on dlib).

Claims: those of issue #9's acceptance 2 and 3 are asserted; "GenAP beats TAP" and "optimised beats paste /
noise" on dlib are computed and reported, with the spec's note that no prototype reproduced them.
``--quick``: Track S with 30 pairs, Track R with 20 pairs, the eye band, the "both" ensemble, eps 40 dodging
only and fewer steps (numbers in ``config``).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..attacks.transfer import face_zoo, synthfaces
from ..attacks.transfer.faces import make_mask
from ..attacks.transfer.generative import ConvVAE, GenerativePatchAttack, PCAGenerator, fit_vae
from ..attacks.transfer.patch import TransferPatchAttack, pair_scores, white_black_gap
from ..core.registry import REPRODUCTIONS
from ..core.report import new_figure, save_figure
from ..zoo import cache
from .base import ReproductionResult, claim

EPS = 40 / 255
SUMMARY_KEYS = ("white_asr", "white_cos", "black_asr", "black_cos", "gap_cos")
VAE_VERSION = 1


# --------------------------------------------------------------------------------------------- helpers
class _Scorer:
    """ASR against the enrolled victim and a held-out view, and the mean score, of one target embedder."""

    def __init__(self, embedder: Callable, victim: torch.Tensor, held: torch.Tensor, tau: float, similarity: str):
        self.f, self.tau, self.sim = embedder, float(tau), similarity
        self.ref, self.ref_held = self._embed(victim), self._embed(held)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([self.f(x[i : i + 64]) for i in range(0, x.shape[0], 64)]).double()

    def __call__(self, adv: torch.Tensor, goal: str = "impersonate") -> dict[str, float]:
        e = self._embed(adv)
        out = {}
        for key, ref in (("", self.ref), ("_held", self.ref_held)):
            s = pair_scores(e, ref, self.sim)
            same = s > self.tau if self.sim == "cosine" else s < self.tau
            ok = same if goal == "impersonate" else ~same
            out["asr" + key] = float(ok.double().mean())
            out[("cos" if self.sim == "cosine" else "l2") + key] = float(s.mean())
        return out


def _mask(kind: str, landmarks: torch.Tensor) -> torch.Tensor:
    return make_mask(kind, landmarks, (32, 32)) > 0.5


def _paste(attacker: torch.Tensor, victim: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask, victim, attacker)


def _sign_noise(start: torch.Tensor, attacker: torch.Tensor, mask: torch.Tensor, eps: float, seed: int):
    gen = torch.Generator().manual_seed(seed)
    sign = torch.randint(0, 2, start.shape, generator=gen).to(start.dtype) * 2 - 1
    return torch.where(mask, (start + eps * sign).clamp(0.0, 1.0), attacker)


def _tap(subs: Any, att: torch.Tensor, vic: torch.Tensor, mask: torch.Tensor, **kw: Any) -> torch.Tensor:
    return TransferPatchAttack(subs, mask=mask, **kw).run(att, vic).adversarial


def _genap(subs: Any, gen: nn.Module, att: torch.Tensor, vic: torch.Tensor, mask: torch.Tensor, **kw: Any):
    return GenerativePatchAttack(subs, gen, mask=mask, **kw).run(att, vic).adversarial


def _vae(images: torch.Tensor, name: str, *, epochs: int, latent_dim: int, seed: int, quiet: bool) -> ConvVAE:
    """A conv VAE fitted on ``images`` once and cached (safetensors); the stem hashes the data and every setting."""
    c, size = images.shape[1], images.shape[2]
    settings = {"latent_dim": latent_dim, "width": 32, "epochs": epochs, "batch_size": 32, "lr": 2e-3, "beta": 1.0,
                "augment": True, "seed": seed, "version": VAE_VERSION, "shape": list(images.shape),
                "data_sha256": hashlib.sha256(images.detach().contiguous().numpy().tobytes()).hexdigest()}  # fmt: skip
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    stem = f"face-vae-{name}-{key}"
    loaded = cache.load_or_discard(stem)
    if loaded is None:
        t0 = time.perf_counter()
        fit_kw = {
            k: settings[k] for k in ("latent_dim", "width", "epochs", "batch_size", "lr", "beta", "augment", "seed")
        }
        vae = fit_vae(images, quiet=quiet, **fit_kw)
        meta = {"settings": settings, "data": name, "train_seconds": time.perf_counter() - t0}
        cache.save_entry(stem, vae.state_dict(), meta)
        loaded = cache.load_entry(stem)
        assert loaded is not None
    state, _ = loaded
    vae = ConvVAE(c, size, latent_dim, settings["width"])
    vae.load_state_dict(state, strict=True)
    for p in vae.parameters():
        p.requires_grad_(False)
    return vae.eval()


def _mean_std(values: list[float]) -> str:
    a = np.asarray(values, dtype=float)
    return f"{a.mean():.2f}" if a.size < 2 else f"{a.mean():.2f} ± {a.std(ddof=1):.2f}"


# --------------------------------------------------------------------------------------------- sizes
@dataclass(frozen=True)
class Sizes:
    """How big a run is (``quick`` and full presets below; tests shrink them further)."""

    s_pairs: int
    s_steps: int
    s_genap_steps: int
    s_vae_epochs: int
    r_pairs: int
    r_steps: int
    r_vae_epochs: int
    r_masks: tuple[str, ...]
    r_sets: tuple[str, ...]
    r_dodge_eps: tuple[int, ...]
    r_bounds: tuple[float, ...]
    white_steps: int = 60


QUICK = Sizes(30, 200, 100, 15, 20, 100, 150, ("eye",), ("both",), (40,), (3.0,))
FULL = Sizes(60, 400, 200, 30, 40, 200, 300, ("eye", "eye_nose"), ("distilled", "independent", "both"),
             (8, 16, 40), (2.0, 3.0, 4.0))  # fmt: skip


# --------------------------------------------------------------------------------------------- Track S
def _track_s(z: Sizes, seed: int, quiet: bool) -> tuple[list[dict], dict[str, Any], dict[str, torch.Tensor]]:
    models = face_zoo.load_track_s(seed=0, quiet=quiet)
    names = list(models)
    held = synthfaces.heldout_set(0)
    taus = {}
    for k, f in models.items():
        with torch.no_grad():
            emb = torch.cat([f(held.images[i : i + 200]) for i in range(0, len(held), 200)])
        _, tau, _ = face_zoo.tar_at_far(emb, held.labels, 1e-3, "cosine")
        taus[k] = tau
    pairs = face_zoo.track_s_pairs(z.s_pairs, seed)
    att, vic = pairs.attacker, pairs.victim
    mask = _mask("eye", pairs.attacker_landmarks)
    scorers = {k: _Scorer(models[k], vic, pairs.victim_heldout, taus[k].value, "cosine") for k in names}
    vae = _vae(synthfaces.train_set(0).images, "synthfaces", epochs=z.s_vae_epochs, latent_dim=32, seed=0, quiet=quiet)
    # the renderer draws the patch in the attacker's own view (pose, scale, light), so it lines up with the face
    renderer = synthfaces.RendererGenerator(view=held.params[pairs.attacker_index, synthfaces.N_ID :])
    gkw = {"steps": z.s_genap_steps, "inversion_steps": z.s_genap_steps, "latent_bound": 3.0, "seed": seed}

    rows: list[dict] = []
    examples: dict[str, torch.Tensor] = {}
    for white in names:
        black = [k for k in names if k != white]
        sub = models[white]
        candidates: dict[str, torch.Tensor] = {
            "clean": att,
            "victim paste": _paste(att, vic, mask),
            "TAP-MIM eps 40": _tap(sub, att, vic, mask, eps=EPS, steps=z.s_steps, seed=seed),
            "TAP-MIM eps 255": _tap(sub, att, vic, mask, eps=1.0, steps=z.s_steps, seed=seed),
            "GenAP-VAE": _genap(sub, vae, att, vic, mask, **gkw),
            "GenAP-renderer": _genap(sub, renderer, att, vic, mask, **gkw),
        }
        if not examples:
            examples = {"victim": vic, **candidates}
        for method, adv in candidates.items():
            w = scorers[white](adv)
            bl = [scorers[k](adv) for k in black]
            rows.append({
                "substitute": white, "method": method,
                "white_asr": w["asr"], "white_cos": w["cos"], "white_asr_held": w["asr_held"],
                "black_asr": float(np.mean([b["asr"] for b in bl])),
                "black_cos": float(np.mean([b["cos"] for b in bl])),
                "black_asr_held": float(np.mean([b["asr_held"] for b in bl])),
                "gap_cos": white_black_gap(w["cos"], [b["cos"] for b in bl]),
            })  # fmt: skip
    info = {
        "embedders": {k: {"tau_far1e-3": taus[k].value, "tau_rule": taus[k].rule, "tau_pairs": taus[k].n_pairs,
                          "tar_far1e-3": getattr(models[k], "meta", {}).get("tar_at_far1e-3")} for k in names},
        "pairs": z.s_pairs, "mask": "eye", "mask_share": float(mask.double().mean()),
        "pairs_description": pairs.description, "tap": f"MIM, eps 40/255 and 1, {z.s_steps} steps, patience 20",
        "genap": f"Adam lr 0.05, {z.s_genap_steps} steps, |z| <= 3, victim inversion ({z.s_genap_steps} steps)",
        "vae": f"conv VAE, latent 32, {z.s_vae_epochs} epochs on SynthFaces train (2,400 faces)",
    }  # fmt: skip
    return rows, info, examples


def _mean_over(rows: list[dict], method: str, key: str) -> float:
    return float(np.mean([r[key] for r in rows if r["method"] == method]))


def _track_s_claims(rows: list[dict]) -> list:
    m = {
        meth: {k: _mean_over(rows, meth, k) for k in SUMMARY_KEYS} for meth in dict.fromkeys(r["method"] for r in rows)
    }
    out = [
        claim(
            "Track S: white-box TAP-MIM (eye, eps 40/255) reaches ASR >= 0.75",
            {"white_asr": m["TAP-MIM eps 40"]["white_asr"]},
            lambda d: d["white_asr"] >= 0.75,
            reference={"spec prototype": 0.84, "AT3D 2D-MIM eye (white-box)": 0.95},
        ),
        claim(
            "Track S: the black-box cosine is lower at eps 1 than at eps 40/255 (white-box saturates, transfer falls)",
            {"black_cos_eps40": m["TAP-MIM eps 40"]["black_cos"],
             "black_cos_eps255": m["TAP-MIM eps 255"]["black_cos"]},
            lambda d: d["black_cos_eps255"] < d["black_cos_eps40"],
            reference={"spec prototype": "0.12 (eps 255) vs 0.20 (eps 40)"},
        ),
    ]  # fmt: skip
    for gen in ("GenAP-VAE", "GenAP-renderer"):
        out.append(
            claim(
                f"Track S: {gen}'s white-black cosine gap is >= 0.15 below TAP-MIM's, with a white-box cosine above "
                "the victim-paste row's",
                {
                    "gap_genap": m[gen]["gap_cos"],
                    "gap_tap": m["TAP-MIM eps 40"]["gap_cos"],
                    "white_cos_genap": m[gen]["white_cos"],
                    "white_cos_paste": m["victim paste"]["white_cos"],
                },
                lambda d: d["gap_genap"] <= d["gap_tap"] - 0.15 and d["white_cos_genap"] > d["white_cos_paste"],
                reference={"spec prototype": "GenAP gap 0.16-0.26 vs TAP 0.54-0.62"},
            )
        )
    out.append(
        claim(
            "Track S (the paper's claim, reported): GenAP reaches a higher mean black-box ASR than TAP-MIM",
            {f"{g} {k}": m[g][k] for g in ("TAP-MIM eps 40", "GenAP-VAE", "GenAP-renderer")
             for k in ("black_asr", "black_cos")},
            lambda d: max(d["GenAP-VAE black_asr"], d["GenAP-renderer black_asr"]) > d["TAP-MIM eps 40 black_asr"],
            reference={"spec prototype": "GenAP black ASR <= TAP's", "AT3D eye, manifold vs 2D-MIM": "71 vs 26 %"},
            note="reported, not asserted by the issue: no prototype reproduced it; black-box cosines shown beside",
        )
    )  # fmt: skip
    return out


# --------------------------------------------------------------------------------------------- Track R
def _track_r(z: Sizes, seed: int, quiet: bool) -> tuple[dict[str, list[dict]], dict[str, Any], list, dict]:
    dist = face_zoo.load_track_r("distilled", quiet=quiet)
    indep = face_zoo.load_track_r("independent", quiet=quiet)
    all_sets: dict[str, list[nn.Module]] = {"distilled": list(dist.values()), "independent": list(indep.values())}
    all_sets["both"] = all_sets["distilled"] + all_sets["independent"]
    both = all_sets["both"]
    dlib = face_zoo.dlib_target()
    faces = face_zoo.lfw32()
    tau = face_zoo.impostor_threshold(dlib, faces, 1e-3, "l2")
    pairs = face_zoo.track_r_pairs(z.r_pairs, seed)
    att, vic = pairs.attacker, pairs.victim
    train = faces[: face_zoo.N_TRAIN_R]
    pca = PCAGenerator.fit(train, k=40)
    vae = _vae(train, "lfw60", epochs=z.r_vae_epochs, latent_dim=32, seed=0, quiet=quiet)
    gens = {"PCA": pca, "VAE": vae}
    steps = z.r_steps
    impersonation = _Scorer(dlib, vic, pairs.victim_heldout, tau.value, "l2")
    enrolled = att.flip(-1)  # dodging: the attacker is enrolled by the mirror image (spec: clean L2 0.29)
    dodging = _Scorer(dlib, enrolled, enrolled, tau.value, "l2")

    def row(adv: torch.Tensor, goal: str = "impersonate", **kw: Any) -> dict:
        if goal == "impersonate":
            s = impersonation(adv)
            return {**kw, "dlib_asr": s["asr"], "dlib_asr_held": s["asr_held"], "mean_l2": s["l2"]}
        s = dodging(adv, "dodge")
        return {**kw, "dlib_asr": s["asr"], "mean_l2": s["l2"]}

    table: list[dict] = []
    examples: dict[str, torch.Tensor] = {"victim": vic, "clean": att}
    for mk in z.r_masks:
        mask = _mask(mk, pairs.attacker_landmarks)
        paste = _paste(att, vic, mask)
        table.append(row(att, mask=mk, substitutes="-", method="clean"))
        noise = _sign_noise(paste, att, mask, EPS, seed)
        table.append(row(noise, mask=mk, substitutes="-", method="sign noise eps 40 (around the paste)"))
        table.append(row(paste, mask=mk, substitutes="-", method="victim paste"))
        examples[f"paste ({mk})"] = paste
        for sname in z.r_sets:
            subs = all_sets[sname]
            for method in ("mim", "dim", "tidim"):
                adv = _tap(subs, att, vic, mask, eps=EPS, steps=steps, method=method, seed=seed)
                table.append(row(adv, mask=mk, substitutes=sname, method=f"TAP-{method.upper()} eps 40"))
                if sname == "both" and method == "dim":
                    examples[f"TAP-DIM ({mk})"] = adv
            for gname, g in gens.items():
                adv = _genap(subs, g, att, vic, mask, steps=steps, latent_bound=3.0, seed=seed)
                table.append(row(adv, mask=mk, substitutes=sname, method=f"GenAP-{gname} |z|<=3"))
                if sname == "both":
                    examples[f"GenAP-{gname} ({mk})"] = adv

    # white-box reach of TAP on the dlib port itself (the spec's 60 steps, alpha 6 eps / N)
    eye = _mask("eye", pairs.attacker_landmarks)
    ws = z.white_steps
    adv = _tap(dlib, att, vic, eye, eps=EPS, steps=ws, alpha=6 * EPS / ws, patience=None, seed=seed)
    white = row(adv, mask="eye", substitutes="dlib (white-box)", method=f"TAP-MIM eps 40, {ws} steps")
    examples["white-box TAP on dlib (eye)"] = adv
    strongest = [white]

    # the strongest transfer attempts the issue lists, on the largest mask of the run
    mk = z.r_masks[-1]
    mask = _mask(mk, pairs.attacker_landmarks)
    kw = {"steps": steps, "seed": seed}
    attempts: dict[str, Callable[[], torch.Tensor]] = {
        "TAP-DIM, both provenances, eps 40": lambda: _tap(both, att, vic, mask, eps=EPS, method="dim", **kw),
        "GenAP-PCA + DI, both, victim inversion, |z|<=3": lambda: _genap(both, pca, att, vic, mask, di=0.5, **kw),
        "GenAP-PCA, both, box r=1 around the victim's code":
            lambda: _genap(both, pca, att, vic, mask, radius=1.0, **kw),
    }  # fmt: skip
    for bound in z.r_bounds:
        attempts[f"GenAP-PCA, both, |z|<={bound:g}"] = lambda b=bound: _genap(
            both, pca, att, vic, mask, latent_bound=b, **kw
        )
    for gname, g in gens.items():
        attempts[f"GenAP-{gname} white-box on dlib, |z|<=3, {ws} steps"] = lambda g=g: _genap(
            dlib, g, att, vic, mask, steps=ws, inversion_steps=100, seed=seed
        )
    for name, fn in attempts.items():
        strongest.append(row(fn(), mask=mk, substitutes="see method", method=name))
    strongest.append(next(r for r in table if r["mask"] == mk and r["method"] == "victim paste"))

    # dodging: the eps sweep of the spec's prototype on the eye band, then every method, provenance and mask at eps 40
    dodge: list[dict] = [row(att, "dodge", mask="eye", substitutes="-", method="clean", eps_255=0)]
    for e255 in z.r_dodge_eps:
        eps = e255 / 255
        noise = _sign_noise(att, att, eye, eps, seed)
        dodge.append(row(noise, "dodge", mask="eye", substitutes="-", method="sign noise", eps_255=e255))
        adv = _tap(both, att, enrolled, eye, goal="dodge", eps=eps, steps=steps, init="attacker", seed=seed)
        dodge.append(row(adv, "dodge", mask="eye", substitutes="both", method="TAP-MIM", eps_255=e255))
    for mk in z.r_masks:
        mask = _mask(mk, pairs.attacker_landmarks)
        if mk != "eye" or 40 not in z.r_dodge_eps:
            noise = _sign_noise(att, att, mask, EPS, seed)
            dodge.append(row(noise, "dodge", mask=mk, substitutes="-", method="sign noise", eps_255=40))
        for sname in z.r_sets:
            subs = all_sets[sname]
            for method in ("mim", "dim", "tidim"):
                if method == "mim" and sname == "both" and mk == "eye" and 40 in z.r_dodge_eps:
                    continue  # already in the sweep above
                adv = _tap(subs, att, enrolled, mask, goal="dodge", eps=EPS, steps=steps, method=method,
                           init="attacker", seed=seed)  # fmt: skip
                dodge.append(row(adv, "dodge", mask=mk, substitutes=sname, method=f"TAP-{method.upper()}", eps_255=40))
            for gname, g in gens.items():
                adv = _genap(subs, g, att, enrolled, mask, goal="dodge", steps=steps, latent_bound=3.0, seed=seed)
                dodge.append(row(adv, "dodge", mask=mk, substitutes=sname, method=f"GenAP-{gname} |z|<=3",
                                 eps_255=None))  # fmt: skip

    info = {
        "tau": tau.value, "tau_rule": tau.rule, "tau_pairs": tau.n_pairs, "pairs": z.r_pairs,
        "pairs_description": pairs.description, "steps": steps,
        "mask_share": {mk: float(_mask(mk, pairs.attacker_landmarks).double().mean()) for mk in z.r_masks},
        "distilled_students_vs_dlib_on_the_attack_faces": {
            k: {"cos": getattr(m, "meta", {}).get("heldout_cos_to_dlib"),
                "centred_cos": getattr(m, "meta", {}).get("heldout_centred_cos_to_dlib"),
                "constant_mean_embedding_cos": getattr(m, "meta", {}).get("mean_embedding_cos_to_dlib")}
            for k, m in dist.items()},
        "generators": {"PCA": "eigenfaces k 40 of the 60 training faces",
                       "VAE": f"conv VAE latent 32, {z.r_vae_epochs} epochs on the 60 training faces"},
    }  # fmt: skip
    claims = _track_r_claims(table, strongest, white)
    tables = {"track_r": table, "track_r_strongest": strongest, "track_r_dodge": dodge}
    return tables, info, claims, examples


def _track_r_claims(table: list[dict], strongest: list[dict], white: dict) -> list:
    rows = [r for r in table + strongest if r["substitutes"] != "dlib (white-box)" and "white-box" not in r["method"]]

    def best(prefix: tuple[str, ...]) -> float:
        vals = [r["dlib_asr"] for r in rows if r["method"].startswith(prefix)]
        return max(vals) if vals else float("nan")

    genap, tap, plain = best(("GenAP",)), best(("TAP",)), best(("victim paste", "sign noise"))
    return [
        claim(
            "Track R: white-box TAP on the dlib port (eye, eps 40/255, 60 steps) impersonates with ASR >= 0.9",
            {"dlib_asr": white["dlib_asr"], "dlib_asr_held": white["dlib_asr_held"]},
            lambda d: d["dlib_asr"] >= 0.9,
            reference={"spec prototype": "0.98 (held-out view 0.88)"},
        ),
        claim(
            "Track R (the paper's claim, reported): GenAP transfers to dlib better than TAP (best transfer rows)",
            {"best_genap_asr": genap, "best_tap_asr": tap},
            lambda d: d["best_genap_asr"] > d["best_tap_asr"],
            reference={"spec prototype": "GenAP-PCA 0 vs TAP 0-0.03"},
            note="reported, not asserted by the issue: no prototype reproduced it",
        ),
        claim(
            "Track R (reported): an optimised transfer patch beats pasting the victim's region or same-norm noise",
            {"best_optimised_asr": max(genap, tap), "best_paste_or_noise_asr": plain},
            lambda d: d["best_optimised_asr"] > d["best_paste_or_noise_asr"],
            reference={"spec prototype": "paste 0.28 (eye&nose) vs optimised <= 0.03"},
            note="reported, not asserted by the issue: no prototype reproduced it",
        ),
    ]


def _figure(track_s: dict[str, torch.Tensor], track_r: dict[str, torch.Tensor], out_dir: Path, n: int = 4) -> str:
    rows = [("S", k, v) for k, v in track_s.items()] + [("R", k, v) for k, v in track_r.items()]
    n = min(n, min(v.shape[0] for _, _, v in rows))
    fig, axes = new_figure(n, len(rows), figsize=(1.0 * len(rows), 1.1 * n + 0.4))
    axes = np.asarray(axes).reshape(n, len(rows))
    for j, (track, name, images) in enumerate(rows):
        for i in range(n):
            ax = axes[i, j]
            img = images[i].detach().float().clamp(0, 1)
            if img.shape[0] == 1:
                ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(img.permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"{track}: {name}", fontsize=5)
    return str(save_figure(fig, out_dir / "face_patches.png", dpi=150).name)


# --------------------------------------------------------------------------------------------- reproduction
class FacePatchReproduction:
    """``bastion reproduce face-patch``: Track S (acceptance 2 of issue #9) and Track R (acceptance 3)."""

    name = "face-patch"
    system = "face-patch"
    title = "Transferable face patches: TAP vs GenAP (Track S matrix, Track R dlib table)"

    def __init__(self, sizes: Sizes | None = None) -> None:
        self.sizes = sizes

    def run(self, out_dir: Path, *, quick: bool, seed: int, quiet: bool) -> ReproductionResult:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._run(out_dir, quick=quick, seed=seed, quiet=quiet)
        finally:
            torch.set_num_threads(threads)

    def _run(self, out_dir: Path, *, quick: bool, seed: int, quiet: bool) -> ReproductionResult:
        z = self.sizes or (QUICK if quick else FULL)
        t0 = time.perf_counter()
        s_rows, s_info, s_examples = _track_s(z, seed, quiet)
        t_s = time.perf_counter() - t0
        r_tables, r_info, r_claims, r_examples = _track_r(z, seed, quiet)
        t_r = time.perf_counter() - t0 - t_s
        summary = []
        for meth in dict.fromkeys(r["method"] for r in s_rows):
            sel = [r for r in s_rows if r["method"] == meth]
            summary.append({"method": meth, **{k: _mean_std([r[k] for r in sel]) for k in SUMMARY_KEYS}})
        figure = _figure(s_examples, r_examples, out_dir)
        return ReproductionResult(
            name=self.name, system=self.system, title=self.title, quick=quick, seed=seed,
            config={"sizes": asdict(z), "track_s": {**s_info, "seconds": round(t_s, 1)},
                    "track_r": {**r_info, "seconds": round(t_r, 1)}, "torch_threads": torch.get_num_threads(),
                    "seed_scope": "--seed picks the pairs, DI draws and noise; the model zoo and VAEs are seed 0"},
            tables={"Track S (mean ± std over the white-box substitute)": summary, "Track S, per substitute": s_rows,
                    "Track R: dlib impersonation": r_tables["track_r"],
                    "Track R: white-box reach and strongest transfer attempts": r_tables["track_r_strongest"],
                    "Track R: dlib dodging (enrolled = mirror)": r_tables["track_r_dodge"]},
            claims=_track_s_claims(s_rows) + r_claims,
            figures=[figure],
            notes=[
                "Track S: each of the 4 embedders in turn is the white-box substitute, the other 3 the black-box "
                "targets; gap = white-box cosine minus mean black-box cosine (the spec's prototype gaps are cosines).",
                "Track R: ASR = share of pairs dlib accepts (L2 < tau) against the enrolled victim and against its "
                "mirror (held-out view); dodging success = dlib L2 to the attacker's enrolled mirror above tau. "
                "Students never saw the 40 attack faces; distilled ones queried dlib on the 60 training faces only.",
            ],
        )  # fmt: skip


REPRODUCTIONS.register("face-patch", FacePatchReproduction())
