"""KTO: a prospect-theoretic loss on unpaired desirable/undesirable completions."""

from __future__ import annotations

import torch
from torch import Tensor

from harness.losses.base import LossInputs, LossOutput, linear_range, positive, register_loss
from harness.losses.spaces import DPO_BETA


def kto_reference_point(inputs: LossInputs) -> Tensor:
    """z0 (scalar): the mismatched pairs' mean policy-minus-reference log-ratio, clamped at 0, detached.

    The mismatched pairs (completion (i+1) mod B under prompt i) estimate KL(πθ ‖ π_ref) without
    rewarding the completions being trained on; with B = 1 the "mismatched" pair is the example
    itself, so batches need more than one example for the estimate to mean what the paper says.
    """
    kl = (inputs.policy_kl_logps - inputs.reference_kl_logps).mean()
    return kl.clamp(min=0).detach()


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of values where mask is True; 0 (not NaN) when the mask is empty."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1)


def unpaired_metrics(rewards: Tensor, desirable: Tensor, beta_z0: Tensor) -> dict[str, Tensor]:
    """Per-label reward means (scalars), per-example rewards and label-side accuracies (B,)."""
    rewards = rewards.detach()
    chosen = _masked_mean(rewards, desirable)
    rejected = _masked_mean(rewards, ~desirable)
    on_correct_side = torch.where(desirable, rewards > beta_z0, rewards < beta_z0)
    return {
        "rewards": rewards,
        "chosen_rewards": chosen,
        "rejected_rewards": rejected,
        "reward_margins": chosen - rejected,
        "reward_accuracies": on_correct_side.float(),
        "num_desirable": desirable.sum().to(rewards.dtype),
        "num_undesirable": (~desirable).sum().to(rewards.dtype),
    }


@register_loss(
    "kto",
    search_space={
        "beta": DPO_BETA,
        "desirable_weight": linear_range(
            1.0, 4.0 / 3.0,
            "KTO paper: keep λ_D n_D / (λ_U n_U) in [1, 4/3] (Ethayarajh et al. 2024, §4)"
        ),
        "undesirable_weight": linear_range(
            0.75, 1.0,
            "KTO paper: keep λ_D n_D / (λ_U n_U) in [1, 4/3] (Ethayarajh et al. 2024, §4)"
        ),
    },
    needs=("reference", "labels", "kl_pairs"),
    data="unpaired",
    reduction="sum",
    paper="Ethayarajh et al. 2024, KTO: Model Alignment as Prospect Theoretic Optimization "
    "(arXiv:2402.01306)",
    formula="desirable: λ_D (1 − σ(β (r − z0))); undesirable: λ_U (1 − σ(β (z0 − r))); "
    "r = log πθ(y) − log π_ref(y), z0 = max(0, mean mismatched-pair log-ratio), detached",
    constraints={
        "beta": positive(),
        "desirable_weight": positive(),
        "undesirable_weight": positive(),
    },
)
def kto(
    inputs: LossInputs,
    *,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> LossOutput:
    """KTO (Ethayarajh et al. 2024, arXiv:2402.01306), one completion per example.

    desirable: λ_D (1 − σ(β (r − z0))), undesirable: λ_U (1 − σ(β (z0 − r))), r the summed
    log-ratio of that completion, z0 the detached, clamped mismatched-pair KL estimate
    (kto_reference_point). λ_D = desirable_weight, λ_U = undesirable_weight (TRL's names); the
    paper recommends λ_D n_D / (λ_U n_U) in [1, 4/3] for the dataset's label counts n_D, n_U,
    which the data stage, not this function, can check.

    Where implementations disagree: z0 is averaged over the local batch here; TRL gathers it across
    processes, and when the reference is an SFT model trained on the same data some set it to 0.
    Summed log-probs, as in TRL and HALOs.

    Metrics: rewards = β r (B,); chosen_rewards / rejected_rewards are the batch means of β r over
    desirable / undesirable examples (scalars, 0 when a label is absent; num_desirable and
    num_undesirable give the counts so means can be re-weighted across batches); reward_margins
    their difference; reward_accuracies (B,) is 1 where β r lies on the label's side of β z0;
    kto_z0 the scalar reference point.
    """
    logratios = inputs.policy_logps - inputs.reference_logps
    z0 = kto_reference_point(inputs)
    desirable = inputs.labels.bool()
    desirable_losses = 1 - torch.sigmoid(beta * (logratios - z0))
    undesirable_losses = 1 - torch.sigmoid(beta * (z0 - logratios))
    losses = torch.where(
        desirable, desirable_weight * desirable_losses, undesirable_weight * undesirable_losses
    )
    metrics = unpaired_metrics(beta * logratios, desirable, beta * z0)
    metrics["kto_z0"] = z0
    return LossOutput(losses, metrics)
