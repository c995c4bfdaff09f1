"""The tiny centre-heatmap detector: decoding in closed form, the class_probs adapter, learning."""

from __future__ import annotations

import pytest
import torch

from bastion.backdoor import map50, scenes
from bastion.backdoor.detectors import CenterNetTiny, FasterRCNNTiny, train_detector


def test_decoding_matches_the_closed_form():
    model = CenterNetTiny(3, max_detections=5).eval()
    heat = torch.full((1, 3, 16, 16), -10.0)
    heat[0, 2, 5, 7] = 3.0  # one peak: class 2 at row 5, column 7
    box = torch.zeros(1, 4, 16, 16)
    box[0, :, 5, 7] = torch.tensor([12.0, 8.0, 0.25, 0.5])  # size w, h; offset x, y
    model.heads = lambda images: (heat, box)
    (out,) = model(torch.zeros(1, 3, 64, 64))
    cx, cy = (7 + 0.25) * 4, (5 + 0.5) * 4
    torch.testing.assert_close(out["boxes"][0], torch.tensor([cx - 6, cy - 4, cx + 6, cy + 4]))
    assert int(out["labels"][0]) == 2
    assert float(out["scores"][0]) == torch.tensor(3.0).sigmoid().item()
    assert bool((out["scores"][1:] < 0.01).all())  # everything else is background
    (probs,) = model.class_probs(torch.zeros(1, 3, 64, 64), [out["boxes"][:1]])
    assert probs.shape == (1, 3)
    torch.testing.assert_close(probs.sum(1), torch.ones(1))
    assert int(probs.argmax()) == 2


def test_detector_learns_scenes_quickly():
    torch.manual_seed(0)
    data = scenes(96, seed=3)
    model = CenterNetTiny(4, width=32)
    losses = train_detector(model, data.images, data.targets, steps=60, batch_size=16, seed=0)
    assert sum(losses[-10:]) < 0.5 * sum(losses[:10])
    with torch.no_grad():
        preds = model(data.images[:48])
    value, _ = map50(preds, data.targets[:48])
    assert value > 0.45, value  # 60 steps on 96 images (0.59 here): far from converged, far above chance
    for p in preds:
        assert bool((p["boxes"][:, 2] >= p["boxes"][:, 0]).all()) and bool((p["scores"][:-1] >= p["scores"][1:]).all())


def test_faster_rcnn_class_probs_equal_torchvision_roi_head_scores():
    """class_probs at a box = the RoI head's softmax torchvision itself scores that proposal with,
    checked with the transform resizing 64 px images to 48 (boxes must be scaled by 0.75)."""
    torch.manual_seed(0)
    model = FasterRCNNTiny(4, image_size=48).eval()
    model.model.roi_heads.score_thresh = 0.0
    model.model.roi_heads.nms_thresh = 1.0
    images = torch.rand(2, 3, 64, 64)
    boxes = [torch.tensor([[8.0, 8.0, 40.0, 32.0]]), torch.tensor([[20.0, 4.0, 60.0, 60.0]])]
    with torch.no_grad():
        probs = model.class_probs(images, boxes)
        t, _ = model.model.transform(list(images))
        assert t.image_sizes[0] == (48, 48)  # resized (and padded to a multiple of 32)
        feats = {"0": model.model.backbone(t.tensors)}
        dets, _ = model.model.roi_heads(feats, [b * 0.75 for b in boxes], t.image_sizes)
    for p, d in zip(probs, dets, strict=True):
        assert p.shape == (1, 5)
        torch.testing.assert_close(p.sum(1), torch.ones(1))
        for label, score in zip(d["labels"].tolist(), d["scores"].tolist(), strict=True):
            assert abs(float(p[0, label]) - score) < 1e-5  # torchvision's labels count background as 0


def test_faster_rcnn_shifts_labels_by_one_for_torchvision_and_back():
    seen = {}

    class Stub(torch.nn.Module):  # stands in for torchvision's FasterRCNN: records what it is given
        def forward(self, images, targets=None):
            if targets is not None:
                seen["labels"] = [t["labels"] for t in targets]
                return {"loss_classifier": torch.ones((), requires_grad=True)}
            return [{"boxes": torch.zeros(2, 4), "scores": torch.ones(2), "labels": torch.tensor([1, 4])}
                    for _ in images]  # fmt: skip

    model = FasterRCNNTiny(4)
    model.model = Stub()
    targets = [{"boxes": torch.tensor([[1.0, 1.0, 9.0, 9.0]] * 2), "labels": torch.tensor([0, 3])}]
    model.train().loss(torch.rand(1, 3, 64, 64), targets)
    assert seen["labels"][0].tolist() == [1, 4]  # torchvision's 0 is background
    assert model.eval()(torch.rand(1, 3, 64, 64))[0]["labels"].tolist() == [0, 3]


def test_faster_rcnn_takes_and_returns_zero_based_labels_and_learns():
    torch.manual_seed(0)
    data = scenes(64, seed=4)
    model = FasterRCNNTiny(4)
    with pytest.raises(RuntimeError, match="loss"):
        model(data.images[:1])
    losses = train_detector(model, data.images, data.targets, steps=60, batch_size=8, lr=0.02, optimizer="sgd")
    assert sum(losses[-8:]) < 0.7 * sum(losses[:8])
    with torch.no_grad():
        preds = model(data.images[:16])
    labels = torch.cat([p["labels"] for p in preds])
    assert len(labels) and int(labels.min()) >= 0 and int(labels.max()) <= 3
    with pytest.raises(ValueError, match="optimizer"):
        train_detector(model, data.images, data.targets, steps=1, optimizer="adam")
    with pytest.raises(ValueError, match="equal length"):
        train_detector(model, data.images, data.targets[:3], steps=1)


def test_save_and_load_round_trip_both_detectors(tmp_path):
    from bastion.backdoor.detectors import load_detector, save_detector

    images = torch.rand(2, 3, 64, 64)
    for model in (CenterNetTiny(3, width=16), FasterRCNNTiny(3, image_size=64, width=32)):
        torch.manual_seed(1)
        for p in model.parameters():
            p.data.normal_(0, 0.05)  # not the initial weights: the load must restore them
        model.eval()
        folder = save_detector(model, tmp_path / type(model).__name__, classes=["a", "b", "c"])
        back, meta = load_detector(folder)
        assert type(back) is type(model) and meta["classes"] == ["a", "b", "c"]
        with torch.no_grad():
            a, b = model.class_probs(images, [torch.tensor([[4.0, 4.0, 30.0, 30.0]])] * 2), back.class_probs(
                images, [torch.tensor([[4.0, 4.0, 30.0, 30.0]])] * 2)  # fmt: skip
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y)
    (tmp_path / "CenterNetTiny" / "model.json").write_text('{"detector": "onestage", "config": {"num_classes": 3}}')
    with pytest.raises(ValueError, match="does not match"):  # width 48 by default, the weights are width 16
        load_detector(tmp_path / "CenterNetTiny")
    (tmp_path / "CenterNetTiny" / "model.json").write_text('{"detector": "yolo", "config": {}}')
    with pytest.raises(ValueError, match="not a bastion detector"):
        load_detector(tmp_path / "CenterNetTiny")
    with pytest.raises(FileNotFoundError, match=r"model\.json"):
        load_detector(tmp_path / "missing")
    with pytest.raises(TypeError, match="CenterNetTiny or FasterRCNNTiny"):
        save_detector(torch.nn.Linear(2, 2), tmp_path / "x")
