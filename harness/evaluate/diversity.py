"""Diversity of a policy's samples: distinct-n over all of them, and self-BLEU within a prompt.

Texts are split on whitespace (the stored completion text, so that the numbers can be
recomputed from the samples table for any model and tokenizer).

- distinct-n (Li et al. 2016): unique n-grams / all n-grams over every sample of the policy
  (corpus level: what a policy can say at all). It is reported without an interval: it is not a
  mean over prompts (it falls as prompts are added), and a bootstrap over prompts does not
  estimate its spread (a resample repeats prompts, which adds to the n-gram total but not to the
  unique count, so the stored value fell outside its own "CI" in every published run).
- distinct-n per prompt: unique n-grams / all n-grams among one prompt's samples, averaged over
  prompts; a mean over prompts, so its bootstrap CI over prompts is valid (and contains it).
- self-BLEU (Zhu et al. 2018, Texygen), within a prompt: each sample scored by sacrebleu's
  sentence BLEU (effective order) against the prompt's other samples as references, averaged
  over the prompt's samples, then over prompts (bootstrap CI). It measures whether a policy
  says the same thing each time it is asked the same question (mode collapse after preference
  optimization); 0 = nothing shared, 1 = identical. Needs at least two samples per prompt.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from harness.evaluate.stats import Estimate, bootstrap_mean


def ngrams(text: str, n: int) -> list[tuple[str, ...]]:
    words = text.split()
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def distinct_n(texts_by_prompt: Sequence[Sequence[str]], n: int) -> Estimate:
    """Corpus-level distinct-n over all texts; no interval (stderr and CI are NaN, see the module
    docstring). NaN when the texts hold no n-gram."""
    grams = [g for texts in texts_by_prompt for t in texts for g in ngrams(t, n)]
    value = len(set(grams)) / len(grams) if grams else float("nan")
    return Estimate(float(value), float("nan"), float("nan"), float("nan"), len(texts_by_prompt))


def distinct_n_per_prompt_values(texts_by_prompt: Sequence[Sequence[str]], n: int) -> np.ndarray:
    """Per prompt: unique n-grams / all n-grams among its samples (NaN when they hold none)."""
    out = np.full(len(texts_by_prompt), np.nan)
    for p, texts in enumerate(texts_by_prompt):
        grams = [g for t in texts for g in ngrams(t, n)]
        if grams:
            out[p] = len(set(grams)) / len(grams)
    return out


def distinct_n_per_prompt(texts_by_prompt: Sequence[Sequence[str]], n: int, *, resamples: int,
                          seed: int) -> Estimate | None:
    """The mean over prompts of the per-prompt distinct-n, with a bootstrap CI over prompts; None
    when no prompt has an n-gram."""
    values = distinct_n_per_prompt_values(texts_by_prompt, n)
    values = values[np.isfinite(values)]
    return bootstrap_mean(values, resamples=resamples, seed=seed) if values.size else None


def self_bleu_per_prompt(texts_by_prompt: Sequence[Sequence[str]]) -> np.ndarray:
    """Per prompt: the mean over its samples of sentence BLEU (0..1) against its other samples.
    NaN for a prompt with fewer than two samples."""
    from sacrebleu.metrics import BLEU

    bleu = BLEU(effective_order=True)
    out = np.full(len(texts_by_prompt), np.nan)
    for p, texts in enumerate(texts_by_prompt):
        if len(texts) < 2:
            continue
        scores = [bleu.sentence_score(t, [o for j, o in enumerate(texts) if j != i]).score
                  for i, t in enumerate(texts)]
        out[p] = float(np.mean(scores)) / 100.0
    return out


def self_bleu(texts_by_prompt: Sequence[Sequence[str]], *, resamples: int, seed: int) -> Estimate | None:
    """Within-prompt self-BLEU with a bootstrap CI over prompts; None with one sample per prompt."""
    values = self_bleu_per_prompt(texts_by_prompt)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    return bootstrap_mean(values, resamples=resamples, seed=seed)
