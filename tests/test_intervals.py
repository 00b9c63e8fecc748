"""harness.intervals: the seeds × prompts interval, the seed-aware method comparison, the significance
ranks, the Wilson interval of a proportion and intervals cut to a metric's range
(harness.results.ranges), checked by hand and by simulation with a known truth (vectorized, seeded, seconds).

The simulation is the issue's: K seeds share P = 64 prompts; logit P(win) = μ + g_p + s_k with
prompt effects g ~ N(0, 1) and seed effects s ~ N(0, τ²), τ = 0 / 0.15 / 0.3; each (seed, prompt)
cell is the mean of 4 Bernoulli outcomes. The truth, the mean over the populations of seeds and
prompts, is E σ(μ + Z·√(1 + τ²)) by Gauss–Hermite quadrature.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special, stats

from harness.intervals import (
    crossed_interval,
    mean_squares,
    method_difference,
    proportion_interval,
    significance_ranks,
)
from harness.results.ranges import NON_NEGATIVE, UNBOUNDED, UNIT, clip_to_range, metric_range

MU = 0.3


def _truth(tau: float, mu: float = MU) -> float:
    x, w = np.polynomial.hermite_e.hermegauss(80)
    return float((special.expit(mu + np.sqrt(1 + tau**2) * x) * w).sum() / w.sum())


def _tables(rng, reps: int, seeds: int, tau: float, mu: float = MU, prompts: int = 64,
            shared_prompts: np.ndarray | None = None) -> np.ndarray:
    """(reps, seeds, prompts) cells: the mean of 4 Bernoulli outcomes each."""
    g = rng.normal(0, 1, (reps, 1, prompts)) if shared_prompts is None else shared_prompts
    s = rng.normal(0, tau, (reps, seeds, 1))
    return rng.binomial(4, special.expit(mu + g + s)) / 4


def test_mean_squares_by_hand():
    """y = [[1, 2], [3, 6]]: grand 3, seed means 1.5 / 4.5, prompt means 2 / 4.
    MS_seed = 2·((1.5−3)² + (4.5−3)²)/1 = 9; MS_prompt = 2·(1 + 1)/1 = 4;
    residuals y − seed − prompt + grand: [[0.5, −0.5], [−0.5, 0.5]] → MS_resid = 1."""
    assert [float(v) for v in mean_squares(np.array([[1.0, 2.0], [3.0, 6.0]]))] == pytest.approx([9, 4, 1])


def test_crossed_interval_one_seed_is_the_t_interval_over_prompts():
    values = np.array([[0.0, 1.0, 2.0, 3.0]])
    mean, lo, hi = crossed_interval(values)
    half = stats.t.ppf(0.975, 3) * np.std(values, ddof=1) / 2
    assert (float(mean), float(lo), float(hi)) == pytest.approx((1.5, 1.5 - half, 1.5 + half))


@pytest.mark.parametrize("tau", [0.0, 0.15, 0.3])
def test_crossed_interval_covers_the_mean_over_seeds_and_prompts(tau):
    """4000 simulated suites of 3 seeds × 64 shared prompts: coverage within 0.93-0.97 (MC sd
    0.004; seed 0 gives 0.961 / 0.949 / 0.931; 8000 more suites gave 0.959 / 0.952 / 0.941). The
    old two-level bootstrap covered 0.85-0.88."""
    rng = np.random.default_rng(0)
    _, lo, hi = crossed_interval(_tables(rng, 4000, 3, tau))
    truth = _truth(tau)
    coverage = float(((lo <= truth) & (truth <= hi)).mean())
    assert 0.93 <= coverage <= 0.97, coverage


def _rejections(p_values: np.ndarray) -> float:
    return float((np.asarray(p_values) < 0.05).mean())


def test_method_comparison_holds_its_level_when_seeds_vary():
    """Two methods with the same population mean, 3 seeds each (seed sd 0.3 on the logit scale)
    on the same 64 prompts: the seed-aware test rejects at about the nominal 5% (here within
    0.03-0.075 over 600 simulated pairs; MC sd 0.009). A per-prompt Wilcoxon on the seed-averaged
    values (the old test: checkpoints as the unit) rejects far more often."""
    rng = np.random.default_rng(1)
    reps, tau = 600, 0.3
    g = rng.normal(0, 1, (reps, 1, 64))
    a, b = _tables(rng, reps, 3, tau, shared_prompts=g), _tables(rng, reps, 3, tau, shared_prompts=g)
    p = np.array([method_difference(x, y)["p_value"] for x, y in zip(a, b)])
    assert 0.03 <= _rejections(p) <= 0.075, _rejections(p)
    old = stats.wilcoxon(a.mean(axis=1) - b.mean(axis=1), axis=-1, zero_method="wilcox").pvalue
    assert _rejections(old) > 0.15


def test_seeds_of_one_method_are_not_different():
    """Seeds of one method compared with each other: 6 seeds of one method (seed sd 0.15), split
    3 + 3, are two "methods" with the same truth; the test rejects at about 5%."""
    rng = np.random.default_rng(2)
    six = _tables(rng, 600, 6, 0.15)
    p = np.array([method_difference(t[:3], t[3:])["p_value"] for t in six])
    assert 0.025 <= _rejections(p) <= 0.075, _rejections(p)


def test_method_comparison_has_power_against_a_real_difference():
    """A shift of 0.5 on the logit scale (about 0.1 in win rate) with 3 seeds each (seed sd 0.15):
    rejected in about half the runs (0.545 with this seed; the price of 3 seeds: the seed term has
    2 df per method), far above the 5% under no difference."""
    rng = np.random.default_rng(3)
    g = rng.normal(0, 1, (200, 1, 64))
    a, b = _tables(rng, 200, 3, 0.15, mu=0.8, shared_prompts=g), _tables(rng, 200, 3, 0.15, shared_prompts=g)
    p = np.array([method_difference(x, y)["p_value"] for x, y in zip(a, b)])
    assert _rejections(p) > 0.4


def test_identical_entries_summed_in_another_order_are_not_different():
    """The same per-prompt values reached by summing in another order differ in the last bits;
    within the tolerance they count as equal: D = 0 and p = 1 exactly (the old Wilcoxon, which
    dropped only exact zeros, gave p = 0.317 on one such difference)."""
    rng = np.random.default_rng(4)
    parts = rng.normal(size=(3, 64, 5)) / 7.0
    a = parts.sum(axis=-1)
    b = parts[..., ::-1].sum(axis=-1)  # same numbers, other order
    assert not np.array_equal(a, b)
    result = method_difference(a, b)
    assert result["diff"] == 0.0 and result["p_value"] == 1.0
    one_seed = method_difference(a[:1], b[:1])
    assert one_seed["p_value"] == 1.0


def test_method_difference_interval_agrees_with_its_test():
    """The t interval excludes 0 exactly when p < 0.05."""
    rng = np.random.default_rng(5)
    for _ in range(50):
        a, b = rng.normal(0.1, 1, (3, 20)), rng.normal(0, 1, (2, 20))
        r = method_difference(a, b)
        assert (r["p_value"] < 0.05) == (r["diff_ci_low"] > 0 or r["diff_ci_high"] < 0)


def test_significance_ranks_by_hand():
    """Entries 0..3. 0 beats 2 and 3, 1 beats 3, 2 beats 3: nothing beats 0 or 1 (rank 1), one
    entry beats 2 (rank 2), three beat 3 (rank 4). With nothing significant, everyone is rank 1;
    a complete order gives 1, 2, 3. A chain of close neighbours (0~1, 1~2, but 0 beats 2) keeps
    its separation: 1, 1, 2 (tiers cut only where all above beat all below would give 1, 1, 1)."""
    better = np.zeros((4, 4), bool)
    better[0, 2] = better[0, 3] = better[1, 3] = better[2, 3] = True
    assert list(significance_ranks(better)) == [1, 1, 2, 4]
    assert list(significance_ranks(np.zeros((3, 3), bool))) == [1, 1, 1]
    assert list(significance_ranks(np.triu(np.ones((3, 3), bool), 1))) == [1, 2, 3]
    chain = np.zeros((3, 3), bool)
    chain[0, 2] = True
    assert list(significance_ranks(chain)) == [1, 1, 2]


def test_proportion_interval_by_hand():
    """Wilson: centre (k + z²/2)/(n + z²), half-width z/(n + z²)·√(k(n − k)/n + z²/4), z = 1.959964.
    k = n = 150: centre (n + z²/2)/(n + z²), half (z²/2)/(n + z²), so [n/(n + z²), 1] = [0.97503, 1];
    k = 0, n = 150: [0, z²/(n + z²)] = [0, 0.02497]; k = 1, n = 100: centre 2.92073/103.84146 =
    0.028127, half 0.018875·1.396554 = 0.026360, so [0.001767, 0.054486]."""
    z2 = stats.norm.ppf(0.975) ** 2
    low, high = proportion_interval([150, 0, 1], [150, 150, 100])
    assert low == pytest.approx([150 / (150 + z2), 0.0, 0.001767], abs=2e-6)
    assert high == pytest.approx([1.0, z2 / (150 + z2), 0.054486], abs=2e-6)
    assert high[0] == 1.0 and low[1] == 0.0  # exactly: a task at the ceiling is covered by its interval
    with pytest.raises(ValueError):
        proportion_interval(3, 2)


@pytest.mark.parametrize("n", [30, 150])
def test_proportion_interval_covers_a_known_proportion_where_wald_does_not(n):
    """10 000 simulated binary tasks of n documents (each scored 1 with probability p) per p in
    {0.01, 0.05, 0.3, 0.5, 0.97, 1}: the Wilson interval covers p in at least 0.92 of them and 0.945
    on average. Its exact binomial coverage there (Σ_k Binom(k; n, p)·[p ∈ CI(k)]) is, n = 30:
    0.964 / 0.939 / 0.930 / 0.957 / 0.940 / 1; n = 150: 0.935 / 0.943 / 0.960 / 0.959 / 0.952 / 1
    (Wilson's coverage oscillates with p; 0.930 is the lowest in this grid), and the simulation
    must agree with it within 4 Monte Carlo sd. lm-eval's mean ± 1.96·stderr (stderr = sample sd
    /√n, lm_eval.api.metrics.mean_stderr) covers 0.26 at p = 0.01, n = 30 (k = 0 gives [0, 0]),
    0.60 at p = 0.97, n = 30 and 0.78 at p = 0.01, n = 150 (asserted below 0.80), which is why
    lm-eval rows of proportions carry the Wilson interval."""
    from lm_eval.api.metrics import mean_stderr

    ps = np.array([0.01, 0.05, 0.3, 0.5, 0.97, 1.0])
    tasks = 10_000
    rng = np.random.default_rng(n)
    docs = rng.random((ps.size, tasks, n)) < ps[:, None, None]  # (p, task, document) 0/1 scores
    k = docs.sum(axis=-1)
    low, high = proportion_interval(k, n)
    assert ((0.0 <= low) & (low <= k / n) & (k / n <= high) & (high <= 1.0)).all()
    wilson = ((low <= ps[:, None]) & (ps[:, None] <= high)).mean(axis=1)
    assert wilson.min() >= 0.92 and wilson.mean() >= 0.945, wilson

    ks = np.arange(n + 1)
    exact_low, exact_high = proportion_interval(ks, n)
    exact = np.array([(stats.binom.pmf(ks, n, p) * ((exact_low <= p) & (p <= exact_high))).sum() for p in ps])
    assert np.abs(wilson - exact).max() <= 4 * np.sqrt(0.95 * 0.05 / tasks), (wilson, exact)

    mean = docs.mean(axis=-1)
    stderr = docs.std(axis=-1, ddof=1) / np.sqrt(n)
    assert stderr[2, 0] == pytest.approx(mean_stderr(docs[2, 0].astype(float).tolist()))  # lm-eval's own
    wald = ((mean - 1.96 * stderr <= ps[:, None]) & (ps[:, None] <= mean + 1.96 * stderr)).mean(axis=1)
    undercovered = {0.01: wald[0], **({0.97: wald[4]} if n == 30 else {})}  # at n = 150, p = 0.97 it covers 0.94
    assert all(c < 0.80 for c in undercovered.values()), (undercovered, wilson)


# ------------------------------------------------------------------------------ metric ranges


def test_metric_ranges_by_hand():
    assert metric_range("kl/kl_k1") == metric_range("kl/kl_token_exact") == NON_NEGATIVE
    assert metric_range("win_rate/length_controlled_vs_start") == metric_range("win_rate/win_rate_vs_chosen") == UNIT
    assert metric_range("gold_reward/reward_mean") == metric_range("reward_model/reward_mean") == UNBOUNDED
    assert metric_range("lm_eval/arc_easy/acc_norm", [0.61, 0.64]) == UNIT
    assert metric_range("lm_eval/gsm8k/exact_match:strict-match", [0.2]) == UNIT  # a filter after ":"
    assert metric_range("lm_eval/sandbox_fluency/fluent") == UNIT
    assert metric_range("lm_eval/some_task/acc", [45.0, 50.0]) == UNBOUNDED  # a percentage: not cut
    assert metric_range("lm_eval/sandbox_grammar_ppl/word_perplexity", [3.2]) == UNBOUNDED
    assert metric_range("lm_eval/squadv2/f1", [0.4]) == UNBOUNDED  # some tasks report f1 in percent
    low, high = clip_to_range([-0.1, -0.2, 0.2, np.nan], [0.3, -0.1, 1.4, np.nan], UNIT)
    np.testing.assert_array_equal(low, [0.0, 0.0, 0.2, np.nan])
    np.testing.assert_array_equal(high, [0.3, 0.0, 1.0, np.nan])  # wholly below: the edge, [0, 0]


def test_metric_ranges_agree_with_the_evaluators_units():
    """Every metric an evaluator declares a fraction is cut to [0, 1]; every evaluator the
    ranges name exists (implicit_reward's rows are written by the runner)."""
    import harness.evaluate.metrics  # noqa: F401 - registers the evaluators
    from harness.evaluate.registry import EVALUATORS
    from harness.results.ranges import EVALUATOR_RANGES

    fractions = [f"{name}/{m.name}" for name in EVALUATORS for m in EVALUATORS.get(name).metrics if m.unit == "fraction"]
    assert fractions and all(metric_range(key) == UNIT for key in fractions)
    assert set(EVALUATOR_RANGES) - set(EVALUATORS) == {"implicit_reward"}
    assert all(metric_range(f"kl/{m.name}") == NON_NEGATIVE for m in EVALUATORS.get("kl").metrics)


def _coverage(truth: float, low: np.ndarray, high: np.ndarray) -> float:
    return float(((low <= truth) & (truth <= high)).mean())


def _edge_cases(rng, reps: int):
    """(metric key, truth, intervals low, high, stored values) near the edge of the key's range:
    - a k1 KL of 0.05 (per-prompt k1 means can be negative): 3 seeds × 64 prompts, seed, prompt
      and cell effects N(0, 0.03²), N(0, 0.1²), N(0, 0.2²); the crossed interval;
    - a win rate near 1: the module's logit model with μ = 5, τ = 0.3 (truth ≈ 0.989); crossed;
    - an lm-eval accuracy near 1 over 3 seeds (300 documents each, logit p = logit 0.97 + N(0, 0.5²)
      per seed; truth E p ≈ 0.966): the t interval over the per-seed accuracies."""
    from harness.rank import seed_interval

    kl = 0.05 + rng.normal(0, 0.03, (reps, 3, 1)) + rng.normal(0, 0.1, (reps, 1, 64)) + rng.normal(0, 0.2, (reps, 3, 64))
    yield "kl/kl_k1", 0.05, *crossed_interval(kl)[1:], kl.mean(axis=-1)
    wins = _tables(rng, reps, 3, 0.3, mu=5.0)
    yield "win_rate/win_rate_vs_start", _truth(0.3, 5.0), *crossed_interval(wins)[1:], wins.mean(axis=-1)
    logit = special.logit(0.97)
    x, w = np.polynomial.hermite_e.hermegauss(80)
    truth = float((special.expit(logit + 0.5 * x) * w).sum() / w.sum())
    accuracy = rng.binomial(300, special.expit(logit + rng.normal(0, 0.5, (reps, 3)))) / 300
    bounds = np.array([seed_interval(row)[1:] for row in accuracy])
    yield "lm_eval/sandbox_knowledge/acc", truth, bounds[:, 0], bounds[:, 1], accuracy


def test_cutting_intervals_to_the_range_keeps_their_coverage_at_the_edge():
    """Near the edge of a bounded quantity the symmetric intervals cross it (the KL's lower end is
    below 0 in about two thirds of the draws, the win rate's upper end above 1 in about half), and
    cut to the range they cover as often as before (0.94-0.96 in these draws) and are shorter."""
    rng = np.random.default_rng(17)
    for key, truth, low, high, values in _edge_cases(rng, 2000):
        bounds = metric_range(key, values.ravel())
        assert bounds != UNBOUNDED, key
        cut_low, cut_high = clip_to_range(low, high, bounds)
        assert ((low < bounds[0]) | (high > bounds[1])).mean() > 0.25, key  # the edge is really crossed
        assert _coverage(truth, cut_low, cut_high) >= _coverage(truth, low, high), key
        assert _coverage(truth, cut_low, cut_high) >= 0.93, key
        assert (cut_high - cut_low).mean() < (high - low).mean(), key
