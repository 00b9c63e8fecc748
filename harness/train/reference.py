"""Summed reference log-probs of a dataset, computed once and cached on disk.

The key is (reference weights, tokenizer, tokenized data): every reference-based method and seed
of a suite that starts from the same reference and data reads the same file. A run still pays
the reference's forward FLOPs on every step it uses them (DESIGN.md: that cost is real for a
user), so the budget does not depend on whether the cache was warm. Regimes whose reference
moves (SPIN, sDPO, TR-DPO) compute reference log-probs live instead: their weights hash differs.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import torch

from harness.cache import cache_root, content_hash
from harness.data.batches import TrainData
from harness.logprobs import completion_token_logps, sequence_logps
from harness.train import hardware
from harness.train.distributed import broadcast, gathered, is_main, shard

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json", ".model", ".txt")


def folder_fingerprint(folder: str | Path) -> str:
    """A cheap fingerprint of a model or tokenizer folder: names, sizes and the first and last
    MiB of each file (hashing multi-GB weights in full would cost more than the cache saves)."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in _WEIGHT_SUFFIXES):
        size = path.stat().st_size
        digest.update(f"{path.relative_to(folder)}:{size}".encode())
        with path.open("rb") as f:
            digest.update(f.read(1 << 20))
            if size > 2 << 20:
                f.seek(-(1 << 20), 2)
                digest.update(f.read())
    return digest.hexdigest()[:16]


def data_fingerprint(data: TrainData) -> str:
    return content_hash([data.shape] + [[e.input_ids, e.completion_mask] for e in data.sequences()])


@torch.no_grad()
def reference_sums(reference, data: TrainData, *, pad_id: int, batch_size: int = 64,
                   packing: bool = True) -> torch.Tensor:
    """Summed reference log-probs of every example's sequences: (n_examples, groups), float32, CPU
    (paired: chosen, rejected; unpaired: the completion), at the training loop's precision. Under
    a multi-process launch each process computes every size-th batch and all get the whole."""
    device = next(reference.parameters()).device
    columns = []
    for start in shard(list(range(0, len(data), batch_size))):
        indices = list(range(start, min(start + batch_size, len(data))))
        batch = data.collate(indices, pad_id).to(device)
        with hardware.autocast(device):
            token_logps = completion_token_logps(reference, batch.input_ids, batch.attention_mask,
                                                 batch.completion_mask, packing=packing)
        sums, _ = sequence_logps(token_logps, batch.completion_mask)
        columns.append(sums.float().cpu().reshape(batch.groups, len(indices)).T)
    return torch.cat(gathered(columns))


def cached_reference_sums(reference, reference_key: str, data: TrainData, pad_id: int, *,
                          packing: bool = True) -> torch.Tensor:
    """reference_sums, read from or written to `$HARNESS_CACHE/reference_logps/<key>.pt`, where the
    key hashes the reference's weights (`reference_key`) and the tokenized data."""
    key = content_hash({"reference": reference_key, "data": data_fingerprint(data)})
    path = cache_root() / "reference_logps" / f"{key}.pt"
    if broadcast(path.exists()):  # the main process's answer: all compute, or none
        return torch.load(path)
    sums = reference_sums(reference, data, pad_id=pad_id, packing=packing)
    if not is_main():
        return sums
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.{uuid.uuid4().hex}.tmp")
    torch.save(sums, tmp)
    tmp.replace(path)
    return sums
