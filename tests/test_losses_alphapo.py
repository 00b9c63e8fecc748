"""AlphaPO (harness/losses/alphapo.py): golden values, the SimPO limit, TRL's CPOTrainer form."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from harness.losses import get_loss
from tests.golden import close, nls, pair, random_pairs


def trl_alphapo_loss(chosen_mean_logps, rejected_mean_logps, beta, simpo_gamma, alpha):
    """A transcription of TRL 1.16 trl/experimental/cpo/cpo_trainer.py, CPOTrainer.cpo_loss, lines
    697–704 (the AlphaPO reward) and 715–722 (loss_type "simpo", label_smoothing 0); TRL averages
    the log-probs per token for "simpo" (concatenated_forward, line 850)."""
    chosen_probs = torch.exp(chosen_mean_logps)
    rejected_probs = torch.exp(rejected_mean_logps)
    policy_chosen_rewards = (1 - chosen_probs.pow(-alpha)) / alpha
    policy_rejected_rewards = (1 - rejected_probs.pow(-alpha)) / alpha
    logits = policy_chosen_rewards - policy_rejected_rewards
    gamma_logratios = simpo_gamma / beta
    logits = logits - gamma_logratios
    return -F.logsigmoid(beta * logits)


def test_alphapo_golden():
    """α = 1, β = 1, γ = 0: r = 1 − 1/p. Chosen ℓ̄ = 0 (p = 1) → r = 0; rejected ℓ̄ = −ln 2 over 2
    tokens (sum −2 ln 2, p = ½) → r = 1 − 2 = −1. −log σ(0 − (−1)) = −log σ(1) = 0.3132617."""
    x = pair(0.0, -2 * math.log(2.0), chosen_len=3.0, rejected_len=2.0)
    out = get_loss("alphapo")(x, beta=1.0, gamma_beta_ratio=0.0, alpha=1.0)
    close(out.losses, nls(1.0))
    close(out.metrics["rejected_rewards"], -1.0)


def test_alphapo_at_alpha_zero_is_simpo():
    x = random_pairs(seed=1)
    close(get_loss("alphapo")(x, alpha=0.0, beta=2.5, gamma_beta_ratio=0.4).losses,
          get_loss("simpo")(x, beta=2.5, gamma_beta_ratio=0.4).losses)
    # and it is continuous there: a tiny α is SimPO up to O(α)
    close(get_loss("alphapo")(x, alpha=1e-7).losses, get_loss("simpo")(x).losses, tol=1e-5)


def test_alphapo_matches_trl_cpo_trainer():
    x = random_pairs(seed=2)
    chosen = x.policy_chosen_logps / x.chosen_lengths
    rejected = x.policy_rejected_logps / x.rejected_lengths
    for beta, ratio, alpha in ((2.0, 0.5, 0.25), (1.0, 0.3, -0.4), (2.5, 0.0, 1.0)):
        expected = trl_alphapo_loss(chosen, rejected, beta, beta * ratio, alpha)
        close(get_loss("alphapo")(x, beta=beta, gamma_beta_ratio=ratio, alpha=alpha).losses, expected)
