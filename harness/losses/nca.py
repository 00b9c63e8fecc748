"""NCA (pairwise): noise-contrastive alignment on absolute, not relative, log-ratios."""

from __future__ import annotations

from harness.losses.base import LossInputs, LossOutput, log_range, positive, register_loss
from harness.losses.common import chosen_rejected_logratios, neg_log_sigmoid, preference_metrics


@register_loss(
    "nca_pair",
    search_space={
        "beta": log_range(
            0.001, 0.1,
            "a decade either side of the default 0.01 (TRL's nca_pair examples; Chen et al. 2024)"
        ),
    },
    needs=("reference",),
    reduction="sum",
    paper="Chen et al. 2024, Noise Contrastive Alignment of Language Models with Explicit Rewards "
    "(arXiv:2402.05369)",
    formula="−log σ(β r_w) − ½ log σ(−β r_w) − ½ log σ(−β r_l)",
    constraints={"beta": positive()},
)
def nca_pair(inputs: LossInputs, *, beta: float = 0.01) -> LossOutput:
    """NCA for preference pairs (Chen et al. 2024, arXiv:2402.05369): each response's own reward
    β·r is classified against noise, instead of only the difference β(r_w − r_l) as in DPO/InfoNCA.

    Inputs (B,): summed policy and reference log-probs. Because r_w itself is pushed up (the
    −log σ(β r_w) term) the chosen likelihood does not fall the way it does under DPO; the
    ½-weighted terms push both rewards down, symmetric in the pair. Same formula as TRL 1.16's
    loss_type="nca_pair". β = 0.01 as in the authors' training recipes (thu-ml/Noise-Contrastive-
    Alignment, preference and reward settings alike); TRL keeps its generic β = 0.1.
    Rewards are β·r.
    """
    chosen_logratios, rejected_logratios = chosen_rejected_logratios(inputs)
    chosen_rewards, rejected_rewards = beta * chosen_logratios, beta * rejected_logratios
    losses = (
        neg_log_sigmoid(chosen_rewards)
        + 0.5 * neg_log_sigmoid(-chosen_rewards)
        + 0.5 * neg_log_sigmoid(-rejected_rewards)
    )
    return LossOutput(losses, preference_metrics(chosen_rewards, rejected_rewards))
