"""Segment-level and stepwise DPO (sdpo.py): golden values and reductions to DPO."""

from __future__ import annotations

import torch

from harness.losses import LossInputs, get_loss
from tests.golden import EXACT, close, golden_pair, loss, nls, random_sums, t


def test_sdpo_segment_golden():
    """Chosen tokens: policy [−1, −2, −3, −4], reference [−1.5, −2.5, −2, −4.5], segment mask
    [0, 1, 1, 0]: segment log-ratio (−2 + 2.5) + (−3 + 2) = −0.5 (positions 0 and 3, whose
    ratios are +0.5 each, are context and do not count).
    Rejected tokens: policy [−2]*4, reference [−1]*4, segment [0, 0, 1, 1]: −1 − 1 = −2.
    Margin −0.5 − (−2) = 1.5; β = 0.1: loss = softplus(−0.15) = 0.620957."""
    inputs = LossInputs(
        policy_chosen_logps=t(-10.0),
        policy_rejected_logps=t(-8.0),
        reference_chosen_logps=t(-10.5),
        reference_rejected_logps=t(-4.0),
        chosen_lengths=t(4.0),
        rejected_lengths=t(4.0),
        policy_chosen_token_logps=t(-1.0, -2.0, -3.0, -4.0).unsqueeze(0),
        reference_chosen_token_logps=t(-1.5, -2.5, -2.0, -4.5).unsqueeze(0),
        policy_rejected_token_logps=t(-2.0, -2.0, -2.0, -2.0).unsqueeze(0),
        reference_rejected_token_logps=t(-1.0, -1.0, -1.0, -1.0).unsqueeze(0),
        chosen_mask=torch.ones(1, 4, dtype=torch.bool),
        rejected_mask=torch.ones(1, 4, dtype=torch.bool),
        chosen_segment_mask=torch.tensor([[False, True, True, False]]),
        rejected_segment_mask=torch.tensor([[False, False, True, True]]),
    )
    out = get_loss("sdpo_segment")(inputs)
    close(out.losses, [nls(0.15)], tol=EXACT)
    close(out.metrics["chosen_rewards"], [-0.05], tol=EXACT)
    close(out.metrics["rejected_rewards"], [-0.2], tol=EXACT)


def test_sdpo_segment_over_whole_completions_is_dpo():
    """With segment masks = completion masks, segment sums are the summed log-ratios: DPO."""
    gen = torch.Generator().manual_seed(5)
    mask = torch.rand(8, 6, generator=gen) > 0.3
    tokens = [-torch.rand(8, 6, generator=gen, dtype=torch.float64) * mask for _ in range(4)]
    inputs = LossInputs(
        policy_chosen_logps=tokens[0].sum(-1),
        policy_rejected_logps=tokens[1].sum(-1),
        reference_chosen_logps=tokens[2].sum(-1),
        reference_rejected_logps=tokens[3].sum(-1),
        policy_chosen_token_logps=tokens[0],
        policy_rejected_token_logps=tokens[1],
        reference_chosen_token_logps=tokens[2],
        reference_rejected_token_logps=tokens[3],
        chosen_mask=mask,
        rejected_mask=mask,
        chosen_segment_mask=mask,
        rejected_segment_mask=mask,
    )
    close(loss("sdpo_segment", inputs), loss("dpo", inputs), tol=EXACT)


def test_sdpo_stepwise_golden():
    """sDPO is DPO per stage: softplus(−β h) = softplus(−0.3) = 0.554355."""
    close(loss("sdpo_stepwise", golden_pair()), [nls(0.3)], tol=EXACT)


def test_sdpo_stepwise_is_dpo():
    inputs = random_sums(seed=3)
    close(loss("sdpo_stepwise", inputs), loss("dpo", inputs), tol=EXACT)
