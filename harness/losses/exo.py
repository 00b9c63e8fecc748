"""EXO (pairwise): the reverse KL between the model's and the labels' preference distributions."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from harness.losses.base import LossInputs, LossOutput, in_range, log_range, positive, register_loss
from harness.losses.spaces import DPO_BETA
from harness.losses.common import chosen_rejected_logratios, preference_metrics


@register_loss(
    "exo_pair",
    search_space={
        "beta": DPO_BETA,
        "epsilon": log_range(1e-4, 1e-2, "a decade either side of the paper's ε = 1e-3 (Ji et al. 2024)"),
    },
    needs=("reference",),
    reduction="sum",
    paper="Ji et al. 2024, Towards Efficient Exact Optimization of Language Model Alignment "
    "(arXiv:2402.00856)",
    formula="σ(βh)[log σ(βh) − log(1−ε)] + σ(−βh)[log σ(−βh) − log ε]",
    constraints={"beta": positive(), "epsilon": in_range(0.0, 1.0, low_open=True, high_open=True)},
)
def exo_pair(inputs: LossInputs, *, beta: float = 0.1, epsilon: float = 1e-3) -> LossOutput:
    """EXO-pref for K = 2 (Ji et al. 2024, arXiv:2402.00856, Eq. 16): KL(p_θ ‖ p_label).

    Inputs (B,): summed policy and reference log-probs. p_θ = (σ(βh), σ(−βh)) is the model's
    distribution over {chosen, rejected}; the label distribution is (1 − ε, ε), ε > 0 so that its
    log is finite (ε = 1e-3, the paper's value). The loss is ≥ 0 and 0 at σ(βh) = 1 − ε, so it
    stops pushing the margin beyond that point (mode-seeking, unlike DPO's forward KL).

    The paper has two temperatures (β_π on the policy, β_r on the reward); with a preference
    label only β_π remains, called β here and in TRL. TRL 1.16 (loss_type="exo_pair") passes ε as
    `label_smoothing` and requires it > 0. Rewards are β·r.
    """
    chosen_logratios, rejected_logratios = chosen_rejected_logratios(inputs)
    logits = beta * (chosen_logratios - rejected_logratios)
    model_chosen = torch.sigmoid(logits)
    model_rejected = torch.sigmoid(-logits)
    losses = model_chosen * (F.logsigmoid(logits) - math.log1p(-epsilon)) + model_rejected * (
        F.logsigmoid(-logits) - math.log(epsilon)
    )
    return LossOutput(losses, preference_metrics(beta * chosen_logratios, beta * rejected_logratios))
