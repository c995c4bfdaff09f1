"""GenAP: generators (PCA against sklearn, VAE), inversion, and the latent-space patch attack's invariants."""

import pytest
import torch
from torch import nn

from bastion.attacks.transfer.generative import (
    ConvVAE,
    GenerativePatchAttack,
    PCAGenerator,
    fit_vae,
    invert,
)
from bastion.attacks.transfer.patch import evaluate_patch_attack


def _faces(n=30, c=1, s=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, c, s, s, generator=g) * 0.5 + 0.25
    return (base + 0.1 * torch.randn(n, c, s, s, generator=g)).clamp(0, 1)


class _Embed(nn.Module):
    def __init__(self, d_in, d=6, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.fc = nn.Linear(d_in, d, bias=False)

    def forward(self, x):
        return self.fc(x.flatten(1) - 0.5)  # centred, so unrelated faces score near 0


def test_pca_matches_sklearn_and_encode_inverts():
    sk = pytest.importorskip("sklearn.decomposition")
    x = _faces(40, 1, 6)
    g = PCAGenerator.fit(x, k=7)
    ref = sk.PCA(n_components=7).fit(x.flatten(1).double().numpy())
    assert torch.allclose(g.std.double() ** 2, torch.from_numpy(ref.explained_variance_), rtol=1e-4)
    # the same subspace: |<v_ours, v_sklearn>| = 1 component by component
    dots = (g.components.double() * torch.from_numpy(ref.components_)).sum(1).abs()
    assert torch.allclose(dots, torch.ones(7, dtype=torch.float64), atol=1e-4)
    z = 0.3 * torch.randn(5, 7, generator=torch.Generator().manual_seed(1))
    img = g(z)
    assert bool(((img > 0) & (img < 1)).all())  # no clamping at this scale, so encode is exact
    assert torch.allclose(g.encode(img), z, atol=1e-4)
    with pytest.raises(ValueError, match="k must be <="):
        PCAGenerator.fit(x, k=40)
    with pytest.raises(ValueError, match=r"z must have shape \(N, 7\)"):
        g(torch.zeros(2, 3))


def test_invert_recovers_a_linear_code_inside_the_mask():
    x = _faces(40, 1, 6)
    g = PCAGenerator.fit(x, k=5)
    z = 0.5 * torch.randn(3, 5, generator=torch.Generator().manual_seed(2))
    w = invert(g, g(z), steps=400, lr=0.05)
    assert torch.allclose(w, z, atol=2e-3)
    # a mask that sees only part of the image still pins the code down (5 unknowns, 18 pixels seen)
    mask = torch.zeros(1, 1, 6, 6, dtype=torch.bool)
    mask[..., :3, :] = True
    wm = invert(g, g(z), mask, steps=600, lr=0.05)
    assert torch.allclose(g(wm)[..., :3, :], g(z)[..., :3, :], atol=2e-3)


def test_vae_is_seeded_and_learns():
    x = _faces(24, 3, 8)
    a = fit_vae(x, latent_dim=4, width=4, epochs=3, batch_size=8, seed=3)
    b = fit_vae(x, latent_dim=4, width=4, epochs=3, batch_size=8, seed=3)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    gen = torch.Generator().manual_seed(0)
    fresh = ConvVAE(3, 8, 4, 4)
    trained = fit_vae(x, latent_dim=4, width=4, epochs=40, batch_size=8, seed=3)
    with torch.no_grad():
        assert trained.elbo_loss(x, gen) < fresh.elbo_loss(x, torch.Generator().manual_seed(0))
    out = trained(torch.zeros(2, 4))
    assert out.shape == (2, 3, 8, 8) and bool(((out >= 0) & (out <= 1)).all())
    assert trained.encode(x[:2]).shape == (2, 4)
    with pytest.raises(ValueError, match="size must be divisible by 8"):
        ConvVAE(3, 12)


@pytest.mark.parametrize("optimizer", ["adam", "sign"])
def test_attack_invariants_and_white_box_success(optimizer):
    x = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(5))  # diverse "faces": low clean cosine
    gen = PCAGenerator.fit(x, k=10)
    subs = [_Embed(64, seed=s) for s in range(2)]
    attacker, victim = x[:6], x[10:16]
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[1:6, 1:7] = True
    kw = dict(mask=mask, steps=60, optimizer=optimizer, latent_bound=2.5, radius=2.0, init="mean")
    seen = []
    res = GenerativePatchAttack(subs, gen, **kw).run(attacker, victim, callback=lambda s, adv, loss: seen.append(adv))
    assert len(seen) == res.steps == 60
    for adv in [*seen, res.adversarial]:
        assert torch.equal(adv[:, :, ~mask], attacker[:, :, ~mask])  # outside the mask: the attacker, bit for bit
        assert bool(((adv >= 0) & (adv <= 1)).all())
    assert float(res.latent.abs().max()) <= 2.5 + 1e-6
    assert float((res.latent - res.latent_start).abs().max()) <= 2.0 + 1e-6
    assert res.losses[-1] < res.losses[0] - 0.1
    ev = evaluate_patch_attack(dict(enumerate(subs)), res.adversarial, victim, threshold=0.5)
    start = evaluate_patch_attack(dict(enumerate(subs)), res.start, victim, threshold=0.5)
    for k in ev:
        assert ev[k].mean_similarity > start[k].mean_similarity + 0.1
    # DI draws are seeded: same seed, same bits; another seed, other bits
    di = GenerativePatchAttack(subs, gen, di=0.5, seed=4, **kw)
    a, b = di.run(attacker, victim), di.run(attacker, victim)
    assert torch.equal(a.adversarial, b.adversarial)
    c = GenerativePatchAttack(subs, gen, di=0.5, seed=5, **kw).run(attacker, victim)
    assert not torch.equal(a.adversarial, c.adversarial)


def test_inversion_and_encoder_starts():
    x = _faces(40, 1, 8)
    gen = PCAGenerator.fit(x, k=10)
    sub = _Embed(64)
    victim = x[20:23]
    mask = torch.ones(8, 8, dtype=torch.bool)
    enc = GenerativePatchAttack(sub, gen, mask=mask, steps=1, init="encoder", latent_bound=None)
    inv = GenerativePatchAttack(sub, gen, mask=mask, steps=1, init="inversion", latent_bound=None)
    w_enc = enc.start_codes(victim, enc.mask[None, None])
    assert torch.allclose(w_enc, gen.encode(victim))
    # the encoder start is already the least-squares code; inversion from it stays there
    w_inv = inv.start_codes(victim, inv.mask[None, None])
    assert torch.allclose(gen(w_inv), gen(w_enc), atol=2e-3)
    res = inv.run(x[:3], victim)
    assert torch.allclose(res.start, gen(w_inv), atol=1e-6)


class _NoEncode(nn.Module):
    latent_dim = 4

    def forward(self, z):
        return torch.sigmoid(z.sum(1)).view(-1, 1, 1, 1).expand(-1, 1, 8, 8).contiguous()


def test_errors_name_the_argument():
    x = _faces(8, 1, 8)
    sub = _Embed(64)
    mask = torch.ones(8, 8, dtype=torch.bool)
    with pytest.raises(ValueError, match="init='encoder' needs an encoder"):
        GenerativePatchAttack(sub, _NoEncode(), mask=mask, init="encoder")
    with pytest.raises(ValueError, match="goal"):
        GenerativePatchAttack(sub, _NoEncode(), mask=mask, goal="steal")
    with pytest.raises(ValueError, match="steps"):
        GenerativePatchAttack(sub, _NoEncode(), mask=mask, steps=0)
    with pytest.raises(ValueError, match="substitutes"):
        GenerativePatchAttack([], _NoEncode(), mask=mask)
    with pytest.raises(TypeError, match="latent_dim"):
        GenerativePatchAttack(sub, nn.Identity(), mask=mask)
    with pytest.raises(ValueError, match="mask must be binary"):
        GenerativePatchAttack(sub, _NoEncode(), mask=torch.full((8, 8), 0.5))
    attack = GenerativePatchAttack(sub, _NoEncode(), mask=mask, init="mean", steps=2)
    with pytest.raises(ValueError, match="victim must have attacker's shape"):
        attack.run(x[:2], x[:3])
    with pytest.raises(ValueError, match=r"attacker.*\[0, 1\]|attacker"):
        attack.run(x[:2] + 2.0, x[:2])
    bad = torch.full((2, 1, 8, 8), float("nan"))
    with pytest.raises(ValueError, match="attacker"):
        attack.run(bad, x[:2])
    wrong = GenerativePatchAttack(sub, _NoEncode(), mask=torch.ones(4, 4, dtype=torch.bool), init="mean")
    with pytest.raises(ValueError, match="mask"):
        wrong.run(x[:2], x[:2])
    big = GenerativePatchAttack(_Embed(64 * 3), _NoEncode(), mask=mask, init="mean", steps=1)
    with pytest.raises(ValueError, match="generator output must be"):
        big.run(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8))

    class Flat(nn.Module):
        def forward(self, x):
            return x.flatten()

    flat = GenerativePatchAttack(Flat(), _NoEncode(), mask=mask, init="mean", steps=1)
    with pytest.raises(ValueError, match=r"output must be \(N, d\)"):
        flat.run(x[:2], x[:2])


class _BNEncoder(nn.Module):
    """An encoder with BatchNorm: in train mode its output depends on the batch and its statistics move."""

    def __init__(self, gen):
        super().__init__()
        self.gen = gen
        self.bn = nn.BatchNorm1d(gen.latent_dim)

    def forward(self, x):
        return self.bn(self.gen.encode(x))


def test_encoder_runs_in_eval_mode_and_modes_are_restored():
    x = _faces(40, 1, 8)
    gen = PCAGenerator.fit(x, k=6)
    enc = _BNEncoder(gen).train()
    sub = _Embed(64).train()
    before = enc.bn.running_mean.clone()
    attack = GenerativePatchAttack(sub, gen.train(), encoder=enc, mask=torch.ones(8, 8, dtype=torch.bool),
                                   init="encoder", steps=2, latent_bound=None)  # fmt: skip
    res = attack.run(x[:4], x[4:8])
    assert torch.equal(enc.bn.running_mean, before)  # eval mode: statistics untouched
    assert enc.training and sub.training and gen.training  # every mode restored
    # eval-mode BatchNorm with fresh statistics is the identity: the start code is the exact projection
    assert torch.allclose(res.latent_start, gen.encode(x[4:8]), atol=1e-4)


def test_float64_faces_with_a_float32_generator():
    x = _faces(40, 1, 8)
    gen = PCAGenerator.fit(x, k=6)  # float32 buffers
    sub = _Embed(64).double()
    attack = GenerativePatchAttack(sub, gen, mask=torch.ones(8, 8, dtype=torch.bool), steps=3, inversion_steps=3)
    res = attack.run(x[:3].double(), x[3:6].double())
    assert res.adversarial.dtype == torch.float64 and res.latent.dtype == torch.float32


def test_dodging_lowers_the_cosine_and_init_image_and_patience():
    x = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(6))
    gen = PCAGenerator.fit(x, k=10)
    sub = _Embed(64)
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[1:6, 1:7] = True
    att = x[:6]
    enrolled = att.flip(-1)
    attack = GenerativePatchAttack(sub, gen, goal="dodge", mask=mask, steps=40, latent_bound=3.0)
    res = attack.run(att, enrolled, init_image=att)
    with torch.no_grad():
        cos = torch.nn.functional.cosine_similarity
        assert float(cos(sub(res.adversarial), sub(enrolled)).mean()) < float(cos(sub(res.start), sub(enrolled)).mean())
    # init_image: the start inverts that image, not the victim
    assert torch.allclose(res.latent_start, invert(gen, att, mask[None, None], steps=200, latent_bound=3.0), atol=1e-3)
    # patience stops a run whose loss cannot fall (a zero-gradient substitute)
    flat = GenerativePatchAttack(lambda z: torch.ones(z.shape[0], 3) + 0 * z.sum(), gen, mask=mask, steps=50,
                                 init="mean", patience=4)  # fmt: skip
    assert flat.run(att, x[6:12]).steps == 5


def test_invert_checks_its_mask():
    x = _faces(10, 1, 8)
    gen = PCAGenerator.fit(x, k=4)
    with pytest.raises(ValueError, match="mask must be binary"):
        invert(gen, x[:2], torch.full((8, 8), 7.0))
    with pytest.raises(ValueError, match="mask of shape"):
        invert(gen, x[:2], torch.ones(4, 4, dtype=torch.bool))


def test_out_of_range_generator_is_refused_before_the_loop():
    class Wild(nn.Module):
        latent_dim = 2

        def forward(self, z):
            return (z.sum(1) + 5.0).view(-1, 1, 1, 1).expand(-1, 1, 8, 8)

    calls = []

    def sub(x):
        calls.append(1)
        return x.flatten(1)[:, :4]

    attack = GenerativePatchAttack(sub, Wild(), mask=torch.ones(8, 8, dtype=torch.bool), init="mean", steps=20)
    x = _faces(4, 1, 8)
    with pytest.raises(ValueError, match=r"generator output must lie in \[0, 1\]"):
        attack.run(x[:2], x[2:4])
    assert len(calls) == 1  # only the victim's reference embedding: no step was taken
