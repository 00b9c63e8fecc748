"""APO: anchored preference objectives that fix the direction of each response's likelihood."""

from __future__ import annotations

import torch

from harness.losses.base import LossInputs, LossOutput, linear_range, positive, register_loss
from harness.losses.common import chosen_rejected_logratios, preference_metrics
from harness.losses.kto import unpaired_metrics
from harness.losses.spaces import DPO_BETA

_PAPER = (
    "D'Oosterlinck et al. 2024, Anchored Preference Optimization and Contrastive Revisions: "
    "Addressing Underspecification in Alignment (arXiv:2408.06266)"
)


@register_loss(
    "apo_zero",
    search_space={"beta": DPO_BETA},
    needs=("reference",),
    reduction="sum",
    paper=_PAPER,
    formula="(1 − σ(β r_w)) + σ(β r_l)",
    constraints={"beta": positive()},
)
def apo_zero(inputs: LossInputs, *, beta: float = 0.1) -> LossOutput:
    """APO-zero (D'Oosterlinck et al. 2024, arXiv:2408.06266, Eq. 7): (1 − σ(β r_w)) + σ(β r_l).

    Inputs (B,): summed policy and reference log-probs. Anchored at r = 0: the chosen
    likelihood is pushed up and the rejected one down, each on its own. For data whose chosen
    responses are better than the model's own outputs. Same as TRL 1.16 loss_type="apo_zero".
    Rewards are β·r.
    """
    chosen_logratios, rejected_logratios = chosen_rejected_logratios(inputs)
    chosen_rewards, rejected_rewards = beta * chosen_logratios, beta * rejected_logratios
    losses = (1.0 - torch.sigmoid(chosen_rewards)) + torch.sigmoid(rejected_rewards)
    return LossOutput(losses, preference_metrics(chosen_rewards, rejected_rewards))


@register_loss(
    "apo_down",
    search_space={"beta": DPO_BETA},
    needs=("reference",),
    reduction="sum",
    paper=_PAPER,
    formula="σ(β r_w) + (1 − σ(β (r_w − r_l)))",
    constraints={"beta": positive()},
)
def apo_down(inputs: LossInputs, *, beta: float = 0.1) -> LossOutput:
    """APO-down (D'Oosterlinck et al. 2024, arXiv:2408.06266, Eq. 8): σ(β r_w) + (1 − σ(β h)).

    Inputs (B,): summed policy and reference log-probs. Both likelihoods go down, the rejected
    one more: for data whose chosen responses are worse than the model's own outputs. Same as TRL
    1.16 loss_type="apo_down". Rewards are β·r.
    """
    chosen_logratios, rejected_logratios = chosen_rejected_logratios(inputs)
    chosen_rewards, rejected_rewards = beta * chosen_logratios, beta * rejected_logratios
    losses = torch.sigmoid(chosen_rewards) + (1.0 - torch.sigmoid(chosen_rewards - rejected_rewards))
    return LossOutput(losses, preference_metrics(chosen_rewards, rejected_rewards))


@register_loss(
    "apo_zero_unpaired",
    search_space={
        "beta": DPO_BETA,
        "desirable_weight": linear_range(
            1.0, 4.0 / 3.0, "as KTO's: keep λ_D n_D / (λ_U n_U) in [1, 4/3] (Ethayarajh et al. 2024, §4)"
        ),
        "undesirable_weight": linear_range(
            0.75, 1.0, "as KTO's: keep λ_D n_D / (λ_U n_U) in [1, 4/3] (Ethayarajh et al. 2024, §4)"
        ),
    },
    needs=("reference", "labels"),
    data="unpaired",
    reduction="sum",
    paper=_PAPER,
    formula="desirable: λ_D (1 − σ(β r)); undesirable: λ_U σ(β r); r = log πθ(y) − log π_ref(y)",
    constraints={"beta": positive(), "desirable_weight": positive(), "undesirable_weight": positive()},
)
def apo_zero_unpaired(
    inputs: LossInputs, *, beta: float = 0.1, desirable_weight: float = 1.0, undesirable_weight: float = 1.0
) -> LossOutput:
    """APO-zero on unpaired data (D'Oosterlinck et al. 2024, Eq. 7 split by label), one completion
    per example: desirable λ_D (1 − σ(β r)), undesirable λ_U σ(β r), r the summed log-ratio.

    APO-zero's two terms need no pairing, so each applies to its own labelled completion. This is
    TRL 1.16's KTOConfig(loss_type="apo_zero_unpaired") (kto_trainer.py, the "apo_zero_unpaired"
    branches of kto_loss): KTO's losses with the reference point z0 = 0, so it needs no mismatched
    pairs and no KL pass. λ_D, λ_U are TRL's desirable_weight and undesirable_weight.
    Metrics as KTO's with z0 = 0: rewards = β r (B,), per-label means (scalars), accuracies (B,)
    where β r lies on the label's side of 0.
    """
    logratios = inputs.policy_logps - inputs.reference_logps
    desirable = inputs.labels.bool()
    rewards = beta * logratios
    losses = torch.where(
        desirable, desirable_weight * (1.0 - torch.sigmoid(rewards)), undesirable_weight * torch.sigmoid(rewards)
    )
    return LossOutput(losses, unpaired_metrics(rewards, desirable, rewards.new_zeros(())))
