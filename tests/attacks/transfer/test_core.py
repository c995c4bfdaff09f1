"""Gradient-transfer core: MI/DI/TI pieces against hand formulas, masked-attack invariants at every step,
torchattacks equality (when installed), attack strength, determinism, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bastion.attacks.transfer.core import (
    TransferAttack,
    check_mask,
    cosine_loss,
    cross_entropy_loss,
    descent_step,
    gaussian_kernel,
    input_diversity,
    momentum_update,
    project,
    translation_invariant,
)
from bastion.data import digits


def tiny_cnn(seed: int, c: int = 1, out: int = 10, size: int = 12) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(c, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(6 * (size // 2) ** 2, out)
    ).eval()


@pytest.fixture(scope="module")
def digits_model():
    """A small CNN trained on scikit-learn's 8x8 digits (about a second on one thread)."""
    train, test = digits("train"), digits("test")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 64, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(80):
        opt.zero_grad()
        F.cross_entropy(net(train.images), train.labels).backward()
        opt.step()
    net.eval()
    return net, test.images, test.labels


# --------------------------------------------------------------------------- TI kernel and convolution
@pytest.mark.parametrize(("length", "nsig"), [(15, 3.0), (5, 3.0), (3, 1.0), (7, 4.5)])
def test_gaussian_kernel_closed_form(length, nsig):
    k = gaussian_kernel(length, nsig)
    assert k.shape == (length, length) and k.dtype == torch.float32
    assert abs(float(k.double().sum()) - 1.0) < 1e-6
    ts = [-nsig + 2 * nsig * i / (length - 1) for i in range(length)]
    raw = [[math.exp(-(a * a + b * b) / 2) for b in ts] for a in ts]
    total = sum(map(sum, raw))
    want = torch.tensor([[v / total for v in row] for row in raw], dtype=torch.float64)
    assert torch.allclose(k.double(), want, rtol=1e-6, atol=1e-9)
    assert torch.equal(k, k.T) and torch.equal(k, k.flip(0))
    assert int(k.argmax()) == (length // 2) * length + length // 2


def test_gaussian_kernel_matches_torchattacks():
    torchattacks = pytest.importorskip("torchattacks", reason="pip install --no-deps torchattacks==3.5.1")
    ti = torchattacks.TIFGSM(nn.Linear(1, 1), len_kernel=15, nsig=3)
    assert torch.equal(ti.stacked_kernel[0, 0], gaussian_kernel(15, 3))


def test_translation_invariant_is_a_depthwise_same_conv():
    gen = torch.Generator().manual_seed(1)
    grad = torch.randn(2, 3, 7, 6, generator=gen, dtype=torch.float64)
    kernel = torch.rand(5, 5, generator=gen, dtype=torch.float64)  # not symmetric: checks orientation
    out = translation_invariant(grad, kernel)
    want = torch.zeros_like(grad)
    for n in range(2):
        for c in range(3):
            for i in range(7):
                for j in range(6):
                    s = 0.0
                    for a in range(5):
                        for b in range(5):
                            ii, jj = i + a - 2, j + b - 2
                            if 0 <= ii < 7 and 0 <= jj < 6:
                                s += float(kernel[a, b]) * float(grad[n, c, ii, jj])
                    want[n, c, i, j] = s
    assert torch.allclose(out, want, atol=1e-12)
    assert torch.equal(translation_invariant(grad, torch.ones(1, 1, dtype=torch.float64)), grad)


# --------------------------------------------------------------------------- DI
def test_input_diversity_identity_shape_and_box():
    x = torch.rand(3, 2, 20, 20)
    assert input_diversity(x, prob=0.0, generator=torch.Generator().manual_seed(0)) is x
    ones = torch.ones(3, 2, 20, 20)
    gen = torch.Generator().manual_seed(0)
    for _ in range(30):
        out = input_diversity(ones, prob=1.0, low=0.9, generator=gen)
        assert out.shape == ones.shape
        nz = out[0, 0] != 0
        rows, cols = nz.any(1).nonzero().flatten(), nz.any(0).nonzero().flatten()
        s_h, s_w = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
        assert s_h == s_w and 18 <= s_w <= 19  # [int(0.9 * 20), 20 - 1]
        assert 0 <= int(rows[0]) <= 20 - s_h - 1 and 0 <= int(cols[0]) <= 20 - s_w - 1
        assert torch.equal(out, out[:1].expand_as(out))  # one size and offset for the whole batch
        assert torch.allclose(out[nz.expand_as(out)], torch.ones(int(nz.sum()) * 6))  # a resized constant stays 1
    rect = input_diversity(torch.rand(2, 1, 20, 30), prob=1.0, generator=torch.Generator().manual_seed(0))
    assert rect.shape == (2, 1, 20, 30)


def test_input_diversity_probability_seed_and_gradient():
    x = torch.rand(1, 1, 16, 16)
    gen = torch.Generator().manual_seed(0)
    applied = sum(input_diversity(x, prob=0.5, generator=gen) is not x for _ in range(400))
    assert 150 < applied < 250
    a = input_diversity(x, prob=1.0, generator=torch.Generator().manual_seed(7))
    b = input_diversity(x, prob=1.0, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    xv = x.clone().requires_grad_(True)
    input_diversity(xv, prob=1.0, generator=torch.Generator().manual_seed(7)).sum().backward()
    assert xv.grad is not None and float(xv.grad.abs().sum()) > 0


# --------------------------------------------------------------------------- MI and the update
def test_momentum_update_hand_formula():
    gen = torch.Generator().manual_seed(2)
    g = torch.randn(3, 2, 4, 4, generator=gen, dtype=torch.float64)
    grad = torch.randn(3, 2, 4, 4, generator=gen, dtype=torch.float64)
    grad[1] = 0.0
    out = momentum_update(g, grad, 0.7)
    for n in range(3):
        mean_abs = sum(abs(v) for v in grad[n].flatten().tolist()) / grad[n].numel()
        want = 0.7 * g[n] + (grad[n] / mean_abs if mean_abs > 0 else 0.0)
        assert torch.allclose(out[n], want, atol=1e-12)
    assert torch.isfinite(out).all()


def test_descent_step_and_project():
    gen = torch.Generator().manual_seed(3)
    p0 = torch.rand(2, 1, 5, 5, generator=gen)
    g = torch.randn(2, 1, 5, 5, generator=gen)
    p = descent_step(p0, g, 0.1, "linf")
    assert torch.allclose(p, p0 - 0.1 * g.sign())
    p = descent_step(p0, g, 0.1, "l2_rms")
    step = (p0 - p).flatten(1).norm(dim=1)
    assert torch.allclose(step, torch.full((2,), 0.1 * 5.0), rtol=1e-5)  # alpha sqrt(D), D = 25
    far = p0 + torch.randn(2, 1, 5, 5, generator=gen)
    q = project(far, p0, 0.05, "linf")
    assert bool(((q >= p0 - 0.05) & (q <= p0 + 0.05) & (q >= 0) & (q <= 1)).all())
    assert torch.equal(q, ((p0 + (far - p0).clamp(-0.05, 0.05)).clamp(0, 1)))
    q2 = project(far, p0, 0.05, "l2_rms")
    assert bool(((q2 - p0).flatten(1).norm(dim=1) <= 0.05 * 5 * (1 + 1e-6)).all())
    assert q2.min() >= 0 and q2.max() <= 1
    near = (p0 + 1e-3 * g).clamp(0, 1)
    assert torch.allclose(project(near, p0, 0.05, "l2_rms"), near)  # inside the ball: unchanged
    # outside the ball and away from the box: a radial rescale onto the sphere
    mid = torch.full((1, 1, 5, 5), 0.5)
    d = 0.01 * torch.randn(1, 1, 5, 5, generator=gen)
    r = project(mid + d, mid, 1e-3, "l2_rms") - mid
    assert torch.allclose(r, d * (1e-3 * 5 / d.norm()), atol=1e-6)


# --------------------------------------------------------------------------- invariants at every step
@pytest.mark.parametrize("norm", ["linf", "l2_rms"])
@pytest.mark.parametrize("use_init", [False, True])
def test_masked_attack_invariants_every_step(norm, use_init):
    gen = torch.Generator().manual_seed(4)
    n, c, h = 4, 3, 12
    x = torch.rand(n, c, h, h, generator=gen)
    x[0, :, :2] = 0.0  # saturated pixels exercise the [0, 1] clip
    x[1, :, -2:] = 1.0
    mask = torch.rand(n, 1, h, h, generator=gen) < 0.3
    init = torch.rand(n, c, h, h, generator=gen) if use_init else None
    eps = 0.05 if norm == "linf" else 0.02
    subs = [tiny_cnn(0, c), tiny_cnn(1, c)]
    labels = torch.randint(0, 10, (n,), generator=gen)
    seen = []
    attack = TransferAttack(
        subs, "untargeted", steps=12, eps=eps, alpha=eps / 3, di=True, ti_kernel=gaussian_kernel(3, 3), norm=norm,
        seed=5,
    )  # fmt: skip
    res = attack.run(x, labels, init=init, mask=mask.float(), record=True, callback=lambda t, p, v: seen.append(p))
    p0 = res.start
    assert torch.equal(p0, x if init is None else torch.where(mask, init, x))
    assert len(res.history) == 13 and len(seen) == 12 and res.steps == 12 and len(res.losses) == 12
    full = mask.expand_as(x)
    d = x[0].numel()
    for t, p in enumerate(res.history):
        if t:
            assert torch.equal(p, seen[t - 1])
        assert torch.equal(p[~full], x[~full])  # outside the mask: bit for bit
        assert p.min() >= 0 and p.max() <= 1
        if norm == "linf":
            assert bool(((p >= p0 - eps) & (p <= p0 + eps)).all())  # exact: no tolerance
        else:
            assert bool(((p - p0).flatten(1).norm(dim=1) <= eps * math.sqrt(d) * (1 + 1e-6)).all())
    final = res.history[-1]
    assert torch.equal(final, res.adversarial)
    moved = (final - p0)[full]
    assert float(moved.abs().max()) > 0  # not vacuous
    if norm == "linf":
        assert float(moved.abs().max()) >= eps * (1 - 1e-6)  # the ball binds somewhere
    else:
        norms = (final - p0).flatten(1).norm(dim=1)
        assert float(norms.max()) >= 0.99 * eps * math.sqrt(d)  # ([0, 1] clipping trims a little)


def test_l2_rms_step_length_under_mask_and_ti():
    """The TI-blurred gradient is masked before the l2 step: the patch moves by alpha sqrt(D) exactly."""
    x = torch.full((2, 3, 12, 12), 0.5)
    mask = torch.zeros(12, 12)
    mask[2:6, 3:9] = 1
    attack = TransferAttack(
        tiny_cnn(0, 3), steps=1, eps=1.0, alpha=0.01, norm="l2_rms", ti_kernel=gaussian_kernel(5, 3), mask=mask
    )
    res = attack.run(x, torch.tensor([1, 2]))
    step = (res.adversarial - x).flatten(1).norm(dim=1)
    assert torch.allclose(step, torch.full((2,), 0.01 * math.sqrt(3 * 144)), rtol=1e-5)


def test_face_style_ensemble_impersonation():
    """Per-substitute victim embeddings, masked patch, cosine loss: similarity to the victim rises."""
    gen = torch.Generator().manual_seed(6)
    attacker, victim = torch.rand(2, 3, 12, 12, generator=gen), torch.rand(2, 3, 12, 12, generator=gen)
    mask = torch.zeros(12, 12)
    mask[3:7, 1:11] = 1  # an "eye band"
    embedders = [tiny_cnn(10, 3, out=8), tiny_cnn(11, 3, out=8)]
    refs = [e(victim).detach() for e in embedders]

    @torch.no_grad()
    def mean_cos(img):
        return float(sum(F.cosine_similarity(e(img), r).mean() for e, r in zip(embedders, refs, strict=True)) / 2)

    res = TransferAttack(embedders, "impersonate", steps=20, eps=40 / 255, mask=mask).run(attacker, refs, init=victim)
    assert mean_cos(res.adversarial) > mean_cos(res.start) > mean_cos(attacker)
    assert res.losses[-1] < res.losses[0]
    assert torch.equal(res.adversarial[:, :, mask == 0], attacker[:, :, mask == 0])
    dodge = TransferAttack(embedders, cosine_loss(dodge=True), steps=10, eps=8 / 255).run(victim, refs)
    assert mean_cos(dodge.adversarial) < mean_cos(victim)


# --------------------------------------------------------------------------- strength, determinism
def test_untargeted_and_targeted_mi_attack(digits_model):
    net, x, y = digits_model
    x, y = x[:120], y[:120]
    clean = float((net(x).argmax(1) == y).float().mean())
    assert clean > 0.9
    adv = TransferAttack(net, "untargeted", steps=10, eps=0.15).run(x, y).adversarial
    acc = float((net(adv).argmax(1) == y).float().mean())
    assert acc < 0.3, (clean, acc)
    target = (y + 1) % 10
    tadv = TransferAttack(net, cross_entropy_loss(targeted=True), steps=20, eps=0.3, alpha=0.03).run(x, target)
    assert float((net(tadv.adversarial).argmax(1) == target).float().mean()) > 0.8


def test_same_seed_same_bits(digits_model):
    net, x, y = digits_model
    x, y = x[:32], y[:32]
    kw = dict(steps=6, eps=0.1, di=True, ti_kernel=gaussian_kernel(3, 3))
    a = TransferAttack(net, "untargeted", seed=3, **kw).run(x, y).adversarial
    b = TransferAttack(net, "untargeted", seed=3, **kw).run(x, y).adversarial
    attack = TransferAttack(net, "untargeted", seed=3, **kw)
    c, d = attack.run(x, y).adversarial, attack.run(x, y).adversarial  # reruns restart the generator
    assert torch.equal(a, b) and torch.equal(a, c) and torch.equal(a, d)
    e = TransferAttack(net, "untargeted", seed=4, **kw).run(x, y).adversarial
    assert not torch.equal(a, e)


def test_patience_zero_gradient_and_eval_mode():
    class Flat(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm1d(10)
            self.modes = []

        def forward(self, x):
            self.modes.append(self.training)
            return self.bn(torch.zeros(x.shape[0], 10) + 0.0 * x.sum())

    flat = Flat().train()
    x, y = torch.rand(3, 1, 6, 6), torch.tensor([0, 1, 2])
    res = TransferAttack(flat, "untargeted", steps=50, eps=0.1, patience=4).run(x, y)
    assert res.steps == 5 and torch.equal(res.adversarial, x)  # zero gradient: no move, no NaN
    assert flat.modes == [False] * 5 and flat.training  # eval during the attack, restored after


# --------------------------------------------------------------------------- torchattacks equality
def test_equals_torchattacks(digits_model):
    torchattacks = pytest.importorskip("torchattacks", reason="pip install --no-deps torchattacks==3.5.1")
    net, x, y = digits_model
    x, y = x[:40], y[:40]
    cases = [
        (torchattacks.MIFGSM(net, eps=0.3, alpha=0.01, steps=15, decay=1.0), dict(steps=15, eps=0.3, alpha=0.01)),
        (
            torchattacks.DIFGSM(net, eps=8 / 255, alpha=2 / 255, steps=10, decay=1.0),
            dict(steps=10, eps=8 / 255, alpha=2 / 255, di=True, seed=11),
        ),
    ]
    for ta, kw in cases:
        torch.manual_seed(11)
        ref = ta(x, y)
        ours = TransferAttack(net, "untargeted", **kw).run(x, y).adversarial
        assert torch.equal(ours, ref), (type(ta).__name__, float((ours - ref).abs().max()))
    target = (y + 3) % 10
    ta = torchattacks.MIFGSM(net, eps=0.2, alpha=0.02, steps=10, decay=1.0)
    ta.set_mode_targeted_by_function(lambda images, labels: target, quiet=True)
    ours = TransferAttack(net, "targeted", steps=10, eps=0.2, alpha=0.02).run(x, target).adversarial
    assert torch.equal(ours, ta(x, y))
    # TI (torchattacks' kernel is 3-channel): a grey model on replicated channels; TIFGSM also does DI
    grey = nn.Sequential(nn.Conv2d(3, 1, 1, bias=False), net).eval()
    with torch.no_grad():
        grey[0].weight.fill_(1 / 3)
    x3 = x.expand(-1, 3, -1, -1).contiguous()
    torch.manual_seed(5)
    ref = torchattacks.TIFGSM(grey, eps=0.1, alpha=0.01, steps=10, decay=1.0, len_kernel=5, nsig=3)(x3, y)
    ours = TransferAttack(
        grey, "untargeted", steps=10, eps=0.1, alpha=0.01, di=True, ti_kernel=gaussian_kernel(5, 3), seed=5
    ).run(x3, y)
    assert float((ours.adversarial - ref).abs().max()) <= 1e-6


# --------------------------------------------------------------------------- errors
def test_errors_name_the_argument():
    net = tiny_cnn(0, 1, size=8)
    x, y = torch.rand(2, 1, 8, 8), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="eps"):
        TransferAttack(net, steps=3, eps=-0.1)
    with pytest.raises(ValueError, match="steps"):
        TransferAttack(net, steps=0, eps=0.1)
    with pytest.raises(ValueError, match="substitutes"):
        TransferAttack([], steps=3, eps=0.1)
    with pytest.raises(ValueError, match="norm"):
        TransferAttack(net, steps=3, eps=0.1, norm="l2")
    with pytest.raises(ValueError, match="loss_fn"):
        TransferAttack(net, "misclassify", steps=3, eps=0.1)
    with pytest.raises(TypeError, match="substitutes"):
        TransferAttack([net, 3], steps=3, eps=0.1)
    attack = TransferAttack(net, steps=2, eps=0.1)
    with pytest.raises(ValueError, match="targets"):
        attack.run(x, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="targets"):
        attack.run(x, [y, y])  # a list means one entry per substitute: here only one
    with pytest.raises(ValueError, match="init"):
        attack.run(x, y, init=torch.rand(3, 1, 8, 8))
    with pytest.raises(ValueError, match="x"):
        attack.run(x + 1.0, y)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="x"):
        attack.run(bad, y)
    with pytest.raises(ValueError, match="mask"):
        attack.run(x, y, mask=torch.ones(7, 8))
    with pytest.raises(ValueError, match="mask"):
        attack.run(x, y, mask=torch.ones(3, 1, 8, 8))
    with pytest.raises(ValueError, match="mask"):
        attack.run(x, y, mask=torch.full((8, 8), 0.5))
    with pytest.raises(ValueError, match="mask"):
        TransferAttack(net, steps=2, eps=0.1, mask=torch.ones(8)).run(x, y)
    with pytest.raises(ValueError, match="embedder output"):
        TransferAttack(nn.Identity(), "impersonate", steps=2, eps=0.1).run(x, torch.rand(2, 64))
    with pytest.raises(ValueError, match="mask"):
        check_mask(torch.tensor([[0.0, 2.0]]), torch.rand(1, 1, 1, 2))
    with pytest.raises(ValueError, match="prob"):
        input_diversity(x, prob=1.5)
    with pytest.raises(ValueError, match="length"):
        gaussian_kernel(0, 3)
    with pytest.raises(ValueError, match="nsig"):
        gaussian_kernel(5, 0)
    with pytest.raises(ValueError, match="eps"):
        project(x, x, -1.0)
    with pytest.raises(ValueError, match="norm"):
        descent_step(x, x, 0.1, "l1")


def test_patience_with_di_reads_the_iterates_own_loss():
    """A lucky DI draw must not end the attack: the stopping rule reads the loss of the undiversified iterate."""

    class Spiky(torch.nn.Module):
        """Scores a zero-padded (DI-resized) input -10, far below any real iterate: a lucky draw that never improves."""

        def forward(self, x):
            pad = (x[..., -1, :].abs().sum((1, 2)) == 0).float()  # DI pads with zeros; the images have none
            return torch.where(
                pad[:, None] > 0, torch.full_like(pad[:, None], -10.0), x.flatten(1).mean(1, keepdim=True)
            )

    x = 0.4 + 0.4 * torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    loss = lambda out, t: out.mean()  # noqa: E731 - minimise the mean pixel
    attack = TransferAttack(Spiky(), loss, steps=60, eps=0.3, alpha=0.004, di=0.5, patience=3, seed=0)
    res = attack.run(x)
    assert res.steps == 60  # the iterate keeps improving; the padded draws' low losses do not count
    assert float(res.adversarial.mean()) < float(x.mean()) - 0.1  # pixels stay > 0: no zero row but the pads
