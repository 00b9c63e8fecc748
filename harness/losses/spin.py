"""SPIN: self-play fine-tuning; the loss of one iteration (the iterations are a regime)."""

from __future__ import annotations

from harness.losses.base import LossInputs, LossOutput, positive, register_loss
from harness.losses.spaces import DPO_BETA
from harness.losses.common import chosen_rejected_logratios, dpo_from_logratios


@register_loss(
    "spin",
    search_space={"beta": DPO_BETA},
    needs=("reference",),
    reduction="sum",
    paper="Chen et al. 2024, Self-Play Fine-Tuning Converts Weak Language Models to Strong "
    "Language Models (arXiv:2401.01335)",
    formula="-log σ(β h), y_w = the SFT response, y_l = the previous iterate's generation, "
    "π_ref = the previous iterate",
    constraints={"beta": positive()},
    regime="spin_iterations",
)
def spin(inputs: LossInputs, *, beta: float = 0.1) -> LossOutput:
    """SPIN (Chen et al. 2024, arXiv:2401.01335): one iteration's loss, -log σ(β h).

    The paper's logistic loss ℓ(t) = log(1 + e^(−t)) on λ·(log-ratio of the SFT response −
    log-ratio of the previous iterate's generation) is DPO's loss with β = λ (0.1 in the paper)
    and the previous iterate as reference, so this is the shared DPO core. What makes it SPIN is
    the regime around it (generating y_l with π_t, the reference becoming π_t, 0–3 iterations,
    optionally mixing in the previous iteration's generations); the trainer's regime does that,
    and the reference log-prob cache must be keyed by the reference's weights.
    Summed log-probs; rewards β·log-ratio.
    """
    chosen_logratios, rejected_logratios = chosen_rejected_logratios(inputs)
    return dpo_from_logratios(chosen_logratios, rejected_logratios, beta=beta)
