"""DPO variants that correct for completion length: LN-DPO, R-DPO and LD-DPO."""

from __future__ import annotations

from torch import Tensor

from harness.losses.base import (
    LossInputs, LossOutput, in_range, linear_range, log_range, non_negative, positive, register_loss,
)
from harness.losses.spaces import DPO_BETA, SIMPO_BETA
from harness.losses.common import (
    chosen_rejected_logratios,
    dpo_from_logratios,
    length_mean,
    neg_log_sigmoid,
    preference_metrics,
)


@register_loss(
    "ln_dpo",
    search_space={"beta": SIMPO_BETA},
    needs=("reference",),
    reduction="mean",
    paper="Ahrabian et al. 2024, A Practical Analysis of Human Alignment with *PO "
    "(arXiv:2407.15229), LN-DPO",
    formula="−log σ(β (r_w/|y_w| − r_l/|y_l|)), r the summed log-ratio",
    constraints={"beta": positive()},
)
def ln_dpo(inputs: LossInputs, *, beta: float = 1.0) -> LossOutput:
    """LN-DPO (Ahrabian et al. 2024, arXiv:2407.15229): −log σ(β (r_w/|y_w| − r_l/|y_l|)).

    Inputs (B,): summed policy and reference log-probs, lengths (clamped at 1). DPO on per-token
    log-ratios; with equal lengths L it is DPO with β/L.

    Where implementations disagree: TRL 1.16 calls it loss_type="sigmoid_norm" and keeps the DPO
    default β = 0.1. A per-token margin is ~|y| times smaller than a summed one, so β must be
    larger; 1.0 here is a SimPO-scale choice, not a value taken from the paper: set it per suite.
    Rewards are β·r/|y|.
    """
    chosen_logratios, rejected_logratios = chosen_rejected_logratios(inputs)
    return dpo_from_logratios(
        length_mean(chosen_logratios, inputs.chosen_lengths),
        length_mean(rejected_logratios, inputs.rejected_lengths),
        beta=beta,
    )


@register_loss(
    "r_dpo",
    search_space={
        "beta": DPO_BETA,
        "alpha": log_range(
            0.005, 1.0,
            "SimPO paper's R-DPO sweep α ∈ {0.05, 0.1, 0.5, 1.0} (Meng et al. 2024, Table 7), down to "
            "contain the default 0.01"
        ),
    },
    needs=("reference",),
    reduction="sum",
    paper="Park et al. 2024, Disentangling Length from Quality in Direct Preference Optimization "
    "(arXiv:2403.19159)",
    formula="−log σ(β h + α (|y_w| − |y_l|))",
    constraints={"beta": positive(), "alpha": non_negative()},
    version="2",  # 1 had the length term's sign flipped (it rewarded length)
)
def r_dpo(inputs: LossInputs, *, beta: float = 0.1, alpha: float = 0.01) -> LossOutput:
    """R-DPO (Park et al. 2024, arXiv:2403.19159): −log σ(β h + α (|y_w| − |y_l|)).

    Why "+": R-DPO regularizes length in the RLHF objective, max_π E[r(x, y)] − α|y| − β·KL(π ‖ π_ref).
    Its optimum is π*(y|x) ∝ π_ref(y|x)·exp((r(x, y) − α|y|)/β), so the reward the policy
    implies is r(x, y) = β log π*(y|x)/π_ref(y|x) + α|y| + β log Z(x). In the Bradley-Terry model,
    P(y_w ≻ y_l) = σ(r_w − r_l) = σ(β h + α(|y_w| − |y_l|)) (Z cancels), and the loss is its negative
    log. A longer chosen response then needs a smaller log-ratio margin, so the policy is not pushed
    towards length; with "−" (version 1 of this loss, and an earlier formula sheet) it was. The
    SimPO paper's table of objectives writes R-DPO with this sign (Meng et al. 2024, Table 1).

    Inputs (B,): summed log-probs and lengths (token counts). The length term is outside the β
    bracket, as in the paper, so α is in units of "logit per token"; α = 0 is DPO.
    No TRL equivalent in 1.16. Rewards are the DPO ones (β·r); extra metric: length_penalty,
    α (|y_w| − |y_l|), the term added to β h.
    """
    chosen_logratios, rejected_logratios = chosen_rejected_logratios(inputs)
    penalty = alpha * (inputs.chosen_lengths - inputs.rejected_lengths)
    losses = neg_log_sigmoid(beta * (chosen_logratios - rejected_logratios) + penalty)
    metrics = preference_metrics(beta * chosen_logratios, beta * rejected_logratios)
    metrics["length_penalty"] = penalty.detach()
    return LossOutput(losses, metrics)


def shared_and_tail(token_logps: Tensor, mask: Tensor, shared_lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Sum of per-token log-probs (B, T) over the first `shared_lengths` (B,) completion tokens,
    and over the rest. Counted in completion positions, so left padding or a prompt offset in the
    mask does not shift the split."""
    position = mask.long().cumsum(dim=1)  # 1-based index of each completion token, 0 before it
    in_shared = mask & (position <= shared_lengths.unsqueeze(1))
    in_tail = mask & (position > shared_lengths.unsqueeze(1))
    return (token_logps * in_shared).sum(dim=1), (token_logps * in_tail).sum(dim=1)


def desensitized_logps(token_logps: Tensor, mask: Tensor, shared_lengths: Tensor, alpha: float) -> Tensor:
    """LD-DPO's log-prob (B,): log p(first l_p tokens) + α·log p(the rest)."""
    shared, tail = shared_and_tail(token_logps, mask, shared_lengths)
    return shared + alpha * tail


@register_loss(
    "ld_dpo",
    search_space={
        "beta": DPO_BETA,
        "alpha": linear_range(
            0.0, 1.0,
            "the method's whole range: α = 1 is DPO, α = 0 drops the excess tokens (Liu et al. 2024)"
        ),
    },
    needs=("reference", "token_logps"),
    reduction="sum",
    paper="Liu et al. 2024, Length Desensitization in Directed Preference Optimization "
    "(arXiv:2409.06411)",
    formula="DPO with log π(y) → log π(y_{≤l_p}) + α·log π(y_{>l_p}), l_p = min(|y_w|, |y_l|), "
    "for policy and reference",
    constraints={"beta": positive(), "alpha": in_range(0.0, 1.0)},
)
def ld_dpo(inputs: LossInputs, *, beta: float = 0.1, alpha: float = 0.5) -> LossOutput:
    """LD-DPO (Liu et al. 2024, arXiv:2409.06411): DPO on length-desensitized log-probs.

    Inputs: per-token log-probs (B, T) with completion masks (B, T) for policy and reference.
    The first l_p = min(|y_w|, |y_l|) tokens of each completion (the "public" length shared by
    the pair) count fully, the excess ("verbose") tokens are scaled by α ∈ [0, 1]; the same split
    is applied to the reference log-probs. α = 1 is DPO; α = 0 drops the excess entirely.
    Matches TRL 1.16's DPOConfig(ld_alpha=α) (the split is computed there the same way).
    Rewards are β times the desensitized log-ratios.
    """
    shared_lengths = _shared_lengths(inputs.chosen_mask, inputs.rejected_mask)

    def desensitized(token_logps: Tensor, mask: Tensor) -> Tensor:
        return desensitized_logps(token_logps, mask, shared_lengths, alpha)

    chosen_logratios = desensitized(inputs.policy_chosen_token_logps, inputs.chosen_mask) - desensitized(
        inputs.reference_chosen_token_logps, inputs.chosen_mask
    )
    rejected_logratios = desensitized(inputs.policy_rejected_token_logps, inputs.rejected_mask) - desensitized(
        inputs.reference_rejected_token_logps, inputs.rejected_mask
    )
    return dpo_from_logratios(chosen_logratios, rejected_logratios, beta=beta)


def _shared_lengths(chosen_mask: Tensor, rejected_mask: Tensor) -> Tensor:
    """l_p (B,): the shorter completion's token count in each pair."""
    return chosen_mask.long().sum(dim=1).minimum(rejected_mask.long().sum(dim=1))
