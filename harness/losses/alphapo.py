"""AlphaPO: SimPO with the log reward reshaped by α."""

from __future__ import annotations

import torch
from torch import Tensor

from harness.losses.base import LossInputs, LossOutput, linear_range, non_negative, positive, register_loss
from harness.losses.common import length_mean, neg_log_sigmoid, preference_metrics
from harness.losses.spaces import SIMPO_BETA, SIMPO_GAMMA_BETA_RATIO


def alpha_reward(mean_logps: Tensor, alpha: float) -> Tensor:
    """(1 − p^(−α))/α with p = exp(ℓ̄), computed as −expm1(−α ℓ̄)/α (no overflow of p^(−α) for
    long, unlikely completions); α = 0 is its limit, the log reward ℓ̄ itself."""
    if alpha == 0.0:
        return mean_logps
    return -torch.expm1(-alpha * mean_logps) / alpha


@register_loss(
    "alphapo",
    search_space={
        "beta": SIMPO_BETA,
        "gamma_beta_ratio": SIMPO_GAMMA_BETA_RATIO,
        "alpha": linear_range(
            -0.5, 1.0,
            "the paper explores negative and positive α and finds a positive one best (Gupta et al. "
            "2025, §4); α = 0 is SimPO",
        ),
    },
    needs=(),
    reduction="mean",
    paper="Gupta et al. 2025, AlphaPO: Reward Shape Matters for LLM Alignment (arXiv:2501.03884)",
    formula="−log σ(β r_α(y_w) − β r_α(y_l) − γ), r_α(y) = (1 − exp(ℓ̄(y))^(−α))/α, γ = β·gamma_beta_ratio",
    constraints={"beta": positive(), "gamma_beta_ratio": non_negative()},
)
def alphapo(
    inputs: LossInputs, *, beta: float = 2.0, gamma_beta_ratio: float = 0.5, alpha: float = 0.25
) -> LossOutput:
    """AlphaPO (Gupta et al. 2025, arXiv:2501.03884): SimPO with the reward r_α = (1 − p^(−α))/α,
    p = exp(ℓ̄) the geometric-mean token probability; −log σ(β (r_α,w − r_α,l) − γ).

    Inputs (B,): summed policy log-probs and token counts (length-averaged here, as SimPO). α
    shapes the reward: α → 0 gives SimPO's log reward ℓ̄ (exactly SimPO at α = 0); larger α
    flattens the reward for unlikely responses, so the rejected response's likelihood is pushed
    down less aggressively (less "likelihood displacement"). As TRL 1.16's CPOTrainer with
    loss_type="alphapo" (experimental/cpo/cpo_trainer.py, cpo_loss: loss_type "simpo" with
    `alpha` set and cpo_alpha = 0, i.e. no NLL term); TRL's simpo_gamma is the absolute γ, here
    γ = β·gamma_beta_ratio as in `simpo`.

    Defaults: β = 2 and γ/β = 0.5 are this harness's SimPO defaults, from which AlphaPO starts;
    α = 0.25 is a moderate positive shape. The paper's per-model values (its Table 3) were not in
    the reference material available here: tune α (its search space spans [−0.5, 1]).
    Rewards are β·r_α; extra metric: none.
    """
    chosen = alpha_reward(length_mean(inputs.policy_chosen_logps, inputs.chosen_lengths), alpha)
    rejected = alpha_reward(length_mean(inputs.policy_rejected_logps, inputs.rejected_lengths), alpha)
    losses = neg_log_sigmoid(beta * (chosen - rejected) - beta * gamma_beta_ratio)
    return LossOutput(losses, preference_metrics(beta * chosen, beta * rejected))
