"""SLiC-HF (slic.py): golden values."""

from __future__ import annotations

from harness.losses import LossInputs, get_loss
from tests.golden import EXACT, close, t


def test_slic_golden():
    """δ = 1, λ = 0.1. Pair 1: log πθ(y_w) = −10, log πθ(y_l) = −9.5, hinge = max(0, 1 + 10 − 9.5)
    = 1.5; SFT target log-prob −20 → 0.1·20 = 2; loss 3.5. Pair 2: −5 vs −9, hinge
    max(0, 1 − 4) = 0; SFT −10 → loss 1.0. No reference is read (its fields are None)."""
    inputs = LossInputs(
        policy_chosen_logps=t(-10.0, -5.0),
        policy_rejected_logps=t(-9.5, -9.0),
        chosen_lengths=t(4.0, 4.0),
        rejected_lengths=t(4.0, 4.0),
        policy_sft_logps=t(-20.0, -10.0),
        sft_lengths=t(5.0, 5.0),
    )
    out = get_loss("slic")(inputs)
    close(out.losses, [3.5, 1.0], tol=EXACT)
    close(out.metrics["slic_hinge"], [1.5, 0.0], tol=EXACT)
