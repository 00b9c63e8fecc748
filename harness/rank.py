"""Statistics for ranking: per-entry aggregates over seeds, CI-aware ranks, the reward-vs-KL frontier.

Reads the long-format results frame (harness.results.schema) and returns plain pandas frames.
pandas, numpy and scipy only: never torch (reports are rendered on machines without it).

Vocabulary:
- a *metric key* is "evaluator/metric", e.g. "win_rate/win_rate_vs_start";
- an *entry* is one (method, hparams) setting; its runs differ only by seed. An entry is named by
  its method, plus the hyper-parameters that differ between settings when a method appears with
  several, e.g. "dpo (beta=0.05)" and "dpo (beta=0.1)";
- the start model (method "start") is an entry like any other, a baseline for the rest.

The statistics (documented once here, referred to from the functions below):
- CI over seeds: with one seed, that run's own 95% CI (the evaluator's CI over prompts; if it is
  missing, value ± 1.96·stderr; if that is missing too, the point itself). With k ≥ 2 seeds, a
  Student t-interval over the k per-seed means: mean ± t(0.975, k−1) · sd / √k, seeds as blocks.
  Each seed's mean already contains its own prompt-sampling noise, so the spread over seeds covers
  both sources of variance. (A bootstrap over 2–5 seeds would be far too narrow.)
- Tie rule: on one metric, an entry's rank is 1 + the number of entries whose CI lies entirely on
  the better side of its own CI (for higher-is-better: their ci_low > its ci_high). Entries whose
  CIs overlap never outrank each other, so they share a rank, as in a competition ranking.
- Aggregate rank: the mean of those per-metric ranks over the ranked metrics. By default these are
  the headline metrics with higher_is_better True (the goals: win rate, gold reward). Costs with
  higher_is_better False (KL, length) are shown but not ranked: KL is the x axis of the frontier.
- Pareto frontier: an entry is on it when no other entry has at least as much reward for at most
  as much KL and is strictly better on one of the two.

With the per-sample tables (`<run_id>.samples.parquet`, passed as `samples`), more is possible:
- CI over seeds and prompts: a two-level bootstrap (`bootstrap_seeds_prompts`). Each resample
  draws k seeds with replacement from the entry's k seeds, then, within each drawn seed, its P
  per-prompt means with replacement; the statistic is the mean over the drawn seeds; the interval
  is the 2.5% and 97.5% percentiles over 2000 resamples. With one seed it is the bootstrap over
  prompts. It replaces the t-interval for the metrics that can be recomputed from samples (win
  rate, gold reward, KL, length). Caveat: with 2–3 seeds the seed level has few distinct
  resamples, so the interval is narrower than the t-interval's; report several seeds.
- Paired comparisons (`paired_tests`): two entries are compared on the same prompts. Per prompt,
  each entry's value is its mean gold reward over seeds and samples; the difference per prompt is
  tested with the Wilcoxon signed-rank test (two-sided, zero differences dropped) and its mean
  gets a paired bootstrap 95% CI over prompts. p-values are Holm-corrected over all pairs (`holm`).
- Win-rate matrix (`win_rate_matrix`): on each prompt, every sample of A (all seeds) against every
  sample of B by gold reward, a win 1, a tie ½; the mean over pairs of samples, then over prompts.
  W[A, B] + W[B, A] = 1.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

WIN_RATE = "win_rate/win_rate_vs_start"
REWARD = "gold_reward/reward_mean"  # the sandbox's exact reward
JUDGE_REWARD = "reward_model/reward_mean"  # a real suite's reward model (evaluate.reward_model)
KL = "kl/kl_k3"
HEADLINE_KEYS = (WIN_RATE, REWARD, JUDGE_REWARD, KL)  # every key a headline column can show
START_METHOD = "start"
COMPUTE_COLUMNS = ("flops_total", "flops_reference", "optimizer_steps", "train_seconds")
CONFIDENCE = 0.95


def reward_key(metrics: pd.DataFrame) -> str:
    """The suite's reward metric: the gold reward where it was measured (the sandbox), else the
    reward model's mean score."""
    keys = set(metrics["evaluator"].astype(str) + "/" + metrics["metric"].astype(str)) if len(metrics) else set()
    return JUDGE_REWARD if JUDGE_REWARD in keys and REWARD not in keys else REWARD


def headline_of(metrics: pd.DataFrame) -> tuple[str, str, str]:
    """The headline metrics of a suite's results: win rate, its reward metric, KL."""
    return (WIN_RATE, reward_key(metrics), KL)


def metric_key(evaluator: str, metric: str) -> str:
    """The name of a metric across the package: "evaluator/metric"."""
    return f"{evaluator}/{metric}"


def final_eval(metrics: pd.DataFrame) -> pd.DataFrame:
    """The held-out measurements: split "eval" rows at each run's last step, with a "key" column.

    One row per (run_id, key); when a metric was measured at several steps, the last one is kept.
    """
    rows = metrics[metrics["split"] == "eval"].copy()
    rows["key"] = rows["evaluator"].astype(str) + "/" + rows["metric"].astype(str)
    rows = rows.sort_values(["run_id", "key", "step"], kind="stable")
    return rows.drop_duplicates(["run_id", "key"], keep="last").reset_index(drop=True)


def _hparams_dict(text: str) -> dict | None:
    try:
        value = json.loads(text) if text else {}
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _short(value) -> str:
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)


def entry_names(settings: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """Name each (method, hparams JSON) setting: the method alone when it has one setting, else
    "method (k=v, ...)" listing only the hyper-parameters whose values differ between its settings."""
    by_method: dict[str, list[str]] = {}
    for method, hparams in dict.fromkeys(settings):
        by_method.setdefault(method, []).append(hparams)
    names: dict[tuple[str, str], str] = {}
    for method, variants in by_method.items():
        if len(variants) == 1:
            names[(method, variants[0])] = method
            continue
        parsed = [_hparams_dict(h) for h in variants]
        keys = sorted({k for p in parsed if p is not None for k in p})
        differing = [k for k in keys if len({_short(p.get(k)) if p else None for p in parsed}) > 1]
        for hparams, p in zip(variants, parsed):
            if p is None:
                label = hparams if len(hparams) <= 40 else hparams[:37] + "..."
            else:
                label = ", ".join(f"{k}={_short(p[k])}" for k in differing if k in p)
            names[(method, hparams)] = f"{method} ({label or hparams})"
    return names


def label_entries(metrics: pd.DataFrame) -> pd.DataFrame:
    """A copy of `metrics` with an "entry" column naming each row's (method, hparams) setting."""
    out = metrics.copy()
    keys = list(zip(out["method"].astype(str), out["hparams"].astype(str)))
    names = entry_names(keys)
    out["entry"] = [names[k] for k in keys]
    return out


def seed_interval(
    values: Sequence[float],
    ci_lows: Sequence[float] | None = None,
    ci_highs: Sequence[float] | None = None,
    stderrs: Sequence[float] | None = None,
    confidence: float = CONFIDENCE,
) -> tuple[float, float, float]:
    """(mean, ci_low, ci_high) of one metric over an entry's seeds.

    One seed: that run's own CI (else value ± z·stderr, else the point). k ≥ 2 seeds: the
    t-interval over the per-seed values, mean ± t(1−α/2, k−1)·sd/√k. NaN values are ignored.
    """
    v = np.asarray(values, dtype=float)
    keep = ~np.isnan(v)
    v = v[keep]
    if v.size == 0:
        return (np.nan, np.nan, np.nan)
    if v.size == 1:
        return (float(v[0]), *_own_interval(v[0], keep, ci_lows, ci_highs, stderrs, confidence))
    mean = float(v.mean())
    half = stats.t.ppf(0.5 + confidence / 2, df=v.size - 1) * v.std(ddof=1) / np.sqrt(v.size)
    return (mean, mean - float(half), mean + float(half))


def _own_interval(value, keep, ci_lows, ci_highs, stderrs, confidence) -> tuple[float, float]:
    """A single run's interval: its stored CI, else a normal interval from its stderr, else the point."""
    pick = lambda seq: float(np.asarray(seq, dtype=float)[keep][0]) if seq is not None else np.nan  # noqa: E731
    lo, hi = pick(ci_lows), pick(ci_highs)
    if not (np.isnan(lo) or np.isnan(hi)):
        return (lo, hi)
    se = pick(stderrs)
    if not np.isnan(se):
        z = stats.norm.ppf(0.5 + confidence / 2)
        return (value - z * se, value + z * se)
    return (float(value), float(value))


def ci_rank(ci_low: Sequence[float], ci_high: Sequence[float], higher_is_better: bool = True) -> np.ndarray:
    """Per-entry rank on one metric: 1 + the number of entries whose CI lies entirely on the better
    side of this entry's CI (overlapping CIs are ties). NaN where the entry has no interval."""
    lo = np.asarray(ci_low, dtype=float)
    hi = np.asarray(ci_high, dtype=float)
    if higher_is_better:
        better = lo[None, :] > hi[:, None]  # better[i, j]: entry j entirely above entry i
    else:
        better = hi[None, :] < lo[:, None]
    ranks = 1.0 + better.sum(axis=1)
    ranks[np.isnan(lo) | np.isnan(hi)] = np.nan
    return ranks


def pareto_frontier(df: pd.DataFrame, x: str = KL, y: str = REWARD, entry: str = "entry") -> set[str]:
    """Entries not dominated on (low x, high y): no other entry has x' ≤ x and y' ≥ y with one of
    the two strict. With the defaults: the reward-vs-KL frontier of a leaderboard. Rows with a
    missing x or y are left out."""
    points = df[[entry, x, y]].dropna()
    xs, ys = points[x].to_numpy(float), points[y].to_numpy(float)
    weakly = (xs[None, :] <= xs[:, None]) & (ys[None, :] >= ys[:, None])
    strictly = (xs[None, :] < xs[:, None]) | (ys[None, :] > ys[:, None])
    dominated = (weakly & strictly).any(axis=1)  # dominated[i]: some j dominates i
    return set(points[entry].astype(str)[~dominated])


def higher_is_better(metrics: pd.DataFrame) -> dict[str, bool | None]:
    """Each metric key's direction as stored by its evaluator (None when the rows leave it unset)."""
    rows = final_eval(metrics)
    out: dict[str, bool | None] = {}
    for key, values in rows.groupby("key", sort=True)["higher_is_better"]:
        known = values.dropna()
        out[str(key)] = bool(known.iloc[0]) if len(known) else None
    return out


def ranked_metrics(metrics: pd.DataFrame, headline: Sequence[str] | None = None) -> list[str]:
    """The headline metrics (default `headline_of`) that enter the aggregate rank: those stored
    with higher_is_better True."""
    direction = higher_is_better(metrics)
    return [key for key in headline or headline_of(metrics) if direction.get(key) is True]


def _run_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per run: entry, method, hparams, seed and the compute columns."""
    labelled = label_entries(metrics)
    columns = ["run_id", "entry", "method", "hparams", "seed"] + [
        c for c in COMPUTE_COLUMNS if c in labelled.columns
    ]
    return labelled.drop_duplicates("run_id")[columns].reset_index(drop=True)


def leaderboard(
    metrics: pd.DataFrame,
    headline: Sequence[str] | None = None,
    rank_by: Sequence[str] | None = None,
    samples: pd.DataFrame | None = None,
    resamples: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per entry (method, hparams), aggregated over seeds, best first.

    Columns: entry, method, hparams, is_start, n_seeds; for each headline (and rank_by) key K:
    K (mean over seeds), "K:ci_low", "K:ci_high" (95%), "K:ci_kind" and, for ranked keys,
    "K:rank" (`ci_rank`);
    the compute columns (mean over seeds); rank (mean of the per-metric ranks over `rank_by`,
    default `ranked_metrics`). Sorted by rank, then by the first headline metric (best first).

    The interval is the two-level bootstrap over seeds and prompts ("seeds×prompts bootstrap")
    where `samples` holds every seed's samples and K can be recomputed from them
    (SAMPLE_METRICS), else `seed_interval` ("t over seeds" or, with one seed, "run CI").
    """
    runs = _run_table(metrics)
    if runs.empty:
        return pd.DataFrame(columns=["entry", "method", "hparams", "is_start", "n_seeds", "rank"])
    headline = headline or headline_of(metrics)
    evals = final_eval(metrics).merge(runs[["run_id", "entry"]], on="run_id")
    direction = higher_is_better(metrics)
    ranked = list(rank_by) if rank_by is not None else ranked_metrics(metrics, headline)
    board = _entry_table(runs)
    prompts = per_prompt_values(samples, metrics) if samples is not None and len(samples) else None
    for key in dict.fromkeys([*headline, *ranked]):
        board = board.merge(_metric_intervals(evals[evals["key"] == key], key), on="entry", how="left")
        if prompts is not None and key in SAMPLE_METRICS:
            board = _bootstrap_intervals(board, runs, prompts, key, resamples, seed)
        for suffix in ("", ":ci_low", ":ci_high"):
            board[key + suffix] = board[key + suffix].astype(float)
    for key in ranked:
        board[key + ":rank"] = ci_rank(board[key + ":ci_low"], board[key + ":ci_high"],
                                       direction.get(key) is not False)
    rank_columns = [key + ":rank" for key in ranked]
    board["rank"] = board[rank_columns].mean(axis=1, skipna=True) if rank_columns else np.nan
    return _sort_board(board, headline[0] if headline else None, direction)


def _entry_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per entry: identity, number of seeds and mean compute over seeds."""
    compute = [c for c in COMPUTE_COLUMNS if c in runs.columns]
    grouped = runs.groupby("entry", sort=False)
    table = grouped.agg(method=("method", "first"), hparams=("hparams", "first"),
                        n_seeds=("run_id", "nunique"))
    if compute:
        table = table.join(grouped[compute].mean())
    table = table.reset_index()
    table.insert(3, "is_start", table["method"] == START_METHOD)
    return table


def _metric_intervals(rows: pd.DataFrame, key: str) -> pd.DataFrame:
    """Per entry: (mean, ci_low, ci_high, ci_kind) of one metric over its seeds, columns named
    after `key`."""
    out = []
    for entry, group in rows.groupby("entry", sort=False):
        mean, lo, hi = seed_interval(group["value"], group["ci_low"], group["ci_high"], group["stderr"])
        kind = "t over seeds" if group["value"].notna().sum() > 1 else "run CI"
        out.append({"entry": entry, key: mean, key + ":ci_low": lo, key + ":ci_high": hi, key + ":ci_kind": kind})
    return pd.DataFrame(out, columns=["entry", key, key + ":ci_low", key + ":ci_high", key + ":ci_kind"])


def _bootstrap_intervals(board: pd.DataFrame, runs: pd.DataFrame, prompts: pd.DataFrame, key: str,
                         resamples: int, seed: int) -> pd.DataFrame:
    """Replace the CI of `key` by the two-level bootstrap for entries whose every run has samples."""
    rows = prompts[prompts["key"] == key]
    with_samples = set(rows["run_id"])
    board = board.copy()
    for index, entry in board["entry"].items():
        run_ids = list(runs.loc[runs["entry"] == entry, "run_id"])
        if not run_ids or not set(run_ids) <= with_samples or pd.isna(board.at[index, key]):
            continue
        mine = rows[rows["run_id"].isin(run_ids)]
        groups = [g["value"].to_numpy(float) for _, g in mine.groupby("run_id", sort=True)]
        _, lo, hi = bootstrap_seeds_prompts(groups, resamples=resamples, seed=seed)
        board.at[index, key + ":ci_low"], board.at[index, key + ":ci_high"] = lo, hi
        board.at[index, key + ":ci_kind"] = "seeds×prompts bootstrap"
    return board


def _sort_board(board: pd.DataFrame, first: str | None, direction: dict[str, bool | None]) -> pd.DataFrame:
    """Best first: by aggregate rank, then by the first headline metric in its better direction."""
    by, ascending = ["rank"], [True]
    if first is not None and first in board.columns:
        by.append(first)
        ascending.append(direction.get(first) is False)
    by.append("entry")
    ascending.append(True)
    return board.sort_values(by, ascending=ascending, na_position="last", kind="stable").reset_index(drop=True)


def format_value(x: float) -> str:
    """A number for tables: integers as such, else 3 significant digits; "–" when missing."""
    if x is None or np.isnan(x):
        return "–"
    x = float(x)
    if x.is_integer() and abs(x) < 1e6:
        return str(int(x))
    if 100 <= abs(x) < 1e5:
        return f"{x:.0f}"
    return f"{x:.3g}"


def format_interval(mean: float, lo: float, hi: float) -> str:
    """"0.62 [0.55, 0.69]"; the point alone when the interval is missing or degenerate."""
    if np.isnan(mean):
        return "–"
    if np.isnan(lo) or np.isnan(hi) or lo == hi:
        return format_value(mean)
    return f"{format_value(mean)} [{format_value(lo)}, {format_value(hi)}]"


def format_leaderboard(board: pd.DataFrame, headline: Sequence[str] = HEADLINE_KEYS) -> str:
    """The leaderboard as a plain-text table (for `harness rank`)."""
    rows = []
    for _, r in board.iterrows():
        row = {"rank": format_value(r["rank"]), "entry": r["entry"], "seeds": str(r["n_seeds"])}
        for key in headline:
            if key in board.columns:
                row[key] = format_interval(r[key], r[key + ":ci_low"], r[key + ":ci_high"])
        for column in ("flops_total", "optimizer_steps", "train_seconds"):
            if column in board.columns:
                row[column] = format_value(float(r[column]))
        rows.append(row)
    if not rows:
        return "(no entries)"
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(row[c]) for row in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(row[c].ljust(widths[c]) for c in columns) for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- per-sample statistics

def _k3(policy_logp: pd.Series, reference_logp: pd.Series) -> np.ndarray:
    """The k3 KL estimate per sample, (r − 1) − log r with log r = log π_ref − log π, as in
    harness.evaluate.metrics.kl_k3 (repeated here: rank must not import the evaluation stack)."""
    log_r = reference_logp.to_numpy(np.float64) - policy_logp.to_numpy(np.float64)
    return np.expm1(log_r) - log_r


# Metric key -> its per-sample values, from the samples table: the metrics a bootstrap can recompute.
SAMPLE_METRICS = {
    WIN_RATE: lambda s: s["outcome"].to_numpy(float),
    REWARD: lambda s: s["reward"].to_numpy(float),
    JUDGE_REWARD: lambda s: s["reward"].to_numpy(float),
    KL: lambda s: _k3(s["policy_logp"], s["reference_logp"]),
    "kl/kl_k1": lambda s: (s["policy_logp"] - s["reference_logp"]).to_numpy(float),
    "kl/kl_token_exact": lambda s: s["token_kl"].to_numpy(float),
    "length/completion_tokens": lambda s: s["completion_tokens"].to_numpy(float),
}


def per_prompt_values(samples: pd.DataFrame, metrics: pd.DataFrame, keys: Sequence[str] | None = None) -> pd.DataFrame:
    """Per run, prompt and metric: the mean of the per-sample values over the run's samples of
    that prompt (what the evaluators average over prompts). Columns: run_id, entry, seed,
    prompt_id, key, value. Only runs present in `metrics` are kept; keys whose columns are
    missing from `samples` are skipped."""
    columns = ["run_id", "entry", "seed", "prompt_id", "key", "value"]
    runs = _run_table(metrics)[["run_id", "entry", "seed"]]
    rows = samples.merge(runs, on="run_id", how="inner")
    if rows.empty:
        return pd.DataFrame(columns=columns)
    out = []
    needed = {WIN_RATE: ["outcome"], REWARD: ["reward"], JUDGE_REWARD: ["reward"], KL: ["policy_logp", "reference_logp"],
              "kl/kl_k1": ["policy_logp", "reference_logp"], "kl/kl_token_exact": ["token_kl"],
              "length/completion_tokens": ["completion_tokens"]}
    if keys is None:  # the recomputable metrics the runs measured
        measured = set(final_eval(metrics)["key"])
        keys = [k for k in SAMPLE_METRICS if k in measured]
    for key in keys:
        if not set(needed[key]) <= set(rows.columns):
            continue
        frame = rows[["run_id", "entry", "seed", "prompt_id"]].copy()
        frame["value"] = SAMPLE_METRICS[key](rows)
        means = frame.groupby(["run_id", "entry", "seed", "prompt_id"], as_index=False, sort=True)["value"].mean()
        means["key"] = key
        out.append(means)
    return pd.concat(out, ignore_index=True)[columns] if out else pd.DataFrame(columns=columns)


def bootstrap_seeds_prompts(
    groups: Sequence[Sequence[float]], resamples: int = 2000, seed: int = 0, confidence: float = CONFIDENCE
) -> tuple[float, float, float]:
    """(mean, ci_low, ci_high): two-level bootstrap of the mean over seeds of per-prompt means.

    groups: one array of per-prompt values per seed. The point is the mean over seeds of each
    seed's mean. Each of `resamples` resamples draws k seeds with replacement and, within each
    drawn seed, its prompts with replacement; the interval is the percentile interval of the
    resampled means. NaN values are dropped; (nan, nan, nan) when nothing is left."""
    arrays = [np.asarray(g, dtype=float) for g in groups]
    arrays = [a[~np.isnan(a)] for a in arrays]
    arrays = [a for a in arrays if a.size]
    if not arrays:
        return (np.nan, np.nan, np.nan)
    point = float(np.mean([a.mean() for a in arrays]))
    rng = np.random.default_rng(seed)
    k = len(arrays)
    picks = rng.integers(0, k, size=(resamples, k))  # which seed fills each slot of each resample
    means = np.empty((resamples, k))
    for g, values in enumerate(arrays):
        slots = picks == g
        count = int(slots.sum())
        if count:
            idx = rng.integers(0, values.size, size=(count, values.size))
            means[slots] = values[idx].mean(axis=1)
    stat = means.mean(axis=1)
    alpha = 1.0 - confidence
    lo, hi = np.quantile(stat, [alpha / 2, 1 - alpha / 2])
    return (point, float(lo), float(hi))


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (step-down; controls the family-wise error rate).

    With the m p-values sorted ascending, p_(1) ≤ … ≤ p_(m): adj_(i) = max_{j ≤ i} min(1,
    (m − j + 1)·p_(j)); returned in the input order. NaNs stay NaN and do not count in m."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    m = int(ok.sum())
    if m == 0:
        return out
    values = p[ok]
    order = np.argsort(values, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * values[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    out[ok] = adjusted
    return out


def _entry_prompt_means(prompts: pd.DataFrame, key: str) -> pd.DataFrame:
    """prompt_id × entry: the entry's per-prompt value averaged over its seeds."""
    rows = prompts[prompts["key"] == key]
    return rows.pivot_table(index="prompt_id", columns="entry", values="value", aggfunc="mean")


def paired_tests(
    metrics: pd.DataFrame,
    samples: pd.DataFrame,
    key: str | None = None,
    order: Sequence[str] | None = None,
    resamples: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Every pair of entries compared on `key` (default: the suite's reward, `reward_key`) over the
    prompts both were evaluated on (see the module docstring). One row per pair (a before b in `order`, default best mean first): a, b, key,
    n_prompts, mean_a, mean_b, diff (mean of a − b per prompt), diff_ci_low, diff_ci_high (paired
    bootstrap over prompts), statistic and p_value (Wilcoxon signed-rank, two-sided), p_holm
    (Holm over all rows), significant (p_holm < alpha)."""
    columns = ["a", "b", "key", "n_prompts", "mean_a", "mean_b", "diff", "diff_ci_low", "diff_ci_high",
               "statistic", "p_value", "p_holm", "significant"]
    key = key or reward_key(metrics)
    prompts = per_prompt_values(samples, metrics, [key])
    table = _entry_prompt_means(prompts, key) if len(prompts) else pd.DataFrame()
    entries = list(table.columns)
    if order is not None:
        entries = [e for e in order if e in table.columns] + [e for e in entries if e not in order]
    else:
        entries = sorted(entries, key=lambda e: (-table[e].mean(), str(e)))
    rng = np.random.default_rng(seed)
    rows = []
    for i, a in enumerate(entries):
        for b in entries[i + 1:]:
            both = table[[a, b]].dropna()
            d = (both[a] - both[b]).to_numpy(float)
            rows.append({"a": a, "b": b, "key": key, "n_prompts": int(d.size),
                         "mean_a": float(both[a].mean()) if d.size else np.nan,
                         "mean_b": float(both[b].mean()) if d.size else np.nan,
                         "diff": float(d.mean()) if d.size else np.nan,
                         **_paired_bootstrap(d, resamples, rng), **_wilcoxon(d)})
    frame = pd.DataFrame(rows, columns=[c for c in columns if c not in ("p_holm", "significant")])
    frame["p_holm"] = holm(frame["p_value"]) if len(frame) else []
    frame["significant"] = frame["p_holm"] < alpha
    return frame[columns]


def _paired_bootstrap(d: np.ndarray, resamples: int, rng: np.random.Generator) -> dict[str, float]:
    if d.size == 0:
        return {"diff_ci_low": np.nan, "diff_ci_high": np.nan}
    means = d[rng.integers(0, d.size, size=(resamples, d.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - CONFIDENCE) / 2, 1 - (1 - CONFIDENCE) / 2])
    return {"diff_ci_low": float(lo), "diff_ci_high": float(hi)}


def _wilcoxon(d: np.ndarray) -> dict[str, float]:
    """Wilcoxon signed-rank on the per-prompt differences; p = 1 when every difference is 0."""
    nonzero = d[d != 0]
    if d.size == 0:
        return {"statistic": np.nan, "p_value": np.nan}
    if nonzero.size == 0:
        return {"statistic": 0.0, "p_value": 1.0}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-sample and ties notes from scipy
        result = stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided")
    return {"statistic": float(result.statistic), "p_value": float(result.pvalue)}


def win_rate_matrix(metrics: pd.DataFrame, samples: pd.DataFrame, order: Sequence[str] | None = None) -> pd.DataFrame:
    """W[A, B]: how often A's samples beat B's by gold reward on the same prompt, ties ½ (rows A,
    columns B, in `order`; the diagonal is ½). Per prompt, every sample of A (all seeds) meets
    every sample of B; the prompt's win rate is the mean over those pairs, and W the mean over the
    prompts both entries were evaluated on. NaN when they share no prompt."""
    runs = _run_table(metrics)[["run_id", "entry"]]
    rows = samples.merge(runs, on="run_id", how="inner")
    entries = list(order) if order is not None else sorted(rows["entry"].unique())
    entries = [e for e in entries if e in set(rows["entry"])]
    prompt_ids = np.sort(rows["prompt_id"].unique())
    index = {p: i for i, p in enumerate(prompt_ids)}
    grids = {}
    for entry, group in rows.groupby("entry", sort=False):
        slot = group.groupby("prompt_id").cumcount().to_numpy()
        grid = np.full((len(prompt_ids), int(slot.max()) + 1 if len(slot) else 0), np.nan)
        grid[group["prompt_id"].map(index).to_numpy(), slot] = group["reward"].to_numpy(float)
        grids[entry] = grid
    matrix = pd.DataFrame(np.nan, index=pd.Index(entries, name="entry"), columns=entries, dtype=float)
    for a in entries:
        for b in entries:
            matrix.loc[a, b] = 0.5 if a == b else _win_rate(grids[a], grids[b])
    return matrix


def _win_rate(a: np.ndarray, b: np.ndarray) -> float:
    """a, b: (prompts, samples) rewards, NaN-padded. Mean over prompts of the per-prompt win rate."""
    x, y = a[:, :, None], b[:, None, :]
    valid = ~np.isnan(x) & ~np.isnan(y)
    score = np.where(valid, (x > y) + 0.5 * (x == y), 0.0).sum(axis=(1, 2))
    pairs = valid.sum(axis=(1, 2))
    shared = pairs > 0
    return float((score[shared] / pairs[shared]).mean()) if shared.any() else np.nan


def compute_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per entry, the compute accounting (every ACCOUNTING_COLUMNS column, mean over seeds) and
    n_seeds. Rows in first-appearance order."""
    from harness.results.schema import ACCOUNTING_COLUMNS

    labelled = label_entries(metrics).drop_duplicates("run_id")
    columns = [c for c in ACCOUNTING_COLUMNS if c in labelled.columns]
    grouped = labelled.groupby("entry", sort=False)
    table = grouped[columns].mean()
    table.insert(0, "method", grouped["method"].first())
    table.insert(1, "n_seeds", grouped["run_id"].nunique())
    return table.reset_index()
