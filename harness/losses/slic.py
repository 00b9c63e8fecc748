"""SLiC-HF: a rank-calibration hinge on sequence likelihoods plus an SFT regularizer."""

from __future__ import annotations

import torch

from harness.losses.base import LossInputs, LossOutput, linear_range, log_range, non_negative, register_loss
from harness.losses.common import preference_metrics


@register_loss(
    "slic",
    search_space={
        "delta": linear_range(
            0.1, 2.0,
            "SimPO paper's SLiC-HF sweep δ ∈ {0.1, 0.5, 1.0, 2.0} (Meng et al. 2024, Table 7)"
        ),
        "lambda_": log_range(
            0.1, 10.0,
            "SimPO paper's SLiC-HF sweep λ ∈ {0.1, 0.5, 1.0, 10.0} (Meng et al. 2024, Table 7)"
        ),
    },
    needs=("sft_target",),
    reduction="sum",
    paper="Zhao et al. 2023, SLiC-HF: Sequence Likelihood Calibration with Human Feedback "
    "(arXiv:2305.10425)",
    formula="max(0, δ − log πθ(y_w) + log πθ(y_l)) − λ·log πθ(y_ref), y_ref the SFT target",
    constraints={"delta": non_negative(), "lambda_": non_negative()},
)
def slic(inputs: LossInputs, *, delta: float = 1.0, lambda_: float = 0.1) -> LossOutput:
    """SLiC-HF (Zhao et al. 2023, arXiv:2305.10425): max(0, δ − log πθ(y_w) + log πθ(y_l)) − λ log πθ(y_ref)

    Reference-free: summed policy log-probs only (sequence likelihoods, as in the paper).
    The regularizer is the cross-entropy of the SFT target y_ref (policy_sft_logps, supplied by the
    trainer; often the chosen completion or the SFT demonstration for the prompt), not of a sample
    from π_ref: it keeps the policy close to the SFT data without a reference model.

    Where implementations disagree: TRL's DPO loss_type="hinge" is RSO's reference-normalized hinge
    max(0, 1 − β h), with log-ratios against a reference and no SFT term; it is not SLiC-HF.
    Defaults δ = 1 and λ = 0.1 (methods.md; the paper tunes λ). `lambda_` because `lambda` is a
    Python keyword. Rewards reported are the policy's summed log-probs (no β: SLiC has none).
    Extra metrics: slic_hinge and slic_sft_nll per example (B,).
    """
    hinge = torch.clamp(delta - inputs.policy_chosen_logps + inputs.policy_rejected_logps, min=0.0)
    sft_nll = -inputs.policy_sft_logps
    metrics = preference_metrics(inputs.policy_chosen_logps, inputs.policy_rejected_logps)
    metrics["slic_hinge"] = hinge.detach()
    metrics["slic_sft_nll"] = sft_nll.detach()
    return LossOutput(hinge + lambda_ * sft_nll, metrics)
