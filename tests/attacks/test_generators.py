"""NonLinear-BA and PSBA: generators, their samplers, the probe orientation, the scale search, the cache."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from bastion.attacks.decision import (
    HSJA,
    AEGenerator,
    GANGenerator,
    GeneratorSampler,
    ProgressiveGenerator,
    ProgressiveSampler,
    dct_matrix,
    nonlinear_ba,
    psba,
    psba_scale_search,
    train_generator,
)
from bastion.attacks.decision import generators as gen_mod
from bastion.attacks.decision.engine import _Run, prepare
from bastion.core import BlackBox


def _subspace_gradients(n: int, d: int, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` unit vectors spanning a fixed random ``k``-dim subspace of R^d (and its orthonormal basis)."""
    g = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(d, k, generator=g))
    v = torch.randn(n, k, generator=g) @ basis.T
    return v / v.norm(dim=1, keepdim=True), basis.T


def test_ae_learns_subspace_gradients_and_its_sampler_gives_unit_probes():
    """Independent check: an AE trained on gradients from a 2-dim subspace reconstructs them inside it.

    (Decoding *random* latents is not guaranteed to stay in the subspace: the encoded latents fill a
    2-dim manifold of the latent sphere, which is why the reproduction measures probe alignment.)
    """
    torch.manual_seed(0)
    grads, basis = _subspace_gradients(512, 64, 2)
    recipe = dataclasses.replace(gen_mod.RECIPES["ae"], epochs=8)
    ae, stats = train_generator("ae", grads, (1, 8, 8), recipe=recipe, seed=0)
    assert stats["reconstruction MSE (unit vectors)"] < 0.2 / 64  # cos(recon, target) > 0.9 on average
    held_out = _subspace_gradients(100, 64, 2, seed=0)[1].T @ torch.randn(
        2, 100, generator=torch.Generator().manual_seed(9)
    )
    held_out = (held_out / held_out.norm(dim=0)).T  # new vectors in the same subspace
    with torch.no_grad():
        recon = ae(held_out.reshape(-1, 1, 8, 8))[0].flatten(1)
    energy_in = float(((recon @ basis.T) ** 2).sum(1).mean())
    assert energy_in > 0.9  # isotropic vectors would keep 2/64 = 0.03 of their energy there
    probes = GeneratorSampler(ae.decode, ae.latent_shape)(200, (1, 8, 8), torch.Generator().manual_seed(1))
    assert probes.shape == (200, 1, 8, 8)
    torch.testing.assert_close(probes.flatten(1).norm(dim=1), torch.ones(200))


def test_same_seed_same_generator_weights():
    grads, _ = _subspace_gradients(128, 64, 3)
    for kind in ("vae", "gan"):
        recipe = dataclasses.replace(gen_mod.RECIPES[kind], epochs=1)
        a, _ = train_generator(kind, grads, (1, 8, 8), recipe=recipe, seed=3)
        b, _ = train_generator(kind, grads, (1, 8, 8), recipe=recipe, seed=3)
        for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(va, vb), (kind, k)


def test_pgan_stages_snapshots_and_sampler_shapes():
    grads, _ = _subspace_gradients(64, 16 * 16, 3)
    recipe = dataclasses.replace(gen_mod.RECIPES["pgan"], epochs=1, batch_size=32)
    g, stats = train_generator("pgan", grads, (1, 16, 16), recipe=recipe, seed=0)
    assert g.sizes == (4, 8, 16)
    assert set(g.snapshots) == {4, 8, 16}
    assert all(f"stage {s}: critic loss" in stats for s in g.sizes)
    z = torch.randn(5, *g.latent_shape)
    for s in g.sizes:
        with torch.no_grad():
            out = g.at_scale(z, s)
        assert out.shape == (5, 1, s, s) and float(out.abs().max()) <= 1
    with pytest.raises(ValueError, match="size must be one of"):
        g.at_scale(z, 5)
    # a scale's output comes from the weights as that stage ended, not from the later-trained blocks
    twin = ProgressiveGenerator(1, sizes=(4, 8, 16)).eval()
    twin.load_state_dict(g.snapshots[4])
    with torch.no_grad():
        torch.testing.assert_close(g.at_scale(z, 4), twin(z, 0))
        assert not torch.allclose(g(z, 0), twin(z, 0))
        torch.testing.assert_close(g.at_scale(z, 16), g(z))
    probes = ProgressiveSampler(g, 4)(7, (1, 16, 16), torch.Generator().manual_seed(0))
    assert probes.shape == (7, 1, 16, 16)
    torch.testing.assert_close(probes.flatten(1).norm(dim=1), torch.ones(7))


def test_psba_frequency_variant_has_no_energy_outside_the_block():
    g = ProgressiveGenerator(1, sizes=(4, 8, 16), widths=(8, 8, 8), base_width=8).eval()
    probes = ProgressiveSampler(g, 16, frequency_ratio=4)(10, (1, 16, 16), torch.Generator().manual_seed(0))
    d = dct_matrix(16).float()
    spectrum = d @ probes[:, 0] @ d.T
    assert float(spectrum[:, 4:, :].abs().max()) < 1e-5 and float(spectrum[:, :, 4:].abs().max()) < 1e-5
    assert float(spectrum[:, :4, :4].abs().max()) > 1e-2


class _Fixed:
    """A probe sampler returning +-e_j vectors with random signs; ``orient`` as PSBA's samplers."""

    def __init__(self, orient: bool):
        self.orient = orient

    def __call__(self, n, shape, generator):
        d = int(torch.tensor(shape).prod())
        idx = torch.randint(0, d, (n,), generator=generator)
        sign = torch.randint(0, 2, (n,), generator=generator).float() * 2 - 1
        return (torch.nn.functional.one_hot(idx, d).float() * sign[:, None]).view(n, *shape)


class _Recorder(nn.Module):
    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = w
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.clone())
        s = x.flatten(1) @ self.w
        return torch.stack([s, -s], 1)


@pytest.mark.parametrize("orient", [True, False])
def test_engine_orients_probes_towards_the_original_only_when_asked(orient):
    d = 16
    w = torch.linspace(-1, 1, d)
    model = _Recorder(w)
    x0 = torch.full((1, 1, 4, 4), 0.5)
    attack = HSJA(sampler=_Fixed(orient), seed=0)
    box, x, y, t, s, budget = prepare(attack, model, x0, torch.tensor([1]), 500, None, None, None, (0.0, 1.0))
    run = _Run(attack, box, x, y, t, s, budget, (0.0, 1.0), True)
    run.x_adv[0] = x0[0] + 0.3 * torch.sign(w).view(1, 4, 4) * 0.5
    model.seen.clear()
    run.estimate(torch.tensor([0]), torch.tensor([0.01]), torch.tensor([200]))
    probes = torch.cat(model.seen).flatten(1) - run.x_adv[0].flatten()
    towards = (x0 - run.x_adv).flatten()
    inner = probes @ towards
    if orient:
        assert bool((inner >= -1e-9).all())
    else:
        assert int((inner < 0).sum()) > 50  # about half point away without the orientation


def test_scale_search_keeps_the_best_and_stops_when_the_next_scale_is_worse():
    """Scale 2 decodes the model's true boundary normal, scale 4 noise: the search picks 2 and never tries 8."""
    d = 64
    w = torch.randn(d, generator=torch.Generator().manual_seed(0))
    net = nn.Sequential(nn.Flatten(), nn.Linear(d, 2))
    with torch.no_grad():
        net[1].weight.copy_(torch.stack([w, -w]))
        net[1].bias.zero_()

    class Gen:
        sizes = (2, 4, 8)
        latent_shape = (3,)

        def __init__(self):
            self.calls: list[int] = []

        def at_scale(self, z, scale):
            self.calls.append(scale)
            n = len(z)
            if scale == 2:  # the normal, with random signs and a little noise
                return (z[:, :1].sign() * w + 0.01 * z[:, 1:2] * torch.ones(d)).view(n, 1, 8, 8)
            g = torch.Generator().manual_seed(int(z.abs().sum() * 1e6) % 2**31)
            return torch.randn(n, 1, 8, 8, generator=g)

    gen = Gen()
    x = torch.rand(6, 1, 8, 8)
    y = net(x).argmax(1)
    search = psba_scale_search(gen, net, x, y, budget=300, seed=0)
    assert search.scale == 2
    assert set(search.median_mse) == {2, 4}
    assert search.median_mse[2] < search.median_mse[4]
    assert 8 not in gen.calls
    assert 0 < search.queries <= 2 * 6 * 300


def test_scale_search_refuses_a_blackbox():
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    box = BlackBox(net, oracle="label", input_shape=(1, 8, 8), budget=100)
    g = ProgressiveGenerator(1, sizes=(2, 4, 8), widths=(4, 4, 4), base_width=4)
    with pytest.raises(TypeError, match="not a BlackBox"):
        psba_scale_search(g, box, torch.rand(2, 1, 8, 8), torch.tensor([0, 1]))


def test_factories_validate_their_generators():
    with pytest.raises(TypeError, match="latent_shape"):
        nonlinear_ba(lambda z: z)
    with pytest.raises(TypeError, match="at_scale"):
        psba(AEGenerator((1, 8, 8)), scale=4)
    with pytest.raises(ValueError, match="latent"):
        GeneratorSampler(lambda z: z, (4,), latent="uniform")
    ae = nonlinear_ba(AEGenerator((1, 8, 8)))
    assert ae.sampler.latent == "unit"
    gan = nonlinear_ba(GANGenerator((1, 8, 8)).eval())
    assert gan.sampler.latent == "gaussian"
    with pytest.raises(ValueError, match="gradients have 64 values"):
        train_generator("ae", torch.randn(64, 64), (1, 4, 4))
    with pytest.raises(ValueError, match="NaN"):
        train_generator("ae", torch.full((64, 16), float("nan")), (1, 4, 4))
    with pytest.raises(ValueError, match="kind"):
        train_generator("flow", torch.randn(64, 16), (1, 4, 4))


def test_nonlinear_ba_attack_stays_within_budget_and_is_adversarial():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    x = torch.rand(4, 1, 8, 8)
    y = net(x).argmax(1)
    attack = nonlinear_ba(AEGenerator((1, 8, 8)).eval(), seed=0)
    r = attack(net, x, y, budget=150)
    assert int(r.queries.max()) <= 150
    ok = r.success
    assert bool(ok.any())
    assert bool((net(r.adversarial[ok]).argmax(1) != y[ok]).all())


def test_zoo_generator_is_cached_checked_and_retrained(tmp_cache, monkeypatch):
    grads, _ = _subspace_gradients(64, 784, 4)
    monkeypatch.setattr(gen_mod, "zoo_reference_gradients", lambda dataset, references: grads)
    monkeypatch.setitem(gen_mod.RECIPES, "ae", dataclasses.replace(gen_mod.RECIPES["ae"], epochs=1))
    trained = []
    real_train = gen_mod.train_generator
    monkeypatch.setattr(gen_mod, "train_generator", lambda *a, **k: trained.append(1) or real_train(*a, **k))
    first, meta = gen_mod.zoo_generator("ae")
    assert meta["kind"] == "ae" and "seconds" in meta["training"] and len(trained) == 1
    (path,) = (tmp_cache / "zoo").glob("nlba-ae-*.safetensors")
    original = path.read_bytes()
    again, _ = gen_mod.zoo_generator("ae")
    assert len(trained) == 1  # a cache hit
    for (k, a), b in zip(first.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    path.write_bytes(original[:-8] + b"corrupt!")  # damage: detected, deleted, retrained to the same bytes
    third, _ = gen_mod.zoo_generator("ae")
    assert len(trained) == 2
    assert path.read_bytes() == original
    for (k, a), b in zip(first.state_dict().items(), third.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_zoo_pgan_round_trip_keeps_every_scale(tmp_cache, monkeypatch):
    grads, _ = _subspace_gradients(64, 784, 4)
    monkeypatch.setattr(gen_mod, "zoo_reference_gradients", lambda dataset, references: grads)
    tiny = dataclasses.replace(gen_mod.RECIPES["pgan"], epochs=1, batch_size=32)
    monkeypatch.setitem(gen_mod.RECIPES, "pgan", tiny)
    trained, _ = gen_mod.zoo_generator("pgan")
    loaded, _ = gen_mod.zoo_generator("pgan")
    z = torch.randn(4, *trained.latent_shape)
    with torch.no_grad():
        for size in (7, 14, 28):
            torch.testing.assert_close(loaded.at_scale(z, size), trained.at_scale(z, size), rtol=0, atol=0)
        torch.testing.assert_close(loaded(z), trained(z), rtol=0, atol=0)
        doubled = loaded.double()  # the per-scale copies follow .to() / .double()
        assert doubled.at_scale(z.double(), 7).dtype == torch.float64
