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
3. fsdp: one DPO training step of the harness's loop under `torchrun --nproc_per_node 1` with
   ACCELERATE_USE_FSDP=true (harness.train.distributed wraps the policy with accelerate's FSDP):
   the wrapper's class, the loss, the step's seconds and peak memory.
Every figure goes to one JSON file (--out) and is printed. Not yet run on a GPU: the 8 minutes
are an estimate; if the first call runs long, split it (`--parts throughput`, then
`--parts suite,fsdp`), or keep the 0.5B shape alone (`--shapes qwen2.5-0.5b`).

`--dry-run` runs the same code on the CPU at tiny sizes (a 2-layer Llama, the tests' tiny sandbox,
2 steps), so that CI catches a broken path before a GPU is at hand: there accelerate wraps with
DDP (it has no FSDP on CPU), and no MFU is known. Under 8 minutes on one H200 is the target of the
full check; the dry run takes about a minute on a 2-core CPU.
"""

from __future__ import annotations

import argparse
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
    parser.add_argument("--parts", default="throughput,suite,fsdp")
    parser.add_argument("--shapes", default="qwen2.5-0.5b,qwen2.5-1.5b", help="throughput shapes (GPU)")
    parser.add_argument("--batch-size", type=int, default=16, help="pairs per step (throughput, fsdp)")
    parser.add_argument("--max-length", type=int, default=512, help="tokens per sequence (throughput, fsdp)")
    parser.add_argument("--steps", type=int, default=16, help="timed steps per side (throughput)")
    parser.add_argument("--fsdp-version", type=int, choices=[1, 2], default=1, help="accelerate's FSDP version")
    parser.add_argument("--fsdp-child", help=argparse.SUPPRESS)  # set by the fsdp part for its torchrun process
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA device: run it on a GPU machine, or with --dry-run on CPU")
    return args


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


PARTS = {"throughput": part_throughput, "suite": part_suite, "fsdp": part_fsdp}


def main(argv=None) -> int:
    args = _parse(argv)
    if args.fsdp_child:
        fsdp_child(args)
        return 0
    device = f"cuda ({torch.cuda.get_device_name()})" if torch.cuda.is_available() and not args.dry_run else "cpu"
    report: dict = {"dry_run": args.dry_run, "device": device, "torch": torch.__version__, "parts": {}}
    started = time.perf_counter()
    for name in [p.strip() for p in args.parts.split(",") if p.strip()]:
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
