"""Universal perturbations: the ball at every step, no data read by the data-free fit, determinism, fooling rate
against brute force, the errors, the FFF / GD-UAP / divergence losses against hand computations, DeepFool against
its closed form on a linear classifier and against ART's DeepFool."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from bastion.attacks.transfer.uap import (
    DataFreeUAP,
    block_layers,
    deepfool,
    deepfool_uap,
    fff,
    fooling_rate,
    gd_uap,
    preprocess_zero,
    sgd_uap,
    sign_noise,
    transfer_matrix,
    uap_objective,
)
from bastion.zoo import Normalize

SHAPE = (1, 8, 8)


def tiny_net(seed: int = 0, out: int = 5) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        Normalize(0.2, 0.3),
        nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 16, 12), nn.ReLU(),
            nn.Linear(12, out),
        ),
    ).eval()  # fmt: skip


class Boom(Exception):
    pass


class RaisingLoader:
    """Any read raises: a target data set that must never be touched."""

    touched = 0

    def _boom(self, *args, **kwargs):
        RaisingLoader.touched += 1
        raise Boom("target data were read")

    __iter__ = __getitem__ = __len__ = __array__ = _boom

    def __getattr__(self, name):
        RaisingLoader.touched += 1
        raise Boom(f"target data attribute {name} was read")


class Recorder(nn.Module):
    """Wraps a model; records every input batch it sees."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.model(x)


@pytest.mark.parametrize(
    ("objective", "prior"),
    [("divergence", "range"), ("energy", "jigsaw"), ("logit", "none"), ("kl", "class_impression"),
     ("activation", "none")],
)  # fmt: skip
def test_delta_in_ball_every_step(objective, prior):
    xi = 0.1
    res = DataFreeUAP(tiny_net(), xi=xi, objective=objective, prior=prior, steps=12, batch_size=4, lr=0.05,
                      ci_pool=4, ci_steps=3).fit(SHAPE)  # fmt: skip
    assert len(res.history) == 12
    assert all(h["linf"] <= xi for h in res.history) and float(res.delta.abs().max()) <= xi
    assert max(h["linf"] for h in res.history) > 0.9 * xi  # it does move to the border (not a trivial pass)
    assert all(math.isfinite(h["loss"]) for h in res.history)
    x = torch.rand(16, *SHAPE)
    for r in (sgd_uap(tiny_net(), x, xi, steps=6, lr=0.05), deepfool_uap(tiny_net(), x, xi, max_passes=2)):
        assert all(h["linf"] <= xi for h in r.history) and float(r.delta.abs().max()) <= xi


def test_rescale_and_halving_keep_ball():
    # a huge lr saturates delta at +-xi at once: the saturation rule must halve it
    res = DataFreeUAP(tiny_net(), xi=0.05, objective="energy", prior="range", steps=20, batch_size=2, lr=1.0).fit(SHAPE)
    assert any(h["rescaled"] for h in res.history)
    assert float(res.delta.abs().max()) <= 0.05
    res = fff(tiny_net(), xi=0.05, steps=7, halve_every=3).fit(SHAPE)
    assert [h["rescaled"] for h in res.history] == [False, False, True, False, False, True, False]


def test_fit_reads_no_data_and_surrogate_sees_only_prior_samples(monkeypatch):
    target_data = RaisingLoader()
    net = tiny_net()
    net.train_data = target_data  # lying around on the surrogate: must not be touched
    rec = Recorder(net)
    drawn: list[torch.Tensor] = []
    orig = DataFreeUAP._sampler

    def spy(self, shape, public, gen):
        draw = orig(self, shape, public, gen)

        def wrapped(*args):  # training batches, and (g, n) for the proxy validation set
            x = draw(*args)
            drawn.append(x.clone())
            return x

        return wrapped

    monkeypatch.setattr(DataFreeUAP, "_sampler", spy)
    uap = DataFreeUAP(rec, xi=0.1, objective="divergence", prior="range", steps=5, batch_size=3)
    with pytest.raises(ValueError, match="prior_data"):
        uap.fit(SHAPE, prior_data=target_data)  # handing it data is refused without reading it
    res = uap.fit(SHAPE)
    assert RaisingLoader.touched == 0
    # every image the surrogate saw (training batches and the proxy validation set) is a prior sample, or a
    # prior sample plus a perturbation inside the ball
    assert rec.seen
    pool = torch.cat(drawn).flatten(1)
    for x in rec.seen:
        dist = (x.flatten(1)[:, None, :] - pool[None]).abs().amax(-1)  # (seen, drawn) linf distances
        assert bool((dist.amin(1) <= 0.1 + 1e-6).all())
    assert float(res.delta.abs().max()) <= 0.1
    # a public-prior fit reads only what it is given, and rejects a non-tensor without iterating it
    with pytest.raises(TypeError, match="prior_data"):
        DataFreeUAP(net, xi=0.1, prior="public", steps=1).fit(SHAPE, prior_data=target_data)
    assert RaisingLoader.touched == 0


def test_same_seed_same_bits_and_seed_matters():
    kw = dict(xi=0.1, objective="divergence", prior="jigsaw", steps=6, batch_size=3)
    a = DataFreeUAP(tiny_net(), seed=3, **kw).fit(SHAPE).delta
    b = DataFreeUAP(tiny_net(), seed=3, **kw).fit(SHAPE).delta
    c = DataFreeUAP(tiny_net(), seed=4, **kw).fit(SHAPE).delta
    assert torch.equal(a, b) and not torch.equal(a, c)
    x = torch.rand(20, *SHAPE, generator=torch.Generator().manual_seed(0))
    assert torch.equal(
        sgd_uap(tiny_net(), x, 0.1, steps=4, seed=1).delta, sgd_uap(tiny_net(), x, 0.1, steps=4, seed=1).delta
    )
    assert torch.equal(sign_noise(SHAPE, 0.1, 5), sign_noise(SHAPE, 0.1, 5))


def test_fooling_rate_vs_brute_force_and_matrix():
    net = tiny_net()
    x = torch.rand(37, *SHAPE, generator=torch.Generator().manual_seed(1))
    d = sign_noise(SHAPE, 0.3, seed=2)
    assert d.shape == (1, *SHAPE) and torch.all(d.abs() == d.abs().max()) and float(d.abs().max()) <= 0.3
    brute = sum(int(net(x[i : i + 1]).argmax()) != int(net((x[i : i + 1] + d).clamp(0, 1)).argmax()) for i in range(37))
    assert fooling_rate(net, x, d, batch_size=5) == pytest.approx(brute / 37)
    assert fooling_rate(net, x, torch.zeros(1, *SHAPE)) == 0.0
    rows = transfer_matrix({"noise": d, "zero": torch.zeros(SHAPE)}, {"a": net, "b": tiny_net(1)}, x)
    assert rows[0]["a"] == pytest.approx(brute / 37) and rows[1]["b"] == 0.0


def test_proxy_validation_returns_best_checkpoint(monkeypatch):
    # FFF halves delta on its last step: "last" returns the halved delta, "best" the validated one before it
    kw = dict(xi=0.1, steps=6, halve_every=6, lr=0.05, seed=2)
    r_last, r_best = fff(tiny_net(), select="last", **kw).fit(SHAPE), fff(tiny_net(), **kw).fit(SHAPE)
    assert [h["loss"] for h in r_last.history] == [h["loss"] for h in r_best.history]  # same trajectory
    assert r_last.history[-1]["rescaled"] and r_last.config["chosen_step"] == 5
    assert float(r_last.delta.abs().max()) <= 0.05 + 1e-7  # halved
    assert "val_fooling" in r_best.history[-1]  # scored before the halving
    assert float(r_best.delta.abs().max()) > 0.09 and torch.equal(r_best.delta, 2 * r_last.delta)

    # divergence on the range prior: the returned delta is the checkpoint with the highest proxy fooling rate,
    # recomputed here from the validation images the fit drew (own stream: calls with (generator, n))
    val_draws: list[torch.Tensor] = []
    orig = DataFreeUAP._sampler

    def spy(self, shape, public, gen):
        draw = orig(self, shape, public, gen)

        def wrapped(*args):
            x = draw(*args)
            if args:
                val_draws.append(x.clone())
            return x

        return wrapped

    monkeypatch.setattr(DataFreeUAP, "_sampler", spy)
    net = tiny_net(3)
    uap = DataFreeUAP(net, xi=0.5, objective="divergence", prior="range", steps=20, batch_size=4, lr=0.1,
                      val_size=10, validate_every=4, seed=0)  # fmt: skip
    res = uap.fit(SHAPE)
    val_x = torch.cat(val_draws)
    assert val_x.shape[0] == 10
    checks = [h for h in res.history if "val_fooling" in h]
    assert [h["step"] for h in checks] == [
        h["step"] for h in res.history if (h["step"] + 1) % 4 == 0 or h["rescaled"] or h["step"] == 19
    ]
    best = max(checks, key=lambda h: (h["val_fooling"], h["val_objective"]))
    assert res.config["chosen_step"] == best["step"] != 19  # an early checkpoint beat the final one here
    assert len({h["val_fooling"] for h in checks}) > 2
    assert fooling_rate(net, val_x, res.delta) == pytest.approx(best["val_fooling"])
    assert val(uap_objective(net, val_x, res.delta, "divergence")) == pytest.approx(best["val_objective"], rel=1e-5)
    uap.select = "last"
    assert [h["loss"] for h in uap.fit(SHAPE).history] == [h["loss"] for h in res.history]

    # equal keys: the first checkpoint wins (a dead surrogate: zero features, zero gradient, delta never moves)
    dead = nn.Sequential(nn.Flatten(), nn.Linear(64, 5), nn.ReLU())
    nn.init.zeros_(dead[1].weight)
    nn.init.constant_(dead[1].bias, -1.0)
    res = DataFreeUAP(dead, xi=0.1, objective="divergence", prior="range", steps=6, validate_every=2).fit(SHAPE)
    assert [h["step"] for h in res.history if "val_fooling" in h] == [1, 3, 5]
    assert res.config["chosen_step"] == 1 and res.config["validate_every"] == 2


def test_errors():
    net = tiny_net()
    with pytest.raises(ValueError, match="xi"):
        DataFreeUAP(net, xi=0.0)
    with pytest.raises(ValueError, match="xi"):
        DataFreeUAP(net, xi=-0.1)
    with pytest.raises(ValueError, match="steps"):
        DataFreeUAP(net, steps=0)
    with pytest.raises(ValueError, match="objective"):
        DataFreeUAP(net, objective="nope")
    with pytest.raises(ValueError, match="prior"):
        DataFreeUAP(net, prior="nope")
    with pytest.raises(ValueError, match="select"):
        DataFreeUAP(net, select="first")
    with pytest.raises(ValueError, match="val_size"):
        DataFreeUAP(net, val_size=0)
    with pytest.raises(ValueError, match="validate_every"):
        DataFreeUAP(net, validate_every=0)
    with pytest.raises(KeyError, match=r"available layers.*1\.0"):
        DataFreeUAP(net, layers=["1.99"])
    with pytest.raises(ValueError, match=r"input_shape .* does not fit the surrogate"):
        DataFreeUAP(net, prior="range", steps=1).fit((1, 12, 12))  # the model takes 8x8
    with pytest.raises(ValueError, match="prior_data"):
        DataFreeUAP(net, prior="public", steps=1).fit((1, 8, 8), prior_data=torch.rand(4, 1, 9, 9))
    with pytest.raises(ValueError, match="prior_data"):
        DataFreeUAP(net, prior="public", steps=1).fit((1, 8, 8))
    with pytest.raises(ValueError, match="xi"):
        sgd_uap(net, torch.rand(4, *SHAPE), 0.0)
    with pytest.raises(ValueError, match="steps"):
        sgd_uap(net, torch.rand(4, *SHAPE), 0.1, steps=0)
    with pytest.raises(ValueError, match="images"):
        deepfool_uap(net, torch.rand(4, *SHAPE) * 2, 0.1)
    with pytest.raises(ValueError, match="delta"):
        fooling_rate(net, torch.rand(4, *SHAPE), torch.zeros(1, 1, 9, 9))
    with pytest.raises(ValueError, match="xi"):
        sign_noise(SHAPE, 0.0)


def val(t: torch.Tensor) -> float:
    return float(t.detach())


def test_losses_match_hand_computation():
    torch.manual_seed(0)
    lin, lin2 = nn.Linear(4, 3), nn.Linear(3, 2)
    with torch.no_grad():
        lin.bias.fill_(0.5)  # some units active, some maybe not
    net = nn.Sequential(nn.Flatten(), lin, nn.ReLU(), lin2).eval()
    x = torch.rand(2, 1, 2, 2)
    d = torch.rand(1, 1, 2, 2) - 0.5
    xp = (x + d).clamp(0, 1)
    with torch.no_grad():
        h = lambda z: torch.relu(lin(z.flatten(1)))  # noqa: E731
        energy = math.log(float(h(xp).pow(2).sum()) / 2)  # GD-UAP: log(l2_loss(blob)), blob = whole batch
        act = math.log(float(h(xp).abs().mean()))  # FFF: log mean |blob|
        div = float(torch.log((h(xp) - h(x)).pow(2).sum(1) + 1e-9).mean())
        lg = float(torch.log((lin2(h(xp)) - lin2(h(x))).pow(2).sum(1) + 1e-9).mean())
        p, q = torch.softmax(lin2(h(x)), 1), torch.softmax(lin2(h(xp)), 1)
        kl = float(torch.log((p * (p.log() - q.log())).sum(1) + 1e-9).mean())
    assert block_layers(net) == ["2"]
    assert val(uap_objective(net, x, d, "energy")) == pytest.approx(energy, rel=1e-5)
    assert val(uap_objective(net, x, d, "activation")) == pytest.approx(act, rel=1e-5)
    assert val(uap_objective(net, x, d, "divergence")) == pytest.approx(div, rel=1e-5)
    assert val(uap_objective(net, x, d, "logit")) == pytest.approx(lg, rel=1e-5)
    assert val(uap_objective(net, x, d, "kl")) == pytest.approx(kl, rel=1e-4)
    # two layers add up; FFF / GD-UAP presets use the right objective, prior and schedule
    both = val(uap_objective(net, x, d, "energy", ["2", "logits"]))
    assert both == pytest.approx(energy + math.log(val(lin2(h(xp)).pow(2).sum()) / 2), rel=1e-5)
    f = fff(net, xi=0.1)
    assert (f.objective, f.prior, f.halve_every, f.rescale, f.batch_size) == ("activation", "none", 300, False, 1)
    g = gd_uap(net, prior="range", xi=0.1)
    assert (g.objective, g.prior, g.rescale) == ("energy", "range", True)
    assert preprocess_zero(tiny_net(), 1).tolist() == pytest.approx([0.2])


def linear_model(seed: int = 0, classes: int = 4, d: int = 6) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, classes)).eval()


def test_deepfool_step_equals_closed_form_on_linear():
    net = linear_model()
    W, b = net[1].weight.detach().double(), net[1].bias.detach().double()
    x = torch.full((1, 1, 2, 3), 0.5)
    f = W @ x.flatten().double() + b
    k0 = int(f.argmax())
    cands = [k for k in range(4) if k != k0]
    dist = [abs(float(f[k] - f[k0])) / float((W[k] - W[k0]).norm()) for k in cands]
    lk = cands[int(np.argmin(dist))]
    w = W[lk] - W[k0]
    r_star = abs(float(f[lk] - f[k0])) / float(w.norm() ** 2) * w
    x_adv, it = deepfool(net, x, overshoot=0.0, max_iter=1, clip=None)
    assert it == 1
    assert torch.allclose((x_adv - x).flatten().double(), r_star, atol=1e-5)
    # lands on the boundary between k0 and lk
    fa = W @ x_adv.flatten().double() + b
    assert abs(float(fa[lk] - fa[k0])) < 1e-4
    # with overshoot it crosses
    x_adv, _ = deepfool(net, x, overshoot=0.02, max_iter=5, clip=None)
    assert int(net(x_adv).argmax()) != k0


def test_deepfool_matches_art():
    pytest.importorskip("art")
    from art.attacks.evasion import DeepFool
    from art.estimators.classification import PyTorchClassifier

    net = linear_model(1)
    clf = PyTorchClassifier(net, loss=nn.CrossEntropyLoss(), input_shape=(1, 2, 3), nb_classes=4, clip_values=(0, 1))
    x = torch.rand(5, 1, 2, 3, generator=torch.Generator().manual_seed(0)) * 0.4 + 0.3
    art_adv = DeepFool(clf, max_iter=50, epsilon=1e-6, nb_grads=4, verbose=False).generate(x.numpy())
    ours = torch.cat([deepfool(net, x[i : i + 1], nb_grads=4, overshoot=1e-6, max_iter=50)[0] for i in range(5)])
    assert np.allclose(ours.numpy(), art_adv, atol=1e-5)


def test_deepfool_uap_fools_and_respects_ball():
    net = linear_model(2, classes=3, d=16)
    x = torch.rand(40, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    res = deepfool_uap(net, x, 0.15, max_passes=3, seed=0)
    assert float(res.delta.abs().max()) <= 0.15
    assert res.history and res.history[-1]["fooling_rate"] == pytest.approx(fooling_rate(net, x, res.delta))
    assert res.history[-1]["fooling_rate"] > fooling_rate(net, x, sign_noise((1, 4, 4), 0.15, 0))
    res2 = deepfool_uap(net, x, 0.15, max_passes=3, seed=0)
    assert torch.equal(res.delta, res2.delta)


def test_review_fixes_bad_inputs_and_dead_layers():
    """A dead tapped layer is an error, not a silent no-op; KL needs logits; stats and cached labels are checked."""
    import pytest
    from torch import nn

    from bastion.attacks.transfer.uap import DataFreeUAP, fooling_rate

    class Dead(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.act = nn.ReLU()
            self.fc = nn.Linear(2 * 6 * 6, 3)
            with torch.no_grad():
                self.conv.weight.zero_()
                self.conv.bias.fill_(-1.0)  # ReLU output is 0 everywhere

        def forward(self, x):
            return self.fc(self.act(self.conv(x)).flatten(1))

    net = Dead()
    with pytest.raises(ValueError, match="all zero"):
        DataFreeUAP(net, xi=0.1, objective="energy", layers=["act"], steps=3).fit((1, 8, 8))
    with pytest.raises(ValueError, match="layers must end with 'logits'"):
        DataFreeUAP(net, xi=0.1, objective="kl", layers=["act"])
    with pytest.raises(ValueError, match="prior_std"):
        DataFreeUAP(net, xi=0.1, prior_std=[float("nan")])
    with pytest.raises(ValueError, match="prior_mean must hold 1 or 1"):
        DataFreeUAP(net, xi=0.1, objective="logit", prior_mean=[0.1, 0.2], steps=1).fit((1, 8, 8))
    with pytest.raises(ValueError, match="input_shape"):
        DataFreeUAP(net, xi=0.1, objective="logit", steps=1).fit((1, 9, 9))
    x = torch.rand(4, 1, 8, 8)
    with pytest.raises(ValueError, match="clean_labels"):
        fooling_rate(net, x, torch.zeros(1, 1, 8, 8), clean_labels=torch.zeros(4, 1, dtype=torch.long))
