"""Packed rows (harness.data.packing): the layout by hand, and the same log-probs, gradients,
reference sums and trained weights as the padded batch on real HF architectures."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch
from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, MistralConfig,
                          MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM)

from harness import logprobs
from harness.data.packing import pack_batch, pack_sequences
from harness.data.tokenize import Encoded
from harness.losses import get_loss
from harness.suite import Budget, TrainConfig
from harness.data.batches import PairedData
from harness.train.loop import TrainSetup, train_policy
from harness.train.reference import reference_sums

VOCAB = 50


def right_padded(rows: list[list[int]], prompt_lengths: list[int], width: int | None = None):
    width = width or max(map(len, rows))
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    completion = torch.zeros_like(ids, dtype=torch.bool)
    for i, (row, prompt) in enumerate(zip(rows, prompt_lengths)):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
        completion[i, prompt : len(row)] = True
    return ids, mask, completion


# ----------------------------------------------------------------------------------------------
# The layout, derived by hand


def test_shared_prompts_form_one_tree_with_ancestor_attention():
    # s0 and s1 share the prompt [1, 5]; s2 has the prompt [1] (another tree, though it also starts with 1)
    ids, mask, completion = right_padded([[1, 5, 6, 7], [1, 5, 8], [1, 2, 3]], [2, 2, 1])
    layout = pack_sequences(ids, mask, completion, share_prompts=True)
    # tree A: nodes 1,5,6,7 (s0) then 8 (s1 branches after 5): 5 nodes; tree B: 1,2,3. Rows of 5.
    assert layout.input_ids.tolist() == [[1, 5, 6, 7, 8], [1, 2, 3, 0, 0]]
    assert layout.position_ids.tolist() == [[0, 1, 2, 3, 2], [0, 1, 2, 0, 0]]
    assert layout.index.tolist() == [[0, 1, 2, 3], [0, 1, 4, 0], [5, 6, 7, 0]]
    assert layout.tokens == 8 and layout.slots == 10
    t, f = True, False
    assert layout.attends()[0].tolist() == [
        [t, f, f, f, f],
        [t, t, f, f, f],
        [t, t, t, f, f],
        [t, t, t, t, f],
        [t, t, f, f, t],  # 8 sees the prompt and itself, never s0's completion
    ]
    assert layout.attends()[1].tolist() == [
        [t, f, f, f, f],
        [t, t, f, f, f],
        [t, t, t, f, f],
        [f, f, f, t, f],  # unused slots see only themselves
        [f, f, f, f, t],
    ]


def test_unshared_trees_pack_side_by_side_with_a_block_diagonal_mask():
    ids, mask, completion = right_padded([[1, 5, 6, 7], [1, 5], [3, 4]], [2, 1, 1])
    layout = pack_sequences(ids, mask, completion, share_prompts=False)
    # sizes 4, 2, 2 into rows of 4, first-fit-decreasing: [s0], [s1, s2]
    assert layout.input_ids.tolist() == [[1, 5, 6, 7], [1, 5, 3, 4]]
    assert layout.position_ids.tolist() == [[0, 1, 2, 3], [0, 1, 0, 1]]
    assert layout.index.tolist() == [[0, 1, 2, 3], [4, 5, 0, 0], [6, 7, 0, 0]]
    t, f = True, False
    assert layout.attends()[1].tolist() == [[t, f, f, f], [t, t, f, f], [f, f, t, f], [f, f, t, t]]


def test_trees_are_laid_out_depth_first_so_subtrees_are_slot_runs():
    # s2 branches under b after s1 branched under a: creation order a b c d e, preorder a b c e d
    a, b, c, d, e = 1, 5, 6, 8, 9
    ids, mask, completion = right_padded([[a, b, c], [a, d], [a, b, e]], [1, 1, 1])
    layout = pack_sequences(ids, mask, completion, share_prompts=True)
    assert layout.input_ids.tolist() == [[a, b, c, e, d]]
    assert layout.position_ids.tolist() == [[0, 1, 2, 2, 1]]
    assert layout.subtree_end.tolist() == [[5, 4, 3, 4, 5]]
    assert layout.index.tolist() == [[0, 1, 2], [0, 4, 0], [0, 1, 3]]
    t, f = True, False
    assert layout.attends()[0].tolist() == [
        [t, f, f, f, f],
        [t, t, f, f, f],
        [t, t, t, f, f],
        [t, t, f, t, f],  # e: a, b, itself
        [t, f, f, f, t],  # d: a, itself
    ]


def test_repeated_and_prefix_sequences_reuse_their_nodes():
    ids, mask, completion = right_padded([[1, 5, 6], [1, 5, 6], [1, 5], [1, 5, 6, 7]], [1, 1, 1, 1])
    layout = pack_sequences(ids, mask, completion, share_prompts=True)
    assert layout.input_ids.tolist() == [[1, 5, 6, 7]]
    assert layout.subtree_end.tolist() == [[4, 4, 4, 4]]
    assert layout.index.tolist() == [[0, 1, 2, 0], [0, 1, 2, 0], [0, 1, 0, 0], [0, 1, 2, 3]]


def test_common_completion_starts_are_shared_too():
    ids, mask, completion = right_padded([[1, 5, 6, 7], [1, 5, 6, 9]], [2, 2])
    layout = pack_sequences(ids, mask, completion, share_prompts=True)
    assert layout.input_ids.tolist() == [[1, 5, 6, 7, 9]]
    assert layout.index.tolist() == [[0, 1, 2, 3], [0, 1, 2, 4]]


def test_pack_batch_picks_the_cheaper_layout_or_none():
    prompt = list(range(3, 23))  # a long shared prompt: sharing it wins
    ids, mask, completion = right_padded([prompt + [30, 31], prompt + [32]], [20, 20])
    shared = pack_batch(ids, mask, completion, hidden_size=32)
    assert shared is not None and shared.tokens == 23
    # equal lengths, distinct prompts, no padding: nothing to save
    ids, mask, completion = right_padded([[1, 5, 6], [2, 7, 8]], [1, 1])
    assert pack_batch(ids, mask, completion, hidden_size=32) is None
    # much padding: the short rows share a row (s1 is a prefix of s0 under the same prompt: one tree)
    ids, mask, completion = right_padded([[1, 5, 6, 7, 8, 9], [1, 5, 6], [2, 3, 4]], [1, 1, 1])
    packed = pack_batch(ids, mask, completion, hidden_size=32)
    assert packed is not None and packed.tokens == 9 and packed.slots == 9


@pytest.mark.parametrize("share_prompts", [True, False])
@pytest.mark.parametrize("seed", range(5))
def test_every_sequence_sees_exactly_its_own_causal_context(seed, share_prompts):
    """On random pair batches: each token sits in a slot holding its id at its position, and it
    attends exactly to the slots of its own sequence's earlier tokens."""
    ids, mask, completion = pair_batch(seed)
    layout = pack_sequences(ids, mask, completion, share_prompts=share_prompts)
    flat_ids, flat_pos = layout.input_ids.flatten(), layout.position_ids.flatten()
    rows, width = layout.input_ids.shape
    attends = torch.zeros((rows * width, rows * width), dtype=torch.bool)
    for r in range(rows):
        attends[r * width : (r + 1) * width, r * width : (r + 1) * width] = layout.attends()[r]
    for i in range(ids.shape[0]):
        length = int(mask[i].sum())
        slots = layout.index[i, :length]
        assert flat_ids[slots].tolist() == ids[i, :length].tolist()
        assert flat_pos[slots].tolist() == list(range(length))
        seen = attends[slots]  # (length, all slots)
        expected = torch.zeros_like(seen)
        for t in range(length):
            expected[t, slots[: t + 1]] = True
        assert torch.equal(seen, expected), f"sequence {i}"


def test_left_padded_batches_and_empty_rows_are_not_packed():
    ids, mask, completion = right_padded([[1, 5, 6], [1, 7]], [1, 1])
    mask[1] = torch.tensor([0, 1, 1])
    assert pack_batch(ids, mask, completion, hidden_size=32) is None
    assert pack_sequences(ids, mask, completion, share_prompts=True) is None
    mask[1] = 0
    assert pack_batch(ids, mask, completion, hidden_size=32) is None


# ----------------------------------------------------------------------------------------------
# Real architectures: packed == padded


SMALL = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64)


def tiny_llama(attn: str = "sdpa") -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**SMALL, attn_implementation=attn)).eval()


def tiny_qwen2() -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    return Qwen2ForCausalLM(Qwen2Config(**SMALL, tie_word_embeddings=True)).eval()


def tiny_gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64)).eval()


def tiny_mistral_with_window() -> MistralForCausalLM:
    torch.manual_seed(0)
    return MistralForCausalLM(MistralConfig(**SMALL, sliding_window=4)).eval()


MODELS = {"llama-sdpa": tiny_llama, "llama-eager": lambda: tiny_llama("eager"), "qwen2": tiny_qwen2,
          "gpt2": tiny_gpt2}


def pair_batch(seed: int = 0):
    """Four pairs: chosen and rejected share a prompt (3-8 tokens); completions of 1-12 tokens."""
    gen = torch.Generator().manual_seed(seed)
    rand = lambda n: torch.randint(3, VOCAB, (n,), generator=gen).tolist()  # noqa: E731
    length = lambda low, high: int(torch.randint(low, high + 1, (1,), generator=gen))  # noqa: E731
    prompts = [rand(length(3, 8)) for _ in range(4)]
    chosen = [p + rand(length(1, 12)) for p in prompts]
    rejected = [p + rand(length(1, 12)) for p in prompts]
    return right_padded(chosen + rejected, [len(p) for p in prompts] * 2, width=20)


class CountPacked:
    """Counts the packed body passes (a test that packing ran, not just that results agree)."""

    def __init__(self, monkeypatch):
        self.calls = 0
        original = logprobs._packed_hidden

        def counted(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(logprobs, "_packed_hidden", counted)


def stats_and_grads(model, reference, ids, mask, completion, packing: bool):
    model.zero_grad()
    stats = logprobs.completion_stats(model, ids, mask, completion, reference=reference, vocab_kl=True,
                                      entropy=True, chunk_size=7, packing=packing)
    weights = torch.linspace(-1, 1, ids.numel()).reshape(ids.shape)
    ((stats.policy_token_logps + stats.vocab_kl + 0.1 * stats.entropy) * weights).sum().backward()
    return stats, {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("make", MODELS.values(), ids=MODELS.keys())
def test_packed_stats_and_gradients_equal_padded(make, monkeypatch):
    policy, reference = make(), make()
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ids, mask, completion = pair_batch()
    counter = CountPacked(monkeypatch)
    padded, padded_grads = stats_and_grads(policy, reference, ids, mask, completion, packing=False)
    assert counter.calls == 0
    packed, packed_grads = stats_and_grads(policy, reference, ids, mask, completion, packing=True)
    assert counter.calls >= 2, "the packed path did not run (policy and reference)"
    for name in ("policy_token_logps", "reference_token_logps", "vocab_kl", "entropy"):
        torch.testing.assert_close(getattr(packed, name), getattr(padded, name), atol=1e-5, rtol=1e-5, msg=name)
    for name, grad in padded_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_sliding_window_models_keep_the_padded_batch(monkeypatch):
    model = tiny_mistral_with_window()
    ids, mask, completion = pair_batch()
    counter = CountPacked(monkeypatch)
    packed = logprobs.completion_token_logps(model, ids, mask, completion, packing=True)
    assert counter.calls == 0
    torch.testing.assert_close(packed, logprobs.completion_token_logps(model, ids, mask, completion, packing=False))


def test_a_model_that_mishandles_the_packed_mask_falls_back(monkeypatch):
    """The probe compares packed and padded passes once per model; a mismatch keeps padding."""
    model = tiny_llama()
    monkeypatch.setattr(logprobs, "_packed_mask", lambda model, attends: torch.ones_like(attends[:, None]))
    counter = CountPacked(monkeypatch)
    ids, mask, completion = pair_batch()
    got = logprobs.completion_token_logps(model, ids, mask, completion)
    assert counter.calls == 1  # the probe only
    torch.testing.assert_close(got, logprobs.completion_token_logps(model, ids, mask, completion, packing=False))


# ----------------------------------------------------------------------------------------------
# Through the trainer: reference sums and training


def pair_data(n: int = 16) -> PairedData:
    chosen, rejected = [], []
    for seed in range(n // 4):
        ids, mask, completion = pair_batch(seed)
        rows = [Encoded(ids[i, : int(mask[i].sum())].tolist(), completion[i, : int(mask[i].sum())].tolist(), False)
                for i in range(ids.shape[0])]
        chosen += rows[:4]
        rejected += rows[4:]
    return PairedData(chosen, rejected)


def test_reference_sums_are_the_same_packed():
    model, data = tiny_llama(), pair_data()
    torch.testing.assert_close(reference_sums(model, data, pad_id=0, batch_size=8, packing=True),
                               reference_sums(model, data, pad_id=0, batch_size=8, packing=False))


def test_training_packed_ends_at_the_padded_weights(monkeypatch):
    data, loss = pair_data(), get_loss("dpo")
    counter = CountPacked(monkeypatch)
    trained = {}
    for packing in (False, True):
        policy, reference = tiny_llama(), tiny_llama()
        setup = TrainSetup(
            loss=loss, hparams=dict(loss.hparams), data=data, budget=Budget("steps", 4),
            config=TrainConfig(batch_size=4, lr=1e-3, checkpoint_every=0, packing=packing),
            seed=0, pad_id=0, reference=reference,
            cached_reference=reference_sums(reference, data, pad_id=0, packing=packing),
        )
        train_policy(policy, setup)
        trained[packing] = policy.state_dict()
        assert (counter.calls > 0) == packing
    for name, weight in trained[False].items():
        torch.testing.assert_close(trained[True][name], weight, atol=1e-5, rtol=1e-4, msg=name)


def test_a_ddp_wrapped_model_runs_packed_rows_through_its_own_forward(tmp_path, monkeypatch):
    """DDP must run its own forward (it syncs gradients there): the packed rows go through it,
    and the gradients equal the unwrapped model's on the padded batch (a one-process gloo group)."""
    from torch.nn.parallel import DistributedDataParallel

    ids, mask, completion = pair_batch(3)
    weights = torch.linspace(-1, 1, ids.numel()).reshape(ids.shape)
    plain = tiny_llama()
    (logprobs.completion_token_logps(plain, ids, mask, completion, packing=False) * weights).sum().backward()
    with one_process_group(tmp_path):
        wrapped = DistributedDataParallel(tiny_llama())
        forwards = []
        original = wrapped.module.forward
        monkeypatch.setattr(wrapped.module, "forward",
                            lambda *a, **k: forwards.append(k.get("position_ids") is not None) or original(*a, **k))
        got = logprobs.completion_token_logps(wrapped, ids, mask, completion)
        assert forwards == [True], "the wrapper's forward did not get the packed rows"
        torch.testing.assert_close(got, logprobs.completion_token_logps(plain, ids, mask, completion, packing=False))
        (got * weights).sum().backward()
        for (name, p), q in zip(plain.named_parameters(), wrapped.module.parameters()):
            torch.testing.assert_close(q.grad, p.grad, atol=1e-5, rtol=1e-4, msg=name)


@contextmanager
def one_process_group(tmp_path):
    """A one-process gloo group (what a DDP wrapper needs to exist), destroyed afterwards."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()
