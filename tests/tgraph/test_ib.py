"""CLUB and MINE against closed forms on a Gaussian pair; the IB encoder's update schedule."""

from __future__ import annotations

import math

import torch

from bastion.tgraph.ib import CLUB, MINE, InformationBottleneck


def test_mine_below_exact_mi_below_club_on_a_gaussian_pair():
    """x ~ N(0, I_2), z = x + N(0, I_2): I(x; z) = 1/2 * 2 * log 2 = 0.693 nats. With the best Gaussian
    q(x | z) = N(z / 2, 1/2), the CLUB value is 1/2 * 2 * (1.5 - 0.5) / 0.5 = 2.0 (a loose but valid bound)."""
    torch.manual_seed(0)
    d = 2
    exact = 0.5 * d * math.log(2.0)
    club, mine = CLUB(d, d, 64), MINE(d, d, 64)
    oc, om = torch.optim.Adam(club.parameters(), 5e-3), torch.optim.Adam(mine.parameters(), 5e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(1000):
        x = torch.randn(256, d, generator=g)
        z = x + torch.randn(256, d, generator=g)
        oc.zero_grad()
        (-club.log_likelihood(z, x)).backward()
        oc.step()
        om.zero_grad()
        (-mine(x, z, g)).backward()
        om.step()
    with torch.no_grad():
        x = torch.randn(20000, d, generator=g)
        z = x + torch.randn(20000, d, generator=g)
        c, m = float(club(z, x, g)), float(mine(x, z, g))
    assert exact - 0.2 < m < exact + 0.05, m
    assert c > exact and abs(c - 2.0) < 0.2, c


def test_ib_fits_estimators_only_in_early_epochs_and_grows_with_the_classes():
    torch.manual_seed(0)
    ib = InformationBottleneck(8, 3, hidden=16, estimator_epochs=2)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    mine_before = [p.clone() for p in ib.mine.parameters()]
    enc_before = [p.clone() for p in ib.encoder.parameters()]
    out = ib.update(x, y, epoch=5)  # past the estimator epochs: only the encoder moves
    assert set(out) == {"club", "mine"}
    assert all(torch.equal(a, b) for a, b in zip(mine_before, ib.mine.parameters(), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(enc_before, ib.encoder.parameters(), strict=True))
    ib.update(x, y, epoch=0)
    assert not all(torch.equal(a, b) for a, b in zip(mine_before, ib.mine.parameters(), strict=True))
    ib.set_classes(6)
    assert ib.club.y_dim == 6
    ib.update(x, torch.randint(0, 6, (64,)), epoch=0)
    assert ib(x).shape == (64, 8)
