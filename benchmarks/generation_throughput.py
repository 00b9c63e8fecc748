"""Generation throughput (new tokens per second) of harness.generation's backends: transformers
(`model.generate`, batched, KV-cached) and vLLM when it is installed, on one model shape with
random weights (no download).

    python benchmarks/generation_throughput.py                       # tiny shape, CPU-sized
    python benchmarks/generation_throughput.py --shape qwen2-0.5b    # Qwen2-0.5B-shaped, for a GPU
    python benchmarks/generation_throughput.py --device cuda --prompts 256 --n 4 --max-new-tokens 256

Both backends sample the same prompts with the same settings through the one interface
(`sample_completions(..., backend=...)`); the model is built from a config (random weights), saved
once, and loaded the way a policy is. With random weights EOS is about as likely as any other
token (1/V per step), so samples run to nearly max_new_tokens; throughput counts the tokens
actually generated. One
untimed warm-up call per backend precedes the timed ones (vLLM's timing includes building its
engine from the in-memory model, as harness pays it on every evaluation). The last line is
`ratio: X` (vLLM tokens/s over transformers tokens/s), or `ratio: n/a` without vLLM.
"""

from __future__ import annotations

import argparse
import importlib.util
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


def _time(backend: str, model, tokenizer, prompts, args) -> dict:
    from harness.generation import SamplingConfig, sample_completions

    config = SamplingConfig(n=args.n, max_new_tokens=args.max_new_tokens, temperature=1.0,
                            batch_size=args.batch_size, seed=0)
    sample_completions(model, tokenizer, prompts[: max(1, len(prompts) // 8)], config, backend=backend)  # warm-up
    best = None
    for _ in range(args.repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        started = time.perf_counter()
        samples = sample_completions(model, tokenizer, prompts, config, backend=backend)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        tokens = sum(len(s.token_ids) for s in samples)
        if best is None or tokens / seconds > best["tokens_per_s"]:
            best = {"backend": backend, "tokens": tokens, "seconds": round(seconds, 3),
                    "tokens_per_s": round(tokens / seconds, 1)}
    return best


def main(argv=None) -> int:
    args = _parse(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          (args.device if args.device != "auto" else "cpu"))
    if device.type == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    wanted = [b.strip() for b in args.backends.split(",") if b.strip()]
    have_vllm = importlib.util.find_spec("vllm") is not None and device.type == "cuda"
    with tempfile.TemporaryDirectory() as folder:
        model, tokenizer, params = _build(args, folder, device)
        words = [f"w{i}" for i in range(min(1000, len(tokenizer) - 4))]
        rng = torch.Generator().manual_seed(0)
        prompts = [" ".join(words[j] for j in torch.randint(len(words), (args.prompt_len,), generator=rng).tolist())
                   for _ in range(args.prompts)]
        print(json.dumps({"shape": args.shape, "parameters": params, "device": str(device),
                          "prompts": args.prompts, "n": args.n, "max_new_tokens": args.max_new_tokens}))
        results = {}
        for backend in wanted:
            if backend == "vllm" and not have_vllm:
                print(json.dumps({"backend": "vllm", "skipped": "vLLM not installed or no CUDA device"}))
                continue
            results[backend] = _time(backend, model, tokenizer, prompts, args)
            print(json.dumps(results[backend]))
    if "vllm" in results and "transformers" in results:
        print(f"ratio: {results['vllm']['tokens_per_s'] / results['transformers']['tokens_per_s']:.2f}")
    else:
        print("ratio: n/a")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
