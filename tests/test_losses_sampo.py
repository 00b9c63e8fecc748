"""SamPO (harness/losses/sampo.py): down-sampling, golden values, and the authors' code."""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from harness.losses import LossInputs, get_loss
from harness.losses.running import DRAW_SEED
from tests.golden import close, nls, random_pairs, stacked_pair_inputs, t


def authors_sampo_logps(logits, labels, label_pad_token_id=-100):
    """A transcription of LuJunru/SamPO dpo_trainer.py, get_batch_logps with len_norm=True
    (lines 1014–1053, loss_type "sigmoid"): per pair, the longer side's positions down-sampled to
    the shorter side's count with torch.multinomial on the global generator."""
    labels = labels[:, 1:].clone()
    logits = logits[:, :-1, :]
    loss_mask = labels != label_pad_token_id
    labels[labels == label_pad_token_id] = 0
    batch_size, seq_len, vocab_size = logits.size()
    total_logps = torch.zeros(batch_size, device=logits.device, dtype=logits.dtype)
    for batch_idx in range(batch_size // 2):
        chosen_valid_indices = loss_mask[batch_idx].nonzero(as_tuple=True)[0]
        rejected_valid_indices = loss_mask[batch_idx + batch_size // 2].nonzero(as_tuple=True)[0]
        if chosen_valid_indices.size(0) < rejected_valid_indices.size(0):
            min_length = chosen_valid_indices.size(0)
            rejected_valid_indices = torch.multinomial(loss_mask[batch_idx + batch_size // 2].float(), min_length,
                                                       replacement=False)
        else:
            min_length = rejected_valid_indices.size(0)
            chosen_valid_indices = torch.multinomial(loss_mask[batch_idx].float(), min_length, replacement=False)
        chosen_valid_logits = logits[batch_idx, chosen_valid_indices]
        chosen_valid_labels = labels[batch_idx, chosen_valid_indices]
        rejected_valid_logits = logits[batch_idx + batch_size // 2, rejected_valid_indices]
        rejected_valid_labels = labels[batch_idx + batch_size // 2, rejected_valid_indices]
        chosen_per_token_logps = torch.gather(chosen_valid_logits.log_softmax(-1), dim=1,
                                              index=chosen_valid_labels.unsqueeze(1)).squeeze(1)
        rejected_per_token_logps = torch.gather(rejected_valid_logits.log_softmax(-1), dim=1,
                                                index=rejected_valid_labels.unsqueeze(1)).squeeze(1)
        total_logps[batch_idx] += chosen_per_token_logps.sum()
        total_logps[batch_idx + batch_size // 2] += rejected_per_token_logps.sum()
    return total_logps


def test_sampo_equals_dpo_on_equal_lengths():
    """Equal lengths: the drawn "subset" is every position, so SamPO is DPO."""
    x = random_pairs(seed=1, equal_lengths=4)
    close(get_loss("sampo")(x).losses, get_loss("dpo")(x).losses)


def test_sampo_golden_one_pair():
    """Chosen: one token with log-ratio 1; rejected: two tokens with log-ratios −1 and −3 (DPO's sum
    −4). One of the two rejected tokens is kept: h = 1 − (−1) = 2 or 1 − (−3) = 4; with β = 1 the
    loss is −log σ(2) = 0.1269280 or −log σ(4) = 0.0181499, never DPO's −log σ(5)."""
    mask_c, mask_r = torch.tensor([[True, False]]), torch.tensor([[True, True]])
    x = LossInputs(
        policy_chosen_token_logps=t(1.0, 0.0).unsqueeze(0), reference_chosen_token_logps=t(0.0, 0.0).unsqueeze(0),
        policy_rejected_token_logps=t(-1.0, -3.0).unsqueeze(0), reference_rejected_token_logps=t(0.0, 0.0).unsqueeze(0),
        chosen_mask=mask_c, rejected_mask=mask_r,
        policy_chosen_logps=t(1.0), policy_rejected_logps=t(-4.0), reference_chosen_logps=t(0.0),
        reference_rejected_logps=t(0.0), chosen_lengths=t(1.0), rejected_lengths=t(2.0),
    )
    seen = set()
    for draws in range(12):
        out = get_loss("sampo")(dataclasses.replace(x, state={"draws": torch.tensor(float(draws))}), beta=1.0)
        value = float(out.losses)
        assert math.isclose(value, nls(2.0), rel_tol=1e-9) or math.isclose(value, nls(4.0), rel_tol=1e-9)
        seen.add(round(value, 6))
        assert float(out.state_updates["draws"]) == draws + 1
    assert len(seen) == 2, "the draws never varied"


def test_sampo_matches_the_authors_code():
    """Their policy and reference sums, each drawn from the global generator seeded as ours (the
    same positions for both, as the paper's token-level ratio; their code draws the reference's
    separately), then DPO; against ours from the same logits."""
    g = torch.Generator().manual_seed(3)
    pairs, seq, vocab = 4, 8, 6
    ids = torch.randint(0, vocab, (2 * pairs, seq), generator=g)
    lengths = torch.randint(1, seq - 1, (2 * pairs,), generator=g)
    completion = (torch.arange(seq) >= 1) & (torch.arange(seq) <= lengths.unsqueeze(1))
    labels = ids.masked_fill(~completion, -100)
    policy_logits = torch.randn(2 * pairs, seq, vocab, generator=g, dtype=torch.float64)
    reference_logits = torch.randn(2 * pairs, seq, vocab, generator=g, dtype=torch.float64)
    sums = {}
    for name, logits in (("policy", policy_logits), ("reference", reference_logits)):
        torch.manual_seed(DRAW_SEED)
        sums[name] = authors_sampo_logps(logits, labels)
    h = (sums["policy"][:pairs] - sums["reference"][:pairs]) - (sums["policy"][pairs:] - sums["reference"][pairs:])
    expected = -F.logsigmoid(0.1 * h)

    def token_logps(logits):  # (2B, S − 1): position t predicts token t + 1, 0 outside the completion
        shifted = logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        return shifted * completion[:, 1:]

    mask = completion[:, 1:]
    policy, reference = token_logps(policy_logits), token_logps(reference_logits)
    x = stacked_pair_inputs(policy, reference, mask)
    close(get_loss("sampo")(x).losses, expected, tol=1e-9)
