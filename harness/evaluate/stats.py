"""Estimates with uncertainty over prompts: the mean, its standard error, a bootstrap 95% CI.

Values are per prompt (several samples of one prompt are averaged first), and the bootstrap
resamples prompts, not samples, as AlpacaEval and the evaluation reference recommend.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from harness.intervals import CONFIDENCE


@dataclass(frozen=True)
class Estimate:
    value: float
    stderr: float
    ci_low: float
    ci_high: float
    n: int
    level: float = CONFIDENCE  # the confidence level of [ci_low, ci_high]

    @property
    def stated_level(self) -> float:
        """The level as stored with the metric: NaN where there is no interval."""
        return self.level if np.isfinite(self.ci_low) and np.isfinite(self.ci_high) else float("nan")


def per_prompt(values: np.ndarray) -> np.ndarray:
    """(prompts, samples) -> (prompts,): the mean over a prompt's samples."""
    values = np.asarray(values, dtype=np.float64)
    return values.mean(axis=1) if values.ndim == 2 else values


def bootstrap_mean(per_prompt_values: np.ndarray, *, resamples: int, seed: int) -> Estimate:
    """Mean over prompts with the bootstrap's standard error and percentile 95% CI."""
    x = np.asarray(per_prompt_values, dtype=np.float64)
    mean = float(x.mean())
    if len(x) < 2 or np.all(x == x[0]):
        return Estimate(mean, 0.0, mean, mean, len(x))
    result = stats.bootstrap(
        (x,), np.mean, n_resamples=resamples, confidence_level=CONFIDENCE, method="percentile",
        random_state=np.random.default_rng(seed), vectorized=True,
    )
    ci = result.confidence_interval
    return Estimate(mean, float(result.standard_error), float(ci.low), float(ci.high), len(x))


def mean_with_stderr(per_prompt_values: np.ndarray) -> Estimate:
    """Mean over prompts with the normal-approximation 95% interval (for unbounded quantities)."""
    x = np.asarray(per_prompt_values, dtype=np.float64)
    mean = float(x.mean())
    stderr = float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else 0.0
    return Estimate(mean, stderr, mean - 1.96 * stderr, mean + 1.96 * stderr, len(x))


# ----------------------------------------------------------------------------------------------
# Length-controlled win rate (AlpacaEval 2.0, Dubois et al. 2024)


@dataclass(frozen=True)
class LengthControlledFit:
    """logit P(win) = theta + phi · tanh(Δlen / scale); the LC win rate is σ(theta)."""

    theta: float
    phi: float
    scale: float

    @property
    def win_rate(self) -> float:
        return float(_sigmoid(np.asarray(self.theta)))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # exact σ without overflow warnings


def length_feature(length_diff: np.ndarray, scale: float | None = None) -> tuple[np.ndarray, float]:
    """tanh(Δlen / sd(Δlen)) and the scale used (0 when Δlen does not vary: the feature is 0)."""
    d = np.asarray(length_diff, dtype=np.float64)
    if scale is None:
        scale = float(d.std(ddof=1)) if d.size > 1 else 0.0
    return (np.tanh(d / scale) if scale > 0 else np.zeros_like(d)), scale


def _fit_logistic(y: np.ndarray, x: np.ndarray, weights: np.ndarray, *, ridge: float = 1e-6,
                  iterations: int = 50) -> np.ndarray:
    """Weighted logistic regression of fractional targets y (N,) on [1, x], for B weight vectors
    (B, N) at once: Newton's method on Σ w [y log σ(z) + (1−y) log(1−σ(z))] − ridge/2 ‖β‖².

    A target of ½ (a tie) is exactly a win and a loss of half weight each. The ridge is tiny: it
    only makes φ = 0 when x is constant and keeps θ finite when every comparison is won (θ then
    grows until the gradient vanishes numerically; it is also clipped to ±30, σ(30) = 1 − 1e-13).
    Returns β (B, 2) = (θ, φ)."""
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    beta = np.zeros((w.shape[0], 2))
    for _ in range(iterations):
        p = _sigmoid(beta[:, :1] + beta[:, 1:] * x)
        r = w * (y - p)
        g = np.stack([r.sum(1), (r * x).sum(1)], axis=1) - ridge * beta
        h = w * p * (1.0 - p)
        h00, h01, h11 = h.sum(1) + ridge, (h * x).sum(1), (h * x * x).sum(1) + ridge
        det = h00 * h11 - h01 * h01
        step = np.stack([h11 * g[:, 0] - h01 * g[:, 1], h00 * g[:, 1] - h01 * g[:, 0]], axis=1) / det[:, None]
        step = np.clip(step, -5.0, 5.0)  # a damped Newton step: safe far from the optimum
        beta = np.clip(beta + step, -30.0, 30.0)
        if np.max(np.abs(step)) < 1e-10:
            break
    return beta


def fit_length_controlled(outcomes: np.ndarray, length_diff: np.ndarray, weights: np.ndarray | None = None,
                          *, scale: float | None = None) -> LengthControlledFit:
    """Fit logit P(win) = θ + φ·tanh(Δlen / sd(Δlen)) to outcomes in {0, ½, 1} (ties count half)."""
    y = np.asarray(outcomes, dtype=np.float64).ravel()
    x, scale = length_feature(np.asarray(length_diff).ravel(), scale)
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    theta, phi = _fit_logistic(y, x, w)[0]
    return LengthControlledFit(float(theta), float(phi), scale)


def length_controlled_win_rate(outcomes: np.ndarray, length_diff: np.ndarray, *, resamples: int, seed: int,
                               valid: np.ndarray | None = None) -> Estimate:
    """The length-controlled win rate σ(θ) with a bootstrap over prompts.

    outcomes and length_diff are (prompts, samples): one comparison per policy sample, its
    length difference policy − baseline. `valid` (same shape) masks comparisons that do not
    exist (a prompt without a dataset response). Each prompt weighs 1 in total (its comparisons
    1/k each), as in the plain win rate; the length scale sd(Δlen) is fixed at its full-sample
    value in the bootstrap, and the bootstrap resamples prompts (all of a prompt's comparisons
    together). The CI is the percentile interval of σ(θ*), the stderr its standard deviation."""
    y = np.asarray(outcomes, dtype=np.float64)
    d = np.asarray(length_diff, dtype=np.float64)
    if y.ndim == 1:
        y, d = y[:, None], d[:, None]
    ok = np.ones_like(y, dtype=bool) if valid is None else np.asarray(valid, dtype=bool).reshape(y.shape)
    keep = ok.any(axis=1)
    y, d, ok = y[keep], d[keep], ok[keep]
    prompts = len(y)
    if prompts == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), float("nan"), 0)
    prompt_of = np.repeat(np.arange(prompts), ok.sum(1))
    base = (1.0 / ok.sum(1))[prompt_of]
    y_rows, d_rows = y[ok], d[ok]
    x, scale = length_feature(d_rows)
    point = _fit_logistic(y_rows, x, base[None, :])[0]
    value = float(_sigmoid(point[0]))
    if prompts < 2 or resamples < 1:
        return Estimate(value, 0.0, value, value, prompts)
    rng = np.random.default_rng(seed)
    draws = []
    for start in range(0, resamples, 500):  # bounded memory: (500, rows) weights at a time
        b = min(500, resamples - start)
        picks = rng.integers(0, prompts, size=(b, prompts))
        counts = np.stack([np.bincount(row, minlength=prompts) for row in picks])
        draws.append(_sigmoid(_fit_logistic(y_rows, x, counts[:, prompt_of] * base)[:, 0]))
    boot = np.concatenate(draws)
    low, high = np.percentile(boot, [2.5, 97.5])
    return Estimate(value, float(boot.std(ddof=1)), float(low), float(high), prompts)
