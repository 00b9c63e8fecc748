"""DiscoPOP (LRML): a log-ratio-modulated blend of the logistic and exponential losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.losses.base import LossInputs, LossOutput, log_range, positive, register_loss
from harness.losses.spaces import DPO_BETA
from harness.losses.common import chosen_rejected_logratios, neg_log_sigmoid, preference_metrics


@register_loss(
    "discopop",
    search_space={
        "beta": DPO_BETA,
        "tau": log_range(0.005, 0.5, "a decade either side of the discovered τ = 0.05 (Lu et al. 2024)"),
    },
    needs=("reference",),
    reduction="sum",
    paper="Lu et al. 2024, Discovering Preference Optimization Algorithms with and for Large "
    "Language Models (arXiv:2406.08414)",
    formula="f = βh, m = σ(f/τ): (1 − m)(−log σ(f)) + m·exp(−f)",
    constraints={"beta": positive(), "tau": positive()},
)
def discopop(inputs: LossInputs, *, beta: float = 0.05, tau: float = 0.05) -> LossOutput:
    """DiscoPOP / LRML (Lu et al. 2024, arXiv:2406.08414, Eq. 5):
    (1 − σ(f/τ))·(−log σ(f)) + σ(f/τ)·exp(−f), with f = β h.

    Inputs (B,): summed policy and reference log-probs. A margin-dependent mix of DPO's logistic
    loss (for f < 0) and an exponential loss (for f > 0), τ = 0.05 as in the paper; β = 0.05 as in
    the authors' training config (luchris429/DiscoPOP, zephyr-7b-gemma recipe); TRL 1.16
    (loss_type="discopop", `discopop_tau`) uses its generic β = 0.1. The exponential term is computed as exp(log σ(f/τ) − f) so that a very
    negative f gives 0 instead of 0·inf = NaN; the value is the same wherever both are finite.
    Not convex and not monotone in f. Rewards are β·r.
    """
    chosen_logratios, rejected_logratios = chosen_rejected_logratios(inputs)
    logits = beta * (chosen_logratios - rejected_logratios)
    modulation = torch.sigmoid(logits / tau)
    exponential = torch.exp(F.logsigmoid(logits / tau) - logits)  # m·e^(−f), overflow-free
    losses = (1.0 - modulation) * neg_log_sigmoid(logits) + exponential
    return LossOutput(losses, preference_metrics(beta * chosen_logratios, beta * rejected_logratios))
