"""Which examples the loop draws: endless seeded epochs of full batches, and their split into
micro-batches for gradient accumulation. The data and batch types are harness.data.batches."""

from __future__ import annotations

from collections.abc import Iterator

import torch


def epoch_batches(n_examples: int, batch_size: int, seed: int, *, skip: int = 0) -> Iterator[list[int]]:
    """Endless batches of example indices: each epoch a fresh permutation seeded by (seed, epoch);
    full batches only, so every step sees the same number of examples. `skip` batches are
    passed over without being yielded (resuming from a checkpoint)."""
    if n_examples < batch_size:
        raise ValueError(f"{n_examples} examples cannot fill a batch of {batch_size}")
    per_epoch = n_examples // batch_size
    epoch, offset = divmod(skip, per_epoch)
    while True:
        generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(n_examples, generator=generator).tolist()
        for b in range(offset, per_epoch):
            yield order[b * batch_size : (b + 1) * batch_size]
        epoch, offset = epoch + 1, 0


def micro_batches(indices: list[int], parts: int) -> list[list[int]]:
    """Split a batch for gradient accumulation into `parts` equal micro-batches."""
    size = len(indices) // parts
    return [indices[i * size : (i + 1) * size] for i in range(parts)]
