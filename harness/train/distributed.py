"""Data parallelism and sharding inside one run, when the process was started by `torchrun`
(or `accelerate launch`) with more than one process (or with FSDP asked for); a no-op otherwise.

Every process computes the same global batch (the same seeded permutation) and its micro-batches,
trains on its share of them, and the gradients are averaged, so the update is the full batch's:
DDP through accelerate by default; under `train.distributed: {strategy: fsdp}` torch's FSDP2
(`fully_shard`), which also shards the weights, gradients and AdamW moments over the processes.
Budget accounting is computed from the global batch, identically everywhere. Only the main
process evaluates and writes results; the others wait at a barrier.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from functools import lru_cache

import torch

from harness.suite import micro_batch_count


def launched_distributed() -> bool:
    """Started by a launcher (torchrun, accelerate launch) with more than one process, or with
    FSDP asked for (ACCELERATE_USE_FSDP): FSDP on one process is a real configuration too
    (sharded state and offloading on one GPU), and the only way to run the FSDP path on one GPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return True
    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true")
    return fsdp and "LOCAL_RANK" in os.environ


def launch(processes: int, module_args: list[str]) -> int:
    """Run `-m MODULE ARGS` (module_args) in `processes` processes started by torchrun on this
    node (--standalone: a free rendezvous port, so several launches share a node); its exit status
    (0 when every process ended well). The harness launches a run's own processes this way, from
    `harness run` or inside an executor's task."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               *module_args]
    return subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}).returncode


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


def wrap_for_training(model: torch.nn.Module, strategy: str = "none") -> torch.nn.Module:
    """What trains: `model` itself in a single process; under a multi-process launch its FSDP2
    copy (strategy "fsdp", see `fsdp_copy`) or its DDP/FSDP wrapper from accelerate."""
    if not launched_distributed():
        return model
    if strategy == "fsdp":
        return fsdp_copy(model)
    return accelerator().prepare_model(model)


def local_micro_batches(indices: list[int], grad_accumulation: int) -> list[list[int]]:
    """This process's micro-batches of a global batch: the batch is cut into
    harness.suite.micro_batch_count pieces (the single process's micro-batches when the process
    count divides grad_accumulation) and dealt round-robin."""
    from harness.train.data import micro_batches

    rank, size = rank_and_size()
    parts = micro_batch_count(grad_accumulation, size)
    if len(indices) % parts:
        raise ValueError(f"a batch of {len(indices)} does not split into {parts} micro-batches over {size} processes")
    return micro_batches(indices, parts)[rank::size]


def shard(items: list) -> list:
    """This process's share of `items` (every size-th, from its rank)."""
    rank, size = rank_and_size()
    return items[rank::size]


def gathered(local: list) -> list:
    """Every process's `local` (from `shard`), put back in the order `shard` dealt them from."""
    if not launched_distributed():
        return local
    parts: list = [None] * rank_and_size()[1]
    torch.distributed.all_gather_object(parts, local)
    out = []
    for i in range(max(len(p) for p in parts)):
        out.extend(p[i] for p in parts if i < len(p))
    return out


def averaged(values: dict[str, float]) -> dict[str, float]:
    """Each value's mean over the processes (each one's over its equal share of the batch's
    micro-batches): the whole batch's metrics, as one process computes them."""
    if not launched_distributed():
        return values
    names = sorted(values)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # NCCL reduces GPU tensors (accelerate set this one's)
    tensor = torch.tensor([values[n] for n in names], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(tensor)
    return {n: float(v) / rank_and_size()[1] for n, v in zip(names, tensor.tolist())}


# ---------------------------------------------------------------------------- FSDP2 (fully_shard)


def fsdp_copy(policy: torch.nn.Module) -> torch.nn.Module:
    """A copy of `policy` sharded with torch's FSDP2: each decoder layer (the classes transformers
    names in `_no_split_modules`) is one unit, the rest (embeddings, final norm, head) another. The copy is
    built on the meta device and filled with this process's shard, so no second full copy is ever
    allocated; the policy's own parameters are emptied while the copy trains (their storage is
    the memory FSDP saves) and filled again by `write_back`. The policy object itself is never
    sharded, so evaluation, generation and regimes keep reading an ordinary module."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    from torch.distributed.fsdp import fully_shard

    accelerator()  # the process group, from the launcher's env
    device = next(policy.parameters()).device
    meta = {id(p): torch.nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
            for p in policy.parameters()}
    sharded = copy.deepcopy(policy, meta)  # shares nothing with the policy; tied weights stay tied
    layers = set(getattr(policy, "_no_split_modules", None) or ())
    for module in sharded.modules():
        if type(module).__name__ in layers:
            fully_shard(module)
    # harness.logprobs runs the body (base_model) and the LM head apart, never the whole model's
    # forward (it gathers the head's rows at completion positions only): they are one unit, so
    # that either one's forward gathers the embeddings, final norm and head (tied or not).
    body, head = getattr(sharded, "base_model", None), sharded.get_output_embeddings()
    if body is not None and body is not sharded and head is not None:
        fully_shard([body, head])
    fully_shard(sharded)
    sharded.to_empty(device=device)
    for (_, mine), (_, theirs) in zip(sharded.named_buffers(), policy.named_buffers()):
        mine.copy_(theirs)  # to_empty left them unset (RoPE's inverse frequencies are not in state_dict)
    set_model_state_dict(sharded, policy.state_dict(), options=StateDictOptions(full_state_dict=True))
    for param in policy.parameters():
        param.data = torch.empty(0, dtype=param.dtype, device=device)
    with torch.no_grad():  # FSDP sets its root up on the root's first forward; logprobs then calls units alone
        sharded(input_ids=torch.zeros((1, 1), dtype=torch.long, device=device))
    return sharded


def is_fsdp(module: torch.nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def write_back(trained: torch.nn.Module, policy: torch.nn.Module) -> None:
    """The trained weights into `policy` on every process (collective; one parameter gathered at a
    time), when `trained` is its FSDP copy; nothing otherwise (DDP trains the policy in place)."""
    if not is_fsdp(trained):
        return
    mine = dict(policy.named_parameters())
    with torch.no_grad():
        for name, param in trained.named_parameters():
            mine[name].data = param.full_tensor().detach().clone()


def full_weights(trained: torch.nn.Module, policy: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The policy's whole weights, what a checkpoint saves: gathered from `trained`, its FSDP copy,
    to the main process on CPU (collective; empty on the other processes), or the policy's own
    (which a DDP wrapper trains in place; its own names lack the wrapper's `module.`)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    if not is_fsdp(trained):
        return policy.state_dict()
    return get_model_state_dict(trained, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def optimizer_state(trained: torch.nn.Module, optimizer) -> dict:
    """The optimizer's state as a checkpoint saves it: whole (by parameter name, on the main
    process; collective) under FSDP, where each process holds a shard of it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    if not is_fsdp(trained):
        return optimizer.state_dict()
    return get_optimizer_state_dict(trained, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_optimizer_state(trained: torch.nn.Module, optimizer, state: dict) -> None:
    """`optimizer_state`'s output back into the optimizer (each process keeps its shard)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    if not is_fsdp(trained):
        optimizer.load_state_dict(state)
        return
    set_optimizer_state_dict(trained, optimizer, state, options=StateDictOptions(full_state_dict=True))


def all_finite(value: torch.Tensor) -> bool:
    """Whether `value` is finite on every process (so that all stop together on a NaN)."""
    finite = torch.isfinite(value.detach()).all().float().reshape(1)
    if launched_distributed():
        torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
    return bool(finite.item())
