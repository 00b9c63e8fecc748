"""Tokenized preference data and its batches: what training and evaluation both feed a model.

Two shapes, one batch layout. A batch holds `groups` blocks of B sequences stacked into one
(groups·B, T) tensor so the policy runs one forward pass per micro-batch (the reference DPO
code's concatenated forward):
- paired data: [chosen; rejected];
- unpaired data: [completions] or, when the loss needs KTO's mismatched pairs,
  [completions; prompt i with completion (i+1) mod B].
Per-example columns that some losses read (scores, labels, segment masks) travel as `extras`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from harness.data.tokenize import Encoded, encode_ids, pad_right


@dataclass
class Batch:
    """`indices` of B examples, their stacked sequences (groups·B, T) and per-example extras."""

    indices: list[int]
    groups: int
    input_ids: Tensor
    attention_mask: Tensor
    completion_mask: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.indices)

    def lengths(self) -> Tensor:
        """Token counts (prompt + completion, no padding) of every sequence: (groups·B,)."""
        return self.attention_mask.sum(-1)

    def block(self, tensor: Tensor, group: int) -> Tensor:
        """Rows of `tensor` (groups·B, ...) that belong to block `group`."""
        return tensor[group * self.size : (group + 1) * self.size]

    def to(self, device: torch.device) -> Batch:
        move = lambda t: t.to(device)  # noqa: E731
        return replace(self, input_ids=move(self.input_ids), attention_mask=move(self.attention_mask),
                       completion_mask=move(self.completion_mask),
                       extras={k: move(v) for k, v in self.extras.items()})


def _stack(rows: list[Encoded], pad_id: int) -> dict[str, Tensor]:
    return pad_right(rows, pad_id)


def _pad_masks(masks: list[list[bool]], width: int) -> Tensor:
    out = torch.zeros((len(masks), width), dtype=torch.bool)
    for i, mask in enumerate(masks):
        out[i, : len(mask)] = torch.tensor(mask, dtype=torch.bool)
    return out


@dataclass(frozen=True)
class PairedData:
    """Encoded preference pairs and their optional per-pair columns."""

    chosen: list[Encoded]
    rejected: list[Encoded]
    chosen_scores: list[float] | None = None
    rejected_scores: list[float] | None = None
    chosen_segments: list[list[bool]] | None = None  # per-token masks, aligned with input_ids
    rejected_segments: list[list[bool]] | None = None
    stages: list[int] | None = None
    truncated: int = 0  # sequences whose completion was cut to fit max_length

    shape = "paired"
    groups = 2

    def __len__(self) -> int:
        return len(self.chosen)

    def provides(self) -> set[str]:
        """Which optional needs this data can satisfy."""
        out = set()
        if self.chosen_scores is not None:
            out.add("scores")
        if self.chosen_segments is not None:
            out.add("segments")
        return out

    def subset(self, indices: list[int]) -> PairedData:
        pick = lambda column: None if column is None else [column[i] for i in indices]  # noqa: E731
        return PairedData(
            pick(self.chosen), pick(self.rejected), pick(self.chosen_scores), pick(self.rejected_scores),
            pick(self.chosen_segments), pick(self.rejected_segments), pick(self.stages), self.truncated,
        )

    def sequences(self) -> list[Encoded]:
        """Every sequence the data holds, in a fixed order (for fingerprints and costs)."""
        return self.chosen + self.rejected

    def collate(self, indices: list[int], pad_id: int, *, kl_pairs: bool = False) -> Batch:
        tensors = _stack([self.chosen[i] for i in indices] + [self.rejected[i] for i in indices], pad_id)
        batch = Batch(indices, 2, **tensors)
        width = tensors["input_ids"].shape[1]
        if self.chosen_scores is not None:
            batch.extras["chosen_scores"] = torch.tensor([self.chosen_scores[i] for i in indices])
            batch.extras["rejected_scores"] = torch.tensor([self.rejected_scores[i] for i in indices])
        if self.chosen_segments is not None:
            batch.extras["chosen_segment_mask"] = _pad_masks([self.chosen_segments[i] for i in indices], width)
            batch.extras["rejected_segment_mask"] = _pad_masks([self.rejected_segments[i] for i in indices], width)
        return batch


@dataclass(frozen=True)
class UnpairedData:
    """Prompts and completions with a desirable/undesirable label each (KTO's data)."""

    prompts: list[list[int]]
    completions: list[list[int]]
    labels: list[bool]
    truncated: int = 0

    shape = "unpaired"
    groups = 1

    def __len__(self) -> int:
        return len(self.prompts)

    def provides(self) -> set[str]:
        return {"labels", "kl_pairs"}

    def subset(self, indices: list[int]) -> UnpairedData:
        return UnpairedData([self.prompts[i] for i in indices], [self.completions[i] for i in indices],
                            [self.labels[i] for i in indices], self.truncated)

    def sequences(self) -> list[Encoded]:
        return [encode_ids(p, c) for p, c in zip(self.prompts, self.completions)]

    def collate(self, indices: list[int], pad_id: int, *, kl_pairs: bool = False) -> Batch:
        rows = [encode_ids(self.prompts[i], self.completions[i]) for i in indices]
        if kl_pairs:
            # prompt i with completion (i+1) mod B: KTO's estimate of KL(πθ‖π_ref) for z0
            shifted = indices[1:] + indices[:1]
            rows += [encode_ids(self.prompts[i], self.completions[j]) for i, j in zip(indices, shifted)]
        batch = Batch(indices, 2 if kl_pairs else 1, **_stack(rows, pad_id))
        batch.extras["labels"] = torch.tensor([self.labels[i] for i in indices], dtype=torch.bool)
        return batch


TrainData = PairedData | UnpairedData


def _column(rows: list[dict], *names: str) -> list | None:
    """The first of `names` that every row has, as a list; None if none is complete."""
    for name in names:
        if rows and all(name in r and r[name] is not None for r in rows):
            return [r[name] for r in rows]
    return None


def paired_from_rows(tokenizer, rows: list[dict], max_length: int) -> PairedData:
    """Tokenize standardized pair rows (prompt, chosen, rejected, optional score_* and stage)."""
    from harness.data.tokenize import encode_pair

    chosen = [encode_pair(tokenizer, r["prompt"], r["chosen"], max_length) for r in rows]
    rejected = [encode_pair(tokenizer, r["prompt"], r["rejected"], max_length) for r in rows]
    scores_chosen = _column(rows, "score_chosen", "chosen_reward")
    scores_rejected = _column(rows, "score_rejected", "rejected_reward")
    stages = _column(rows, "stage")
    return PairedData(
        chosen, rejected,
        [float(s) for s in scores_chosen] if scores_chosen and scores_rejected else None,
        [float(s) for s in scores_rejected] if scores_chosen and scores_rejected else None,
        stages=[int(s) for s in stages] if stages else None,
        truncated=sum(e.truncated for e in chosen + rejected),
    )


def sessions_from_rows(tokenizer, rows: list[dict], max_length: int) -> PairedData:
    """Multi-turn session pairs (prompt = shared history, chosen_turns / rejected_turns = the
    segments) with per-token masks over the segments' agent tokens."""
    from harness.data.tokenize import encode_turns

    chosen = [encode_turns(tokenizer, r["prompt"], r["chosen_turns"], max_length) for r in rows]
    rejected = [encode_turns(tokenizer, r["prompt"], r["rejected_turns"], max_length) for r in rows]
    return PairedData(
        [e for e, _ in chosen], [e for e, _ in rejected],
        chosen_segments=[m for _, m in chosen], rejected_segments=[m for _, m in rejected],
        truncated=sum(e.truncated for e, _ in chosen + rejected),
    )


def unpaired_from_rows(tokenizer, rows: list[dict], max_length: int) -> UnpairedData:
    """Tokenize (prompt, completion, label) rows; the completion is cut to fit max_length."""
    from harness.data.tokenize import encode_pair

    encoded = [encode_pair(tokenizer, r["prompt"], r["completion"], max_length) for r in rows]
    prompts = [e.input_ids[: e.completion_mask.index(True)] if True in e.completion_mask else e.input_ids
               for e in encoded]
    completions = [e.input_ids[len(p):] for e, p in zip(encoded, prompts)]
    return UnpairedData(prompts, completions, [bool(r["label"]) for r in rows],
                        truncated=sum(e.truncated for e in encoded))
