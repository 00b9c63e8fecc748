"""AOT (aot.py): golden values, one pair is DPO, invariance to the batch's order."""

from __future__ import annotations

import pytest
import torch

from harness.losses import LossInputs, get_loss
from tests.golden import NLS1, close, loss, pair, random_pairs


def test_aot_golden():
    """β = 1, B = 2. Policy chosen [3, −1], rejected [0, 0]; reference chosen [0, 2], rejected [0, 0].
    Paired: policy differences [3, −1] sort to [−1, 3]; reference differences [0, 2] stay [0, 2];
    margins [−1, 1]: losses [1.3132617, 0.3132617], mean 0.8132617 (per-example DPO would pair
    3−0 and −1−2: margins [3, −3]).
    Unpaired: r_w = [3, −3] sorts to [−3, 3]; r_l = [0, 0]; margins [−3, 3]: losses
    [3.0485874, 0.0485874], mean 1.5485874."""
    inputs = pair([3.0, -1.0], [0.0, 0.0], [0.0, 2.0], [0.0, 0.0], [1.0, 1.0], [1.0, 1.0])
    close(loss("aot", inputs, beta=1.0), torch.tensor([1.0 + NLS1, NLS1], dtype=torch.float64))
    close(loss("aot", inputs, beta=1.0).mean(), 0.8132617)
    close(loss("aot", inputs, beta=1.0, variant="unpaired").mean(), 1.5485874)
    out = get_loss("aot")(inputs, beta=1.0)
    close(out.metrics["reward_margins"], torch.tensor([3.0, -3.0], dtype=torch.float64))  # unsorted


@pytest.mark.parametrize("variant", ["paired", "unpaired"])
def test_aot_with_one_pair_is_dpo(variant):
    inputs = random_pairs(seed=9, batch=1)
    close(loss("aot", inputs, variant=variant), loss("dpo", inputs))


def test_aot_depends_on_the_batch_not_the_order():
    """Sorting makes the mean invariant to a permutation of the batch."""
    inputs = random_pairs(seed=10, batch=6)
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(0))
    shuffled = LossInputs(**{k: (v[perm] if torch.is_tensor(v) else v) for k, v in vars(inputs).items()})
    for variant in ("paired", "unpaired"):
        close(loss("aot", inputs, variant=variant).mean(), loss("aot", shuffled, variant=variant).mean())
