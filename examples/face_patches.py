"""Adversarial patches on a real face recogniser: dlib's ResNet (ported to PyTorch), on skimage's LFW faces.

A pixel patch (TAP-MIM) and a patch on an eigenface manifold (GenAP-PCA) are optimised on dlib itself
(white-box), inside an eye-band mask placed from MTCNN O-Net landmarks, to make dlib accept attacker i as
victim i. dlib's threshold is set at a false-accept rate of 1e-3 over the 4,950 pairs of the 100 faces.
For the transfer setting (substitutes trained here, dlib unseen) see `bastion reproduce face-patch`.

Needs the `faces` extra (scripts/install.sh installs it). About 30 s on one thread.
Run: .venv/bin/python examples/face_patches.py
"""

import torch

from bastion.attacks.transfer import (
    GenerativePatchAttack,
    PCAGenerator,
    TransferPatchAttack,
    evaluate_patch_attack,
    make_mask,
)
from bastion.attacks.transfer.face_zoo import dlib_target, impostor_threshold, lfw32, track_r_pairs
from bastion.core.report import markdown_table

torch.set_num_threads(1)
dlib = dlib_target()  # [0, 1] faces (any size, grey or RGB) -> dlib's 128-d embedding
faces = lfw32()  # the 100 LFW faces of skimage at 32 px
tau = impostor_threshold(dlib, faces, far=1e-3, similarity="l2")  # same person iff L2 < tau
print(f"dlib tau at FAR 1e-3: {tau.value:.3f} ({tau.rule}, {tau.n_pairs} pairs)")

pairs = track_r_pairs(n=10, seed=0)  # attacker -> victim among faces 60-99, held-out view = mirrored victim
mask = make_mask("eye", pairs.attacker_landmarks, (32, 32))
eps = 40 / 255

tap = TransferPatchAttack(dlib, mask=mask, eps=eps, steps=60, alpha=6 * eps / 60, patience=None)
genap = GenerativePatchAttack(dlib, PCAGenerator.fit(faces[:60], k=40), mask=mask, steps=60, latent_bound=3.0)
rows = []
for name, adv in [
    ("clean", pairs.attacker),
    ("victim's eyes pasted", torch.where(mask > 0, pairs.victim, pairs.attacker)),
    ("TAP-MIM, eps 40/255", tap.run(pairs.attacker, pairs.victim).adversarial),
    ("GenAP on eigenfaces, |z| <= 3", genap.run(pairs.attacker, pairs.victim).adversarial),
]:
    ev = evaluate_patch_attack(
        {"dlib": dlib}, adv, pairs.victim, threshold=tau, similarity="l2", held_out_victim=pairs.victim_heldout
    )["dlib"]
    rows.append({"patch": name, "ASR": ev.asr, "ASR vs held-out view": ev.asr_held_out, "mean L2": ev.mean_similarity})
print(markdown_table(rows, floatfmt=".2f"))
