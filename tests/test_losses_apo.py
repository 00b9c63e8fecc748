"""APO-zero on unpaired data (harness/losses/apo.py): golden values, TRL's KTO-trainer form, and
its agreement with paired APO-zero."""

from __future__ import annotations

import math

import torch

from harness.losses import LossInputs, get_loss
from tests.golden import close, loss, pair, random_pairs, t


def unpaired(logratios, labels, reference=0.0) -> LossInputs:
    policy = t(*logratios)
    return LossInputs(policy_logps=policy, reference_logps=torch.full_like(policy, reference),
                      lengths=torch.ones_like(policy), labels=torch.tensor(labels))


def trl_apo_zero_unpaired(chosen_logratios, rejected_logratios, beta, desirable_weight, undesirable_weight):
    """A transcription of TRL 1.16 trainer/kto_trainer.py, kto_loss: the "apo_zero_unpaired"
    branches (lines 1454–1457 and 1471–1472) and the weighted concatenation (lines 1479–1482)."""
    chosen_losses = 1 - torch.sigmoid(beta * chosen_logratios)
    rejected_losses = torch.sigmoid(beta * rejected_logratios)
    return torch.cat((desirable_weight * chosen_losses, undesirable_weight * rejected_losses), 0)


def test_apo_zero_unpaired_golden():
    """β = 1, r = ln 3 for both: σ(ln 3) = ¾. Desirable: 1 − ¾ = ¼; undesirable: ¾; with
    λ_D = 1.2, λ_U = 0.8: 0.3 and 0.6."""
    x = unpaired([math.log(3.0), math.log(3.0)], [True, False])
    close(get_loss("apo_zero_unpaired")(x, beta=1.0).losses, [0.25, 0.75])
    out = get_loss("apo_zero_unpaired")(x, beta=1.0, desirable_weight=1.2, undesirable_weight=0.8)
    close(out.losses, [0.3, 0.6])
    close(out.metrics["reward_accuracies"], [1.0, 0.0])  # β r = ln 3 > 0: right for the desirable one only


def test_apo_zero_unpaired_matches_trl_kto_trainer():
    g = torch.Generator().manual_seed(0)
    logratios = torch.randn(8, generator=g, dtype=torch.float64) * 3
    labels = torch.arange(8) % 3 != 0
    x = unpaired(logratios.tolist(), labels.tolist())
    ours = get_loss("apo_zero_unpaired")(x, beta=0.3, desirable_weight=1.1, undesirable_weight=0.9).losses
    trl = trl_apo_zero_unpaired(logratios[labels], logratios[~labels], 0.3, 1.1, 0.9)
    close(torch.cat([ours[labels], ours[~labels]]), trl)


def test_apo_zero_unpaired_on_both_halves_of_a_pair_is_paired_apo_zero():
    """APO-zero's two terms need no pairing: the chosen as desirable plus the rejected as
    undesirable gives apo_zero's loss on the pair."""
    x = random_pairs(seed=3)
    rw = x.policy_chosen_logps - x.reference_chosen_logps
    rl = x.policy_rejected_logps - x.reference_rejected_logps
    both = unpaired(torch.cat([rw, rl]).tolist(), [True] * 6 + [False] * 6)
    halves = get_loss("apo_zero_unpaired")(both, beta=0.1).losses
    close(halves[:6] + halves[6:], get_loss("apo_zero")(x, beta=0.1).losses)


def test_apo_golden():
    """β = 1, r_w = ln 3, r_l = −ln 3: σ(ln 3) = ¾, σ(−ln 3) = ¼, σ(2 ln 3) = 9/10.
    zero: (1 − ¾) + ¼ = 0.5.   down: ¾ + (1 − 9/10) = 0.85.
    At r_w = r_l = 0: zero = ½ + ½ = 1, down = ½ + ½ = 1."""
    inputs = pair(math.log(3), -math.log(3))
    close(loss("apo_zero", inputs, beta=1.0), 0.5)
    close(loss("apo_down", inputs, beta=1.0), 0.85)
    close(loss("apo_zero", pair(0.0, 0.0), beta=1.0), 1.0)
    close(loss("apo_down", pair(0.0, 0.0), beta=1.0), 1.0)
