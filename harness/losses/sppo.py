"""SPPO (hard labels): regress each response's log-ratio to ±1/(2β)."""

from __future__ import annotations

from harness.losses.base import LossInputs, LossOutput, log_range, positive, register_loss
from harness.losses.common import chosen_rejected_logratios, preference_metrics


@register_loss(
    "sppo_hard",
    search_space={
        "beta": log_range(
            1e-3, 1.0,
            "from the authors' β = 1e-3 (uclaml/SPPO scripts/pipeline.sh) to TRL's generic 0.1 and "
            "beyond, for small models whose log-ratios never reach ±1/(2β)"
        ),
    },
    needs=("reference",),
    reduction="sum",
    paper="Wu et al. 2024, Self-Play Preference Optimization for Language Model Alignment "
    "(arXiv:2405.00675)",
    formula="[(r_w − 1/(2β))² + (r_l + 1/(2β))²] / 2 (halve=False: without the ½), r the summed log-ratio "
    "against the previous iterate",
    constraints={"beta": positive()},
    version="2",  # 1 did not halve (TRL's form), now halve=False
)
def sppo_hard(inputs: LossInputs, *, beta: float = 1e-3, halve: bool = True) -> LossOutput:
    """SPPO with hard win probabilities (Wu et al. 2024, arXiv:2405.00675):
    [(r_w − 1/(2β))² + (r_l + 1/(2β))²] / 2.

    Inputs (B,): summed policy and reference log-probs, the reference being the previous
    iterate in the paper's self-play loop (a regime; this function is only the per-iteration
    loss). The paper's objective is (r − η (P(y ≻ π_t) − ½))² with P estimated by a preference
    model; setting P = 1 for the winner and 0 for the loser and η = 1/β gives this form.

    The factor ½: the authors' code averages the two squared terms (uclaml/SPPO sppo/trainer.py,
    sppo_loss, lines 876–879: `losses = (loss_w + loss_l)/2`); TRL 1.16's loss_type="sppo_hard"
    sums them. Under Adam the factor alone changes little, but with gradient clipping (norm 1
    here) it changes how often, and how hard, steps are clipped, so it is a hyper-parameter:
    halve=True (default) follows the authors, halve=False is TRL's sum (version 1 of this loss).

    The authors' pipeline (uclaml/SPPO, scripts/pipeline.sh) trains with β = 0.001, i.e. η = 1e3,
    and so does this default; TRL keeps its generic β = 0.1. Targets of ±500 nats are far from a
    small model's log-ratios: set β per suite. Like IPO, it regresses to a target, so do not
    expect it to fall as the margin grows. Rewards are β·r.
    """
    chosen_logratios, rejected_logratios = chosen_rejected_logratios(inputs)
    target = 1.0 / (2.0 * beta)
    losses = (chosen_logratios - target) ** 2 + (rejected_logratios + target) ** 2
    if halve:
        losses = losses / 2.0
    return LossOutput(losses, preference_metrics(beta * chosen_logratios, beta * rejected_logratios))
