"""Turning one micro-batch into the LossInputs its loss declared it needs.

Each need has one provider; the trainer (and evaluation's held-out implicit-reward check) calls
the providers of the needs the loss declares and never looks at the loss's name. This module sits
below train/ and evaluate/, which both use it. A need that the data cannot provide is reported before training
starts (`unmet_needs`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from harness.data.batches import Batch, TrainData
from harness.logprobs import CompletionStats, sequence_logps
from harness.losses import LossInputs

# Needs that require the reference model to run on the batch (token-level quantities, or
# sequences that only exist in the batch): they cannot come from the sequence-sum cache.
LIVE_REFERENCE_NEEDS = frozenset({"token_logps", "vocab_kl", "kl_pairs"})


@dataclass
class StepContext:
    """What providers read for one micro-batch of B examples."""

    batch: Batch
    shape: str  # "paired" or "unpaired"
    stats: CompletionStats  # over the batch's trained block(s): (groups·B, T) or (B, T) for KL batches
    kl_stats: CompletionStats | None = None  # KTO's mismatched block, computed without grad
    cached_reference: Tensor | None = None  # (n_examples, groups) summed reference log-probs
    state: Mapping[str, Tensor] = field(default_factory=dict)

    def sums(self, token_logps: Tensor, group: int) -> Tensor:
        mask = self.batch.block(self.batch.completion_mask, group)
        return sequence_logps(self.batch.block(token_logps, group), mask)[0]

    def lengths(self, group: int) -> Tensor:
        return self.batch.block(self.batch.completion_mask, group).sum(-1).float().clamp(min=1)

    def reference_sums(self, group: int) -> Tensor:
        """Summed reference log-probs of block `group`: from the live pass, else from the cache."""
        if self.stats.reference_token_logps is not None:
            return self.sums(self.stats.reference_token_logps, group)
        device = self.stats.policy_token_logps.device
        return self.cached_reference[torch.tensor(self.batch.indices), group].to(device)


def _paired(ctx: StepContext) -> dict[str, Tensor]:
    logps = ctx.stats.policy_token_logps
    return {
        "policy_chosen_logps": ctx.sums(logps, 0), "policy_rejected_logps": ctx.sums(logps, 1),
        "chosen_lengths": ctx.lengths(0), "rejected_lengths": ctx.lengths(1),
    }


def _unpaired(ctx: StepContext) -> dict[str, Tensor]:
    return {
        "policy_logps": ctx.sums(ctx.stats.policy_token_logps, 0), "lengths": ctx.lengths(0),
        "labels": ctx.batch.extras["labels"],
    }


def _reference(ctx: StepContext) -> dict[str, Tensor]:
    if ctx.shape == "paired":
        return {"reference_chosen_logps": ctx.reference_sums(0), "reference_rejected_logps": ctx.reference_sums(1)}
    return {"reference_logps": ctx.reference_sums(0)}


def _kl_pairs(ctx: StepContext) -> dict[str, Tensor]:
    block = lambda t: ctx.batch.block(t, 1)  # noqa: E731
    mask = block(ctx.batch.completion_mask)
    return {
        "policy_kl_logps": sequence_logps(ctx.kl_stats.policy_token_logps, mask)[0],
        "reference_kl_logps": sequence_logps(ctx.kl_stats.reference_token_logps, mask)[0],
    }


def _token_logps(ctx: StepContext) -> dict[str, Tensor]:
    b = ctx.batch
    out = {
        "policy_chosen_token_logps": b.block(ctx.stats.policy_token_logps, 0),
        "policy_rejected_token_logps": b.block(ctx.stats.policy_token_logps, 1),
        "chosen_mask": b.block(b.completion_mask, 0), "rejected_mask": b.block(b.completion_mask, 1),
    }
    if ctx.stats.reference_token_logps is not None:
        out["reference_chosen_token_logps"] = b.block(ctx.stats.reference_token_logps, 0)
        out["reference_rejected_token_logps"] = b.block(ctx.stats.reference_token_logps, 1)
    return out


def _vocab_kl(ctx: StepContext) -> dict[str, Tensor]:
    return {"chosen_vocab_kl": ctx.batch.block(ctx.stats.vocab_kl, 0),
            "rejected_vocab_kl": ctx.batch.block(ctx.stats.vocab_kl, 1)}


def _vocab_collision(ctx: StepContext) -> dict[str, Tensor]:
    return {"chosen_log_collision": ctx.batch.block(ctx.stats.log_collision, 0),
            "rejected_log_collision": ctx.batch.block(ctx.stats.log_collision, 1)}


def _extras(*names: str) -> Callable[[StepContext], dict[str, Tensor]]:
    return lambda ctx: {name: ctx.batch.extras[name] for name in names}


def _sft_target(ctx: StepContext) -> dict[str, Tensor]:
    """The SFT target is the chosen completion: SLiC-HF's usual choice when the pairs come
    without separate demonstrations."""
    return {"policy_sft_logps": ctx.sums(ctx.stats.policy_token_logps, 0), "sft_lengths": ctx.lengths(0)}


PROVIDERS: dict[str, Callable[[StepContext], dict[str, Tensor]]] = {
    "reference": _reference,
    "token_logps": _token_logps,
    "vocab_kl": _vocab_kl,
    "labels": lambda ctx: {},  # part of the unpaired base fields
    "kl_pairs": _kl_pairs,
    "scores": _extras("chosen_scores", "rejected_scores"),
    "segments": _extras("chosen_segment_mask", "rejected_segment_mask"),
    "sft_target": _sft_target,
    "vocab_collision": _vocab_collision,
}


def unmet_needs(needs: frozenset[str], data: TrainData) -> list[str]:
    """Needs that depend on data columns this dataset does not have."""
    data_dependent = {"labels", "kl_pairs", "scores", "segments"}
    return sorted((needs & data_dependent) - data.provides())


def reference_runs_live(needs: frozenset[str], reference_moves: bool) -> bool:
    """Whether the reference must run on every batch instead of being read from the cache."""
    return "reference" in needs and (reference_moves or bool(needs & LIVE_REFERENCE_NEEDS))


def loss_inputs_for(needs: frozenset[str], ctx: StepContext) -> LossInputs:
    """The base fields of the batch's shape plus, for each declared need, its provider's fields."""
    fields = _unpaired(ctx) if ctx.shape == "unpaired" else _paired(ctx)
    for need in sorted(needs):
        fields.update(PROVIDERS[need](ctx))
    return LossInputs(**fields, state=dict(ctx.state))
