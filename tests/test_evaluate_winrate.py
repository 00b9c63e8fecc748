"""Win rates: pairwise outcomes and ties, the bootstrap over prompts, the vs-chosen baseline, and
the length-controlled win rate (AlpacaEval 2.0) against synthetic outcomes with known θ and φ."""

from __future__ import annotations

import numpy as np
import pytest

from harness.evaluate.metrics import pairwise_outcomes, win_rate
from harness.evaluate.registry import ScoredSamples
from harness.evaluate.stats import (
    _fit_logistic,
    _sigmoid,
    fit_length_controlled,
    length_controlled_win_rate,
    length_feature,
)


def _synthetic(theta: float, phi: float, n: int, seed: int, shift: float = 0.0):
    """Comparisons whose length difference leans one way (mean `shift` sds), outcomes drawn from
    logit P(win) = θ + φ·tanh(Δlen / sd(Δlen))."""
    rng = np.random.default_rng(seed)
    diff = rng.normal(shift, 1.0, size=n) * 40.0  # characters
    x, _ = length_feature(diff)
    wins = rng.random(n) < _sigmoid(theta + phi * x)
    return wins.astype(float), diff


def test_pairwise_outcomes_count_ties_half():
    assert pairwise_outcomes(np.array([1.0, 0.0, 0.5]), np.array([0.0, 1.0, 0.5])).tolist() == [1.0, 0.0, 0.5]
    assert np.isnan(pairwise_outcomes(np.array([1.0]), np.array([np.nan]))[0])


def test_length_controlled_fit_recovers_known_theta_and_phi():
    """8000 comparisons from θ = 0.4, φ = 1.5 (SE of θ̂ ≈ 0.03): the fit is within 0.1 of both,
    and the LC win rate is σ(θ̂) ≈ σ(0.4) = 0.599 although the policy is longer on average, which
    pushes the raw win rate well above it."""
    outcomes, diff = _synthetic(0.4, 1.5, 8000, seed=0, shift=0.8)
    fit = fit_length_controlled(outcomes, diff)
    assert fit.theta == pytest.approx(0.4, abs=0.1)
    assert fit.phi == pytest.approx(1.5, abs=0.15)
    assert fit.win_rate == pytest.approx(1 / (1 + np.exp(-0.4)), abs=0.025)
    assert outcomes.mean() > fit.win_rate + 0.1  # the raw rate is inflated by length

    est = length_controlled_win_rate(outcomes[:, None], diff[:, None], resamples=300, seed=0)
    assert est.value == pytest.approx(fit.win_rate, abs=1e-9)
    assert est.ci_low < 1 / (1 + np.exp(-0.4)) < est.ci_high
    assert 0.0 < est.stderr < 0.03 and est.n == 8000


def test_no_length_effect_gives_the_plain_win_rate():
    """φ = 0 in truth: σ(θ̂) ≈ the raw win rate."""
    outcomes, diff = _synthetic(-0.3, 0.0, 4000, seed=1)
    fit = fit_length_controlled(outcomes, diff)
    assert fit.phi == pytest.approx(0.0, abs=0.15)
    assert fit.win_rate == pytest.approx(outcomes.mean(), abs=0.02)


def test_a_tie_is_half_a_win_and_half_a_loss():
    """Fractional targets: a row with outcome ½ fits exactly like that row duplicated as a win
    and a loss of weight ½ each."""
    rng = np.random.default_rng(2)
    y = rng.choice([0.0, 0.5, 1.0], size=200)
    x = np.tanh(rng.normal(size=200))
    ties = y == 0.5
    y_dup = np.concatenate([np.where(ties, 1.0, y), np.zeros(ties.sum())])
    x_dup = np.concatenate([x, x[ties]])
    w_dup = np.concatenate([np.where(ties, 0.5, 1.0), np.full(ties.sum(), 0.5)])
    fractional = _fit_logistic(y, x, np.ones_like(y))[0]
    duplicated = _fit_logistic(y_dup, x_dup, w_dup)[0]
    assert fractional == pytest.approx(duplicated, abs=1e-8)


def test_degenerate_inputs_stay_finite():
    """Every comparison won (separation) and no length variation at all."""
    won = length_controlled_win_rate(np.ones((10, 2)), np.arange(20.0).reshape(10, 2), resamples=50, seed=0)
    assert won.value > 0.999 and np.isfinite(won.ci_low)
    flat = length_controlled_win_rate(np.array([[1.0], [0.0], [0.5], [1.0]]), np.zeros((4, 1)), resamples=50, seed=0)
    assert flat.value == pytest.approx(0.625, abs=1e-6)  # φ unidentified: σ(θ) is the plain mean


def _scored(rewards, baseline, chosen_rewards=None, completions=None, base_texts=None, chosen=None):
    shape = np.shape(rewards)
    zeros = np.zeros(shape)
    return ScoredSamples(
        rewards=np.asarray(rewards, float), baseline_rewards=np.asarray(baseline, float),
        policy_logps=zeros, reference_logps=zeros, token_kl=zeros, lengths=zeros + 3, bootstrap=200,
        seed=0, completions=completions, baseline_completions=base_texts,
        chosen_completions=chosen, chosen_rewards=chosen_rewards,
    )


def test_win_rates_against_start_and_chosen():
    """Two prompts × two samples. vs start: outcomes [[1, ½], [0, 1]] → per prompt ¾ and ½ → 0.625.
    vs chosen: prompt 0's chosen scores 0.5 → outcomes [1, 0] → ½; prompt 1 has none → n = 1."""
    texts = np.array([["a b", "a"], ["a b c", "b"]], dtype=object)
    s = _scored([[1.0, 0.2], [0.0, 0.9]], [[0.0, 0.2], [0.5, 0.1]], chosen_rewards=np.array([0.5, np.nan]),
                completions=texts, base_texts=texts, chosen=np.array(["x", None], dtype=object))
    out = win_rate(s)
    assert out["win_rate_vs_start"].value == pytest.approx(0.625)
    assert out["win_rate_vs_start"].n == 2
    assert out["win_rate_vs_chosen"].value == pytest.approx(0.5)
    assert out["win_rate_vs_chosen"].n == 1
    assert 0.0 <= out["length_controlled_minimal_vs_start"].value <= 1.0
    assert out["length_controlled_minimal_vs_chosen"].n == 1


def test_without_a_chosen_response_anywhere_there_is_no_vs_chosen_metric():
    out = win_rate(_scored([[1.0]], [[0.0]], chosen_rewards=np.array([np.nan])))
    assert set(out) == {"win_rate_vs_start"}
