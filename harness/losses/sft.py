"""SFT: the negative log-likelihood of the chosen response, as a method of its own (the baseline)."""

from __future__ import annotations

from harness.losses.base import LossInputs, LossOutput, one_of, register_loss
from harness.losses.common import length_mean, preference_metrics

SFT_REDUCTIONS = ("token", "sequence", "sum")


@register_loss(
    "sft",
    search_space={},
    needs=(),
    reduction="hparam",
    paper="Supervised fine-tuning on the chosen responses: the baseline of the \"Insights into "
    "Alignment\" study (Saeidi et al. 2024) and TRL's DPOConfig(loss_type=\"sft\")",
    formula="−log πθ(y_w|x), averaged over the batch's chosen tokens (reduction=token)",
    constraints={"reduction": one_of(*SFT_REDUCTIONS)},
    trains_rejected=False,
)
def sft(inputs: LossInputs, *, reduction: str = "token") -> LossOutput:
    """SFT on the chosen responses: the negative log-likelihood of y_w, nothing on y_l.

    It shows, on the same data and the same compute budget, what preference optimization adds
    over supervised fine-tuning on the preferred responses. The rejected responses are read only
    for the logged rewards; no gradient reaches them (trains_rejected=False).

    Inputs (B,): summed policy log-probs and token counts. reduction decides how tokens count:
    "token" (default): every chosen token of the batch weighs the same, the batch mean being
    Σ_i −log π(y_w,i) / Σ_i |y_w,i|, as TRL 1.16 computes loss_type="sft" (a mean over the
    batch's chosen tokens) and as SFT trainers do; each example's loss is −log π(y_w,i)·B/Σ|y_w|
    so that the trainer's plain mean gives that. "sequence": each example's per-token mean NLL
    (ORPO's and RPO's NLL term). "sum": summed NLL per example (the β-DPO repository's SFT stage,
    junkangwu/beta-DPO trainers.py: `losses = -policy_chosen_logps`).

    SFT defines no preference reward; its logged rewards are the per-token mean log-probs ℓ̄
    (SimPO's reward with β = 1), so reward_accuracies says whether the policy ranks the pair
    right by average likelihood. No reference model.
    """
    chosen, lengths = inputs.policy_chosen_logps, inputs.chosen_lengths
    if reduction == "token":
        losses = -chosen * (lengths.numel() / lengths.clamp(min=1).sum())
    elif reduction == "sequence":
        losses = -length_mean(chosen, lengths)
    else:
        losses = -chosen
    return LossOutput(
        losses,
        preference_metrics(
            length_mean(chosen, lengths), length_mean(inputs.policy_rejected_logps, inputs.rejected_lengths)
        ),
    )
