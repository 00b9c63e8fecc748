"""`harness submit --executor slurm` against a real SLURM: the one-node cluster that .ci/slurm-up
starts on the CI machine (partition `debug`, no accounting, so no `sacct`). Skipped, with the
reason, where no such cluster answers. On the tiny suite (dpo, simpo and the start model), each
result compared with an in-process run: a task SIGKILLed mid-run is reported lost with its run and
the command to resume, then the suite is submitted again (`--no-wait`) and completes, its probe
files removed by the cleanup job; a task pre-empted with `scancel --signal=USR2` is requeued and
resumes; a failed prepare job cancels the array and the driver says why; bad options are refused
before anything is submitted; a run over two processes gets a task of 2 CPUs. About 2 min on 2
CPU cores."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from harness.results import ResultStore
from tests.executor_checks import (
    DEADLINE_S,
    check_same_as_in_process,
    in_thread,
    kill_while_training,
    reference_values,
    store_args,
    suite_file,
)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
PARTITION = "debug"  # .ci/slurm-up's


def _cluster_answers() -> str | None:
    """None when a SLURM controller answers with partition `debug` up; else why not."""
    try:
        done = subprocess.run(["sinfo", "-h", "-p", PARTITION, "-o", "%a %t"], capture_output=True, text=True,
                              timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"no SLURM here ({err}); .ci/slurm-up starts a one-node cluster"
    if done.returncode != 0 or not done.stdout.startswith("up"):
        return f"SLURM partition {PARTITION} is not up ({(done.stderr or done.stdout).strip() or 'no answer'})"
    return None


@pytest.fixture(scope="module")
def slurm():
    pytest.importorskip("submitit")
    reason = _cluster_answers()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def reference(slurm, tmp_path_factory, harness_cache):
    return reference_values(tmp_path_factory.mktemp("in-process"))


def _submit(tmp_path: Path, suite: Path, *extra: str) -> list[str]:
    return ["submit", str(suite), "--executor", "slurm", "--partition", PARTITION, "--timeout", "10",
            "--no-report", *extra, *store_args(tmp_path)]


def _queued() -> list[str]:
    """The jobs SLURM has still to run or is running."""
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, check=True).stdout
    return out.split()


def _probes(*folders: Path) -> list[Path]:
    return [p for folder in folders if folder.exists() for p in folder.glob(".harness-probe-*")]


def _until(condition, what: str, every: float = 1.0) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def test_bad_options_are_refused_before_anything_is_submitted(slurm, tmp_path, harness_cache, capsys):
    from harness.cli import main

    suite = suite_file(tmp_path)
    queued = _queued()
    for extra, needle in ((["--partition", "nope"], f"no such SLURM partition (sinfo lists: {PARTITION}"),
                          (["--gpus-per-run", "1"], f"partition {PARTITION} has no GPUs"),
                          (["--timeout", "0"], "--timeout 0"), (["--timeout", "-5"], "--timeout -5"),
                          (["--timeout", "1"], "90 s warning"), (["--array-parallelism", "0"], "at least 1"),
                          (["--array-parallelism", "-1"], "--array-parallelism -1")):
        assert main([*_submit(tmp_path, suite), *extra]) == 2, extra
        captured = capsys.readouterr()
        assert len(captured.err.strip().splitlines()) == 1 and needle in captured.err, captured.err
        assert not captured.out  # refused before the suite was even planned
    assert _queued() == queued
    assert not (tmp_path / "results").exists()


def test_a_killed_task_is_reported_lost_then_resubmitted(slurm, tmp_path, reference, harness_cache, capsys):
    """kill -9 of a task's python: the job ends FAILED without an answer, which submitit cannot see
    without sacct; the driver reads the queue, names the lost run and how to resume, exits 1."""
    from harness.cli import main

    suite = suite_file(tmp_path)
    store = ResultStore(tmp_path / "results", "tiny")
    command = _submit(tmp_path, suite, "--array-parallelism", "2")
    thread, box = in_thread(main, command)
    victim, _ = kill_while_training(store, thread)
    thread.join(DEADLINE_S)
    assert box.get("value") == 1
    err = capsys.readouterr().err
    assert f"task died: {victim}: job " in err and "ended FAILED" in err, err
    assert "runs not stored" in err and "submit again to run only those: harness submit" in err
    assert not store.has_result(victim)

    assert main([*command, "--no-wait"]) == 0  # returns at once; the cleanup job removes the probe files
    _until(lambda: len(store.run_ids()) == 3 and not _probes(tmp_path / "results", harness_cache),
           "the resubmitted runs and the cleanup job")
    check_same_as_in_process(store, reference)


def test_a_preempted_task_is_requeued_and_resumes(slurm, tmp_path, reference, harness_cache):
    """`scancel --signal=USR2`, what SLURM sends before pre-emption: submitit requeues the task,
    whose run resumes from its checkpoint; the driver waits through the requeue."""
    from harness.cli import main
    from harness.plan import plan_suite
    from harness.suite import load_suite
    from harness.train.checkpoint import RunCheckpoint

    suite = suite_file(tmp_path, methods="[dpo]")
    dpo = next(s.run_id for s in plan_suite(load_suite(suite)) if s.method == "dpo")
    store = ResultStore(tmp_path / "results", "tiny")
    thread, box = in_thread(main, _submit(tmp_path, suite))
    checkpoint = RunCheckpoint(dpo, 2).folder / "state.pt"
    _until(lambda: checkpoint.exists() or not thread.is_alive(), "a checkpoint of the dpo run", every=0.02)
    assert thread.is_alive(), "the submission ended before the run saved a checkpoint"
    pid = int(json.loads(store.lock_path(dpo).read_text())["pid"])
    job_id = _environment(pid)["SLURM_JOB_ID"]
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    _start_requeued_now(job_id)
    thread.join(DEADLINE_S)
    assert box.get("value") == 0
    logs = "".join(p.read_text() for p in (tmp_path / "results" / ".submitit" / "tiny").glob("*_log.*"))
    assert "Requeued job" in logs
    check_same_as_in_process(store, reference, store.run_ids())
    assert dpo in store.run_ids()


def _start_requeued_now(job_id: str) -> None:
    """SLURM holds a requeued batch job for 2 min before it is eligible again (Reason=BeginTime);
    make it eligible at once, to keep the test short (the requeue itself is what is tested)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        shown = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, check=False).stdout
        if "Reason=BeginTime" in shown:
            subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], capture_output=True, check=False)
            return
        time.sleep(0.5)


def _environment(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_a_failed_prepare_job_cancels_the_array(slurm, tmp_path, monkeypatch):
    """The prepare task meets bad input (here: it cannot see the driver's probe file, as on a host
    that does not share the folders): its job fails, `afterok` never holds, the array is cancelled
    and the driver ends at once with the prepare task's one line."""
    from harness.executors import slurm as slurm_executor
    from harness.executors.slurm_cluster import job_states
    from harness.executors.submit import SubmitOptions, close_probe, open_probe, resolve

    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))  # a cache not prepared: a prepare job
    submission = resolve(str(suite_file(tmp_path)), [], str(tmp_path / "results"))
    open_probe(submission)
    real_probe, submission.probe = submission.probe, "0" * 16  # the tasks look for a probe that is not there
    lines: list[str] = []
    started = time.monotonic()
    outcome = slurm_executor.submit(submission, SubmitOptions(executor="slurm", partition=PARTITION, timeout_min=5),
                                    log=lines.append)
    assert time.monotonic() - started < 180
    assert len(outcome.errors) == 1 and "is not shared with host" in outcome.errors[0]
    assert any("failed, so its array job was cancelled" in line for line in lines), lines
    array = next(line for line in lines if "array job" in line).split("array job ")[1].split()[0]
    tasks = job_states([f"{array}_{i}" for i in range(3)])
    assert not any(state.live for state in tasks.values()), tasks
    assert not submission.store.run_ids()
    submission.probe = real_probe
    close_probe(submission)


def test_a_run_over_two_processes_gets_a_task_of_two_cpus(slurm, tmp_path, harness_cache, capsys):
    """train.distributed {strategy: fsdp, gpus: 2} without GPUs: each array task asks SLURM for both
    processes' CPUs on its one node (no GPUs) and launches the run's two gloo processes there."""
    import yaml

    from harness.cli import main

    raw = yaml.safe_load(suite_file(tmp_path, methods="[dpo]").read_text())
    raw["name"], raw["budget"] = "sharded", {"kind": "steps", "value": 3}
    raw["train"]["distributed"] = {"strategy": "fsdp", "gpus": 2}
    suite = tmp_path / "sharded.yaml"
    suite.write_text(yaml.safe_dump(raw))
    assert main(_submit(tmp_path, suite)) == 0, capsys.readouterr().err
    logs = tmp_path / "results" / ".submitit" / "sharded"
    array = next(p for p in logs.glob("*_submission.sh") if "#SBATCH --array" in p.read_text()).read_text()
    assert "#SBATCH --cpus-per-task=2" in array and "#SBATCH --gpus-per-node=0" in array and "gres" not in array
    store = ResultStore(tmp_path / "results", "sharded")
    trained = [store.read_manifest(r) for r in store.run_ids() if store.read_manifest(r).get("training")]
    assert [m["training"]["distributed"] for m in trained] == [{"strategy": "fsdp", "processes": 2}]
    assert all(store.read_manifest(r)["status"] == "ok" for r in store.run_ids())
