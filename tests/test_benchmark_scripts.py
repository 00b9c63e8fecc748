"""The benchmark scripts run end to end at tiny settings and end in their `ratio:` line."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_train_throughput_runs_and_prints_a_ratio(capsys):
    pytest.importorskip("trl")
    script = load_script("train_throughput")
    code = script.main(["--steps", "2", "--warmup", "0", "--repeats", "1", "--batch-size", "4",
                        "--max-length", "24", "--hidden", "16", "--layers", "1", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.strip().splitlines()
    assert re.fullmatch(r"ratio: \d+\.\d\d", lines[-1]), out
    assert float(lines[-1].split()[1]) > 0
    table = [line.split() for line in lines if line.startswith(("harness ", "trl "))]
    assert [row[0] for row in table] == ["harness", "harness", "trl", "trl"]  # packed, padded, TRL x2
    steps = [re.search(r" (\d+) +\d+\.\d+ ", " ".join(row)).group(1) for row in table]
    assert steps == ["2"] * 4, out  # every side ran the steps it was asked for


def test_memory_model_benchmark_stays_within_its_goal(capsys):
    """benchmarks/memory_model.py at its first shape: every component predicted within 15 % of
    the allocations torch's profiler records."""
    script = load_script("memory_model")
    assert script.main(["--shapes", "1"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    worst = re.fullmatch(r"largest deviation: (\d+)% \(goal: within 15%\)", last)
    assert worst and int(worst.group(1)) <= 15, last


def test_gpu_check_dry_run_executes_every_part(tmp_path, harness_cache, capsys):
    """benchmarks/gpu_check.py --dry-run: the GPU check's code on CPU at tiny sizes. Every part
    succeeds and its figures reach the one JSON file: harness vs TRL pairs/s and their ratio, the
    quickstart's methods stored and reported, one training step under torchrun with accelerate's
    wrapper (DDP on CPU, where accelerate has no FSDP)."""
    import json

    pytest.importorskip("trl")
    script = load_script("gpu_check")
    out = tmp_path / "gpu_check.json"
    assert script.main(["--dry-run", "--out", str(out)]) == 0, capsys.readouterr().out[-3000:]
    report = json.loads(out.read_text())
    parts = report["parts"]
    assert report["dry_run"] and all(p["ok"] for p in parts.values()) and set(parts) == {"throughput", "suite", "packed", "fsdp", "memory"}
    tiny = parts["throughput"]["tiny"]
    assert [s["side"] for s in tiny["sides"]] == ["harness", "harness", "trl", "trl"] and tiny["dtype"] == "bf16"
    assert tiny["ratio_pairs_per_s"] == pytest.approx(tiny["sides"][0]["pairs_per_s"] / max(
        s["pairs_per_s"] for s in tiny["sides"][2:]))
    assert set(parts["suite"]["eval"]) == {"start", "dpo", "ipo", "simpo"} and parts["suite"]["reports"]
    fsdp = parts["fsdp"]
    assert fsdp["wrapper"] == "DistributedDataParallel" and fsdp["steps"] == 1
    assert fsdp["loss"] == pytest.approx(0.6931, abs=1e-3)  # -log σ(0): the policy starts as the reference


def test_gpu_check_packed_part_runs_its_cpu_side(tmp_path, capsys):
    """The packed part's dry run: the tiny shape's dense, padded and TRL sides train; the flex side
    is skipped with its reason (no flex backward on CPU) while its block masks and its forward
    check run; the figures reach the JSON file."""
    import json

    pytest.importorskip("trl")
    script = load_script("gpu_check")
    out = tmp_path / "gpu_check.json"
    assert script.main(["--dry-run", "--parts", "packed", "--out", str(out)]) == 0, capsys.readouterr().out[-3000:]
    figures = json.loads(out.read_text())["parts"]["packed"]["tiny@48"]
    sides = figures["sides"]
    assert "no FlexAttention backward on CPU" in sides["flex"]["skipped"]
    assert all(sides[name]["pairs_per_s"] > 0 for name in ("dense", "padded", "trl-sdpa"))
    check = figures["flex_forward_check"]
    assert check["flex_attention_calls"] == 1 and check["max_abs_diff_relative"] < 1e-5  # one layer, once
    assert check["tokens"] < check["padded_positions"]  # the pairs' prompts are shared
    assert 0 < figures["tiles_computed_per_causal_tile"] <= 1 and figures["flex_slots_per_padded_position"] > 0
    assert figures["ratios"] == {} and figures["goals"] == {}  # nothing to compare flex with here


def test_gpu_check_refuses_unknown_parts_sides_and_bad_length_files(tmp_path, capsys):
    script = load_script("gpu_check")
    bad = tmp_path / "lengths.json"
    bad.write_text('{"prompt": [[0, 4], [50, 80]], "completion": [[0, 1], [100, 9]]}')
    for argv, message in [(["--parts", "packed,speed"], "unknown part or side speed"),
                          (["--parts", "memory,memroy"], "unknown part or side memroy"),
                          (["--packed-sides", "flex,flash"], "unknown part or side flash"),
                          (["--lengths", str(bad)], f"--lengths {bad}: prompt: percents must rise from 0 to 100"),
                          (["--lengths", str(tmp_path / "none.json")], "No such file")]:
        with pytest.raises(SystemExit) as exit_:
            script._parse(["--dry-run", *argv])
        assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_gpu_check_draws_lengths_from_its_quantiles():
    import random

    script = load_script("gpu_check")
    quantiles = [[0, 10], [50, 20], [90, 100], [100, 1000]]
    rng = random.Random(0)
    draws = sorted(script.draw_length(rng, quantiles) for _ in range(4000))
    assert draws[0] >= 10 and draws[-1] <= 1000
    share_at_most = lambda tokens: sum(d <= tokens for d in draws) / len(draws)  # noqa: E731
    assert share_at_most(20) == pytest.approx(0.5, abs=0.03) and share_at_most(100) == pytest.approx(0.9, abs=0.02)


def test_gpu_check_memory_part_compares_prediction_with_tracked_allocations(tmp_path, capsys):
    """The memory part's dry run: a tiny Llama loaded through the harness's loader, per variant
    (full, LoRA through add_adapters, checkpointed) one measured step and two DPO steps of the
    training loop on the CPU's tracked allocations; QLoRA is skipped with its reason off CUDA.
    Every figure reaches the JSON file, the predicted peaks within the ±15 % goal."""
    import json

    script = load_script("gpu_check")
    args = script._parse(["--dry-run", "--parts", "memory", "--memory-shapes", "qwen2.5-0.5b", "--memory-batch-size", "2"])
    assert (args.memory_shapes, args.memory_batch_size) == ("qwen2.5-0.5b", 2)
    out = tmp_path / "gpu_check.json"
    assert script.main(["--dry-run", "--parts", "memory", "--out", str(out)]) == 0, capsys.readouterr().out[-3000:]
    report = json.loads(out.read_text())["parts"]
    assert set(report) == {"memory"} and report["memory"]["ok"]
    tiny = report["memory"]["tiny"]
    variants = tiny["variants"]
    assert set(variants) == {"full", "lora", "qlora", "checkpointed"}
    assert "needs CUDA" in variants["qlora"]["skipped"]
    for name in ("full", "lora", "checkpointed"):
        figures = variants[name]
        assert figures["precision"] == "fp32" and figures["peak"]["within_goal"], (name, figures["peak"])
        components = figures["components"]
        assert {"trained_weights", "gradients", "optimizer_states", "activations", "step peak"} <= set(components)
        for component in components.values():
            assert component["ratio"] == pytest.approx(component["predicted_mib"] / component["measured_mib"])
    full, lora = variants["full"]["components"], variants["lora"]["components"]
    assert lora["trained_weights"]["measured_mib"] < full["trained_weights"]["measured_mib"]  # adapters alone train
    assert lora["frozen_weights"]["ratio"] == pytest.approx(1, abs=0.15)  # the base loaded besides them
    assert variants["checkpointed"]["components"]["activations"]["measured_mib"] < full["activations"]["measured_mib"]
    assert tiny["worst_peak_deviation"] == pytest.approx(max(abs(variants[n]["peak"]["ratio"] - 1)
                                                             for n in ("full", "lora", "checkpointed")))
