"""AlphaDPO (harness/losses/alpha_dpo.py): a golden step, the authors' code over steps, SimPO at α = 0."""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from harness.losses import get_loss
from tests.golden import close, nls, pair, random_pairs


class AuthorsAlphaDPO:
    """A transcription of junkangwu/alpha-DPO scripts/dpo_trainer.py, AlphaDPOTrainer: constants
    (lines 23–24), dpo_loss for loss_type "alpha-dpo" (lines 86–107, label_smoothing 0) and
    update_and_sync_ref_mean_std on one process (lines 140–148). Inputs are the per-token mean
    log-probs their concatenated_forward returns with ln=True."""

    def __init__(self, beta, gamma_beta_ratio, alpha):
        self.beta, self.gamma_beta_ratio, self.alpha = beta, gamma_beta_ratio, alpha
        self.constant_1 = torch.zeros(1, dtype=torch.float64)
        self.constant_2 = torch.zeros(1, dtype=torch.float64)

    def update_and_sync_ref_mean_std(self, ref_logratios, gamma_update=0.9):
        with torch.no_grad():
            ref_logratios_global = ref_logratios.clone()
            self.constant_1 = self.constant_1 * gamma_update + torch.mean(ref_logratios_global) * (1 - gamma_update)
            self.constant_2 = self.constant_2 * gamma_update + torch.std(ref_logratios_global) * (1 - gamma_update)

    def dpo_loss(self, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps):
        pi_logratios = policy_chosen_logps - policy_rejected_logps
        ref_logratios = reference_chosen_logps - reference_rejected_logps
        gap_pos_neg = pi_logratios - ref_logratios
        self.update_and_sync_ref_mean_std(gap_pos_neg)
        ref_logratios_normalized = (gap_pos_neg - self.constant_1) / self.constant_2
        ref_logratios_scaled = ref_logratios_normalized * self.alpha + self.gamma_beta_ratio
        constant_term = ref_logratios_scaled.detach()
        logits = pi_logratios - constant_term
        return -F.logsigmoid(self.beta * logits)


def test_alpha_dpo_golden_step():
    """β = 1, γ/β = 0.5, α = 0.2, one-token completions (means = sums), references 0, fresh state.
    Policy margins Δθ = [1, 3] = u. μ = 0.1·2 = 0.2, σ = 0.1·std([1, 3]) = 0.1·√2 = 0.1414214.
    δ = 0.2 (u − μ)/σ + 0.5 = [1.6313708, 4.4597980]; losses −log σ(Δθ − δ) =
    −log σ(−0.6313708) = 1.0578550 and −log σ(−1.4597980) = 1.6686667."""
    out = get_loss("alpha_dpo")(pair([1.0, 3.0], [0.0, 0.0]), beta=1.0, gamma_beta_ratio=0.5, alpha=0.2)
    delta = [0.2 * 0.8 / (0.1 * math.sqrt(2)) + 0.5, 0.2 * 2.8 / (0.1 * math.sqrt(2)) + 0.5]
    close(out.metrics["alpha_dpo_margin"], delta)
    close(out.losses, [nls(1.0 - delta[0]), nls(3.0 - delta[1])])
    close(out.losses, [1.0578550, 1.6686667], tol=1e-6)


def test_alpha_dpo_matches_the_authors_code_over_steps():
    authors = AuthorsAlphaDPO(beta=2.5, gamma_beta_ratio=0.6, alpha=0.2)
    state = {}
    for step in range(4):
        x = random_pairs(seed=20 + step)
        means = {name: getattr(x, f"{name}_logps") / getattr(x, f"{name.split('_')[1]}_lengths")
                 for name in ("policy_chosen", "policy_rejected", "reference_chosen", "reference_rejected")}
        expected = authors.dpo_loss(means["policy_chosen"], means["policy_rejected"], means["reference_chosen"],
                                    means["reference_rejected"])
        out = get_loss("alpha_dpo")(dataclasses.replace(x, state=state))
        close(out.losses, expected, tol=1e-9)
        state = out.state_updates


def test_alpha_dpo_at_alpha_zero_is_simpo():
    x = random_pairs(seed=3)
    close(get_loss("alpha_dpo")(x, alpha=0.0, beta=2.0, gamma_beta_ratio=0.5).losses,
          get_loss("simpo")(x, beta=2.0, gamma_beta_ratio=0.5).losses)
