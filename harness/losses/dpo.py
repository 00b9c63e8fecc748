"""DPO: the method the family is built around."""

from __future__ import annotations

from harness.losses.base import LossInputs, LossOutput, positive, register_loss
from harness.losses.spaces import DPO_BETA
from harness.losses.common import chosen_rejected_logratios, dpo_from_logratios


@register_loss(
    "dpo",
    search_space={"beta": DPO_BETA},
    needs=("reference",),
    reduction="sum",
    paper="Rafailov et al. 2023, Direct Preference Optimization (arXiv:2305.18290)",
    formula="-log σ(β h), h = (log πθ(y_w) − log π_ref(y_w)) − (log πθ(y_l) − log π_ref(y_l))",
    constraints={"beta": positive()},
)
def dpo(inputs: LossInputs, *, beta: float = 0.1) -> LossOutput:
    """DPO (Rafailov et al. 2023): loss = -log σ(β h) with h the difference of summed log-ratios.

    Summed log-probs as in the paper and the reference code; implementations agree on this one
    (TRL's loss_type="sigmoid" without label smoothing). Rewards are β·log-ratio.
    """
    chosen_logratios, rejected_logratios = chosen_rejected_logratios(inputs)
    return dpo_from_logratios(chosen_logratios, rejected_logratios, beta=beta)
