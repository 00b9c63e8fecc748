"""IPO (harness/losses/ipo.py): the length-averaged default and the summed variant; hand-derived
golden values of both reductions (the paper sums, TRL and HALOs average per token) and their
gradients."""

from __future__ import annotations

import pytest

from harness.losses import get_loss
from tests.golden import close, golden_pair, loss, pair, t


def test_ipo_default_averages_per_token():
    """τ = 0.1 → target 1/(2τ) = 5. r_w = 2 over 4 tokens → 0.5, r_l = −2 over 2 tokens → −1:
    averaged h = 1.5, (1.5 − 5)² = 12.25 (the default); summed h = 4, (4 − 5)² = 1."""
    inputs = pair(2.0, -2.0, chosen_len=4.0, rejected_len=2.0)
    close(get_loss("ipo")(inputs).losses, 12.25)
    close(get_loss("ipo")(inputs, length_normalize=False).losses, 1.0)
    assert get_loss("ipo").hparams["length_normalize"] is True and get_loss("ipo").version == "2"


# The shared pair with a 2-token chosen and a 4-token rejected completion, so the reductions differ.
UNEQUAL = {"chosen_lengths": t(2.0), "rejected_lengths": t(4.0)}


def test_ipo_summed_golden():
    """length_normalize=False (the paper's sum). τ = 0.1, target 1/(2τ) = 5. Summed log-ratios:
    r_w = 2, r_l = −1, h = 3:
        loss = (3 − 5)² = 4.
    τ = 0.25, target 2: (3 − 2)² = 1. Rewards are the log-ratios themselves: 2 and −1.
    The lengths do not enter."""
    inputs = golden_pair(**UNEQUAL)
    out = get_loss("ipo")(inputs, length_normalize=False)
    close(out.losses, [4.0])
    close(out.metrics["chosen_rewards"], [2.0])
    close(out.metrics["rejected_rewards"], [-1.0])
    close(loss("ipo", inputs, tau=0.25, length_normalize=False), [1.0])


def test_ipo_length_normalized_golden():
    """length_normalize=True (the default). τ = 0.1, per-token means: chosen −10/2 − (−12/2) = −5 + 6 = 1 (2 tokens);
    rejected −14/4 − (−13/4) = −3.5 + 3.25 = −0.25 (4 tokens); h = 1.25:
        loss = (1.25 − 5)² = 3.75² = 14.0625.
    Rewards: 1 and −0.25, margin 1.25."""
    out = get_loss("ipo")(golden_pair(**UNEQUAL))
    close(out.losses, [14.0625])
    close(out.metrics["chosen_rewards"], [1.0])
    close(out.metrics["rejected_rewards"], [-0.25])
    close(out.metrics["reward_margins"], [1.25])


@pytest.mark.parametrize(("length_normalize", "expected"), [(False, -4.0), (True, -3.75)])
def test_ipo_gradient_golden(length_normalize, expected):
    """dL/dπ_w = 2 (h − 5) · dh/dπ_w. Summed: 2·(3 − 5)·1 = −4.
    Mean: 2·(1.25 − 5)·(1/2 tokens) = −3.75. dL/dπ_l is the negative of the summed case's
    (+4) and, for the mean, 2·(−3.75)·(−1/4) = +1.875."""
    inputs = golden_pair(**UNEQUAL)
    inputs.policy_chosen_logps.requires_grad_(True)
    inputs.policy_rejected_logps.requires_grad_(True)
    loss("ipo", inputs, length_normalize=length_normalize).sum().backward()
    close(inputs.policy_chosen_logps.grad, [expected])
    close(inputs.policy_rejected_logps.grad, [1.875 if length_normalize else 4.0])
