"""ORPO (orpo.py): golden values, the certain-token clamp, its NLL part alone."""

from __future__ import annotations

import math

import torch

from harness.losses import get_loss
from tests.golden import LN2, close, loss, pair, random_pairs


def test_orpo_golden():
    """λ = 0.1. Chosen: 2 tokens, summed log-prob 2·ln(1/2), so ℓ̄_w = ln(1/2), p = 1/2,
    odds = 1, log odds = 0. Rejected: 3 tokens, 3·ln(1/3), ℓ̄_l = ln(1/3), p = 1/3, odds = 1/2,
    log odds = −ln 2. log odds ratio = ln 2; −log σ(ln 2) = −log(2/3) = ln 1.5 = 0.4054651.
    NLL = −ℓ̄_w = ln 2 = 0.6931472. Loss = 0.6931472 + 0.1·0.4054651 = 0.7336937."""
    out = get_loss("orpo")(pair(2 * math.log(0.5), 3 * math.log(1 / 3), chosen_len=2.0, rejected_len=3.0))
    close(out.losses, 0.7336937)
    close(out.metrics["log_odds_ratio"], LN2)
    close(out.metrics["nll"], LN2)
    close(out.metrics["chosen_rewards"], 0.1 * math.log(0.5))


def test_orpo_stays_finite_at_certain_tokens():
    """ℓ̄ = 0 (every token certain) has infinite odds; the clamp keeps the loss finite."""
    out = get_loss("orpo")(pair(0.0, -1.0))
    assert torch.isfinite(out.losses).all()


def test_orpo_without_penalty_is_the_mean_nll():
    inputs = random_pairs(seed=8, batch=5)
    close(loss("orpo", inputs, lambda_=0.0), -inputs.policy_chosen_logps / inputs.chosen_lengths)
