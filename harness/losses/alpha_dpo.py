"""AlphaDPO: a SimPO-style margin made adaptive by an implicit reference model."""

from __future__ import annotations

from harness.losses.base import LossInputs, LossOutput, linear_range, non_negative, positive, register_loss
from harness.losses.common import length_mean, neg_log_sigmoid, preference_metrics
from harness.losses.running import MIN_STD, ema_mean_std
from harness.losses.spaces import SIMPO_BETA, SIMPO_GAMMA_BETA_RATIO


@register_loss(
    "alpha_dpo",
    search_space={
        "beta": SIMPO_BETA,
        "gamma_beta_ratio": SIMPO_GAMMA_BETA_RATIO,
        "alpha": linear_range(
            0.0, 0.5,
            "the authors' configs use α ∈ {0.05, 0.2} (junkangwu/alpha-DPO training_configs/*.yaml); 0 is SimPO",
        ),
    },
    needs=("reference",),
    reduction="hparam",
    paper="Wu et al. 2024, AlphaDPO: Adaptive Reward Margin for Direct Preference Optimization "
    "(arXiv:2410.10148)",
    formula="−log σ(β (Δθ − sg(α (u − μ)/σ + γ/β))), Δθ = ℓ̄θ(y_w) − ℓ̄θ(y_l), u = Δθ − Δref, μ, σ "
    "running mean and std of u",
    constraints={"beta": positive(), "gamma_beta_ratio": non_negative(), "alpha": non_negative()},
    state=("margin_mean", "margin_std"),
)
def alpha_dpo(
    inputs: LossInputs, *, beta: float = 2.5, gamma_beta_ratio: float = 0.6, alpha: float = 0.2,
    length_normalize: bool = True,
) -> LossOutput:
    """AlphaDPO (Wu et al. 2024, arXiv:2410.10148): −log σ(β (Δθ − δ)), δ = sg(α (u − μ)/σ + γ/β).

    Inputs (B,): policy and reference log-probs and token counts; running state margin_mean,
    margin_std (μ, σ of u). Δθ = ℓθ(y_w) − ℓθ(y_l) is SimPO's margin, u = Δθ − Δref DPO's; the
    target margin δ grows for pairs whose DPO margin is above its running mean, measured in running
    standard deviations, and is detached. α = 0 is SimPO with γ = β·gamma_beta_ratio. As the
    authors' code: junkangwu/alpha-DPO scripts/dpo_trainer.py, dpo_loss, lines 86–107 (loss_type
    "alpha-dpo"), with update_and_sync_ref_mean_std, lines 140–148, updating μ, σ with this batch
    first (momentum 0.9 from 0; a running average of per-batch stds).

    length_normalize=True (default) averages log-probs per token (their `ln: true`, in every
    config of theirs); False uses sums. Defaults β = 2.5, γ/β = 0.6, α = 0.2 are their
    training_configs/llama-3-8b-instruct-alpha-dpo.yaml. Deviation: σ is floored at 1e-6 (their
    code divides by a running std that is 0 until a batch of two has been seen).
    Rewards are β (ℓθ − α (ℓθ − ℓref)) per response, as theirs; extra metric: alpha_dpo_margin = δ.
    """
    def logps(summed, lengths):
        return length_mean(summed, lengths) if length_normalize else summed

    policy_chosen = logps(inputs.policy_chosen_logps, inputs.chosen_lengths)
    policy_rejected = logps(inputs.policy_rejected_logps, inputs.rejected_lengths)
    reference_chosen = logps(inputs.reference_chosen_logps, inputs.chosen_lengths)
    reference_rejected = logps(inputs.reference_rejected_logps, inputs.rejected_lengths)
    policy_margin = policy_chosen - policy_rejected
    gap = policy_margin - (reference_chosen - reference_rejected)
    mean, std = ema_mean_std(gap, inputs.state, "margin")
    target = (alpha * (gap - mean) / std.clamp(min=MIN_STD) + gamma_beta_ratio).detach()
    losses = neg_log_sigmoid(beta * (policy_margin - target))
    metrics = preference_metrics(
        beta * (policy_chosen - alpha * (policy_chosen - reference_chosen)),
        beta * (policy_rejected - alpha * (policy_rejected - reference_rejected)),
    )
    metrics["alpha_dpo_margin"] = target
    return LossOutput(losses, metrics, {"margin_mean": mean, "margin_std": std})
