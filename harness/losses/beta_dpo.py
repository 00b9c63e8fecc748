"""β-DPO: DPO with a batch-level β calibrated by the margin's running statistics, and filtering."""

from __future__ import annotations

import torch
from torch import Tensor

from harness.losses.base import LossInputs, LossOutput, in_range, linear_range, non_negative, positive, register_loss
from harness.losses.common import chosen_rejected_logratios, neg_log_sigmoid, preference_metrics
from harness.losses.running import MIN_STD, draw_generator, ema_mean_std
from harness.losses.spaces import DPO_BETA

MIN_BETA = 1e-3  # the authors' clamp on the adapted β


def filter_weights(margins: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """exp(−½ ((M − μ)/σ)²) (B,): pairs whose margin is typical are likelier to be kept. Uniform
    when every weight underflows (a running σ still near 0), where the authors' code would fail."""
    weights = torch.exp(-0.5 * ((margins - mean) / std.clamp(min=MIN_STD)) ** 2)
    if not torch.isfinite(weights).all() or weights.sum() <= 0:
        return torch.ones_like(margins)
    return weights


@register_loss(
    "beta_dpo",
    search_space={
        "beta": DPO_BETA,
        "alpha": linear_range(
            0.0, 1.0, "the authors' example a = 0.6 (junkangwu/beta-DPO README); 0 keeps β fixed"
        ),
        "filter_ratio": linear_range(
            0.0, 0.5, "the authors' example filtering ratio 0.2 (junkangwu/beta-DPO README, mode_weight)"
        ),
    },
    needs=("reference",),
    reduction="sum",
    paper="Wu et al. 2024, β-DPO: Direct Preference Optimization with Dynamic β (NeurIPS 2024, "
    "arXiv:2407.08639)",
    formula="kept pairs: −log σ(β_b h), β_b = max(1e-3, β (1 + α (mean_kept(h) − μ))); pairs kept by "
    "sampling ∝ exp(−½((h − μ)/σ)²); μ, σ running mean and std of h",
    constraints={"beta": positive(), "alpha": non_negative(), "filter_ratio": in_range(0.0, 1.0, high_open=True)},
    state=("margin_mean", "margin_std", "draws"),
)
def beta_dpo(inputs: LossInputs, *, beta: float = 0.1, alpha: float = 0.6, filter_ratio: float = 0.2) -> LossOutput:
    """β-DPO (Wu et al., NeurIPS 2024): a batch-level β from the margins' running statistics, on a
    filtered batch.

    Inputs (B,): summed policy and reference log-probs; running state margin_mean, margin_std
    (μ, σ of h = r_w − r_l) and draws (how many filterings so far, which seeds them). As the
    authors' code, junkangwu/beta-DPO trainers.py: preference_loss, lines 67–95 (mode_loss
    "beta_DPO"), with update_and_sync_tensor_mean, lines 242–252, run first (get_batch_metrics,
    lines 276–279):
    1. μ, σ ← 0.9 μ + 0.1 mean(h), 0.9 σ + 0.1 std(h) (detached; both start at 0);
    2. keep ⌊B(1 − ρ)⌋ pairs, drawn without replacement with probability ∝ exp(−½((h − μ)/σ)²):
       pairs with outlying margins (too easy, or likely mislabelled) are dropped;
    3. β_b = max(1e-3, β (1 + α (mean of the kept h − μ))), detached: a batch of larger margins
       than usual gets a larger β;
    4. loss = mean over kept pairs of −log σ(β_b h). Each kept pair's loss is scaled by B/kept and
       the others are 0, so the trainer's plain mean is that mean.

    Deviations, all where the authors' code would fail: at least one pair is kept (B = 1 with
    ρ = 0.2 keeps ⌊0.8⌋ = 0 there), std of one margin is 0 (not NaN), weights that all underflow
    become uniform. The draws come from a generator seeded by the draw count, so the function is
    deterministic given its state and a resumed run repeats them; with gradient accumulation each
    micro-batch updates the statistics (the authors gather the whole batch across processes).
    Defaults: β = 0.1, α (their `a`) = 0.6, ρ (their `mode_weight`) = 0.2, the README's example.
    Rewards are β·r (the base β, as the authors log); extra metrics: beta_used, kept.
    """
    chosen, rejected = chosen_rejected_logratios(inputs)
    margins = chosen - rejected
    mean, std = ema_mean_std(margins, inputs.state, "margin")
    generator, draws = draw_generator(inputs.state)
    batch = margins.numel()
    kept_count = max(1, int(batch * (1 - filter_ratio)))
    weights = filter_weights(margins.detach(), mean, std)
    kept = torch.multinomial(weights.cpu().float(), kept_count, replacement=False, generator=generator)
    mask = torch.zeros_like(margins)
    mask[kept.to(margins.device)] = 1.0
    kept_mean = (margins.detach() * mask).sum() / kept_count
    beta_used = (beta * (1 + alpha * (kept_mean - mean))).clamp(min=MIN_BETA).detach()
    losses = mask * neg_log_sigmoid(beta_used * margins) * (batch / kept_count)
    metrics = preference_metrics(beta * chosen, beta * rejected)
    metrics["beta_used"] = beta_used
    metrics["kept"] = mask
    return LossOutput(losses, metrics, {"margin_mean": mean, "margin_std": std, "draws": draws})
