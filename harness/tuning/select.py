"""Selecting each method's setting from its trials, on validation rows only; the trials table.

pandas only (reports read this module; they never import torch). A trial's value is its metric
on the validation split (rows with split "validation", at the run's last step); rows of any other
split, the test prompts' "eval" rows included, are never read, so no test number reaches selection.

The trials table (results/<suite>/tuning/trials.parquet) has one row per trial: start (the
starting point's name, or its model for a plain `model:`), model (the start's), method, trial
(0-based), run_id, params (JSON: the loss's hyper-parameters and the absolute learning rate),
value and kl (validation), status (ok | failed), within_budget, selected, derived (the method's
dimensions derived rather than declared, comma-separated: harness.tuning.space), and the protocol's
settings (metric, kl_metric: the KL the budget bounds, direction, kl_budget, sampler, seed, trials) and each trial's compute
(flops_total, train_seconds, eval_seconds). A study is one (start, method): each starting point
tunes every method on its own; a table written before starting points had no start column (one
start), and is read as one start.
"""

from __future__ import annotations

import json
import math

import pandas as pd

from harness.rank import reward_key

VALIDATION = "validation"  # the split of a trial's evaluation rows (harness.plan.VALIDATION)
TRIAL_COLUMNS = ("start", "model", "method", "trial", "run_id", "params", "value", "kl", "status", "within_budget", "selected",
                 "derived", "metric", "kl_metric", "direction", "kl_budget", "sampler", "seed", "trials", "flops_total", "train_seconds",
                 "eval_seconds")
STUDY = ("start", "method")  # what one study is (one selection each)


def study_keys(trials: pd.DataFrame) -> list[str]:
    """The columns a study is grouped by: (start, method), or method for a table with no start."""
    return [c for c in STUDY if c in trials.columns]


def metric_of(metric: str, rows: pd.DataFrame) -> str:
    """The metric key selection reads: `metric`, or the suite's reward key for "reward"."""
    return reward_key(rows) if metric == "reward" else metric


def direction_of(direction: str, key: str, rows: pd.DataFrame) -> str:
    """maximize or minimize: as given, or from the metric's own higher_is_better ("auto")."""
    if direction != "auto":
        return direction
    flags = rows.loc[(rows["evaluator"] + "/" + rows["metric"]) == key, "higher_is_better"].dropna()
    return "minimize" if len(flags) and not bool(flags.iloc[0]) else "maximize"


def validation_value(rows: pd.DataFrame, key: str) -> float:
    """One run's `key` ("evaluator/metric") on the validation split at its last step; NaN if absent."""
    mine = rows[(rows["split"] == VALIDATION) & ((rows["evaluator"] + "/" + rows["metric"]) == key)]
    if mine.empty:
        return math.nan
    return float(mine.sort_values("step", kind="stable")["value"].iloc[-1])


def select(trials: pd.DataFrame, direction: str, kl_budget: float) -> pd.DataFrame:
    """`trials` (one study's or several) with within_budget and selected set: per study (start and
    method), the best finite value among the ok trials whose KL is within the budget (an infinite budget
    admits a trial without a KL), first trial on ties; none when no trial qualifies."""
    out = trials.copy()
    finite = out["value"].map(lambda v: v is not None and math.isfinite(v))
    within = out["kl"].map(lambda k: math.isinf(kl_budget) or (k is not None and math.isfinite(k) and k <= kl_budget))
    out["within_budget"] = within & (out["status"] == "ok")
    out["selected"] = False
    sign = -1.0 if direction == "maximize" else 1.0
    for _, group in out[out["within_budget"] & finite].groupby(study_keys(out), sort=False):
        best = (group["value"] * sign).astype(float).idxmin()  # first on ties
        out.loc[best, "selected"] = True
    return out


def unmet(trials: pd.DataFrame) -> list[tuple[str, str]]:
    """The (start, method) studies with trials but no selection (no trial within the KL budget, or
    every trial failed)."""
    studies = list(dict.fromkeys(zip(trials["start"], trials["method"])))
    chosen = set(zip(trials.loc[trials["selected"], "start"], trials.loc[trials["selected"], "method"]))
    return [s for s in studies if s not in chosen]


def selected_params(trials: pd.DataFrame) -> list[tuple[str, str, dict]]:
    """(model, method, its selected setting: the params JSON, parsed) for each study with a selection."""
    return [(r.model, r.method, json.loads(r.params)) for r in trials[trials["selected"]].itertuples()]
