"""ODPO: DPO with a per-pair offset that grows with how much better the chosen response scored."""

from __future__ import annotations

import torch

from harness.losses.base import LossInputs, LossOutput, linear_range, non_negative, positive, register_loss
from harness.losses.spaces import DPO_BETA
from harness.losses.common import chosen_rejected_logratios, neg_log_sigmoid, preference_metrics

# Floor on s_w − s_l before the log: ties and inverted pairs get a large negative offset (the
# formula's limit, i.e. a weaker push) instead of NaN.
MIN_SCORE_GAP = 1e-6


@register_loss(
    "odpo_offset",
    search_space={
        "beta": DPO_BETA,
        "alpha": linear_range(0.0, 2.0, "ODPO's default α = 1 (Amini et al. 2024); 0 is DPO"),
    },
    needs=("reference", "scores"),
    reduction="sum",
    paper="Amini et al. 2024, Direct Preference Optimization with an Offset (arXiv:2402.10571)",
    formula="-log σ(β h − Δ), Δ = α·log(s_w − s_l)",
    constraints={"beta": positive(), "alpha": non_negative()},
)
def odpo_offset(inputs: LossInputs, *, beta: float = 0.1, alpha: float = 1.0) -> LossOutput:
    """ODPO (Amini, Vieira & Cotterell 2024, arXiv:2402.10571): -log σ(β h − Δ), Δ = α log(s_w − s_l).

    s_w, s_l are per-response scores (chosen_scores, rejected_scores; e.g. the gold reward in the
    sandbox). The offset asks the chosen response's reward to beat the rejected one's by more when
    the score gap is larger. α = 1 is the paper's default; α = 0 is exactly DPO. The score gap is
    floored at MIN_SCORE_GAP (1e-6): the authors' code takes log(s_w − s_l) with no floor, so a tie
    gives −inf and an inverted pair NaN. The floor changes nothing where their code is defined (a gap
    above 1e-6) and gives a tie the formula's limit, a large negative offset (a weaker push than
    DPO's), so it is a safe deviation, not a different method.

    Where implementations disagree: this is the whole loss; some summaries add a separate KL
    penalty term, which the paper does not have (the KL constraint is already implicit in β h).
    The registry name is odpo_offset because TRL's `odpo` is Online DPO. Summed log-probs; rewards
    β·log-ratio; extra metric odpo_offset = Δ (B,).
    """
    chosen_logratios, rejected_logratios = chosen_rejected_logratios(inputs)
    score_gap = (inputs.chosen_scores - inputs.rejected_scores).clamp(min=MIN_SCORE_GAP)
    offset = alpha * torch.log(score_gap)
    losses = neg_log_sigmoid(beta * (chosen_logratios - rejected_logratios) - offset)
    metrics = preference_metrics(beta * chosen_logratios, beta * rejected_logratios)
    metrics["odpo_offset"] = offset.detach()
    return LossOutput(losses, metrics)
