"""Samples come from the policy itself: every sampling parameter is explicit, the defaults are
untruncated (transformers' own default top_k of 50 never applies), and both backends get the
same parameters.

Checked against the model's own distribution on a small random Llama whose vocabulary (the
sandbox's, about 160 words) is larger than 50, with logits spread enough that truncation shows:
- goodness of fit (scipy's chi-square) of the first sampled token against softmax(logits);
- the identity E[log π(y) + Σ_t H_t(π)] = 0 for y ~ π, where H_t is the entropy of π at step t
  along y (each step's term has conditional mean E_π[log π] + H = 0). A top-k sampler draws
  likelier tokens, so the mean is positive: the old top-50 behaviour fails both checks.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from harness.errors import HarnessError
from harness.evaluate.policy import score_completions
from harness.generation import generation_config, sample_completions
from harness.sampling import SamplingConfig, sampling_problem, untruncated, vllm_sampling_kwargs

PROMPT = "the movie was"


def spread_llama(tokenizer, hidden_size: int):
    """A 1-layer random Llama over `tokenizer` (more than 50 tokens, so that top-k 50 truncation
    shows), its output layer scaled so that the next-token logits have a standard deviation of
    about 2 (far from uniform). Two heads: head size hidden_size / 2."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=64, tie_word_embeddings=False, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, 2.0 / hidden_size**0.5)
    assert len(tokenizer) > 50
    return model


@pytest.fixture(scope="module")
def random_model(harness_cache):
    """A 1-layer random Llama over the tiny sandbox's tokenizer, its output layer scaled so that
    the next-token logits have a standard deviation of about 2 (far from uniform)."""
    from harness.sandbox.world import SandboxConfig, load_or_build_sandbox
    from harness.models import load_tokenizer
    from tests.conftest import TINY_SANDBOX

    sandbox, _ = load_or_build_sandbox(SandboxConfig.from_dict(TINY_SANDBOX, "tests"), verbose=False)
    tokenizer = load_tokenizer(str(sandbox.sft_dir))
    return spread_llama(tokenizer, hidden_size=32), tokenizer


def _first_token_probs(model, tokenizer) -> np.ndarray:
    from harness.data.tokenize import encode_prompts

    input_ids, attention_mask = encode_prompts(tokenizer, [PROMPT], device=torch.device("cpu"))
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[0, -1]
    return torch.softmax(logits.double(), -1).numpy()


def _chisquare_first_token(model, tokenizer, config: SamplingConfig, *, backend: str = "transformers") -> tuple[float, int]:
    """p-value of the first sampled tokens' counts against softmax(logits) (bins with fewer
    than 5 expected draws pooled, as the test's approximation needs), and the distinct count.
    (Also the vLLM backend's check: tests/test_vllm_backend.py.)"""
    samples = sample_completions(model, tokenizer, [PROMPT], config, backend=backend)
    first = np.array([s.token_ids[0] for s in samples])
    probs = _first_token_probs(model, tokenizer)
    expected = probs * len(first)
    observed = np.bincount(first, minlength=len(probs)).astype(float)
    small = expected < 5
    f_obs, f_exp = observed[~small], expected[~small]
    if small.any():  # (an empty pooled bin would make the statistic 0/0)
        f_obs, f_exp = np.append(f_obs, observed[small].sum()), np.append(f_exp, expected[small].sum())
    return float(stats.chisquare(f_obs, f_exp).pvalue), len(set(first.tolist()))


def test_first_tokens_follow_the_models_own_distribution(random_model):
    """4000 draws of the first token: untruncated sampling fits softmax(logits) (p well above
    0.001) and draws more than 50 distinct tokens; top_k=50 (transformers' old default, what
    the harness used to get) cannot draw the other ~110 tokens and fails the test outright."""
    model, tokenizer = random_model
    p, distinct = _chisquare_first_token(model, tokenizer, SamplingConfig(n=4000, max_new_tokens=1, seed=1,
                                                                         batch_size=4000))
    assert p > 1e-3 and distinct > 50
    p_top50, distinct_top50 = _chisquare_first_token(
        model, tokenizer, SamplingConfig(n=4000, max_new_tokens=1, seed=1, batch_size=4000, top_k=50))
    assert p_top50 < 1e-12 and distinct_top50 <= 50


def _identity_z(model, tokenizer, config: SamplingConfig, *, backend: str = "transformers") -> float:
    """z = mean / standard error of d = log π(y) + Σ_t H_t over the samples."""
    samples = sample_completions(model, tokenizer, [PROMPT], config, backend=backend)
    scores = score_completions(model, model, tokenizer, [PROMPT], samples, batch_size=512)
    lengths = np.array([len(s.token_ids) for s in samples])
    d = scores["policy_logp"] + scores["entropy"] * lengths  # entropy is the per-token mean
    return float(d.mean() / (d.std(ddof=1) / np.sqrt(len(d))))


def test_log_prob_plus_entropy_has_mean_zero_only_for_untruncated_samples(random_model):
    """2000 completions of up to 4 tokens: |z| < 3 for samples from π; with top_k=50 every step
    draws likelier tokens than π would, and z is far above 3."""
    model, tokenizer = random_model
    base = SamplingConfig(n=2000, max_new_tokens=4, seed=2, batch_size=2000)
    assert abs(_identity_z(model, tokenizer, base)) < 3
    assert _identity_z(model, tokenizer, SamplingConfig(**{**base.__dict__, "top_k": 50})) > 10


def test_transformers_gets_top_k_off_explicitly(random_model):
    """transformers fills a None top_k with 50; the harness gives 0 (off), and generate builds no
    top-k or top-p warper for the default config even when the checkpoint recommends some."""
    from transformers import GenerationConfig

    model, tokenizer = random_model
    generation = generation_config(SamplingConfig(), tokenizer)
    assert generation.top_k == 0 and generation.top_p == 1.0 and generation.temperature == 1.0
    assert GenerationConfig().top_k is None  # what the old code left to transformers' default (50)
    model.generation_config = GenerationConfig(top_k=5, top_p=0.5, temperature=0.3)  # a checkpoint's advice
    try:
        p, distinct = _chisquare_first_token(model, tokenizer, SamplingConfig(n=4000, max_new_tokens=1, seed=3,
                                                                             batch_size=4000))
    finally:
        model.generation_config = GenerationConfig()
    assert p > 1e-3 and distinct > 50
    assert isinstance(model.generation_config, GenerationConfig)  # restored after sampling


def test_vllm_gets_the_same_parameters():
    """The one mapping to vLLM's SamplingParams: top_k 0 (off) is vLLM's -1; the rest as given,
    vLLM's own extra processors neutral."""
    default = vllm_sampling_kwargs(SamplingConfig(n=3, max_new_tokens=7), seed=5, stop_ids=[2])
    assert default["top_k"] == -1 and default["top_p"] == 1.0 and default["temperature"] == 1.0
    assert (default["n"], default["max_tokens"], default["seed"], default["stop_token_ids"]) == (3, 7, 5, [2])
    assert default["min_p"] == 0.0 and default["repetition_penalty"] == 1.0
    truncated = vllm_sampling_kwargs(SamplingConfig(temperature=0.7, top_k=40, top_p=0.9), seed=0, stop_ids=[2, 7])
    assert (truncated["temperature"], truncated["top_k"], truncated["top_p"]) == (0.7, 40, 0.9)
    assert truncated["stop_token_ids"] == [2, 7]  # every end-of-turn id of the model
    assert untruncated(SamplingConfig()) and not untruncated(SamplingConfig(top_k=50))


def test_sampling_parameters_are_validated_and_part_of_the_run_identity(tmp_path):
    from harness.plan import plan_suite
    from harness.suite import load_suite

    assert sampling_problem(temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=1) is None
    path = tmp_path / "s.yaml"
    for bad, key in (("top_k: -1", "evaluate.top_k"), ("top_p: 0", "evaluate.top_p"),
                     ("temperature: -0.5", "evaluate.temperature")):
        path.write_text(f"name: s\nmethods: [dpo]\nevaluate: {{{bad}}}\n")
        with pytest.raises(HarnessError, match=key):
            load_suite(path)
    path.write_text("name: s\nmethods: [dpo]\n")
    default = plan_suite(load_suite(path))
    assert default[0].identity()["evaluate"]["top_k"] == 0
    other = plan_suite(load_suite(path, ["evaluate.top_k=50"]))
    assert {s.run_id for s in default}.isdisjoint({s.run_id for s in other})


def test_sandbox_and_spin_sample_with_explicit_parameters():
    from harness.sandbox.world import SandboxConfig
    from harness.losses import get_loss
    from harness.losses.regimes import resolve_method_hparams

    config = SandboxConfig()
    assert untruncated(config.sampling(24)) and config.sampling(16).max_new_tokens == 16
    assert SandboxConfig.from_dict({"sample_top_k": 50}, "s").key() != config.key()
    with pytest.raises(HarnessError, match="sandbox.sample_top_p"):
        SandboxConfig.from_dict({"sample_top_p": 1.5}, "s")
    spin = resolve_method_hparams(get_loss("spin"), {}).regime
    assert (spin["gen_temperature"], spin["gen_top_k"], spin["gen_top_p"]) == (1.0, 0, 1.0)
    with pytest.raises(HarnessError, match="gen_top_k"):
        resolve_method_hparams(get_loss("spin"), {"gen_top_k": -1})
