"""Diversity of a policy's samples: distinct-n and within-prompt self-BLEU, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from harness.evaluate.diversity import (
    distinct_n,
    distinct_n_per_prompt,
    distinct_n_per_prompt_values,
    ngrams,
    self_bleu,
    self_bleu_per_prompt,
)
from harness.evaluate.stats import bootstrap_mean
from harness.evaluate.metrics import diversity, entropy
from harness.evaluate.registry import ScoredSamples

TEXTS = [["a b a", "a b"], ["c d", "c d"]]


def test_distinct_n_by_hand():
    """Unigrams: a b a | a b | c d | c d → 9 in all, 4 distinct (a, b, c, d): 4/9.
    Bigrams: (a b) (b a) | (a b) | (c d) | (c d) → 5 in all, 3 distinct: 3/5. The corpus value
    has no interval (NaN): a bootstrap over prompts does not estimate its spread."""
    assert ngrams("a b a", 2) == [("a", "b"), ("b", "a")]
    d1, d2 = distinct_n(TEXTS, 1), distinct_n(TEXTS, 2)
    assert d1.value == pytest.approx(4 / 9) and d2.value == pytest.approx(3 / 5)
    assert d1.n == 2 and np.isnan(d1.ci_low) and np.isnan(d1.ci_high) and np.isnan(d1.stderr)


def test_distinct_n_per_prompt_by_hand():
    """Prompt 0: unigrams a b a a b → 2 distinct of 5 (0.4); bigrams (a b) (b a) (a b) → 2 of 3.
    Prompt 1: c d c d → 2 of 4 (0.5); bigrams (c d) (c d) → 1 of 2 (0.5). Means: 0.45 and 7/12."""
    assert list(distinct_n_per_prompt_values(TEXTS, 1)) == pytest.approx([0.4, 0.5])
    d1 = distinct_n_per_prompt(TEXTS, 1, resamples=200, seed=0)
    d2 = distinct_n_per_prompt(TEXTS, 2, resamples=200, seed=0)
    assert d1.value == pytest.approx(0.45) and d2.value == pytest.approx((2 / 3 + 0.5) / 2)
    assert distinct_n_per_prompt([["x"], ["y"]], 2, resamples=10, seed=0) is None  # no bigram


def _random_texts(rng, prompts: int, samples: int, words: int, vocab: int) -> list[list[str]]:
    """Texts of `words` words drawn uniformly from a vocabulary of `vocab`: per prompt, `samples`."""
    ids = rng.integers(0, vocab, size=(prompts, samples, words))
    return [[" ".join(f"w{i}" for i in row) for row in prompt] for prompt in ids]


def test_distinct_2_per_prompt_interval_covers_its_truth():
    """Known truth by simulation: 4 texts of 6 words from a 6-word vocabulary per prompt; the
    expected per-prompt distinct-2 is estimated on 20000 prompts (MC error ~0.0007). 300
    datasets of 64 prompts: the stored value lies inside its own CI every time, and the CI covers
    the truth in 0.92-0.98 of them (nominal 0.95; MC sd of the rate 0.013)."""
    rng = np.random.default_rng(7)
    truth = distinct_n_per_prompt_values(_random_texts(rng, 20000, 4, 6, 6), 2).mean()
    values = distinct_n_per_prompt_values(_random_texts(rng, 300 * 64, 4, 6, 6), 2).reshape(300, 64)
    covered, inside = 0, 0
    for row in values:
        est = bootstrap_mean(row, resamples=400, seed=0)
        covered += est.ci_low <= truth <= est.ci_high
        inside += est.ci_low <= est.value <= est.ci_high
    assert inside == 300
    assert 0.92 <= covered / 300 <= 0.98


def test_self_bleu_identical_and_disjoint_samples():
    same = [["the movie was good .", "the movie was good ."]]
    apart = [["the movie was good .", "i hated every single minute"]]
    assert self_bleu_per_prompt(same)[0] == pytest.approx(1.0)
    assert self_bleu_per_prompt(apart)[0] == pytest.approx(0.0, abs=1e-9)
    assert np.isnan(self_bleu_per_prompt([["only one"]])[0])
    assert self_bleu([["only one"]], resamples=10, seed=0) is None


def _scored(completions, entropy_values=None):
    shape = np.shape(completions)
    zeros = np.zeros(shape)
    return ScoredSamples(rewards=zeros, baseline_rewards=zeros, policy_logps=zeros, reference_logps=zeros,
                         token_kl=zeros, lengths=zeros, bootstrap=100, seed=0,
                         completions=np.asarray(completions, dtype=object), entropy=entropy_values)


def test_diversity_and_entropy_evaluators():
    out = diversity(_scored(TEXTS))
    assert set(out) == {"distinct_1", "distinct_2", "distinct_1_per_prompt", "distinct_2_per_prompt", "self_bleu"}
    assert out["self_bleu"].value == pytest.approx((self_bleu_per_prompt(TEXTS)).mean())
    # per prompt: the entropies' mean over samples, then over prompts
    got = entropy(_scored(TEXTS, np.array([[1.0, 2.0], [3.0, 5.0]])))["token_entropy"]
    assert got.value == pytest.approx(2.75) and got.n == 2
    # samples stored before entropy was recorded: no row rather than a NaN row
    assert entropy(_scored(TEXTS, np.full((2, 2), np.nan))) == {}
