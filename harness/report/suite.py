"""The report of one suite: a self-contained HTML page built from its results folder only
(parquet tables and JSON manifests; no torch, no loss registry).

Sections: title and what was run; a note when reference-free methods got more optimizer steps
under the same budget; the leaderboard (sortable, 95% CIs, compute used); the reward-vs-KL
scatter with its Pareto frontier; per-metric bars with error bars; methods × tasks (every
held-out metric, lm-eval tasks and win rates side by side); paired significance and the
win-rate matrix; compute accounting; the training curves; one card per method.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.errors import HarnessError
from harness.rank import (
    DEFAULT_KL_BUDGET,
    HEADLINE_KEYS,
    JUDGE_REWARD,
    KL_EXACT,
    KL_K1,
    KL_K3,
    LC_WIN_RATE,
    RANK_RULE,
    REWARD,
    WIN_RATE,
    format_interval,
    format_value,
    kl_key,
    leaderboard,
    levels_text,
    paired_tests,
    ranking_kl_budget,
    reward_key,
    win_rate_matrix,
)
from harness.report.figures import (
    category_kl_figure,
    entry_colors,
    frontier_figure,
    metric_bars_figure,
    training_figure,
    win_rate_heatmap,
)
from harness.report.html import Cell, esc, figure_div, number_cell, page, sort_key, table, write_page
from harness.report.insights import INSIGHTS_TEXT, insights_frame, insights_tables
from harness.report.reproducibility import reproducibility_html
from harness.report.tuning import TuningData, read_tuning, tuning_sections
from harness.report.sections import (
    COMPUTE_TEXT,
    MATRIX_TEXT,
    SIGNIFICANCE_TEXT,
    compute_accounting_table,
    method_cards_html,
    significance_table,
    task_groups,
    tasks_table,
)
from harness.report.published import suite_results_root
from harness.results import ResultStore, method_cards
from harness.results.store import read_trials_table
from harness.results.ranges import RANGE_NOTE
from harness.suite import run_suggestion

# The sample columns the statistics read (not the texts, which can be large).
SAMPLE_COLUMNS = ["run_id", "prompt_id", "sample", "reward", "outcome", "policy_logp", "reference_logp",
                  "token_kl", "completion_tokens", "completion", "baseline_completion"]

LABELS = {
    WIN_RATE: "win rate vs start",
    REWARD: "gold reward",
    JUDGE_REWARD: "reward-model score",
    LC_WIN_RATE: "LC win rate vs start (AlpacaEval 2.0 GLM)",
    KL_EXACT: "KL (exact, per token)",
    KL_K3: "KL (k3)",
    KL_K1: "KL (k1)",
    "length/completion_tokens": "completion tokens",
}


def label(key: str) -> str:
    """A metric key's column heading."""
    return LABELS.get(key, key)


@dataclass
class StoredSuite:
    """A suite's stored rows as the leaderboard reads them, and the KL budget it ranks within
    (the one its tuning selected within: harness.rank.ranking_kl_budget)."""

    metrics: pd.DataFrame
    samples: pd.DataFrame | None  # None when no run stored per-sample rows
    kl_budget: float

    def board(self) -> pd.DataFrame:
        return leaderboard(self.metrics, samples=self.samples, kl_budget=self.kl_budget)


def read_stored_suite(results_root: Path, suite: str) -> StoredSuite:
    """The suite's headline rows (results/<suite>/), per-sample rows and ranking KL budget."""
    store = ResultStore(results_root, suite)
    samples = store.read_samples(columns=SAMPLE_COLUMNS)
    return StoredSuite(store.read_metrics(), samples if len(samples) else None,
                       ranking_kl_budget(read_trials_table(results_root, suite)))


def write_suite_report(results_root: Path, suite: str, out_path: Path, *, suite_file: Path | None = None) -> Path:
    """Render the suite's stored results as one self-contained HTML file at `out_path` (written
    atomically) and return that path. A suite with no stored run is a HarnessError, which says to
    run `suite_file` (the file the user named) or the suite's file in suites/ where there is one.
    A published dataset's suite (`<suite>/latest.json`) is read from its latest snapshot."""
    results_root = suite_results_root(results_root, suite)
    store = ResultStore(results_root, suite)
    store.check_intact()  # a damaged run would silently lose its card or its rows
    stored = read_stored_suite(results_root, suite)
    if stored.metrics.empty:
        raise HarnessError(
            f"no results found for suite {suite!r} in {store.folder}: {run_suggestion(suite, suite_file)}"
        )
    tuning = read_tuning(results_root, suite, stored.metrics, stored.samples)
    html = render_suite_report(stored.metrics, suite, samples=stored.samples, manifests=store.read_manifests(),
                               tuning=tuning, kl_budget=stored.kl_budget)
    return write_page(Path(out_path), html)


def render_suite_report(
    metrics: pd.DataFrame,
    suite: str,
    samples: pd.DataFrame | None = None,
    manifests: dict[str, dict] | None = None,
    tuning: TuningData | None = None,
    kl_budget: float = DEFAULT_KL_BUDGET,
) -> str:
    """The HTML page of a suite from its long-format results rows, and optionally its per-sample
    rows (bootstrap CIs, significance, win-rate matrix), run manifests (method cards) and, for a
    tuned suite, its tuning record (harness.report.tuning); entries are ranked within `kl_budget`."""
    samples = samples if samples is not None and len(samples) else None
    board = leaderboard(metrics, samples=samples, kl_budget=kl_budget)
    reward, kl = reward_key(metrics), kl_key(metrics)
    frontier = set(board.loc[board["frontier"].astype(bool), "entry"]) if "frontier" in board else set()
    colors = entry_colors(list(board["entry"]))
    order = list(board["entry"])
    sections = [
        f"<h1>Suite: {esc(suite)}</h1>",
        f'<p class="lead">{esc(suite_summary(metrics, board))}</p>',
        f'<p class="lead">{esc(headline_text(board, reward, kl, kl_budget))}</p>',
        f"<p>{esc(method_text(label(reward), label(kl)))} {esc(interval_text(board))}</p>",
    ]
    note = reference_free_note(board, metrics)
    if note:
        sections.append(f'<div class="note">{esc(note)}</div>')
    sections += [
        "<h2>Leaderboard</h2>",
        leaderboard_table(board, frontier),
        f'<p class="muted">{esc(rank_text(board, label(reward)))}</p>',
    ]
    if tuning is not None:
        sections += tuning_sections(tuning, board, reward, label(reward))
    sections += [
        "<h2>Reward vs KL</h2>",
    ]
    scatter = frontier_figure(board, frontier, x=kl, y=reward, colors=colors,
                              x_title=f"KL(π ‖ π_ref), {label(kl)} (nats)",
                              y_title=f"{label(reward)} (mean over prompts)")
    sections.append(
        figure_div(scatter, "reward-vs-kl") if scatter is not None
        else f'<p class="muted">No entry has both a {esc(label(reward))} and a KL measurement.</p>'
    )
    if scatter is not None:
        sections.append(f'<p class="muted">{esc(FRONTIER_TEXT)}</p>')
    keys = [k for _, ks in task_groups(metrics) for k in ks]
    every = leaderboard(metrics, headline=keys, rank=False, samples=samples).set_index("entry").reindex(order)
    bars = metric_bars_figure(every.reset_index(), keys, titles={k: label(k) for k in keys}, colors=colors)
    if bars is not None:
        sections += ["<h2>Metrics</h2>", figure_div(bars, "metric-bars"),
                     '<p class="muted">Bars: mean over seeds; error bars: 95% CIs (as in the leaderboard); '
                     "the start model in grey.</p>"]
    sections += ["<h2>Methods × tasks</h2>", tasks_table(metrics, order, samples, board=every),
                 '<p class="muted">Every held-out metric, grouped by evaluator (lm-eval task metrics, then '
                 "win rates, then the rest); mean [95% CI] over seeds; the best entry of each ranked "
                 "column in bold.</p>"]
    sections += _insights_sections(metrics, samples)
    sections += _significance_sections(metrics, samples, order, reward)
    sections += ["<h2>Compute accounting</h2>", compute_accounting_table(metrics, order),
                 f'<p class="muted">{esc(COMPUTE_TEXT)}</p>']
    curves = training_figure(metrics, colors=colors)
    if curves is not None:
        sections += ["<h2>Training curves</h2>", figure_div(curves, "training-curves"),
                     '<p class="muted">Mean over seeds at each optimizer step.</p>']
    sections += ["<h2>Sampling and reproducibility</h2>", reproducibility_html(manifests or {})]
    sections += ["<h2>Methods</h2>", method_cards_html(metrics, method_cards(manifests or {}), order)]
    return page(f"harness report: {suite}", "\n".join(sections))


def _insights_sections(metrics: pd.DataFrame, samples: pd.DataFrame | None) -> list[str]:
    """The study's table (methods × categories × starting points, tax, win rates) and each
    category's score against KL; nothing when the suite measured no lm-eval task."""
    frame = insights_frame(metrics, samples)
    if frame.empty:
        return []
    out = ["<h2>Alignment tax by category</h2>", insights_tables(frame), f'<p class="muted">{esc(INSIGHTS_TEXT)}</p>']
    figure = category_kl_figure(frame)
    if figure is not None:
        out += ["<h2>Category score vs KL</h2>", figure_div(figure, "category-vs-kl"),
                '<p class="muted">One panel per category; colour: method, marker: starting point '
                "(the starting model a grey star); 95% CIs on both axes.</p>"]
    return out


def _significance_sections(metrics: pd.DataFrame, samples: pd.DataFrame | None, order: list[str],
                           reward: str) -> list[str]:
    """Paired significance table and win-rate heatmap (need the per-sample tables)."""
    out = ["<h2>Paired significance</h2>"]
    if samples is None:
        return out + ['<p class="muted">No per-sample tables stored: paired tests and the win-rate '
                      "matrix need them.</p>"]
    tests = paired_tests(metrics, samples, key=reward, order=order)
    out += [significance_table(tests, label(reward)),
            f'<p class="muted">{esc(SIGNIFICANCE_TEXT.format(reward=label(reward)))}</p>']
    heatmap = win_rate_heatmap(win_rate_matrix(metrics, samples, order=order))
    if heatmap is not None:
        out += ["<h2>Win-rate matrix</h2>", figure_div(heatmap, "win-rate-matrix"),
                f'<p class="muted">{esc(MATRIX_TEXT.format(reward=label(reward)))}</p>']
    return out


def interval_text(board: pd.DataFrame) -> str:
    """Which intervals the leaderboard shows and what they cover, from its ci_kind columns."""
    kinds = set()
    for key in HEADLINE_KEYS:
        if key + ":ci_kind" in board.columns:
            kinds |= set(board[key + ":ci_kind"].dropna())
    parts = []
    if "seeds × prompts (crossed t)" in kinds:
        parts.append("where per-sample results are stored, a t interval whose variance holds both the seeds' "
                     "and the prompts' (the seeds share the prompts: crossed random effects, Satterthwaite "
                     "df); it covers the mean over the populations of seeds and prompts")
    if "prompts (one seed, t)" in kinds:
        parts.append("with one seed, a t interval over prompts (that checkpoint, the population of prompts)")
    if "prompt bootstrap (seeds fixed)" in kinds:
        parts.append("the LC win rate: a bootstrap over prompts, shared by an entry's seeds (these seeds' "
                     "checkpoints, the population of prompts)")
    if "t over seeds (these prompts)" in kinds:
        parts.append("without samples, a t-interval over the per-seed means (these prompts)")
    if "run CI" in kinds:
        parts.append("otherwise, with one seed, the evaluator's bootstrap CI over prompts")
    return (f"Intervals are {levels_text(board)}: " + "; ".join(parts) + ". " + RANGE_NOTE) if parts else ""


def method_text(reward: str, kl: str = "KL (exact, per token)") -> str:
    """What the headline metrics are, for a suite judged by `reward` (its name)."""
    return (
        "Every trained policy and the untrained starting (SFT) model are evaluated on the same held-out "
        f"prompts. Win rate: the policy's sample against the starting model's sample, judged by the {reward} "
        f"(ties count ½). LC win rate: AlpacaEval 2.0's length-controlled GLM (the alpaca-eval package's "
        "code), this suite's runs as its leaderboard and the instruction difficulty fitted jointly across "
        f"them. {reward.capitalize()}: mean over prompts. {kl}: "
        + ("the exact KL(π(·|x,y<t) ‖ π_ref(·|x,y<t)) over the vocabulary, summed along the policy's own "
           "samples; the k3 and k1 Monte-Carlo estimates are secondary columns." if "exact" in kl else
           "the sequence-level k3 Monte-Carlo estimate from the policy's own samples.")
    )

FRONTIER_TEXT = (
    "One point per entry, error bars are 95% CIs; the start model is the grey star. The dashed line "
    "joins the Pareto-optimal entries (◆ in the leaderboard): no other entry has as much reward for "
    "as little KL."
)


def headline_text(board: pd.DataFrame, reward: str, kl: str, kl_budget: float = DEFAULT_KL_BUDGET) -> str:
    """The KL-aware headline: the reward-vs-KL frontier first, then the top rank within the budget
    and the entries over it."""
    if reward not in board.columns:
        return ""
    parts = []
    if "frontier" in board.columns and board["frontier"].any():
        front = board[board["frontier"].astype(bool)].sort_values(kl) if kl in board else board[board["frontier"]]
        parts.append("Reward-vs-KL frontier (least KL first): " + ", ".join(front["entry"].astype(str)) + ".")
    ranked = board[board["rank"].notna()]
    if len(ranked):
        top = ranked[ranked["rank"] == ranked["rank"].min()]
        if len(top) == len(ranked):
            parts.append(f"Within a KL budget of {format_value(kl_budget)} nats, the paired tests separate none "
                         f"of the {len(ranked)} ranked entries: all share rank 1.")
        else:
            parts.append(f"Within a KL budget of {format_value(kl_budget)} nats, rank 1 ({label(reward)}): "
                         + ", ".join(top["entry"].astype(str)) + ".")
    over = board[~board["within_budget"].astype(bool)] if "within_budget" in board.columns else board.iloc[:0]
    if len(over) and kl in board.columns:
        parts.append("Over the budget, shown but not ranked: " + ", ".join(
            f"{e} (KL {format_value(k)} nats)" for e, k in zip(over["entry"], over[kl])) + ".")
    return " ".join(parts)


def rank_text(board: pd.DataFrame, reward: str = "gold reward") -> str:
    """How the rank column was computed, in the sentence a reader can repeat."""
    basis = set(board.get("rank_basis", pd.Series(dtype=str)).dropna()) - {""}
    test = ("the seed-aware paired test, Holm-corrected over all pairs" if basis == {"paired tests"}
            else "non-overlapping 95% CIs")
    rule = RANK_RULE.format(reward=reward, test=test)
    return (
        f"Rank: {rule}. KL is a cost, not ranked: see the frontier below. Compute columns are means over "
        "seeds. Click a column heading to sort."
    )


def suite_summary(metrics: pd.DataFrame, board: pd.DataFrame) -> str:
    """One sentence on what was run: entries, runs, seeds, models, data and budget."""
    runs = metrics.drop_duplicates("run_id")
    trained = board[~board["is_start"]]
    parts = [
        f"{len(trained)} trained entr{'y' if len(trained) == 1 else 'ies'}"
        f"{' plus the starting model' if board['is_start'].any() else ''}",
        f"{len(runs)} run{'s' if len(runs) != 1 else ''}",
        f"seeds per entry: {_join(sorted(set(board['n_seeds'].astype(int))))}",
    ]
    for column, name in (("model", "model"), ("dataset", "data")):
        values = _join(runs[column].dropna().astype(str).unique())
        if values:
            parts.append(f"{name}: {values}")
    budget = _budget(runs[runs["method"] != "start"])
    if budget:
        parts.append(f"budget per run: {budget}")
    return "; ".join(parts) + "."


def _join(values) -> str:
    return ", ".join(str(v) for v in values)


def _budget(runs: pd.DataFrame) -> str:
    """"1e+12 flops" when every trained run had the same budget, else ""."""
    budgets = runs[["budget_kind", "budget_value"]].dropna().drop_duplicates()
    if len(budgets) != 1:
        return ""
    kind, value = budgets.iloc[0]
    return f"{format_value(float(value))} {kind}"


def reference_free_note(board: pd.DataFrame, metrics: pd.DataFrame) -> str | None:
    """The note a reader needs when reference-free entries (no reference FLOPs) took more optimizer
    steps on average than the entries that pay for a reference model, or None."""
    trained = board[~board["is_start"]]
    if not {"flops_reference", "optimizer_steps"} <= set(trained.columns):
        return None
    free = trained[trained["flops_reference"] == 0]
    paying = trained[trained["flops_reference"] > 0]
    if free.empty or paying.empty:
        return None
    free_steps, paying_steps = free["optimizer_steps"].mean(), paying["optimizer_steps"].mean()
    if not free_steps > paying_steps:
        return None
    kinds = metrics.loc[metrics["method"] != "start", "budget_kind"].dropna().unique()
    budget = "FLOP budget" if list(kinds) == ["flops"] else "budget"
    return (
        f"Reference-free methods got more optimizer steps under the same {budget}: "
        f"{_join(free['entry'])} took {format_value(free_steps)} steps on average, against "
        f"{format_value(paying_steps)} for {_join(paying['entry'])}. They make no reference-model "
        "forward passes, so the same compute buys them more updates. That is by design: compute is "
        "matched, not steps."
    )


def leaderboard_table(board: pd.DataFrame, frontier: set[str]) -> str:
    """The leaderboard as a sortable HTML table: rank, entry (hover: hyper-parameters), seeds,
    headline metrics with CIs, and compute used."""
    return board_table(board, ("beats", "beaten_by", "flops_total", "optimizer_steps", "train_seconds"), frontier)


COLUMN_LABELS = {"beats": "beats", "beaten_by": "beaten by", "flops_total": "FLOPs",
                 "optimizer_steps": "optimizer steps", "train_seconds": "train seconds"}


def board_table(board: pd.DataFrame, columns: tuple[str, ...], frontier: set[str] = frozenset(),
                table_id: str = "") -> str:
    """A board's rows as a sortable table: rank (or "over KL budget"), entry (hover: its
    hyper-parameters), seeds, headline metrics with CIs, then `columns` (COLUMN_LABELS); the start
    row and frontier entries marked."""
    keys = [k for k in HEADLINE_KEYS if k in board.columns]
    headers = [("rank", False), ("entry", True), ("seeds", False)] + [(label(k), False) for k in keys]
    headers += [(COLUMN_LABELS[c], False) for c in columns]
    rows = []
    for _, r in board.iterrows():
        cells = [rank_cell(r), Cell(str(r["entry"]), str(r["entry"]), True, "entry", str(r["hparams"])),
                 number_cell(r["n_seeds"])]
        cells += [Cell(format_interval(r[k], r[k + ":ci_low"], r[k + ":ci_high"]), sort_key(r[k])) for k in keys]
        cells += [number_cell(r.get(c, np.nan)) for c in columns]
        css = " ".join(c for c in ("start" if r["is_start"] else "",
                                   "frontier" if r["entry"] in frontier else "") if c)
        rows.append((css, cells))
    return table(headers, rows, table_id=table_id)


def rank_cell(r: pd.Series) -> Cell:
    """The rank, or "over KL budget" for an entry shown but not ranked."""
    if not bool(r.get("within_budget", True)):
        return Cell("over KL budget", "1e9")
    return number_cell(r["rank"])
