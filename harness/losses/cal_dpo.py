"""Cal-DPO: DPO's contrastive term plus a calibration term that anchors each reward's scale."""

from __future__ import annotations

from harness.losses.base import LossInputs, LossOutput, linear_range, log_range, non_negative, positive, register_loss
from harness.losses.common import chosen_rejected_logratios, neg_log_sigmoid, preference_metrics


@register_loss(
    "cal_dpo",
    search_space={
        "beta": log_range(
            1e-3, 1.0,
            "the authors' run scripts use β = 0.001 (tengxiao1/Cal-DPO run/beta001_sametokenize.sh) "
            "and their handbook config 0.002; up to 1 for small models, where ±1/(2β) must be reachable",
        ),
        "calibration_weight": linear_range(
            0.0, 2.0, "the authors' code weighs the calibration term ½ (scripts/dpo_trainer.py); 0 is a β-free DPO"
        ),
    },
    needs=("reference",),
    reduction="sum",
    paper="Xiao et al. 2024, Cal-DPO: Calibrated Direct Preference Optimization for Language Model "
    "Alignment (NeurIPS 2024, arXiv:2412.14516)",
    formula="−log σ(r_w − r_l) + c·[(r_w − 1/(2β))² + (r_l + 1/(2β))²], c = ½, r the summed log-ratio",
    constraints={"beta": positive(), "calibration_weight": non_negative()},
)
def cal_dpo(inputs: LossInputs, *, beta: float = 1e-3, calibration_weight: float = 0.5) -> LossOutput:
    """Cal-DPO (Xiao et al., NeurIPS 2024): −log σ(r_w − r_l) + c [(r_w − 1/(2β))² + (r_l + 1/(2β))²].

    Inputs (B,): summed policy and reference log-probs; r = log πθ − log π_ref per response. The
    contrastive term is DPO's with β = 1 (β does not scale it); the calibration term regresses each
    implicit reward to ±1/(2β) (SPPO's hard targets), so the chosen likelihood cannot fall while
    the margin grows. As the authors' code: tengxiao1/Cal-DPO scripts/dpo_trainer.py, dpo_loss,
    lines 1211–1216 (loss_type "Cal-DPO"; F.mse_loss against the scalar targets, times 0.5).
    Their mse_loss averages over the batch before the sum; here each example carries its own
    squares, whose batch mean is the same number. Their "Cal-DPO-average" variant length-averages
    the log-probs; not exposed here.

    Defaults: β = 0.001 as in the authors' run script (run/beta001_sametokenize.sh); targets
    ±500 nats are far from a small model's log-ratios, so set β per suite. c = ½ is the authors'.
    Rewards are the log-ratios r (the authors log the policy log-probs; β·r would vanish at β =
    1e-3); extra metric: calibration, the calibration term before its weight.
    """
    chosen, rejected = chosen_rejected_logratios(inputs)
    target = 1.0 / (2.0 * beta)
    calibration = (chosen - target) ** 2 + (rejected + target) ** 2
    losses = neg_log_sigmoid(chosen - rejected) + calibration_weight * calibration
    metrics = preference_metrics(chosen, rejected)
    metrics["calibration"] = calibration.detach()
    return LossOutput(losses, metrics)
