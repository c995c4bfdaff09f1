"""Detector Cleanse with a scripted detector, and the attack success rate on hand cases (issue #8, 6)."""

from __future__ import annotations

import pytest
import torch

from bastion.backdoor import (
    GMA,
    ODA,
    OGA,
    DetectorCleanse,
    attack_success_rate,
    background_crops,
    chessboard,
    object_crops,
    scenes,
)

TRIGGER = chessboard()  # 8x8 at GMA's (0, 0)
BOXES = torch.tensor([[30.0, 30.0, 50.0, 50.0], [10.0, 36.0, 26.0, 52.0]])


class Scripted:
    """Spec baddet.md's check: one-hot class probabilities when the trigger sits outside the tested
    box, a Dirichlet(1) draw seeded by the image content otherwise; fixed boxes at score 0.9."""

    classes = 4

    def __call__(self, images):
        return [{"boxes": BOXES.clone(), "scores": torch.full((2,), 0.9), "labels": torch.zeros(2, dtype=torch.int64)}
                for _ in images]  # fmt: skip

    def class_probs(self, images, boxes):
        out = []
        for img, bx in zip(images, boxes, strict=True):
            rows = []
            for b in bx.tolist():
                triggered = torch.equal(img[:, :8, :8], TRIGGER) and (b[0] >= 8 or b[1] >= 8)
                if triggered:
                    rows.append(torch.tensor([1.0, 0.0, 0.0, 0.0]))
                else:
                    g = torch.Generator().manual_seed(int(float(img.sum()) * 1000) % 2**31)
                    e = -torch.log(torch.rand(self.classes, generator=g))
                    rows.append(e / e.sum())
            out.append(torch.stack(rows))
        return out


def test_scripted_detector_every_triggered_image_flagged_and_frr_near_one_minus_q():
    clean = scenes(400, seed=5)
    pool = scenes(40, seed=6)  # another seed: the features come from a disjoint clean split
    features = object_crops(pool.images, pool.targets)
    dc = DetectorCleanse(n_features=20, quantile=0.95, seed=0).calibrate(Scripted(), clean.images[:200], features)
    assert 0.5 < dc.m < 2.0 and dc.delta > 0  # mean entropy of Dirichlet(1) over 4 classes: about 1.2 bits
    held_out = dc(Scripted(), clean.images[200:])
    frr = float(held_out.flags.float().mean())
    assert abs(frr - 0.05) <= 0.06, frr
    triggered = GMA(target=0, rate=1.0)(clean.images[300:], clean.targets[300:])
    res = dc(Scripted(), triggered.images)
    assert bool(res.flags.all())
    assert all(s is not None and bool((s == BOXES).all(1).any()) for s in res.suspect)
    assert float(res.scores.min()) > float(held_out.scores.median())


def test_cleanse_needs_calibration_and_features():
    with pytest.raises(RuntimeError, match="calibrate"):
        DetectorCleanse()(Scripted(), torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="features"):
        DetectorCleanse().calibrate(Scripted(), torch.rand(1, 3, 64, 64), [])
    with pytest.raises(ValueError, match="quantile"):
        DetectorCleanse(quantile=1.5)


def _pred(boxes, labels, scores):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels),
            "scores": torch.tensor(scores)}  # fmt: skip


def test_asr_hand_cases_hit_and_miss():
    data = scenes(4, seed=0)
    oga = OGA(target=0, rate=0.5, seed=0)(data.images, data.targets)
    i, j = oga.indices.tolist()
    inserted_i, inserted_j = oga.asr_boxes[i][0].tolist(), oga.asr_boxes[j][0].tolist()
    preds = [_pred([], [], []) for _ in range(4)]
    preds[i] = _pred([inserted_i], [0], [0.9])  # covered by the target class: success
    preds[j] = _pred([inserted_j], [1], [0.9])  # wrong class: failure
    assert attack_success_rate(preds, oga) == 0.5
    preds[j] = _pred([inserted_j], [0], [0.4])  # right class, below the score threshold
    assert attack_success_rate(preds, oga) == 0.5
    assert attack_success_rate(preds, oga, score_threshold=0.3) == 1.0
    k = next(n for n, t in enumerate(data.targets) if bool((t["labels"] == 0).any()))
    oda = ODA(target=0)(data.images[k : k + 1], data.targets[k : k + 1], indices=[0])
    gone = oda.asr_boxes[0]
    assert len(gone) >= 1
    assert attack_success_rate([_pred([], [], [])], oda) == 1.0  # nothing detected there: it disappeared
    hit = _pred(gone.tolist(), [2] * len(gone), [0.9] * len(gone))  # a box of any class there: it did not
    assert attack_success_rate([hit], oda) == 0.0
    with pytest.raises(ValueError, match="one dict per image"):
        attack_success_rate(preds[:2], oga)


def test_overlay_regions_box_and_surround_change_exactly_their_pixels():
    image = torch.zeros(3, 40, 40)
    box = [10.0, 12.0, 20.0, 18.0]  # 10 wide, 6 high
    for region in ("box", "surround"):
        dc = DetectorCleanse(n_features=2, blend=0.5, region=region)
        dc.features = [torch.ones(3, 5, 5)]
        batch = dc._perturbed(image, box, torch.Generator().manual_seed(0))
        expected = torch.zeros(2, 3, 40, 40)
        if region == "box":
            expected[:, :, 12:18, 10:20] = 0.5
        else:  # grown by half the size on every side (5 and 3 px), the box itself untouched
            expected[:, :, 9:21, 5:25] = 0.5
            expected[:, :, 12:18, 10:20] = 0.0
        torch.testing.assert_close(batch, expected)
    with pytest.raises(ValueError, match="region"):
        DetectorCleanse(region="ring")
    with pytest.raises(ValueError, match="match_iou"):
        DetectorCleanse(match_iou=0.0)


def test_matched_variant_reads_the_redetected_box_and_skips_vanished_ones():
    clean = scenes(60, seed=5)
    features = object_crops(clean.images[40:], clean.targets[40:])
    fixed = DetectorCleanse(n_features=10, seed=1).calibrate(Scripted(), clean.images[:20], features)
    matched = DetectorCleanse(n_features=10, match_iou=0.5, seed=1).calibrate(Scripted(), clean.images[:20], features)
    # the scripted detector re-detects the same boxes on every perturbed image: both variants agree
    assert matched.m == pytest.approx(fixed.m) and matched.delta == pytest.approx(fixed.delta)
    a, b = fixed(Scripted(), clean.images[20:30]), matched(Scripted(), clean.images[20:30])
    for ea, eb in zip(a.entropies, b.entropies, strict=True):
        torch.testing.assert_close(ea, eb)

    class Redetect:  # re-detects every box 2 px right of and below the tested one (IoU 0.62-0.68)
        def __call__(self, images):
            return [{"boxes": BOXES + 4, "scores": torch.full((2,), 0.9), "labels": torch.zeros(2, dtype=torch.int64)}
                    for _ in images]  # fmt: skip

        def class_probs(self, images, boxes):  # the entropy depends on the box's x0 only
            return [torch.softmax(torch.stack([b[:, 0] / 10, *[torch.zeros(len(b))] * 3], 1), 1) for b in boxes]

    def entropy(x0):
        p = torch.softmax(torch.tensor([x0 / 10, 0.0, 0.0, 0.0]), 0)
        return float(-(p * p.log2()).sum())

    tested, image = BOXES + 2, torch.rand(3, 64, 64)
    gen = torch.Generator().manual_seed(0)
    torch.testing.assert_close(fixed._box_entropies(Redetect(), image, tested, gen),
                               torch.tensor([entropy(32.0), entropy(12.0)]))  # fmt: skip
    torch.testing.assert_close(matched._box_entropies(Redetect(), image, tested, gen),
                               torch.tensor([entropy(34.0), entropy(14.0)]))  # the re-detected box's  # fmt: skip

    class Vanishing(Scripted):  # boxes while a marker pixel inside each box is intact, none once blended over
        def __call__(self, images):
            return [p if bool((img[:, [40, 44], [40, 18]] == 0.25).all()) else {**p, "boxes": p["boxes"][:0]}
                    for img, p in zip(images, super().__call__(images), strict=True)]  # fmt: skip

    flat = torch.full((4, 3, 64, 64), 0.25)
    res = matched(Vanishing(), flat)  # every draw blends a crop over the boxes: they vanish
    assert all(bool(e.isnan().all()) for e in res.entropies) and not bool(res.flags.any())
    with pytest.raises(ValueError, match="no box"):
        DetectorCleanse(n_features=4, match_iou=0.5).calibrate(Vanishing(), flat, features)


def test_background_crops_overlap_no_object():
    data = scenes(30, seed=2)
    marked = data.images.clone()
    for img, t in zip(marked, data.targets, strict=True):
        for b in t["boxes"].long().tolist():
            img[:, b[1] : b[3], b[0] : b[2]] = -1.0  # any crop touching an object would carry the mark
    crops = background_crops(marked, data.targets, size=10, per_image=2, seed=0)
    assert 20 <= len(crops) <= 60 and all(c.shape == (3, 10, 10) for c in crops)
    assert all(float(c.min()) >= 0 for c in crops)
    blank = scenes(1, seed=2)
    blank_targets = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    assert len(background_crops(blank.images, blank_targets, size=10, per_image=3)) == 3
    full = [{"boxes": torch.tensor([[0.0, 0.0, 64.0, 64.0]]), "labels": torch.zeros(1, dtype=torch.int64)}]
    with pytest.raises(ValueError, match="free of objects"):
        background_crops(blank.images, full, size=10)
    with pytest.raises(ValueError, match="size"):
        background_crops(blank.images, blank_targets, size=100)


def test_cleanse_rejects_images_outside_zero_one_and_wrong_shapes():
    dc = DetectorCleanse(n_features=2)
    with pytest.raises(ValueError, match="clean_images"):
        dc.calibrate(Scripted(), torch.rand(2, 3, 64, 64) * 2, [torch.rand(3, 8, 8)])
    with pytest.raises(ValueError, match="clean_images"):
        dc.calibrate(Scripted(), torch.rand(3, 64, 64), [torch.rand(3, 8, 8)])
