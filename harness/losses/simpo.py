"""SimPO: reference-free, length-normalized, with a target margin."""

from __future__ import annotations

from harness.losses.base import LossInputs, LossOutput, non_negative, positive, register_loss
from harness.losses.spaces import SIMPO_BETA, SIMPO_GAMMA_BETA_RATIO
from harness.losses.common import length_mean, neg_log_sigmoid, preference_metrics


@register_loss(
    "simpo",
    search_space={"beta": SIMPO_BETA, "gamma_beta_ratio": SIMPO_GAMMA_BETA_RATIO},
    needs=(),
    reduction="mean",
    paper="Meng et al. 2024, SimPO: Simple Preference Optimization with a Reference-Free Reward "
    "(arXiv:2405.14734)",
    formula="-log σ(β ℓ̄(y_w) − β ℓ̄(y_l) − γ), ℓ̄ the per-token mean log-prob, γ = β·gamma_beta_ratio",
    constraints={"beta": positive(), "gamma_beta_ratio": non_negative()},
)
def simpo(inputs: LossInputs, *, beta: float = 2.0, gamma_beta_ratio: float = 0.5) -> LossOutput:
    """SimPO (Meng et al. 2024): loss = -log σ(β ℓ̄_w − β ℓ̄_l − γ), no reference model.

    The paper tunes β in 2–10 and γ/β in 0.3–0.8 per model; γ is given as the ratio γ/β, as in the
    authors' code and TRL's CPOTrainer (simpo_gamma is absolute there: γ = β·ratio here). Rewards
    are β·ℓ̄.
    """
    chosen_rewards = beta * length_mean(inputs.policy_chosen_logps, inputs.chosen_lengths)
    rejected_rewards = beta * length_mean(inputs.policy_rejected_logps, inputs.rejected_lengths)
    gamma = beta * gamma_beta_ratio
    losses = neg_log_sigmoid(chosen_rewards - rejected_rewards - gamma)
    return LossOutput(losses, preference_metrics(chosen_rewards, rejected_rewards))
