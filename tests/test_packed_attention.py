"""Packed rows through FlexAttention (harness.packed_attention): the BlockMask is the layout's dense
mask tile for tile, and the packed log-probs through flex_attention (eager, forward only, as torch
runs it on CPU) equal the padded forward's; the per-model probe judges the flex path too.

Eager flex_attention evaluates the mask_mod at every (query, key) and ignores the tiles, so the
CPU forward checks the mask_mod and the plumbing; the tiles (which the CUDA kernels skip or
compute unmasked) are checked against the dense mask directly, element by element."""

from __future__ import annotations

import random
import warnings

import pytest
import torch
from torch.nn.attention.flex_attention import create_block_mask

from harness import logprobs, packed_attention
from harness.data.packing import pack_sequences
from tests import chat_models as cm
from tests.test_packing import CountPacked, pair_batch, right_padded, tiny_llama, tiny_qwen2


@pytest.fixture
def flex_on_cpu(monkeypatch):
    """Send the CPU's packed rows through FlexAttention, as CUDA's are."""
    monkeypatch.setattr(logprobs, "FLEX_DEVICES", frozenset({"cpu", "cuda"}))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
        yield


def random_trees(seed: int):
    """Sequences that share prefixes at random depths (a few prompts, several branches each, some
    sequences prefixes of others), packed with and without sharing."""
    rng = random.Random(seed)
    rows, prompts = [], []
    for _ in range(rng.randint(1, 4)):
        prompt = [rng.randint(3, 40) for _ in range(rng.randint(1, 9))]
        stem = prompt + [rng.randint(3, 40) for _ in range(rng.randint(0, 5))]
        for _ in range(rng.randint(1, 4)):
            tail = [rng.randint(3, 40) for _ in range(rng.randint(0, 12))]
            rows.append(stem[: rng.randint(len(prompt), len(stem))] + tail)
            prompts.append(len(prompt))
    ids, mask, completion = right_padded(rows, prompts)
    return pack_sequences(ids, mask, completion, share_prompts=seed % 2 == 0)


@pytest.mark.parametrize("block", [1, 4, 8, 16])
@pytest.mark.parametrize("seed", range(6))
def test_the_block_mask_is_the_dense_mask_tile_for_tile(seed, block):
    layout = random_trees(seed).padded_to(block)
    rows, width = layout.input_ids.shape
    mask = packed_attention.block_mask(layout, block)
    # element by element, as the kernels read it (full tiles unmasked, partial tiles masked)
    assert torch.equal(packed_attention.dense_from_blocks(mask), layout.attends())
    # the same tiles as torch's create_block_mask finds by evaluating the mask_mod everywhere
    reference = create_block_mask(packed_attention.mask_mod(layout.subtree_end), rows, None, width, width,
                                  device="cpu", BLOCK_SIZE=block)
    assert torch.equal(mask.to_dense(), reference.to_dense())
    for name in ("kv_num_blocks", "full_kv_num_blocks", "q_num_blocks", "full_q_num_blocks"):
        assert torch.equal(getattr(mask, name), getattr(reference, name)), name


def test_tiles_of_a_hand_made_layout():
    # one tree of 5 nodes (1 5 6 7 | 8 under 5), then a 3-token tree, in rows padded to 4-slot tiles
    ids, mask, completion = right_padded([[1, 5, 6, 7], [1, 5, 8], [1, 2, 3]], [2, 2, 1])
    layout = pack_sequences(ids, mask, completion, share_prompts=True).padded_to(4)
    assert layout.input_ids.tolist() == [[1, 5, 6, 7, 8, 0, 0, 0], [1, 2, 3, 0, 0, 0, 0, 0]]
    touched, full = packed_attention.tile_kinds(layout.subtree_end, 4)
    assert touched.tolist() == [[[True, False], [True, True]], [[True, False], [False, True]]]
    assert not full.any()  # a causal diagonal tile is never full; node 8 skips 6 and 7
    assert packed_attention.tile_kinds(layout.subtree_end, 1)[1].sum() == layout.attends().sum()


def test_padding_to_whole_tiles_adds_only_unused_slots():
    layout = random_trees(3)
    wide = layout.padded_to(16)
    rows, width = layout.input_ids.shape
    assert wide.input_ids.shape == (rows, -(-width // 16) * 16) and wide.tokens == layout.tokens
    assert torch.equal(wide.attends()[:, :width, :width], layout.attends())
    itself = torch.eye(wide.input_ids.shape[1], dtype=torch.bool)[width:]
    assert torch.equal(wide.attends()[:, width:], itself.expand(rows, -1, -1))
    # every real token is in the same row and column, and the index says so
    flat = wide.input_ids.flatten()
    assert torch.equal(flat[wide.index], layout.input_ids.flatten()[layout.index])
    assert layout.padded_to(width) is layout
    with pytest.raises(ValueError, match="rows of 6 slots are not whole blocks of 4"):
        packed_attention.tile_kinds(torch.arange(1, 7)[None], 4)


def test_on_the_cpu_packed_rows_keep_the_dense_mask(monkeypatch):
    model = tiny_llama()
    ids, mask, completion = pair_batch(2)
    calls = packed_attention.calls
    counter = CountPacked(monkeypatch)
    logprobs.completion_token_logps(model, ids, mask, completion)
    assert counter.calls == 2 and packed_attention.calls == calls  # probe and batch, neither through flex


MODELS = {"llama-gqa": tiny_llama, "llama-eager": lambda: tiny_llama("eager"), "qwen2": tiny_qwen2}


@pytest.mark.parametrize("block", [4, 128])  # several tiles per row (full, partial, empty ones), and one
@pytest.mark.parametrize("make", MODELS.values(), ids=MODELS.keys())
@torch.no_grad()
def test_packed_log_probs_through_flex_equal_the_padded_forward(make, block, flex_on_cpu, monkeypatch):
    monkeypatch.setattr(packed_attention, "BLOCK", block)
    policy, reference = make(), make()
    for p in reference.parameters():
        p.add_(0.05 * torch.randn_like(p))
    ids, mask, completion = pair_batch(1)
    padded = logprobs.completion_stats(policy, ids, mask, completion, reference=reference, vocab_kl=True,
                                       entropy=True, packing=False)
    calls = packed_attention.calls
    packed = logprobs.completion_stats(policy, ids, mask, completion, reference=reference, vocab_kl=True,
                                       entropy=True, packing=True)
    layers = policy.config.num_hidden_layers
    # each model's probe and its batch, every layer through flex; the models keep their own implementation
    assert packed_attention.calls - calls == 2 * 2 * layers
    loaded_with = make().config._attn_implementation
    assert policy.config._attn_implementation == reference.config._attn_implementation == loaded_with
    for name in ("policy_token_logps", "reference_token_logps", "vocab_kl", "entropy"):
        torch.testing.assert_close(getattr(packed, name), getattr(padded, name), atol=1e-5, rtol=1e-5, msg=name)


@pytest.mark.parametrize("family", [f for f in cm.FAMILIES if f in ("llama3", "qwen2", "phi3")])
@torch.no_grad()
def test_the_chat_families_pack_through_flex(family, flex_on_cpu):
    model = cm.model(family)
    ids, mask, completion = pair_batch(4)
    assert logprobs.packing_refusal(model) is None
    torch.testing.assert_close(logprobs.completion_token_logps(model, ids, mask, completion),
                               logprobs.completion_token_logps(model, ids, mask, completion, packing=False),
                               atol=1e-5, rtol=1e-5)


def test_the_probe_refuses_a_wrong_block_mask_on_the_flex_path_only(flex_on_cpu, monkeypatch):
    model = tiny_llama()
    causal_only = lambda subtree_end: lambda b, h, q, kv: kv <= q  # noqa: E731 - ignores the trees
    monkeypatch.setattr(packed_attention, "mask_mod", causal_only)
    with pytest.warns(UserWarning, match=r"keeps the padded batch: its packed pass \(flex attention\) does not"):
        assert "flex attention" in logprobs.packing_refusal(model)
    monkeypatch.setattr(logprobs, "FLEX_DEVICES", frozenset())
    assert logprobs.packing_refusal(model) is None  # the dense path has its own verdict


def test_the_probe_refuses_flex_for_attention_dropout_or_a_failing_forward(flex_on_cpu, monkeypatch):
    torch.manual_seed(0)
    dropout = tiny_llama()
    dropout.config.attention_dropout = 0.1
    with pytest.warns(UserWarning, match="attention dropout has no FlexAttention form"):
        assert logprobs.packing_refusal(dropout) is not None
    broken = tiny_llama()
    monkeypatch.setattr(packed_attention, "_kernel", lambda device_type: None)
    with pytest.warns(UserWarning, match=r"\(flex attention\) fails on a probe batch \(TypeError\)"):
        assert logprobs.packing_refusal(broken) is not None
    assert broken.config._attn_implementation == "sdpa"  # restored after the failure


def test_the_attention_function_takes_only_what_it_implements():
    q = torch.zeros(1, 2, 4, 8)
    mask = packed_attention.block_mask(random_trees(0).padded_to(4), 4)
    with pytest.raises(TypeError, match="takes a BlockMask"):
        packed_attention.attention_forward(None, q, q, q, torch.ones(1, 1, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="no attention dropout"):
        packed_attention.attention_forward(None, q, q, q, mask, dropout=0.1)
    with pytest.raises(ValueError, match="does not implement softcap"):
        packed_attention.attention_forward(None, q, q, q, mask, softcap=30.0)


def test_the_probes_input_gradients_agree_packed_and_not_when_the_mask_is_wrong(monkeypatch):
    """The backward check the probe runs on CUDA's flex path, here through the dense path (torch
    has no flex backward on CPU): it compares, and it tells a wrong mask."""
    model = tiny_llama()
    ids, mask, completion = logprobs._probe_batch(model, torch.device("cpu"))
    layout = pack_sequences(ids, mask, completion, share_prompts=True)
    got, expected = logprobs._probe_input_gradients(model, model.model, ids, mask, layout)
    assert expected.abs().sum() > 0 and logprobs._close(got, expected, 1e-4)
    assert all(p.grad is None for p in model.parameters())
    causal = lambda model, attends: torch.tril(torch.ones_like(attends[:, None]))  # noqa: E731 - ignores the trees
    monkeypatch.setattr(logprobs, "_packed_mask", causal)
    got, expected = logprobs._probe_input_gradients(model, model.model, ids, mask, layout)
    assert not logprobs._close(got, expected, 1e-4)


@torch.no_grad()
def test_under_bf16_autocast_the_kernel_gets_one_dtype(flex_on_cpu, monkeypatch):
    """Autocast leaves the rotary-embedded query and key in float32 and the value in bf16."""
    model = tiny_llama()
    ids, mask, completion = pair_batch(5)
    assert logprobs.packing_refusal(model) is None
    seen = []
    kernel = packed_attention._kernel
    monkeypatch.setattr(packed_attention, "_kernel", lambda device_type: lambda q, k, v, **kw: (
        seen.append({q.dtype, k.dtype, v.dtype}), kernel(device_type)(q, k, v, **kw))[1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        packed = logprobs.completion_token_logps(model, ids, mask, completion)
        padded = logprobs.completion_token_logps(model, ids, mask, completion, packing=False)
    assert seen and all(dtypes == {torch.bfloat16} for dtypes in seen)
    torch.testing.assert_close(packed, padded, atol=5e-3, rtol=0)


@torch.no_grad()
def test_a_ddp_wrapper_runs_the_flex_rows_through_its_own_forward(tmp_path, flex_on_cpu, monkeypatch):
    """A DDP/FSDP wrapper's own forward gets the packed rows with the BlockMask (the whole-logits
    path, harness.logprobs._logits_rows), and the log-probs equal the padded ones."""
    from torch.nn.parallel import DistributedDataParallel

    from tests.test_packing import one_process_group

    ids, mask, completion = pair_batch(6)
    expected = logprobs.completion_token_logps(tiny_llama(), ids, mask, completion, packing=False)
    with one_process_group(tmp_path):
        wrapped = DistributedDataParallel(tiny_llama())
        masks = []
        original = wrapped.module.forward
        monkeypatch.setattr(wrapped.module, "forward",
                            lambda *a, **k: masks.append(type(k.get("attention_mask")).__name__) or original(*a, **k))
        got = logprobs.completion_token_logps(wrapped, ids, mask, completion)
        assert masks == ["BlockMask"], "the wrapper's forward did not get the flex rows"
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
