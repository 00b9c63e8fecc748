"""AlpacaEval 2.0's length-controlled win rate across a suite's runs, with the `alpaca-eval`
package's own GLM code (alpaca_eval/metrics/glm_winrate.py, version 0.6.6).

The suite's runs are the leaderboard's models; the baseline is the start model's sample of each
prompt. Per comparison (one policy sample against the baseline sample of its prompt):

    logit P(policy wins) = θ_m + φ_m·tanh(Δlen / sd_m(Δlen)) + ψ_m·γ_x

with Δlen = len(baseline) − len(policy) in characters (the package's sign: output_1 − output_2)
standardized per model, and γ_x the instruction's difficulty. AlpacaEval ships γ_x precomputed
over its own leaderboard; here it is estimated once, jointly across the suite's runs, by one
logistic regression with a per-run intercept and length slope and a per-prompt effect
(`instruction_difficulty`, using the package's design-matrix and fitting functions). Each run is
then fitted with the package's `length_controlled_noreg` formula (its `length_controlled_v1`
without the regularization toward "gamed" verbose/concise baselines, which a suite does not have)
by `fit_LogisticRegressionCV` (L1 penalty chosen by 5-fold cross-validation), and its
length-controlled win rate is the mean over the run's comparisons of the prediction at Δlen = 0,
as `get_length_controlled_winrate` reports it (tests/test_length_control.py checks that function
gives the same number, within 0.01, on stored samples).

The package's `lc_standard_error` is the spread of those per-instruction predictions, not a
sampling error. The CI here is a bootstrap over prompts (`bootstrap_entry`): every resample draws
the prompts once, shared by all seeds of an entry (seeds fixed: the interval covers prompt
sampling for these checkpoints), and refits each run's GLM unpenalized by vectorized Newton steps;
the percentile interval is shifted by the difference between the package's penalized point and
the unpenalized full-data fit (negligible when cross-validation picks a weak penalty, as it does
on the sandbox). γ_x is held at its full-data estimate within the bootstrap.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

GLM_NAME = "length_controlled_noreg"
JOINT_C = 100.0  # the package's C when it fits without cross-validation (n_splits=0)


def _glm():
    """The package's GLM module (imported late: it pulls in sklearn, patsy and datasets)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pkg_resources deprecation notes from alpaca_eval.utils
        from alpaca_eval.metrics import glm_winrate
    return glm_winrate


def featurize(comparisons: pd.DataFrame) -> pd.DataFrame:
    """comparisons: run_id, prompt_id, outcome (P(policy wins): 1, ½ or 0), policy_length,
    baseline_length. Adds the package's columns: preference (= outcome), index (= prompt_id),
    std_delta_len ((baseline − policy length) / its sd within the run; 0 when it does not vary)."""
    df = comparisons.copy()
    delta = df["baseline_length"].astype(float) - df["policy_length"].astype(float)
    sd = delta.groupby(df["run_id"]).transform("std")
    df["std_delta_len"] = np.where(sd > 0, delta / sd.where(sd > 0, 1.0), 0.0)
    df["preference"] = df["outcome"].astype(float)
    df["index"] = df["prompt_id"]
    return df


def instruction_difficulty(features: pd.DataFrame) -> pd.Series:
    """γ_x per prompt_id, fitted jointly across every run of `features` (`featurize`): logit
    P(win) = θ_run + φ_run·tanh(std_delta_len) + γ_prompt, by the package's design matrix and its
    probability-target logistic regression (L1, C = 100, no cross-validation); centred to mean 0
    (a shift of γ is absorbed by each run's intercept)."""
    glm = _glm()
    rows = features[["run_id", "prompt_id", "std_delta_len", "preference"]].dropna().copy()
    rows["run_id"] = rows["run_id"].astype(str)
    prompts = np.sort(rows["prompt_id"].unique())
    if len(prompts) < 2:
        return pd.Series(0.0, index=pd.Index(prompts, name="prompt_id"))
    formula = "C(run_id) + C(run_id):np.tanh(std_delta_len) + C(prompt_id) - 1"
    train, _ = glm.make_dmatrix_for_model(rows, rows.head(1), formula=formula)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = glm.fit_LogisticRegressionCV(train, "preference", is_ytrue_proba=True, n_splits=0, C=JOINT_C)
    coef = dict(zip(train.columns.drop("preference"), model.coef_[0]))
    gamma = np.array([coef.get(f"C(prompt_id)[T.{p}]", 0.0) for p in prompts])
    return pd.Series(gamma - gamma.mean(), index=pd.Index(prompts, name="prompt_id"))


def run_win_rate(run: pd.DataFrame, difficulty: pd.Series) -> tuple[float, float]:
    """(length-controlled win rate, the CV-chosen C) of one run's featurized comparisons, by the
    package's `length_controlled_noreg` formula and `fit_LogisticRegressionCV` (5 folds), predicted
    at Δlen = 0 and averaged over the comparisons. A run whose outcomes do not vary gets its
    plain mean (nothing to fit)."""
    glm = _glm()
    df = run[["preference", "index", "std_delta_len"]].dropna().copy()
    df["instruction_difficulty"] = difficulty.reindex(df["index"]).to_numpy(float)
    df["not_gamed_baseline"] = True
    if df["preference"].nunique() < 2 or len(df) < 10:
        return float(df["preference"].mean()), np.nan
    test = df[["instruction_difficulty", "not_gamed_baseline"]].copy()
    test["std_delta_len"] = 0.0
    train, design = glm.make_dmatrix_for_model(df, test, formula=glm.GLM_INFO[GLM_NAME]["formula"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = glm.fit_LogisticRegressionCV(train, "preference", is_ytrue_proba=True,
                                             **glm.GLM_INFO[GLM_NAME]["kwargs"])
    return float(model.predict_proba(design)[:, 1].mean()), float(np.ravel(model.C_)[0])


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def fit_weighted(x: np.ndarray, y: np.ndarray, weights: np.ndarray, ridge: float = 1e-6,
                 iterations: int = 60) -> np.ndarray:
    """Weighted logistic regression with probability targets, for B weight vectors at once.

    x (N, d) design, y (N,) targets in [0, 1], weights (B, N). Newton's method on
    Σ w [y log σ(xβ) + (1 − y) log(1 − σ(xβ))] − ridge/2·‖β‖² (the ridge only keeps β finite when
    a resample is separable; steps are clipped to ±5 and β to ±30). Returns β (B, d)."""
    w = np.atleast_2d(weights)
    beta = np.zeros((w.shape[0], x.shape[1]))
    eye = ridge * np.eye(x.shape[1])
    for _ in range(iterations):
        p = _sigmoid(beta @ x.T)  # (B, N)
        gradient = (w * (y - p)) @ x - ridge * beta
        hessian = np.einsum("bn,ni,nj->bij", w * p * (1 - p), x, x) + eye
        step = np.clip(np.linalg.solve(hessian, gradient[..., None])[..., 0], -5.0, 5.0)
        beta = np.clip(beta + step, -30.0, 30.0)
        if np.max(np.abs(step)) < 1e-10:
            break
    return beta


def bootstrap_entry(runs: list[pd.DataFrame], difficulty: pd.Series, point: float, resamples: int = 1000,
                    seed: int = 0, confidence: float = 0.95) -> tuple[float, float]:
    """(ci_low, ci_high) of an entry's length-controlled win rate (mean over its runs): the prompt
    bootstrap described in the module docstring. `runs`: each run's featurized comparisons;
    `point`: the entry's point estimate from the package's fits."""
    prompts = np.sort(pd.unique(pd.concat([r["index"] for r in runs])))
    if len(prompts) < 2 or resamples < 1:
        return (np.nan, np.nan)
    position = {p: i for i, p in enumerate(prompts)}
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(row, minlength=len(prompts))
                       for row in rng.integers(0, len(prompts), size=(resamples, len(prompts)))]).astype(float)
    full = np.ones((1, len(prompts)))
    boot, unpenalized = np.zeros(resamples), 0.0
    for run in runs:
        df = run[["preference", "index", "std_delta_len"]].dropna()
        slot = df["index"].map(position).to_numpy()
        gamma = difficulty.reindex(df["index"]).to_numpy(float)
        x = np.column_stack([np.tanh(df["std_delta_len"].to_numpy(float)), gamma, np.ones(len(df))])
        at_zero = np.column_stack([np.zeros(len(df)), gamma, np.ones(len(df))])
        y = df["preference"].to_numpy(float)
        for weights, out in ((full, None), (counts, boot)):
            w = weights[:, slot]
            p = _sigmoid(fit_weighted(x, y, w) @ at_zero.T)
            value = (w * p).sum(axis=1) / w.sum(axis=1)
            if out is None:
                unpenalized += float(value[0]) / len(runs)
            else:
                out += value / len(runs)
    alpha = 1.0 - confidence
    low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2]) + (point - unpenalized)
    return (float(low), float(high))


def length_controlled_table(comparisons: pd.DataFrame, entries: dict[str, list[str]], resamples: int = 1000,
                            seed: int = 0, confidence: float = 0.95) -> pd.DataFrame:
    """Per entry: the length-controlled win rate (mean over its runs of each run's package fit) and
    its prompt-bootstrap CI. comparisons: see `featurize`; entries: entry -> its run ids.
    Columns: entry, value, ci_low, ci_high."""
    features = featurize(comparisons)
    difficulty = instruction_difficulty(features)
    by_run = {str(r): g for r, g in features.groupby(features["run_id"].astype(str), sort=False)}
    rows = []
    for entry, run_ids in entries.items():
        runs = [by_run[str(r)] for r in run_ids if str(r) in by_run]
        if not runs:
            continue
        point = float(np.mean([run_win_rate(r, difficulty)[0] for r in runs]))
        low, high = bootstrap_entry(runs, difficulty, point, resamples=resamples, seed=seed, confidence=confidence)
        rows.append({"entry": entry, "value": point, "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows, columns=["entry", "value", "ci_low", "ci_high"])
