"""Packed rows (harness.data.packing) through FlexAttention, with a block-sparse mask.

Why. A dense (R, 1, C, C) mask costs more than packing saves on CUDA: SDPA never picks its
FlashAttention kernel when a mask is given, transformers then repeats grouped K/V for every query
head, and the memory-efficient kernel pads the mask. FlexAttention instead takes the mask as a
`mask_mod` (a function of the query and key slots) plus a `BlockMask`: which (128 x 128) tiles
are empty (skipped), full (computed without the mask) or partial (masked element by element).
The prefix-sharing DPO work of Wang & Hegde (arXiv 2410.20305) reaches its speed-ups the same way.

The mask is the layout's own rule: slot k is visible to query slot q exactly when k <= q <
subtree_end[k] (k is q or one of its ancestors in its prefix tree; an unused slot is its own
one-slot tree). The tiles' kinds follow from `subtree_end` alone, in O(R·C·C/block) integer work,
so no (C, C) mask is ever built, not even while making the BlockMask.

How a model gets it. transformers hands a 4D mask it is given (a BlockMask too) straight to the
attention function that `config._attn_implementation` names. `flex_implementation(model)` names
ours (registered below) for the packed forward only: every other forward of the model (padded
batches, generation) keeps the implementation it was loaded with. Ours calls flex_attention with
`enable_gqa`, so grouped K/V heads are never repeated (transformers' own flex function repeats them
whenever the number of query heads is not a power of two, as in Qwen2.5-0.5B's 14 and 1.5B's 12).

Compiling. Eager flex_attention materializes every score (a reference implementation); its
fused kernel comes from torch.compile, on CUDA only (and never in the CPU tests, where the eager
form runs the same math, forward only: torch has no flex backward on CPU). Rows are padded to
whole blocks, so every packed batch is one of few shapes (C a multiple of 128), and the kernel is
compiled once with dynamic shapes: a new row count or width reuses it (torch may still specialize
a row count of 1 once). Widths of at least one block also keep queries off flex's decoding
kernel, which needs a power-of-two number of query heads per K/V head.
"""

from __future__ import annotations

import contextlib
import functools

import torch
from torch import Tensor
from torch.nn.attention.flex_attention import BlockMask, flex_attention

from harness.data.packing import PackedLayout

IMPLEMENTATION = "harness_packed_flex"  # our entry in transformers' AttentionInterface
BLOCK = 128  # FlexAttention's tile (its default sparse block size); rows are padded to a multiple of it

# Attention arguments this function cannot honour: a model passing one is not packed this way
# (the per-model probe in harness.logprobs sees the error and keeps the padded batch).
_UNSUPPORTED = ("softcap", "s_aux", "sinks", "position_bias", "sliding_window")


def mask_mod(subtree_end: Tensor):
    """FlexAttention's mask_mod for a layout: key slot k is visible to query slot q in row b
    exactly when k <= q < subtree_end[b, k] (harness.data.packing.PackedLayout.attends)."""

    def visible(b, h, q_idx, kv_idx):
        return (kv_idx <= q_idx) & (q_idx < subtree_end[b, kv_idx])

    return visible


def tile_kinds(subtree_end: Tensor, block: int) -> tuple[Tensor, Tensor]:
    """(touched, full), each (R, C/block, C/block) bool over (query tile, key tile): whether any,
    and whether every, query of the query tile sees each key of the key tile.

    Key k is seen by the queries [k, subtree_end[k]); a tile's count of visible pairs is the sum,
    over its keys, of that run's overlap with the query tile's slots. Full means block² pairs.
    """
    rows, width = subtree_end.shape
    if width % block:
        raise ValueError(f"rows of {width} slots are not whole blocks of {block} (pad them: PackedLayout.padded_to)")
    tiles = width // block
    key = torch.arange(width, device=subtree_end.device)
    starts = torch.arange(tiles, device=subtree_end.device) * block  # first query slot of each query tile
    low = torch.maximum(key[:, None], starts[None, :])  # (C, tiles)
    high = torch.minimum(subtree_end[:, :, None], starts[None, None, :] + block)  # (R, C, tiles)
    overlap = (high - low[None]).clamp(min=0)  # (R, key slot, query tile)
    pairs = overlap.view(rows, tiles, block, tiles).sum(2).transpose(1, 2)  # (R, query tile, key tile)
    return pairs > 0, pairs == block * block


def _ordered(tiles: Tensor) -> tuple[Tensor, Tensor]:
    """BlockMask's form of a (R, Q tiles, KV tiles) bool: the count per query tile, and the key
    tiles' indices with the marked ones first (in order), as torch's create_block_mask makes them."""
    counts = tiles.sum(-1, dtype=torch.int32)
    indices = torch.argsort(tiles.to(torch.int8), dim=-1, descending=True, stable=True).to(torch.int32)
    return counts[:, None], indices[:, None]  # one head dimension, shared by every head


def block_mask(layout: PackedLayout, block: int) -> BlockMask:
    """The layout's attention as a BlockMask (rows whole blocks wide: PackedLayout.padded_to).
    Partial tiles apply `mask_mod`; full tiles skip it; the rest are never computed."""
    touched, full = tile_kinds(layout.subtree_end, block)
    width = layout.input_ids.shape[1]
    partial_counts, partial_indices = _ordered(touched & ~full)
    full_counts, full_indices = _ordered(full)
    return BlockMask.from_kv_blocks(partial_counts, partial_indices, full_counts, full_indices, BLOCK_SIZE=block,
                                    mask_mod=mask_mod(layout.subtree_end), seq_lengths=(width, width))


def dense_from_blocks(mask: BlockMask) -> Tensor:
    """(R, C, C) bool: what a BlockMask lets through, element by element, as the kernels read it
    (full tiles: everything; partial tiles: mask_mod; other tiles: nothing). For the tests."""
    rows, _, width, _ = mask.shape
    block = mask.BLOCK_SIZE[0]
    tile = torch.arange(width, device=mask.kv_num_blocks.device) // block

    def expand(counts: Tensor | None, indices: Tensor | None) -> Tensor:
        marked = torch.zeros(rows, width // block, width // block, dtype=torch.bool, device=tile.device)
        if counts is not None:
            for r in range(rows):
                for q in range(width // block):
                    marked[r, q, indices[r, 0, q, : counts[r, 0, q]].long()] = True
        return marked[:, tile][:, :, tile]

    slot = torch.arange(width, device=tile.device)
    rule = torch.stack([mask.mask_mod(torch.tensor(r), 0, slot[:, None], slot[None, :]) for r in range(rows)])
    return expand(mask.full_kv_num_blocks, mask.full_kv_indices) | (expand(mask.kv_num_blocks, mask.kv_indices) & rule)


calls = 0  # packed attention calls so far: the probe's evidence that a model really dispatched here


def attention_forward(module: torch.nn.Module, query: Tensor, key: Tensor, value: Tensor,
                      attention_mask: BlockMask, scaling: float | None = None, dropout: float = 0.0,
                      **kwargs) -> tuple[Tensor, None]:
    """transformers' attention-function contract: (B, H, T, D) query, key and value in; (B, T, H, D)
    out, no attention weights."""
    global calls
    if not isinstance(attention_mask, BlockMask):
        raise TypeError(f"{IMPLEMENTATION} takes a BlockMask, got {type(attention_mask).__name__}")
    if dropout:
        raise ValueError(f"{IMPLEMENTATION} has no attention dropout (got p={dropout})")
    unsupported = [name for name in _UNSUPPORTED if kwargs.get(name) is not None]
    if unsupported:
        raise ValueError(f"{IMPLEMENTATION} does not implement {', '.join(unsupported)}")
    calls += 1
    # Under autocast the rotary embedding leaves query and key in float32 and value in bf16; SDPA
    # casts all three to the autocast dtype, and so does this, before the kernel (one dtype in,
    # a differentiable cast, whatever flex_attention's own autocast handling does in a backward).
    device_type = query.device.type
    dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else query.dtype
    query, key, value = (t.to(dtype) for t in (query, key, value))
    out = _kernel(device_type)(query, key, value, block_mask=attention_mask, scale=scaling,
                               enable_gqa=query.shape[1] != key.shape[1])
    return out.transpose(1, 2).contiguous(), None


def _kernel(device_type: str):
    """flex_attention, compiled on CUDA (once per process) unless already inside a compiled graph."""
    if device_type != "cuda" or torch.compiler.is_compiling():
        return flex_attention
    return _compiled_flex_attention()


@functools.cache
def _compiled_flex_attention():
    return torch.compile(flex_attention, dynamic=True)


@functools.cache
def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(IMPLEMENTATION, attention_forward)


@contextlib.contextmanager
def flex_implementation(model: torch.nn.Module):
    """Run `model`'s attention through `attention_forward` inside the block; the model's own
    implementation is back afterwards (the config setter carries it to sub-configs)."""
    _register()
    config = model.config
    previous = config._attn_implementation
    config._attn_implementation = IMPLEMENTATION
    try:
        yield
    finally:
        config._attn_implementation = previous
