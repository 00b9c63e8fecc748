"""Cal-DPO (harness/losses/cal_dpo.py): golden values and the authors' code."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from harness.losses import get_loss
from tests.golden import close, nls, pair, random_pairs


def authors_cal_dpo_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                         reference_rejected_logps, beta):
    """A transcription of tengxiao1/Cal-DPO scripts/dpo_trainer.py, dpo_loss, lines 1204–1216
    (loss_type "Cal-DPO"): per-example DPO term plus 0.5 × two batch-mean squared errors."""
    chosen_rewards = policy_chosen_logps - reference_chosen_logps
    rejected_rewards = policy_rejected_logps - reference_rejected_logps
    DPO_loss = -F.logsigmoid(chosen_rewards - rejected_rewards)
    Cal_loss = F.mse_loss(chosen_rewards, torch.tensor(1.0 / (2.0 * beta)).to(chosen_rewards)) + F.mse_loss(
        rejected_rewards, torch.tensor(-1.0 / (2.0 * beta)).to(rejected_rewards))
    return DPO_loss + 0.5 * Cal_loss


def test_cal_dpo_golden():
    """β = 0.5 → targets ±1. r_w = 1, r_l = −1: −log σ(2) = 0.1269280, calibration 0. r_w = 3,
    r_l = 1: −log σ(2) + ½ [(3 − 1)² + (1 + 1)²] = 0.1269280 + 4 = 4.1269280."""
    close(get_loss("cal_dpo")(pair(1.0, -1.0), beta=0.5).losses, nls(2.0))
    out = get_loss("cal_dpo")(pair(3.0, 1.0), beta=0.5)
    close(out.losses, nls(2.0) + 4.0)
    close(out.metrics["calibration"], 8.0)


@pytest.mark.filterwarnings("ignore:Using a target size")  # their mse_loss broadcasts a scalar target
def test_cal_dpo_matches_the_authors_code_as_a_batch_mean():
    """Their calibration term is a batch mean inside each example's loss; ours keeps each example's
    squares: per-example values differ, the batch mean (what is optimized) is the same."""
    x = random_pairs(seed=4)
    for beta in (1e-3, 0.1, 1.0):
        expected = authors_cal_dpo_loss(x.policy_chosen_logps, x.policy_rejected_logps, x.reference_chosen_logps,
                                        x.reference_rejected_logps, beta)
        close(get_loss("cal_dpo")(x, beta=beta).losses.mean(), expected.mean(), tol=1e-9)
