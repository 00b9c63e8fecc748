"""The "Insights into Alignment" table: methods × task categories × starting points.

From stored rows only (parquet; no torch). A task category is one lm-eval task, scored by one
metric (`category_keys`: the Open LLM Leaderboard's choice where a task reports several: acc_norm,
then acc, then exact match, then the task's first). For each starting point (the `model` column)
and each method: the category's score, mean over seeds with its 95% CI (the leaderboard's
intervals), the **alignment tax** (score minus the starting model's own score on the same items,
so negative is a cost; its interval is the method's interval shifted by the start's score, which
is one evaluation of fixed items), and the win rate against the start and the KL beside them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.rank import (
    START_SEPARATOR,
    WIN_RATE,
    entry_names,
    final_eval,
    format_interval,
    kl_key,
    leaderboard,
    reward_key,
)
from harness.report.html import Cell, esc, table

START_METHOD = "start"
METRIC_PREFERENCE = ("acc_norm", "acc", "exact_match", "mc2", "follows")


def category_keys(metrics: pd.DataFrame) -> list[tuple[str, str]]:
    """(category name, metric key) for each lm-eval task measured, in the order first measured:
    the task's preferred metric (METRIC_PREFERENCE, a filter allowed: "exact_match:strict-match")."""
    rows = final_eval(metrics)
    keys = [k for k in dict.fromkeys(rows["key"]) if k.startswith("lm_eval/")]
    by_task: dict[str, list[str]] = {}
    for key in keys:
        task, metric = key[len("lm_eval/"):].split("/", 1)
        by_task.setdefault(task, []).append(metric)
    out = []
    for task, found in by_task.items():
        base = {m: m.split(":")[0] for m in found}
        pick = next((m for pref in METRIC_PREFERENCE for m in found if base[m] == pref), found[0])
        out.append((task.removeprefix("sandbox_"), f"lm_eval/{task}/{pick}"))
    return out


def insights_frame(metrics: pd.DataFrame, samples: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (start, method entry, category): value, ci_low, ci_high, tax, tax_low,
    tax_high, with the entry's win rate against its start and KL to it (the suite's headline KL,
    rank.kl_key), each with its interval (win, win_low, win_high, kl, kl_low, kl_high)."""
    categories = category_keys(metrics)
    if not categories:
        return pd.DataFrame()
    beside = {"win": WIN_RATE, "kl": kl_key(metrics)}
    keys = [key for _, key in categories] + list(beside.values()) + [reward_key(metrics)]  # the frontier's axes
    board = leaderboard(metrics, headline=keys, rank=False, samples=samples)
    starts = _entry_starts(metrics)
    board["start"] = board["entry"].map(starts)
    board["method_entry"] = [e.split(START_SEPARATOR)[0] for e in board["entry"]]
    rows = []
    for start, group in board.groupby("start", sort=False):
        own = group[group["method"] == START_METHOD]
        for _, entry in group.iterrows():
            for name, key in categories:
                base = float(own[key].iloc[0]) if len(own) and key in own else np.nan
                value, low, high = (float(entry.get(key + s, np.nan)) for s in ("", ":ci_low", ":ci_high"))
                rows.append({
                    "start": start, "entry": entry["method_entry"], "is_start": entry["method"] == START_METHOD,
                    "category": name, "key": key, "value": value, "ci_low": low, "ci_high": high,
                    "tax": value - base, "tax_low": low - base, "tax_high": high - base,
                    **{f"{name}{suffix}": float(entry.get(key + s, np.nan)) for name, key in beside.items()
                       for suffix, s in (("", ""), ("_low", ":ci_low"), ("_high", ":ci_high"))},
                })
    return pd.DataFrame(rows)


def _entry_starts(metrics: pd.DataFrame) -> dict[str, str]:
    """Leaderboard entry -> its starting model (as rank.label_entries names entries)."""
    names = entry_names(zip(metrics["method"].astype(str), metrics["hparams"].astype(str)))
    several = metrics["model"].nunique() > 1
    out = {}
    settings = metrics[["method", "hparams", "model"]].astype(str).drop_duplicates()
    for method, hparams, model in settings.itertuples(index=False):
        entry = names[(method, hparams)] + (START_SEPARATOR + model if several else "")
        out[entry] = model
    return out


INSIGHTS_TEXT = (
    "As in \"Insights into Alignment\" (Saeidi et al. 2024): one table per starting point; each cell is "
    "a category's score, mean [95% CI] over seeds, and below it the alignment tax, the change from "
    "that starting model's own score on the same items (negative: the method cost that capability). "
    "The tax's interval is the method's interval shifted by the start's score; a score's interval is cut "
    "to [0, 1] where the metric is a proportion. Win rate against the "
    "starting model and KL to it beside."
)


def insights_tables(frame: pd.DataFrame) -> str:
    """One HTML table per starting point: rows = entries (the start first), columns = categories,
    then win rate and KL."""
    parts = []
    for start, group in frame.groupby("start", sort=False):
        categories = list(dict.fromkeys(group["category"]))
        headers = [("entry", True)] + [(c, False) for c in categories] + [("win rate vs start", False), ("KL", False)]
        rows = []
        for entry, rows_of in group.groupby("entry", sort=False):
            by = rows_of.set_index("category")
            cells = [Cell(str(entry), str(entry), True, "entry")]
            for c in categories:
                r = by.loc[c]
                text = format_interval(r["value"], r["ci_low"], r["ci_high"])
                if not r["is_start"]:
                    text += f" (tax {format_interval(r['tax'], r['tax_low'], r['tax_high'])})"
                cells.append(Cell(text, _sort_key(r["value"])))
            first = rows_of.iloc[0]
            for col in ("win", "kl"):
                cells.append(Cell(format_interval(first[col], first[col + "_low"], first[col + "_high"]),
                                  _sort_key(first[col])))
            rows.append(("", cells))
        parts += [f"<h3>Starting point: {esc(start)}</h3>", table(headers, rows, table_id=f"insights-{start}")]
    return "\n".join(parts)


def _sort_key(x) -> str:
    return "" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{float(x):.6g}"
