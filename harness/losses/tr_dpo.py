"""TR-DPO's loss: DPO against a reference that a training regime keeps updating."""

from __future__ import annotations

from harness.losses.base import LossInputs, LossOutput, positive, register_loss
from harness.losses.spaces import DPO_BETA
from harness.losses.common import chosen_rejected_logratios, dpo_from_logratios


@register_loss(
    "tr_dpo",
    search_space={"beta": DPO_BETA},
    needs=("reference",),
    reduction="sum",
    paper="Gorbatovski et al. 2024, Learn Your Reference Model for Real Good Alignment "
    "(arXiv:2404.09656)",
    formula="−log σ(β h) with π_ref ← α πθ + (1 − α) π_ref every τ steps (the update is a regime)",
    constraints={"beta": positive()},
    regime="reference_sync",
)
def tr_dpo(inputs: LossInputs, *, beta: float = 0.1) -> LossOutput:
    """TR-DPO (Gorbatovski et al. 2024, arXiv:2404.09656): the DPO loss, −log σ(β h).

    Inputs (B,): summed policy and reference log-probs. What makes it TR-DPO is outside this
    function: the training regime updates the reference, softly (π_ref ← α πθ + (1 − α) π_ref in
    weight space every τ steps) or hard (π_ref ← πθ every τ steps); its α and τ are the
    regime's hyper-parameters (TRL: ref_model_mixup_alpha = 0.6, ref_model_sync_steps = 512;
    the paper finds α ≈ 0.5–0.6 and τ ≈ 256–512 best). Reference log-probs therefore cannot be
    cached across syncs. Registered under its own name so that results are labelled TR-DPO.
    """
    return dpo_from_logratios(*chosen_rejected_logratios(inputs), beta=beta)
