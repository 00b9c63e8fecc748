"""`harness submit --executor slurm`: one SLURM array job through submitit, after a prepare job.

Each array task runs single runs (default) or a shard of the missing runs (`--shards N`), with
`--gpus-per-run` whole GPUs, `--timeout` minutes and at most `--array-parallelism` tasks at once.
The prepare job builds what the runs share first; on SLURM the array waits for it
(`--dependency afterok`), elsewhere the driver does. A task that reaches its time limit or is
pre-empted gets submitit's signal, is requeued (the task is `Checkpointable`), and its runs
resume from their last training checkpoint in `$HARNESS_CACHE/checkpoints/`.

`--cluster local` runs the same path with submitit's LocalExecutor (one process per task on this
machine; how it is tested), `--cluster debug` with its DebugExecutor (in this process).
"""

from __future__ import annotations

import shutil
import time
from typing import Any

import submitit

from harness.errors import HarnessError
from harness.executors.submit import (
    Submission,
    SubmitOptions,
    SubmitOutcome,
    log_folder,
    progress_line,
    run_tasks,
)
from harness.executors.worker import Task, run_task

CLUSTERS = ("slurm", "local", "debug")
POLL_SECONDS = 5.0


class SubmittedTask(submitit.helpers.Checkpointable):
    """The callable a SLURM task runs. Checkpointable: on timeout or pre-emption submitit calls
    `checkpoint`, which (by default) resubmits the same task; its runs then resume from their
    training checkpoints, and the lease of the interrupted run is released as the process exits."""

    def __call__(self, task: Task) -> dict[str, Any]:
        return run_task(task)


def check(options: SubmitOptions) -> None:
    """Bad input for SLURM, before anything is submitted."""
    if options.cluster not in CLUSTERS:
        raise HarnessError(f"--cluster {options.cluster!r}: give one of {', '.join(CLUSTERS)}")
    if options.cluster == "slurm" and shutil.which("sbatch") is None:
        raise HarnessError("--executor slurm: no SLURM cluster here (sbatch is not on PATH); submit from a SLURM "
                           "login node, or use --executor ray, or `harness run` on this machine")
    if options.gpus_per_run != int(options.gpus_per_run):
        raise HarnessError(f"--gpus-per-run {options.gpus_per_run:g}: SLURM allocates whole GPUs; "
                           "use --executor ray to share a GPU between runs")


def make_executor(submission: Submission, options: SubmitOptions) -> submitit.Executor:
    executor = submitit.AutoExecutor(folder=log_folder(submission, "submitit"), cluster=options.cluster)
    parameters: dict[str, Any] = {
        "name": f"harness-{submission.suite.name}", "timeout_min": options.timeout_min,
        "cpus_per_task": options.cpus_per_run, "gpus_per_node": int(options.gpus_per_run),
        "tasks_per_node": 1, "nodes": 1,
    }
    if options.partition:
        parameters["slurm_partition"] = options.partition
    if options.array_parallelism:
        parameters["slurm_array_parallelism"] = options.array_parallelism
    executor.update_parameters(**parameters)
    return executor


def submit(submission: Submission, options: SubmitOptions, *, log=print) -> SubmitOutcome:
    """Submit the prepare job (unless prepared) and the array job; wait for them when asked."""
    check(options)
    outcome = SubmitOutcome()
    executor = make_executor(submission, options)
    prepare_job = None
    if not submission.prepared():
        prepare_job = executor.submit(SubmittedTask(), submission.task([], options.prepared_wait, prepare=True))
        log(f"{submission.suite.name}: prepare job {prepare_job.job_id} submitted")
        if options.cluster == "slurm":  # the array starts once the prepare job succeeded
            executor.update_parameters(slurm_additional_parameters={"dependency": f"afterok:{prepare_job.job_id}"})
        else:
            outcome.absorb(*_result(prepare_job, "prepare"))
            if outcome.errors or outcome.crashed:
                return outcome
    tasks = [submission.task(ids, options.prepared_wait) for ids in run_tasks(submission, options.shards)]
    jobs = executor.map_array(SubmittedTask(), tasks)
    log(f"{submission.suite.name}: array job {jobs[0].job_id.split('_')[0] if jobs else '-'} of {len(jobs)} tasks "
        f"submitted ({len(submission.todo)} runs); logs in {log_folder(submission, 'submitit')}")
    if not options.wait:
        return outcome
    _wait(jobs, submission, log)
    for job, task in zip(jobs, tasks):
        outcome.absorb(*_result(job, task.label))
    return outcome


def _wait(jobs: list[submitit.Job], submission: Submission, log) -> None:
    """Print progress over runs until every task has ended."""
    last = ""
    while not all(job.done() for job in jobs):
        line = progress_line(submission)
        if line.split(" (")[0] != last:
            log(line)
            last = line.split(" (")[0]
        time.sleep(POLL_SECONDS)
    log(progress_line(submission))


def _result(job: submitit.Job, label: str) -> tuple[dict[str, Any] | None, str, str | None]:
    """(answer, label, crash) of an ended job: a task that died has no answer, only its reason."""
    try:
        return job.result(), label, None
    except (submitit.core.utils.UncompletedJobError, submitit.core.utils.FailedJobError) as err:
        reason = str(err).strip().splitlines()
        return None, label, f"job {job.job_id} ended without an answer ({reason[0] if reason else 'no reason'})"
