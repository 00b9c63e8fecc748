"""SimPO (simpo.py): hand-derived golden values; no reference is read."""

from __future__ import annotations

from harness.losses import get_loss
from tests.golden import close, loss, pair


def test_simpo_golden():
    """β = 2, γ/β = 0.5, so γ = 1. Chosen: −10 over 5 tokens, ℓ̄_w = −2; rejected: −9 over 3
    tokens, ℓ̄_l = −3.
        β ℓ̄_w − β ℓ̄_l − γ = −4 + 6 − 1 = 1,   loss = −log σ(1) = log(1 + e^−1) = 0.3132617.
    (On sums it would be 2·(−10 + 9) − 1 = −3 and 3.0485874: the per-token mean matters.)
    Rewards β ℓ̄: chosen −4, rejected −6, margin 2, accuracy 1. The reference fields hold
    nonsense (+100) and are ignored."""
    inputs = pair(-10.0, -9.0, 100.0, 100.0, chosen_len=5.0, rejected_len=3.0)
    out = get_loss("simpo")(inputs)
    close(out.losses, [0.3132617])
    close(out.metrics["chosen_rewards"], [-4.0])
    close(out.metrics["rejected_rewards"], [-6.0])
    close(out.metrics["reward_margins"], [2.0])
    close(out.metrics["reward_accuracies"], [1.0])


def test_simpo_golden_with_other_hyperparameters():
    """β = 2.5, γ/β = 0.4, so γ = 1: 2.5·(−2) − 2.5·(−3) − 1 = −5 + 7.5 − 1 = 1.5,
    loss = log(1 + e^−1.5) = log(1.2231302) = 0.2014133. With γ = 0 (β = 1): −2 + 3 = 1, 0.3132617."""
    inputs = pair(-10.0, -9.0, chosen_len=5.0, rejected_len=3.0)
    close(loss("simpo", inputs, beta=2.5, gamma_beta_ratio=0.4), [0.2014133])
    close(loss("simpo", inputs, beta=1.0, gamma_beta_ratio=0.0), [0.3132617])
