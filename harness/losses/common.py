"""Small pieces that several losses share: log-ratios, rewards and the standard metrics."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.losses.base import LossInputs, LossOutput


def neg_log_sigmoid(z: Tensor) -> Tensor:
    """-log sigma(z), computed stably as softplus(-z)."""
    return F.softplus(-z)


def chosen_rejected_logratios(inputs: LossInputs) -> tuple[Tensor, Tensor]:
    """Summed log pi_theta/pi_ref of the chosen and rejected completions, each (B,)."""
    chosen = inputs.policy_chosen_logps - inputs.reference_chosen_logps
    rejected = inputs.policy_rejected_logps - inputs.reference_rejected_logps
    return chosen, rejected


def preference_metrics(chosen_rewards: Tensor, rejected_rewards: Tensor) -> dict[str, Tensor]:
    """The metrics every paired loss reports, from its implicit rewards (detached)."""
    chosen_rewards, rejected_rewards = chosen_rewards.detach(), rejected_rewards.detach()
    return {
        "chosen_rewards": chosen_rewards,
        "rejected_rewards": rejected_rewards,
        "reward_margins": chosen_rewards - rejected_rewards,
        "reward_accuracies": (chosen_rewards > rejected_rewards).float(),
    }


def length_mean(logps: Tensor, lengths: Tensor) -> Tensor:
    """Per-token average of a summed log-prob; lengths are clamped at 1 by the trainer, and here too."""
    return logps / lengths.clamp(min=1)


def dpo_from_logratios(
    chosen_logratios: Tensor, rejected_logratios: Tensor, *, beta: float
) -> LossOutput:
    """DPO's core on given log-ratios (B,) each: -log σ(β (r_w − r_l)), rewards β·r.

    Shared by every loss that is DPO in shape and differs only in where its log-ratios come from
    (SPIN's previous iterate, sDPO's previous stage, SDPO's segment sums).
    """
    losses = neg_log_sigmoid(beta * (chosen_logratios - rejected_logratios))
    return LossOutput(losses, preference_metrics(beta * chosen_logratios, beta * rejected_logratios))
