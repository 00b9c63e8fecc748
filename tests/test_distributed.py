"""The same loop over two CPU processes (torchrun + gloo): data-parallel (DDP, the whole suite
launched by torchrun) and sharded (FSDP2, `train.distributed`, launched by the harness itself).
The same global batches, dealt out, with the gradients averaged, give the single process's result."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import tiny_suite_text


def _final_metrics(folder) -> pd.DataFrame:
    frames = [pd.read_parquet(p) for p in folder.glob("*.parquet") if not p.name.endswith(".samples.parquet")]
    frame = pd.concat(frames)
    frame = frame[frame["split"] == "eval"]
    return frame.set_index(["method", "evaluator", "metric"])[["value", "flops_total", "optimizer_steps"]].sort_index()


@pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "torchrun")),
                    reason="torchrun is not installed")
def test_two_processes_match_one(tmp_path, harness_cache):
    suite = tmp_path / "ddp.yaml"
    suite.write_text(tiny_suite_text(name="ddp", methods="[dpo, simpo]"))
    env = {**os.environ, "HARNESS_CACHE": str(harness_cache), "OMP_NUM_THREADS": "1"}
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    distributed = subprocess.run(
        [torchrun, "--nproc_per_node", "2", "-m", "harness.cli", "run", str(suite),
         "--results", str(tmp_path / "ddp"), "--reports", str(tmp_path / "ddp-reports")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert distributed.returncode == 0, distributed.stderr[-2000:]
    single = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", str(suite), "--results", str(tmp_path / "single"),
         "--reports", str(tmp_path / "single-reports")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert single.returncode == 0, single.stderr[-2000:]
    a, b = _final_metrics(tmp_path / "ddp" / "ddp"), _final_metrics(tmp_path / "single" / "ddp")
    assert a.index.equals(b.index)
    assert (a["optimizer_steps"] == b["optimizer_steps"]).all() and (a["flops_total"] == b["flops_total"]).all()
    pd.testing.assert_series_equal(a["value"], b["value"], atol=1e-3, rtol=1e-3)


def _suite_with(tmp_path, name: str, train: dict) -> Path:
    import yaml

    raw = yaml.safe_load(tiny_suite_text(name="sharded", methods="[dpo]"))
    raw["budget"] = {"kind": "steps", "value": 3}
    raw["train"].update(train)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _run(suite: Path, out: Path, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HARNESS_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "harness.cli", "run", str(suite), "--results", str(out),
                           "--no-report"], env=env, capture_output=True, text=True, timeout=300)


def _training_curve(folder) -> pd.Series:
    frame = pd.concat(pd.read_parquet(p) for p in folder.glob("*.parquet") if not p.name.endswith(".samples.parquet"))
    frame = frame[(frame["split"] == "train") & frame["metric"].isin(["loss", "grad_norm"])]
    return frame.set_index(["method", "metric", "step"])["value"].sort_index()


def _trained_manifests(folder) -> list[dict]:
    manifests = [json.loads(p.read_text()) for p in folder.glob("*.json")]
    return [m for m in manifests if m.get("training")]


def test_fsdp_over_two_gloo_processes_matches_one_process(tmp_path):
    """`train.distributed: {strategy: fsdp, gpus: 2}` on CPU: `harness run` launches two gloo
    processes itself (torchrun) and they train with the policy sharded by FSDP2, saving a
    checkpoint after every step (the state gathered from both). The same three DPO steps as one
    process give the same losses and gradient norms at every step (each step's loss reads the
    weights after the updates before it, so the weights agree along the way), the same reference
    log-probs (computed sharded: each process half the batches) and the same evaluation of the
    final weights. grad_accumulation 2 over 2 processes: each takes one of the single process's two
    micro-batches, so every forward pass is the same and what differs is the order of float32
    sums (an all-reduce of two halves), rounding at ~1e-7 relative: 1e-5 leaves room for three
    Adam steps to carry it; the sampled evaluation gets the DDP test's 1e-3."""
    import torch

    single = _run(_suite_with(tmp_path, "single", {"grad_accumulation": 2}), tmp_path / "one", tmp_path / "cache-one")
    assert single.returncode == 0, single.stderr[-2000:]
    fsdp = _suite_with(tmp_path, "fsdp", {"grad_accumulation": 2, "checkpoint_every": 1,
                                          "distributed": {"strategy": "fsdp", "gpus": 2}})
    sharded = _run(fsdp, tmp_path / "two", tmp_path / "cache-two")
    assert sharded.returncode == 0, sharded.stderr[-2000:]
    assert "training each run over 2 processes" in sharded.stdout
    a, b = _training_curve(tmp_path / "two" / "sharded"), _training_curve(tmp_path / "one" / "sharded")
    assert a.index.equals(b.index) and len(a) == 6
    pd.testing.assert_series_equal(a, b, rtol=1e-5, atol=1e-6)
    pd.testing.assert_series_equal(_final_metrics(tmp_path / "two" / "sharded")["value"],
                                   _final_metrics(tmp_path / "one" / "sharded")["value"], rtol=1e-3, atol=1e-3)
    ours, theirs = (sorted((tmp_path / c / "reference_logps").glob("*.pt")) for c in ("cache-two", "cache-one"))
    assert [p.name for p in ours] == [p.name for p in theirs] and ours
    for x, y in zip(ours, theirs):
        torch.testing.assert_close(torch.load(x), torch.load(y), rtol=1e-5, atol=1e-5)
    assert [m["training"]["distributed"] for m in _trained_manifests(tmp_path / "two" / "sharded")] == [
        {"strategy": "fsdp", "processes": 2}]
    assert [m["training"]["distributed"] for m in _trained_manifests(tmp_path / "one" / "sharded")] == [None]


def test_an_executors_task_launches_the_runs_processes(tmp_path, monkeypatch):
    """What SLURM and Ray tasks run (harness.executors.worker.run_task), after `harness prepare`:
    a suite with train.distributed runs its task again in gpus processes, and the main one's
    answer comes back."""
    from harness.executors.worker import Task, new_probe, run_task
    from harness.plan import plan_suite
    from harness.suite import load_suite

    suite = _suite_with(tmp_path, "fsdp", {"distributed": {"strategy": "fsdp", "gpus": 2}})
    results, cache = tmp_path / "results", tmp_path / "cache"
    monkeypatch.setenv("HARNESS_CACHE", str(cache))  # run_task sets it: restored after the test
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    task = Task(suite_path=str(suite), overrides=(), results=str(results), cache=str(cache),
                probe=new_probe(results, cache))
    assert run_task(replace(task, prepare=True))["error"] is None
    specs = plan_suite(load_suite(suite))
    assert [s.gpus_per_run() for s in specs] == [1, 2]  # the start run evaluates only
    answer = run_task(replace(task, run_ids=tuple(s.run_id for s in specs)))
    assert answer["error"] is None and set(answer["runs"].values()) == {"ok"}, answer
    assert [m["training"]["distributed"] for m in _trained_manifests(results / "sharded")] == [
        {"strategy": "fsdp", "processes": 2}]


def test_harness_run_relaunches_itself_in_the_runs_processes(tmp_path, harness_cache, monkeypatch):
    """`harness run` on a suite with train.distributed: after the checks, the same command again
    under torchrun, in gpus processes (on CPU: gloo processes)."""
    from harness import cli
    from harness.train import distributed

    suite = _suite_with(tmp_path, "fsdp", {"grad_accumulation": 2, "distributed": {"strategy": "fsdp", "gpus": 2}})
    launched = []
    monkeypatch.setattr(distributed, "launch", lambda n, args: launched.append((n, args)) or 0)
    argv = ["run", str(suite), "--results", str(tmp_path / "r"), "--no-report"]
    assert cli.main(argv) == 0
    assert launched == [(2, ["-m", "harness.cli", *argv])]
