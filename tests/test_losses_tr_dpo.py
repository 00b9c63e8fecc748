"""TR-DPO's loss (tr_dpo.py): golden values and DPO's formula."""

from __future__ import annotations

import pytest

from tests.golden import LN2, NLS1, close, loss, pair, random_pairs


def test_tr_dpo_golden():
    """h = 0 → ln 2; h = 10 with β = 0.1 → −log σ(1) = 0.3132617."""
    close(loss("tr_dpo", pair(0.0, 0.0)), LN2)
    close(loss("tr_dpo", pair(10.0, 0.0)), NLS1)


@pytest.mark.parametrize("seed", [0, 1])
def test_tr_dpo_is_dpo_per_step(seed):
    """The reference's updates are the regime's; per step the formula is DPO's."""
    inputs = random_pairs(seed=seed, batch=5)
    close(loss("tr_dpo", inputs), loss("dpo", inputs))
