"""β-DPO (harness/losses/beta_dpo.py): a golden step, the authors' code over several steps, and
its running state."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from harness.losses import get_loss
from harness.losses.running import DRAW_SEED
from tests.golden import close, nls, pair, random_pairs


class AuthorsBetaDPO:
    """A transcription of junkangwu/beta-DPO trainers.py for one process: the running statistics
    (BasicTrainer.__init__ lines 191–194, update_and_sync_tensor_mean lines 242–252, called first
    in get_batch_metrics lines 276–279), preference_loss with mode_loss "beta_DPO" (lines 67–95),
    and the masked mean of get_batch_metrics (lines 332–338)."""

    def __init__(self):
        self.gap_mean, self.gap_std = torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
        self.loss_mean, self.loss_std = torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)

    def update(self, gap_local, loss_local, gamma=0.9):
        self.gap_mean.mul_(gamma).add_(gap_local.mean(), alpha=1 - gamma)
        self.gap_std.mul_(gamma).add_(gap_local.std(), alpha=1 - gamma)
        self.loss_mean.mul_(gamma).add_(loss_local.mean(), alpha=1 - gamma)
        self.loss_std.mul_(gamma).add_(loss_local.std(), alpha=1 - gamma)

    def step(self, pc, pr, rc, rr, beta, loss_config):
        gap_local = (pc - rc - pr + rr).detach()
        self.update(gap_local, -F.logsigmoid(beta * gap_local))
        pi_logratios, ref_logratios = pc - pr, rc - rr
        logits = pi_logratios - ref_logratios
        A = (pc - rc - pr + rr).detach()
        weight_sample = torch.exp(-0.5 * ((A - self.gap_mean) / self.gap_std).pow(2))
        sample_num = int(weight_sample.numel() * (1 - loss_config.mode_weight))
        sample_index = torch.multinomial(weight_sample, sample_num, replacement=False)
        one_hot_like = torch.zeros_like(weight_sample)
        one_hot_like[sample_index] = 1
        global_mask = one_hot_like.detach()
        A_used = torch.mean(A[sample_index])
        beta_used = beta * (1 + loss_config.a * (A_used - self.gap_mean))
        beta_used = beta_used.clamp(min=1e-3)
        losses = -F.logsigmoid(beta_used.detach() * logits)
        masked_losses = losses * global_mask
        return masked_losses.sum() / global_mask.sum(), beta_used


def test_beta_dpo_golden_step_without_filtering():
    """β = 0.1, α = 0.6, ρ = 0 (keep both), a fresh state, h = [2, 4]:
    μ = 0.1·mean(h) = 0.3, σ = 0.1·std(h) = 0.1·√2 = 0.1414214 (unbiased std of [2, 4] is √2);
    β_b = 0.1·(1 + 0.6·(3 − 0.3)) = 0.262; losses −log σ(0.524) = 0.4650836, −log σ(1.048) = 0.3005773."""
    out = get_loss("beta_dpo")(pair([2.0, 4.0], [0.0, 0.0]), filter_ratio=0.0)
    close(out.losses, [nls(0.524), nls(1.048)])
    close(out.metrics["beta_used"], 0.262)
    close(out.state_updates["margin_mean"], 0.3)
    close(out.state_updates["margin_std"], 0.1 * math.sqrt(2.0))
    assert float(out.state_updates["draws"]) == 1.0


def test_beta_dpo_matches_the_authors_code_over_steps():
    """Four steps of batches of 8 with ρ = 0.25 (6 kept): our batch mean and β_b equal theirs, the
    state carried from step to step; their draws use the global generator seeded as ours is."""
    config = SimpleNamespace(mode_weight=0.25, a=0.6)
    authors, state = AuthorsBetaDPO(), {}
    for step in range(4):
        x = random_pairs(seed=10 + step, batch=8)
        torch.manual_seed(DRAW_SEED + step)
        expected_loss, expected_beta = authors.step(x.policy_chosen_logps, x.policy_rejected_logps,
                                                    x.reference_chosen_logps, x.reference_rejected_logps, 0.1, config)
        out = get_loss("beta_dpo")(dataclasses.replace(x, state=state), filter_ratio=0.25)
        close(out.losses.mean(), expected_loss, tol=1e-9)
        close(out.metrics["beta_used"], expected_beta.reshape(()), tol=1e-9)
        assert float(out.metrics["kept"].sum()) == 6
        state = out.state_updates


def test_beta_dpo_is_deterministic_given_its_state_and_keeps_one_pair_at_least():
    x = random_pairs(seed=5, batch=5)
    state = {"margin_mean": torch.tensor(1.0), "margin_std": torch.tensor(2.0), "draws": torch.tensor(7.0)}
    first = get_loss("beta_dpo")(dataclasses.replace(x, state=state))
    second = get_loss("beta_dpo")(dataclasses.replace(x, state=state))
    close(first.losses, second.losses)
    single = get_loss("beta_dpo")(pair(3.0, 1.0))  # ⌊1·0.8⌋ = 0 would keep nothing
    assert float(single.metrics["kept"].sum()) == 1 and torch.isfinite(single.losses).all()
