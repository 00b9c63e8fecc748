"""The sandbox's gold reward and the judge built on it.

The gold reward is VADER's compound sentiment score of the completion, in [-1, 1]: exact, cheap
and offline, so win rates in the sandbox are computed, not judged. An optional length term lets a
suite make length matter, and an optional fluency term makes ungrammatical text cost: the
penalty is `fluency_weight` times the completion's disfluency, the fraction of its word pairs
that the grammar never produces or that loop (`grammar.disfluency`). Both weights are 0 by
default. The judge turns two rewards into a Bradley-Terry preference probability with a
temperature: P(a > b) = σ((r_a − r_b) / temperature).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from functools import lru_cache

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from harness.sandbox.grammar import disfluency


@lru_cache(maxsize=1)
def _analyzer() -> SentimentIntensityAnalyzer:
    return SentimentIntensityAnalyzer()


@dataclass(frozen=True)
class GoldReward:
    """r(y) = VADER compound(y) + length_weight · words(y) − fluency_weight · disfluency(y).

    Positional construction `GoldReward(length_weight)` still works (fluency_weight is second).
    """

    length_weight: float = 0.0
    fluency_weight: float = 0.0

    def __call__(self, completion: str) -> float:
        score = _analyzer().polarity_scores(completion)["compound"]
        if self.length_weight:
            score += self.length_weight * len(completion.split())
        if self.fluency_weight:
            score -= self.fluency_weight * disfluency(completion)
        return score

    def many(self, completions: list[str]) -> list[float]:
        return [self(c) for c in completions]


@dataclass(frozen=True)
class BradleyTerryJudge:
    """Labels a pair with Bradley-Terry noise, then flips the label with probability flip_rate."""

    temperature: float = 0.25
    flip_rate: float = 0.0

    def prefer_first(self, reward_a: float, reward_b: float) -> float:
        """P(a is preferred to b) under the Bradley-Terry model."""
        z = (reward_a - reward_b) / self.temperature
        return 1.0 / (1.0 + math.exp(-max(min(z, 60.0), -60.0)))

    def label(self, reward_a: float, reward_b: float, rng: random.Random) -> tuple[bool, bool]:
        """(a is chosen, the label was flipped on purpose)."""
        a_chosen = rng.random() < self.prefer_first(reward_a, reward_b)
        flipped = rng.random() < self.flip_rate
        return a_chosen != flipped, flipped
