"""RSO's hinge: a margin loss on DPO's reference-normalized log-ratio margin."""

from __future__ import annotations

import torch

from harness.losses.base import LossInputs, LossOutput, positive, register_loss
from harness.losses.common import chosen_rejected_logratios, preference_metrics
from harness.losses.spaces import DPO_BETA


@register_loss(
    "rso_hinge",
    search_space={"beta": DPO_BETA},
    needs=("reference",),
    reduction="sum",
    paper="Liu et al. 2023, Statistical Rejection Sampling Improves Preference Optimization "
    "(arXiv:2309.06657)",
    formula="max(0, 1 − β h), h the DPO log-ratio margin",
    constraints={"beta": positive()},
)
def rso_hinge(inputs: LossInputs, *, beta: float = 0.1) -> LossOutput:
    """RSO's hinge (Liu et al. 2023, arXiv:2309.06657, the "hinge-norm" loss): max(0, 1 − β h).

    Inputs (B,): summed policy and reference log-probs. SLiC-HF's hinge moved onto DPO's
    reference-normalized margin h = r_w − r_l; 1/β is the margin the pair must clear. This is
    TRL 1.16's DPOConfig(loss_type="hinge"), which is not SLiC-HF (SLiC-HF has no reference and
    adds an SFT term: `slic` here). RSO's contribution is also how pairs are sampled (rejection
    sampling from the optimal policy); that is data, not this loss. β = 0.1 as in TRL. Zero loss,
    and zero gradient, once β h ≥ 1. Rewards are β·r.
    """
    chosen_logratios, rejected_logratios = chosen_rejected_logratios(inputs)
    losses = torch.relu(1.0 - beta * (chosen_logratios - rejected_logratios))
    return LossOutput(losses, preference_metrics(beta * chosen_logratios, beta * rejected_logratios))
