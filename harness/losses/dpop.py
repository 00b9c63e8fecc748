"""DPOP (DPO-Positive): DPO with a penalty for lowering the chosen completion's likelihood."""

from __future__ import annotations

import torch

from harness.losses.base import LossInputs, LossOutput, log_range, non_negative, positive, register_loss
from harness.losses.spaces import DPO_BETA
from harness.losses.common import chosen_rejected_logratios, neg_log_sigmoid, preference_metrics


@register_loss(
    "dpop",
    search_space={
        "beta": DPO_BETA,
        "lambda_": log_range(
            5.0, 500.0,
            "the authors report DPOP insensitive to λ over 5–500 (Pal et al. 2024, §5)"
        ),
    },
    needs=("reference",),
    reduction="sum",
    paper="Pal et al. 2024, Smaug: Fixing Failure Modes of Preference Optimisation with "
    "DPO-Positive (arXiv:2402.13228)",
    formula="-log σ(β (h − λ·max(0, log π_ref(y_w) − log πθ(y_w))))",
    constraints={"beta": positive(), "lambda_": non_negative()},
)
def dpop(inputs: LossInputs, *, beta: float = 0.1, lambda_: float = 50.0) -> LossOutput:
    """DPOP (Pal et al. 2024, arXiv:2402.13228): -log σ(β (h − λ·max(0, −r_w))).

    r_w = log πθ(y_w) − log π_ref(y_w) (summed); the penalty max(0, −r_w) is positive only when the
    policy has made the chosen completion *less* likely than the reference did, which plain DPO
    allows as long as the margin grows. When r_w ≥ 0 the loss is exactly DPO.

    Where implementations disagree: the penalty's placement. Some write β·h − λ·penalty (penalty
    outside the β bracket, so λ acts 1/β times as strongly); this follows the paper's corrected
    equation, with the penalty inside the bracket, so λ is in log-prob units. λ = 50 is the
    authors' default (they report insensitivity over 5–500). `lambda_` because `lambda` is a Python
    keyword. Rewards are β·log-ratio, as in DPO.
    Extra metric: dpop_penalty = max(0, −r_w) per example (B,).
    """
    chosen_logratios, rejected_logratios = chosen_rejected_logratios(inputs)
    penalty = torch.clamp(-chosen_logratios, min=0.0)  # max(0, log π_ref(y_w) − log πθ(y_w))
    logits = chosen_logratios - rejected_logratios - lambda_ * penalty
    metrics = preference_metrics(beta * chosen_logratios, beta * rejected_logratios)
    metrics["dpop_penalty"] = penalty.detach()
    return LossOutput(neg_log_sigmoid(beta * logits), metrics)
