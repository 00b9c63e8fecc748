"""Running batch statistics and seeded draws for losses that keep state across steps (β-DPO,
AlphaDPO, SamPO). The trainer carries the state (LossInputs.state in, LossOutput.state_updates
out) and checkpoints it with the run, so a resumed run continues with the same statistics and
the same random draws; the loss functions themselves stay pure."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

# The authors' momentum for both β-DPO's and AlphaDPO's running statistics (junkangwu/beta-DPO
# trainers.py update_and_sync_tensor_mean and junkangwu/alpha-DPO scripts/dpo_trainer.py
# update_and_sync_ref_mean_std: gamma=0.9), starting, as theirs, from 0.
MOMENTUM = 0.9
# Division guard for a running standard deviation that is still 0 (a first batch of one pair).
MIN_STD = 1e-6
# Offset of the seeds of the loss's own draws, so they do not coincide with a run seed's stream.
DRAW_SEED = 7_919


def state_value(state: Mapping[str, Tensor], key: str, like: Tensor) -> Tensor:
    """A 0-dim state entry on `like`'s device and dtype, 0 when absent (a fresh run)."""
    return torch.as_tensor(state.get(key, 0.0)).to(like).reshape(())


def batch_std(values: Tensor) -> Tensor:
    """Unbiased standard deviation as torch.std computes it, but 0 (not NaN) for one value."""
    return values.std() if values.numel() > 1 else values.new_zeros(())


def ema_mean_std(values: Tensor, state: Mapping[str, Tensor], prefix: str) -> tuple[Tensor, Tensor]:
    """The running mean and standard deviation after this batch (detached): each an exponential
    moving average, with MOMENTUM, of the batch mean and the batch std, as the authors' code does
    (an average of per-batch stds, not the std of all values seen)."""
    values = values.detach()
    mean = MOMENTUM * state_value(state, f"{prefix}_mean", values) + (1 - MOMENTUM) * values.mean()
    std = MOMENTUM * state_value(state, f"{prefix}_std", values) + (1 - MOMENTUM) * batch_std(values)
    return mean, std


def draw_generator(state: Mapping[str, Tensor]) -> tuple[torch.Generator, Tensor]:
    """A CPU generator seeded by how many draws the loss has made so far, and the new count:
    the same inputs and state give the same draws (the contract's determinism), and a resumed
    run makes the draws it would have made."""
    count = torch.as_tensor(state.get("draws", 0.0)).reshape(())
    generator = torch.Generator().manual_seed(DRAW_SEED + int(count.item()))
    return generator, count + 1
