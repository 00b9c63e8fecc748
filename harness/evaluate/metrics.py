"""The built-in evaluators: reward, win rates (plain and length-controlled, against the starting
model's samples and against the dataset's chosen responses), the LLM judge's win rate and cost,
KL, length, entropy, diversity.

Every evaluator reads only `ScoredSamples`, which `harness.evaluate.policy.scored_from_samples`
builds from the stored per-sample table: the same code computes the metrics after generation
and when a suite is rescored (`harness evaluate SUITE --rescore`).
"""

from __future__ import annotations

import numpy as np

from harness.evaluate.diversity import distinct_n, distinct_n_per_prompt, self_bleu
from harness.evaluate.registry import MetricInfo, ScoredSamples, register_evaluator
from harness.evaluate.stats import (
    Estimate,
    bootstrap_mean,
    length_controlled_win_rate,
    mean_with_stderr,
    per_prompt,
)

GOLD = "gold"


@register_evaluator(
    "gold_reward",
    MetricInfo("reward_mean", True, "reward", "mean gold reward of the policy's samples"),
)
def gold_reward(s: ScoredSamples) -> dict[str, Estimate]:
    if s.reward_model != GOLD:
        return {}
    return {"reward_mean": bootstrap_mean(per_prompt(s.rewards), resamples=s.bootstrap, seed=s.seed)}


@register_evaluator(
    "reward_model",
    MetricInfo("reward_mean", True, "reward",
               "mean score of the policy's samples under the suite's reward model (evaluate.reward_model)"),
)
def reward_model_score(s: ScoredSamples) -> dict[str, Estimate]:
    if s.reward_model == GOLD:
        return {}
    return {"reward_mean": bootstrap_mean(per_prompt(s.rewards), resamples=s.bootstrap, seed=s.seed)}


def pairwise_outcomes(rewards: np.ndarray, baseline_rewards: np.ndarray) -> np.ndarray:
    """1 where the policy's sample scores higher than the baseline's, 0.5 on a tie, 0 below
    (NaN where the baseline is missing)."""
    rewards, baseline_rewards = np.asarray(rewards, np.float64), np.asarray(baseline_rewards, np.float64)
    out = np.where(rewards > baseline_rewards, 1.0, np.where(rewards == baseline_rewards, 0.5, 0.0))
    return np.where(np.isnan(baseline_rewards) | np.isnan(rewards), np.nan, out)


def text_lengths(texts: np.ndarray) -> np.ndarray:
    """Characters per text, as AlpacaEval measures length for its length control."""
    return np.vectorize(lambda t: float(len(t)) if isinstance(t, str) else np.nan, otypes=[float])(texts)


@register_evaluator(
    "win_rate",
    MetricInfo("win_rate_vs_start", True, "fraction",
               "P(policy sample beats the starting model's sample on the same prompt), ties ½"),
    MetricInfo("length_controlled_minimal_vs_start", True, "fraction",
               "AlpacaEval's length_controlled_minimal GLM per run vs the starting model: σ(θ) of logit "
               "P(win) = θ + φ·tanh(Δlen/sd) (no instruction difficulty; the leaderboard's "
               "length_controlled_vs_start is the AlpacaEval 2.0 GLM across runs)"),
    MetricInfo("win_rate_vs_chosen", True, "fraction",
               "P(policy sample beats the dataset's chosen response for the prompt), ties ½"),
    MetricInfo("length_controlled_minimal_vs_chosen", True, "fraction",
               "length_controlled_minimal win rate vs the dataset's chosen responses (as "
               "length_controlled_minimal_vs_start)"),
)
def win_rate(s: ScoredSamples) -> dict[str, Estimate]:
    out = {}
    outcomes = pairwise_outcomes(s.rewards, s.baseline_rewards)
    out["win_rate_vs_start"] = bootstrap_mean(per_prompt(outcomes), resamples=s.bootstrap, seed=s.seed)
    if s.completions is not None and s.baseline_completions is not None:
        diff = text_lengths(s.completions) - text_lengths(s.baseline_completions)
        out["length_controlled_minimal_vs_start"] = length_controlled_win_rate(
            outcomes, diff, resamples=s.bootstrap, seed=s.seed)
    if s.chosen_rewards is None or not np.isfinite(s.chosen_rewards).any():
        return out
    chosen = np.broadcast_to(np.asarray(s.chosen_rewards, np.float64)[:, None], s.rewards.shape)
    outcomes = pairwise_outcomes(s.rewards, chosen)
    has = np.isfinite(np.asarray(s.chosen_rewards, np.float64))
    out["win_rate_vs_chosen"] = bootstrap_mean(per_prompt(outcomes[has]), resamples=s.bootstrap, seed=s.seed)
    if s.completions is not None and s.chosen_completions is not None:
        chosen_len = text_lengths(np.asarray(s.chosen_completions, dtype=object))
        diff = text_lengths(s.completions) - chosen_len[:, None]
        out["length_controlled_minimal_vs_chosen"] = length_controlled_win_rate(
            outcomes, diff, resamples=s.bootstrap, seed=s.seed, valid=np.isfinite(outcomes))
    return out


def nan_per_prompt(values: np.ndarray) -> np.ndarray:
    """(prompts, samples) -> the mean over each prompt's finite values, for the prompts that have one."""
    values = np.asarray(values, np.float64)
    have = np.isfinite(values)
    counts = have.sum(axis=1)
    sums = np.where(have, values, 0.0).sum(axis=1)
    return sums[counts > 0] / counts[counts > 0]


def preferred_side(outcomes: np.ndarray) -> np.ndarray:
    """+1 where the policy's sample is preferred, -1 where its baseline is, 0 on a tie (NaN: unknown)."""
    return np.sign(np.asarray(outcomes, np.float64) - 0.5)


def reward_outcomes_against(s: ScoredSamples, baseline: str | None) -> np.ndarray | None:
    """The reward model's outcomes against the judge's baseline, where it scored that baseline:
    the start model's samples or the dataset's chosen responses (not a reference file's outputs)."""
    if baseline == "start":
        return pairwise_outcomes(s.rewards, s.baseline_rewards)
    if baseline == "chosen" and s.chosen_rewards is not None:
        return pairwise_outcomes(s.rewards, np.broadcast_to(np.asarray(s.chosen_rewards, np.float64)[:, None],
                                                            s.rewards.shape))
    return None


def total(values: np.ndarray) -> Estimate:
    """A cost summed over the samples: no interval (stderr and CI NaN); n counts the samples."""
    values = np.asarray(values, np.float64)
    return Estimate(float(values.sum()), float("nan"), float("nan"), float("nan"), int(values.size))


@register_evaluator(
    "llm_judge",
    MetricInfo("judge_win_rate", True, "fraction",
               "P(the LLM judge (evaluate.judge) prefers the policy's sample to its baseline), each pair judged "
               "in both orders and averaged, ties ½"),
    MetricInfo("judge_reward_agreement", None, "fraction",
               "how often the LLM judge and the reward model prefer the same side of a pair (a tie is a side); "
               "only where the reward model scored the judge's baseline (start or chosen)"),
    MetricInfo("judge_tokens", None, "tokens", "tokens the LLM judge read and wrote for this run's verdicts (total)"),
    MetricInfo("judge_seconds", None, "seconds",
               "seconds of the LLM judge's requests for this run's verdicts (total over requests, when first judged)"),
)
def llm_judge(s: ScoredSamples) -> dict[str, Estimate]:
    if s.judge_outcomes is None or not np.isfinite(s.judge_outcomes).any():
        return {}
    out = {"judge_win_rate": bootstrap_mean(nan_per_prompt(s.judge_outcomes), resamples=s.bootstrap, seed=s.seed)}
    reward = reward_outcomes_against(s, s.judge_baseline)
    if reward is not None:
        both = np.isfinite(reward) & np.isfinite(s.judge_outcomes)
        agree = np.where(both, preferred_side(reward) == preferred_side(s.judge_outcomes), np.nan)
        if both.any():
            out["judge_reward_agreement"] = bootstrap_mean(nan_per_prompt(agree), resamples=s.bootstrap, seed=s.seed)
    out["judge_tokens"] = total(s.judge_tokens)
    out["judge_seconds"] = total(s.judge_seconds)
    return out


def kl_k1(policy_logps: np.ndarray, reference_logps: np.ndarray) -> np.ndarray:
    """k1 = log π(y) − log π_ref(y): unbiased, high variance, can be negative per sample."""
    return policy_logps - reference_logps


def kl_k3(policy_logps: np.ndarray, reference_logps: np.ndarray) -> np.ndarray:
    """k3 = (r − 1) − log r with log r = log π_ref(y) − log π(y): unbiased and non-negative.
    expm1 in float64 keeps it exact for small log r; it overflows only past log r ≈ 709."""
    log_r = np.asarray(reference_logps, np.float64) - np.asarray(policy_logps, np.float64)
    return np.expm1(log_r) - log_r


@register_evaluator(
    "kl",
    MetricInfo("kl_k1", None, "nats", "sequence KL(π‖π_ref), k1 estimator over the policy's samples"),
    MetricInfo("kl_k3", None, "nats", "sequence KL(π‖π_ref), k3 estimator over the policy's samples"),
    MetricInfo("kl_token_exact", None, "nats",
               "Σ_t KL(π(·|x,y<t)‖π_ref(·|x,y<t)) over the vocabulary, along the policy's samples"),
)
def kl(s: ScoredSamples) -> dict[str, Estimate]:
    return {
        "kl_k1": mean_with_stderr(per_prompt(kl_k1(s.policy_logps, s.reference_logps))),
        "kl_k3": mean_with_stderr(per_prompt(kl_k3(s.policy_logps, s.reference_logps))),
        "kl_token_exact": mean_with_stderr(per_prompt(s.token_kl)),
    }


@register_evaluator(
    "length",
    MetricInfo("completion_tokens", None, "tokens", "mean completion length of the policy's samples"),
)
def length(s: ScoredSamples) -> dict[str, Estimate]:
    return {"completion_tokens": mean_with_stderr(per_prompt(s.lengths))}


@register_evaluator(
    "entropy",
    MetricInfo("token_entropy", None, "nats/token",
               "mean per-token entropy of π(·|x,y<t) along the policy's own samples"),
)
def entropy(s: ScoredSamples) -> dict[str, Estimate]:
    if s.entropy is None or not np.isfinite(s.entropy).all():
        return {}
    return {"token_entropy": mean_with_stderr(per_prompt(s.entropy))}


@register_evaluator(
    "diversity",
    MetricInfo("distinct_1", None, "fraction", "unique words / all words over the policy's samples (no CI)"),
    MetricInfo("distinct_2", None, "fraction", "unique word bigrams / all bigrams over the policy's samples (no CI)"),
    MetricInfo("distinct_1_per_prompt", None, "fraction",
               "unique words / all words among a prompt's samples, mean over prompts"),
    MetricInfo("distinct_2_per_prompt", None, "fraction",
               "unique word bigrams / all bigrams among a prompt's samples, mean over prompts"),
    MetricInfo("self_bleu", None, "fraction",
               "mean sentence BLEU of a sample against the other samples of its prompt (lower: more diverse)"),
)
def diversity(s: ScoredSamples) -> dict[str, Estimate]:
    if s.completions is None:
        return {}
    texts = [list(row) for row in s.completions]
    out = {}
    for n in (1, 2):
        out[f"distinct_{n}"] = distinct_n(texts, n)
        per_prompt_ = distinct_n_per_prompt(texts, n, resamples=s.bootstrap, seed=s.seed)
        if per_prompt_ is not None:
            out[f"distinct_{n}_per_prompt"] = per_prompt_
    bleu = self_bleu(texts, resamples=s.bootstrap, seed=s.seed)
    if bleu is not None:
        out["self_bleu"] = bleu
    return out
