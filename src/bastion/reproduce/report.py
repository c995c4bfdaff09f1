"""``report/index.html``: one section per system, every claim marked holds / does not hold."""

from __future__ import annotations

import datetime as _dt
import html
from pathlib import Path
from typing import Any

from ..core.report import environment, format_value, html_table, write_json
from .base import ReproductionResult

__all__ = ["SYSTEMS", "write_report"]

#: The systems of the mission, in report order: (section title, reproduction name, issue).
SYSTEMS: list[tuple[str, str, str]] = [
    ("Model zoo (foundation)", "zoo", "#2"),
    ("Decision-based attacks: HSJA, QEBA, NonLinear-BA, PSBA", "boundary", "#3"),
    ("Membership privacy of SGLD", "sgld", "#4"),
    ("PaRO + HO-Ring sharded training", "paro", "#5"),
    ("AntM2C multi-scenario CTR", "antm2c", "#6"),
    ("OTGNet open temporal graphs", "otgnet", "#7"),
    ("BadDet + Detector Cleanse", "baddet", "#8"),
    ("Transferable face patches", "face-patch", "#9"),
    ("Data-free universal perturbations", "uap", "#9"),
]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;
  color:#1d2330;padding:0 1rem}
h1{margin-bottom:.2rem}h2{border-bottom:2px solid #dde3ee;padding-bottom:.3rem;margin-top:2.4rem}
table{border-collapse:collapse;margin:.6rem 0 1.2rem;font-size:.9rem}
th,td{border:1px solid #d5dbe5;padding:.3rem .6rem;text-align:left;vertical-align:top}
th{background:#f1f4f9}.ok{background:#e3f6e8;color:#11602b;font-weight:600}
.bad{background:#fde8e8;color:#8d1c1c;font-weight:600}.pending{color:#6b7280}
.meta{color:#5b6472;font-size:.85rem}img{max-width:100%;border:1px solid #e3e7ee;margin:.4rem 0}
code{background:#f4f6fa;padding:0 .25rem}
"""


def _measured(m: dict[str, Any]) -> str:
    parts = []
    for k, v in m.items():
        if isinstance(v, dict):
            inner = ", ".join(f"{kk}: {format_value(vv)}" for kk, vv in v.items())
            parts.append(f"{k}: {{{inner}}}")
        else:
            parts.append(f"{k}: {format_value(v)}")
    return "; ".join(parts)


def _section(title: str, issue: str, result: ReproductionResult | None) -> str:
    esc = html.escape
    if result is None:
        return (
            f"<h2>{esc(title)}</h2><p class='pending'>Not reproduced yet (issue {esc(issue)}): "
            "this section appears when its reproduction lands.</p>"
        )
    n_ok = sum(c.holds for c in result.claims)
    out = [
        f"<h2 id='{esc(result.name)}'>{esc(title)}</h2>",
        f"<p class='meta'>{esc(result.title)} &middot; <code>bastion reproduce {esc(result.name)}"
        f"{' --quick' if result.quick else ''}</code> &middot; seed {result.seed} &middot; "
        f"{result.wall_seconds:.1f} s wall &middot; {n_ok}/{len(result.claims)} claims hold</p>",
        "<table><thead><tr><th>claim</th><th>measured (ours)</th><th>reference (theirs)</th>"
        "<th>verdict</th></tr></thead><tbody>",
    ]
    for c in result.claims:
        cls, word = ("ok", "holds") if c.holds else ("bad", "does not hold")
        note = f"<br><span class='meta'>{esc(c.note)}</span>" if c.note else ""
        out.append(
            f"<tr><td>{esc(c.claim)}{note}</td><td>{esc(_measured(c.measured))}</td>"
            f"<td>{esc(_measured(c.reference)) or '-'}</td><td class='{cls}'>{word}</td></tr>"
        )
    out.append("</tbody></table>")
    for tname, rows in result.tables.items():
        out.append(f"<h3>{esc(tname)}</h3>{html_table(rows)}")
    for fig in result.figures:
        out.append(f"<img src='{esc(result.name)}/{esc(fig)}' alt='{esc(fig)}'>")
    for note in result.notes:
        out.append(f"<p class='meta'>{esc(note)}</p>")
    return "\n".join(out)


def write_report(results: list[ReproductionResult], out: str | Path = "report") -> Path:
    """Write ``out/index.html`` and ``out/results.json`` from reproduction results."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    by_name = {r.name: r for r in results}
    env = environment()
    when = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    status_rows = []
    for title, name, issue in SYSTEMS:
        r = by_name.get(name)
        status_rows.append({
            "system": title,
            "issue": issue,
            "claims holding": f"{sum(c.holds for c in r.claims)}/{len(r.claims)}" if r else "not yet reproduced",
        })  # fmt: skip
    sections = [_section(title, issue, by_name.get(name)) for title, name, issue in SYSTEMS]
    known = {name for _, name, _ in SYSTEMS}
    sections += [_section(r.title, "", r) for r in results if r.name not in known]
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>bastion report</title><style>{_CSS}</style></head><body>
<h1>bastion &mdash; reproduction report</h1>
<p class="meta">Generated {when} &middot; bastion {html.escape(str(env["packages"].get("bastion")))} &middot;
torch {html.escape(str(env["packages"].get("torch")))} &middot; Python {env["python"]} &middot; {env["cpu_count"]} CPUs,
{env["torch_threads"]} torch thread(s)</p>
<h2>Systems</h2>{html_table(status_rows)}
{"".join(sections)}
</body></html>
"""
    (out / "index.html").write_text(page)
    write_json(
        out / "results.json",
        {"generated": when, "environment": env, "results": [r.to_dict() for r in results]},
    )
    return out / "index.html"
