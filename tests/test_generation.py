"""Generation: one interface, two backends. The transformers backend on the tiny sandbox model
(n samples per prompt, seeded, token log-probs under the policy); the backend choice; and the
vLLM backend against the same contract where vLLM and a GPU are present."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from harness.errors import HarnessError
from harness.evaluate.policy import score_completions
from harness.generation import SamplingConfig, resolve_backend, sample_completions

PROMPTS = ["the movie was", "i think the food felt", "the plot seemed"]


@pytest.fixture(scope="module")
def sandbox_model(harness_cache):
    from harness.sandbox.world import SandboxConfig, load_or_build_sandbox
    from harness.models import load_policy, load_tokenizer
    from tests.conftest import TINY_SANDBOX

    sandbox, _ = load_or_build_sandbox(SandboxConfig.from_dict(TINY_SANDBOX, "tests"), verbose=False)
    tokenizer = load_tokenizer(str(sandbox.sft_dir))
    return load_policy(str(sandbox.sft_dir), torch.device("cpu")), tokenizer


def test_n_samples_per_prompt_in_order_and_seeded(sandbox_model):
    model, tokenizer = sandbox_model
    config = SamplingConfig(n=3, max_new_tokens=8, seed=7, batch_size=2)
    samples = sample_completions(model, tokenizer, PROMPTS, config, progress="sampling")
    assert [(s.prompt_id, s.sample) for s in samples] == [(p, k) for p in range(3) for k in range(3)]
    for s in samples:
        ids = list(s.token_ids)
        assert 1 <= len(ids) <= 8
        assert tokenizer.eos_token_id not in ids[:-1]  # cut after the first EOS
        assert s.token_logps is None  # not asked
    again = sample_completions(model, tokenizer, PROMPTS, config)
    assert [s.token_ids for s in again] == [s.token_ids for s in samples]
    other = sample_completions(model, tokenizer, PROMPTS, SamplingConfig(n=3, max_new_tokens=8, seed=8, batch_size=2))
    assert [s.token_ids for s in other] != [s.token_ids for s in samples]


def test_token_logps_are_the_policys_and_do_not_change_the_samples(sandbox_model):
    """logprobs=True adds log π(y_t|x,y<t) per sampled token (temperature 1, not the sampling
    distribution): equal to the evaluation's teacher-forced scores, and the ids are unchanged."""
    model, tokenizer = sandbox_model
    plain = sample_completions(model, tokenizer, PROMPTS, SamplingConfig(n=2, max_new_tokens=10, seed=3, temperature=0.7))
    with_logps = sample_completions(model, tokenizer, PROMPTS,
                                    SamplingConfig(n=2, max_new_tokens=10, seed=3, temperature=0.7, logprobs=True))
    assert [s.token_ids for s in with_logps] == [s.token_ids for s in plain]
    scores = score_completions(model, model, tokenizer, PROMPTS, with_logps)
    for s, expected in zip(with_logps, scores["token_logps"]):
        assert len(s.token_logps) == len(s.token_ids)
        assert np.asarray(s.token_logps) == pytest.approx(expected, abs=1e-4)
        assert max(s.token_logps) <= 0.0


def test_backend_is_chosen_in_one_place(monkeypatch):
    import harness.generation as generation

    monkeypatch.setattr(generation, "vllm_available", lambda: False)
    assert resolve_backend("auto") == "transformers"
    assert resolve_backend("transformers") == "transformers"
    with pytest.raises(HarnessError, match=r'pip install "harness\[vllm\]"'):
        resolve_backend("vllm")
    with pytest.raises(HarnessError, match="unknown generation backend"):
        resolve_backend("tgi")
    monkeypatch.setattr(generation, "vllm_available", lambda: True)
    assert resolve_backend("vllm") == "vllm"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_backend("auto") == "transformers"  # vLLM's CPU build runs when asked for, not by default
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_backend("auto") == "vllm"


def test_a_suite_with_an_unknown_backend_is_refused(tmp_path):
    from harness.suite import load_suite

    path = tmp_path / "s.yaml"
    path.write_text("name: s\nmethods: [dpo]\nevaluate: {backend: vllmm}\n")
    with pytest.raises(HarnessError, match="did you mean 'vllm'"):
        load_suite(path)
    path.write_text("name: s\nmethods: [dpo]\nevaluate: {lm_eval_tasks: sandbox_grammar_mc}\n")
    assert load_suite(path).evaluate.lm_eval_tasks == ("sandbox_grammar_mc",)


if importlib.util.find_spec("vllm") is None:
    VLLM_SKIP = 'vLLM is not installed (pip install "harness[vllm]")'
elif not torch.cuda.is_available():
    VLLM_SKIP = "vLLM is installed but needs a CUDA GPU"
else:
    VLLM_SKIP = ""


@pytest.mark.gpu
@pytest.mark.skipif(bool(VLLM_SKIP), reason=VLLM_SKIP)
def test_vllm_backend_keeps_the_contract(sandbox_model):
    model, tokenizer = sandbox_model
    model = model.to("cuda")
    config = SamplingConfig(n=2, max_new_tokens=10, seed=0, logprobs=True)
    samples = sample_completions(model, tokenizer, PROMPTS, config, backend="vllm")
    assert [(s.prompt_id, s.sample) for s in samples] == [(p, k) for p in range(3) for k in range(2)]
    scores = score_completions(model, model, tokenizer, PROMPTS, samples)
    for s, expected in zip(samples, scores["token_logps"]):
        assert 1 <= len(s.token_ids) <= 10
        if s.token_logps is not None:
            assert np.asarray(s.token_logps) == pytest.approx(expected, abs=5e-2)


def test_the_throughput_benchmark_runs_at_a_tiny_shape(capsys):
    """benchmarks/generation_throughput.py on CPU: a transformers line, and `ratio: n/a` without vLLM."""
    import importlib.util as iu
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "generation_throughput.py"
    spec = iu.spec_from_file_location("generation_throughput", path)
    script = iu.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--device", "cpu", "--prompts", "4", "--n", "2", "--max-new-tokens", "4",
                        "--repeats", "1", "--backends", "transformers"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    cold, warm = json.loads(lines[1]), json.loads(lines[2])
    assert (cold["backend"], cold["phase"], warm["phase"]) == ("transformers", "cold", "warm")
    assert cold["samples"] == warm["samples"] == 8 and warm["tokens"] > 0 and warm["samples_per_s"] > 0
    assert lines[-1] == "ratio: n/a"
