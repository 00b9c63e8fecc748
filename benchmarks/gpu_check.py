"""The GPU check: the harness's CUDA paths exercised and measured in one command of a few minutes.

On a machine with one CUDA GPU, torch and transformers but no internet (the other packages travel
as wheels: benchmarks/gpu_wheels.txt, downloaded by benchmarks/gpu_wheels.sh), from the repo root:

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && PYTHONPATH=/tmp/site:. python3 benchmarks/gpu_check.py --out $OUT/gpu_check.json

Parts (each timed; a part that fails is recorded with its error and the others still run):
1. throughput: DPO training at Qwen2.5-0.5B's shape (random weights, bf16 autocast), the harness
   against TRL's DPOTrainer on the same data, batch and sequence length
   (benchmarks/train_throughput.py's comparison): pairs/s, MFU and peak memory of both, the
   ratios; then, for the MFU goal, the same at Qwen2.5-1.5B's shape (--shapes).
2. suite: suites/quickstart.yaml end to end on CUDA (the sandbox's model, nothing downloaded):
   sandbox build, training with packing and the reference cache, evaluation, parquet, report;
   every run must be stored with status ok, device cuda and a finite MFU.
3. packed: packed rows through FlexAttention against the dense 4D mask, the padded batch and
   TRL's DPOTrainer (SDPA, and flash_attention_2 where flash-attn is installed), at Qwen2.5-0.5B
   and 1.5B shapes and max_length 1024 and 2048 (--packed-shapes, --packed-lengths, --packed-sides),
   on lengths drawn from UltraFeedback-like quantiles (LENGTH_QUANTILES; --lengths FILE for
   measured ones): pairs/s, MFU and peak memory per side, the ratios against the goals (>= 1.3x
   TRL's pairs/s at 1.5B, MFU >= 40 %, peak memory <= TRL's), the share of attention tiles the
   block mask computes, and a forward check (final hidden states, packed through flex vs padded).
4. fsdp: one DPO training step of the harness's loop under `torchrun --nproc_per_node 1` with
   ACCELERATE_USE_FSDP=true (harness.train.distributed wraps the policy with accelerate's FSDP):
   the wrapper's class, the loss, the step's seconds and peak memory.
5. memory: harness.memory's prediction (the one `harness plan` prints) against the measured CUDA
   peak at Qwen2.5-0.5B's and 1.5B's shapes (--memory-shapes; random weights saved and loaded
   through harness.models.load_policy), max_length --max-length, --memory-batch-size pairs, for a
   full, a LoRA (harness.train.adapters.add_adapters, r 16 on every linear layer), a QLoRA
   (train.quantize=nf4; skipped where bitsandbytes is missing) and a gradient-checkpointed DPO
   step: per component (benchmarks/memory_model.py's step: weights, gradients, AdamW's moments,
   activations, the step's peak; LoRA's frozen base) and the peak of two DPO steps of the training
   loop (the second holds AdamW's moments), each as predicted / measured, against the ±15 % goal.
Every figure goes to one JSON file (--out) and is printed. Not yet run on a GPU: the 8 minutes
are an estimate; if the first call runs long, split it (`--parts throughput`, then
`--parts suite,fsdp`, then `--parts memory`: about two minutes, estimated), or keep the 0.5B
shape alone (`--shapes qwen2.5-0.5b`, `--memory-shapes qwen2.5-0.5b`). The packed part
is its own call of a few minutes (`--parts packed`; its first flex step compiles the kernel,
in the untimed warm-up), or smaller still (`--packed-shapes qwen2.5-1.5b --packed-lengths 2048`).

`--dry-run` runs the same code on the CPU at tiny sizes (a 2-layer Llama, the tests' tiny sandbox,
2 steps), so that CI catches a broken path before a GPU is at hand: the memory part measures
allocations with torch's profiler (benchmarks/memory_model.py) and skips QLoRA; accelerate wraps with
DDP (it has no FSDP on CPU), no MFU is known, and the packed part's flex side trains not (torch
has no FlexAttention backward on CPU) but its block masks and its forward check run. Under 8
minutes on one H200 is the target of the full check; the dry run takes about a minute on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach a hub
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the harness from this checkout
sys.path.insert(0, str(ROOT / "benchmarks"))  # train_throughput

import torch  # noqa: E402

# The tests' tiny sandbox (tests/conftest.py), for the dry run's suite.
DRY_SANDBOX = {
    "corpus_documents": 400, "demonstrations": 200, "train_pairs": 48, "eval_prompts": 8, "eval_pairs": 8,
    "pretrain_steps": 10, "pretrain_batch_size": 8, "sft_steps": 5, "batch_size": 16, "max_new_tokens": 12,
    "model": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2},
    "corpus_sessions": 100, "session_demonstrations": 50, "unpaired": 32, "sessions": 16, "eval_sessions": 4,
    "session_max_new_tokens": 10, "session_candidates": 6,
}


def _parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: the same code paths")
    parser.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "gpu_check.json"))
    parser.add_argument("--parts", default="throughput,suite,packed,fsdp,memory")
    parser.add_argument("--shapes", default="qwen2.5-0.5b,qwen2.5-1.5b", help="throughput shapes (GPU)")
    parser.add_argument("--batch-size", type=int, default=16, help="pairs per step (throughput, fsdp)")
    parser.add_argument("--max-length", type=int, default=512, help="tokens per sequence (throughput, fsdp)")
    parser.add_argument("--steps", type=int, default=16, help="timed steps per side (throughput)")
    parser.add_argument("--packed-shapes", default="qwen2.5-0.5b,qwen2.5-1.5b", help="packed part's shapes (GPU)")
    parser.add_argument("--packed-lengths", default="1024,2048", help="packed part's max_length values (GPU)")
    parser.add_argument("--packed-sides", default=",".join(PACKED_SIDES), help="packed part's sides")
    parser.add_argument("--packed-batch-size", type=int, default=8, help="pairs per step (packed)")
    parser.add_argument("--packed-steps", type=int, default=6, help="timed steps per side (packed)")
    parser.add_argument("--lengths", help="JSON file of token-length quantiles "
                        '{"prompt": [[percent, tokens], ...], "completion": [...]} (packed)')
    parser.add_argument("--memory-shapes", default="qwen2.5-0.5b,qwen2.5-1.5b", help="memory part's shapes (GPU)")
    parser.add_argument("--memory-batch-size", type=int, default=4, help="pairs per step (memory)")
    parser.add_argument("--fsdp-version", type=int, choices=[1, 2], default=1, help="accelerate's FSDP version")
    parser.add_argument("--fsdp-child", help=argparse.SUPPRESS)  # set by the fsdp part for its torchrun process
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA device: run it on a GPU machine, or with --dry-run on CPU")
    unknown = sorted(set(_listed(args.parts)) - set(PARTS))
    unknown += sorted(set(_listed(args.packed_sides)) - set(PACKED_SIDES))
    if unknown:
        parser.error(f"unknown part or side {', '.join(unknown)} (parts: {', '.join(PARTS)}; "
                     f"--packed-sides: {', '.join(PACKED_SIDES)})")
    try:
        args.length_quantiles = _length_quantiles(args.lengths)
    except (OSError, ValueError, KeyError, TypeError) as err:
        parser.error(f"--lengths {args.lengths}: {err} (fix: a JSON object with prompt and completion lists of "
                     "[percent, tokens], percent rising from 0 to 100)")
    return args


def _listed(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _throughput_args(args: argparse.Namespace, shape: str) -> argparse.Namespace:
    import train_throughput

    if args.dry_run:
        return train_throughput._parse(["--steps", "2", "--warmup", "0", "--repeats", "1", "--batch-size", "4",
                                        "--max-length", "24", "--hidden", "16", "--layers", "1", "--device", "cpu",
                                        "--dtype", "bf16"])
    return train_throughput._parse(["--shape", shape, "--steps", str(args.steps), "--warmup", "2", "--repeats", "2",
                                    "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
                                    "--device", "cuda", "--dtype", "bf16"])


def part_throughput(args: argparse.Namespace) -> dict:
    """Harness vs TRL DPO training, bf16 autocast, per shape (one tiny shape in a dry run)."""
    import train_throughput

    shapes = ["tiny"] if args.dry_run else [s.strip() for s in args.shapes.split(",") if s.strip()]
    out = {}
    for shape in shapes:
        comparison = train_throughput.compare(_throughput_args(args, shape))
        out[shape] = comparison.figures()
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return out


def part_suite(args: argparse.Namespace) -> dict:
    """The quickstart suite (the dry run: its methods on the tiny sandbox) from YAML to report."""
    import pandas as pd
    import yaml

    from harness.cli import main

    suite = yaml.safe_load((ROOT / "suites" / "quickstart.yaml").read_text())
    if args.dry_run:
        suite.update(sandbox=DRY_SANDBOX, budget={"kind": "flops", "value": 2.0e8},
                     train={**suite["train"], "batch_size": 8, "max_length": 48},
                     evaluate={**suite["evaluate"], "prompts": 8, "samples_per_prompt": 2, "max_new_tokens": 12})
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as folder:
        folder = Path(folder)
        path = folder / "quickstart.yaml"
        path.write_text(yaml.safe_dump(suite))
        os.environ.setdefault("HARNESS_CACHE", str(folder / "cache"))
        started = time.perf_counter()
        code = main(["run", str(path), "--results", str(folder / "results"), "--reports", str(folder / "reports")])
        seconds = time.perf_counter() - started
        if code != 0:
            raise RuntimeError(f"harness run exited {code}")
        manifests = [json.loads(p.read_text()) for p in (folder / "results").rglob("*.json")
                     if not p.name.startswith("_")]
        frames = [pd.read_parquet(p) for p in (folder / "results").rglob("*.parquet")
                  if not p.name.endswith(".samples.parquet")]
        metrics = pd.concat(frames)
        reports = sorted(p.name for p in (folder / "reports").rglob("*.html"))
    runs = [m for m in manifests if "status" in m]
    wanted_device = "cpu" if args.dry_run else "cuda"
    bad = [m.get("run_id") for m in runs if m["status"] != "ok" or m.get("hardware", {}).get("device") != wanted_device]
    if not runs or bad:
        raise RuntimeError(f"runs not stored ok on {wanted_device}: {bad or 'none stored'}")
    trained = metrics[metrics["optimizer_steps"] > 0]
    mfu = trained.groupby("method")["mfu"].first()
    if not args.dry_run and not mfu.notna().all():
        raise RuntimeError(f"MFU missing on CUDA: {mfu.to_dict()}")
    final = metrics[(metrics["split"] == "eval") & metrics["metric"].isin(["win_rate_vs_start", "reward_mean"])]
    return {
        "seconds": seconds, "runs": len(runs), "reports": reports,
        "train_seconds": trained.groupby("method")["train_seconds"].first().to_dict(),
        "mfu": mfu.to_dict(), "peak_memory_mb": trained.groupby("method")["peak_memory_mb"].first().to_dict(),
        "eval": final.groupby(["method", "metric"])["value"].first().unstack().to_dict(orient="index"),
    }


# ----------------------------------------------------------------------------------------------
# The packed part

# Token lengths of UltraFeedback-like data by percentile, [percent, tokens] (an estimate of
# HuggingFaceH4/ultrafeedback_binarized under a Llama/Qwen tokenizer, not measured here: short
# questions with a long tail of pasted documents; answers of a few hundred tokens). Give measured
# quantiles with --lengths. Each sequence is cut to max_length as the data loader does.
LENGTH_QUANTILES = {
    "prompt": [[0, 4], [10, 18], [25, 35], [50, 75], [75, 160], [90, 330], [99, 1000], [100, 2000]],
    "completion": [[0, 2], [10, 60], [25, 140], [50, 250], [75, 380], [90, 520], [99, 900], [100, 2000]],
}
# The compared sides: the harness with packed rows through FlexAttention (CUDA's default), with
# the dense 4D mask (the CPU's path), with the padded batch; TRL's DPOTrainer (reference
# precomputed, as the harness caches its reference sums) with SDPA and with flash-attn 2. Peak
# memory: TRL's precompute keeps no reference model afterwards, while train_throughput's harness
# side holds its frozen reference copy throughout, which its peak includes.
PACKED_SIDES = ("flex", "dense", "padded", "trl-sdpa", "trl-flash")


def _length_quantiles(path: str | None) -> dict:
    quantiles = LENGTH_QUANTILES if path is None else json.loads(Path(path).read_text())
    for key in ("prompt", "completion"):
        percents = [float(p) for p, _ in quantiles[key]]
        tokens = [int(t) for _, t in quantiles[key]]
        if percents[0] != 0 or percents[-1] != 100 or percents != sorted(percents) or min(tokens) < 1:
            raise ValueError(f"{key}: percents must rise from 0 to 100 and tokens be >= 1")
    return {key: quantiles[key] for key in ("prompt", "completion")}


def draw_length(rng, quantiles: list) -> int:
    """A token count from piecewise-linear quantiles (inverse-CDF sampling)."""
    u = rng.uniform(0, 100)
    for (p0, t0), (p1, t1) in zip(quantiles, quantiles[1:]):
        if u <= p1:
            return max(1, round(t0 + (t1 - t0) * (u - p0) / max(p1 - p0, 1e-9)))
    return int(quantiles[-1][1])


@contextlib.contextmanager
def packed_attention_path(path: str):
    """The harness's packed rows through FlexAttention ("flex") or the dense mask ("dense") on
    every device, for one side (harness.logprobs.FLEX_DEVICES)."""
    from harness import logprobs

    original = logprobs.FLEX_DEVICES
    logprobs.FLEX_DEVICES = frozenset({"cuda", "cpu"}) if path == "flex" else frozenset()
    try:
        yield
    finally:
        logprobs.FLEX_DEVICES = original


def tile_shares(data, pad_id: int, batch_size: int, hidden_size: int) -> dict:
    """Over the data's batches as the harness packs them: the share of the padded batch's
    positions the packed rows hold once padded to whole tiles (what flex computes), and of a dense
    causal mask's tiles over those rows that the block mask computes (partial or full) and leaves
    unmasked (full)."""
    from harness import packed_attention
    from harness.data.packing import pack_batch

    slots = positions = computed = full = causal = 0
    for start in range(0, len(data.chosen), batch_size):
        batch = data.collate(list(range(start, min(start + batch_size, len(data.chosen)))), pad_id)
        positions += batch.input_ids.numel()
        layout = pack_batch(batch.input_ids, batch.attention_mask, batch.completion_mask, hidden_size=hidden_size)
        if layout is None:  # no layout beats the padded batch, which then runs as it is
            slots += batch.input_ids.numel()
            continue
        layout = layout.padded_to(packed_attention.BLOCK)
        touched, whole = packed_attention.tile_kinds(layout.subtree_end, packed_attention.BLOCK)
        tiles = touched.shape[-1]
        slots += layout.slots
        computed, full = computed + int(touched.sum()), full + int(whole.sum())
        causal += touched.shape[0] * tiles * (tiles + 1) // 2
    return {"flex_slots_per_padded_position": slots / positions if positions else math.nan,
            "tiles_computed_per_causal_tile": computed / causal if causal else math.nan,
            "tiles_full_per_causal_tile": full / causal if causal else math.nan}


def flex_forward_check(init, data, pad_id: int, device: torch.device, pairs: int) -> dict:
    """The first `pairs` pairs, prompts shared, through the packed body with flex against the padded
    body, under the harness's precision (harness.train.hardware.autocast), no grad: the largest
    |difference| of the final hidden states at real tokens relative to their largest |value|, and
    the flex attention calls (one per layer). The forward on this shape, whatever the cost model
    would pick for this batch."""
    import warnings

    import train_throughput
    from harness import logprobs, packed_attention
    from harness.data.packing import pack_sequences
    from harness.train import hardware

    model = train_throughput.fresh_copy(init, device, frozen=True)
    batch = data.collate(list(range(min(pairs, len(data.chosen)))), pad_id).to(device)
    real = batch.attention_mask.bool()
    layout = pack_sequences(batch.input_ids, batch.attention_mask, batch.completion_mask, share_prompts=True)
    calls = packed_attention.calls
    with torch.no_grad(), hardware.autocast(device), packed_attention_path("flex"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")  # the CPU's
        packed = logprobs._packed_hidden(model, model.base_model, layout)[layout.index[real]].float()
        padded = logprobs._final_hidden(model.base_model, batch.input_ids, batch.attention_mask)[real].float()
    return {"max_abs_diff_relative": float((packed - padded).abs().max() / padded.abs().max()),
            "flex_attention_calls": packed_attention.calls - calls, "tokens": layout.tokens,
            "padded_positions": batch.input_ids.numel()}


def _packed_side(side: str, init, tokenizer, rows, bench, steps: int, device):
    import train_throughput

    if side == "trl-sdpa":
        return train_throughput.run_trl(init, tokenizer, rows, bench, steps, device, precompute=True, attention="sdpa")
    if side == "trl-flash":
        return train_throughput.run_trl(init, tokenizer, rows, bench, steps, device, precompute=True,
                                        attention="flash_attention_2")
    if side == "padded":
        return train_throughput.run_harness(init, tokenizer, rows, bench, steps, device, packing=False)
    with packed_attention_path(side):
        return train_throughput.run_harness(init, tokenizer, rows, bench, steps, device)


def _side_skipped(side: str, device: torch.device) -> str | None:
    """Why a side cannot run here, or None."""
    import importlib.util

    if side == "flex" and device.type == "cpu":
        return "torch has no FlexAttention backward on CPU (the block masks and the forward check still run)"
    if side.startswith("trl") and importlib.util.find_spec("trl") is None:
        return "trl is not installed"
    if side == "trl-flash" and (device.type != "cuda" or importlib.util.find_spec("flash_attn") is None):
        return "flash-attn is not installed (or no CUDA)"
    return None


def packed_comparison(args: argparse.Namespace, shape: str, max_length: int) -> dict:
    """One shape and max_length: every side's warm-up (untimed; the flex kernel compiles there),
    then its timed steps; figures per side, the ratios and goals, tile shares, the forward check."""
    import random

    import train_throughput
    from harness.data.batches import paired_from_rows
    from harness.train.hardware import peak_flops

    device = torch.device("cpu" if args.dry_run else "cuda")
    batch, steps = (2, 1) if args.dry_run else (args.packed_batch_size, args.packed_steps)
    bench = train_throughput._parse(["--shape", shape, "--max-length", str(max_length), "--batch-size", str(batch),
                                     "--steps", str(steps), "--warmup", "1", "--repeats", "1", "--device",
                                     device.type, "--hidden", "16", "--layers", "1"])
    # a dry run's 48 tokens: the quantiles shrunk in proportion, so that lengths still vary
    scale = max_length / 2048 if args.dry_run else 1.0

    def lengths(rng: random.Random, kind: str) -> int:
        return max(1, round(scale * draw_length(rng, args.length_quantiles[kind])))

    rows = train_throughput.make_rows(steps * batch, max_length, bench.seed, lengths)
    warm_rows = train_throughput.make_rows(batch, max_length, bench.seed + 1, lengths)
    tokenizer = train_throughput.build_tokenizer(rows + warm_rows)
    init = train_throughput.build_model(bench, tokenizer)
    data = paired_from_rows(tokenizer, rows, max_length)
    lengths_seen = sorted(len(e.input_ids) for e in data.sequences())
    flops = train_throughput.model_flops(init, tokenizer, rows, max_length)
    peak = peak_flops(device)
    out = {"max_length": max_length, "batch_size": batch, "steps": steps, "dtype": bench.dtype,
           "parameters": sum(p.numel() for p in init.parameters()),
           "sequence_tokens": {"median": lengths_seen[len(lengths_seen) // 2], "max": lengths_seen[-1],
                               "mean": sum(lengths_seen) / len(lengths_seen)},
           **tile_shares(data, tokenizer.pad_token_id, batch, init.config.hidden_size),
           "flex_forward_check": flex_forward_check(init, data, tokenizer.pad_token_id, device, min(batch, 4)),
           "sides": {}}
    with train_throughput._quiet(), train_throughput.harness_precision(bench.dtype, device):
        for side in _listed(args.packed_sides):
            reason = _side_skipped(side, device)
            if reason:
                out["sides"][side] = {"skipped": reason}
                print(f"gpu_check: packed {shape} @ {max_length}: {side} skipped: {reason}", flush=True)
                continue
            try:
                _packed_side(side, init, tokenizer, warm_rows, bench, 1, device)
                m = _packed_side(side, init, tokenizer, rows, bench, steps, device)
                out["sides"][side] = {"pairs_per_s": m.pairs_per_second, "seconds": m.seconds, "peak_mib": m.peak_mib,
                                      "mfu": flops / m.seconds / peak if not math.isnan(peak) else math.nan}
            except Exception as err:  # noqa: BLE001 - one side's failure (an OOM) is a finding
                out["sides"][side] = {"error": f"{type(err).__name__}: {str(err)[:500]}"}
            train_throughput._clean(device)
    out.update(_packed_ratios(out["sides"], shape))
    return out


def _packed_ratios(sides: dict, shape: str) -> dict:
    """flex over each other side (pairs/s, peak memory), and the issue's goals where measured."""
    flex = sides.get("flex", {})
    ran = {name: s for name, s in sides.items() if "pairs_per_s" in s}
    ratios = {f"flex_over_{name}": flex["pairs_per_s"] / s["pairs_per_s"] for name, s in ran.items()
              if name != "flex" and "pairs_per_s" in flex}
    memory = {f"flex_peak_memory_over_{name}": flex["peak_mib"] / s["peak_mib"] for name, s in ran.items()
              if name != "flex" and "peak_mib" in flex and s["peak_mib"] and not math.isnan(s["peak_mib"])}
    trl = [s for name, s in ran.items() if name.startswith("trl")]
    goals = {}
    if "pairs_per_s" in flex and trl:
        best = max(trl, key=lambda s: s["pairs_per_s"])
        goals["pairs_per_s_vs_best_trl"] = {"value": flex["pairs_per_s"] / best["pairs_per_s"], "goal": 1.3,
                                            "applies": shape == "qwen2.5-1.5b"}
        if not math.isnan(best["peak_mib"]):
            goals["peak_memory_vs_that_trl"] = {"value": flex["peak_mib"] / best["peak_mib"], "goal_at_most": 1.0}
    if "mfu" in flex and not math.isnan(flex["mfu"]):
        goals["flex_mfu"] = {"value": flex["mfu"], "goal": 0.40}
    return {"ratios": ratios, "peak_memory_ratios": memory, "goals": goals}


def part_packed(args: argparse.Namespace) -> dict:
    """The packed comparison per shape and max_length (a tiny Llama at 48 tokens in a dry run)."""
    if args.dry_run:
        return {"tiny@48": packed_comparison(args, "tiny", 48)}
    out = {}
    for shape in _listed(args.packed_shapes):
        for max_length in (int(n) for n in _listed(args.packed_lengths)):
            out[f"{shape}@{max_length}"] = figures = packed_comparison(args, shape, max_length)
            print(f"gpu_check: packed {shape} @ {max_length}: " + json.dumps(_plain(
                {"pairs_per_s": {k: v.get("pairs_per_s") for k, v in figures["sides"].items()},
                 "ratios": figures["ratios"]})), flush=True)
    return out


def part_fsdp(args: argparse.Namespace) -> dict:
    """One FSDP training step under torchrun with one process (a child process writes its figures)."""
    with tempfile.TemporaryDirectory(prefix="gpu-check-fsdp-") as folder:
        result = Path(folder) / "fsdp.json"
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_port",
                   str(29500 + os.getpid() % 1000), str(Path(__file__).resolve()), "--fsdp-child", str(result),
                   "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
                   "--fsdp-version", str(args.fsdp_version)]
        if args.dry_run:
            command.append("--dry-run")
        # accelerate's FSDP settings as `accelerate config` writes them (version 1, its default;
        # one FSDP unit per decoder layer, from the model's _no_split_modules)
        env = {**os.environ, "ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": str(args.fsdp_version),
               "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP", "FSDP_USE_ORIG_PARAMS": "true",
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        if done.returncode != 0 or not result.exists():
            # the child's own traceback, not torchrun's report of it
            child = done.stderr.split("torch.distributed.elastic")[0] if "Traceback" in done.stderr else done.stderr
            raise RuntimeError(f"torchrun exited {done.returncode}: {child[-2500:]}")
        return {**json.loads(result.read_text()), "seconds_with_launch": time.perf_counter() - started}


def fsdp_child(args: argparse.Namespace) -> None:
    """Inside torchrun: one step of harness.train.loop.train_policy, whose wrap_for_training
    wraps the policy with accelerate (FSDP on CUDA); its figures to the file named."""
    import harness.train.loop as loop
    import train_throughput
    from harness.losses import get_loss
    from harness.suite import Budget, TrainConfig
    from harness.data.batches import paired_from_rows
    from harness.train.distributed import launched_distributed
    from harness.train.hardware import peak_memory_mb, reset_peak_memory
    from harness.train.reference import reference_sums

    if not launched_distributed():
        raise RuntimeError("not seen as a distributed launch: the FSDP path would not run")
    shape = "tiny" if args.dry_run else "qwen2.5-0.5b"
    bench = _throughput_args(args, shape)
    device = torch.device(bench.device)
    rows = train_throughput.make_rows(bench.batch_size, bench.max_length, 0)
    tokenizer = train_throughput.build_tokenizer(rows)
    init = train_throughput.build_model(bench, tokenizer)
    policy = init.to(device)
    reference = train_throughput.fresh_copy(init, device, frozen=True)
    data = paired_from_rows(tokenizer, rows, bench.max_length)
    wrappers = []
    wrap = loop.wrap_for_training
    loop.wrap_for_training = lambda model, *strategy: wrappers.append(wrap(model, *strategy)) or wrappers[-1]
    reset_peak_memory(device)
    started = time.perf_counter()
    loss = get_loss("dpo")
    setup = loop.TrainSetup(
        loss=loss, hparams=loss.hparams, data=data, budget=Budget("steps", 1),
        config=TrainConfig(batch_size=bench.batch_size, lr=5e-5, max_length=bench.max_length, checkpoint_every=0),
        seed=0, pad_id=tokenizer.pad_token_id, reference=reference,
        cached_reference=reference_sums(reference, data, pad_id=tokenizer.pad_token_id),
    )
    result = loop.train_policy(policy, setup)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    wrapper = type(wrappers[0]).__name__ if wrappers else "none"
    if device.type == "cuda" and "FSDP" not in wrapper and "FullySharded" not in wrapper:
        raise RuntimeError(f"the policy was wrapped as {wrapper}, not with FSDP")
    last = result.curve[-1] if result.curve else {}
    Path(args.fsdp_child).write_text(json.dumps({
        "shape": shape, "wrapper": wrapper, "steps": result.accounting.optimizer_steps, "seconds": seconds,
        "loss": last.get("loss", math.nan), "peak_memory_mb": peak_memory_mb(device),
    }))


# ----------------------------------------------------------------------------------------------
# The memory part

# One DPO step per kind of run: (name, LoRA through train.peft, train.quantize, checkpointing).
MEMORY_VARIANTS = (("full", False, "none", False), ("lora", True, "none", False), ("qlora", True, "nf4", False),
                   ("checkpointed", False, "none", True))
MEMORY_LORA = {"r": 16, "alpha": 32.0, "target_modules": ("all-linear",)}  # the memory model's LoRA suggestion
MEMORY_GOAL = 0.15  # predicted within ±15 % of measured (issue 26)


def _memory_skipped(lora: bool, quantize: str, device: torch.device) -> str | None:
    """Why a variant cannot run here, or None."""
    import importlib.util

    if lora and importlib.util.find_spec("peft") is None:
        return "peft is not installed"
    if quantize == "nf4" and device.type != "cuda":
        return "train.quantize=nf4 needs CUDA (bitsandbytes)"
    if quantize == "nf4" and importlib.util.find_spec("bitsandbytes") is None:
        return "bitsandbytes is not installed"
    return None


def memory_rows(max_length: int, pairs: int, seed: int = 0) -> list[dict]:
    """`pairs` rows that fill max_length (a prompt of half of it, completions to the end), the
    length the memory model predicts at."""
    import train_throughput

    fill = lambda rng, kind: max_length  # noqa: E731 - cut to max_length//2 (prompt) and the room left
    return train_throughput.make_rows(pairs, max_length, seed, fill)


def _trained_policy(folder: str, device: torch.device, lora: bool, quantize: str, checkpointing: bool):
    """The policy as `harness run` builds it: load_policy (NF4 through bitsandbytes for QLoRA),
    then add_adapters for LoRA; checkpointing switched on as train_policy does."""
    from harness.models import enable_gradient_checkpointing, load_policy
    from harness.suite import PeftConfig
    from harness.train.adapters import add_adapters

    policy = load_policy(folder, device, "auto", quantize=quantize)
    if lora:
        policy = add_adapters(policy, PeftConfig(**MEMORY_LORA), gradient_checkpointing=checkpointing)
    if checkpointing:
        enable_gradient_checkpointing(policy)
    return policy


def _dpo_peak(policy, data, pad_id: int, pairs: int, max_length: int, checkpointing: bool, tracker) -> float:
    """Bytes above the loaded weights at the peak of two DPO steps of harness.train.loop.train_policy
    (the reference's sums cached, as a run caches them; the second step holds AdamW's moments)."""
    import harness.train.loop as loop
    from harness.losses import get_loss
    from harness.suite import Budget, TrainConfig
    from harness.train.reference import reference_sums

    loss = get_loss("dpo")
    cached = reference_sums(policy, data, pad_id=pad_id, packing=False)  # the policy starts as the reference
    setup = loop.TrainSetup(
        loss=loss, hparams=loss.hparams, data=data, budget=Budget("steps", 2), seed=0, pad_id=pad_id,
        config=TrainConfig(batch_size=pairs, lr=1e-5, max_length=max_length, checkpoint_every=0, packing=False,
                           gradient_checkpointing=checkpointing), cached_reference=cached)
    result, peak, _ = tracker(lambda: loop.train_policy(policy, setup))
    if result.accounting.optimizer_steps != 2:
        raise RuntimeError(f"the DPO run took {result.accounting.optimizer_steps} steps, not 2")
    return peak


def memory_variant(folder: str, config: dict, device: torch.device, pairs: int, max_length: int, data, pad_id: int,
                   variant: tuple) -> dict:
    """One variant: predicted against measured per component (benchmarks/memory_model.py's step,
    measured on this device) and for the whole peak of a DPO run's steps."""
    import memory_model
    from harness.memory import Architecture, Lora, resolved_precision
    from harness.train import hardware
    from harness.train.sizing import lora_targets

    name, lora, quantize, checkpointing = variant
    precision = resolved_precision("auto", device.type)
    tracker = memory_model.cuda_tracked if device.type == "cuda" else memory_model.tracked
    targets = lora_targets(Architecture.from_config(config), MEMORY_LORA["target_modules"], where=name)
    settings = dict(precision=precision, device_type=device.type, quantize=quantize,
                    lora=Lora(MEMORY_LORA["r"], targets) if lora else None)
    policy, _, loaded = tracker(lambda: _trained_policy(folder, device, lora, quantize, checkpointing))
    trained = sum(p.nbytes for p in policy.parameters() if p.requires_grad)
    measured = memory_model.step_components(
        policy, *(t.to(device) for t in memory_model.batch(config, pairs, max_length)), tracker,
        autocast=lambda: hardware.autocast(device))
    want = memory_model.predicted(config, pairs, max_length, checkpointing, **settings)
    prediction = memory_model.prediction_of(config, pairs, max_length, checkpointing, **settings)
    if lora:  # the frozen base: all that was loaded besides the adapters
        measured["frozen_weights"], want["frozen_weights"] = loaded - trained, prediction.training["frozen_weights"]
    peak = loaded + _dpo_peak(policy, data, pad_id, pairs, max_length, checkpointing, tracker)
    components = {k: {"predicted_mib": want[k] / 2**20, "measured_mib": measured[k] / 2**20,
                      "ratio": want[k] / measured[k] if measured[k] else math.nan} for k in want}
    ratio = prediction.training_peak / peak
    del policy
    return {"precision": precision, "components": components, "peak": {
        "predicted_mib": prediction.training_peak / 2**20, "measured_mib": peak / 2**20, "ratio": ratio,
        "within_goal": abs(ratio - 1) <= MEMORY_GOAL}}


def _print_memory(shape: str, name: str, figures: dict) -> None:
    for component, f in {**figures["components"], "DPO peak": figures["peak"]}.items():
        print(f"gpu_check: memory {shape} {name:<12} {component:<17} predicted {f['predicted_mib']:>10.1f} MiB  "
              f"measured {f['measured_mib']:>10.1f} MiB  ratio {f['ratio']:.2f}", flush=True)


def memory_shape(args: argparse.Namespace, shape: str) -> dict:
    """Every variant at one shape: the model built from its config (random weights) and saved,
    so that each variant loads it through the harness's own loader, as a run does."""
    import train_throughput
    from harness.data.batches import paired_from_rows

    device = torch.device("cpu" if args.dry_run else "cuda")
    pairs, max_length = (2, 32) if args.dry_run else (args.memory_batch_size, args.max_length)
    rows = memory_rows(max_length, pairs)
    tokenizer = train_throughput.build_tokenizer(rows)
    bench = train_throughput._parse(["--shape", shape, "--hidden", "32", "--layers", "2", "--max-length",
                                     str(max_length)])
    init = train_throughput.build_model(bench, tokenizer)
    config = init.config.to_dict()
    data = paired_from_rows(tokenizer, rows, max_length)
    out = {"batch_size": pairs, "max_length": max_length, "device": device.type, "goal_within": MEMORY_GOAL,
           "variants": {}}
    with tempfile.TemporaryDirectory(prefix="gpu-check-memory-") as folder:
        init.save_pretrained(folder)
        del init
        for variant in MEMORY_VARIANTS:
            name = variant[0]
            reason = _memory_skipped(variant[1], variant[2], device)
            if reason:
                out["variants"][name] = {"skipped": reason}
                print(f"gpu_check: memory {shape} {name}: skipped: {reason}", flush=True)
                continue
            try:
                out["variants"][name] = memory_variant(folder, config, device, pairs, max_length, data,
                                                       tokenizer.pad_token_id, variant)
                _print_memory(shape, name, out["variants"][name])
            except Exception as err:  # noqa: BLE001 - one variant's failure (an OOM) is a finding
                out["variants"][name] = {"error": f"{type(err).__name__}: {str(err)[:500]}"}
            train_throughput._clean(device)
    ran = [v["peak"]["ratio"] for v in out["variants"].values() if "peak" in v]
    out["worst_peak_deviation"] = max((abs(r - 1) for r in ran), default=math.nan)
    return out


def part_memory(args: argparse.Namespace) -> dict:
    """The memory model against measured peaks: a full, a LoRA, a QLoRA and a checkpointed DPO
    step per shape (a tiny Llama on the CPU's tracked allocations in a dry run)."""
    shapes = ["tiny"] if args.dry_run else _listed(args.memory_shapes)
    return {shape: memory_shape(args, shape) for shape in shapes}


def _plain(value):
    """JSON-safe: NaN (an unknown MFU or peak) becomes null; numpy scalars become numbers."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


PARTS = {"throughput": part_throughput, "suite": part_suite, "packed": part_packed, "fsdp": part_fsdp,
         "memory": part_memory}


def main(argv=None) -> int:
    args = _parse(argv)
    if args.fsdp_child:
        fsdp_child(args)
        return 0
    device = f"cuda ({torch.cuda.get_device_name()})" if torch.cuda.is_available() and not args.dry_run else "cpu"
    report: dict = {"dry_run": args.dry_run, "device": device, "torch": torch.__version__, "parts": {}}
    started = time.perf_counter()
    for name in _listed(args.parts):
        began = time.perf_counter()
        try:
            report["parts"][name] = {"ok": True, **PARTS[name](args)}
        except Exception as err:  # noqa: BLE001 - a failed part is a finding; the others still run
            report["parts"][name] = {"ok": False, "error": f"{type(err).__name__}: {err}",
                                     "traceback": traceback.format_exc()[-3000:]}
        report["parts"][name]["part_seconds"] = time.perf_counter() - began
        print(f"gpu_check: {name}: {'ok' if report['parts'][name]['ok'] else 'FAILED'} "
              f"({report['parts'][name]['part_seconds']:.0f} s)", flush=True)
    report["seconds"] = time.perf_counter() - started
    text = json.dumps(_plain(report), indent=2)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    return 0 if all(p["ok"] for p in report["parts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
