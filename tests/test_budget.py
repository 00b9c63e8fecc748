"""The FLOP arithmetic, by hand, and the loop stopping at its budget."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from harness.suite import Budget
from harness.train.budget import Accounting, StepCost, fits
from harness.train.flops import ModelShape


def tiny_llama() -> LlamaForCausalLM:
    config = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True)
    return LlamaForCausalLM(config)


def test_model_shape_counts_matmul_parameters():
    """Per layer: q,k,v,o are 16x16 (4*256 = 1024), gate/up/down are 16x32 (3*512 = 1536);
    two layers = 5120; the LM head 50x16 = 800 counts (tied to the embedding, but it is a matmul).
    N = 5920. attn_width = 2 heads * 8 = 16."""
    shape = ModelShape.of(tiny_llama())
    assert shape.matmul_params == 5920
    assert (shape.n_layers, shape.attn_width) == (2, 16)


def test_forward_and_train_flops_by_hand():
    """Two sequences of 3 and 5 tokens, N = 5920, L = 2, d = 16:
    linear 2*5920*(3+5) = 94720; attention 4*2*16*(9+25) = 4352; forward = 99072; train = 3x."""
    shape = ModelShape(5920, 2, 16)
    assert shape.forward_flops([3, 5]) == 99072.0
    assert shape.train_flops([3, 5]) == 3 * 99072.0


def test_generation_flops_by_hand():
    """A prompt of 2 tokens and 2 new tokens: contexts 3 and 4.
    2*N*2 = 23680 plus 4*2*16*(3+4) = 896 -> 24576."""
    assert ModelShape(5920, 2, 16).generation_flops([2], [2]) == 24576.0


def test_reference_cost_is_one_forward_and_counted_in_total():
    cost = StepCost(examples=2, policy_tokens=8, reference_tokens=8, flops_policy=300.0, flops_reference=100.0)
    assert cost.flops == 400.0


@pytest.mark.parametrize("kind,limit,steps", [("flops", 1000.0, 2), ("steps", 3, 3), ("examples", 5, 2), ("tokens", 17, 2)])
def test_fits_never_exceeds_the_budget(kind, limit, steps):
    """Steps of 400 FLOPs, 2 examples, 8 tokens: the last step that fits is the last one run."""
    budget, accounting = Budget(kind, limit), Accounting()
    cost = StepCost(examples=2, policy_tokens=8, flops_policy=400.0)
    while fits(accounting, cost, budget):
        accounting.add(cost)
    assert accounting.optimizer_steps == steps
    assert accounting.used(kind) <= limit


def test_training_stops_exactly_at_the_budget():
    """The loop runs while the next step fits: used <= budget < used + the step it refused."""
    from harness.losses import get_loss
    from harness.suite import TrainConfig
    from harness.data.batches import PairedData
    from harness.train.loop import TrainSetup, train_policy

    torch.manual_seed(0)
    rows = [synthetic_pair(i) for i in range(16)]
    pairs = PairedData([r[0] for r in rows], [r[1] for r in rows])
    simpo = get_loss("simpo")
    setup = TrainSetup(loss=simpo, hparams=simpo.hparams, data=pairs, budget=Budget("flops", 6.0e6),
                       config=TrainConfig(batch_size=4, lr=1e-3), seed=0, pad_id=0)
    result = train_policy(tiny_llama(), setup)
    used = result.accounting.flops_total
    assert result.accounting.optimizer_steps >= 3
    assert used <= 6.0e6 < used + result.refused_step


def synthetic_pair(i: int):
    """Prompt [1, 2+i%5]; chosen and rejected completions of different lengths (ids < 50)."""
    from harness.data.tokenize import Encoded

    prompt = [1, 2 + i % 5]
    chosen, rejected = [10 + i % 7, 11, 2], [20 + i % 9, 2]
    return (Encoded(prompt + chosen, [False] * 2 + [True] * 3, False),
            Encoded(prompt + rejected, [False] * 2 + [True] * 2, False))
