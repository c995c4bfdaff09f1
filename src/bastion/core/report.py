"""Report helpers: tables as Markdown, HTML and JSON; matplotlib figures on the Agg backend.

Figures are built with ``matplotlib.figure.Figure`` directly (no ``pyplot``), so nothing here touches
global GUI state and it works on a machine with no display.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = [
    "environment",
    "format_value",
    "html_table",
    "markdown_table",
    "new_figure",
    "save_figure",
    "to_jsonable",
    "write_json",
]


def to_jsonable(obj: Any) -> Any:
    """Convert dataclasses, tensors, NumPy values and paths into plain JSON types.

    Non-finite floats become ``None`` (JSON has no NaN).

    >>> to_jsonable({"a": torch.tensor([1.5, float("nan")]), "b": np.int64(3)})
    {'a': [1.5, None], 'b': 3}
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, torch.Tensor):
        return to_jsonable(obj.detach().cpu().tolist() if obj.dim() else obj.item())
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    raise TypeError(f"cannot convert {type(obj).__name__} to JSON")


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` (after :func:`to_jsonable`) to ``path`` atomically, creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n")
    tmp.replace(path)
    return path


def format_value(value: Any, floatfmt: str = ".4g") -> str:
    """Format one table cell: floats with ``floatfmt``, booleans as yes/no, ``None`` as a dash."""
    if value is None:
        return "-"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, float | np.floating):
        return "nan" if math.isnan(value) else format(float(value), floatfmt)
    return str(value)


def _columns(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None) -> list[str]:
    if columns is not None:
        return list(columns)
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def markdown_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, floatfmt: str = ".4g"
) -> str:
    """Render rows (dicts) as a GitHub Markdown table; missing cells show a dash.

    >>> print(markdown_table([{"model": "cnn", "acc": 0.98123}]))
    | model | acc |
    |---|---|
    | cnn | 0.9812 |
    """
    cols = _columns(rows, columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        cells = [format_value(row.get(c), floatfmt).replace("|", "\\|") for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def html_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, floatfmt: str = ".4g") -> str:
    """Render rows (dicts) as an HTML ``<table>``, every cell escaped."""
    cols = _columns(rows, columns)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for row in rows:
        cells = "".join(f"<td>{html.escape(format_value(row.get(c), floatfmt))}</td>" for c in cols)
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def new_figure(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float] = (6.0, 4.0)):
    """Return ``(figure, axes)`` on the Agg canvas, without pyplot's global state.

    ``axes`` is squeezed like ``pyplot.subplots``: one ``Axes`` for 1x1, a 1-D array for one row or
    column, a 2-D array otherwise.
    """
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=True)
    return fig, axes


def save_figure(fig: Figure, path: str | os.PathLike[str], *, dpi: int = 110) -> Path:
    """Save ``fig`` to ``path`` (format from the suffix), creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def environment() -> dict[str, Any]:
    """Versions and machine facts to record next to every result."""
    packages = {}
    for name in ("bastion", "torch", "torchvision", "numpy", "scipy", "scikit-learn", "safetensors"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "packages": packages,
    }
