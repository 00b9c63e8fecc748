"""harness.logprobs against the naive computation (whole logits, log_softmax, gather) on tiny
random models built from configs (no downloads)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from harness import logprobs

VOCAB = 100
ATOL = 1e-5


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    return LlamaForCausalLM(config).eval()


def tiny_gpt2(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                        bos_token_id=1, eos_token_id=2)
    return GPT2LMHeadModel(config).eval()  # eval: GPT-2 has dropout


def batch(seed: int = 0):
    """Right-padded rows of different lengths; completions after a 2–4 token prompt."""
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, VOCAB, (3, 12), generator=gen)
    attention_mask = torch.ones_like(input_ids)
    completion_mask = torch.zeros_like(input_ids, dtype=torch.bool)
    for row, (prompt, length) in enumerate([(2, 12), (4, 9), (3, 6)]):
        attention_mask[row, length:] = 0
        input_ids[row, length:] = 0
        completion_mask[row, prompt:length] = True
    return input_ids, attention_mask, completion_mask


def naive_logits(model, input_ids, attention_mask):
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
    return torch.cat([logits[:, :1], logits[:, :-1]], dim=1)


def naive_token_logps(model, input_ids, attention_mask, completion_mask):
    logps = F.log_softmax(naive_logits(model, input_ids, attention_mask), dim=-1)
    return logps.gather(2, input_ids.unsqueeze(-1)).squeeze(-1) * completion_mask


def naive_kl(policy_logits, reference_logits, completion_mask):
    policy, reference = F.log_softmax(policy_logits, -1), F.log_softmax(reference_logits, -1)
    return (reference.exp() * (reference - policy)).sum(-1) * completion_mask


def naive_entropy(logits, completion_mask):
    logps = F.log_softmax(logits, -1)
    return -(logps.exp() * logps).sum(-1) * completion_mask


MODELS = {"llama": tiny_llama, "gpt2": tiny_gpt2}


@pytest.mark.parametrize("make", MODELS.values(), ids=MODELS.keys())
def test_hidden_path_is_used(make):
    """Both architectures take the memory-efficient path (else the memory claim silently fails)."""
    model = make()
    ids, mask, _ = batch()
    assert logprobs._hidden_path(model, ids, mask) is not None


@pytest.mark.parametrize("chunk_size", [1, 5, 1024])
@pytest.mark.parametrize("make", MODELS.values(), ids=MODELS.keys())
def test_token_logps_match_naive(make, chunk_size):
    model = make()
    ids, mask, completion = batch()
    got = logprobs.completion_token_logps(model, ids, mask, completion, chunk_size=chunk_size)
    expected = naive_token_logps(model, ids, mask, completion)
    assert got.shape == ids.shape and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
    assert (got[~completion] == 0).all()


@pytest.mark.parametrize("make", MODELS.values(), ids=MODELS.keys())
def test_gradients_match_naive(make):
    """Checkpointed chunks give the same parameter gradients as the whole-logits computation."""
    model = make()
    ids, mask, completion = batch(1)
    weights = torch.randn(ids.shape, generator=torch.Generator().manual_seed(0))
    got_logps = logprobs.completion_token_logps(model, ids, mask, completion, chunk_size=4)
    (got_logps * weights).sum().backward()
    got = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    (naive_token_logps(model, ids, mask, completion) * weights).sum().backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(got[name], p.grad, atol=ATOL, rtol=1e-4, msg=name)


@pytest.mark.parametrize("make", MODELS.values(), ids=MODELS.keys())
def test_logps_and_vocab_kl_match_naive(make):
    policy, reference = make(0), make(1)
    ids, mask, completion = batch(2)
    policy_logps, reference_logps, kl = logprobs.completion_logps_and_vocab_kl(
        policy, reference, ids, mask, completion, chunk_size=7
    )
    policy_logits = naive_logits(policy, ids, mask)
    reference_logits = naive_logits(reference, ids, mask)
    expected_policy = naive_token_logps(policy, ids, mask, completion)
    expected_reference = naive_token_logps(reference, ids, mask, completion)
    torch.testing.assert_close(policy_logps, expected_policy, atol=ATOL, rtol=0)
    torch.testing.assert_close(reference_logps, expected_reference, atol=ATOL, rtol=0)
    expected_kl = naive_kl(policy_logits, reference_logits, completion)
    torch.testing.assert_close(kl, expected_kl, atol=ATOL, rtol=0)
    assert (kl[completion] > 0).all() and (kl[~completion] == 0).all()
    assert not reference_logps.requires_grad and kl.requires_grad


def test_kl_gradient_matches_naive_and_spares_the_reference():
    """d(Σ KL)/dθ equals the naive one; the reference gets no gradient even if left trainable."""
    policy, reference = tiny_llama(0), tiny_llama(1)
    ids, mask, completion = batch(3)
    _, _, kl = logprobs.completion_logps_and_vocab_kl(
        policy, reference, ids, mask, completion, chunk_size=4
    )
    kl.sum().backward()
    assert all(p.grad is None for p in reference.parameters())
    got = {name: p.grad.clone() for name, p in policy.named_parameters()}
    policy.zero_grad()
    with torch.no_grad():
        reference_logits = naive_logits(reference, ids, mask)
    naive_kl(naive_logits(policy, ids, mask), reference_logits, completion).sum().backward()
    for name, p in policy.named_parameters():
        torch.testing.assert_close(got[name], p.grad, atol=ATOL, rtol=1e-4, msg=name)


def test_entropy_matches_naive():
    model = tiny_llama()
    ids, mask, completion = batch(4)
    stats = logprobs.completion_stats(model, ids, mask, completion, entropy=True, chunk_size=3)
    expected = naive_entropy(naive_logits(model, ids, mask), completion)
    torch.testing.assert_close(stats.entropy, expected, atol=ATOL, rtol=0)
    assert stats.reference_token_logps is None and stats.vocab_kl is None


def test_head_only_sees_completion_chunks():
    """The LM head is applied to at most chunk_size rows at a time (plus the one-off 8-token probe),
    never to the whole (B, T) batch."""
    model = tiny_llama()
    ids, mask, completion = batch(5)
    rows_seen = []
    def record(module, args, out):
        rows_seen.append(out.shape[:-1].numel())

    hook = model.lm_head.register_forward_hook(record)
    try:
        out = logprobs.completion_token_logps(model, ids, mask, completion, chunk_size=4)
        out.sum().backward()  # the recomputation in backward is chunked too
    finally:
        hook.remove()
    assert rows_seen and max(rows_seen) <= 8 < ids.numel()


class _LogitsOnly(torch.nn.Module):
    """A causal LM that is not an HF PreTrainedModel: only forward(...).logits is available."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask)


def test_fallback_for_non_hf_models_and_postprocessed_logits():
    ids, mask, completion = batch(6)
    wrapped = _LogitsOnly(tiny_llama())
    assert logprobs._hidden_path(wrapped, ids, mask) is None
    torch.testing.assert_close(
        logprobs.completion_token_logps(wrapped, ids, mask, completion),
        naive_token_logps(wrapped, ids, mask, completion), atol=ATOL, rtol=0,
    )
    capped = tiny_llama()
    capped.config.final_logit_softcapping = 30.0  # head(hidden) would no longer be the logits
    assert logprobs._hidden_path(capped, ids, mask) is None


def test_probe_rejects_a_model_whose_head_is_not_the_logits():
    """A model that rescales its logits after the head, without declaring it in its config."""
    model = tiny_llama()
    original = model.forward

    def scaled_forward(*args, **kwargs):
        out = original(*args, **kwargs)
        out.logits = out.logits * 2.0
        return out

    model.forward = scaled_forward
    ids, mask, completion = batch(7)
    assert logprobs._hidden_path(model, ids, mask) is None
    torch.testing.assert_close(
        logprobs.completion_token_logps(model, ids, mask, completion),
        naive_token_logps(model, ids, mask, completion), atol=ATOL, rtol=0,
    )


def test_empty_completion_and_sequence_logps():
    model = tiny_llama()
    ids, mask, completion = batch()
    nothing = torch.zeros_like(completion)
    assert (logprobs.completion_token_logps(model, ids, mask, nothing) == 0).all()
    token_logps = logprobs.completion_token_logps(model, ids, mask, completion)
    summed, counts = logprobs.sequence_logps(token_logps, completion)
    torch.testing.assert_close(summed, (token_logps * completion).sum(-1))
    torch.testing.assert_close(counts, torch.tensor([10.0, 5.0, 3.0]))


def test_whole_logits_helpers_are_underflow_safe():
    """completion_kl / completion_entropy (kept for callers holding logits) give finite values
    where a softmax underflows to 0 (log_softmax on both sides, never softmax().log())."""
    policy = torch.tensor([[[0.0, -1e4, 5.0]]])
    reference = torch.tensor([[[0.0, -1e5, 1.0]]])
    mask = torch.ones(1, 1)
    kl = logprobs.completion_kl(reference, policy, mask)  # KL(π_ref ‖ πθ), as naive_kl computes
    assert torch.isfinite(kl).all() and kl.item() > 0
    assert torch.isfinite(logprobs.completion_entropy(policy, mask)).all()
    torch.testing.assert_close(kl, naive_kl(policy, reference, mask))


def test_vocab_kl_requires_a_reference():
    ids, mask, completion = batch()
    with pytest.raises(ValueError, match="reference"):
        logprobs.completion_stats(tiny_llama(), ids, mask, completion, vocab_kl=True)


def test_bfloat16_model_gives_float32_results():
    """A bf16 model: results are float32 and agree with the naive path to bf16 precision (the head
    runs on (N, H) rows instead of (B, T, H), so matmul accumulation order may differ)."""
    model = tiny_llama().to(torch.bfloat16)
    ids, mask, completion = batch(8)
    got = logprobs.completion_token_logps(model, ids, mask, completion, chunk_size=4)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, naive_token_logps(model, ids, mask, completion), atol=5e-2, rtol=0)


def test_completion_kl_takes_the_expectation_under_its_first_argument():
    """Hand-derived, p = (0.5, 0.5), q = (0.9, 0.1):
    KL(p ‖ q) = 0.5 ln(0.5/0.9) + 0.5 ln(0.5/0.1) = 0.5·(−0.587787) + 0.5·1.609438 = 0.510826;
    KL(q ‖ p) = 0.9 ln(0.9/0.5) + 0.1 ln(0.1/0.5) = 0.9·0.587787 − 0.1·1.609438 = 0.368064."""
    p, q = torch.tensor([[[0.5, 0.5]]]).log(), torch.tensor([[[0.9, 0.1]]]).log()
    mask = torch.ones(1, 1)
    torch.testing.assert_close(logprobs.completion_kl(p, q, mask), torch.tensor([[0.510826]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(logprobs.completion_kl(q, p, mask), torch.tensor([[0.368064]]), atol=1e-6, rtol=0)
