"""The sandbox's tokenizer and tiny causal LM, and the plain next-token training that makes
them speak the sandbox language (pretraining on the corpus, fine-tuning on demonstrations).

Pretraining packs documents into full rows ([bos] doc [eos] [bos] doc [eos] ...), so no compute
goes to padding; fine-tuning trains on completion tokens only. The optimizer is AdamW with
linear warmup and cosine decay, kept here (not the trainer's) so that the sandbox's output
depends on nothing but this package.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from tqdm.auto import tqdm
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from harness.data.tokenize import Encoded, encode_pair, pad_right

SPECIAL_TOKENS = ["<pad>", "<bos>", "<eos>", "<unk>"]
MAX_VOCAB = 4096


def fit_tokenizer(texts: Iterable[str], extra_words: Iterable[str] = ()) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over every whitespace-separated word of `texts` (and `extra_words`,
    so that a word the grammar can say is never unknown even when a small corpus missed it)."""
    words = sorted({w for t in texts for w in t.split()} | set(extra_words))
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + words)}
    if len(vocab) > MAX_VOCAB:
        raise ValueError(f"sandbox vocabulary of {len(vocab)} words exceeds {MAX_VOCAB}")
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # Like Llama's tokenizer, a plain call adds <bos>: every training sequence starts with it, and
    # lm-eval encodes its contexts with the tokenizer's own default, so without this the capability
    # tasks would score the models on text with no <bos>, a distribution they never saw.
    bos = vocab["<bos>"]
    core.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A $B",
                                                        special_tokens=[("<bos>", bos)])
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>",
        unk_token="<unk>",
    )


@dataclass(frozen=True)
class TinyModelConfig:
    """Shape of the sandbox LM (a Llama, so the real loading code paths are exercised)."""

    hidden_size: int = 128
    intermediate_size: int = 352
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    max_position_embeddings: int = 128


def build_model(shape: TinyModelConfig, tokenizer, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_attention_heads,
        max_position_embeddings=shape.max_position_embeddings,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return LlamaForCausalLM(config)


def next_token_loss(model, batch: dict[str, torch.Tensor], completion_only: bool) -> torch.Tensor:
    """Mean cross-entropy over the predicted tokens (completion tokens only, if asked)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    targets = batch["input_ids"][:, 1:]
    weight = batch["completion_mask"] if completion_only else batch["attention_mask"].bool()
    weight = weight[:, 1:].float()
    losses = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
    )
    return (losses * weight.reshape(-1)).sum() / weight.sum().clamp(min=1)


def _optimizer(model, lr: float, steps: int):
    """AdamW (weight decay 0), linear warmup over 10% of the steps, then cosine decay to 0."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    warmup = max(steps // 10, 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * min((step - warmup) / max(steps - warmup, 1), 1.0)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_next_token(
    model, rows: Sequence[Encoded], *, steps: int, batch_size: int, lr: float, seed: int,
    completion_only: bool, pad_id: int, desc: str,
) -> float:
    """Next-token training for `steps` steps on batches drawn in epochs; returns the mean loss of
    the last 10% of the steps (a single step's loss is too noisy to report)."""
    rng = random.Random(seed)
    optimizer, schedule = _optimizer(model, lr, steps)
    model.train()
    batches: list[list[int]] = []
    tail: list[float] = []
    for step in tqdm(range(steps), desc=desc, leave=False, disable=None):
        if not batches:
            batches = _length_grouped_batches(rows, batch_size, rng)
        batch = pad_right([rows[i] for i in batches.pop()], pad_id)
        loss = next_token_loss(model, batch, completion_only)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step >= steps - max(steps // 10, 1):
            tail.append(loss.item())
    model.eval()
    return sum(tail) / len(tail) if tail else float("nan")


def _length_grouped_batches(rows: Sequence[Encoded], batch_size: int, rng: random.Random) -> list[list[int]]:
    """One epoch of full batches, each of rows of similar length (so little compute goes to
    padding): shuffle, sort within windows of 16 batches by length, cut, shuffle the batches."""
    order = rng.sample(range(len(rows)), len(rows))
    window = batch_size * 16
    batches = []
    for start in range(0, len(order) - batch_size + 1, window):
        chunk = sorted(order[start : start + window], key=lambda i: len(rows[i].input_ids))
        batches += [chunk[j : j + batch_size] for j in range(0, len(chunk) - batch_size + 1, batch_size)]
    rng.shuffle(batches)
    return batches


def pack_documents(tokenizer, documents: Sequence[str], row_length: int) -> list[Encoded]:
    """Documents as [bos] doc [eos] concatenated and cut into rows of `row_length` tokens (the
    last, shorter row kept); every token but a row's first is a target."""
    stream: list[int] = []
    for doc in documents:
        stream += [tokenizer.bos_token_id, *tokenizer(doc, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    rows = []
    for start in range(0, len(stream), row_length):
        ids = stream[start : start + row_length]
        if len(ids) > 1:
            rows.append(Encoded(ids, [False] + [True] * (len(ids) - 1), truncated=False))
    return rows


def encode_demonstrations(tokenizer, pairs: Sequence[tuple[str, str]], max_length: int) -> list[Encoded]:
    return [encode_pair(tokenizer, p, c, max_length) for p, c in pairs]
