"""CPO (cpo.py): golden values and DPO with a uniform reference."""

from __future__ import annotations

import torch

from harness.losses import LossInputs, get_loss
from tests.golden import NLS1, close, loss, pair, random_pairs


def test_cpo_golden():
    """β = 0.1, α = 1. log πθ(y_w) = −10 over 5 tokens, log πθ(y_l) = −20.
    Preference: −log σ(0.1·(−10 + 20)) = −log σ(1) = 0.3132617. NLL_mean = 10/5 = 2.
    Loss = 2.3132617. No reference is read (it is 0 here and ignored anyway)."""
    out = get_loss("cpo")(pair(-10.0, -20.0, reference_chosen=123.0, chosen_len=5.0))
    close(out.losses, 2.0 + NLS1)
    close(out.metrics["nll"], 2.0)


def test_cpo_without_nll_is_dpo_with_a_uniform_reference():
    inputs = random_pairs(seed=7, batch=5)
    zero_reference = LossInputs(
        **{
            **vars(inputs),
            "reference_chosen_logps": torch.zeros_like(inputs.reference_chosen_logps),
            "reference_rejected_logps": torch.zeros_like(inputs.reference_rejected_logps),
        }
    )
    close(loss("cpo", inputs, alpha=0.0), loss("dpo", zero_reference))
