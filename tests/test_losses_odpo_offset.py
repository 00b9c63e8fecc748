"""ODPO's floor on the score gap (harness/losses/odpo_offset.py)."""

from __future__ import annotations

import dataclasses
import math

import torch

from harness.losses import get_loss
from harness.losses.odpo_offset import MIN_SCORE_GAP
from tests.golden import close, nls, pair, t


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
