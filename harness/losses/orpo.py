"""ORPO: SFT plus an odds-ratio penalty, reference-free, in one stage."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from harness.losses.base import LossInputs, LossOutput, log_range, non_negative, register_loss
from harness.losses.common import length_mean, neg_log_sigmoid, preference_metrics

# A per-token mean log-prob of exactly 0 (every token certain) has infinite odds; keep it just
# below 0 so that log(1 − p) stays finite. Real completions are nowhere near this bound.
_MAX_MEAN_LOGP = -1e-6


def log1mexp(x: Tensor) -> Tensor:
    """log(1 − exp(x)) for x < 0, stable at both ends (Mächler 2012): expm1 near 0, log1p far."""
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def log_odds(mean_logps: Tensor) -> Tensor:
    """log(p / (1 − p)) with p = exp(ℓ̄), from per-token mean log-probs (B,)."""
    mean_logps = mean_logps.clamp(max=_MAX_MEAN_LOGP)
    return mean_logps - log1mexp(mean_logps)


@register_loss(
    "orpo",
    search_space={
        "lambda_": log_range(
            0.05, 2.0,
            "SimPO paper's ORPO sweep λ ∈ {0.1, 0.5, 1.0, 2.0} (Meng et al. 2024, Table 7)"
        ),
    },
    needs=(),
    reduction="mean",
    paper="Hong et al. 2024, ORPO: Monolithic Preference Optimization without Reference Model "
    "(arXiv:2403.07691)",
    formula="NLL_mean(y_w) + λ·(−log σ(log odds(y_w) − log odds(y_l))), odds = p/(1−p), p = exp(ℓ̄)",
    constraints={"lambda_": non_negative()},
)
def orpo(inputs: LossInputs, *, lambda_: float = 0.1) -> LossOutput:
    """ORPO (Hong et al. 2024, arXiv:2403.07691): NLL_mean(y_w) − λ·log σ(log odds_w − log odds_l).

    Inputs (B,): summed policy log-probs and completion lengths; no reference model.
    The odds are taken on the length-averaged probability p = exp(ℓ̄), ℓ̄ = log π(y|x)/|y|, as in
    the paper and TRL: on summed log-probs p would be ~0 and the odds meaningless. The SFT term is the chosen completion's per-token mean NLL, per example.

    Where implementations disagree: TRL's ORPOTrainer (trl.experimental in 1.16) calls λ `beta`,
    and its NLL is one token-mean over the whole batch *including the prompt tokens*
    ("computed over the full prompt and response"); here it is the completion only, averaged per
    example (the paper conditions on x). The two agree when completions have equal lengths and
    the prompt is a single token. Rewards reported are λ·ℓ̄, as TRL logs them.
    Extra metrics: log_odds_ratio (log odds_w − log odds_l), or_loss (−log σ of it), nll.
    """
    chosen_mean = length_mean(inputs.policy_chosen_logps, inputs.chosen_lengths)
    rejected_mean = length_mean(inputs.policy_rejected_logps, inputs.rejected_lengths)
    log_odds_ratio = log_odds(chosen_mean) - log_odds(rejected_mean)
    or_loss = neg_log_sigmoid(log_odds_ratio)
    nll = -chosen_mean
    metrics = preference_metrics(lambda_ * chosen_mean, lambda_ * rejected_mean)
    metrics.update(log_odds_ratio=log_odds_ratio.detach(), or_loss=or_loss.detach(), nll=nll.detach())
    return LossOutput(nll + lambda_ * or_loss, metrics)
