"""Statistics for ranking: per-entry aggregates over seeds, ranks the paired tests support, the
reward-vs-KL frontier and the KL budget.

Reads the long-format results frame (harness.results.schema) and returns plain pandas frames.
pandas, numpy and scipy (and the `alpaca-eval` package for the length-controlled win rate) only:
never torch (reports are rendered on machines without it).

Vocabulary:
- a *metric key* is "evaluator/metric", e.g. "win_rate/win_rate_vs_start";
- an *entry* is one (method, hparams) setting; its runs differ only by seed. An entry is named by
  its method, plus the hyper-parameters that differ between settings when a method appears with
  several, e.g. "dpo (beta=0.05)" and "dpo (beta=0.1)";
- the start model (method "start") is an entry like any other, a baseline for the rest.

The statistics (documented once here, referred to from the functions below):
- KL: the exact per-token KL along the policy's samples (`kl/kl_token_exact`) wherever it was
  computed: it has no within-sequence sampling noise and the smallest standard error; the k3 and
  k1 Monte-Carlo estimates are secondary columns (k3 is the KL only where the exact one is missing).
- Intervals over seeds and prompts (`harness.intervals.crossed_interval`): where the per-sample
  tables are stored, each run's per-prompt means form a seeds × prompts table (the seeds share the
  prompts), and the 95% interval is a t interval with the crossed random-effects variance
  σ_s²/K + σ_g²/P + σ_e²/(KP) (ANOVA mean squares, Satterthwaite df). It covers the population
  mean over seeds and prompts; with one seed, the population of prompts for that checkpoint.
  Without samples: a t interval over the per-seed means ("t over seeds": these prompts, seeds
  varying), or with one seed the run's own CI. Every interval is then cut to its metric's range
  (`harness.results.ranges`: KL ≥ 0, win rates and lm-eval proportions in [0, 1]; the reward is
  unbounded): that never lowers coverage, as the true value lies in the range. The means stay.
- Length-controlled win rate (`harness.length_control`): AlpacaEval 2.0's GLM from the
  `alpaca-eval` package, the suite's runs as the leaderboard's models and the per-instruction
  difficulty fitted jointly across them; bootstrap CI over prompts (seeds fixed).
- Paired comparisons (`paired_tests`): two entries on the same prompts, compared as methods:
  the difference of their means over seeds and prompts, with a variance that contains both
  entries' seed variance and the per-prompt variance of the difference
  (`harness.intervals.method_difference`; Welch–Satterthwaite t test and interval). Differences
  within a relative 1e-9 count as zero. p-values are Holm-corrected over all pairs (`holm`).
- Ranks (`leaderboard`): only entries within the KL budget (exact KL ≤ `kl_budget` nats, default
  DEFAULT_KL_BUDGET) are ranked, on the suite's reward. An entry's rank is 1 + the number of
  ranked entries significantly better than it (paired tests after Holm; without samples,
  non-overlapping 95% CIs; `harness.intervals.significance_ranks`): `RANK_RULE` says it in one
  sentence. Entries over the budget are shown, not ranked.
- Pareto frontier: an entry is on it when no other entry has at least as much reward for at most
  as much KL and is strictly better on one of the two.
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

from harness.intervals import CONFIDENCE, crossed_interval, method_difference, significance_ranks
from harness.results.ranges import clip_to_range, metric_range
from harness.suite import DEFAULT_KL_BUDGET  # nats: the ranked entries' exact KL to the reference at most this

WIN_RATE = "win_rate/win_rate_vs_start"
RANK_RULE = ("an entry's rank is 1 + the number of entries within the KL budget that are significantly better "
             "on {reward} ({test}); entries nothing beats share rank 1, and two different ranks are not by "
             "themselves a significant difference (beats / beaten by count the significant ones)")
LC_WIN_RATE = "win_rate/length_controlled_vs_start"  # AlpacaEval 2.0's GLM across the suite's runs
REWARD = "gold_reward/reward_mean"  # the sandbox's exact reward
JUDGE_REWARD = "reward_model/reward_mean"  # a real suite's reward model (evaluate.reward_model)
KL_EXACT = "kl/kl_token_exact"
KL_K3 = "kl/kl_k3"
KL_K1 = "kl/kl_k1"
KL = KL_EXACT  # the headline KL wherever it was computed (`kl_key`)
# every key a headline column can show, in column order
HEADLINE_KEYS = (REWARD, JUDGE_REWARD, LC_WIN_RATE, WIN_RATE, KL_EXACT, KL_K3, KL_K1)
START_METHOD = "start"
COMPUTE_COLUMNS = ("flops_total", "flops_reference", "optimizer_steps", "train_seconds")
ZERO_TOLERANCE = 1e-9  # relative: differences below it are float-order noise, counted as 0


def _keys(metrics: pd.DataFrame) -> set[str]:
    if not len(metrics):
        return set()
    return set(metrics["evaluator"].astype(str) + "/" + metrics["metric"].astype(str))


def reward_key(metrics: pd.DataFrame) -> str:
    """The suite's reward metric: the gold reward where it was measured (the sandbox), else the
    reward model's mean score."""
    keys = _keys(metrics)
    return JUDGE_REWARD if JUDGE_REWARD in keys and REWARD not in keys else REWARD


def kl_key(metrics: pd.DataFrame) -> str:
    """The suite's headline KL: the exact per-token KL where it was computed, else k3."""
    rows = metrics[(metrics["evaluator"].astype(str) + "/" + metrics["metric"].astype(str)) == KL_EXACT] \
        if len(metrics) else metrics
    return KL_EXACT if len(rows) and rows["value"].notna().any() else KL_K3


def headline_of(metrics: pd.DataFrame) -> tuple[str, ...]:
    """The headline metrics of a suite's results: its reward, the win rate, the headline KL, then
    the other KL estimators (secondary columns)."""
    kl = kl_key(metrics)
    return (reward_key(metrics), WIN_RATE, kl, *[k for k in (KL_K3, KL_K1) if k != kl and k in _keys(metrics)])


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
    """A copy of `metrics` with an "entry" column naming each row's (method, hparams) setting,
    and, when the runs start from several models (a suite's starting points), the model after
    an "@" ("dpo @ sandbox:base"), so that runs from different starts are never pooled."""
    out = metrics.copy()
    keys = list(zip(out["method"].astype(str), out["hparams"].astype(str)))
    names = entry_names(keys)
    out["entry"] = [names[k] for k in keys]
    if "model" in out.columns and out["model"].nunique() > 1:
        out["entry"] = out["entry"] + START_SEPARATOR + out["model"].astype(str)
    return out


START_SEPARATOR = " @ "  # between an entry's setting and its starting model


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


def _run_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per run: entry, method, hparams, seed and the compute columns."""
    labelled = label_entries(metrics)
    columns = ["run_id", "entry", "method", "hparams", "seed"] + [
        c for c in COMPUTE_COLUMNS if c in labelled.columns
    ]
    return labelled.drop_duplicates("run_id")[columns].reset_index(drop=True)


def ranking_kl_budget(trials: pd.DataFrame | None) -> float:
    """The KL budget a suite's entries are ranked within: the one its tuning selected within (the
    trials table's kl_budget, so selection and ranking agree), else DEFAULT_KL_BUDGET."""
    if trials is None or trials.empty or "kl_budget" not in trials.columns:
        return DEFAULT_KL_BUDGET
    return float(trials["kl_budget"].iloc[0])


def leaderboard(
    metrics: pd.DataFrame,
    headline: Sequence[str] | None = None,
    rank: bool = True,
    samples: pd.DataFrame | None = None,
    resamples: int = 1000,
    seed: int = 0,
    kl_budget: float = DEFAULT_KL_BUDGET,
) -> pd.DataFrame:
    """One row per entry (method, hparams), aggregated over seeds, best first.

    Columns: entry, method, hparams, is_start, n_seeds; for each headline key K (default
    `headline_of`, plus LC_WIN_RATE when `samples` hold the completion lengths): K (mean over
    seeds), "K:ci_low", "K:ci_high" (cut to K's range), "K:ci_kind", "K:level" (the interval's confidence
    level: CONFIDENCE, or a single run's stored level); the compute columns (mean over seeds);
    frontier (on the reward-vs-KL Pareto frontier), within_budget (KL ≤ kl_budget, or no KL
    measured), rank (1 + the number of entries significantly better on the suite's reward, see the module docstring; NaN over the
    budget or with `rank` False), rank_basis ("paired tests" or "CI overlap"), beats and beaten_by
    (how many ranked entries it is significantly better / worse than on the reward).
    Sorted: ranked entries by rank and reward, then the rest by reward.
    """
    runs = _run_table(metrics)
    if runs.empty:
        return pd.DataFrame(columns=["entry", "method", "hparams", "is_start", "n_seeds", "rank"])
    with_lc = headline is None or LC_WIN_RATE in headline
    headline = list(headline or headline_of(metrics))
    reward, kl = reward_key(metrics), kl_key(metrics)
    evals = final_eval(metrics).merge(runs[["run_id", "entry"]], on="run_id")
    board = _entry_table(runs)
    prompts = per_prompt_values(samples, metrics) if samples is not None and len(samples) else None
    keys = list(dict.fromkeys([*headline, reward, kl] if rank else headline))
    for key in keys:
        if key == LC_WIN_RATE:
            continue
        board = board.merge(_metric_intervals(evals[evals["key"] == key], key), on="entry", how="left")
        if prompts is not None and key in SAMPLE_METRICS:
            board = _crossed_intervals(board, runs, prompts, key)
        for suffix in ("", ":ci_low", ":ci_high"):
            board[key + suffix] = board[key + suffix].astype(float)
    if with_lc:
        board = _length_controlled(board, runs, samples, resamples, seed)
    board = _clip_to_ranges(board, evals)
    board["frontier"] = board["entry"].isin(pareto_frontier(board, x=kl, y=reward)) if kl in board else False
    kl_values = board[kl] if kl in board else pd.Series(np.nan, index=board.index)
    board["within_budget"] = ~(kl_values > kl_budget)
    board["rank"], board["rank_basis"], board["beats"], board["beaten_by"] = np.nan, "", np.nan, np.nan
    if rank and reward in board:
        board = _significance_ranks(board, metrics, samples, reward)
    return _sort_board(board, reward)


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
    """Per entry: (mean, ci_low, ci_high, ci_kind, level) of one metric over its seeds, columns
    named after `key`."""
    out = []
    for entry, group in rows.groupby("entry", sort=False):
        mean, lo, hi = seed_interval(group["value"], group["ci_low"], group["ci_high"], group["stderr"])
        kind = "t over seeds (these prompts)" if group["value"].notna().sum() > 1 else "run CI"
        out.append({"entry": entry, key: mean, key + ":ci_low": lo, key + ":ci_high": hi, key + ":ci_kind": kind,
                    key + ":level": _interval_level(group, kind) if pd.notna(lo) and pd.notna(hi) else np.nan})
    return pd.DataFrame(out, columns=["entry", key, key + ":ci_low", key + ":ci_high", key + ":ci_kind",
                                      key + ":level"])


def _interval_level(group: pd.DataFrame, kind: str) -> float:
    """The level of an entry's interval: CONFIDENCE for the t interval over seeds; a single run's own
    stored CI keeps the level it was computed at (seed_interval's fallback from its stderr is at CONFIDENCE)."""
    if kind == "run CI" and "level" in group.columns:
        stored = group.loc[group["value"].notna(), "level"]
        if len(stored) and pd.notna(stored.iloc[0]):
            return float(stored.iloc[0])
    return CONFIDENCE


def seeds_by_prompts(prompts: pd.DataFrame, run_ids: Sequence[str], key: str) -> np.ndarray:
    """An entry's (seeds, prompts) table of per-prompt values of `key`: one row per run, the
    prompts every run was evaluated on (columns sorted by prompt id). Empty when a run is missing."""
    rows = prompts[(prompts["key"] == key) & prompts["run_id"].isin(list(run_ids))]
    table = rows.pivot_table(index="run_id", columns="prompt_id", values="value", aggfunc="mean")
    if len(table) < len(set(run_ids)):
        return np.empty((0, 0))
    return table.dropna(axis=1).to_numpy(float)


def _clip_to_ranges(board: pd.DataFrame, evals: pd.DataFrame) -> pd.DataFrame:
    """Every interval column of the board (seed, crossed, a run's own, the LC bootstrap) cut to
    its metric's range (`harness.results.ranges`): the means stay, only ci_low / ci_high move.

    Ranks see the same thing either way: they use the reward's interval, which is unbounded, and
    for any key whose means lie in its range [a, b] cutting keeps every CI-overlap relation (if
    lo_i ≤ hi_j then max(lo_i, a) ≤ min(hi_j, b), as lo_i ≤ mean_i ≤ b and a ≤ mean_j ≤ hi_j; if
    lo_i > hi_j the cut ends stay apart). The paired tests use no stored interval."""
    board = board.copy()
    for column in [c for c in board.columns if c.endswith(":ci_low")]:
        key = column[: -len(":ci_low")]
        bounds = metric_range(key, evals.loc[evals["key"] == key, "value"])
        if bounds != (-np.inf, np.inf):
            board[column], board[key + ":ci_high"] = clip_to_range(board[column], board[key + ":ci_high"], bounds)
    return board


def _crossed_intervals(board: pd.DataFrame, runs: pd.DataFrame, prompts: pd.DataFrame, key: str) -> pd.DataFrame:
    """Replace the CI of `key` by the seeds × prompts interval (`crossed_interval`) for entries
    whose every run has samples."""
    board = board.copy()
    for index, entry in board["entry"].items():
        table = seeds_by_prompts(prompts, runs.loc[runs["entry"] == entry, "run_id"], key)
        if table.size == 0 or table.shape[1] < 2 or pd.isna(board.at[index, key]):
            continue
        mean, lo, hi = (float(v) for v in crossed_interval(table))
        board.at[index, key], board.at[index, key + ":ci_low"], board.at[index, key + ":ci_high"] = mean, lo, hi
        board.at[index, key + ":ci_kind"] = ("seeds × prompts (crossed t)" if table.shape[0] > 1
                                             else "prompts (one seed, t)")
        board.at[index, key + ":level"] = CONFIDENCE  # crossed_interval's default
    return board


def _length_controlled(board: pd.DataFrame, runs: pd.DataFrame, samples: pd.DataFrame | None,
                       resamples: int, seed: int) -> pd.DataFrame:
    """Add the LC_WIN_RATE columns (`harness.length_control`) when the samples carry the outcome
    against the start model and both completions' texts."""
    needed = {"run_id", "prompt_id", "outcome", "completion", "baseline_completion"}
    if samples is None or not needed <= set(samples.columns):
        return board
    rows = samples[samples["run_id"].isin(runs["run_id"])].dropna(subset=["outcome"])
    if rows.empty:
        return board
    from harness.length_control import length_controlled_table

    comparisons = rows[["run_id", "prompt_id", "outcome"]].copy()
    comparisons["policy_length"] = rows["completion"].astype(str).str.len()
    comparisons["baseline_length"] = rows["baseline_completion"].astype(str).str.len()
    entries = {e: list(g) for e, g in runs.groupby("entry", sort=False)["run_id"]}
    table = length_controlled_table(comparisons, entries, resamples=resamples, seed=seed, confidence=CONFIDENCE)
    table = table.rename(columns={"value": LC_WIN_RATE, "ci_low": LC_WIN_RATE + ":ci_low",
                                  "ci_high": LC_WIN_RATE + ":ci_high"})
    table[LC_WIN_RATE + ":ci_kind"] = "prompt bootstrap (seeds fixed)"
    table[LC_WIN_RATE + ":level"] = np.where(table[LC_WIN_RATE + ":ci_low"].notna(), CONFIDENCE, np.nan)
    return board.merge(table, on="entry", how="left")


def _significance_ranks(board: pd.DataFrame, metrics: pd.DataFrame, samples: pd.DataFrame | None,
                reward: str) -> pd.DataFrame:
    """Ranks on `reward` among the entries within the KL budget (see the module docstring)."""
    board = board.copy()
    ranked = board[board["within_budget"] & board[reward].notna()].sort_values(
        [reward, "entry"], ascending=[False, True])
    if ranked.empty:
        return board
    entries = list(ranked["entry"])
    tests = paired_tests(metrics, samples, key=reward, order=entries) if samples is not None and len(samples) else None
    if tests is not None and set(tests["a"]) | set(tests["b"]) >= set(entries) and len(entries) > 1:
        significant = {(t.a, t.b): bool(t.significant) and t.diff > 0 for t in tests.itertuples()}
        better = np.array([[significant.get((a, b), False) for b in entries] for a in entries])
        basis = "paired tests"
    else:
        lo, hi = ranked[reward + ":ci_low"].to_numpy(float), ranked[reward + ":ci_high"].to_numpy(float)
        better = lo[:, None] > hi[None, :]  # better[i, j]: i's CI entirely above j's
        basis = "CI overlap"
    board.loc[ranked.index, "rank"] = significance_ranks(better)
    board.loc[ranked.index, "rank_basis"] = basis
    board.loc[ranked.index, "beats"] = better.sum(axis=1)
    board.loc[ranked.index, "beaten_by"] = better.sum(axis=0)
    return board


def _sort_board(board: pd.DataFrame, reward: str) -> pd.DataFrame:
    """Best first: ranked entries by rank then reward, then the unranked by reward."""
    by = ["rank", reward, "entry"] if reward in board else ["rank", "entry"]
    ascending = [True, False, True] if reward in board else [True, True]
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


def levels_text(board: pd.DataFrame, keys: Sequence[str] = HEADLINE_KEYS) -> str:
    """The confidence level of the board's intervals, from its "K:level" columns: "95%" when they
    share one, else each level with the columns at it ("90% for a; 95% for b, c"). CONFIDENCE
    when the board holds no interval."""
    by_key = {key: set(board[key + ":level"].dropna().astype(float)) for key in keys if key + ":level" in board}
    levels = sorted(set().union(*by_key.values())) if by_key else []
    if len(levels) <= 1:
        return f"{(levels or [CONFIDENCE])[0]:.0%}"
    return "; ".join(f"{level:.0%} for {', '.join(k for k, found in by_key.items() if level in found)}"
                     for level in levels)


def format_leaderboard(board: pd.DataFrame, headline: Sequence[str] = HEADLINE_KEYS) -> str:
    """The leaderboard as a plain-text table (for `harness rank`), its intervals' level below it."""
    rows = []
    for _, r in board.iterrows():
        rank = format_value(r["rank"]) if r.get("within_budget", True) else "over KL budget"
        row = {"rank": rank, "entry": r["entry"] + (" ◆" if r.get("frontier") is True else ""),
               "seeds": str(r["n_seeds"])}
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
    lines.append(f"intervals: {levels_text(board, headline)}")
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
    KL_K3: lambda s: _k3(s["policy_logp"], s["reference_logp"]),
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
    needed = {WIN_RATE: ["outcome"], REWARD: ["reward"], JUDGE_REWARD: ["reward"], KL_K3: ["policy_logp", "reference_logp"],
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


def paired_tests(
    metrics: pd.DataFrame,
    samples: pd.DataFrame,
    key: str | None = None,
    order: Sequence[str] | None = None,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Every pair of entries compared as methods on `key` (default: the suite's reward,
    `reward_key`) over the prompts all their runs were evaluated on (see the module docstring).
    One row per pair (a before b in `order`, default best mean first): a, b, key, n_prompts,
    seeds_a, seeds_b, mean_a, mean_b, diff (a − b, mean over seeds and prompts), diff_ci_low,
    diff_ci_high (95% t interval), statistic (t), df, p_value (two-sided), p_holm (Holm over all
    rows), significant (p_holm < alpha), seed_variance ("both", "a", "b" or "none": which sides
    had ≥ 2 seeds, i.e. whose seed variance entered; with "none" the test compares checkpoints)."""
    columns = ["a", "b", "key", "n_prompts", "seeds_a", "seeds_b", "mean_a", "mean_b", "diff", "diff_ci_low",
               "diff_ci_high", "statistic", "df", "p_value", "p_holm", "significant", "seed_variance"]
    key = key or reward_key(metrics)
    prompts = per_prompt_values(samples, metrics, [key])
    runs = _run_table(metrics)
    if prompts.empty:
        return pd.DataFrame(columns=columns)
    wide = prompts.pivot_table(index="run_id", columns="prompt_id", values="value", aggfunc="mean")
    by_entry = {e: [r for r in ids if r in wide.index] for e, ids in runs.groupby("entry", sort=False)["run_id"]}
    tables = {e: wide.loc[ids] for e, ids in by_entry.items() if ids}
    entries = list(tables)
    means = {e: float(np.nanmean(t.to_numpy(float))) for e, t in tables.items()}
    if order is not None:
        entries = [e for e in order if e in tables] + [e for e in entries if e not in order]
    else:
        entries = sorted(entries, key=lambda e: (-means[e], str(e)))
    rows = []
    for i, a in enumerate(entries):
        for b in entries[i + 1:]:
            both = pd.concat([tables[a], tables[b]]).dropna(axis=1)
            ta, tb = both.iloc[:len(tables[a])].to_numpy(float), both.iloc[len(tables[a]):].to_numpy(float)
            result = method_difference(ta, tb, tolerance=ZERO_TOLERANCE)
            sides = {"a": ta.shape[0] > 1, "b": tb.shape[0] > 1}
            rows.append({"a": a, "b": b, "key": key, "n_prompts": int(both.shape[1]),
                         "seeds_a": ta.shape[0], "seeds_b": tb.shape[0],
                         "mean_a": float(ta.mean()) if ta.size else np.nan,
                         "mean_b": float(tb.mean()) if tb.size else np.nan, **result,
                         "seed_variance": "both" if all(sides.values()) else
                         next((s for s, v in sides.items() if v), "none")})
    frame = pd.DataFrame(rows, columns=[c for c in columns if c not in ("p_holm", "significant")])
    frame["p_holm"] = holm(frame["p_value"]) if len(frame) else []
    frame["significant"] = frame["p_holm"] < alpha
    return frame[columns]


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
