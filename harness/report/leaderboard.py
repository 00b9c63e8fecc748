"""The leaderboard across suites: reports/index.html, one table per suite under results/, each
linking to that suite's report (rewritten alongside so that no link is dead). Reads parquet and
manifests only; the page is self-contained (no script from anywhere, no figure)."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from harness.errors import HarnessError
from harness.names import is_name
from harness.rank import RANK_RULE, kl_key, levels_text, reward_key
from harness.report.html import esc, page, write_page
from harness.report.suite import board_table, headline_text, read_stored_suite, suite_summary, write_suite_report
from harness.report.published import published_suites, suite_results_root
from harness.results import ResultStore
from harness.results.ranges import RANGE_NOTE
from harness.suite import run_suggestion


def stored_suites(results_root: Path) -> list[str]:
    """Suite folders under `results_root` holding at least one finished run or a published
    snapshot (harness.report.dataset), sorted."""
    root = Path(results_root)
    if not root.is_dir():
        return []
    runs = {d.name for d in root.iterdir() if d.is_dir() and is_name(d.name) and ResultStore(root, d.name).run_ids()}
    return sorted(runs | set(published_suites(root)))


def write_leaderboard(results_root: Path, reports_root: Path, *, suite_reports: bool = True) -> Path:
    """Write `reports_root/index.html` (and, with `suite_reports`, every suite's report next to it)
    and return its path. No stored suite is a HarnessError."""
    suites = stored_suites(results_root)
    if not suites:
        raise HarnessError(f"{results_root}: no stored results; {run_suggestion(None)}")
    sections = [
        "<h1>harness leaderboard</h1>",
        f'<p class="lead">{len(suites)} suite{"s" if len(suites) != 1 else ""} from {esc(str(results_root))}, '
        f'rendered {esc(time.strftime("%Y-%m-%d %H:%M"))}. Each table ranks the entries of one suite '
        "(methods under the same compute budget); click a suite for its full report.</p>",
    ]
    boards = []
    for suite in suites:
        stored = read_stored_suite(suite_results_root(results_root, suite), suite)
        metrics, board = stored.metrics, stored.board()
        boards.append(board)
        if suite_reports:
            write_suite_report(results_root, suite, Path(reports_root) / f"{suite}.html")
        link = quote(f"{suite}.html")
        sections += [
            f'<h2 id="suite-{esc(suite)}"><a href="{esc(link)}">{esc(suite)}</a></h2>',
            f'<p class="muted">{esc(suite_summary(metrics, board))}</p>',
            f"<p>{esc(headline_text(board, reward_key(metrics), kl_key(metrics), stored.kl_budget))}</p>",
            suite_table(board, suite),
        ]
    rule = RANK_RULE.format(reward="the suite's reward", test="seed-aware paired tests, Holm-corrected; without "
                            "per-sample tables, non-overlapping CIs")
    levels = "; ".join(dict.fromkeys(levels_text(board) for board in boards))
    sections.append(f'<p class="muted">Rank: {esc(rule)}. Intervals are {esc(levels)}. {esc(RANGE_NOTE)}</p>')
    html = page("harness leaderboard", "\n".join(sections), plotly=False)
    return write_page(Path(reports_root) / "index.html", html)


def suite_table(board: pd.DataFrame, suite: str) -> str:
    """One suite's entries: rank, entry, seeds, headline metrics with CIs, FLOPs and steps."""
    return board_table(board, ("flops_total", "optimizer_steps"), table_id=f"board-{suite}")
