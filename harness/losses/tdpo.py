"""TDPO: DPO with a token-level (sequential, full-vocabulary) KL term, in its two variants."""

from __future__ import annotations

from torch import Tensor

from harness.losses.base import LossInputs, LossOutput, linear_range, non_negative, positive, register_loss
from harness.losses.spaces import DPO_BETA
from harness.losses.common import chosen_rejected_logratios, neg_log_sigmoid, preference_metrics

_PAPER = "Zeng et al. 2024, Token-level Direct Preference Optimization (arXiv:2404.11999)"


def _sequential_kl(inputs: LossInputs) -> tuple[Tensor, Tensor]:
    """D_w, D_l (B,): per-position KL(π_ref ‖ πθ) summed over completion positions.

    The trainer's *_vocab_kl is already 0 outside the completion, so a plain sum is the masked sum.
    """
    return inputs.chosen_vocab_kl.sum(-1), inputs.rejected_vocab_kl.sum(-1)


def _tdpo_output(inputs: LossInputs, beta: float, kl_correction: Tensor, chosen_kl: Tensor,
                 rejected_kl: Tensor) -> LossOutput:
    """-log σ(β (h − kl_correction)) with DPO's rewards and the two sequential KLs as metrics."""
    chosen_logratios, rejected_logratios = chosen_rejected_logratios(inputs)
    losses = neg_log_sigmoid(beta * (chosen_logratios - rejected_logratios - kl_correction))
    metrics = preference_metrics(beta * chosen_logratios, beta * rejected_logratios)
    metrics["tdpo_chosen_kl"] = chosen_kl.detach()
    metrics["tdpo_rejected_kl"] = rejected_kl.detach()
    return LossOutput(losses, metrics)


_NOTES = """
    D = Σ_t KL(π_ref(·|x, y<t) ‖ πθ(·|x, y<t)) over completion positions and the whole vocabulary
    (chosen_vocab_kl / rejected_vocab_kl from logprobs.completion_logps_and_vocab_kl): cached
    sequence log-probs are not enough, the reference model runs live. Summed, as in the reference
    code's default (average_log_prob=False). Rewards reported are DPO's β·log-ratio so that they
    compare across methods; the authors' code reports β·(log-ratio + D) instead. Extra metrics:
    tdpo_chosen_kl = D_w and tdpo_rejected_kl = D_l per example (B,).
"""


@register_loss(
    "tdpo1",
    search_space={"beta": DPO_BETA},
    needs=("reference", "vocab_kl"),
    reduction="sum",
    paper=_PAPER,
    formula="-log σ(β h − β (D_l − D_w)), D the summed per-position KL(π_ref ‖ πθ)",
    constraints={"beta": positive()},
)
def tdpo1(inputs: LossInputs, *, beta: float = 0.1) -> LossOutput:
    """TDPO₁ (Zeng et al. 2024, arXiv:2404.11999): -log σ(β h − β (D_l − D_w)).

    Gradients flow through both sequential KLs. With D_w = D_l (e.g. both 0) it is exactly DPO.
    """
    chosen_kl, rejected_kl = _sequential_kl(inputs)
    return _tdpo_output(inputs, beta, rejected_kl - chosen_kl, chosen_kl, rejected_kl)


@register_loss(
    "tdpo2",
    search_space={
        "beta": DPO_BETA,
        "alpha": linear_range(
            0.0, 1.0,
            "around TDPO2's default α = 0.5 (Zeng et al. 2024); 0 is DPO with the KL term off"
        ),
    },
    needs=("reference", "vocab_kl"),
    reduction="sum",
    paper=_PAPER,
    formula="-log σ(β (h − α (D_l − sg(D_w)))), sg the stop-gradient",
    constraints={"beta": positive(), "alpha": non_negative()},
)
def tdpo2(inputs: LossInputs, *, beta: float = 0.1, alpha: float = 0.5) -> LossOutput:
    """TDPO₂ (Zeng et al. 2024, arXiv:2404.11999): -log σ(β (h − α (D_l − sg(D_w)))).

    The chosen KL is detached (the paper's stop-gradient, which it reports as more stable than
    TDPO₁) and α weights the KL term; α = 0.5 is the authors' default. α = 0 is exactly DPO.
    """
    chosen_kl, rejected_kl = _sequential_kl(inputs)
    kl_correction = alpha * (rejected_kl - chosen_kl.detach())
    return _tdpo_output(inputs, beta, kl_correction, chosen_kl, rejected_kl)


tdpo1.__doc__ = (tdpo1.__doc__ or "") + _NOTES
tdpo2.__doc__ = (tdpo2.__doc__ or "") + _NOTES
