"""RPO (Iterative RPO): DPO plus a length-normalized NLL on the chosen completion."""

from __future__ import annotations

from harness.losses.base import LossInputs, LossOutput, non_negative, positive, register_loss
from harness.losses.spaces import DPO_BETA, NLL_WEIGHT
from harness.losses.common import chosen_rejected_logratios, dpo_from_logratios, length_mean


@register_loss(
    "rpo",
    search_space={"beta": DPO_BETA, "alpha": NLL_WEIGHT},
    needs=("reference",),
    reduction="sum",
    paper="Pang et al. 2024, Iterative Reasoning Preference Optimization (arXiv:2404.19733)",
    formula="−log σ(β h) + α·(−log πθ(y_w)/|y_w|), h the summed log-ratio margin",
    constraints={"beta": positive(), "alpha": non_negative()},
)
def rpo(inputs: LossInputs, *, beta: float = 0.1, alpha: float = 1.0) -> LossOutput:
    """RPO (Pang et al. 2024, arXiv:2404.19733): DPO + α·(−log πθ(y_w|x) / |y_w|).

    Inputs (B,): summed policy and reference log-probs, lengths. The DPO term uses sums, the NLL
    term is the chosen completion's per-token mean (the paper divides by the completion length),
    α = 1 as in the paper. With α = 0 it is DPO.

    Where implementations disagree: TRL ≤ 0.28 had `rpo_alpha`; TRL 0.29 removed it and 1.16
    expresses RPO as loss_type=["sigmoid", "sft"], loss_weights=[1, α], whose "sft" term is one
    token-mean over all chosen tokens of the batch rather than a mean per example (equal for equal
    lengths). Extra metrics: nll.
    """
    out = dpo_from_logratios(*chosen_rejected_logratios(inputs), beta=beta)
    nll = -length_mean(inputs.policy_chosen_logps, inputs.chosen_lengths)
    out.losses = out.losses + alpha * nll
    out.metrics["nll"] = nll.detach()
    return out
