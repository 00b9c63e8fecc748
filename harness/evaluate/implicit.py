"""Preference accuracy of a method's implicit reward on held-out pairs.

A method's loss reports per-pair `reward_accuracies` (chosen reward above rejected reward, from
its own implicit reward: β·log-ratio for DPO, β·mean log-prob for SimPO, ...). Evaluating the
trained policy's loss on held-out pairs, without gradients, gives that accuracy out of sample.
The reference is the starting model, also for regimes that moved it during training.
"""

from __future__ import annotations

import numpy as np
import torch

from harness.data.batches import PairedData
from harness.losses import LossSpec
from harness.needs import StepContext, loss_inputs_for

# Needs that held-out pairs can satisfy (no labels, mismatched pairs or segment masks).
EVALUABLE_NEEDS = frozenset({"reference", "token_logps", "vocab_kl", "scores", "sft_target", "vocab_collision"})


def defines_implicit_reward(loss: LossSpec) -> bool:
    return loss.data == "paired" and loss.needs <= EVALUABLE_NEEDS


@torch.no_grad()
def implicit_reward_accuracies(policy, reference, loss: LossSpec, hparams: dict, pairs: PairedData,
                               pad_id: int, batch_size: int = 32) -> np.ndarray | None:
    """Per-pair accuracy (1, 0, or 0.5 for a tie) of the loss's implicit reward; None if the loss
    reports no per-pair reward_accuracies."""
    from harness.logprobs import completion_stats

    device = next(policy.parameters()).device
    out = []
    for start in range(0, len(pairs), batch_size):
        indices = list(range(start, min(start + batch_size, len(pairs))))
        batch = pairs.collate(indices, pad_id).to(device)
        stats = completion_stats(
            policy, batch.input_ids, batch.attention_mask, batch.completion_mask,
            reference=reference if loss.uses_reference else None, vocab_kl="vocab_kl" in loss.needs,
            collision="vocab_collision" in loss.needs,
        )
        ctx = StepContext(batch, "paired", stats)
        result = loss.fn(loss_inputs_for(loss.needs, ctx), **hparams)
        metrics = result.metrics
        if "chosen_rewards" not in metrics or metrics["chosen_rewards"].shape != (len(indices),):
            return None
        chosen, rejected = metrics["chosen_rewards"], metrics["rejected_rewards"]
        out.append(torch.where(chosen == rejected, 0.5, (chosen > rejected).float()).cpu().numpy())
    return np.concatenate(out)
