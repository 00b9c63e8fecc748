"""Ordering preference pairs from easy to hard for staged training (sDPO, Kim et al. 2024).

A pair is easy for a model when the model already prefers its chosen response by a wide margin:
`margin = log π(chosen | prompt) − log π(rejected | prompt)` (summed completion log-probs, from
`harness.logprobs`). `assign_stages` sorts pairs by that margin, descending, and cuts them into
`stages` chunks of near-equal size: stage 0 holds the easiest pairs. The sandbox computes the
margins with its SFT model (the starting model); the same functions serve any dataset and model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from harness.data.tokenize import encode_pair, pad_right
from harness.logprobs import completion_token_logps, sequence_logps


def assign_stages(margins: Sequence[float], stages: int) -> list[int]:
    """Stage of each pair (0 = largest margin = easiest), chunks as equal as possible; ties
    keep the pairs' original order, so the result is deterministic."""
    if stages < 1:
        raise ValueError(f"stages must be at least 1, got {stages}")
    order = sorted(range(len(margins)), key=lambda i: (-margins[i], i))
    out = [0] * len(margins)
    for rank, i in enumerate(order):
        out[i] = rank * stages // max(len(margins), 1)
    return out


@torch.no_grad()
def implicit_margins(model, tokenizer, rows: Sequence[dict], max_length: int, batch_size: int = 64) -> list[float]:
    """log π(chosen) − log π(rejected) under `model` for each (prompt, chosen, rejected) row."""
    model.eval()
    sums: list[float] = []
    sequences = [encode_pair(tokenizer, r["prompt"], r[side], max_length)
                 for r in rows for side in ("chosen", "rejected")]
    device = next(model.parameters()).device
    for start in range(0, len(sequences), batch_size):
        batch = pad_right(sequences[start : start + batch_size], tokenizer.pad_token_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        tokens = completion_token_logps(model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
        logps, _ = sequence_logps(tokens, batch["completion_mask"])
        sums += logps.tolist()
    return [sums[2 * i] - sums[2 * i + 1] for i in range(len(rows))]
