"""RSO's hinge (harness/losses/rso.py)."""

from __future__ import annotations

import torch

from harness.losses import get_loss
from tests.golden import close, pair, random_pairs


def test_rso_hinge_golden():
    """β = 0.1. h = r_w − r_l = 2 − (−1) = 3: max(0, 1 − 0.3) = 0.7. h = 20: max(0, 1 − 2) = 0, and
    no gradient once the margin 1/β is cleared."""
    close(get_loss("rso_hinge")(pair(2.0, -1.0)).losses, 0.7)
    x = pair(20.0, 0.0)
    x.policy_chosen_logps.requires_grad_(True)
    out = get_loss("rso_hinge")(x)
    close(out.losses, 0.0)
    out.losses.sum().backward()
    assert float(x.policy_chosen_logps.grad.abs().sum()) == 0.0


def test_rso_hinge_is_trl_hinge_formula_on_random_inputs():
    """TRL 1.16 dpo_trainer.py, loss_type "hinge": torch.relu(1 − β·delta_score), delta the DPO
    log-ratio margin (compared against TRL itself in tests/test_trl_crosscheck.py)."""
    x = random_pairs(seed=2)
    h = (x.policy_chosen_logps - x.reference_chosen_logps) - (x.policy_rejected_logps - x.reference_rejected_logps)
    close(get_loss("rso_hinge")(x, beta=0.5).losses, torch.relu(1 - 0.5 * h))
