"""KTO (kto.py): golden values, z0, weights, single-label batches."""

from __future__ import annotations

import torch

from harness.losses import LossInputs, get_loss
from tests.golden import EXACT, close, sigmoid, t


def _kto_batch(policy_kl=(-11.0, -15.0), reference_kl=(-12.0, -15.5)) -> LossInputs:
    policy_kl_logps = t(*policy_kl).requires_grad_(True)
    return LossInputs(
        policy_logps=t(-10.0, -14.0).requires_grad_(True),
        reference_logps=t(-12.0, -13.0),
        lengths=t(4.0, 4.0),
        labels=torch.tensor([True, False]),
        policy_kl_logps=policy_kl_logps,
        reference_kl_logps=t(*reference_kl),
    )


def test_kto_golden():
    """Example 1 desirable, r = −10 − (−12) = 2; example 2 undesirable, r = −14 − (−13) = −1.
    Mismatched pairs: policy [−11, −15] minus reference [−12, −15.5] = [1, 0.5], mean 0.75 = z0.
    β = 0.1, λ_D = λ_U = 1: desirable 1 − σ(0.1·(2 − 0.75)) = 1 − σ(0.125) = 0.468791;
    undesirable 1 − σ(0.1·(0.75 + 1)) = 1 − σ(0.175) = 0.456362.
    Rewards β r = [0.2, −0.1]: chosen_rewards 0.2, rejected_rewards −0.1, margin 0.3; both on their
    label's side of β z0 = 0.075, so accuracies [1, 1]. z0 is detached: no gradient to the KL pairs."""
    inputs = _kto_batch()
    out = get_loss("kto")(inputs)
    close(out.losses, [1 - sigmoid(0.125), 1 - sigmoid(0.175)], tol=EXACT)
    close(out.metrics["kto_z0"], 0.75, tol=EXACT)
    close(out.metrics["chosen_rewards"], 0.2, tol=EXACT)
    close(out.metrics["rejected_rewards"], -0.1, tol=EXACT)
    close(out.metrics["reward_margins"], 0.3, tol=EXACT)
    close(out.metrics["reward_accuracies"], [1.0, 1.0], tol=EXACT)
    out.losses.sum().backward()
    assert inputs.policy_kl_logps.grad is None
    assert inputs.policy_logps.grad is not None


def test_kto_z0_clamped_at_zero_and_weights():
    """Mismatched-pair log-ratios [−1, −0.5] average −0.75 → z0 = max(0, −0.75) = 0.
    λ_D = 2, λ_U = 0.5: 2·(1 − σ(0.2)) = 0.900332 and 0.5·(1 − σ(0.1)) = 0.237503."""
    inputs = _kto_batch(reference_kl=(-10.0, -14.5))
    out = get_loss("kto")(inputs, desirable_weight=2.0, undesirable_weight=0.5)
    close(out.metrics["kto_z0"], 0.0, tol=EXACT)
    close(out.losses, [2 * (1 - sigmoid(0.2)), 0.5 * (1 - sigmoid(0.1))], tol=EXACT)


def test_kto_single_label_batch_metrics_stay_finite():
    inputs = LossInputs(
        policy_logps=t(-1.0, -2.0), reference_logps=t(-1.5, -2.5), lengths=t(1.0, 1.0),
        labels=torch.tensor([True, True]),
        policy_kl_logps=t(-1.0, -1.0),
        reference_kl_logps=t(-1.0, -1.0),
    )
    out = get_loss("kto")(inputs)
    close(out.metrics["rejected_rewards"], 0.0, tol=EXACT)  # no undesirable example: 0, not NaN
    close(out.metrics["num_undesirable"], 0.0, tol=EXACT)
