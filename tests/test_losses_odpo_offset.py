"""ODPO, DPO with an offset (harness/losses/odpo_offset.py): golden values, the floor on the
score gap, ties, and the reduction to DPO."""

from __future__ import annotations

import dataclasses
import math

import torch

from harness.losses import get_loss
from harness.losses.odpo_offset import MIN_SCORE_GAP
from tests.golden import EXACT, close, golden_pair, loss, nls, pair, random_sums, t


def test_a_tie_gets_the_floor_not_nan_and_gaps_above_it_are_untouched():
    """α = 1, h = 0. Gap 0 (a tie): Δ = log 1e-6 = −13.8155, loss −log σ(13.8155) ≈ 1e-6, finite
    (the authors' log(0) would give −inf). Gap e: Δ = 1, loss −log σ(−1) = 1.3132617, as unfloored."""
    base = pair(0.0, 0.0)
    tie = dataclasses.replace(base, chosen_scores=t(0.5), rejected_scores=t(0.5))
    gap = dataclasses.replace(base, chosen_scores=t(math.e), rejected_scores=t(0.0))
    loss = get_loss("odpo_offset")
    close(loss(tie).losses, nls(-math.log(MIN_SCORE_GAP)), tol=1e-9)
    assert torch.isfinite(loss(tie).losses).all()
    close(loss(gap).losses, nls(-1.0))


def test_odpo_offset_golden():
    """Scores s_w = 1 + e^0.3, s_l = 1: Δ = α log(e^0.3) = 0.3 with α = 1, which cancels β h = 0.3,
    so loss = −log σ(0) = log 2 = 0.693147. With α = 2, Δ = 0.6: softplus(0.3) = 0.854355."""
    inputs = golden_pair(chosen_scores=t(1 + math.exp(0.3)), rejected_scores=t(1.0))
    close(loss("odpo_offset", inputs), [math.log(2)], tol=EXACT)
    close(loss("odpo_offset", inputs, alpha=2.0), [nls(-0.3)], tol=EXACT)


def test_odpo_offset_tie_is_finite():
    inputs = golden_pair(chosen_scores=t(0.5), rejected_scores=t(0.5))
    assert torch.isfinite(loss("odpo_offset", inputs)).all()


def test_odpo_offset_at_zero_alpha_is_dpo():
    inputs = random_sums(seed=4, chosen_scores=torch.rand(16) + 1, rejected_scores=torch.rand(16))
    close(loss("odpo_offset", inputs, alpha=0.0), loss("dpo", inputs), tol=EXACT)
