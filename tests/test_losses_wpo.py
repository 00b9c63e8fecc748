"""WPO (harness/losses/wpo.py): the authors' aligned, clamped weight by default; the paper's
unaligned first form and TRL's unclamped weight as choices."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from harness.logprobs import completion_stats
from harness.losses import LossInputs, get_loss
from tests.golden import LN2, close, random_pairs, stacked_pair_inputs, t

HALF, QUARTER = math.log(0.5), math.log(0.25)


def one_pair(chosen_collision=(0.0, 0.0), rejected_collision=(0.0, 0.0)) -> LossInputs:
    """Chosen tokens [ln ½, ln ½], rejected [ln ¼] (one token); policy = reference, so h = 0 and
    the DPO term is ln 2 at any β."""
    return LossInputs(
        policy_chosen_token_logps=t(HALF, HALF).unsqueeze(0),
        policy_rejected_token_logps=t(QUARTER, 0.0).unsqueeze(0),
        chosen_mask=torch.tensor([[True, True]]), rejected_mask=torch.tensor([[True, False]]),
        chosen_log_collision=t(*chosen_collision).unsqueeze(0),
        rejected_log_collision=t(*rejected_collision).unsqueeze(0),
        policy_chosen_logps=t(2 * HALF), reference_chosen_logps=t(2 * HALF),
        policy_rejected_logps=t(QUARTER), reference_rejected_logps=t(QUARTER),
        chosen_lengths=t(2.0), rejected_lengths=t(1.0),
    )


def test_wpo_unaligned_golden():
    """weighting="unaligned": w_w = exp(mean(ln ½, ln ½)) = ½, w_l = exp(ln ¼) = ¼, pair weight ⅛;
    loss ln 2 / 8 = 0.0866434."""
    out = get_loss("wpo")(one_pair(), beta=1.0, weighting="unaligned")
    close(out.losses, LN2 / 8)
    close(out.metrics["wpo_weight"], 0.125)


def test_wpo_aligned_golden_and_the_clamp():
    """Aligned: subtract log Σ_v p² per position. Chosen collisions [ln ½, ln ¼] → aligned tokens
    [0, ln 2], mean ½ ln 2 → w_w = √2; rejected collision [ln ¼] → [0] → w_l = 1. Pair weight √2,
    clamped at 1 (the authors'): loss ln 2; clamp_weight=False (TRL's): √2 ln 2 = 0.9802581."""
    inputs = one_pair(chosen_collision=(HALF, QUARTER), rejected_collision=(QUARTER, 0.0))
    clamped = get_loss("wpo")(inputs, beta=1.0)
    close(clamped.losses, LN2)
    close(clamped.metrics["wpo_weight"], 1.0)
    close(get_loss("wpo")(inputs, beta=1.0, clamp_weight=False).losses, math.sqrt(2) * LN2)
    assert get_loss("wpo").version == "2"


def authors_wpo_weight(logits: torch.Tensor, labels: torch.Tensor, label_pad_token_id: int = -100) -> torch.Tensor:
    """A transcription of wzhouad/WPO scripts/run_wpo.py, WPOTrainer.get_batch_logps, lines 63–84:
    the pair weights (B,) of a [chosen; rejected] batch of logits (2B, S, V) and labels (2B, S)."""
    labels = labels[:, 1:].clone()
    logits = logits[:, :-1, :]
    loss_mask = labels != label_pad_token_id
    labels[labels == label_pad_token_id] = 0
    logprobs = F.log_softmax(logits, dim=-1)
    per_token_logps = torch.gather(logprobs, dim=2, index=labels.unsqueeze(2)).squeeze(2)
    probs = F.softmax(logits, dim=-1)
    exp_probs = torch.log((probs ** 2).sum(-1))
    per_token_logps = per_token_logps - exp_probs
    avg_log_probs = (per_token_logps * loss_mask).sum(-1) / loss_mask.sum(-1)
    chosen_probs = avg_log_probs[:avg_log_probs.size(0) // 2]
    rejected_probs = avg_log_probs[avg_log_probs.size(0) // 2:]
    weight = torch.clamp(torch.exp(chosen_probs + rejected_probs), max=1)
    return weight.detach()


class LogitsModel(torch.nn.Module):
    """A stand-in causal LM that returns fixed logits (its only parameter)."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.weight = torch.nn.Parameter(logits.clone())

    def forward(self, input_ids, attention_mask=None, **kwargs):
        return type("Out", (), {"logits": self.weight})()


@pytest.mark.parametrize("seed,greedy", [(0, True), (1, False), (2, False)])
def test_wpo_weights_match_the_authors_code(seed, greedy):
    """The weight our trainer's quantities give (token log-probs and log Σ_v p² from
    harness.logprobs, then wpo) equals the authors' transcription on the same logits. With greedy
    completions (each token the most likely one) every aligned token log-prob is ≥ 0, so weights
    exceed 1 and the clamp is exercised; random tokens give weights far below 1."""
    g = torch.Generator().manual_seed(seed)
    pairs, seq, vocab = 3, 7, 5
    logits = 4.0 * torch.randn(2 * pairs, seq, vocab, generator=g)
    ids = torch.randint(0, vocab, (2 * pairs, seq), generator=g)
    if greedy:
        ids[:, 1:] = logits[:, :-1].argmax(-1)
    lengths = torch.randint(1, seq - 1, (2 * pairs,), generator=g)
    completion = (torch.arange(seq) >= 1) & (torch.arange(seq) <= lengths.unsqueeze(1))  # prompt: token 0
    labels = ids.masked_fill(~completion, -100)
    expected = authors_wpo_weight(logits, labels)

    stats = completion_stats(LogitsModel(logits), ids, torch.ones_like(ids), completion, collision=True,
                             packing=False)
    token_logps, collision = stats.policy_token_logps.double(), stats.log_collision.double()
    # the reference equals the policy: only the weights matter here
    inputs = stacked_pair_inputs(token_logps, token_logps, completion, chosen_log_collision=collision)
    weights = get_loss("wpo")(inputs).metrics["wpo_weight"]
    torch.testing.assert_close(weights, expected.double(), rtol=1e-5, atol=1e-6)
    unclamped = get_loss("wpo")(inputs, clamp_weight=False).metrics["wpo_weight"]
    assert bool((unclamped > 1).all()) == greedy


def test_wpo_with_unit_weights_is_dpo():
    """Every token log-prob 0 and every log Σ_v p² 0 (a deterministic policy): weights 1, DPO."""
    x = random_pairs(seed=6)
    zeros = {name: torch.zeros_like(getattr(x, f"policy_{side}_token_logps"))
             for side in ("chosen", "rejected") for name in (f"policy_{side}_token_logps", f"{side}_log_collision")}
    close(get_loss("wpo")(dataclasses.replace(x, **zeros), beta=0.1).losses, get_loss("dpo")(x, beta=0.1).losses)


def test_wpo_weights_carry_no_gradient_and_need_their_inputs():
    x = random_pairs(seed=6)
    x = dataclasses.replace(x, chosen_log_collision=torch.zeros_like(x.chosen_mask, dtype=torch.float64),
                            rejected_log_collision=torch.zeros_like(x.rejected_mask, dtype=torch.float64))
    x.policy_chosen_token_logps.requires_grad_(True)
    x.policy_chosen_logps.requires_grad_(True)
    get_loss("wpo")(x).losses.sum().backward()
    assert x.policy_chosen_token_logps.grad is None and x.policy_chosen_logps.grad is not None
    with pytest.raises(ValueError, match="vocab_collision"):
        get_loss("wpo")(dataclasses.replace(x, chosen_log_collision=None))
