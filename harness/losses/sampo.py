"""SamPO: DPO on down-sampled token-level log-ratios, so that length stops driving the margin."""

from __future__ import annotations

import torch
from torch import Tensor

from harness.losses.base import LossInputs, LossOutput, positive, register_loss
from harness.losses.common import dpo_from_logratios
from harness.losses.running import draw_generator
from harness.losses.spaces import DPO_BETA


def downsampled_masks(chosen_mask: Tensor, rejected_mask: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Per pair, the longer completion's mask reduced to min(|y_w|, |y_l|) of its positions, drawn
    uniformly without replacement; the shorter one's kept whole. (B, T) bool each.

    The draw order follows the authors' loop (LuJunru/SamPO dpo_trainer.py get_batch_logps, lines
    1033–1047): pair by pair, the rejected side is drawn when the chosen one is shorter, else the
    chosen side (also when both are equally long: a permutation, which keeps every token)."""
    chosen_out, rejected_out = chosen_mask.clone(), rejected_mask.clone()
    for row in range(chosen_mask.shape[0]):
        chosen_len, rejected_len = int(chosen_mask[row].sum()), int(rejected_mask[row].sum())
        longer, out = (rejected_mask, rejected_out) if chosen_len < rejected_len else (chosen_mask, chosen_out)
        picked = torch.multinomial(longer[row].float().cpu(), min(chosen_len, rejected_len), replacement=False,
                                   generator=generator)
        out[row] = False
        out[row, picked.to(out.device)] = True
    return chosen_out, rejected_out


@register_loss(
    "sampo",
    search_space={"beta": DPO_BETA},
    needs=("reference", "token_logps"),
    reduction="sum",
    paper="Lu et al. 2024, Eliminating Biased Length Reliance of Direct Preference Optimization via "
    "Down-Sampled KL Divergence (arXiv:2406.10957)",
    formula="−log σ(β (Σ_{t∈S_w} log πθ/π_ref(y_w,t) − Σ_{t∈S_l} log πθ/π_ref(y_l,t))), S the "
    "min(|y_w|, |y_l|) positions drawn from each completion",
    constraints={"beta": positive()},
    state=("draws",),
)
def sampo(inputs: LossInputs, *, beta: float = 0.1) -> LossOutput:
    """SamPO (Lu et al. 2024, arXiv:2406.10957): DPO on token-level log-ratios summed over equally
    many positions of each completion, the longer one down-sampled at random.

    Inputs: per-token policy and reference log-probs (B, T) with completion masks (B, T); state
    `draws` seeds the sampling. DPO's summed log-ratios grow with length, so the longer response
    dominates the margin; summing over min(|y_w|, |y_l|) randomly kept positions of each removes
    that bias, while every token is still trained across steps. As the authors' code
    (LuJunru/SamPO dpo_trainer.py, get_batch_logps with len_norm, lines 1030–1053; run with
    `bash dpo.sh 1 sigmoid`, β = 0.1 in dpo.sh), with one difference: their reference pass draws
    its own positions (it calls the same function separately), so policy and reference sums cover
    different tokens; here both use the same positions, so each kept token contributes its
    log-ratio, as the paper's down-sampled KL describes. Rewards are β times the down-sampled
    log-ratios.
    """
    generator, draws = draw_generator(inputs.state)
    chosen_mask, rejected_mask = downsampled_masks(inputs.chosen_mask, inputs.rejected_mask, generator)
    chosen = ((inputs.policy_chosen_token_logps - inputs.reference_chosen_token_logps) * chosen_mask).sum(dim=1)
    rejected = ((inputs.policy_rejected_token_logps - inputs.reference_rejected_token_logps) * rejected_mask).sum(dim=1)
    out = dpo_from_logratios(chosen, rejected, beta=beta)
    out.state_updates = {"draws": draws}
    return out
