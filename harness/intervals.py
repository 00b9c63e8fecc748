"""Intervals and tests over seeds and prompts, for a suite whose seeds share their prompts.

numpy and scipy only (reports are rendered without torch). Every function takes per-prompt values
arranged as a (seeds K, prompts P) table: cell (k, p) is seed k's mean over its samples of prompt p.

The model behind them is the two-way crossed random-effects design (seeds and prompts both drawn
from populations, every seed evaluated on the same prompts):

    y[k, p] = μ + s_k + g_p + e_kp,   Var s = σ_s², Var g = σ_g², Var e = σ_e²

(e absorbs any seed × prompt interaction and the sampling noise within a cell). The mean over the
table then has Var(ȳ) = σ_s²/K + σ_g²/P + σ_e²/(KP). With the ANOVA mean squares of the table,
E[MS_seed] = σ_e² + P σ_s², E[MS_prompt] = σ_e² + K σ_g², E[MS_resid] = σ_e², so

    Var(ȳ) = (E MS_seed + E MS_prompt − E MS_resid) / (KP),

estimated by the observed mean squares, with Satterthwaite's degrees of freedom for the t quantile.
A component whose mean square does not exceed the residual's is estimated as zero and its mean
square pooled with the residual (the usual truncation; see `crossed_interval`).

Why not a bootstrap: a two-level bootstrap that redraws prompts independently within each seed
treats the seeds' prompts as independent draws, and 3 seeds give 10 distinct seed resamples; in
the simulation of tests/test_intervals.py (3 seeds sharing 64 prompts, seed effects 0 / 0.15 /
0.3 on the logit scale) it covered 0.88 / 0.87 / 0.85; this interval covers 0.93–0.97 there.

One run's proportion (k of n documents scored 1, e.g. an lm-eval accuracy) has its own interval,
`proportion_interval`: Wilson's score interval, which stays within [0, 1] and does not collapse
at 0/n or n/n as the normal (Wald) interval p̂ ± 1.96·√(p̂(1−p̂)/n) does.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


def mean_squares(table: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(MS_seed, MS_prompt, MS_resid) of (..., K, P) tables with K ≥ 2 and P ≥ 2 (two-way ANOVA
    without replication; vectorized over the leading axes)."""
    y = np.asarray(table, dtype=np.float64)
    k, p = y.shape[-2:]
    grand = y.mean(axis=(-2, -1), keepdims=True)
    seeds = y.mean(axis=-1, keepdims=True)
    prompts = y.mean(axis=-2, keepdims=True)
    ms_seed = p * ((seeds - grand) ** 2).sum(axis=(-2, -1)) / (k - 1)
    ms_prompt = k * ((prompts - grand) ** 2).sum(axis=(-2, -1)) / (p - 1)
    ms_resid = ((y - seeds - prompts + grand) ** 2).sum(axis=(-2, -1)) / ((k - 1) * (p - 1))
    return ms_seed, ms_prompt, ms_resid


def satterthwaite(coefficients: list, mean_squares_: list, dfs: list) -> tuple[np.ndarray, np.ndarray]:
    """(V, df) for V = Σ c_i M_i: Satterthwaite's df = V² / Σ (c_i M_i)² / df_i (terms with c_i = 0
    drop out). Vectorized over the shape of the M_i."""
    terms = [np.asarray(c, float) * np.asarray(m, float) for c, m in zip(coefficients, mean_squares_)]
    v = sum(terms)
    denominator = sum(t * t / d for t, d in zip(terms, dfs))
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(denominator > 0, v * v / denominator, np.inf)
    return v, df


def crossed_variance(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Var(ȳ) estimate, its df) for (..., K, P) tables (K, P ≥ 2), see the module docstring.

    Cases by which components exceed the residual mean square:
    - both seed and prompt: (MS_s + MS_p − MS_r)/(KP), Satterthwaite df;
    - prompt only (no seed effect visible): MS_p/(KP), df P − 1;
    - seed only: MS_s/(KP), df K − 1;
    - neither: the pooled mean square over all KP − 1 df, /(KP)."""
    k, p = np.shape(table)[-2:]
    ms_s, ms_p, ms_r = mean_squares(table)
    seed, prompt = ms_s > ms_r, ms_p > ms_r
    both_v, both_df = satterthwaite([1, 1, -1], [ms_s, ms_p, ms_r], [k - 1, p - 1, (k - 1) * (p - 1)])
    pooled = (ms_s * (k - 1) + ms_p * (p - 1) + ms_r * (k - 1) * (p - 1)) / (k * p - 1)
    v = np.where(seed & prompt, both_v, np.where(prompt, ms_p, np.where(seed, ms_s, pooled)))
    df = np.where(seed & prompt, both_df, np.where(prompt, p - 1, np.where(seed, k - 1, k * p - 1)))
    return v / (k * p), df


def crossed_interval(table: np.ndarray, confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, ci_low, ci_high) of the mean over seeds and prompts of (..., K, P) tables: a t
    interval with the crossed-design variance (`crossed_variance`). With K = 1 it is the t
    interval over prompts (what one checkpoint covers: the population of prompts). It covers the
    population mean over seeds and prompts."""
    y = np.asarray(table, dtype=np.float64)
    k, p = y.shape[-2:]
    mean = y.mean(axis=(-2, -1))
    if p < 2:
        return mean, np.full_like(mean, np.nan), np.full_like(mean, np.nan)
    if k == 1:
        v, df = y[..., 0, :].var(axis=-1, ddof=1) / p, np.full(mean.shape, p - 1.0)
    else:
        v, df = crossed_variance(y)
    half = stats.t.ppf(0.5 + confidence / 2, df) * np.sqrt(v)
    return mean, mean - half, mean + half


def seed_components(table: np.ndarray) -> tuple[float, float, float]:
    """For one entry's (K, P) table: (c, M_seed, M_resid) of its seed-variance term in a difference
    of two entries, c·(M_seed − M_resid) with c = 1/(KP), and 0 coefficients when it cannot be
    estimated (one seed) or is not visible (M_seed ≤ M_resid)."""
    k, p = np.shape(table)
    if k < 2 or p < 2:
        return 0.0, 0.0, 0.0
    ms_s, _, ms_r = (float(x) for x in mean_squares(table))
    return (1.0 / (k * p), ms_s, ms_r) if ms_s > ms_r else (0.0, 0.0, 0.0)


def method_difference(a: np.ndarray, b: np.ndarray, confidence: float = CONFIDENCE,
                      tolerance: float = 1e-9) -> dict[str, float]:
    """Compare two entries evaluated on the same P prompts, a (K_a, P) and b (K_b, P) tables.

    The difference of their means over seeds and prompts, D = ā − b̄, has variance (prompts shared,
    seeds independent) σ_sa²/K_a + σ_sb²/K_b + Var_p(d_p)/P, where d_p is the difference of the
    seed-averaged per-prompt values; estimated by the seed terms of `seed_components` and the
    sample variance of d_p over prompts, with Satterthwaite's df. The seed variance therefore
    enters: two seeds-sets of one method are not "different" more often than the nominal rate.
    An entry with one seed contributes no seed term (a checkpoint, or the start model, whose
    training-seed variance is zero or unknown).

    Float order: differences within `tolerance` (relative to the values' scale) count as 0, so
    identical samples summed in another order give D = 0 and p = 1 exactly.

    Returns diff, diff_ci_low, diff_ci_high (t interval), statistic (t), df, p_value (two-sided)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    p = a.shape[1]
    scale = max(1.0, float(np.nanmax(np.abs(np.concatenate([a.ravel(), b.ravel()])))) if a.size + b.size else 1.0)
    tol = tolerance * scale
    d = a.mean(axis=0) - b.mean(axis=0)
    d = np.where(np.abs(d) <= tol, 0.0, d)
    diff = float(d.mean())
    diff = 0.0 if abs(diff) <= tol else diff
    if p < 2:
        return {"diff": diff, "diff_ci_low": np.nan, "diff_ci_high": np.nan, "statistic": np.nan,
                "df": np.nan, "p_value": np.nan}
    ca, msa, mra = seed_components(a)
    cb, msb, mrb = seed_components(b)
    ka, kb = a.shape[0], b.shape[0]
    v, df = satterthwaite(
        [ca, -ca, cb, -cb, 1.0 / p],
        [msa, mra, msb, mrb, d.var(ddof=1)],
        [max(ka - 1, 1), max((ka - 1) * (p - 1), 1), max(kb - 1, 1), max((kb - 1) * (p - 1), 1), p - 1])
    v, df = float(v), float(df)
    if diff == 0.0 and v <= tol * tol:
        return {"diff": 0.0, "diff_ci_low": 0.0, "diff_ci_high": 0.0, "statistic": 0.0, "df": df, "p_value": 1.0}
    if v <= tol * tol:  # every prompt and seed differs by the same amount: no noise to test against
        return {"diff": diff, "diff_ci_low": diff, "diff_ci_high": diff, "statistic": np.inf * np.sign(diff),
                "df": df, "p_value": 0.0}
    se = np.sqrt(v)
    t = diff / se
    half = float(stats.t.ppf(0.5 + confidence / 2, df) * se)
    return {"diff": diff, "diff_ci_low": diff - half, "diff_ci_high": diff + half, "statistic": float(t),
            "df": df, "p_value": float(2 * stats.t.sf(abs(t), df))}


def proportion_interval(successes, n, confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """(ci_low, ci_high) of the proportion successes/n: the Wilson score interval (scipy's
    `binomtest(k, n).proportion_ci(method="wilson")`, no continuity correction), elementwise over
    arrays of successes and n (n ≥ 1; each distinct (k, n) is computed once, so many simulated
    tasks of one size cost n + 1 scipy calls).

    Why Wilson and not p̂ ± 1.96·se: at p = 0.01 with n = 30 documents the normal interval covers
    0.26 of the time (k = 0 gives [0, 0]), at p = 0.97 0.60; Wilson's exact coverage over p in
    {0.01, 0.05, 0.3, 0.5, 0.97, 1} and n in {30, 150} is 0.93–1.0 (tests/test_intervals.py)."""
    k, size = np.broadcast_arrays(np.asarray(successes, dtype=np.int64), np.asarray(n, dtype=np.int64))
    if np.any(size < 1) or np.any(k < 0) or np.any(k > size):
        raise ValueError("proportion_interval needs 0 ≤ successes ≤ n and n ≥ 1")
    pairs, inverse = np.unique(np.stack([k.ravel(), size.ravel()], axis=1), axis=0, return_inverse=True)
    bounds = np.array([tuple(stats.binomtest(int(a), int(b)).proportion_ci(confidence, method="wilson"))
                       for a, b in pairs], dtype=np.float64).reshape(-1, 2)
    picked = bounds[inverse.ravel()]
    return picked[:, 0].reshape(k.shape), picked[:, 1].reshape(k.shape)


def significance_ranks(better: np.ndarray) -> np.ndarray:
    """Ranks from a "significantly better" matrix: better[i, j] is True when entry i is
    significantly better than entry j. An entry's rank is 1 + the number of entries significantly
    better than it (as Chatbot Arena ranks models), so rank r says exactly that r − 1 entries beat
    it in the tests; entries nothing beats share rank 1. Unlike tiers cut where every entry above
    beats every entry below, a chain of close neighbours cannot merge the whole board into one
    rank."""
    return 1 + np.asarray(better, dtype=bool).sum(axis=0)
