"""Scale-out end to end on the tiny suite (dpo, simpo and the start model: 3 runs), each result
compared with an in-process `run_suite` of the same suite: `--shard K/N` after `harness prepare`;
submitit's LocalExecutor with a task SIGKILLed mid-run and the suite submitted again; a task
pre-empted (submitit's signal) that is requeued and resumes; Ray tasks (a local `ray.init` with
2 CPUs and one logical GPU, 0.5 GPU per run) with a worker SIGKILLed mid-run, which Ray retries.
In every case the suite completes with each run stored once and the same parquet values.
About 20-60 s per test on 2 CPU cores."""

from __future__ import annotations

import json
import os
import time

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

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reference(tmp_path_factory, harness_cache):
    return reference_values(tmp_path_factory.mktemp("in-process"))


def test_shards_after_prepare_equal_an_in_process_run(tmp_path, reference, capsys):
    from harness.cli import main

    suite = suite_file(tmp_path)
    from harness.prepared import marker_path
    from harness.suite import load_suite

    marker = marker_path(load_suite(suite))
    marker.unlink(missing_ok=True)
    assert main(["run", str(suite), "--shard", "1/2", *store_args(tmp_path)]) == 2  # not prepared: refused
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "harness prepare" in err and "not prepared" in err
    assert not (tmp_path / "results" / "tiny").exists() or not ResultStore(tmp_path / "results", "tiny").run_ids()

    assert main(["prepare", str(suite)]) == 0
    built = json.loads(marker.read_text())
    assert built["reference_logps"] == ["paired"] and built["baseline_prompts"] == 8
    assert main(["prepare", str(suite)]) == 0
    assert "already prepared" in capsys.readouterr().out

    for k in (1, 2):
        assert main(["run", str(suite), "--shard", f"{k}/2", *store_args(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "(shard 1/2): 2 runs planned" in out and "(shard 2/2): 1 runs planned" in out
    check_same_as_in_process(ResultStore(tmp_path / "results", "tiny"), reference)
    assert main(["run", str(suite), "--shard", "2/2", *store_args(tmp_path)]) == 0  # a re-run runs nothing
    assert "1 stored, 0 to run" in capsys.readouterr().out


def test_submitit_local_task_killed_then_resubmitted(tmp_path, reference, capsys):
    pytest.importorskip("submitit")
    from harness.cli import main

    suite = suite_file(tmp_path)
    store = ResultStore(tmp_path / "results", "tiny")
    command = ["submit", str(suite), "--executor", "slurm", "--cluster", "local", "--shards", "1",
               "--timeout", "30", "--no-report", *store_args(tmp_path)]
    thread, box = in_thread(main, command)
    victim, _ = kill_while_training(store, thread)
    thread.join(DEADLINE_S)
    assert box["value"] == 1  # the task died: the driver says so and asks for a resubmission
    assert "task died" in capsys.readouterr().err
    assert not store.has_result(victim)
    stored = len(store.run_ids())

    assert main(command) == 0
    assert f"{stored} stored, {3 - stored} to run on slurm" in capsys.readouterr().out
    check_same_as_in_process(store, reference)


def test_submitit_preempted_task_is_requeued_and_resumes(tmp_path, reference):
    submitit = pytest.importorskip("submitit")
    from harness.executors import slurm
    from harness.executors.submit import SubmitOptions, open_probe, resolve
    from harness.prepared import prepare_suite
    from harness.suite import load_suite
    from harness.train.checkpoint import RunCheckpoint

    suite = suite_file(tmp_path, methods="[dpo]")
    prepare_suite(load_suite(suite), log=lambda *_: None)
    submission = resolve(str(suite), [], str(tmp_path / "results"))
    dpo = next(s.run_id for s in submission.todo if s.method == "dpo")
    open_probe(submission)
    executor = slurm.make_executor(submission, SubmitOptions(executor="slurm", cluster="local", timeout_min=30))
    job = executor.submit(slurm.SubmittedTask(), submission.task([dpo], 60.0))
    checkpoint = RunCheckpoint(dpo, 2).folder / "state.pt"
    deadline = time.monotonic() + DEADLINE_S
    while not checkpoint.exists():  # pre-empt it once a checkpoint is saved
        assert time.monotonic() < deadline and not job.done(), "the task saved no checkpoint"
        time.sleep(0.05)
    first_pid = json.loads(submission.store.lock_path(dpo).read_text())["pid"]
    # What SLURM does on pre-emption: the task's process gets submitit's signal (USR2).
    os.kill(first_pid, submitit.local.local.LocalJobEnvironment._usr_sig())
    answer = job.result()
    assert answer["runs"] == {dpo: "ok"} and answer["error"] is None
    assert answer["pid"] != first_pid  # stored by the requeued process
    assert "Requeued" in job.stderr() + job.stdout()
    assert isinstance(job, submitit.local.local.LocalJob)
    check_same_as_in_process(submission.store, reference, [dpo])


def test_ray_tasks_with_fractional_gpus_survive_a_killed_worker(tmp_path, reference, capsys):
    ray = pytest.importorskip("ray")
    from harness.cli import main

    suite = suite_file(tmp_path)
    store = ResultStore(tmp_path / "results", "tiny")
    # Two logical GPUs (Ray counts them; torch, a CPU build, still trains on CPU).
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    try:
        command = ["submit", str(suite), "--executor", "ray", "--gpus-per-run", "0.5", *store_args(tmp_path)]
        thread, box = in_thread(main, command)
        victim, killed_pid = kill_while_training(store, thread)
        thread.join(DEADLINE_S)
        assert box.get("value") == 0, capsys.readouterr()
        assert ray.available_resources().get("GPU") == 2.0  # every request given back
        _check_a_two_gpu_run_gets_its_placement_group(ray)
    finally:
        ray.shutdown()
    out = capsys.readouterr().out
    assert "3 Ray tasks submitted (num_gpus=0.5, num_cpus=1 each)" in out
    assert "3/3 runs stored" in out and (tmp_path / "reports" / "tiny.html").exists()
    assert store.read_manifest(victim)["status"] == "ok"
    check_same_as_in_process(store, reference)


def _check_a_two_gpu_run_gets_its_placement_group(ray) -> None:
    """A 2-GPU run's task: scheduled in its own placement group, holding both (logical) GPUs."""
    from harness.executors.ray_tasks import scheduled
    from harness.executors.submit import SubmitOptions

    @ray.remote
    def where():
        return ray.get_gpu_ids(), ray.get_runtime_context().get_placement_group_id()

    fn, group = scheduled(where, SubmitOptions(executor="ray", gpus_per_run=2, cpus_per_run=1))
    gpus, group_id = ray.get(fn.remote(), timeout=300)
    assert group_id == group.id.hex() and len(gpus) == 2
    ray.util.remove_placement_group(group)
