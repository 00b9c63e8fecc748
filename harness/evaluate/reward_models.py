"""Reward models: what judges a (prompt, completion), registered by name so that suites name them.

    evaluate: {reward_model: gold}                  # the sandbox's exact gold reward (default)
    evaluate: {reward_model: path/to/rm}            # any local AutoModelForSequenceClassification
    evaluate: {reward_model: OpenAssistant/reward-model-deberta-v3-large-v2}   # or a Hub id

A registered name wins over a path. Plugins add their own with `@register_reward_model("name")`
on a factory `(**context) -> RewardModel` (context: length_weight, device, batch_size).

A prompt is a text or a conversation (a list of {role, content} messages; harness.data.tokenize).
A sequence-classification reward model reads a conversation as its own chat template renders
[prompt messages..., assistant: completion], the completion being the reply's text alone (no
policy's end-of-turn markup); a reward model without a chat template cannot read a conversation
and is refused (`check_reads_conversations`, before any work). A text prompt is read as the
template's rendering of [user: prompt, assistant: completion] when the tokenizer has one, else
prompt and completion joined by a space. Templated text is tokenized without adding special
tokens (templates put them in), plain text with the tokenizer's own. The score is the single logit (the
usual reward-model head), or logit[1] − logit[0] for a two-label head. Batched with right
padding; a text too long for the model loses its beginning (the prompt), not the completion.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from harness.data.tokenize import chat_text, is_conversation
from harness.sandbox.reward import GoldReward
from harness.errors import HarnessError, did_you_mean
from harness.models import fill_pad_token
from harness.registry import Registry


class RewardModel(Protocol):
    name: str

    def score(self, prompts: Sequence, completions: Sequence[str]) -> np.ndarray:
        """One score per (prompt, completion), float64 (N,); a prompt is a text or messages."""


REWARD_MODELS: Registry[Callable[..., RewardModel]] = Registry("reward model")


def register_reward_model(name: str):
    """Register `factory(**context) -> RewardModel` under `name`."""
    return REWARD_MODELS.decorator(name, lambda factory: factory)


@dataclass(frozen=True)
class GoldJudge:
    """The sandbox's gold reward as a reward model (it reads the completion only)."""

    gold: GoldReward
    name: str = "gold"

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        return np.asarray(self.gold.many(list(completions)), dtype=np.float64)


@register_reward_model("gold")
def _gold(*, length_weight: float = 0.0, fluency_weight: float = 0.0, **_) -> RewardModel:
    return GoldJudge(GoldReward(length_weight, fluency_weight))


def as_reward_model(reward) -> RewardModel:
    """A RewardModel from a RewardModel or a bare GoldReward (what older callers hold)."""
    if isinstance(reward, GoldReward):
        return GoldJudge(reward)
    if not hasattr(reward, "score"):
        raise TypeError(f"{type(reward).__name__} is not a reward model (it has no score(prompts, completions))")
    return reward


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~"))


def load_reward_model(name: str, *, length_weight: float = 0.0, fluency_weight: float = 0.0,
                      device: torch.device | None = None,
                      batch_size: int = 16, where: str = "evaluate.reward_model") -> RewardModel:
    """The reward model a suite names: a registered name, a local folder or a Hub id."""
    if name in REWARD_MODELS:
        return REWARD_MODELS.get(name)(length_weight=length_weight, fluency_weight=fluency_weight,
                                       device=device, batch_size=batch_size)
    if Path(name).expanduser().is_dir() or _looks_like_hub_id(name):
        return SequenceClassifierReward(name, device=device, batch_size=batch_size)
    raise HarnessError(
        f"{where}: {name!r} is neither a registered reward model{did_you_mean(name, REWARD_MODELS.names())} "
        "nor a folder nor a Hub id (owner/name)"
    )


class SequenceClassifierReward:
    """Any AutoModelForSequenceClassification with its tokenizer, from a folder or the Hub."""

    def __init__(self, name_or_path: str, *, device: torch.device | None = None, batch_size: int = 16):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.name = name_or_path
        self.batch_size = batch_size
        self.device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        path = str(Path(name_or_path).expanduser()) if Path(name_or_path).expanduser().is_dir() else name_or_path
        # bf16 on a GPU (inference only); fp32 on CPU, where bf16 matmuls are slow
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForSequenceClassification.from_pretrained(path, dtype=dtype)
        except (OSError, ValueError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise HarnessError(f"evaluate.reward_model {name_or_path!r}: cannot load it ({first})") from None
        labels = self.model.config.num_labels
        if labels not in (1, 2):
            raise HarnessError(
                f"evaluate.reward_model {name_or_path!r}: a reward model has 1 output (or 2: score = "
                f"logit[1] − logit[0]); this one has {labels}"
            )
        fill_pad_token(self.tokenizer, name_or_path, where="evaluate.reward_model",
                       fallbacks=("eos_token", "unk_token"))
        # the classifier reads the last non-pad token, found through the config's pad id
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.tokenizer.padding_side = "right"
        self.tokenizer.truncation_side = "left"
        self.model.to(self.device).eval()
        self.max_length = _max_length(self.model.config, self.tokenizer)

    def texts(self, prompts: Sequence, completions: Sequence[str]) -> list[str]:
        """What the model reads for each pair: its chat template's rendering of the conversation
        and the reply when it has a template, else the text prompt and the completion joined."""
        if getattr(self.tokenizer, "chat_template", None):
            return [chat_text(self.tokenizer, _conversation(p) + [{"role": "assistant", "content": c}])
                    for p, c in zip(prompts, completions)]
        if any(is_conversation(p) for p in prompts):
            self.check_reads_conversations()
        return [_join(p, c) for p, c in zip(prompts, completions)]

    def check_reads_conversations(self, where: str = "evaluate.reward_model") -> None:
        """Refuse to score conversations without a chat template: any rendering of the messages
        would be one the reward model never saw in training."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise HarnessError(
                f"{where}: {self.name!r} has no chat template, so it cannot read the dataset's conversations "
                "as it was trained to; use a reward model whose tokenizer has one, or text (string) prompts")

    @torch.no_grad()
    def score(self, prompts: Sequence[str], completions: Sequence[str], *, progress: str | None = None) -> np.ndarray:
        if len(prompts) != len(completions):
            raise ValueError("one prompt per completion")
        texts = self.texts(prompts, completions)
        templated = bool(getattr(self.tokenizer, "chat_template", None))
        out: list[float] = []
        starts = range(0, len(texts), self.batch_size)
        for start in tqdm(starts, desc=progress, disable=True if progress is None else None, leave=False):
            batch = self.tokenizer(
                texts[start : start + self.batch_size], padding=True, truncation=True,
                max_length=self.max_length, add_special_tokens=not templated, return_tensors="pt",
            ).to(self.device)
            logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
            scores = logits[:, 0] if logits.shape[-1] == 1 else logits[:, 1] - logits[:, 0]
            out += scores.tolist()
        return np.asarray(out, dtype=np.float64)


def _conversation(prompt) -> list[dict]:
    """A prompt as messages: a conversation as is, a text as the user's message."""
    return list(prompt) if is_conversation(prompt) else [{"role": "user", "content": prompt}]


def check_reads_conversations(reward: RewardModel, prompts: Sequence, *, where: str) -> None:
    """Before any work: a reward model that renders text must be able to read conversations when
    the prompts are conversations (the sandbox's gold reward reads completions only)."""
    if any(is_conversation(p) for p in prompts) and hasattr(reward, "check_reads_conversations"):
        reward.check_reads_conversations(where)


def _join(prompt: str, completion: str) -> str:
    if not prompt or not completion or prompt[-1].isspace() or completion[0].isspace():
        return prompt + completion
    return f"{prompt} {completion}"


def _max_length(config, tokenizer) -> int:
    limits = [getattr(config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    limits = [int(x) for x in limits if isinstance(x, int) and 0 < x < 1_000_000]
    return min(limits) if limits else 2048


def reward_model_name(reward: RewardModel) -> str:
    return getattr(reward, "name", type(reward).__name__)
