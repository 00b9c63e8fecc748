"""TDPO₁ and TDPO₂ (tdpo.py): golden values, gradients, reductions to DPO."""

from __future__ import annotations

import torch

from harness.losses import LossInputs, get_loss
from tests.golden import EXACT, close, golden_pair, loss, nls, random_sums, sigmoid, t


def _tdpo_pair(chosen_kl=(0.2, 0.3), rejected_kl=(1.0, 0.5), requires_grad=False) -> LossInputs:
    chosen = t(*chosen_kl).unsqueeze(0).requires_grad_(requires_grad)
    rejected = t(*rejected_kl).unsqueeze(0).requires_grad_(requires_grad)
    return golden_pair(chosen_vocab_kl=chosen, rejected_vocab_kl=rejected)


def test_tdpo1_golden():
    """Per-position KLs chosen [0.2, 0.3] → D_w = 0.5, rejected [1.0, 0.5] → D_l = 1.5.
    TDPO₁: β (h − (D_l − D_w)) = 0.1·(3 − 1) = 0.2, loss = softplus(−0.2) = 0.598139.
    dL/dD_w = −β σ(−0.2) = −0.045017 per position (the KL gradient flows on both sides)."""
    inputs = _tdpo_pair(requires_grad=True)
    out = get_loss("tdpo1")(inputs)
    close(out.losses, [nls(0.2)], tol=EXACT)
    close(out.metrics["tdpo_chosen_kl"], [0.5], tol=EXACT)
    close(out.metrics["tdpo_rejected_kl"], [1.5], tol=EXACT)
    out.losses.sum().backward()
    close(inputs.chosen_vocab_kl.grad, [[-0.1 * sigmoid(-0.2)] * 2], tol=EXACT)
    close(inputs.rejected_vocab_kl.grad, [[0.1 * sigmoid(-0.2)] * 2], tol=EXACT)


def test_tdpo2_golden():
    """Same KLs, α = 0.5: β (h − α (D_l − sg(D_w))) = 0.1·(3 − 0.5·1) = 0.25,
    loss = softplus(−0.25) = 0.575939. The chosen KL gets no gradient (stop-gradient)."""
    inputs = _tdpo_pair(requires_grad=True)
    out = get_loss("tdpo2")(inputs)
    close(out.losses, [nls(0.25)], tol=EXACT)
    out.losses.sum().backward()
    assert inputs.chosen_vocab_kl.grad is None or not inputs.chosen_vocab_kl.grad.any()
    close(inputs.rejected_vocab_kl.grad, [[0.1 * 0.5 * sigmoid(-0.25)] * 2], tol=EXACT)


def test_tdpo_reduces_to_dpo():
    """TDPO₂ at α = 0, either TDPO with zero KL, and TDPO₁ with equal sequential KLs on both sides."""
    batch = 16
    gen = torch.Generator().manual_seed(1)
    kl = torch.rand(batch, 6, generator=gen, dtype=torch.float64)
    zeros = torch.zeros(batch, 6, dtype=torch.float64)
    dpo = loss("dpo", random_sums(batch))
    different_kl = random_sums(batch, chosen_vocab_kl=kl, rejected_vocab_kl=kl.flip(0))
    close(loss("tdpo2", different_kl, alpha=0.0), dpo, tol=EXACT)
    for name in ("tdpo1", "tdpo2"):
        zero_kl = random_sums(batch, chosen_vocab_kl=zeros, rejected_vocab_kl=zeros)
        close(loss(name, zero_kl), dpo, tol=EXACT)
    # rolling along positions keeps each row's sum: D_w = D_l
    equal_kl = random_sums(batch, chosen_vocab_kl=kl, rejected_vocab_kl=kl.roll(1, -1))
    close(loss("tdpo1", equal_kl), dpo, tol=EXACT)
