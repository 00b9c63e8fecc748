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
    """Packed rows (R, C) and where each token of the original (N, T) batch went.

    Each tree sits in its row in depth-first preorder, so a node's subtree is the run of slots
    from the node up to `subtree_end` (exclusive): slot k is an ancestor of slot q (or q itself)
    exactly when k <= q < subtree_end[k]. The (R, C, C) mask is therefore built where it is used,
    from (R, C) integers, in one comparison (`attends`).
    """

    input_ids: Tensor  # (R, C) long
    position_ids: Tensor  # (R, C) long: depth in the token's prefix tree
    subtree_end: Tensor  # (R, C) long: one past the last slot of each slot's subtree
    index: Tensor  # (N, T) long: flat slot r·C + c of each real token; 0 at padding
    tokens: int  # distinct real tokens (nodes) in the layout

    @property
    def slots(self) -> int:
        return self.input_ids.numel()

    def attends(self) -> Tensor:
        """(R, C, C) bool: whether query slot q attends key slot k (k is q or one of its ancestors).
        Unused slots are their own one-slot subtree, so they see only themselves."""
        slot = torch.arange(self.input_ids.shape[1], device=self.input_ids.device)
        query, key = slot[:, None], slot[None, :]
        return (key <= query) & (query < self.subtree_end[:, None, :])

    def padded_to(self, multiple: int) -> PackedLayout:
        """The same layout with rows widened to a multiple of `multiple` slots (FlexAttention's
        blocks are whole then). The new slots are unused slots: token 0 at position 0, each its own
        one-slot subtree; every real token keeps its row and column."""
        rows, width = self.input_ids.shape
        extra = -width % multiple
        if extra == 0:
            return self
        new_slots = torch.arange(width + 1, width + extra + 1, device=self.input_ids.device).expand(rows, extra)
        widen = lambda t: torch.nn.functional.pad(t, (0, extra))  # noqa: E731
        index = self.index // width * (width + extra) + self.index % width
        return PackedLayout(widen(self.input_ids), widen(self.position_ids),
                            torch.cat([self.subtree_end, new_slots], dim=1), index, self.tokens)

    def to(self, device: torch.device) -> PackedLayout:
        return PackedLayout(self.input_ids.to(device), self.position_ids.to(device), self.subtree_end.to(device),
                            self.index.to(device), self.tokens)


@dataclass
class _Tree:
    """One prefix tree in depth-first preorder: its nodes' tokens, depths and subtree ends, and
    each sequence's path (the node of each of its positions)."""

    tokens: np.ndarray
    depths: np.ndarray
    subtree_end: np.ndarray
    paths: dict[int, np.ndarray]


def _common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    shortest = min(len(a), len(b))
    differ = np.flatnonzero(a[:shortest] != b[:shortest])
    return int(differ[0]) if differ.size else shortest


def _trie(sequences: dict[int, list[int]]) -> _Tree:
    """The prefix tree of `sequences` (sequence index -> tokens), laid out in preorder.

    In lexicographic order, each sequence adds exactly the nodes past its common prefix with the
    one before it, and emitting those in that order is a depth-first preorder of the tree. The
    subtree of a node at depth t ends where a later sequence first shares fewer than t + 1 tokens
    with its predecessor (a running minimum of the common prefixes). Work per sequence, not per
    token, outside numpy.
    """
    if len(sequences) == 1:  # a chain: every node's subtree runs to the end
        (i, sequence), = sequences.items()
        n = len(sequence)
        return _Tree(np.asarray(sequence, dtype=np.int64), np.arange(n), np.full(n, n), {i: np.arange(n)})
    order = sorted(sequences, key=sequences.__getitem__)
    rows = [np.asarray(sequences[i], dtype=np.int64) for i in order]
    shared = np.array([0] + [_common_prefix(rows[j - 1], rows[j]) for j in range(1, len(rows))], dtype=np.int64)
    new = np.array([len(row) for row in rows]) - shared
    starts = np.concatenate([[0], np.cumsum(new)])  # first new slot of each sequence; the last: the size
    tokens, depths, ends, paths, previous = [], [], [], {}, np.zeros(0, dtype=np.int64)
    for j, row in enumerate(rows):
        depth = np.arange(shared[j], len(row))
        # the first later sequence k with min(shared[j+1..k]) <= depth closes the node's subtree
        running_min = np.minimum.accumulate(shared[j + 1 :]) if j + 1 < len(rows) else shared[:0]
        closes = np.searchsorted(-running_min, -depth, side="left")
        ends.append(starts[j + 1 + closes])  # closes == len(running_min): the tree's end
        tokens.append(row[shared[j] :])
        depths.append(depth)
        previous = np.concatenate([previous[: shared[j]], starts[j] + np.arange(new[j])])
        paths[order[j]] = previous
    return _Tree(np.concatenate(tokens), np.concatenate(depths), np.concatenate(ends), paths)


def _right_padded_lengths(attention_mask: Tensor) -> Tensor | None:
    """Each row's length, or None when a row is empty or not `length` ones followed by zeros."""
    lengths = attention_mask.sum(-1)
    if not bool((lengths > 0).all()):
        return None
    expected = torch.arange(attention_mask.shape[1], device=attention_mask.device) < lengths[:, None]
    return lengths if torch.equal(attention_mask.bool(), expected) else None


def _prefix_trees(ids: list[list[int]], keys: list) -> list[_Tree]:
    """One tree per distinct key, holding every sequence with that key (their common prefixes shared)."""
    groups: dict[object, dict[int, list[int]]] = {}
    for i, sequence in enumerate(ids):
        groups.setdefault(keys[i], {})[i] = sequence
    return [_trie(sequences) for sequences in groups.values()]


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
    packed_ids = np.zeros((len(bins), capacity), dtype=np.int64)
    positions = np.zeros((len(bins), capacity), dtype=np.int64)
    # unused slots: each its own one-slot subtree, so it attends only to itself
    subtree_end = np.tile(np.arange(1, capacity + 1, dtype=np.int64), (len(bins), 1))
    index = np.zeros((n, width), dtype=np.int64)
    for r, members in enumerate(bins):
        offset = 0
        for k in members:
            tree = trees[k]
            span = slice(offset, offset + len(tree.tokens))
            packed_ids[r, span] = tree.tokens
            positions[r, span] = tree.depths
            subtree_end[r, span] = tree.subtree_end + offset
            for i, path in tree.paths.items():
                index[i, : len(path)] = r * capacity + offset + path
            offset += len(tree.tokens)
    return PackedLayout(*(torch.from_numpy(a).to(device) for a in (packed_ids, positions, subtree_end, index)),
                        sum(len(t.tokens) for t in trees))
