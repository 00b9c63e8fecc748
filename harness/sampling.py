"""The sampling parameters every generation path shares (evaluation, the sandbox's data, SPIN's
self-play), their validation, and their translation for vLLM. No torch here: suites validate
with it.

The defaults draw from the model's own, untruncated distribution (temperature 1, top_k 0 = off,
top_p 1): every KL and reward estimate of the harness assumes samples from π (for y ~ π,
E[log π(y) + Σ_t H_t] = 0, which truncation breaks).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SamplingConfig:
    """How to sample: n completions per prompt, each at most max_new_tokens long.

    temperature: divides the logits (0: greedy); top_k: keep the k likeliest tokens (0: off);
    top_p: keep the smallest set of tokens whose probability reaches p (1: off). The defaults
    sample from π itself, which every KL and reward estimate of the harness assumes.
    logprobs: also return each sampled token's log-prob under the model (transformers: one
    teacher-forced pass per batch after generation, exact in the model's dtype; vLLM: from the
    engine, its raw logits before temperature and top-p).
    """

    n: int = 1
    max_new_tokens: int = 24
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    batch_size: int = 128
    seed: int = 0
    logprobs: bool = False


def sampling_problem(*, temperature: float, top_k: int, top_p: float, max_new_tokens: int) -> str | None:
    """What is wrong with these sampling parameters (one phrase naming the key), or None."""
    if not temperature >= 0:
        return f"temperature = {temperature!r} must be >= 0 (0: greedy, 1: the model's own distribution)"
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        return f"top_k = {top_k!r} must be an integer >= 0 (0: off, every token may be drawn)"
    if not 0 < top_p <= 1:
        return f"top_p = {top_p!r} must be in (0, 1] (1: off)"
    if not max_new_tokens >= 1:
        return f"max_new_tokens = {max_new_tokens!r} must be at least 1"
    return None


def untruncated(config: SamplingConfig) -> bool:
    """Whether `config` samples from the model's own distribution (what the KL estimators need)."""
    return config.temperature == 1.0 and config.top_k == 0 and config.top_p == 1.0


def sampling_fields(config) -> dict:
    """The distribution-shaping parameters of a SamplingConfig or an EvalConfig, for manifests
    and reports."""
    return {k: getattr(config, k) for k in ("temperature", "top_k", "top_p", "max_new_tokens")}


def vllm_sampling_kwargs(config: SamplingConfig, *, seed: int, stop_ids: list[int]) -> dict:
    """The keyword arguments of vLLM's SamplingParams that sample as `config` does with
    transformers: the same temperature, top-k (vLLM's "off" is -1, where transformers' is 0),
    top-p, length and stop tokens (every end-of-turn id), and vLLM's other processors at their
    neutral values."""
    sample = config.temperature > 0
    return {
        "n": config.n, "temperature": config.temperature,
        "top_k": config.top_k if sample and config.top_k > 0 else -1,
        "top_p": config.top_p if sample else 1.0,
        "min_p": 0.0, "repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0,
        "max_tokens": config.max_new_tokens, "seed": seed, "stop_token_ids": list(stop_ids),
        "logprobs": 0 if config.logprobs else None, "skip_special_tokens": True,
    }
