"""Leases on runs (harness/executors/lease.py): a claim carries host, PID and a heartbeat; a stale
heartbeat is taken over on any host; a worker whose lease was taken over stops without writing,
and two workers never both store a run. Other hosts are simulated with the `owner` a lease is
written with; a frozen heartbeat with `stop_heartbeat` and a file time set in the past."""

from __future__ import annotations

import json
import os
import socket
import time

import pandas as pd
import pytest

from harness.results.lease import Lease, LeaseLost, is_stale, live_holder, try_acquire
from harness.results import ResultStore
from tests import test_rank as fixtures  # the synthetic-suite builder, shared

TIMEOUT = 60.0


def _age(path, seconds: float) -> None:
    """Make the lease's heartbeat `seconds` old (a frozen holder)."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def _other_host(**extra) -> dict:
    return {"host": "node-b.cluster", "pid": 4242, "start": "1", **extra}


def test_a_lease_names_its_holder_and_keeps_a_heartbeat(tmp_path):
    path = tmp_path / "r1.lock"
    lease = try_acquire(path, timeout=0.5)  # a beat every 0.1 s
    try:
        owner = json.loads(path.read_text())
        assert owner["host"] == socket.gethostname() and owner["pid"] == os.getpid() and owner["token"]
        assert owner["timeout"] == 0.5
        _age(path, 100)
        deadline = time.monotonic() + 30  # generous: the machine may be loaded
        while time.time() - path.stat().st_mtime > 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert time.time() - path.stat().st_mtime < 50, "the heartbeat thread did not refresh the lease"
        assert try_acquire(path, timeout=0.5) is None  # held: alive here, fresh heartbeat
    finally:
        lease.release()
    assert not path.exists()


def test_staleness_rules():
    """A fresh lease of another host is alive; one older than its timeout is stale on any host;
    a holder on this host whose process is gone is stale at once; the holder's own timeout wins."""
    now = 1000.0
    other = _other_host(timeout=TIMEOUT)
    assert not is_stale(other, now - 10, timeout=TIMEOUT, now=now)
    assert is_stale(other, now - TIMEOUT - 1, timeout=TIMEOUT, now=now)
    assert not is_stale(_other_host(timeout=600), now - 100, timeout=TIMEOUT, now=now)  # its promise: 600 s
    dead_here = {"host": socket.gethostname(), "pid": _dead_pid(), "timeout": TIMEOUT}
    assert is_stale(dead_here, now, timeout=TIMEOUT, now=now)
    assert not is_stale({}, now - 1, timeout=TIMEOUT, now=now)  # being written right now
    assert is_stale({}, now - 10, timeout=TIMEOUT, now=now)  # its writer died between create and write


def test_a_frozen_holder_on_another_host_is_taken_over_and_stores_nothing(tmp_path):
    """Worker A (host node-a) claims r1, then freezes (no heartbeat). Worker B (node-b) cannot take
    a fresh lease, but takes it once the heartbeat is older than the timeout; A finds out at its
    next check and at its write, which raises LeaseLost: only B's result is stored."""
    store = ResultStore(tmp_path, "s")
    store.folder.mkdir(parents=True)
    path = store.lock_path("r1")
    a = try_acquire(path, timeout=TIMEOUT, owner={"host": "node-a.cluster", "pid": 1111})
    a.stop_heartbeat()
    assert try_acquire(path, timeout=TIMEOUT, owner={"host": "node-b.cluster", "pid": 2222}) is None
    assert live_holder(path, timeout=TIMEOUT)["host"] == "node-a.cluster"
    _age(path, TIMEOUT + 5)
    assert live_holder(path, timeout=TIMEOUT) is None
    b = try_acquire(path, timeout=TIMEOUT, owner={"host": "node-b.cluster", "pid": 2222})
    assert b is not None and json.loads(path.read_text())["host"] == "node-b.cluster"

    assert not a.renew() and a.lost  # A's next heartbeat: the file carries B's token
    with pytest.raises(LeaseLost):
        a.check()
    frame_a, frame_b = _frame("r1", 0.25), _frame("r1", 0.75)
    with pytest.raises(LeaseLost):
        store.write_run("r1", frame_a, fixtures.run_samples(frame_a), {"status": "ok", "by": "a"}, lease=a)
    assert not store.has_result("r1") and store.read_manifest("r1") is None  # A wrote nothing
    store.write_run("r1", frame_b, fixtures.run_samples(frame_b), {"status": "ok", "by": "b"}, lease=b)
    assert store.read_manifest("r1")["by"] == "b"
    assert set(pd.read_parquet(store.metrics_path("r1"))["value"]) == {0.75}
    a.release()  # A's release must not delete B's lease
    assert json.loads(path.read_text())["host"] == "node-b.cluster"
    b.release()
    assert not path.exists()


def test_two_workers_never_both_store_a_run(tmp_path):
    """Even when both still believe they hold it (A was taken over between its last check and its
    write), the metrics file is published only if none exists: the second store is refused."""
    store = ResultStore(tmp_path, "s")
    store.folder.mkdir(parents=True)
    a = try_acquire(store.lock_path("r1"), timeout=TIMEOUT)
    frame_b = _frame("r1", 0.75)
    store.write_run("r1", frame_b, None, {"status": "ok", "by": "b"})  # B stored it meanwhile
    frame_a = _frame("r1", 0.25)
    with pytest.raises(LeaseLost, match="stored by another worker"):
        store.write_run("r1", frame_a, None, {"status": "ok", "by": "a"}, lease=a)
    assert set(pd.read_parquet(store.metrics_path("r1"))["value"]) == {0.75}
    assert not [p for p in store.folder.iterdir() if p.name.endswith(".tmp")]
    a.release()


def test_a_lease_of_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path):
    path = tmp_path / "r1.lock"
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": _dead_pid(), "token": "x", "timeout": 3600}))
    lease = try_acquire(path, timeout=3600)
    assert isinstance(lease, Lease) and json.loads(path.read_text())["pid"] == os.getpid()
    lease.release()


def test_a_lost_lease_stops_training_at_its_next_checkpoint(tmp_path):
    """The runner passes the lease check as the checkpoint's guard: a worker that lost its run
    stops at its next save instead of overwriting the new holder's checkpoint."""
    import torch

    from harness.train.checkpoint import RunCheckpoint

    path = tmp_path / "r1.lock"
    lease = try_acquire(path, timeout=TIMEOUT)
    checkpoint = RunCheckpoint("r1", every=1, root=tmp_path / "ckpt", guard=lease.check)
    model = torch.nn.Linear(2, 2)
    checkpoint.save(model, None, {"step": 1})
    path.unlink()  # taken over (its file renamed away by the next holder)
    with pytest.raises(LeaseLost):
        checkpoint.save(model, None, {"step": 2})
    assert checkpoint.load()["step"] == 1
    lease.release()


def _frame(run_id: str, value: float) -> pd.DataFrame:
    frame = fixtures.suite_runs("s")[1].copy()
    frame["run_id"] = run_id
    frame["value"] = value
    return frame


def _dead_pid() -> int:
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid
