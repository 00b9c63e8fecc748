"""The two methods called SDPO: segment-level DPO (multi-turn sessions) and stepwise DPO (sDPO)."""

from __future__ import annotations

from torch import Tensor

from harness.losses.base import LossInputs, LossOutput, positive, register_loss
from harness.losses.spaces import DPO_BETA
from harness.losses.common import chosen_rejected_logratios, dpo_from_logratios


def segment_logratio(
    policy_token_logps: Tensor, reference_token_logps: Tensor, segment_mask: Tensor
) -> Tensor:
    """Σ over the segment's tokens of log πθ(y_t) − log π_ref(y_t): (B,) from (B, T) inputs."""
    return ((policy_token_logps - reference_token_logps) * segment_mask).sum(-1)


@register_loss(
    "sdpo_segment",
    search_space={"beta": DPO_BETA},
    needs=("reference", "token_logps", "segments"),
    reduction="sum",
    paper="Kong et al. 2025, SDPO: Segment-Level Direct Preference Optimization for Social Agents "
    "(arXiv:2501.01821)",
    formula="-log σ(β (Σ_seg r_w,t − Σ_seg r_l,t)), r_t the token log-ratio, summed over the "
    "agent turns of the chosen/rejected segments",
    constraints={"beta": positive()},
)
def sdpo_segment(inputs: LossInputs, *, beta: float = 0.1) -> LossOutput:
    """Segment-level DPO (Kong et al. 2025, arXiv:2501.01821): DPO on segment-summed log-ratios.

    The chosen and rejected sessions share their history up to the first bad turn; the segments
    (equal numbers of agent turns, starting there) are selected by the data stage and arrive as
    chosen_segment_mask / rejected_segment_mask (B, T), which cover only the agent's tokens of the
    segment. The shared history and the other speaker's turns are context only: they are in the
    input but not in the masks.

    Where implementations disagree: multi-turn DPO variants differ in which turns are scored:
    turn-level DPO one turn, session-level methods (ETO, DMPO) whole sessions, SDPO only the
    segment, and only the agent's tokens in it. Not to be confused with TRL's `sdpo` (an unrelated
    self-distillation method) or with sDPO (stepwise DPO, `sdpo_stepwise`). Summed, as in the
    paper. Rewards are β·segment log-ratio; extra metrics
    sdpo_chosen_segment_tokens and sdpo_rejected_segment_tokens (B,).
    """
    chosen_logratios = segment_logratio(
        inputs.policy_chosen_token_logps,
        inputs.reference_chosen_token_logps,
        inputs.chosen_segment_mask,
    )
    rejected_logratios = segment_logratio(
        inputs.policy_rejected_token_logps,
        inputs.reference_rejected_token_logps,
        inputs.rejected_segment_mask,
    )
    output = dpo_from_logratios(chosen_logratios, rejected_logratios, beta=beta)
    output.metrics["sdpo_chosen_segment_tokens"] = inputs.chosen_segment_mask.sum(-1).float()
    output.metrics["sdpo_rejected_segment_tokens"] = inputs.rejected_segment_mask.sum(-1).float()
    return output


@register_loss(
    "sdpo_stepwise",
    search_space={"beta": DPO_BETA},
    needs=("reference",),
    reduction="sum",
    paper="Kim et al. 2024, sDPO: Don't Use Your Data All at Once (arXiv:2403.19270)",
    formula="-log σ(β h) at each stage, π_ref = the model after the previous stage",
    constraints={"beta": positive()},
    regime="stages",
)
def sdpo_stepwise(inputs: LossInputs, *, beta: float = 0.1) -> LossOutput:
    """Stepwise DPO (Kim et al. 2024, arXiv:2403.19270): plain DPO, -log σ(β h), per stage.

    The method is the procedure: the data is split into ordered chunks (T = 2 stages in the
    paper, easier data first) and the reference at stage t is the policy after stage t−1; the
    trainer's stage regime does that (and keys the reference cache by the reference's weights).
    The loss itself is the shared DPO core. Summed log-probs; rewards β·log-ratio.
    """
    chosen_logratios, rejected_logratios = chosen_rejected_logratios(inputs)
    return dpo_from_logratios(chosen_logratios, rejected_logratios, beta=beta)
