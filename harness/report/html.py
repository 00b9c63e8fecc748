"""HTML building blocks: escaping, tables, figure embedding, the page shell, the atomic write.

A page is self-contained with the folder it is written to: plotly.js (4.6 MB) is one shared file
beside the pages (`PLOTLY_BUNDLE`, named by plotly's version; `write_page` writes it once), loaded
by a relative <script src>, and every figure is a <div> plus an inline <script>, so a page opens
from file:// with no network and each page weighs only its own figures. Every string that comes from a
user (suite, method and hyper-parameter names) goes through `esc`.
"""

from __future__ import annotations

import html
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import plotly
import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from harness.rank import format_value

PLOTLY_BUNDLE = f"plotly-{plotly.__version__}.min.js"  # beside the pages that draw figures

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 1320px; padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
p.lead { color: #444; } .note { background: #fff8e1; border-left: 4px solid #f0b400;
  padding: 0.6rem 0.9rem; margin: 1rem 0; } .muted { color: #666; font-size: 0.9rem; }
table { border-collapse: collapse; font-size: 0.92rem; margin: 0.8rem 0; }
th, td { padding: 0.35rem 0.7rem; border-bottom: 1px solid #e4e4e4; text-align: right;
         white-space: nowrap; }
th { background: #f5f5f7; cursor: pointer; user-select: none; }
th:hover { background: #e9e9ee; } th.asc::after { content: " ▲"; } th.desc::after { content: " ▼"; }
td.text, th.text { text-align: left; } tr.start td { color: #666; font-style: italic; }
tr.frontier td.entry::after { content: " ◆"; color: #333; font-style: normal; }
td.best { font-weight: 700; } th.group { text-align: center; background: #ececf1; cursor: default; }
tr.significant td { background: #f1f8f1; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr)); gap: 1rem; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 0.8rem 1rem; background: #fcfcfd; }
.card h3 { margin: 0 0 0.3rem 0; font-size: 1.1rem; } .card code { white-space: pre-wrap; }
.card table { font-size: 0.85rem; margin: 0.4rem 0; } .card td, .card th { white-space: normal; }
.badge { display: inline-block; font-size: 0.75rem; padding: 0.05rem 0.45rem; border-radius: 3px;
  background: #e8eefc; color: #234; margin-left: 0.3rem; vertical-align: middle; }
.badge.plugin { background: #fde9d9; color: #5a2a00; }
dl.card-facts { display: grid; grid-template-columns: max-content 1fr; gap: 0.15rem 0.7rem;
  margin: 0.4rem 0; font-size: 0.9rem; } dl.card-facts dt { color: #666; } dl.card-facts dd { margin: 0; }
a { color: #1f5fbf; } .scroll { overflow-x: auto; max-width: 100%; }
"""

# Click a header to sort by it (numbers numerically, missing values last); click again to reverse.
SORT_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  var headings = table.querySelectorAll("thead tr:last-child th");
  headings.forEach(function (th, column) {
    th.addEventListener("click", function () {
      var ascending = !th.classList.contains("asc");
      headings.forEach(function (h) { h.classList.remove("asc", "desc"); });
      th.classList.add(ascending ? "asc" : "desc");
      var body = table.tBodies[0];
      var key = function (row) {
        var raw = row.cells[column].getAttribute("data-sort");
        var number = parseFloat(raw);
        return raw === null || raw === "" ? null : (isNaN(number) ? raw : number);
      };
      Array.prototype.slice.call(body.rows).sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null || y === null) { return (x === null) - (y === null); }
        return (x < y ? -1 : x > y ? 1 : 0) * (ascending ? 1 : -1);
      }).forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def esc(value: object) -> str:
    """HTML-escape any value for text and attribute positions (quotes included)."""
    return html.escape(str(value), quote=True)


@dataclass(frozen=True)
class Cell:
    """One table cell: its shown text, its sort key (empty when missing) and whether it is text."""

    text: str
    sort: str = ""
    is_text: bool = False
    css: str = ""
    title: str = ""  # shown on hover


def sort_key(x) -> str:
    """A number's sort key for the table script; empty (sorted last) when missing."""
    return "" if x is None or pd.isna(x) else repr(float(x))


def number_cell(x) -> Cell:
    """A number as a cell, shown as format_value shows it, "–" when missing."""
    return Cell(format_value(float(x)) if x is not None and not pd.isna(x) else "–", sort_key(x))


def table(headers: Sequence[tuple[str, bool]], rows: Sequence[tuple[str, Sequence[Cell]]],
          css: str = "sortable", groups: Sequence[tuple[str, int]] | None = None, table_id: str = "") -> str:
    """A sortable HTML table. headers: (label, is_text); rows: (row css class, cells); groups: an
    optional first header row of (label, number of columns spanned). All escaped."""
    head = "".join(f'<th{_class("text" if is_text else "")}>{esc(label)}</th>' for label, is_text in headers)
    group_row = ""
    if groups:
        spans = "".join(f'<th class="group" colspan="{int(span)}">{esc(label)}</th>' for label, span in groups)
        group_row = f"<tr>{spans}</tr>"
    body = []
    for row_class, cells in rows:
        body.append(f'<tr{_class(row_class)}>{"".join(_td(cell) for cell in cells)}</tr>')
    ident = f' id="{esc(table_id)}"' if table_id else ""
    return (f'<div class="scroll"><table class="{esc(css)}"{ident}><thead>{group_row}<tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _td(cell: Cell) -> str:
    css = " ".join(c for c in ("text" if cell.is_text else "", cell.css) if c)
    title = f' title="{esc(cell.title)}"' if cell.title else ""
    return f'<td{_class(css)} data-sort="{esc(cell.sort)}"{title}>{esc(cell.text)}</td>'


def _class(css: str) -> str:
    """' class="..."', or nothing for no class."""
    return f' class="{esc(css)}"' if css else ""


def figure_div(figure: go.Figure, div_id: str) -> str:
    """A figure as a <div> and an inline <script>; plotly.js itself comes once from `page`.

    plotly serializes the figure as JSON with "<", ">" and "/" escaped as \\u003c..., so a name
    cannot close the <script> element."""
    return pio.to_html(figure, include_plotlyjs=False, full_html=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})


def page(title: str, body: str, plotly: bool = True) -> str:
    """The whole document: title (escaped here), style, the shared plotly.js beside it (unless the
    page has no figure; `write_page` puts the file there), body."""
    script = f"<script src=\"{PLOTLY_BUNDLE}\" charset=\"utf-8\"></script>\n" if plotly else ""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{esc(title)}</title>\n"
        f"<style>{STYLE}</style>\n{script}"
        f"</head>\n<body>\n{body}\n<script>{SORT_SCRIPT}</script>\n</body>\n</html>\n"
    )


def write_page(path: Path, text: str) -> Path:
    """Write a page atomically, and the shared plotly.js beside it when the page loads it and the
    folder lacks it (a page's figures need nothing else)."""
    path = Path(path)
    if f'<script src="{PLOTLY_BUNDLE}"' in text:
        write_bundle(path.parent)
    return write_atomic(path, text)


def write_bundle(folder: Path) -> Path:
    """plotly.js as `folder/PLOTLY_BUNDLE`, written once per plotly version (atomic, so a reader
    never loads half of it)."""
    path = Path(folder) / PLOTLY_BUNDLE
    if not path.exists():
        write_atomic(path, get_plotlyjs())
    return path


def write_atomic(path: Path, text: str) -> Path:
    """Write `text` to `path` through a temporary file in the same folder and a rename, so that a
    reader never sees a half-written page."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; a published page must be readable
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
