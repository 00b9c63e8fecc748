"""harness.results: the versioned schema, atomic files, per-run locks, statuses, and files that open
in pandas and DuckDB without harness. Synthetic runs (tests/test_rank.py's builder); the
multi-process tests are in tests/test_store_processes.py."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from harness.errors import HarnessError
from harness.results import ResultStore
from harness.results.schema import COLUMN_DOCS, SCHEMA_VERSION, results_schema, samples_schema
from harness.results.store import owner_is_alive

ROOT = Path(__file__).resolve().parents[1]


from tests import test_rank as fixtures  # the synthetic-suite builder, shared


@pytest.fixture
def store(tmp_path) -> ResultStore:
    return fixtures.build_suite(tmp_path, "toy", samples=True, cards=True)


def _dead_pid() -> int:
    """The PID of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# --------------------------------------------------------------------------- schema


def test_every_column_is_documented_and_versioned(store):
    names = results_schema().names + samples_schema().names
    assert set(names) <= set(COLUMN_DOCS), sorted(set(names) - set(COLUMN_DOCS))
    run_id = store.run_ids()[0]
    for path, table in ((store.metrics_path(run_id), "metrics"), (store.samples_path(run_id), "samples")):
        metadata = pq.read_schema(path).metadata
        assert metadata[b"harness.schema_version"] == str(SCHEMA_VERSION).encode()
        assert metadata[b"harness.table"] == table.encode()
    assert set(pd.read_parquet(store.metrics_path(run_id))["schema_version"]) == {SCHEMA_VERSION}


def test_readme_documents_every_column():
    """README.md's "Results schema" section names every column of both tables."""
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"^## Results schema\n(.*?)(?=^## |\Z)", readme, flags=re.S | re.M)
    assert match, "README.md needs a '## Results schema' section"
    documented = set(re.findall(r"^\| `([a-z_0-9]+)` \|", match.group(1), flags=re.M))
    missing = [c for c in results_schema().names + samples_schema().names if c not in documented]
    assert not missing, f"README.md's Results schema lacks {missing}"
    assert f"version {SCHEMA_VERSION}" in match.group(1)


def test_files_from_a_newer_schema_are_refused(store):
    run_id = store.run_ids()[0]
    table = pq.read_table(store.metrics_path(run_id))
    metadata = {**table.schema.metadata, b"harness.schema_version": str(SCHEMA_VERSION + 1).encode()}
    pq.write_table(table.replace_schema_metadata(metadata), store.metrics_path(run_id))
    with pytest.raises(HarnessError, match=r"schema version \d+, newer than this harness's"):
        store.read_metrics()


def test_unreadable_parquet_is_a_clear_error(store):
    store.metrics_path(store.run_ids()[0]).write_bytes(b"not parquet")
    with pytest.raises(HarnessError, match="unreadable parquet.*delete it to re-run"):
        store.read_metrics()


def test_read_samples_selects_columns(store):
    samples = store.read_samples(columns=["run_id", "reward"])
    assert list(samples.columns) == ["run_id", "reward"] and len(samples) == 5 * 16
    assert list(ResultStore(store.root, "none").read_samples(columns=["reward"]).columns) == ["reward"]
    with pytest.raises(ValueError, match="no sample columns"):
        store.read_samples(columns=["nope"])


def test_files_open_in_pandas_and_duckdb_without_harness(store):
    """A fresh interpreter that cannot import harness (a meta-path hook refuses it) reads every
    file with pandas, pyarrow and DuckDB, as a user without harness installed would."""
    duckdb_available = importlib.util.find_spec("duckdb") is not None
    script = textwrap.dedent(f"""
        import sys
        class NoHarness:
            def find_spec(self, name, path=None, target=None):
                if name == "harness" or name.startswith("harness."):
                    raise ImportError("harness must not be imported here")
        sys.meta_path.insert(0, NoHarness())
        import glob, json
        import pandas as pd
        folder = {str(store.folder)!r}
        metrics = sorted(p for p in glob.glob(folder + "/*.parquet") if not p.endswith(".samples.parquet"))
        samples = sorted(glob.glob(folder + "/*.samples.parquet"))
        frame = pd.concat(pd.read_parquet(p) for p in metrics)
        rows = pd.concat(pd.read_parquet(p) for p in samples)
        out = {{"runs": int(frame["run_id"].nunique()), "methods": sorted(set(frame["method"])),
               "samples": len(rows)}}
        if {duckdb_available}:
            import duckdb
            files = ", ".join(repr(p) for p in metrics)
            out["duckdb"] = duckdb.sql(
                f"select method, count(distinct run_id) from read_parquet([{{files}}]) "
                "where split = 'eval' and metric = 'win_rate_vs_start' group by method order by method"
            ).fetchall()
            out["duckdb_samples"] = duckdb.sql(
                f"select count(*) from read_parquet({{folder!r}} || '/*.samples.parquet')").fetchall()[0][0]
        assert not any(m == "harness" or m.startswith("harness.") for m in sys.modules)
        print(json.dumps(out))
    """)
    result = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True, timeout=120,
                            cwd=store.root)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["runs"] == 5 and out["methods"] == ["dpo", "ipo", "simpo", "start"] and out["samples"] == 80
    if not duckdb_available:
        pytest.skip("duckdb is not installed (pip install -e '.[dev]'); pandas part passed")
    assert out["duckdb"] == [["dpo", 2], ["ipo", 1], ["simpo", 1], ["start", 1]]
    assert out["duckdb_samples"] == 80


# --------------------------------------------------------------------------- atomic writes


def test_failed_write_leaves_no_file(tmp_path):
    store = ResultStore(tmp_path, "s")
    frame = fixtures.suite_runs("s")[1]
    with pytest.raises(ValueError, match="lack columns"):
        store.write_run("r1", frame.drop(columns=["value"]), None, {})
    assert not store.folder.exists() or list(store.folder.iterdir()) == []
    assert not store.has_result("r1")


def test_metrics_file_is_written_last(tmp_path, monkeypatch):
    """If the process dies while writing the metrics (here: the parquet writer raises), the run
    has no result, whatever else was written."""
    store = ResultStore(tmp_path, "s")
    frame = fixtures.suite_runs("s")[1]
    calls = []

    def flaky(table, path, *args, **kwargs):
        calls.append(Path(path).name)
        if len(calls) == 2:
            raise OSError("disk full")
        return original(table, path, *args, **kwargs)

    original = pq.write_table
    monkeypatch.setattr(pq, "write_table", flaky)
    with pytest.raises(OSError):
        store.write_run("r1", frame, fixtures.run_samples(frame), {"status": "ok"})
    assert not store.has_result("r1") and store.run_ids() == []
    assert not store.samples_path("r1").exists()  # written aside, then discarded: a failed write stores nothing
    assert not [p for p in store.folder.iterdir() if p.name.endswith(".tmp")]


# --------------------------------------------------------------------------- locks


def test_a_lock_is_exclusive_until_released(tmp_path):
    store = ResultStore(tmp_path, "s")
    lock = store.try_lock("r1")
    assert lock is not None and store.lock_path("r1").exists()
    owner = json.loads(store.lock_path("r1").read_text())
    assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
    assert store.try_lock("r1") is None  # held by a live process (this one)
    assert store.lock_owner("r1")["pid"] == os.getpid()
    lock.release()
    assert not store.lock_path("r1").exists()
    with store.try_lock("r1") as again:
        assert again is not None
    assert not store.lock_path("r1").exists()


def test_a_stale_lock_is_broken_and_the_dead_writers_temp_files_removed(tmp_path):
    store = ResultStore(tmp_path, "s")
    store.folder.mkdir(parents=True)
    dead = _dead_pid()
    store.lock_path("r1").write_text(json.dumps({"pid": dead, "host": socket.gethostname(), "start": None}))
    partial = store.folder / f".r1.parquet.{dead}.abc123.tmp"
    partial.write_bytes(b"half a parquet")
    other = store.folder / f".r2.parquet.{dead}.abc123.tmp"  # another run's: not ours to delete
    other.write_bytes(b"x")
    assert store.lock_owner("r1") is None
    lock = store.try_lock("r1")
    assert lock is not None
    assert json.loads(store.lock_path("r1").read_text())["pid"] == os.getpid()
    assert not partial.exists() and other.exists()
    lock.release()


def test_a_reused_pid_does_not_keep_a_lock_alive(tmp_path):
    """Same PID (this process), another start time: the lock's writer is gone."""
    store = ResultStore(tmp_path, "s")
    store.folder.mkdir(parents=True)
    store.lock_path("r1").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "start": "1"}))
    if store.lock_owner("r1") is not None:
        pytest.skip("no /proc start times on this platform")
    assert store.try_lock("r1") is not None


def test_locks_from_other_hosts_are_left_alone():
    assert owner_is_alive({"pid": 1, "host": "another-machine.example"})
    assert not owner_is_alive({"pid": _dead_pid(), "host": socket.gethostname()})
    assert not owner_is_alive({"host": socket.gethostname()})  # unreadable: its writer died


def test_claim_runs_skips_what_another_process_stored(tmp_path):
    """r1: free → claimed. r2: stored → reported stored. r3: locked by a live process (simulated
    by this test holding the lock) → put off, then reported stored once that process stores it."""
    store = ResultStore(tmp_path, "s")
    frame = fixtures.suite_runs("s")[1]
    store.write_run("r2", frame, None, {})
    held = store.try_lock("r3")

    def other_process_finishes():
        store.write_run("r3", frame, None, {})
        held.release()

    finisher = threading.Timer(0.3, other_process_finishes)
    finisher.start()
    seen, logs = [], []
    for run_id, lock in store.claim_runs(["r1", "r2", "r3"], poll_seconds=0.02, log=logs.append):
        seen.append((run_id, lock is not None))
        if lock is not None:
            lock.release()
    finisher.join()
    assert seen == [("r1", True), ("r2", False), ("r3", False)]
    assert len(logs) == 1 and "(r3): being run by process" in logs[0]


def test_claim_runs_takes_over_a_run_whose_process_died(tmp_path):
    store = ResultStore(tmp_path, "s")
    store.folder.mkdir(parents=True)
    store.lock_path("r1").write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
    claimed = [(run_id, lock) for run_id, lock in store.claim_runs(["r1"], poll_seconds=0.01)]
    assert [run_id for run_id, _ in claimed] == ["r1"] and claimed[0][1] is not None
    assert not store.lock_path("r1").exists()  # released when the generator moved on


# --------------------------------------------------------------------------- statuses


def test_run_statuses(tmp_path):
    store = fixtures.build_suite(tmp_path, "s")
    finished = store.run_ids()
    spec = {"method": "dpo", "seed": 3}
    store.write_manifest("failed1", {"status": "failed", "error": "non-finite loss at step 3", "label": "dpo",
                                     "spec": spec})
    store.write_manifest("killed1", {"status": "running", "label": "dpo", "spec": spec})
    store.write_manifest("live1", {"status": "running", "label": "ipo", "spec": {"method": "ipo", "seed": 0}})
    held = store.try_lock("live1")
    runs = store.run_statuses().set_index("run_id")
    assert runs.loc[finished, "status"].eq("ok").all()
    assert runs.loc["failed1", "status"] == "failed" and "non-finite" in runs.loc["failed1", "error"]
    assert runs.loc["killed1", "status"] == "interrupted"
    assert runs.loc["live1", "status"] == "running"
    assert runs.loc["killed1", "seed"] == 3 and runs.loc["killed1", "label"] == "dpo"
    held.release()


def test_results_command_lists_statuses(tmp_path, capsys):
    from harness.cli import main

    store = fixtures.build_suite(tmp_path, "s")
    store.write_manifest("killed1", {"status": "running", "label": "dpo", "spec": {"method": "dpo", "seed": 0}})
    assert main(["results", "s", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^killed1\s+dpo\s+seed=0\s+interrupted$", out, flags=re.M)
    assert out.strip().splitlines()[-1] == "5 ok, 1 interrupted"
    assert main(["results", "nothing", "--results", str(tmp_path)]) == 2


def test_a_file_written_before_the_level_column_reads_its_intervals_as_95(tmp_path):
    """Every interval states its confidence level; a metrics file that predates the column gets the
    level its intervals were computed at, and none where a row has no interval."""
    from harness.results.store import with_levels

    old = pd.DataFrame({"metric": ["a", "b"], "ci_low": [0.1, float("nan")], "ci_high": [0.3, float("nan")],
                        "n": [4, 4]})
    filled = with_levels(old)
    assert list(filled.columns) == ["metric", "ci_low", "ci_high", "level", "n"]
    assert filled["level"].iloc[0] == 0.95 and pd.isna(filled["level"].iloc[1])
    assert with_levels(filled.assign(level=[0.9, float("nan")]))["level"].iloc[0] == 0.9  # a stated level is kept
