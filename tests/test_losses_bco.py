"""BCO (bco.py): golden values and its running reward-mean state."""

from __future__ import annotations

import math

import torch

from harness.losses import LossInputs, get_loss
from tests.golden import LN2, NLS1, close, loss, pair, random_pairs, t


def test_bco_pair_golden_and_state():
    """β = 1, r_w = 2, r_l = 0. No state: δ = mean(2, 0) = 1 (this batch's mean);
    −log σ(2 − 1) − log σ(−(0 − 1)) = 2·0.3132617 = 0.6265234; state → mean 1, count 1.
    State (mean 3, count 1): δ = (3·1 + 1)/2 = 2; −log σ(0) − log σ(2) = 0.6931472 + 0.1269280
    = 0.8200752; state → mean 2, count 2.
    reward_shift=False (TRL 1.16's δ = 0): −log σ(2) − log σ(0) = 0.8200752, no state update."""
    spec = get_loss("bco_pair")
    out = spec(pair(2.0, 0.0), beta=1.0)
    close(out.losses, 2 * NLS1)
    close(out.state_updates["reward_mean"], 1.0)
    close(out.state_updates["reward_count"], 1.0)

    inputs = pair(2.0, 0.0)
    stateful = LossInputs(**{**vars(inputs), "state": {"reward_mean": t(3.0)[0], "reward_count": t(1.0)[0]}})
    out = spec(stateful, beta=1.0)
    close(out.losses, LN2 + math.log1p(math.exp(-2.0)))
    close(out.metrics["bco_delta"], 2.0)
    close(out.state_updates["reward_mean"], 2.0)
    close(out.state_updates["reward_count"], 2.0)

    out = spec(stateful, beta=1.0, reward_shift=False)
    close(out.losses, LN2 + math.log1p(math.exp(-2.0)))
    assert out.state_updates == {}
    assert spec.state == ("reward_mean", "reward_count")


def test_bco_pair_without_shift_ignores_state():
    inputs = random_pairs(seed=11, batch=5)
    state = {"reward_mean": torch.tensor(5.0), "reward_count": torch.tensor(3.0)}
    stateful = LossInputs(**{**vars(inputs), "state": state})
    close(loss("bco_pair", stateful, reward_shift=False), loss("bco_pair", inputs, reward_shift=False))
