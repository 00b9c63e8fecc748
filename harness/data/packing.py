"""Packing a right-padded batch into fewer, fuller rows: prefix sharing and padding removal.

A preference batch repeats work. Chosen and rejected share their prompt, so a padded batch runs
every prompt twice, and about a third of its positions are padding when lengths vary. The layout
built here removes both, exactly:

- Sequences with the same prompt (a pair's chosen and rejected, several completions of one
  prompt) become one prefix tree: a token shared by several sequences at the same place is
  one node, computed once. Each node attends to itself and its ancestors only and has its depth
  as position id, so every sequence sees exactly the context it would see alone.
- The trees are packed first-fit-decreasing into rows of equal length, with a block-diagonal
  mask; unused slots attend to themselves only and are never read.

`pack_batch` picks the cheapest such layout (prompts shared or not; rows one, one and a half or
two times the largest tree) under a FLOP cost model, and keeps the padded batch when no layout
beats it.

The model then runs once over the packed rows (a custom 4D attention mask and explicit position
ids, which HF decoders take as they are), and `PackedLayout.index` maps every (sequence, position)
of the original batch to its slot. Whether a model really computes the same thing this way is
checked once per model against its padded forward (harness.logprobs); models that cannot take a
custom mask keep the padded batch.

Budgets do not see this: a run's FLOPs are counted on its sequences as the method defines them
(prompt + completion each), so packing changes wall time, never how many steps a budget buys.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class PackedLayout:
    """Packed rows (R, C) and where each token of the original (N, T) batch went."""

    input_ids: Tensor  # (R, C) long
    position_ids: Tensor  # (R, C) long: depth in the token's prefix tree
    attends: Tensor  # (R, C, C) bool: query slot attends key slot
    index: Tensor  # (N, T) long: flat slot r·C + c of each real token; 0 at padding
    tokens: int  # distinct real tokens (nodes) in the layout

    @property
    def slots(self) -> int:
        return self.input_ids.numel()

    def to(self, device: torch.device) -> PackedLayout:
        return PackedLayout(self.input_ids.to(device), self.position_ids.to(device), self.attends.to(device),
                            self.index.to(device), self.tokens)


@dataclass
class _Tree:
    """One prefix tree: its nodes' tokens and depths, the ancestor relation, and each sequence's path."""

    tokens: list[int]
    depths: list[int]
    paths: dict[int, list[int]]  # sequence index -> node of each of its positions

    def attends(self) -> np.ndarray:
        n = len(self.tokens)
        out = np.zeros((n, n), dtype=bool)
        for path in self.paths.values():
            # along a path, position t attends positions <= t: the node's ancestors and itself
            block = np.ix_(path, path)
            out[block] |= np.tri(len(path), dtype=bool)
        return out


def _right_padded_lengths(attention_mask: Tensor) -> Tensor | None:
    """Each row's length, or None when a row is not `length` ones followed by zeros."""
    lengths = attention_mask.sum(-1)
    expected = torch.arange(attention_mask.shape[1], device=attention_mask.device) < lengths[:, None]
    return lengths if torch.equal(attention_mask.bool(), expected) else None


def _prefix_trees(ids: list[list[int]], keys: list) -> list[_Tree]:
    """One tree per distinct key, holding every sequence with that key (their common prefixes shared)."""
    trees: dict[object, tuple[_Tree, dict[tuple[int, int], int]]] = {}
    for i, sequence in enumerate(ids):
        tree, children = trees.setdefault(keys[i], (_Tree([], [], {}), {}))
        path, parent = [], -1
        for depth, token in enumerate(sequence):
            node = children.get((parent, token))
            if node is None:
                node = children[(parent, token)] = len(tree.tokens)
                tree.tokens.append(token)
                tree.depths.append(depth)
            path.append(node)
            parent = node
        tree.paths[i] = path
    return [tree for tree, _ in trees.values()]


def _first_fit_decreasing(sizes: list[int], capacity: int) -> list[list[int]]:
    """Bins (lists of item indices) whose sizes sum to at most `capacity`, largest items first."""
    bins: list[list[int]] = []
    room: list[int] = []
    for item in sorted(range(len(sizes)), key=lambda k: -sizes[k]):
        target = next((b for b, free in enumerate(room) if free >= sizes[item]), None)
        if target is None:
            bins.append([])
            room.append(capacity)
            target = len(bins) - 1
        bins[target].append(item)
        room[target] -= sizes[item]
    return bins


def position_cost(width: int, hidden_size: int) -> int:
    """Relative cost of one position in rows of `width`: per layer, a decoder's linear layers
    take ~24·h² FLOPs per position and attention over a dense (width, width) mask ~4·h·width."""
    return 6 * hidden_size + width


def _sequences(input_ids: Tensor, attention_mask: Tensor, completion_mask: Tensor
               ) -> tuple[list[list[int]], list[tuple[int, ...]]] | None:
    """Each row's tokens and prompt (everything before its first completion token, the whole row
    if it has none), or None when a row is not right-padded."""
    lengths = _right_padded_lengths(attention_mask)
    if lengths is None or input_ids.shape[0] == 0:
        return None
    lengths_list = lengths.tolist()
    has_completion = completion_mask.any(-1)
    prompt_lengths = torch.where(has_completion, completion_mask.float().argmax(-1), lengths).tolist()
    rows = input_ids.tolist()
    ids = [row[:length] for row, length in zip(rows, lengths_list)]
    return ids, [tuple(row[:length]) for row, length in zip(ids, prompt_lengths)]


def pack_sequences(input_ids: Tensor, attention_mask: Tensor, completion_mask: Tensor, *,
                   share_prompts: bool) -> PackedLayout | None:
    """The packed layout of a right-padded batch (None if a row is not right-padded): with
    `share_prompts`, sequences with equal prompts share one tree; else each is its own."""
    found = _sequences(input_ids, attention_mask, completion_mask)
    if found is None:
        return None
    ids, prompts = found
    trees = _prefix_trees(ids, prompts if share_prompts else list(range(len(ids))))
    capacity = max(len(t.tokens) for t in trees)
    return _build(trees, capacity, _bins(trees, capacity), *input_ids.shape, input_ids.device)


def pack_batch(input_ids: Tensor, attention_mask: Tensor, completion_mask: Tensor, *,
               hidden_size: int) -> PackedLayout | None:
    """The cheapest packed layout for a model of width `hidden_size`, or None when none costs
    less than the padded batch itself.

    Candidates: prompts shared or not, rows 1, 1.5 or 2 times as long as the largest unit.
    Sharing saves the repeated prompts but makes units about twice as long, which packs less
    tightly and widens the attention: with short prompts the unshared layout is often cheaper.
    Longer rows waste less at their ends but cost more attention per position.
    """
    found = _sequences(input_ids, attention_mask, completion_mask)
    if found is None:
        return None
    ids, prompts = found
    n, width = input_ids.shape
    best = (n * width * position_cost(width, hidden_size), None, 0, [])
    for trees in (_prefix_trees(ids, prompts), _prefix_trees(ids, list(range(n)))):
        largest = max(len(t.tokens) for t in trees)
        for capacity in sorted({largest, largest * 3 // 2, largest * 2}):
            bins = _bins(trees, capacity)
            cost = len(bins) * capacity * position_cost(capacity, hidden_size)
            if cost < best[0]:
                best = (cost, trees, capacity, bins)
    _, trees, capacity, bins = best
    return None if trees is None else _build(trees, capacity, bins, n, width, input_ids.device)


def _bins(trees: list[_Tree], capacity: int) -> list[list[int]]:
    """Rows of `capacity` slots, filled first-fit-decreasing."""
    return _first_fit_decreasing([len(t.tokens) for t in trees], capacity)


def _build(trees: list[_Tree], capacity: int, bins: list[list[int]], n: int, width: int,
           device: torch.device) -> PackedLayout:
    sizes = [len(t.tokens) for t in trees]
    packed_ids = np.zeros((len(bins), capacity), dtype=np.int64)
    positions = np.zeros((len(bins), capacity), dtype=np.int64)
    attends = np.zeros((len(bins), capacity, capacity), dtype=bool)
    index = np.zeros((n, width), dtype=np.int64)
    for r, members in enumerate(bins):
        offset = 0
        for k in members:
            tree, size = trees[k], sizes[k]
            span = slice(offset, offset + size)
            packed_ids[r, span] = tree.tokens
            positions[r, span] = tree.depths
            attends[r, span, span] = tree.attends()
            for i, path in tree.paths.items():
                index[i, : len(path)] = r * capacity + offset + np.asarray(path)
            offset += size
        free = np.arange(offset, capacity)
        attends[r, free, free] = True  # unused slots see themselves: no row of the softmax is empty
    return PackedLayout(
        torch.from_numpy(packed_ids).to(device), torch.from_numpy(positions).to(device),
        torch.from_numpy(attends).to(device), torch.from_numpy(index).to(device), sum(sizes),
    )
