from __future__ import annotations

import json

import pytest

from bastion.reproduce import Claim, ReproductionResult, claim, write_report
from bastion.reproduce.report import SYSTEMS


def _result(holds_value: float) -> ReproductionResult:
    return ReproductionResult(
        name="zoo", system="foundation", title="Zoo", quick=True, seed=0,
        config={"k": 1},
        tables={"numbers": [{"model": "m", "acc": holds_value}]},
        claims=[claim("acc at least 0.9", {"acc": holds_value}, lambda m: m["acc"] >= 0.9, reference={"paper": 0.95})],
    )  # fmt: skip


def test_claim_holds_is_computed_from_measured():
    assert claim("x", {"v": 1}, lambda m: m["v"] > 0).holds is True
    assert claim("x", {"v": -1}, lambda m: m["v"] > 0).holds is False
    c = claim("x", {"v": 1}, lambda m: m["v"] > 0)
    assert isinstance(c, Claim) and c.measured == {"v": 1}


@pytest.mark.parametrize(("value", "word", "css"), [(0.93, "holds", "ok"), (0.5, "does not hold", "bad")])
def test_report_marks_each_claim(tmp_path, value, word, css):
    index = write_report([_result(value)], tmp_path)
    page = index.read_text()
    assert f"class='{css}'>{word}</td>" in page
    assert "acc at least 0.9" in page and "paper: 0.95" in page
    # every system has a section; those without a reproduction say so
    for title, _, _ in SYSTEMS:
        assert title.split(":")[0].replace("&", "&amp;") in page
    assert page.count("Not reproduced yet") == len(SYSTEMS) - 1
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["results"][0]["claims"][0]["holds"] is (value >= 0.9)
    assert data["environment"]["packages"]["torch"]


def test_zoo_reproduction_end_to_end_on_the_mnist5k_models(tmp_path):
    """The zoo reproduction's code path (tables, claims, figure) on the fast MNIST-5k subset."""
    from bastion.core import MODELS
    from bastion.reproduce.zoo import ZooReproduction

    names = [n for n in MODELS.names() if n.startswith("mnist5k-")]
    result = ZooReproduction(models=names).run(tmp_path, quick=True, seed=0, quiet=True)
    rows = result.tables["Small classifiers (28x28 grey)"]
    assert sorted(r["model"] for r in rows) == names
    assert all(r["test images"] == 1000 and 0.9 < r["test accuracy"] <= 1 for r in rows)
    texts = [c.claim for c in result.claims]
    assert not any("fashion-mnist" in t for t in texts)
    assert all(c.holds for c in result.claims), [(c.claim, c.measured) for c in result.claims if not c.holds]
    assert (tmp_path / "zoo.png").read_bytes()[:4] == b"\x89PNG"


def test_boundary_reproduction_quick_path(tmp_path):
    """The boundary reproduction's code path on 3 digits and 200 queries (the real quick run is 10 x 1K)."""
    from bastion.reproduce import boundary

    result = boundary.BoundaryReproduction(n_images=3, budget=200).run(tmp_path, quick=True, seed=0, quiet=True)
    rows = result.tables["Median MSE at equal queries"]
    assert [r["method"] for r in rows] == ["HSJA", "QEBA-S", "QEBA-F", "QEBA-I", "Boundary Attack"]
    assert all(r["queries used (max)"] <= 200 for r in rows)
    assert len(result.claims) == 1
    assert set(result.claims[0].measured) == {"HSJA @200", "QEBA-S @200", "QEBA-F @200", "QEBA-I @200"}
    assert (tmp_path / "curves.png").is_file()
