"""What the device can do and what a run used of it: peak memory, and MFU where the peak is known."""

from __future__ import annotations

import contextlib
import math
import resource
import sys

import torch

# Dense bf16 peak FLOP/s from the vendors' datasheets (no sparsity).
PEAK_BF16_FLOPS = {
    "H100": 989.4e12,
    "H200": 989.4e12,
    "A100": 312e12,
    "L40S": 362.05e12,
    "A10G": 125e12,
}


def autocast(device: torch.device, precision: str = "auto"):
    """The precision of every training-time model pass (train.precision): bf16 autocast under
    bf16-mixed (auto on CUDA); none under fp32 (auto on CPU, where bf16 matmuls are far slower)
    nor under pure bf16, whose weights are bf16 already. (Called through the module, so a
    benchmark can replace it.)"""
    from harness.memory import resolved_precision

    if resolved_precision(precision, device.type) == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def peak_flops(device: torch.device) -> float:
    """The device's peak bf16 FLOP/s, or NaN when unknown (every CPU)."""
    if device.type != "cuda":
        return math.nan
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), math.nan)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: peak allocated by torch since the last reset. CPU: the process's peak RSS so far."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def mfu(flops: float, seconds: float, device: torch.device) -> float:
    peak = peak_flops(device)
    return flops / seconds / peak if seconds > 0 and not math.isnan(peak) else math.nan
