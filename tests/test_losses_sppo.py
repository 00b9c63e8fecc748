"""SPPO-hard (harness/losses/sppo.py): the authors' halving as the default, TRL's sum as a choice."""

from __future__ import annotations

import torch

from harness.losses import get_loss
from tests.golden import close, pair, random_pairs


def authors_sppo_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps,
                      beta, chosen_probs_win, chosen_probs_lose):
    """A transcription of uclaml/SPPO sppo/trainer.py, sppo_loss, lines 860–861 and 876–879
    (loss_type "sppo")."""
    logits_w = policy_chosen_logps - reference_chosen_logps
    logits_l = policy_rejected_logps - reference_rejected_logps
    loss_w = (logits_w - (1 / beta) * (chosen_probs_win - 0.5)) ** 2
    loss_l = (logits_l - (1 / beta) * (chosen_probs_lose - 0.5)) ** 2
    return (loss_w + loss_l) / 2


def test_sppo_hard_golden():
    """β = 0.5 → targets ±1/(2β) = ±1. r_w = 3, r_l = 1: (3 − 1)² + (1 + 1)² = 8, halved 4 (the
    default, as the authors' code); halve=False gives TRL's 8. At r_w = 1, r_l = −1 both are 0."""
    close(get_loss("sppo_hard")(pair(3.0, 1.0), beta=0.5).losses, 4.0)
    close(get_loss("sppo_hard")(pair(3.0, 1.0), beta=0.5, halve=False).losses, 8.0)
    close(get_loss("sppo_hard")(pair(1.0, -1.0), beta=0.5).losses, 0.0)
    assert get_loss("sppo_hard").version == "2"


def test_sppo_hard_matches_the_authors_code_with_hard_win_probabilities():
    """With P(y_w wins) = 1 and P(y_l wins) = 0, their loss is ours with halve=True."""
    x = random_pairs(seed=1)
    for beta in (1e-3, 0.1, 1.0):
        expected = authors_sppo_loss(x.policy_chosen_logps, x.policy_rejected_logps, x.reference_chosen_logps,
                                     x.reference_rejected_logps, beta, torch.ones(6), torch.zeros(6))
        close(get_loss("sppo_hard")(x, beta=beta).losses, expected)
