"""DPO (dpo.py): hand-derived golden values of the loss, its rewards and its gradient."""

from __future__ import annotations

from harness.losses import get_loss
from tests.golden import close, golden_pair, loss, pair


def test_dpo_golden():
    """β = 0.1. Pair 1 is the shared pair (loss_inputs.golden_pair): r_w = −10 − (−12) = 2,
    r_l = −14 − (−13) = −1, h = 3, β h = 0.3:
        loss = −log σ(0.3) = log(1 + e^−0.3) = log(1 + 0.7408182) = 0.5543552.
    Pair 2 swaps the sides: r_w = −1, r_l = 2, h = −3:
        loss = −log σ(−0.3) = log(1 + e^0.3) = log(2.3498588) = 0.8543552 (= 0.5543552 + 0.3).
    Rewards β r: chosen [0.2, −0.1], rejected [−0.1, 0.2], margins [0.3, −0.3], accuracies [1, 0].
    Summed log-probs: the token counts (4 and 4, then 1 and 9) do not enter."""
    inputs = pair([-10.0, -14.0], [-14.0, -10.0], [-12.0, -13.0], [-13.0, -12.0], [4.0, 1.0], [4.0, 9.0])
    out = get_loss("dpo")(inputs)
    close(out.losses, [0.5543552, 0.8543552])
    close(out.metrics["chosen_rewards"], [0.2, -0.1])
    close(out.metrics["rejected_rewards"], [-0.1, 0.2])
    close(out.metrics["reward_margins"], [0.3, -0.3])
    close(out.metrics["reward_accuracies"], [1.0, 0.0])


def test_dpo_golden_with_another_beta():
    """β = 0.5 on the shared pair: β h = 1.5, loss = log(1 + e^−1.5) = log(1.2231302) = 0.2014133."""
    close(loss("dpo", golden_pair(), beta=0.5), [0.2014133])


def test_dpo_gradient_golden():
    """d/dπ_w of −log σ(β h) = −β σ(−β h) = −0.1 · 1/(1 + e^0.3) = −0.1 · 0.4255575 = −0.0425557;
    d/dπ_l = +0.0425557; the reference gets none (it is data)."""
    inputs = golden_pair()
    inputs.policy_chosen_logps.requires_grad_(True)
    inputs.policy_rejected_logps.requires_grad_(True)
    loss("dpo", inputs).sum().backward()
    close(inputs.policy_chosen_logps.grad, [-0.0425557])
    close(inputs.policy_rejected_logps.grad, [0.0425557])
    assert inputs.reference_chosen_logps.grad is None
