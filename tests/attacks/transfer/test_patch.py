"""TAP patches and their metric: thresholds vs closed form / brute force, mask and ball invariants, white-box effect."""

from __future__ import annotations

import importlib.util
import math
from statistics import NormalDist

import pytest
import torch
import torch.nn.functional as F

from bastion.attacks.transfer.patch import (
    Threshold,
    TransferPatchAttack,
    best_accuracy_threshold,
    evaluate_patch_attack,
    pair_scores,
    threshold_at_far,
    white_black_gap,
)

needs_skimage = pytest.mark.skipif(
    importlib.util.find_spec("skimage") is None,
    reason='scikit-image is not installed: pip install "scikit-image==0.26.0"',
)

EPS = 16 / 255


# ------------------------------------------------------------------------------------------ thresholds
def test_threshold_at_far_normal_scores():
    gen = torch.Generator().manual_seed(0)
    t = threshold_at_far(torch.randn(100_000, generator=gen, dtype=torch.float64), 1e-3)
    assert isinstance(t, Threshold) and t.n_pairs == 100_000 and t.far == 1e-3 and "0.999" in t.rule
    assert abs(t.value - NormalDist().inv_cdf(1 - 1e-3)) < 0.1
    fresh = torch.randn(100_000, generator=gen, dtype=torch.float64)
    far = float(t.accepts(fresh).double().mean())
    assert abs(far - 1e-3) <= 3e-4, far
    # a distance: the far quantile, accepted below it
    d = threshold_at_far(-fresh, 1e-3, higher_is_same=False)
    assert not d.higher_is_same and math.isclose(d.value, -float(torch.quantile(fresh, 1 - 1e-3)), rel_tol=1e-12)
    assert abs(float(d.accepts(-torch.randn(100_000, generator=gen)).double().mean()) - 1e-3) <= 3e-4


def test_threshold_at_far_matches_order_statistics():
    s = torch.randperm(1001).double()
    assert threshold_at_far(s, 1e-2).value == 990.0
    assert threshold_at_far(s.tolist(), 0.5, higher_is_same=False).value == 500.0


def _brute_best(g, i, higher):
    best, best_tau = -1.0, None
    vals = sorted(set(g + i))
    cands = [vals[0] - 1.0, *vals] if higher else [*vals, vals[-1] + 1.0]
    for tau in cands:
        if higher:
            acc = (sum(x > tau for x in g) + sum(x <= tau for x in i)) / (len(g) + len(i))
        else:
            acc = (sum(x < tau for x in g) + sum(x >= tau for x in i)) / (len(g) + len(i))
        if acc > best:
            best, best_tau = acc, tau
    return best, best_tau


@pytest.mark.parametrize("higher", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_best_accuracy_threshold_brute_force(seed, higher):
    gen = torch.Generator().manual_seed(seed)
    sign = 1.0 if higher else -1.0
    g = (sign * (torch.randn(57, generator=gen) + 1.0)).round(decimals=1).double().tolist()  # ties on purpose
    i = (sign * torch.randn(83, generator=gen)).round(decimals=1).double().tolist()
    t = best_accuracy_threshold(g, i, higher_is_same=higher)
    acc, tau = _brute_best(g, i, higher)
    assert math.isclose(t.accuracy, acc, rel_tol=1e-12)
    assert t.n_pairs == 140 and t.far is None and t.higher_is_same is higher
    # the returned tau reaches that accuracy under the strict rule
    gt, it = torch.tensor(g), torch.tensor(i)
    assert math.isclose((float(t.accepts(gt).sum()) + float((~t.accepts(it)).sum())) / 140, acc, rel_tol=1e-12)
    if tau in g + i:  # ties broken the same way (lowest similarity tau / highest distance tau)
        assert t.value == tau


def test_best_accuracy_separable_and_all_one_side():
    t = best_accuracy_threshold([2.0, 3.0], [0.0, 1.0])
    assert t.accuracy == 1.0 and t.value == 1.0
    t = best_accuracy_threshold([0.0, 1.0], [2.0, 3.0, 4.0])  # best: reject everything
    assert t.accuracy == 0.6 and t.value == 4.0
    # two cut points tie at 3/4 (tau 0 and tau 2): the lowest similarity / the highest distance wins
    t = best_accuracy_threshold([1.0, 3.0], [2.0, 0.0])
    assert t.accuracy == 0.75 and t.value == 0.0
    t = best_accuracy_threshold([-1.0, -3.0], [-2.0, 0.0], higher_is_same=False)
    assert t.accuracy == 0.75 and t.value == 0.0


# ------------------------------------------------------------------------------------------ attack
class _Embedder(torch.nn.Module):
    """A tiny random conv embedder; ``centre`` (the mean embedding of some faces) is subtracted so cosines spread."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(1, 8, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(8, 16, 3, stride=2, padding=1),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(4),
            torch.nn.Flatten(),
            torch.nn.Linear(256, 32),
        )
        self.register_buffer("centre", torch.zeros(32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x - 0.5) - self.centre

    def centred(self, faces: torch.Tensor) -> _Embedder:
        with torch.no_grad():
            self.centre.copy_(self.body(faces - 0.5).mean(0))
        return self.eval()


def _net(seed: int) -> torch.nn.Module:
    return _Embedder(seed).eval()


@pytest.fixture(scope="module")
def faces():
    if importlib.util.find_spec("skimage") is None:
        pytest.skip('scikit-image is not installed: pip install "scikit-image==0.26.0"')
    from bastion.attacks.transfer.faces import lfw_faces

    return F.interpolate(lfw_faces(), size=(32, 32), mode="bilinear", align_corners=False).clamp(0, 1)


@pytest.fixture(scope="module")
def nets(faces):
    return [_Embedder(1).centred(faces[50:]), _Embedder(2).centred(faces[50:])]


def _band():
    m = torch.zeros(32, 32)
    m[9:17, 4:28] = 1
    return m


def _impostor(net, faces):
    with torch.no_grad():
        e = net(faces)
    c = F.cosine_similarity(e[:, None], e[None], dim=2)
    iu = torch.triu_indices(len(faces), len(faces), 1)
    return c[iu[0], iu[1]]


@needs_skimage
@pytest.mark.parametrize(("method", "norm"), [("mim", "linf"), ("tidim", "linf"), ("dim", "l2_rms")])
def test_outside_identical_inside_ball_every_step(faces, nets, method, norm):
    att, vic = faces[:6], faces[6:12]
    mask = _band().bool()
    attack = TransferPatchAttack(nets, mask=mask, eps=EPS, steps=12, method=method, norm=norm, patience=None)
    seen = []
    res = attack.run(att, vic, record=True, callback=lambda k, x, loss: seen.append(k))
    assert seen == list(range(1, 13)) and res.steps == 12 and len(res.history) == 13
    p0 = torch.where(mask, vic, att)
    assert torch.equal(res.start, p0)  # init="victim": the victim's region
    d = p0[0].numel()
    for p in res.history:
        assert torch.equal(p[:, :, ~mask], att[:, :, ~mask])
        assert float(p.min()) >= 0.0 and float(p.max()) <= 1.0
        if norm == "linf":
            assert bool((p >= (p0 - EPS)).all() and (p <= (p0 + EPS)).all())
        else:
            assert bool(((p - p0).flatten(1).norm(dim=1) <= EPS * math.sqrt(d) * (1 + 1e-6)).all())
    assert torch.equal(res.adversarial, res.history[-1])
    assert torch.equal(res.patch[:, :, ~mask], torch.zeros_like(res.patch[:, :, ~mask]))
    assert torch.equal(res.patch[:, :, mask], res.adversarial[:, :, mask])


@needs_skimage
def test_inits(faces, nets):
    att, vic = faces[:4], faces[4:8]
    mask = _band().bool()
    kw = dict(mask=mask, steps=1, eps=EPS, patience=None)
    r = TransferPatchAttack(nets[0], init="attacker", **kw).run(att, vic)
    assert torch.equal(r.start, att)
    r1 = TransferPatchAttack(nets[0], init="noise", seed=3, **kw).run(att, vic)
    r2 = TransferPatchAttack(nets[0], init="noise", seed=3, **kw).run(att, vic)
    r3 = TransferPatchAttack(nets[0], init="noise", seed=4, **kw).run(att, vic)
    assert torch.equal(r1.start, r2.start) and not torch.equal(r1.start, r3.start)
    assert torch.equal(r1.start[:, :, ~mask], att[:, :, ~mask])
    inside = r1.start[:, :, mask]
    assert not torch.equal(inside, att[:, :, mask]) and not torch.equal(inside, vic[:, :, mask])
    assert 0.4 < float(inside.mean()) < 0.6  # uniform noise


@needs_skimage
def test_mask_kind_with_landmarks(faces, nets):
    from bastion.attacks.transfer.faces import make_mask

    lm = torch.tensor([[10.3, 12.2], [21.7, 12.2], [16.1, 18.3], [11.4, 23.1], [20.6, 23.1]]).expand(3, 5, 2)
    attack = TransferPatchAttack(nets[0], mask_kind="eye", steps=2, eps=EPS, patience=None)
    res = attack.run(faces[:3], faces[3:6], landmarks=lm)
    want = make_mask("eye", lm, 32).bool()
    assert torch.equal(res.mask, want)
    assert torch.equal(res.adversarial[~want.expand_as(res.adversarial)], faces[:3][~want.expand(3, 1, 32, 32)])


@needs_skimage
def test_white_box_impersonation_and_dodging(faces, nets):
    white, black = nets
    att, vic = faces[:10], faces[10:20]
    tau = threshold_at_far(_impostor(white, faces[20:]), 0.05)
    evaluators = {"white": white, "black": black}
    attack = TransferPatchAttack(white, mask=_band(), eps=40 / 255, steps=40, patience=None)
    res = attack.run(att, vic)
    clean = evaluate_patch_attack(evaluators, att, vic, threshold=tau)
    adv = evaluate_patch_attack(evaluators, res.adversarial, vic, threshold={"white": tau, "black": tau.value})
    assert res.losses[-1] < res.losses[0]
    assert adv["white"].mean_similarity > clean["white"].mean_similarity + 0.3
    assert adv["white"].asr > clean["white"].asr
    assert adv["white"].asr >= 0.5
    # held-out view (mirror) reported too; the gap helper
    ho = evaluate_patch_attack(evaluators, res.adversarial, vic, threshold=tau, held_out_victim=vic.flip(-1))
    assert ho["white"].asr_held_out is not None and ho["white"].asr == adv["white"].asr
    gap = white_black_gap(adv["white"].asr, [adv["black"].asr])
    assert math.isclose(gap, adv["white"].asr - adv["black"].asr, abs_tol=1e-12)

    # dodging: enrolled = the mirror image; the cosine to it falls and the dodge ASR rises
    enrolled = att.flip(-1)
    dodge = TransferPatchAttack(white, goal="dodge", mask=_band(), eps=40 / 255, steps=40, patience=None)
    rd = dodge.run(att, enrolled)
    with torch.no_grad():
        tau_d = float(pair_scores(white(att), white(enrolled)).min()) - 1e-6  # every clean pair accepted
    cd = evaluate_patch_attack({"white": white}, att, enrolled, threshold=tau_d, goal="dodge")
    ad = evaluate_patch_attack({"white": white}, rd.adversarial, enrolled, threshold=tau_d, goal="dodge")
    assert cd["white"].asr == 0.0
    assert ad["white"].mean_similarity < cd["white"].mean_similarity - 0.05
    assert ad["white"].asr > 0.5


@needs_skimage
def test_deterministic(faces, nets):
    att, vic = faces[:4], faces[4:8]
    kw = dict(mask=_band(), steps=8, eps=EPS, method="tidim", seed=5, patience=None)
    r1 = TransferPatchAttack(nets, **kw).run(att, vic)
    r2 = TransferPatchAttack(nets, **kw).run(att, vic)
    assert torch.equal(r1.adversarial, r2.adversarial) and r1.losses == r2.losses


@needs_skimage
def test_patience_and_alpha_default(faces, nets):
    a = TransferPatchAttack(nets[0], mask=_band(), steps=50, eps=0.0, patience=3)
    assert a.alpha == 0.0
    r = a.run(faces[:2], faces[2:4])  # eps 0: nothing moves, the loss never improves
    assert r.steps == 4
    assert TransferPatchAttack(nets[0], mask=_band()).alpha == pytest.approx(1.5 * (40 / 255) / 400)


def test_l2_evaluation_direction():
    emb = torch.nn.Identity()
    adv = torch.tensor([[[[0.1, 0.0]]], [[[0.9, 0.0]]]])
    vic = torch.zeros(2, 1, 1, 2)
    flat = lambda x: x.flatten(1)  # noqa: E731
    out = evaluate_patch_attack({"d": flat}, adv, vic, threshold=0.5, similarity="l2")
    assert out["d"].asr == 0.5 and math.isclose(out["d"].mean_similarity, 0.5, rel_tol=1e-6)
    out = evaluate_patch_attack({"d": flat}, adv, vic, threshold=0.5, similarity={"d": "l2"}, goal="dodge")
    assert out["d"].asr == 0.5
    t = Threshold(0.5, 1e-3, 10, "given", higher_is_same=True)
    with pytest.raises(ValueError, match="threshold"):
        evaluate_patch_attack({"d": flat}, adv, vic, threshold=t, similarity="l2")
    with pytest.raises(ValueError, match="embedders"):
        evaluate_patch_attack({"d": emb}, adv, vic, threshold=0.5)  # output (N, 1, 1, 2)
    with pytest.raises(ValueError, match="victim"):
        evaluate_patch_attack({"d": flat}, adv, vic[:1], threshold=0.5)


# ------------------------------------------------------------------------------------------ errors
def test_errors():
    net = _net(0)
    x, v = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    m = _band()
    with pytest.raises(ValueError, match="goal"):
        TransferPatchAttack(net, goal="steal", mask=m)
    with pytest.raises(ValueError, match="eps"):
        TransferPatchAttack(net, mask=m, eps=-0.1)
    with pytest.raises(ValueError, match="steps"):
        TransferPatchAttack(net, mask=m, steps=0)
    with pytest.raises(ValueError, match="substitutes"):
        TransferPatchAttack([], mask=m)
    with pytest.raises(ValueError, match="method"):
        TransferPatchAttack(net, mask=m, method="fgsm")
    with pytest.raises(ValueError, match="init"):
        TransferPatchAttack(net, mask=m, init="zeros")
    with pytest.raises(ValueError, match="mask_kind"):
        TransferPatchAttack(net, mask_kind="hat")
    with pytest.raises(ValueError, match="mask"):
        TransferPatchAttack(net, mask=m * 0.5)
    with pytest.raises(ValueError, match="mask"):
        TransferPatchAttack(net, mask=torch.zeros(32, 32))
    with pytest.raises(ValueError, match="mask"):
        TransferPatchAttack(net, steps=1).run(x, v)  # no mask at all
    a = TransferPatchAttack(net, mask=m, steps=1)
    with pytest.raises(ValueError, match="mask"):
        a.run(x, v, mask=torch.ones(16, 16))
    with pytest.raises(ValueError, match="victim"):
        a.run(x, v[:1])
    with pytest.raises(ValueError, match="attacker"):
        a.run(x * 2, v)
    with pytest.raises(ValueError, match="victim"):
        a.run(x, v.clone().fill_(float("nan")))
    with pytest.raises(ValueError, match="landmarks"):
        TransferPatchAttack(net, mask_kind="eye", steps=1).run(x, v, landmarks=torch.zeros(1, 5, 2))
    with pytest.raises(ValueError, match=r"substitutes\[0\] output"):
        TransferPatchAttack(torch.nn.Identity(), mask=m, steps=1).run(x, v)
    with pytest.raises(ValueError, match="far"):
        threshold_at_far([0.1, 0.2], 0.0)
    with pytest.raises(ValueError, match="impostor_scores"):
        threshold_at_far(torch.tensor([0.1, float("nan")]))
    with pytest.raises(ValueError, match="genuine"):
        best_accuracy_threshold([], [0.1])
    with pytest.raises(ValueError, match="white must be"):
        white_black_gap(1.5, [0.1])
    with pytest.raises(ValueError, match="black must hold"):
        white_black_gap(0.5, [])


@needs_skimage
@pytest.mark.skipif(
    importlib.util.find_spec("facenet_pytorch") is None,
    reason='facenet-pytorch is not installed: pip install --no-deps "facenet-pytorch==2.6.0"',
)
def test_mask_kind_from_onet_landmarks(faces, nets):
    from bastion.attacks.transfer.faces import ONet, make_mask

    att = faces[:3].expand(-1, 1, -1, -1)
    with torch.no_grad():
        _, lm = ONet.from_package().face_landmarks(att)
    res = TransferPatchAttack(nets[0], mask_kind="eye_nose", steps=1, eps=EPS).run(att, faces[3:6])
    assert torch.equal(res.mask, make_mask("eye_nose", lm, 32).bool())
    assert 0.2 < float(res.mask.float().mean()) < 0.5
