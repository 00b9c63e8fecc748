"""The length-aware DPOs (harness/losses/length.py: ln_dpo, r_dpo, ld_dpo): R-DPO's length term
and its sign, derived and checked; golden values and reductions to DPO."""

from __future__ import annotations

import pytest
import torch

from harness.losses import LossInputs, get_loss
from tests.golden import LN2, NLS1, close, loss, nls, pair, random_pairs, t


def test_r_dpo_sign_derived_and_golden():
    """The sign, from R-DPO's objective max_π E[r] − α|y| − β·KL(π ‖ π_ref):
    its optimum π*(y) ∝ π_ref(y)·exp((r(y) − α|y|)/β) gives r(y) = β log π*(y)/π_ref(y) + α|y| + β log Z,
    so P(y_w ≻ y_l) = σ(r_w − r_l) = σ(β h + α(|y_w| − |y_l|)) and the loss is −log σ(β h + α Δ|y|).
    Numbers: β = 0.1, α = 0.01, h = 20 → β h = 2; |y_w| − |y_l| = 150 − 50 = 100 → α·100 = 1;
    −log σ(2 + 1) = −log σ(3) = 0.0485874 (version 1's "−" gave −log σ(1) = 0.3132617)."""
    out = get_loss("r_dpo")(pair(20.0, 0.0, chosen_len=150.0, rejected_len=50.0))
    close(out.losses, 0.0485874, tol=1e-6)
    close(out.metrics["length_penalty"], 1.0)
    assert get_loss("r_dpo").version == "2"


def test_r_dpo_asks_less_margin_of_a_longer_chosen_response():
    """At a fixed margin h = 5, lengthening the chosen response lowers the loss (it needs less
    margin), and lengthening the rejected one raises it: length is regularized, not rewarded.
    −log σ(0.5 + 0.01·Δ) for Δ = −40, 0, 40: nls(0.1) > nls(0.5) > nls(0.9)."""
    losses = torch.cat([
        get_loss("r_dpo")(pair(5.0, 0.0, chosen_len=10.0 + d, rejected_len=50.0)).losses for d in (0.0, 40.0, 80.0)
    ])
    close(losses, [nls(0.1), nls(0.5), nls(0.9)])
    assert losses[0] > losses[1] > losses[2]


def test_ln_dpo_golden():
    """β = 1. r_w = 2 over 4 tokens → 0.5; r_l = −3 over 6 tokens → −0.5.
    −log σ(1·(0.5 + 0.5)) = 0.3132617 (DPO on sums would be −log σ(5))."""
    close(loss("ln_dpo", pair(2.0, -3.0, chosen_len=4.0, rejected_len=6.0), beta=1.0), NLS1)


def test_ld_dpo_golden():
    """β = 1, α = 0.5. Chosen 4 tokens, rejected 2, so l_p = 2.
    Chosen policy tokens [−1, −1, −2, −2]: shared −2, tail −4 → −2 + 0.5·(−4) = −4;
    chosen reference [−1, −1, −1, −1]: −2 + 0.5·(−2) = −3; r_w = −1.
    Rejected policy [−1, −3] (no tail) = −4, reference [−1, −1] = −2; r_l = −2.
    h = −1 + 2 = 1: −log σ(1) = 0.3132617. (Plain DPO: r_w = −6 + 4 = −2, h = 0, ln 2.)"""
    mask_c = torch.tensor([[True, True, True, True]])
    mask_r = torch.tensor([[True, True, False, False]])
    inputs = LossInputs(
        policy_chosen_token_logps=t(-1, -1, -2, -2).unsqueeze(0),
        reference_chosen_token_logps=t(-1, -1, -1, -1).unsqueeze(0),
        policy_rejected_token_logps=t(-1, -3, 0, 0).unsqueeze(0),
        reference_rejected_token_logps=t(-1, -1, 0, 0).unsqueeze(0),
        chosen_mask=mask_c,
        rejected_mask=mask_r,
        policy_chosen_logps=t(-6.0),
        reference_chosen_logps=t(-4.0),
        policy_rejected_logps=t(-4.0),
        reference_rejected_logps=t(-2.0),
        chosen_lengths=t(4.0),
        rejected_lengths=t(2.0),
    )
    close(loss("ld_dpo", inputs, beta=1.0), NLS1)
    close(loss("ld_dpo", inputs, beta=1.0, alpha=1.0), LN2)
    close(loss("dpo", inputs, beta=1.0), LN2)


def test_r_dpo_is_dpo_for_equal_lengths():
    inputs = random_pairs(seed=2, equal_lengths=4, batch=5)
    close(loss("r_dpo", inputs, alpha=0.5), loss("dpo", inputs))


def test_ld_dpo_is_dpo_for_equal_lengths():
    """With |y_w| = |y_l| there is no verbose part, whatever α."""
    inputs = random_pairs(seed=2, equal_lengths=4, batch=5)
    close(loss("ld_dpo", inputs, alpha=0.0), loss("dpo", inputs))


def test_ln_dpo_is_dpo_with_beta_over_length():
    """Equal lengths L: β(r_w/L − r_l/L) = (β/L)(r_w − r_l)."""
    inputs = random_pairs(seed=4, equal_lengths=5, batch=5)
    close(loss("ln_dpo", inputs, beta=2.0), loss("dpo", inputs, beta=2.0 / 5))


@pytest.mark.parametrize("seed", [0, 1])
def test_r_dpo_at_zero_alpha_and_ld_dpo_at_alpha_one_are_dpo(seed):
    inputs = random_pairs(seed=seed, batch=5)
    dpo = loss("dpo", inputs)
    close(loss("r_dpo", inputs, alpha=0.0), dpo)
    close(loss("ld_dpo", inputs, alpha=1.0), dpo)
