"""Checks shared by the end-to-end tests of the executors (tests/test_executors.py, submitit's
local executor and Ray; tests/test_slurm_cluster.py, a real SLURM): the tiny suite, its
in-process reference values, and a worker killed mid-run."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import yaml

from harness.results import ResultStore
from harness.results.schema import ACCOUNTING_COLUMNS

# Wall-clock and hardware columns: the only ones allowed to differ between executors.
TIMING_COLUMNS = ["train_seconds", "eval_seconds", "peak_memory_mb", "mfu"]
DEADLINE_S = 900  # generous: the machine may be loaded


def suite_text(methods: str = "[dpo, simpo]") -> str:
    from tests.conftest import tiny_suite_text

    suite = yaml.safe_load(tiny_suite_text(methods=methods))
    suite["train"]["checkpoint_every"] = 2  # so that a pre-empted run has a checkpoint to resume from
    return yaml.safe_dump(suite)


def reference_values(root: Path) -> pd.DataFrame:
    """The tiny suite run in this process (under `root`): the values every executor must reproduce."""
    from harness.runner import run_suite
    from harness.suite import load_suite

    path = root / "tiny.yaml"
    path.write_text(suite_text())
    outcome = run_suite(load_suite(path), root / "results", log=lambda *_: None)
    assert not outcome.failed
    return values(ResultStore(root / "results", "tiny"))


def values(store: ResultStore) -> pd.DataFrame:
    frame = store.read_metrics().drop(columns=TIMING_COLUMNS)
    assert set(ACCOUNTING_COLUMNS) - set(TIMING_COLUMNS) <= set(frame.columns)
    keys = ["run_id", "evaluator", "metric", "split", "step"]
    return frame.sort_values(keys).reset_index(drop=True)


def suite_file(tmp_path: Path, methods: str = "[dpo, simpo]") -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(suite_text(methods))
    return path


def store_args(tmp_path: Path) -> list[str]:
    return ["--results", str(tmp_path / "results"), "--reports", str(tmp_path / "reports")]


def check_same_as_in_process(store: ResultStore, reference: pd.DataFrame, run_ids: list[str] | None = None) -> None:
    """Every run stored once, nothing left over, and the values of the in-process run."""
    expected = reference if run_ids is None else reference[reference["run_id"].isin(run_ids)].reset_index(drop=True)
    assert store.run_ids() == sorted(set(expected["run_id"]))
    assert all(store.read_manifest(r)["status"] == "ok" for r in store.run_ids())
    assert not [p.name for p in store.folder.iterdir() if p.suffix in (".lock", ".tmp", ".stale")]
    pd.testing.assert_frame_equal(values(store), expected)


def kill_while_training(store: ResultStore, busy: threading.Thread) -> tuple[str, int]:
    """SIGKILL the worker that trains a method (not the start run): found through its run's
    manifest ("running") and lease (its PID). Returns (run_id, pid)."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        assert busy.is_alive(), "the submission ended before a run could be killed"
        for path in store.folder.glob("*.json") if store.folder.exists() else []:
            try:
                manifest = json.loads(path.read_text())
                lease = json.loads(store.lock_path(path.stem).read_text())
            except (OSError, ValueError):
                continue
            if manifest.get("status") == "running" and manifest["spec"]["method"] != "start":
                os.kill(int(lease["pid"]), signal.SIGKILL)
                return path.stem, int(lease["pid"])
        time.sleep(0.05)
    raise AssertionError("no method run started in time")


def in_thread(fn, *args) -> tuple[threading.Thread, dict]:
    box: dict = {}
    thread = threading.Thread(target=lambda: box.setdefault("value", fn(*args)), daemon=True)
    thread.start()
    return thread, box
