"""The tuning sections of a tuned suite's report: does tuning change the ranking, what was selected,
how sensitive each method is to each hyper-parameter, and what tuning cost.

Reads parquet only: the trials table (results/<suite>/tuning/trials.parquet, harness.tuning.select)
and the defaults' runs (results/<suite>/tuning/defaults/); the tuned leaderboard is the page's own.
With several starting points (the table's start column) every part is shown per start: each
start's defaults against its own tuned settings (ranks among that start's entries), its
selections, sensitivity and compute; with one start the sections are as they always were.
"""

from __future__ import annotations

import html as html_lib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from harness.rank import START_METHOD, format_interval, format_value, leaderboard, ranking_kl_budget
from harness.report.figures import TEMPLATE
from harness.report.html import Cell, esc, figure_div, table
from harness.results import ResultStore
from harness.results.store import read_trials_table

TUNING_TEXT = (
    "Every method, plugins included, had the same number of trials, each trained with the suite's budget and "
    "evaluated on validation prompts disjoint from the test prompts and the training data; the selected setting "
    "(best validation metric within the KL budget) was then re-run with the final seeds and evaluated on the test "
    "prompts only. The defaults' leaderboard is each method at its untuned setting with the same seeds."
)
STARTS_TEXT = (
    " Each starting point tuned every method on its own (the same trials per method and start, selected on "
    "that start's validation trials), and is compared with its own defaults."
)


@dataclass
class TuningData:
    trials: pd.DataFrame  # the trials table
    defaults: pd.DataFrame  # the defaults' results rows (with the start runs')
    tuned: pd.DataFrame | None = None  # the headline's rows (start runs, selected settings): per-start ranks
    samples: pd.DataFrame | None = None  # their per-sample rows, for the same paired-test ranks as the page


Start = tuple[str, str]  # a starting point of the trials table: (its name, its model)


def read_tuning(results_root: Path, suite: str, metrics: pd.DataFrame,
                samples: pd.DataFrame | None = None) -> TuningData | None:
    """The suite's tuning record, or None for a suite that was not tuned; `metrics` (and
    `samples`) are the headline's stored rows."""
    trials = read_trials_table(results_root, suite)
    if trials is None:
        return None
    defaults = ResultStore(results_root, suite).inner("tuning", "defaults").read_metrics()
    start_rows = metrics[metrics["method"] == START_METHOD]
    return TuningData(trials, pd.concat([start_rows, defaults], ignore_index=True), metrics,
                      samples if samples is not None and len(samples) else None)


def tuned_starts(trials: pd.DataFrame) -> list[Start]:
    """Each starting point of the trials table, in order; [] for one start (and for a table from
    before starting points were an axis, which has no start column)."""
    if "start" not in trials.columns:
        return []
    starts = list(dict.fromkeys(zip(trials["start"], trials["model"])))
    return starts if len(starts) > 1 else []


def tuning_sections(data: TuningData, tuned_board: pd.DataFrame, reward: str, reward_label: str) -> list[str]:
    """The HTML sections (headings, tables, figures, notes), per starting point when there are several."""
    trials = data.trials
    first = trials.iloc[0]
    starts = tuned_starts(trials)
    budget = "none" if math.isinf(first["kl_budget"]) else format_value(first["kl_budget"])
    out = [
        "<h2>Tuning: does it change the ranking?</h2>",
        f"<p>{esc(TUNING_TEXT + (STARTS_TEXT if starts else ''))} Sampler: {esc(first['sampler'])} "
        f"(seed {int(first['seed'])}), {int(first['trials'])} trials per method{' and start' if starts else ''}; "
        f"selection metric {esc(first['metric'])} ({esc(first['direction'])}); KL budget {esc(budget)} "
        f"({esc(first['kl_metric'])}).</p>",
        *_per_start(starts, lambda s: [rank_change_table(*_boards(data, tuned_board, s), reward, reward_label,
                                                         kl_budget=ranking_kl_budget(trials))]),
        "<h3>Selected hyper-parameters</h3>",
        *_per_start(starts, lambda s: [selection_table(_of(trials, s)), budget_note(_of(trials, s), budget)]),
    ]
    figures = [(s, sensitivity_figure(_of(trials, s))) for s in starts or [None]]
    figures = [(s, figure) for s, figure in figures if figure is not None]
    if figures:
        out.append("<h3>Sensitivity</h3>")
        for i, (start, figure) in enumerate(figures):
            out += [*_heading(start), figure_div(figure, "tuning-sensitivity" + (f"-{i}" if start else ""))]
        out.append('<p class="muted">Each trial\'s validation metric against each hyper-parameter that varied; the '
                   "selected trial as a star. The learning rate is absolute.</p>")
    out += ["<h3>Tuning compute</h3>", *_per_start(starts, lambda s: [cost_table(_of(trials, s))])]
    return out


def _per_start(starts: list[Start], render) -> list[str]:
    """`render(start)` under each start's heading, or `render(None)` alone for one start."""
    return render(None) if not starts else [part for s in starts for part in [*_heading(s), *render(s)]]


def _heading(start: Start | None) -> list[str]:
    if start is None:
        return []
    name, model = start
    return [f"<h4>Starting point: {esc(name if name == model else f'{name} ({model})')}</h4>"]


def _of(trials: pd.DataFrame, start: Start | None) -> pd.DataFrame:
    """The trials of one start (all of them for None)."""
    return trials if start is None else trials[trials["start"] == start[0]]


def _boards(data: TuningData, tuned_board: pd.DataFrame, start: Start | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The defaults' rows and the tuned leaderboard to compare: the page's own for one start; for
    one of several, that start's rows and a leaderboard of its entries only (ranks within the start)."""
    if start is None:
        return data.defaults, tuned_board
    mine = data.tuned[data.tuned["model"] == start[1]]
    samples = data.samples[data.samples["run_id"].isin(mine["run_id"])] if data.samples is not None else None
    return (data.defaults[data.defaults["model"] == start[1]],
            leaderboard(mine, samples=samples, kl_budget=ranking_kl_budget(data.trials)))


def tuning_cost(trials: pd.DataFrame) -> pd.DataFrame:
    """Per method: trials run, their total FLOPs and seconds (training and evaluation)."""
    grouped = trials.groupby("method", sort=False)
    return pd.DataFrame({
        "trials": grouped["run_id"].count(),
        "flops_total": grouped["flops_total"].sum(),
        "train_seconds": grouped["train_seconds"].sum(),
        "eval_seconds": grouped["eval_seconds"].sum(),
    }).reset_index()


def sensitivity(trials: pd.DataFrame, method: str) -> dict[str, pd.DataFrame]:
    """Per hyper-parameter that varied across `method`'s trials: its values, the validation
    metric, and whether the trial was selected (for sensitivity plots)."""
    mine = trials[trials["method"] == method]
    params = pd.DataFrame([json.loads(p) for p in mine["params"]], index=mine.index)
    out = {}
    for name in params.columns:
        if params[name].nunique(dropna=True) > 1:
            out[name] = pd.DataFrame({name: params[name], "value": mine["value"], "selected": mine["selected"]})
    return out


def _ranks(board: pd.DataFrame) -> pd.DataFrame:
    methods = board[board["method"] != START_METHOD]
    return methods.groupby("method", sort=False).first()


def rank_change_table(defaults: pd.DataFrame, tuned_board: pd.DataFrame, reward: str, reward_label: str,
                      kl_budget: float) -> str:
    """Per method: its rank and reward untuned and tuned (both ranked within `kl_budget`), and the
    change of rank (+ = moved up)."""
    default_board = leaderboard(defaults, kl_budget=kl_budget) if len(defaults) else tuned_board.iloc[0:0]
    before, after = _ranks(default_board), _ranks(tuned_board)
    rows = []
    for method in dict.fromkeys([*after.index, *before.index]):
        b = before.loc[method] if method in before.index else None
        a = after.loc[method] if method in after.index else None
        change = (b["rank"] - a["rank"]) if a is not None and b is not None else math.nan
        cells = [Cell(method, method, True), _rank(b), _rank(a),
                 Cell("–" if math.isnan(change) else f"{change:+.2g}", "" if math.isnan(change) else f"{change:020.6f}"),
                 _interval(b, reward), _interval(a, reward)]
        rows.append(("", cells))
    headers = [("method", True), ("rank, defaults", False), ("rank, tuned", False), ("rank change (+: up)", False),
               (f"{reward_label}, defaults", False), (f"{reward_label}, tuned", False)]
    return table(headers, rows)


def _rank(row) -> Cell:
    if row is None or pd.isna(row["rank"]):
        return Cell("–")
    return Cell(format_value(row["rank"]), f"{row['rank']:020.6f}")


def _interval(row, key: str) -> Cell:
    if row is None or key not in row.index or pd.isna(row[key]):
        return Cell("–")
    return Cell(format_interval(row[key], row[key + ":ci_low"], row[key + ":ci_high"]), f"{row[key]:+020.6f}")


def budget_note(trials: pd.DataFrame, budget: str) -> str:
    """The methods with no trial within the KL budget (nothing selected, so not ranked), or that
    every method had one; and which methods' spaces were derived rather than declared."""
    within = trials.groupby("method", sort=False)["within_budget"].sum()
    none = [method for method, count in within.items() if count == 0]
    text = (f"No trial within the KL budget ({budget}), so nothing selected or ranked: {', '.join(none)}."
            if none else f"Every method had at least one trial within the KL budget ({budget}).")
    derived = _derived_dimensions(trials)
    if derived:
        text += (" Derived search spaces (the loss declares none; harness.losses.base.DERIVATION_RULE): "
                 + "; ".join(f"{method}: {names}" for method, names in derived.items()) + ".")
    return f'<p class="muted">{esc(text)}</p>'


def _derived_dimensions(trials: pd.DataFrame) -> dict[str, str]:
    """method -> its derived dimensions ("beta, clip"), for the methods that have any (a table from
    before the column was written has none)."""
    if "derived" not in trials.columns:
        return {}
    firsts = trials.groupby("method", sort=False)["derived"].first()
    return {method: names.replace(",", ", ") for method, names in firsts.items() if isinstance(names, str) and names}


def selection_table(trials: pd.DataFrame) -> str:
    """Per method: the selected setting, its validation metric and KL, and how many trials met the budget."""
    derived = _derived_dimensions(trials)
    rows = []
    for method, group in trials.groupby("method", sort=False):
        chosen = group[group["selected"]]
        ok = int((group["status"] == "ok").sum())
        within = int(group["within_budget"].sum())
        if chosen.empty:
            setting, value, kl = "nothing selected (no trial within the KL budget)", "–", "–"
        else:
            row = chosen.iloc[0]
            setting = ", ".join(f"{k}={format_value(v) if isinstance(v, float) else v}"
                                for k, v in json.loads(row["params"]).items())
            value, kl = format_value(row["value"]), format_value(row["kl"])
        name = f"{method} (derived space)" if method in derived else method
        rows.append(("", [Cell(name, method, True), Cell(setting, setting, True), Cell(value), Cell(kl),
                          Cell(f"{ok} of {len(group)}"), Cell(str(within))]))
    headers = [("method", True), ("selected setting", True), ("validation metric", False), ("validation KL", False),
               ("trials ok", False), ("within KL budget", False)]
    return table(headers, rows)


def cost_table(trials: pd.DataFrame) -> str:
    """Per method: trials, FLOPs and seconds spent tuning; the total in the last row."""
    cost = tuning_cost(trials)
    rows = [("", [Cell(r.method, r.method, True), Cell(str(int(r.trials))), Cell(format_value(r.flops_total)),
                  Cell(f"{r.train_seconds:.1f}"), Cell(f"{r.eval_seconds:.1f}")]) for r in cost.itertuples()]
    rows.append(("", [Cell("total", "~", True), Cell(str(int(cost["trials"].sum()))),
                      Cell(format_value(cost["flops_total"].sum())), Cell(f"{cost['train_seconds'].sum():.1f}"),
                      Cell(f"{cost['eval_seconds'].sum():.1f}")]))
    headers = [("method", True), ("trials", False), ("FLOPs", False), ("train s", False), ("eval s", False)]
    return table(headers, rows)


def sensitivity_figure(trials: pd.DataFrame) -> go.Figure | None:
    """One row of panels per method, one panel per hyper-parameter that varied: validation metric
    against the value, the selected trial as a star. None when nothing varied."""
    panels = {m: sensitivity(trials, m) for m in dict.fromkeys(trials["method"])}
    panels = {m: p for m, p in panels.items() if p}
    if not panels:
        return None
    columns = max(len(p) for p in panels.values())
    titles = [html_lib.escape(f"{m}: {name}") if i < len(p) else ""
              for m, p in panels.items() for i, name in enumerate(list(p) + [""] * (columns - len(p)))]
    figure = make_subplots(rows=len(panels), cols=columns, subplot_titles=titles, vertical_spacing=0.3 / len(panels))
    for r, (method, params) in enumerate(panels.items(), start=1):
        for c, (name, frame) in enumerate(params.items(), start=1):
            frame = frame.sort_values(name)
            figure.add_trace(go.Scatter(x=frame[name], y=frame["value"], mode="markers+lines", showlegend=False,
                                        marker=dict(color="#1f77b4"), line=dict(dash="dot", width=1)), row=r, col=c)
            picked = frame[frame["selected"]]
            figure.add_trace(go.Scatter(x=picked[name], y=picked["value"], mode="markers", showlegend=False,
                                        marker=dict(symbol="star", size=14, color="#d62728")), row=r, col=c)
            values = pd.to_numeric(frame[name], errors="coerce")
            if values.notna().all() and (values > 0).all() and values.max() / values.min() > 20:
                figure.update_xaxes(type="log", row=r, col=c)
    figure.update_layout(template=TEMPLATE, height=260 * len(panels), margin=dict(t=40, b=30))
    return figure
