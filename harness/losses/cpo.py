"""CPO: a reference-free DPO-shaped preference term plus behaviour cloning of the chosen."""

from __future__ import annotations

from harness.losses.base import LossInputs, LossOutput, non_negative, positive, register_loss
from harness.losses.spaces import DPO_BETA, NLL_WEIGHT
from harness.losses.common import length_mean, neg_log_sigmoid, preference_metrics


@register_loss(
    "cpo",
    search_space={"beta": DPO_BETA, "alpha": NLL_WEIGHT},
    needs=(),
    reduction="sum",
    paper="Xu et al. 2024, Contrastive Preference Optimization: Pushing the Boundaries of LLM "
    "Performance in Machine Translation (arXiv:2401.08417)",
    formula="−log σ(β log πθ(y_w) − β log πθ(y_l)) + α·NLL_mean(y_w)",
    constraints={"beta": positive(), "alpha": non_negative()},
)
def cpo(inputs: LossInputs, *, beta: float = 0.1, alpha: float = 1.0) -> LossOutput:
    """CPO (Xu et al. 2024, arXiv:2401.08417): −log σ(β log πθ(y_w) − β log πθ(y_l)) + α·NLL(y_w).

    Inputs (B,): summed policy log-probs and lengths; no reference (DPO with a uniform
    reference). The preference term uses summed log-probs (the paper's Eq. 3, TRL's CPOTrainer with
    loss_type="sigmoid"); the NLL term is the chosen completion's per-token mean NLL (a token-mean
    cross-entropy, as TRL computes it), weighted by α (TRL's `cpo_alpha`, default 1; the paper has no
    weight, i.e. α = 1).

    Where implementations disagree: TRL averages the NLL over all chosen tokens of the batch (a
    long completion weighs more), here per example; equal for equal lengths. Rewards are
    β·log πθ(y), as TRL logs them. Extra metrics: nll.
    """
    chosen_rewards = beta * inputs.policy_chosen_logps
    rejected_rewards = beta * inputs.policy_rejected_logps
    nll = -length_mean(inputs.policy_chosen_logps, inputs.chosen_lengths)
    losses = neg_log_sigmoid(chosen_rewards - rejected_rewards) + alpha * nll
    metrics = preference_metrics(chosen_rewards, rejected_rewards)
    metrics["nll"] = nll.detach()
    return LossOutput(losses, metrics)
