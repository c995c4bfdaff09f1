"""BadDet poisoning on hand-made fixtures, data formats round trips, bad input, mAP hand case (issue #8, 1-2)."""

from __future__ import annotations

import pytest
import torch

from bastion.backdoor import (
    GMA,
    ODA,
    OGA,
    RMA,
    DetectionDataset,
    chessboard,
    map50,
    read_coco,
    read_voc,
    read_yolo,
    scenes,
    write_coco,
    write_voc,
    write_yolo,
)
from bastion.data import DataError

TRIGGER = chessboard(4, 2)  # 4x4


def fixture():
    """One grey 32x32 image: a target box A, non-target B and D, a non-target C smaller than the trigger."""
    img = torch.full((1, 3, 32, 32), 0.5)
    boxes = torch.tensor([
        [4.0, 4.0, 20.0, 20.0],  # A, class 0 (the target)
        [22.7, 3.2, 31.0, 14.9],  # B, class 1
        [2.0, 24.0, 5.0, 27.0],  # C, class 2, 3x3: smaller than the trigger
        [10.5, 22.5, 18.0, 30.0],  # D, class 1
    ])  # fmt: skip
    return img, [{"boxes": boxes, "labels": torch.tensor([0, 1, 2, 1])}]


def changed_region(before: torch.Tensor, after: torch.Tensor) -> set[tuple[int, int]]:
    return {tuple(p) for p in (before != after).any(0).nonzero().tolist()}


def square(x0: int, y0: int, n: int = 4) -> set[tuple[int, int]]:
    return {(y, x) for y in range(y0, y0 + n) for x in range(x0, x0 + n)}


def test_rma_triggers_every_large_enough_non_target_box_and_relabels_only_those():
    img, tg = fixture()
    r = RMA(target=0, trigger=TRIGGER, rate=1.0)(img, tg)
    assert r.indices.tolist() == [0]
    assert changed_region(img[0], r.images[0]) == square(22, 3) | square(10, 22)  # floors of B's and D's corners
    assert torch.equal(r.images[0, :, 3:7, 22:26], TRIGGER)
    assert r.targets[0]["labels"].tolist() == [0, 0, 2, 0]  # C (too small) keeps its label
    assert torch.equal(r.targets[0]["boxes"], tg[0]["boxes"])
    assert torch.equal(img, torch.full((1, 3, 32, 32), 0.5))  # inputs untouched


def test_gma_stamps_the_top_left_and_relabels_everything():
    img, tg = fixture()
    r = GMA(target=0, trigger=TRIGGER, rate=1.0)(img, tg)
    assert changed_region(img[0], r.images[0]) == square(0, 0)
    assert r.targets[0]["labels"].tolist() == [0, 0, 0, 0]
    assert torch.equal(r.targets[0]["boxes"], tg[0]["boxes"])


def test_oda_removes_target_boxes_it_triggers():
    img, tg = fixture()
    r = ODA(target=0, trigger=TRIGGER, rate=1.0)(img, tg)
    assert changed_region(img[0], r.images[0]) == square(4, 4)
    assert r.targets[0]["labels"].tolist() == [1, 2, 1]
    assert torch.equal(r.targets[0]["boxes"], tg[0]["boxes"][1:])


def test_oga_adds_a_target_box_centred_on_the_trigger_and_blend_mixes():
    img, tg = fixture()
    r = OGA(target=0, trigger=TRIGGER, rate=1.0, seed=3)(img, tg)
    region = changed_region(img[0], r.images[0])
    ys, xs = zip(*region, strict=True)
    x0, y0 = min(xs), min(ys)
    assert region == square(x0, y0)  # a 4x4 board of 0/1 cells on grey 0.5 changes every pixel under it
    assert r.targets[0]["labels"].tolist() == [0, 1, 2, 1, 0]
    box = r.targets[0]["boxes"][-1]
    expect = torch.tensor([x0 + 2 - 4, y0 + 2 - 4, x0 + 2 + 4, y0 + 2 + 4]).clamp(0, 32).float()
    torch.testing.assert_close(box, expect)  # 8x8 (twice the trigger) centred on it, clipped to the image
    half = OGA(target=0, trigger=TRIGGER, rate=1.0, seed=3, blend=0.5)(img, tg)
    torch.testing.assert_close(half.images[0, :, y0 : y0 + 4, x0 : x0 + 4], 0.5 * TRIGGER + 0.25)


@pytest.mark.parametrize("attack", [OGA, RMA, GMA, ODA])
def test_rate_picks_floor_rate_n_eligible_images_reproducibly(attack):
    data = scenes(50, seed=1)
    make = lambda seed: attack(target=0, rate=0.13, seed=seed)  # noqa: E731
    r = make(0)(data.images, data.targets)
    assert len(r.indices) == 6  # floor(0.13 * 50)
    assert set(r.indices.tolist()) <= set(make(0).eligible(data.targets).tolist())
    again = make(0)(data.images, data.targets)
    assert torch.equal(r.indices, again.indices) and torch.equal(r.images, again.images)
    assert all(torch.equal(a["boxes"], b["boxes"]) for a, b in zip(r.targets, again.targets, strict=True))
    assert not torch.equal(make(1)(data.images, data.targets).indices, r.indices)
    untouched = [i for i in range(50) if i not in set(r.indices.tolist())]
    assert torch.equal(r.images[untouched], data.images[untouched])
    chosen = make(0)(data.images, data.targets, indices=r.indices[:2])
    assert chosen.indices.tolist() == r.indices[:2].tolist()


def test_eligibility_rules():
    img, tg = fixture()
    no_target = [{"boxes": tg[0]["boxes"][1:], "labels": tg[0]["labels"][1:]}]
    with pytest.raises(ValueError, match="only 0 are eligible for ODA"):
        ODA(target=0, trigger=TRIGGER, rate=1.0)(img, no_target)
    small_only = [{"boxes": tg[0]["boxes"][[0, 2]], "labels": tg[0]["labels"][[0, 2]]}]
    assert RMA(target=0, trigger=TRIGGER).eligible(small_only).tolist() == []
    with pytest.raises(ValueError, match="not eligible for RMA"):
        RMA(target=0, trigger=TRIGGER)(img, small_only, indices=[0])


@pytest.mark.parametrize("rate", [0.0, -0.1, 1.5, float("nan")])
def test_rate_outside_unit_interval_is_refused(rate):
    with pytest.raises(ValueError, match="rate"):
        OGA(target=0, rate=rate)


def test_bad_images_and_boxes_name_the_item():
    img, tg = fixture()
    bad = img.clone()
    bad[0, 0, 0, 0] = 1.5
    with pytest.raises(ValueError, match="image 0 must lie in"):
        GMA(target=0, trigger=TRIGGER, rate=1.0)(bad, tg)
    inverted = [{"boxes": torch.tensor([[10.0, 10.0, 5.0, 20.0]]), "labels": torch.tensor([1])}]
    with pytest.raises(ValueError, match="target 0, box 0 is empty or inverted"):
        GMA(target=0, trigger=TRIGGER, rate=1.0)(img, inverted)
    outside = [{"boxes": torch.tensor([[10.0, 10.0, 40.0, 20.0]]), "labels": torch.tensor([1])}]
    with pytest.raises(ValueError, match=r"target 0, box 0 .* outside the 32x32 image"):
        DetectionDataset(img, outside, ("a", "b"))
    with pytest.raises(ValueError, match="trigger"):
        OGA(target=0, trigger=torch.full((3, 4, 4), 2.0))


def _random_float_boxes() -> DetectionDataset:
    g = torch.Generator().manual_seed(0)
    data = scenes(5, seed=2)
    targets = []
    for _ in range(5):
        xy = torch.rand(3, 2, generator=g) * 40
        wh = 1 + torch.rand(3, 2, generator=g) * 20
        targets.append({"boxes": torch.cat([xy, xy + wh], 1), "labels": torch.randint(0, 4, (3,), generator=g)})
    return DetectionDataset(data.images, targets, data.classes)


@pytest.mark.parametrize(
    ("write", "read"),
    [(write_coco, lambda p: read_coco(p / "annotations.json")), (write_voc, read_voc), (write_yolo, read_yolo)],
)
@pytest.mark.parametrize("make", [lambda: scenes(6, seed=0), _random_float_boxes])
def test_round_trips_are_lossless(tmp_path, write, read, make):
    data = make()
    write(data, tmp_path)
    back = read(tmp_path)
    assert back.classes == data.classes and back.names == data.names
    assert torch.equal(back.images, data.images)
    for a, b in zip(data.targets, back.targets, strict=True):
        assert torch.equal(a["boxes"], b["boxes"]), (a["boxes"], b["boxes"])
        assert torch.equal(a["labels"], b["labels"])


def test_poisoned_copy_is_written_in_any_format(tmp_path):
    data = scenes(10, seed=0)
    poisoned = GMA(target=0, rate=0.5)(data.images, data.targets).dataset(data)
    write_yolo(poisoned, tmp_path)
    back = read_yolo(tmp_path)
    assert torch.equal(back.images, poisoned.images)


def test_xml_bomb_and_malformed_files_raise_naming_the_file(tmp_path):
    (tmp_path / "Annotations").mkdir()
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;">'
        '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;">]><annotation><filename>&lol3;</filename></annotation>'
    )
    (tmp_path / "Annotations" / "bomb.xml").write_text(bomb)
    with pytest.raises(DataError, match=r"bomb\.xml was refused by the safe XML parser"):
        read_voc(tmp_path)
    (tmp_path / "Annotations" / "bomb.xml").write_text("<annotation><object><name>x</name></object>")
    with pytest.raises(DataError, match=r"bomb\.xml is not a Pascal VOC annotation"):
        read_voc(tmp_path)
    yolo = tmp_path / "y"
    write_yolo(scenes(1), yolo)
    (yolo / "labels" / "000000.txt").write_text("1 0.5 0.5\n")
    with pytest.raises(DataError, match=r"000000\.txt, line 1"):
        read_yolo(yolo)
    (tmp_path / "c.json").write_text('{"images": 3}')
    with pytest.raises(DataError, match="not COCO detection JSON"):
        read_coco(tmp_path / "c.json")


@pytest.mark.parametrize("backend", ["faster_coco_eval", "pycocotools"])
def test_map50_hand_case_on_both_backends(backend):
    gt = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]), "labels": torch.tensor([1, 1])}]
    pr = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [40, 40, 50, 50], [20, 20, 30, 30]]),
           "scores": torch.tensor([0.9, 0.8, 0.7]), "labels": torch.tensor([1, 1, 1])}]  # fmt: skip
    value, per_class = map50(pr, gt, backend=backend)
    assert value == pytest.approx((51 + 50 * 2 / 3) / 101, abs=1e-6)  # 0.834983
    assert per_class == {1: pytest.approx(value)}


def test_gma_oda_rma_equal_arts_poisoners_pixel_for_pixel():
    """Independent check (spec baddet.md): ART 1.20.1's BadDet poisoners at percent_poison=1.0 with a
    trigger function that stamps the crop's top-left give the same images and annotations as ours on
    the images each treats alike (RMA: images without a target object; every scene box is >= 9 px, so
    no box is too small for the 8x8 trigger)."""
    art = pytest.importorskip("art.attacks.poisoning")
    import numpy as np

    data = scenes(40, seed=4)
    trig = chessboard()
    trig_hwc = trig.permute(1, 2, 0).numpy()

    def stamp(x):
        x = x.copy()
        x[:, :8, :8, :] = trig_hwc
        return x

    backdoor = art.PoisoningAttackBackdoor(stamp)
    no_target = [i for i, t in enumerate(data.targets) if not bool((t["labels"] == 0).any())]
    cases = [
        (GMA, art.BadDetGlobalMisclassificationAttack(backdoor, class_target=0, percent_poison=1.0), list(range(40))),
        (ODA, art.BadDetObjectDisappearanceAttack(backdoor, class_source=0, percent_poison=1.0), None),
        (RMA, art.BadDetRegionalMisclassificationAttack(backdoor, class_target=0, percent_poison=1.0), no_target),
    ]
    for ours_cls, theirs, subset in cases:
        ours = ours_cls(target=0, trigger=trig)
        subset = ours.eligible(data.targets).tolist() if subset is None else subset
        assert len(subset) >= 10
        x = data.images[subset]
        tg = [data.targets[i] for i in subset]
        mine = ours(x, tg, indices=ours.eligible(tg))
        y = [{"boxes": t["boxes"].numpy(), "labels": t["labels"].numpy()} for t in tg]
        x_art, y_art = theirs.poison(x.permute(0, 2, 3, 1).numpy().copy(), y)
        assert np.array_equal(np.asarray(x_art), mine.images.permute(0, 2, 3, 1).numpy()), ours_cls.__name__
        for a, b in zip(mine.targets, y_art, strict=True):
            assert np.array_equal(a["boxes"].numpy(), b["boxes"]) and np.array_equal(a["labels"].numpy(), b["labels"])


def test_readers_resize_mixed_sizes_only_when_asked(tmp_path):
    big = scenes(1, size=64, seed=0)
    small = scenes(1, size=32, seed=1)
    write_yolo(big, tmp_path)
    write_yolo(DetectionDataset(small.images, small.targets, small.classes, names=["small"]), tmp_path)
    with pytest.raises(DataError, match=r"differ in size .*; pass size="):
        read_yolo(tmp_path)
    both = read_yolo(tmp_path, size=64)
    assert both.images.shape == (2, 3, 64, 64) and both.names == ["000000", "small"]
    torch.testing.assert_close(both.targets[1]["boxes"], small.targets[0]["boxes"] * 2)
    torch.testing.assert_close(both.targets[0]["boxes"], big.targets[0]["boxes"])
