"""RPO (rpo.py): golden values and reduction to DPO."""

from __future__ import annotations

import pytest

from harness.losses import get_loss
from tests.golden import NLS1, close, loss, pair, random_pairs


def test_rpo_golden():
    """β = 0.1, α = 1. Policy/reference chosen −8/−13 → r_w = 5; rejected −10/−5 → r_l = −5.
    DPO: −log σ(0.1·10) = 0.3132617. NLL: 8 over 4 tokens = 2. Loss = 2.3132617."""
    out = get_loss("rpo")(pair(-8.0, -10.0, -13.0, -5.0, chosen_len=4.0))
    close(out.losses, 2.0 + NLS1)


@pytest.mark.parametrize("seed", [0, 1])
def test_rpo_without_nll_is_dpo(seed):
    inputs = random_pairs(seed=seed, batch=5)
    close(loss("rpo", inputs, alpha=0.0), loss("dpo", inputs))
