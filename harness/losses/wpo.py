"""WPO: DPO with each pair weighted by how likely the current policy is to produce it."""

from __future__ import annotations

import torch
from torch import Tensor

from harness.losses.base import LossInputs, LossOutput, log_range, one_of, positive, register_loss
from harness.losses.common import chosen_rejected_logratios, dpo_from_logratios


def sequence_weight(token_logps: Tensor, mask: Tensor, log_collision: Tensor | None = None) -> Tensor:
    """w(y) = exp(mean over completion tokens of [log πθ(y_t | x, y<t) − log Σ_v πθ(v | x, y<t)²])
    (B,), detached; without `log_collision` (B, T) the unaligned exp(mean_t log πθ(y_t | x, y<t)).
    A geometric mean, so a weight does not vanish with length. Subtracting log Σ_v π² compares each
    token's probability with that of a sample of the policy itself at that position, so a
    position where the policy is merely unsure does not lower the weight ("aligned" weights)."""
    with torch.no_grad():
        per_token = token_logps if log_collision is None else token_logps - log_collision
        lengths = mask.sum(dim=1).clamp(min=1)
        return torch.exp((per_token * mask).sum(dim=1) / lengths)


WEIGHTINGS = ("aligned", "unaligned")


@register_loss(
    "wpo",
    search_space={
        "beta": log_range(
            0.005, 0.5,
            "from the authors' β = 0.01 (wzhouad/WPO training_configs) to the top of DPO's range"
        ),
    },
    needs=("reference", "token_logps", "vocab_collision"),
    reduction="sum",
    paper="Zhou et al. 2024, WPO: Enhancing RLHF with Weighted Preference Optimization "
    "(arXiv:2406.11827)",
    formula="min(1, sg(w(y_w)·w(y_l)))·(−log σ(β h)), "
    "w(y) = exp(mean_t [log πθ(y_t|x, y<t) − log Σ_v πθ(v|x, y<t)²])",
    constraints={"beta": positive(), "weighting": one_of(*WEIGHTINGS)},
    version="2",  # 1 used the unaligned weight only, now weighting="unaligned"
)
def wpo(
    inputs: LossInputs, *, beta: float = 0.01, weighting: str = "aligned", clamp_weight: bool = True
) -> LossOutput:
    """WPO (Zhou et al. 2024, arXiv:2406.11827): DPO per pair times min(1, sg(w(y_w)·w(y_l))).

    Inputs: summed policy and reference log-probs (B,) for the DPO term; the policy's per-token
    log-probs (B, T), completion masks (B, T) and log Σ_v πθ(v|x, y<t)² per position (B, T) for
    the weights, which are length-normalized and carry no gradient. Off-policy pairs the policy
    would rarely produce get small weights, simulating on-policy data.

    weighting="aligned" (default) is the authors' code: wzhouad/WPO scripts/run_wpo.py,
    WPOTrainer.get_batch_logps (lines 76–83) subtracts log Σ_v p(v)² from each token's log-prob,
    averages over the completion, and clamps the pair weight exp(ā_w + ā_l) at 1 (an aligned
    weight can exceed 1 where the sampled token is likelier than a typical draw). TRL 1.16's
    use_weighting=True computes the same aligned weight but does not clamp it (dpo_trainer.py,
    "Eq (2) of the WPO paper"): clamp_weight=False gives TRL's form. weighting="unaligned" is the
    paper's first form, exp(mean_t log πθ(y_t|x, y<t)) (§3), which never exceeds 1 (version 1 of
    this loss).
    β = 0.01 as in the authors' training configs (TRL: its generic 0.1). With every per-token
    log-prob 0 (and, aligned, every Σ_v p² = 1: a deterministic policy) it is DPO.
    Rewards are DPO's; extra metric: wpo_weight.
    """
    aligned = weighting == "aligned"
    if aligned and (inputs.chosen_log_collision is None or inputs.rejected_log_collision is None):
        raise ValueError("wpo(weighting='aligned') needs chosen_log_collision and rejected_log_collision "
                         "(need 'vocab_collision'); weighting='unaligned' does not")
    weights = sequence_weight(
        inputs.policy_chosen_token_logps, inputs.chosen_mask, inputs.chosen_log_collision if aligned else None
    ) * sequence_weight(
        inputs.policy_rejected_token_logps, inputs.rejected_mask, inputs.rejected_log_collision if aligned else None
    )
    if clamp_weight:
        weights = weights.clamp(max=1.0)
    out = dpo_from_logratios(*chosen_rejected_logratios(inputs), beta=beta)
    out.losses = weights * out.losses
    out.metrics["wpo_weight"] = weights
    return out
