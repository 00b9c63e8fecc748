"""DiscoPOP (discopop.py): golden values and its τ → 0 limit."""

from __future__ import annotations

import math

import torch

from harness.losses import LossInputs
from tests.golden import LN2, close, loss, pair, random_pairs


def test_discopop_golden():
    """β = 1, τ = 0.05. f = 0: m = σ(0) = ½; ½·ln 2 + ½·e⁰ = 0.8465736.
    f = 1: m = σ(20) = 1 − 2.06e-9; (1 − m)·0.3132617 + m·e⁻¹ = 0.3678794 (to 1e-7).
    f = −200: m = σ(−4000) = 0 and e^200·0 must not give NaN: the loss is softplus(200) = 200."""
    close(loss("discopop", pair(0.0, 0.0), beta=1.0), 0.5 * LN2 + 0.5)
    close(loss("discopop", pair(1.0, 0.0), beta=1.0), math.exp(-1.0))
    far = pair(-200.0, 0.0)
    far_float32 = LossInputs(**{k: (v.float() if torch.is_tensor(v) else v) for k, v in vars(far).items()})
    close(loss("discopop", far_float32, beta=1.0), 200.0, tol=1e-4)


def test_discopop_as_tau_vanishes_switches_between_logistic_and_exponential():
    """τ → 0 makes m = σ(f/τ) a step: DPO's −log σ(f) for f < 0, e^(−f) for f > 0."""
    inputs = random_pairs(seed=1, batch=5)
    chosen = inputs.policy_chosen_logps - inputs.reference_chosen_logps
    rejected = inputs.policy_rejected_logps - inputs.reference_rejected_logps
    f = 0.1 * (chosen - rejected)
    assert (f < 0).any() and (f > 0).any()
    expected = torch.where(f < 0, loss("dpo", inputs), torch.exp(-f))
    close(loss("discopop", inputs, beta=0.1, tau=1e-9), expected)
