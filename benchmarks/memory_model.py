"""The memory model (harness.memory) against tracked allocations on CPU.

For each shape (a Llama-style decoder built from its config, random weights), one training step
of the harness's own path (harness.logprobs.completion_stats over chosen and rejected rows of
max_length tokens, AdamW) runs under torch.profiler's memory tracking, which records every
allocation and free of the CPU allocator (not the process's RSS). Per component:

- trained_weights, gradients, optimizer_states: the parameters' bytes, the gradients' bytes after
  backward, and what AdamW's first step allocated and kept (its moments);
- activations: what the forward pass allocated and left alive for the backward pass;
- step peak: the highest point of allocations during forward and backward, over the weights
  and AdamW's moments (predicted: activations, gradients and the larger of the log-prob chunk
  and the recomputed layer).

Printed as predicted / measured and their ratio, with gradient checkpointing off and on.
    python benchmarks/memory_model.py [--shapes N]
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from harness.logprobs import completion_stats  # noqa: E402
from harness.memory import Architecture, Lora, Prediction, RunShape, predict  # noqa: E402
from harness.models import enable_gradient_checkpointing  # noqa: E402

# (name, config, micro-batch pairs, max_length)
SHAPES = [
    ("d64-L2-V512", dict(vocab_size=512, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4), 4, 128),
    ("d128-L4-V2048-gqa", dict(vocab_size=2048, hidden_size=128, intermediate_size=352, num_hidden_layers=4,
                               num_attention_heads=8, num_key_value_heads=2), 2, 256),
    ("d256-L3-V4096-gqa", dict(vocab_size=4096, hidden_size=256, intermediate_size=688, num_hidden_layers=3,
                               num_attention_heads=8, num_key_value_heads=4), 2, 384),
]


def tracked(fn):
    """(result, peak bytes, live bytes at the end), both over what existed when `fn` started,
    from the profiler's record of every allocation and free."""
    from torch.profiler._memory_profiler import MemoryProfileTimeline

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        result = fn()
    _, sizes = MemoryProfileTimeline(prof._memory_profile())._coalesce_timeline(torch.device("cpu"))
    totals = [sum(s) for s in sizes]
    return result, max(totals) - totals[0], totals[-1] - totals[0]


def batch(config: dict, pairs: int, length: int):
    """Chosen and rejected rows padded to `length` (one row an eighth shorter, so the model
    gets a padding mask as in training), the second half of each row its completion."""
    rows = 2 * pairs
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(3, config["vocab_size"], (rows, length), generator=generator)
    attention = torch.ones_like(ids)
    attention[-1, length - length // 8:] = 0
    completion = torch.zeros_like(ids)
    completion[:, length // 2:] = 1
    completion *= attention
    return ids, attention, completion


def cuda_tracked(fn):
    """`tracked` on CUDA: (result, peak bytes, live bytes at the end) over what was allocated when
    `fn` started, from torch's caching allocator (max_memory_allocated after a reset)."""
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    result = fn()
    torch.cuda.synchronize()
    return result, torch.cuda.max_memory_allocated() - before, torch.cuda.memory_allocated() - before


def step_components(model, ids, attention, completion, tracker=tracked, autocast=contextlib.nullcontext
                    ) -> dict[str, float]:
    """One training step of `model` (its trainable parameters under AdamW) on the rows, measured
    with `tracker` (`tracked` on CPU, `cuda_tracked` on CUDA) per component; `autocast` is the
    step's precision context (harness.train.hardware.autocast). The optimizer is dropped after."""
    model.train()
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=1e-5)

    def forward():
        with autocast():
            return completion_stats(model, ids, attention, completion, packing=False).policy_token_logps.sum()

    def step():
        forward().backward()

    loss, _, activations = tracker(forward)
    loss.backward()
    del loss
    model.zero_grad(set_to_none=True)
    _, peak, _ = tracker(step)
    gradients = sum(p.grad.nbytes for p in trained if p.grad is not None)
    _, _, optimizer_states = tracker(optimizer.step)
    model.zero_grad(set_to_none=True)
    return {"trained_weights": sum(p.nbytes for p in trained), "gradients": gradients,
            "optimizer_states": optimizer_states, "activations": activations, "step peak": peak}


def measure(config: dict, pairs: int, length: int, checkpointing: bool) -> dict[str, float]:
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**config, attn_implementation="sdpa"))
    if checkpointing:
        enable_gradient_checkpointing(model)
    return step_components(model, *batch(config, pairs, length))


def prediction_of(config: dict, pairs: int, length: int, checkpointing: bool, *, precision: str = "fp32",
                  device_type: str = "cpu", lora: Lora | None = None, quantize: str = "none") -> Prediction:
    """harness.memory's prediction for `batch`'s rows (half of each row its completion)."""
    arch = Architecture.from_config({"architectures": ["LlamaForCausalLM"], **config})
    return predict(arch, RunShape(micro_batch=pairs, rows_per_example=2, max_length=length, precision=precision,
                                  device_type=device_type, checkpointing=checkpointing, completion_share=0.5,
                                  lora=lora, quantize=quantize))


def predicted(config: dict, pairs: int, length: int, checkpointing: bool, **settings) -> dict[str, float]:
    """`step_components`' figures as harness.memory predicts them (`settings`: prediction_of's).
    Under bf16 autocast the held weights are the fp32 master copy, and the forward's live bytes
    include autocast's bf16 copies of the weights that the backward reads (the model's
    trained_weights then)."""
    prediction = prediction_of(config, pairs, length, checkpointing, **settings)
    t = prediction.training
    mixed = settings.get("precision") == "bf16-mixed"
    held = t["master_weights"] if mixed else t["trained_weights"]
    static = held + t.get("frozen_weights", 0) + t["optimizer_states"]  # held before the step starts
    return {"trained_weights": held, "gradients": t["gradients"], "optimizer_states": t["optimizer_states"],
            "activations": t["activations"] + (t["trained_weights"] if mixed else 0),
            "step peak": prediction.training_peak - static}


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", type=int, default=len(SHAPES), help="measure the first N shapes")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    worst = 0.0
    print(f"{'shape':<20} {'ckpt':<5} {'component':<17} {'predicted MiB':>13} {'measured MiB':>13} {'ratio':>6}")
    for name, config, pairs, length in SHAPES[: args.shapes]:
        for checkpointing in (False, True):
            want, got = predicted(config, pairs, length, checkpointing), measure(config, pairs, length, checkpointing)
            for component in want:
                ratio = want[component] / got[component]
                worst = max(worst, abs(ratio - 1))
                print(f"{name:<20} {'on' if checkpointing else 'off':<5} {component:<17} "
                      f"{want[component] / 2**20:>13.2f} {got[component] / 2**20:>13.2f} {ratio:>6.2f}")
    print(f"largest deviation: {worst:.0%} (goal: within 15%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
