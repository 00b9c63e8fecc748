"""Data parallelism through accelerate, when the process was started by `accelerate launch` or
`torchrun` with more than one process (or with FSDP asked for); a no-op otherwise.

Every process computes the same global batch (the same seeded permutation), trains on its shard
of it, and DDP (or FSDP, as `accelerate config` chose) averages the gradients, so the update is
the full batch's. Budget accounting is computed from the global batch, identically everywhere.
Only the main process evaluates and writes results; the others wait at a barrier.
"""

from __future__ import annotations

import os
from functools import lru_cache

import torch


def launched_distributed() -> bool:
    """Started by a launcher (torchrun, accelerate launch) with more than one process, or with
    FSDP asked for (ACCELERATE_USE_FSDP): FSDP on one process is a real configuration too
    (sharded state and offloading on one GPU), and the only way to run the FSDP path on one GPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return True
    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true")
    return fsdp and "LOCAL_RANK" in os.environ


@lru_cache(maxsize=1)
def accelerator():
    """The process's Accelerator (it initializes the process group from the launcher's env)."""
    from accelerate import Accelerator

    return Accelerator(cpu=not torch.cuda.is_available())


def rank_and_size() -> tuple[int, int]:
    if not launched_distributed():
        return 0, 1
    acc = accelerator()
    return acc.process_index, acc.num_processes


def is_main() -> bool:
    return rank_and_size()[0] == 0


def barrier() -> None:
    if launched_distributed():
        accelerator().wait_for_everyone()


def broadcast(value):
    """The main process's `value`, on every process."""
    if not launched_distributed():
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def wrap_for_training(model: torch.nn.Module) -> torch.nn.Module:
    """The model wrapped for data parallelism (DDP/FSDP), or itself in a single process."""
    if not launched_distributed():
        return model
    return accelerator().prepare_model(model)


def shard(indices: list[int]) -> list[int]:
    """This process's share of a global batch (batch sizes must divide by the process count)."""
    rank, size = rank_and_size()
    if len(indices) % size:
        raise ValueError(f"a batch of {len(indices)} does not split over {size} processes")
    return indices[rank::size]


def all_finite(value: torch.Tensor) -> bool:
    """Whether `value` is finite on every process (so that all stop together on a NaN)."""
    finite = torch.isfinite(value.detach()).all().float().reshape(1)
    if launched_distributed():
        torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
    return bool(finite.item())
