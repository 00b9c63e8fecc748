"""Plotly figures of a suite: the reward-vs-KL frontier and the training curves.

Each function takes plain frames (a leaderboard from harness.rank, or the long results frame) and
returns a plotly Figure, or None when there is nothing to draw. Entry names are HTML-escaped
before they reach plotly, whose text rendering interprets a subset of HTML tags.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from harness.rank import KL, REWARD, label_entries

TEMPLATE = "plotly_white"
PALETTE = qualitative.Plotly + qualitative.D3
CURVE_LABELS = {"loss": "training loss", "reward_margins": "reward margin (chosen − rejected)"}


def entry_colors(entries: Sequence[str]) -> dict[str, str]:
    """One stable color per entry (in the order given), so that all figures of a page agree."""
    return {entry: PALETTE[i % len(PALETTE)] for i, entry in enumerate(entries)}


def _error(mean: pd.Series, lo: pd.Series, hi: pd.Series) -> dict:
    """Asymmetric error bars from a CI (NaN where the CI is missing: plotly draws none)."""
    return dict(type="data", symmetric=False, array=(hi - mean).to_numpy(float),
                arrayminus=(mean - lo).to_numpy(float), thickness=1)


def frontier_figure(
    board: pd.DataFrame,
    frontier: set[str],
    x: str = KL,
    y: str = REWARD,
    colors: dict[str, str] | None = None,
    x_title: str = "KL(π ‖ π_ref), exact per token (nats)",
    y_title: str = "gold reward (mean over prompts)",
) -> go.Figure | None:
    """Reward (`y`, the gold reward by default) against KL, one point per entry with its 95% CI as error bars on both axes,
    the start model as a grey star, and the Pareto frontier as a dashed line. None when no entry
    has both measurements."""
    points = board.dropna(subset=[x, y])
    if points.empty:
        return None
    colors = colors or entry_colors(list(board["entry"]))
    figure = go.Figure()
    for index, row in points.iterrows():
        one = points.loc[[index]]
        name = html.escape(str(row["entry"]))
        start = bool(row.get("is_start", False))
        figure.add_trace(go.Scatter(
            x=one[x], y=one[y], mode="markers", name=name,
            marker=dict(size=14 if start else 11, symbol="star" if start else "circle",
                        color="#7f7f7f" if start else colors.get(row["entry"], PALETTE[0])),
            error_x=_error(one[x], one[x + ":ci_low"], one[x + ":ci_high"]),
            error_y=_error(one[y], one[y + ":ci_low"], one[y + ":ci_high"]),
            hovertemplate=f"<b>{name}</b><br>KL %{{x:.4g}}<br>reward %{{y:.4g}}<extra></extra>",
        ))
    on_frontier = points[points["entry"].isin(frontier)].sort_values(x)
    if len(on_frontier):
        figure.add_trace(go.Scatter(
            x=on_frontier[x], y=on_frontier[y], mode="lines", name="Pareto frontier",
            line=dict(color="black", dash="dash", width=1.5), hoverinfo="skip",
        ))
    figure.update_layout(template=TEMPLATE, height=480, xaxis_title=x_title, yaxis_title=y_title,
                         legend_title_text="entry", margin=dict(l=60, r=20, t=30, b=60))
    return figure


def training_curves(metrics: pd.DataFrame, panels: Sequence[str] = ("loss", "reward_margins")) -> pd.DataFrame:
    """The training-curve points: split "train" rows of the given metrics, averaged over seeds at
    each step. Columns: entry, metric, step, value (empty when no run logged them)."""
    rows = metrics[(metrics["split"] == "train") & metrics["metric"].isin(list(panels))]
    if rows.empty:
        return pd.DataFrame(columns=["entry", "metric", "step", "value"])
    rows = label_entries(rows)
    curves = rows.groupby(["entry", "metric", "step"], as_index=False, sort=True)["value"].mean()
    return curves.dropna(subset=["value"])


def training_figure(
    metrics: pd.DataFrame,
    panels: Sequence[str] = ("loss", "reward_margins"),
    colors: dict[str, str] | None = None,
) -> go.Figure | None:
    """One panel per training metric (loss, reward margin) against the optimizer step, one line per
    entry (mean over its seeds). None when the suite has no training rows."""
    curves = training_curves(metrics, panels)
    present = [p for p in panels if p in set(curves["metric"])]
    if not present:
        return None
    colors = colors or entry_colors(sorted(curves["entry"].unique()))
    figure = make_subplots(rows=1, cols=len(present),
                           subplot_titles=[CURVE_LABELS.get(p, p) for p in present])
    for col, panel in enumerate(present, start=1):
        for entry, line in curves[curves["metric"] == panel].groupby("entry", sort=True):
            name = html.escape(str(entry))
            figure.add_trace(go.Scatter(
                x=line["step"], y=line["value"], mode="lines", name=name, legendgroup=name,
                showlegend=col == 1, line=dict(color=colors.get(entry, PALETTE[0])),
                hovertemplate=f"<b>{name}</b><br>step %{{x}}<br>%{{y:.4g}}<extra></extra>",
            ), row=1, col=col)
        figure.update_xaxes(title_text="optimizer step", row=1, col=col)
    figure.update_layout(template=TEMPLATE, height=420, margin=dict(l=60, r=20, t=50, b=60))
    return figure



def metric_bars_figure(
    board: pd.DataFrame,
    keys: Sequence[str],
    titles: dict[str, str] | None = None,
    colors: dict[str, str] | None = None,
    columns: int = 3,
) -> go.Figure | None:
    """One bar panel per metric key: a bar per entry (mean over seeds) with its 95% CI as an
    error bar, entries in board order. None when no key has a value."""
    keys = [k for k in keys if k in board.columns and board[k].notna().any()]
    if not keys:
        return None
    colors = colors or entry_colors(list(board["entry"]))
    cols = min(columns, len(keys))
    rows = -(-len(keys) // cols)
    height = 260 * rows + 60
    figure = make_subplots(rows=rows, cols=cols, subplot_titles=[html.escape((titles or {}).get(k, k)) for k in keys],
                           vertical_spacing=110 / height if rows > 1 else 0.0, horizontal_spacing=0.08)
    names = [html.escape(str(e)) for e in board["entry"]]
    bar_colors = ["#7f7f7f" if bool(s) else colors.get(e, PALETTE[0])
                  for e, s in zip(board["entry"], board.get("is_start", pd.Series(False, index=board.index)))]
    for i, key in enumerate(keys):
        row, col = divmod(i, cols)
        figure.add_trace(go.Bar(
            x=names, y=board[key].to_numpy(float), marker_color=bar_colors, showlegend=False,
            error_y=_error(board[key], board[key + ":ci_low"], board[key + ":ci_high"]),
            hovertemplate="<b>%{x}</b><br>%{y:.4g}<extra></extra>",
        ), row=row + 1, col=col + 1)
    figure.update_layout(template=TEMPLATE, height=height, margin=dict(l=50, r=20, t=50, b=40),
                         bargap=0.3)
    figure.update_xaxes(tickangle=-30)
    return figure


def win_rate_heatmap(matrix: pd.DataFrame) -> go.Figure | None:
    """The method-against-method win-rate matrix as an annotated heatmap: row A, column B, cell
    P(A's sample beats B's on the same prompt), ties ½; 0.5 is white. None when empty."""
    if matrix.empty or matrix.shape[0] < 2:
        return None
    names = [html.escape(str(e)) for e in matrix.index]
    z = matrix.to_numpy(float)
    text = [[("–" if pd.isna(v) else f"{v:.2f}") for v in row] for row in z]
    figure = go.Figure(go.Heatmap(
        z=z, x=names, y=names, text=text, texttemplate="%{text}", zmin=0.0, zmax=1.0, zmid=0.5,
        colorscale="RdBu", colorbar=dict(title=dict(text="win rate")),
        hovertemplate="<b>%{y}</b> vs <b>%{x}</b><br>win rate %{z:.3f}<extra></extra>",
    ))
    size = max(360, 60 * len(names) + 160)
    figure.update_layout(template=TEMPLATE, height=size, width=size + 180,
                         xaxis=dict(title="against (B)", side="bottom", tickangle=-30),
                         yaxis=dict(title="method (A)", autorange="reversed"),
                         margin=dict(l=120, r=20, t=30, b=100))
    return figure


def category_kl_figure(frame: pd.DataFrame, colors: dict[str, str] | None = None) -> go.Figure | None:
    """Each task category's score against KL (harness.report.insights.insights_frame): one panel
    per category, one point per (entry, starting point) with 95% CIs, the colour naming the
    method and the marker the starting point (the starting model itself a star at KL 0)."""
    points = frame.dropna(subset=["value", "kl"])
    if points.empty:
        return None
    categories = list(dict.fromkeys(points["category"]))
    starts = list(dict.fromkeys(points["start"]))
    symbols = ["circle", "square", "diamond", "triangle-up", "cross", "x"]
    colors = colors or entry_colors(list(dict.fromkeys(points["entry"])))
    cols = min(len(categories), 3)
    rows = -(-len(categories) // cols)
    figure = make_subplots(rows=rows, cols=cols, subplot_titles=[html.escape(c) for c in categories])
    shown: set[str] = set()
    for i, category in enumerate(categories):
        for (entry, start), one in points[points["category"] == category].groupby(["entry", "start"], sort=False):
            is_start = bool(one["is_start"].iloc[0])
            name = html.escape(f"{entry} @ {start}")
            figure.add_trace(go.Scatter(
                x=one["kl"], y=one["value"], mode="markers", name=name, legendgroup=name, showlegend=name not in shown,
                marker=dict(size=12 if is_start else 9, color="#7f7f7f" if is_start else colors.get(entry, PALETTE[0]),
                            symbol="star" if is_start else symbols[starts.index(start) % len(symbols)]),
                error_x=_error(one["kl"], one["kl_low"], one["kl_high"]),
                error_y=_error(one["value"], one["ci_low"], one["ci_high"]),
                hovertemplate=f"<b>{name}</b><br>KL %{{x:.4g}}<br>score %{{y:.4g}}<extra></extra>",
            ), row=i // cols + 1, col=i % cols + 1)
            shown.add(name)
    figure.update_layout(template=TEMPLATE, height=320 * rows, legend_title_text="entry @ start",
                         margin=dict(l=50, r=20, t=40, b=40))
    figure.update_xaxes(title_text="KL to the start")
    return figure
