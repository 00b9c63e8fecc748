"""rDPO and cDPO (robust.py): golden values, unboundedness, reduction to DPO."""

from __future__ import annotations

from tests.golden import EXACT, close, golden_pair, loss, nls, random_sums, t


def test_rdpo_golden():
    """ε = 0.1, β h = 0.3: [(0.9)·softplus(−0.3) − 0.1·softplus(0.3)] / 0.8
    = (0.498920 − 0.085436) / 0.8 = 0.516855."""
    expected = (0.9 * nls(0.3) - 0.1 * nls(-0.3)) / 0.8
    close(loss("rdpo", golden_pair()), [expected], tol=EXACT)
    assert abs(expected - 0.516855) < 1e-6


def test_rdpo_is_unbounded_below():
    """policy_chosen +88 vs reference −12: r_w = 100, r_l = −1, h = 101, β h = 10.1:
    (0.9·softplus(−10.1) − 0.1·softplus(10.1)) / 0.8 ≈ (0.000037 − 1.010004) / 0.8 = −1.262459:
    negative, as the unbiased estimator allows."""
    value = loss("rdpo", golden_pair(policy_chosen_logps=t(88.0)))
    assert value.item() < 0
    close(value, [(0.9 * nls(10.1) - 0.1 * nls(-10.1)) / 0.8], tol=EXACT)
    assert abs(value.item() + 1.262459) < 1e-6


def test_cdpo_golden():
    """ε = 0.1: 0.9·softplus(−0.3) + 0.1·softplus(0.3) = softplus(−0.3) + 0.1·0.3 = 0.584355."""
    close(loss("cdpo", golden_pair()), [nls(0.3) + 0.03], tol=EXACT)


def test_rdpo_and_cdpo_at_zero_epsilon_are_dpo():
    inputs = random_sums()
    dpo = loss("dpo", inputs)
    close(loss("rdpo", inputs, epsilon=0.0), dpo, tol=EXACT)
    close(loss("cdpo", inputs, epsilon=0.0), dpo, tol=EXACT)
