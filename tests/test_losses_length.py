"""R-DPO's length term (harness/losses/length.py): its sign, derived, and checked."""

from __future__ import annotations

import torch

from harness.losses import get_loss
from tests.golden import close, nls, pair


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
