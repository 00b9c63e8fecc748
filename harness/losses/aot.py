"""AOT: distributional alignment by one-dimensional optimal transport (sorting) over the batch."""

from __future__ import annotations

import torch

from harness.losses.base import LossInputs, LossOutput, one_of, positive, register_loss
from harness.losses.spaces import DPO_BETA
from harness.losses.common import chosen_rejected_logratios, neg_log_sigmoid, preference_metrics


@register_loss(
    "aot",
    search_space={"beta": DPO_BETA},
    needs=("reference",),
    reduction="sum",
    paper="Melnyk et al. 2024, Distributional Preference Alignment of LLMs via Optimal Transport "
    "(arXiv:2406.05882)",
    formula="paired: −log σ(β (sort(log πθ(y_w) − log πθ(y_l)) − sort(log π_ref(y_w) − log π_ref(y_l)))) "
    "over the batch; unpaired: −log σ(β (sort(r_w) − sort(r_l)))",
    constraints={"beta": positive(), "variant": one_of("paired", "unpaired")},
)
def aot(inputs: LossInputs, *, beta: float = 0.1, variant: str = "paired") -> LossOutput:
    """AOT (Melnyk et al. 2024, arXiv:2406.05882): a DPO-shaped logistic loss on batch-sorted
    quantities, i.e. first-order stochastic dominance enforced through 1-D optimal transport.

    Inputs (B,): summed policy and reference log-probs.
    - variant="paired": the policy's log-likelihood differences log πθ(y_w) − log πθ(y_l) and the
      reference's are sorted separately across the batch, then matched quantile to quantile
      (TRL loss_type="aot", the same name in old and new TRL).
    - variant="unpaired": the chosen log-ratios r_w and rejected log-ratios r_l are sorted
      separately and matched; it does not use the pairing at all. TRL 1.16 calls it
      "aot_unpaired"; older TRL (0.9-era) called this same computation "aot_pair", a misleading
      name since it is the variant for unpaired data; check which one a TRL result used.
    Element i of `losses` belongs to the i-th quantile, not to example i: only the batch mean is
    meaningful, and the value depends on the batch size and grouping (B = 1 is DPO).
    Rewards and accuracies are the unsorted per-example DPO ones (β·r). TRL also mixes in
    `label_smoothing`; not exposed here (0 in the paper).
    """
    chosen_logratios, rejected_logratios = chosen_rejected_logratios(inputs)
    if variant == "paired":
        policy_sorted, _ = torch.sort(inputs.policy_chosen_logps - inputs.policy_rejected_logps)
        reference_sorted, _ = torch.sort(inputs.reference_chosen_logps - inputs.reference_rejected_logps)
        sorted_margins = policy_sorted - reference_sorted
    else:
        chosen_sorted, _ = torch.sort(chosen_logratios)
        rejected_sorted, _ = torch.sort(rejected_logratios)
        sorted_margins = chosen_sorted - rejected_sorted
    losses = neg_log_sigmoid(beta * sorted_margins)
    return LossOutput(losses, preference_metrics(beta * chosen_logratios, beta * rejected_logratios))
