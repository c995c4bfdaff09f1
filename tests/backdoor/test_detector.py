"""The tiny centre-heatmap detector: decoding in closed form, the class_probs adapter, learning."""

from __future__ import annotations

import torch

from bastion.backdoor import map50, scenes
from bastion.backdoor.detectors import CenterNetTiny, train_detector


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
