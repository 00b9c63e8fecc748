"""Evaluators: each turns the scored samples of one policy into metric rows, registered by name
with its metrics' metadata (direction, unit, description)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from harness.evaluate.stats import Estimate
from harness.registry import Registry


@dataclass(frozen=True)
class MetricInfo:
    name: str
    higher_is_better: bool | None  # None: neither (KL, length) — shown, not ranked
    unit: str
    description: str


@dataclass(frozen=True)
class ScoredSamples:
    """One policy's samples on the held-out prompts, scored. Arrays are (prompts, samples) unless
    said otherwise; rewards are the judge's (`reward_model`: "gold" or a reward model's name).

    The start-model baseline is one start sample per policy sample (same prompt, same index);
    the dataset baseline is one chosen response per prompt, absent (None / NaN) where the
    dataset has none. NaN in `entropy` means unknown (samples stored before it was recorded).
    """

    rewards: np.ndarray
    baseline_rewards: np.ndarray
    policy_logps: np.ndarray
    reference_logps: np.ndarray
    token_kl: np.ndarray
    lengths: np.ndarray  # completion tokens
    bootstrap: int
    seed: int
    completions: np.ndarray | None = None  # texts (object array)
    baseline_completions: np.ndarray | None = None  # the start model's texts
    chosen_completions: np.ndarray | None = None  # (prompts,) texts or None
    chosen_rewards: np.ndarray | None = None  # (prompts,), NaN where there is no chosen response
    entropy: np.ndarray | None = None  # mean per-token entropy of the policy along each sample
    reward_model: str = "gold"
    # the LLM judge's (evaluate.judge), None without one: the policy's share of the win per sample
    # (NaN: no verdict), what it was judged against (start | chosen | a file), the verdicts' cost
    judge_outcomes: np.ndarray | None = None
    judge_baseline: str | None = None
    judge_tokens: np.ndarray | None = None
    judge_seconds: np.ndarray | None = None


@dataclass(frozen=True)
class Evaluator:
    name: str
    metrics: tuple[MetricInfo, ...]
    compute: Callable[[ScoredSamples], dict[str, Estimate]]  # may leave out metrics it cannot compute


EVALUATORS: Registry[Evaluator] = Registry("evaluator")


def register_evaluator(name: str, *metrics: MetricInfo):
    """Register `compute(samples) -> {metric: Estimate}` under `name`."""
    return EVALUATORS.decorator(name, lambda fn: Evaluator(name, tuple(metrics), fn))
