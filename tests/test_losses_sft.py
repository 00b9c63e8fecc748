"""SFT as a method (harness/losses/sft.py): its reductions, and that the rejected side is not trained."""

from __future__ import annotations

import math

import pytest
import torch

from harness.errors import HarnessError
from harness.losses import get_loss
from tests.golden import close, pair


def test_sft_golden_reductions():
    """Chosen log-probs [−4, −2] over [4, 1] tokens.
    token (default): Σ NLL / Σ tokens = 6/5 = 1.2 as the batch mean; per example −log p·B/Σ|y| =
    [4·2/5, 2·2/5] = [1.6, 0.8]. sequence: per-token means [1, 2]. sum: [4, 2]."""
    x = pair([-4.0, -2.0], [-1.0, -1.0], chosen_len=[4.0, 1.0], rejected_len=[1.0, 1.0])
    close(get_loss("sft")(x).losses, [1.6, 0.8])
    close(get_loss("sft")(x).losses.mean(), 1.2)
    close(get_loss("sft")(x, reduction="sequence").losses, [1.0, 2.0])
    close(get_loss("sft")(x, reduction="sum").losses, [4.0, 2.0])
    with pytest.raises(HarnessError, match="reduction"):
        get_loss("sft").resolve({"reduction": "mean"})


def test_sft_trains_only_the_chosen_response_and_logs_mean_likelihoods():
    """No gradient to the rejected log-probs; rewards are per-token mean log-probs: chosen −4/4 = −1,
    rejected −1/2 = −0.5, so the pair is ranked wrong (accuracy 0)."""
    x = pair(-4.0, -1.0, chosen_len=4.0, rejected_len=2.0)
    x.policy_chosen_logps.requires_grad_(True)
    x.policy_rejected_logps.requires_grad_(True)
    out = get_loss("sft")(x)
    out.losses.sum().backward()
    assert x.policy_rejected_logps.grad is None and x.policy_chosen_logps.grad is not None
    close(out.metrics["chosen_rewards"], -1.0)
    close(out.metrics["rejected_rewards"], -0.5)
    close(out.metrics["reward_accuracies"], 0.0)
    spec = get_loss("sft")
    assert not spec.trains_rejected and not spec.uses_reference and spec.data == "paired"
    assert math.isclose(float(out.losses.detach()), 1.0)  # one example: its own per-token mean, 4/4


def test_sft_is_a_baseline_entry_of_any_paired_suite(tmp_path):
    """`sft` plans like any method next to preference losses (issue 17's baseline)."""
    from harness.plan import plan_suite
    from harness.suite import load_suite

    path = tmp_path / "s.yaml"
    path.write_text("name: s\nmethods: [sft, dpo, {mix: {dpo: 1.0, sft: 0.5}}]\n")
    methods = [spec.method for spec in plan_suite(load_suite(path))]
    assert methods == ["start", "sft", "dpo", "dpo+sft"]
