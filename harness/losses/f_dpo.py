"""f-DPO: DPO under a general f-divergence regularizer instead of the reverse KL."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from harness.losses.base import LossInputs, LossOutput, in_range, linear_range, one_of, positive, register_loss
from harness.losses.spaces import DPO_BETA
from harness.losses.common import chosen_rejected_logratios, neg_log_sigmoid, preference_metrics

DIVERGENCES = ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")

# exp() of a log-ratio below about −88 overflows float32: a completion the policy has all but
# abandoned. Capping the exponent keeps the loss finite there (its gradient is 0 beyond the cap).
_MAX_EXPONENT = 50.0


def f_prime(logratios: Tensor, divergence: str, alpha: float) -> Tensor:
    """f'(u) at u = πθ/π_ref = exp(logratios) (B,), up to an additive constant (it cancels in the
    chosen − rejected difference). α is the paper's: f'(u) = (1 − u^(−α))/α, α ∈ (0, 1)."""
    if divergence == "reverse_kl":  # f(u) = u log u
        return logratios
    if divergence == "forward_kl":  # f(u) = −log u
        return -torch.exp((-logratios).clamp(max=_MAX_EXPONENT))
    if divergence == "js_divergence":  # f'(u) = log(2u / (1 + u))
        return math.log(2.0) + F.logsigmoid(logratios)
    # alpha_divergence: f(u) = (u^(1−α) − (1−α) u − α) / (α (α − 1))
    return (1.0 - torch.exp((-alpha * logratios).clamp(max=_MAX_EXPONENT))) / alpha


@register_loss(
    "f_dpo",
    search_space={
        "beta": DPO_BETA,
        "alpha": linear_range(
            0.1, 0.9,
            "the α-divergence family between its KL limits (Wang et al. 2023 compare several α)"
        ),
    },
    needs=("reference",),
    reduction="sum",
    paper="Wang et al. 2023, Beyond Reverse KL: Generalizing Direct Preference Optimization with "
    "Diverse Divergence Constraints (arXiv:2309.16240)",
    formula="−log σ(β [f'(u_w) − f'(u_l)]), u = πθ(y)/π_ref(y); reverse_kl: f'(u) = log u (DPO), "
    "forward_kl: −1/u, js_divergence: log(2u/(1+u)), alpha_divergence: (1 − u^(−α))/α",
    constraints={
        "beta": positive(),
        "divergence": one_of(*DIVERGENCES),
        "alpha": in_range(0.0, 1.0, low_open=True, high_open=True),
    },
)
def f_dpo(
    inputs: LossInputs, *, beta: float = 0.1, divergence: str = "reverse_kl", alpha: float = 0.5
) -> LossOutput:
    """f-DPO (Wang et al. 2023, arXiv:2309.16240): −log σ(β [f'(u_w) − f'(u_l)]), u = πθ/π_ref.

    Inputs (B,): summed policy and reference log-probs, so u is the sequence-level ratio.
    divergence="reverse_kl" is DPO; forward_kl, js_divergence and alpha_divergence follow the
    paper's Table 1. `alpha` is used only by alpha_divergence, in the paper's parameterization
    f'(u) = (1 − u^(−α))/α: α → 0 tends to reverse KL, α → 1 is forward KL.

    Where implementations disagree: TRL before 0.29 used the paper's α; TRL 0.29+ (1.16 included)
    computes f'(t) = (t^(α−1) − 1)/(α − 1), the same family with α_TRL = 1 − α_paper (the
    default 0.5 is the one value where both agree), while its docstring still says "u^-α". Pass
    f_alpha_divergence_coef = 1 − alpha to reproduce this loss in TRL.
    Rewards are β·f'(u) (the f-DPO implicit reward up to a per-prompt constant), so margins and
    accuracies are on the loss's own scale; for reverse_kl they are DPO's.
    """
    chosen_logratios, rejected_logratios = chosen_rejected_logratios(inputs)
    chosen_rewards = beta * f_prime(chosen_logratios, divergence, alpha)
    rejected_rewards = beta * f_prime(rejected_logratios, divergence, alpha)
    losses = neg_log_sigmoid(chosen_rewards - rejected_rewards)
    return LossOutput(losses, preference_metrics(chosen_rewards, rejected_rewards))
