"""SPIN's per-iteration loss (spin.py): golden values and DPO's formula."""

from __future__ import annotations

from tests.golden import EXACT, close, golden_pair, loss, nls, random_sums


def test_spin_golden():
    """SPIN is DPO per iteration: softplus(−β h) = softplus(−0.3) = 0.554355."""
    close(loss("spin", golden_pair()), [nls(0.3)], tol=EXACT)


def test_spin_is_dpo():
    inputs = random_sums(seed=3)
    close(loss("spin", inputs), loss("dpo", inputs), tol=EXACT)
