"""Real processes on one results folder: two `harness run` at once lose and duplicate nothing, and
a run killed with SIGKILL leaves no partial result and is run again by the next invocation.
Each test runs the tiny suite (tests/conftest.py, dpo and simpo) in subprocesses: ~20 s each on
2 CPU cores."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from harness.results import ResultStore

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_sandbox(harness_cache):
    """Build the tiny sandbox once, so that the processes below only load it."""
    from harness.sandbox.world import SandboxConfig, load_or_build_sandbox
    from tests.conftest import TINY_SANDBOX

    load_or_build_sandbox(SandboxConfig.from_dict(TINY_SANDBOX, "tiny"), verbose=False)
    return harness_cache


def _command(suite: Path, root: Path) -> list[str]:
    return [sys.executable, "-m", "harness.cli", "run", str(suite), "--results", str(root / "results"),
            "--reports", str(root / "reports"), "--no-report"]


def _suite(root: Path) -> Path:
    from tests.conftest import tiny_suite_text

    path = root / "tiny.yaml"
    path.write_text(tiny_suite_text(methods="[dpo, simpo]"))  # 3 runs with the start model
    return path


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix in (".lock", ".tmp", ".stale"))


def _check_complete(store: ResultStore, expected_runs: int = 3) -> None:
    """Every run stored once: readable metrics and samples, manifest ok, nothing left over."""
    run_ids = store.run_ids()
    assert len(run_ids) == expected_runs
    frames = [pd.read_parquet(store.metrics_path(r)) for r in run_ids]
    for run_id, frame in zip(run_ids, frames):
        assert set(frame["run_id"]) == {run_id}
        assert len(pd.read_parquet(store.samples_path(run_id))) > 0
        assert store.read_manifest(run_id)["status"] == "ok"
    methods = [f["method"].iloc[0] for f in frames]
    assert sorted(methods) == ["dpo", "simpo", "start"]  # no run stored twice
    assert set(store.run_statuses()["status"]) == {"ok"}
    assert _leftovers(store.folder) == []


def test_two_processes_share_one_results_folder(tmp_path, tiny_sandbox):
    suite = _suite(tmp_path)
    processes = [subprocess.Popen(_command(suite, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=540)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    trained = [line for out in outputs for line in out.splitlines() if re.search(r": done in [\d.]+ s", line)]
    assert len(trained) == 3, outputs  # each of the 3 runs trained by exactly one process
    _check_complete(ResultStore(tmp_path / "results", "tiny"))


def test_a_killed_run_leaves_no_partial_result_and_runs_again(tmp_path, tiny_sandbox, capsys):
    suite = _suite(tmp_path)
    store = ResultStore(tmp_path / "results", "tiny")
    process = subprocess.Popen(_command(suite, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    victim = None
    deadline = time.monotonic() + 300
    try:
        while victim is None and time.monotonic() < deadline:  # kill it while it trains a method
            assert process.poll() is None, f"finished before it could be killed:\n{process.stdout.read()}"
            for path in store.folder.glob("*.json") if store.folder.exists() else []:
                try:
                    manifest = json.loads(path.read_text())
                except (OSError, ValueError):
                    continue
                if manifest.get("status") == "running" and (manifest.get("spec") or {}).get("method") != "start":
                    victim = path.stem
            time.sleep(0.01)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
        process.stdout.close()
    assert victim is not None, "the run never reached a trained method"
    assert process.returncode == -signal.SIGKILL

    assert not store.has_result(victim) and not store.metrics_path(victim).exists()
    for path in store.folder.glob("*.parquet"):  # what is visible is complete (temp files are hidden)
        pd.read_parquet(path)
    statuses = store.run_statuses().set_index("run_id")["status"]
    assert statuses[victim] == "interrupted"
    stored_before = store.run_ids()

    from harness.cli import main

    args = [str(suite), "--results", str(tmp_path / "results"), "--reports", str(tmp_path / "reports")]
    assert main(["run", *args]) == 0
    out = capsys.readouterr().out
    assert f"{len(stored_before)} stored, {3 - len(stored_before)} to run" in out
    assert store.has_result(victim)
    _check_complete(store)
