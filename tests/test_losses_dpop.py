"""DPOP (dpop.py): golden values and its reduction to DPO."""

from __future__ import annotations

import dataclasses

import torch

from harness.losses import get_loss
from tests.golden import EXACT, close, golden_pair, loss, nls, random_sums, t


def test_dpop_golden():
    """policy_chosen −12.5 vs reference −12: r_w = −0.5, so the penalty is max(0, 0.5) = 0.5;
    r_l = −1, h = 0.5. With λ = 50, β = 0.1: β (h − λ·0.5) = 0.1·(0.5 − 25) = −2.45,
    loss = softplus(2.45) = 2.532772. Penalty inside the β bracket (outside, it would be
    softplus(−0.05) + 25 ≈ 25.67)."""
    out = get_loss("dpop")(golden_pair(policy_chosen_logps=t(-12.5)))
    close(out.losses, [nls(-2.45)], tol=EXACT)
    assert abs(out.losses.item() - 2.532772) < 1e-6
    close(out.metrics["dpop_penalty"], [0.5], tol=EXACT)


def test_dpop_is_dpo_when_the_chosen_ratio_is_not_negative():
    inputs = random_sums()
    gain = torch.rand(16, dtype=torch.float64)  # r_w = gain ≥ 0
    inputs = dataclasses.replace(inputs, policy_chosen_logps=inputs.reference_chosen_logps + gain)
    out = get_loss("dpop")(inputs)
    close(out.losses, loss("dpo", inputs), tol=EXACT)
    close(out.metrics["dpop_penalty"], torch.zeros(16), tol=EXACT)


def test_dpop_penalizes_a_falling_chosen_likelihood():
    inputs = golden_pair(policy_chosen_logps=t(-12.5))
    assert loss("dpop", inputs).item() > loss("dpo", inputs).item()
