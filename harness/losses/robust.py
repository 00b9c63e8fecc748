"""Losses for noisy preference labels: robust DPO (rDPO) and conservative DPO (cDPO)."""

from __future__ import annotations

from torch import Tensor

from harness.losses.base import LossInputs, LossOutput, in_range, positive, register_loss
from harness.losses.spaces import DPO_BETA, FLIP_RATE
from harness.losses.common import chosen_rejected_logratios, neg_log_sigmoid, preference_metrics


def _scaled_margin(inputs: LossInputs, beta: float) -> tuple[Tensor, dict[str, Tensor]]:
    """β h (B,) and DPO's reward metrics, which both label-noise losses share."""
    chosen_logratios, rejected_logratios = chosen_rejected_logratios(inputs)
    metrics = preference_metrics(beta * chosen_logratios, beta * rejected_logratios)
    return beta * (chosen_logratios - rejected_logratios), metrics


@register_loss(
    "rdpo",
    search_space={"beta": DPO_BETA, "epsilon": FLIP_RATE},
    needs=("reference",),
    reduction="sum",
    paper="Chowdhury, Kini & Natarajan 2024, Provably Robust DPO: Aligning Language Models with "
    "Noisy Feedback (arXiv:2403.00409)",
    formula="[(1−ε)(−log σ(β h)) − ε(−log σ(−β h))] / (1 − 2ε)",
    constraints={"beta": positive(), "epsilon": in_range(0.0, 0.5, high_open=True)},
)
def rdpo(inputs: LossInputs, *, beta: float = 0.1, epsilon: float = 0.1) -> LossOutput:
    """rDPO (Chowdhury et al. 2024, arXiv:2403.00409): [(1−ε) ℓ(βh) − ε ℓ(−βh)] / (1 − 2ε), ℓ = −log σ.

    ε is the assumed label-flip rate (ε < 0.5). The loss is an unbiased estimate of the clean DPO
    loss under random flips; it is unbounded below, so negative values are normal and a "loss ≥ 0"
    check is wrong here. ε = 0 is exactly DPO.

    Where implementations disagree: TRL exposes it as loss_type="robust" with label_smoothing = ε;
    do not confuse it with cDPO, which *adds* the flipped term (and is bounded below by 0).
    Summed log-probs; rewards β·log-ratio.
    """
    scaled_margin, metrics = _scaled_margin(inputs, beta)
    as_labelled, as_flipped = neg_log_sigmoid(scaled_margin), neg_log_sigmoid(-scaled_margin)
    losses = ((1 - epsilon) * as_labelled - epsilon * as_flipped) / (1 - 2 * epsilon)
    return LossOutput(losses, metrics)


@register_loss(
    "cdpo",
    search_space={"beta": DPO_BETA, "epsilon": FLIP_RATE},
    needs=("reference",),
    reduction="sum",
    paper="Mitchell 2023, A note on DPO with noisy preferences & relationship to IPO "
    "(technical note, no arXiv id; ericmitchell.ai/cdpo.pdf)",
    formula="(1−ε)(−log σ(β h)) + ε(−log σ(−β h))",
    constraints={"beta": positive(), "epsilon": in_range(0.0, 0.5)},
)
def cdpo(inputs: LossInputs, *, beta: float = 0.1, epsilon: float = 0.1) -> LossOutput:
    """cDPO (Mitchell 2023): (1−ε)(−log σ(β h)) + ε(−log σ(−β h)), i.e. DPO with label smoothing.

    The binary cross-entropy against a soft label 1−ε: each pair is assumed flipped with
    probability ε, so the optimum is a finite margin instead of h → ∞. ε = 0 is exactly DPO;
    ε = 0.5 makes the loss symmetric (no preference signal). Default ε = 0.1 (values used in
    practice are 0.1–0.2).

    Where implementations disagree: TRL's DPO `label_smoothing` on loss_type="sigmoid" is this
    loss; TRL 0.29 removed it there, so pin the version compared with. Summed log-probs; rewards
    β·log-ratio.
    """
    scaled_margin, metrics = _scaled_margin(inputs, beta)
    as_labelled, as_flipped = neg_log_sigmoid(scaled_margin), neg_log_sigmoid(-scaled_margin)
    losses = (1 - epsilon) * as_labelled + epsilon * as_flipped
    return LossOutput(losses, metrics)
