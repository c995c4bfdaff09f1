from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch

from bastion.core.report import html_table, markdown_table, new_figure, save_figure, to_jsonable, write_json


@dataclass
class Row:
    name: str
    value: torch.Tensor


def test_json_conversion_and_nan_become_null(tmp_path):
    obj = {"row": Row("a", torch.tensor([1.0, float("nan")])), "n": np.float32(2.5), "flag": np.bool_(True)}
    path = write_json(tmp_path / "sub" / "out.json", obj)
    assert json.loads(path.read_text()) == {
        "row": {"name": "a", "value": [1.0, None]},
        "n": 2.5,
        "flag": True,
    }


def test_tables_escape_and_fill_missing_cells():
    rows = [{"a": 1, "b": "x|y"}, {"a": 0.123456, "c": None}]
    md = markdown_table(rows)
    assert md.splitlines()[0] == "| a | b | c |"
    assert "x\\|y" in md and "| 0.1235 | - | - |" in md
    html = html_table([{"k": "<script>"}])
    assert "&lt;script&gt;" in html and "<script>" not in html


def test_figure_axes_are_squeezed_like_pyplot():
    _, ax = new_figure()
    assert hasattr(ax, "plot")
    _, (left, right) = new_figure(1, 2)
    assert hasattr(left, "plot") and hasattr(right, "plot")
    _, grid = new_figure(2, 3)
    assert grid.shape == (2, 3)


def test_figure_is_written_as_png(tmp_path):
    fig, ax = new_figure()
    ax.plot([0, 1], [1, 0])
    path = save_figure(fig, tmp_path / "f.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert to_jsonable(path) == str(path)
