"""``index.html`` of ``sslray report``: one self-contained page (inline CSS, figures embedded as base64 PNG
data URIs, no JavaScript), so it can be mailed, attached to an issue or opened from any folder.

Top to bottom: what was compared and the evaluation protocol, the comparison table (``report_table``:
best first, zebra rows, numbers right-aligned, the best run highlighted, the baselines muted below the
runs), the best run's per-class report, then every figure with its caption.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

from sslray.eval.report_table import cell, columns, is_baseline, is_numeric_column

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328;
       max-width: 1280px; margin: 2em auto; padding: 0 1.5em; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { font-size: 1.2em; margin-top: 2em; }
header p { margin: .3em 0 .8em; color: #444; }
dl.protocol { display: grid; grid-template-columns: max-content 1fr; gap: .2em 1em; margin: 0;
              padding: .8em 1em; background: #f6f8fa; border-radius: 6px; }
dl.protocol dt { font-weight: 600; } dl.protocol dd { margin: 0; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 1em 0; font-size: .92em; }
th, td { padding: .35em .75em; border-bottom: 1px solid #e3e6ea; white-space: nowrap; }
th { background: #eef1f4; text-align: left; position: sticky; top: 0; }
th.num, td.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) { background: #f8f9fb; }
tr.best, tr.best:nth-child(even) { background: #e4f5e9; font-weight: 600; }
tr.baseline { color: #6a737d; font-style: italic; }
tr.baseline.first td { border-top: 2px solid #c9ced4; }
p.note { color: #555; font-size: .9em; }
.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(460px, 1fr)); gap: 1.5em; }
figure { margin: 0; } figure img { width: 100%; height: auto; border: 1px solid #e3e6ea; }
figcaption { font-size: .88em; color: #444; margin-top: .3em; } code { font-size: .92em; }
"""


@dataclass(frozen=True)
class Page:
    """What ``index.html`` shows (the same content as ``summary.md``)."""

    compared: str  # one sentence: what was compared
    protocol: list[tuple[str, str]]  # (what, how): kNN, linear probe, images, order
    rows: list[dict]  # the table rows, ranked (report_table.ranked)
    knobs: list[str]
    best: str  # the highlighted run
    per_class: list[dict]  # the best run's per-class rows
    figures: list[tuple[str, str]]  # (PNG file name in the report folder, caption)


def table(rows: list[dict], header: list[str], best: str | None = None) -> str:
    """An HTML table of the rows' cells (``report_table.cell``), the best row and the baselines marked."""
    numeric = [is_numeric_column(rows, c) for c in header]
    head = "".join(f"<th{' class=num' if n else ''}>{html.escape(c)}</th>" for c, n in zip(header, numeric))
    lines, seen_baseline = [], False
    for row in rows:
        classes = []
        if best is not None and row.get("name") == best:
            classes.append("best")
        if is_baseline(row):
            classes += ["baseline"] + ([] if seen_baseline else ["first"])
            seen_baseline = True
        cells = "".join(
            f"<td{' class=num' if n else ''}>{html.escape(cell(row, c))}</td>" for c, n in zip(header, numeric)
        )
        lines.append(f'<tr class="{" ".join(classes)}">{cells}</tr>' if classes else f"<tr>{cells}</tr>")
    return "\n".join(["<table>", f"<thead><tr>{head}</tr></thead>", "<tbody>", *lines, "</tbody>", "</table>"])


def embedded(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def render(page: Page, folder: Path) -> str:
    """The page's HTML; the figures are read from ``folder`` and embedded."""
    protocol = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in page.protocol)
    figures = "\n".join(
        f'<figure><img src="{embedded(folder / name)}" alt="{html.escape(name)}">'
        f"<figcaption>{html.escape(caption)} <code>{html.escape(name)}</code></figcaption></figure>"
        for name, caption in page.figures
    )
    body = [
        "<header><h1>sslray report</h1>",
        f"<p>{html.escape(page.compared)}</p>",
        f'<dl class="protocol">{protocol}</dl></header>',
        "<main><h2>Runs, best first</h2>",
        f'<div class="scroll">{table(page.rows, columns(page.knobs), page.best)}</div>',
        '<p class="note">Highlighted: the best run. In grey: the baselines (random init and raw pixels). '
        "An empty knob cell: that run's recipe has no such key.</p>",
        f"<h2>Per-class precision / recall / F1 of the best run ({html.escape(page.best)}), linear probe</h2>",
        f'<div class="scroll">{table(page.per_class, list(page.per_class[0]))}</div>',
        f'<h2>Figures</h2><div class="figures">{figures}</div></main>',
    ]
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>sslray report</title><style>{STYLE}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
