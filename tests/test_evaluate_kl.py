"""KL estimators against exact answers: k1 and k3 on two categorical distributions, and the exact
per-token KL (and entropy) of score_completions on a pair of tiny models whose sequence KL can
be computed by enumerating every completion."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from harness.sandbox.lm import fit_tokenizer
from harness.evaluate.metrics import kl, kl_k1, kl_k3
from harness.evaluate.policy import score_completions
from harness.evaluate.registry import ScoredSamples
from harness.generation import Completion


def test_k1_and_k3_estimate_the_kl_of_two_categoricals():
    """p = (0.5, 0.3, 0.15, 0.05), q = (0.25, 0.25, 0.25, 0.25): KL(p‖q) = Σ p log(p/q)
    = 0.5·ln 2 + 0.3·ln 1.2 + 0.15·ln 0.6 + 0.05·ln 0.2
    = 0.34657 + 0.05470 − 0.07662 − 0.08047 = 0.24417 nats. From 200 000 samples of p
    both means are within 4 standard errors of it; k3 is never negative, k1 sometimes is."""
    p = np.array([0.5, 0.3, 0.15, 0.05])
    q = np.full(4, 0.25)
    exact = float(np.sum(p * np.log(p / q)))
    assert exact == pytest.approx(0.24417, abs=1e-5)
    y = np.random.default_rng(0).choice(4, size=200_000, p=p)
    logp, logq = np.log(p[y]), np.log(q[y])
    for values in (kl_k1(logp, logq), kl_k3(logp, logq)):
        stderr = values.std(ddof=1) / np.sqrt(values.size)
        assert abs(values.mean() - exact) < 4 * stderr
    assert (kl_k3(logp, logq) >= 0).all() and (kl_k1(logp, logq) < 0).any()


def test_k3_is_stable_for_tiny_and_large_log_ratios():
    assert kl_k3(np.array([0.0]), np.array([1e-12]))[0] == pytest.approx(5e-25, rel=1e-6)  # ≈ x²/2
    assert np.isfinite(kl_k3(np.array([0.0]), np.array([300.0]))[0])


@pytest.fixture(scope="module")
def model_pair():
    """Two random tiny Llamas over an 8-token vocabulary (4 specials + 4 words), and its tokenizer."""
    tokenizer = fit_tokenizer(["a b c d"])

    def model(seed: int) -> LlamaForCausalLM:
        torch.manual_seed(seed)
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                             num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=16,
                             pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id)
        m = LlamaForCausalLM(config)
        with torch.no_grad():  # sharpen the distributions so that the KL is not tiny
            m.lm_head.weight.mul_(30.0)
        return m.eval()

    return model(0), model(1), tokenizer


def _all_two_token_completions(policy, reference, tokenizer):
    vocab = len(tokenizer)
    samples = [Completion(0, i, "", ids) for i, ids in enumerate(itertools.product(range(vocab), repeat=2))]
    return samples, score_completions(policy, reference, tokenizer, ["a"], samples, batch_size=16)


def test_exact_per_token_kl_matches_the_enumerated_sequence_kl(model_pair):
    """Over all V² two-token completions y: π(y) = exp(policy_logp) sums to 1, and
    KL(π‖π_ref) = Σ_y π(y) (log π(y) − log π_ref(y)) (enumeration). The per-token path gives
    Σ_t KL(π(·|y<t)‖π_ref(·|y<t)) per y, whose expectation under π is the same number by the
    chain rule; the reversed KL(π_ref‖π) is a different number (the direction is right)."""
    policy, reference, tokenizer = model_pair
    _, scores = _all_two_token_completions(policy, reference, tokenizer)
    prob = np.exp(scores["policy_logp"])
    assert prob.sum() == pytest.approx(1.0, abs=1e-5)
    exact = float(np.sum(prob * (scores["policy_logp"] - scores["reference_logp"])))
    reverse = float(np.sum(np.exp(scores["reference_logp"]) * (scores["reference_logp"] - scores["policy_logp"])))
    assert exact > 0.05 and abs(exact - reverse) > 0.01
    assert float(np.sum(prob * scores["token_kl"])) == pytest.approx(exact, rel=1e-4, abs=1e-6)

    # and the sample-based estimators converge to it: draw 20 000 completions from π
    rng = np.random.default_rng(0)
    y = rng.choice(len(prob), size=20_000, p=prob / prob.sum())
    draws = (scores["policy_logp"][y][:, None], scores["reference_logp"][y][:, None])
    s = ScoredSamples(rewards=None, baseline_rewards=None, policy_logps=draws[0], reference_logps=draws[1],
                      token_kl=scores["token_kl"][y][:, None], lengths=None, bootstrap=0, seed=0)
    for name, est in kl(s).items():
        assert abs(est.value - exact) < 4 * est.stderr + 1e-6, name


def test_entropy_is_the_mean_per_token_entropy_along_the_sample(model_pair):
    """For y = (y1, y2): entropy = (H(π(·|x)) + H(π(·|x, y1))) / 2, with both distributions read
    off the enumeration: π(y1) = Σ_y2 π(y1, y2) and π(y2|y1) = π(y1, y2) / π(y1)."""
    policy, reference, tokenizer = model_pair
    vocab = len(tokenizer)
    _, scores = _all_two_token_completions(policy, reference, tokenizer)
    joint = np.exp(scores["policy_logp"]).reshape(vocab, vocab)
    first = joint.sum(1)
    h1 = -np.sum(first * np.log(first))
    for y1 in range(vocab):
        second = joint[y1] / first[y1]
        h2 = -np.sum(second * np.log(second))
        got = scores["entropy"][y1 * vocab : (y1 + 1) * vocab]
        assert got == pytest.approx(np.full(vocab, (h1 + h2) / 2), rel=1e-4)


def test_token_logps_are_stored_per_token_and_sum_to_the_sequence(model_pair):
    policy, reference, tokenizer = model_pair
    samples, scores = _all_two_token_completions(policy, reference, tokenizer)
    sums = np.array([t.sum() for t in scores["token_logps"]])
    assert all(len(t) == 2 for t in scores["token_logps"])
    assert sums == pytest.approx(scores["policy_logp"], abs=1e-5)


def test_the_start_model_against_itself_has_zero_kl(model_pair):
    policy, _, tokenizer = model_pair
    samples = [Completion(0, 0, "", (4, 5, 2))]
    scores = score_completions(policy, policy, tokenizer, ["a"], samples)
    assert scores["token_kl"][0] == pytest.approx(0.0, abs=1e-7)
    assert scores["policy_logp"][0] == scores["reference_logp"][0]
