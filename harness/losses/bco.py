"""BCO (pairwise): chosen and rejected as two binary classifications around a reward shift."""

from __future__ import annotations

import torch

from harness.losses.base import LossInputs, LossOutput, positive, register_loss
from harness.losses.spaces import DPO_BETA
from harness.losses.common import chosen_rejected_logratios, neg_log_sigmoid, preference_metrics


@register_loss(
    "bco_pair",
    search_space={"beta": DPO_BETA},
    needs=("reference",),
    reduction="sum",
    paper="Jung et al. 2024, Binary Classifier Optimization for Large Language Model Alignment "
    "(arXiv:2404.04656)",
    formula="−log σ(β r_w − δ) − log σ(−(β r_l − δ)), δ the running mean of the rewards β·r",
    constraints={"beta": positive()},
    state=("reward_mean", "reward_count"),
)
def bco_pair(inputs: LossInputs, *, beta: float = 0.1, reward_shift: bool = True) -> LossOutput:
    """BCO on pairs (Jung et al. 2024, arXiv:2404.04656): −log σ(β r_w − δ) − log σ(δ − β r_l).

    Inputs (B,): summed policy and reference log-probs; running state `reward_mean` and
    `reward_count` (0-dim tensors, both taken as 0 when absent).
    δ, the reward shift, is the mean over training steps of each batch's mean reward
    mean(β r_w ∪ β r_l), this batch included, detached: the paper's "moving average of rewards"
    as computed by TRL's BCOTrainer (RunningMoments, one update per call). The new mean and count
    are returned in state_updates for the trainer to carry; the function itself stays pure.

    Where implementations disagree: TRL 1.16's DPOTrainer loss_type="bco_pair" has no shift at all
    (δ = 0), and TRL's BCOTrainer was removed. reward_shift=False gives that δ = 0 variant.
    A running shift makes the loss depend on the order and grouping of batches.
    Rewards are β·r; extra metric: bco_delta.
    """
    chosen_logratios, rejected_logratios = chosen_rejected_logratios(inputs)
    chosen_rewards, rejected_rewards = beta * chosen_logratios, beta * rejected_logratios
    state_updates: dict[str, torch.Tensor] = {}
    if reward_shift:
        batch_mean = torch.cat([chosen_rewards, rejected_rewards]).mean().detach()
        count = torch.as_tensor(inputs.state.get("reward_count", 0.0)).to(batch_mean)
        previous = torch.as_tensor(inputs.state.get("reward_mean", 0.0)).to(batch_mean)
        delta = (previous * count + batch_mean) / (count + 1)
        state_updates = {"reward_mean": delta, "reward_count": count + 1}
    else:
        delta = chosen_rewards.new_zeros(())
    losses = neg_log_sigmoid(chosen_rewards - delta) + neg_log_sigmoid(-(rejected_rewards - delta))
    metrics = preference_metrics(chosen_rewards, rejected_rewards)
    metrics["bco_delta"] = delta.detach()
    return LossOutput(losses, metrics, state_updates)
