"""`harness submit --executor slurm`: one SLURM array job through submitit, after a prepare job.

Each array task runs single runs (default) or a shard of the missing runs (`--shards N`), with
`--gpus-per-run` whole GPUs, `--timeout` minutes and at most `--array-parallelism` tasks at once.
The prepare job builds what the runs share first; on SLURM the array waits for it
(`--dependency afterok`, and `--kill-on-invalid-dep` so a failed prepare job cancels the array),
elsewhere the driver does. A task that reaches its time limit or is pre-empted gets submitit's
signal, is requeued (the task is `Checkpointable`), and its runs resume from their last training
checkpoint in `$HARNESS_CACHE/checkpoints/`. On SLURM a last job, once the array has ended,
removes the driver's probe files (a driver that returned at once, `--no-wait`, or was killed
leaves them to it).

The driver follows its jobs through the queue (harness.executors.slurm_cluster), not through
submitit's `sacct` poll, so a task that died without an answer (killed, cancelled, its node lost)
is noticed on clusters without accounting too: the driver names its runs and exits non-zero.

`--cluster local` runs the same path with submitit's LocalExecutor (one process per task on this
machine; how it is tested), `--cluster debug` with its DebugExecutor (in this process).
"""

from __future__ import annotations

import shutil
import time
from typing import Any

import submitit

from harness.errors import HarnessError
from harness.executors import slurm_cluster
from harness.executors.submit import (
    Submission,
    SubmitOptions,
    SubmitOutcome,
    log_folder,
    progress_line,
    run_tasks,
)
from harness.executors.worker import Task, remove_probe, run_task

CLUSTERS = ("slurm", "local", "debug")
POLL_SECONDS = 5.0
SIGNAL_DELAY_S = 90  # submitit's default: the requeue signal comes this long before the time limit
# How long a task may look ended without its answer before it counts as lost: a requeue passes
# through final-looking states, and a shared filesystem may show the answer late.
LOST_AFTER_S = 30.0
CLEANUP_TIMEOUT_MIN = 5


class PrepareFailed(HarnessError):
    """Raised by the prepare task on bad input, so that its job fails and `afterok` stops the array."""


class SubmittedTask(submitit.helpers.Checkpointable):
    """The callable a SLURM task runs. Checkpointable: on timeout or pre-emption submitit calls
    `checkpoint`, which (by default) resubmits the same task; its runs then resume from their
    training checkpoints, and the lease of the interrupted run is released as the process exits."""

    def __call__(self, task: Task) -> dict[str, Any]:
        answer = run_task(task)
        if task.prepare and answer["error"]:
            raise PrepareFailed(answer["error"])
        return answer


def check(options: SubmitOptions) -> None:
    """Bad input for SLURM, before anything is planned or submitted."""
    if options.cluster not in CLUSTERS:
        raise HarnessError(f"--cluster {options.cluster!r}: give one of {', '.join(CLUSTERS)}")
    if options.cluster == "slurm" and shutil.which("sbatch") is None:
        raise HarnessError("--executor slurm: no SLURM cluster here (sbatch is not on PATH); submit from a SLURM "
                           "login node, or use --executor ray, or `harness run` on this machine")
    if options.gpus_per_run != int(options.gpus_per_run):
        raise HarnessError(f"--gpus-per-run {options.gpus_per_run:g}: SLURM allocates whole GPUs; "
                           "use --executor ray to share a GPU between runs")
    if options.timeout_min * 60 <= SIGNAL_DELAY_S:
        raise HarnessError(f"--timeout {options.timeout_min}: a task's time limit in minutes must be longer than "
                           f"submitit's {SIGNAL_DELAY_S} s warning before it (the requeue signal); give at least "
                           f"{SIGNAL_DELAY_S // 60 + 1}")
    if options.array_parallelism is not None and options.array_parallelism < 1:
        raise HarnessError(f"--array-parallelism {options.array_parallelism}: give at least 1 task at once "
                           "(leave it out for no limit)")
    if options.cluster == "slurm":
        slurm_cluster.check_partition(options.partition, int(options.gpus_per_run), options.cpus_per_run)


def run_processes(submission: Submission) -> int:
    """How many processes one run of the submission trains in (train.distributed; 1 without)."""
    return max([1] + [s.gpus_per_run() for s in submission.todo if s.trains])


def task_gpus(submission: Submission, options: SubmitOptions) -> int:
    """The GPUs each array task asks for: --gpus-per-run, or, for a run that trains over several
    processes, one GPU per process. Without --gpus-per-run the processes are CPU (gloo) ones, as
    `harness run` trains them on a machine without GPUs."""
    if options.gpus_per_run <= 0:
        return 0
    return max(int(options.gpus_per_run), run_processes(submission))


def task_cpus(submission: Submission, options: SubmitOptions) -> int:
    """The CPUs each array task asks for: --cpus-per-run for each of the run's processes (the task
    launches them on its one node)."""
    return options.cpus_per_run * run_processes(submission)


def make_executor(submission: Submission, options: SubmitOptions) -> submitit.Executor:
    executor = submitit.AutoExecutor(folder=log_folder(submission, "submitit"), cluster=options.cluster)
    parameters: dict[str, Any] = {
        "name": f"harness-{submission.suite.name}", "timeout_min": options.timeout_min,
        "cpus_per_task": task_cpus(submission, options), "gpus_per_node": task_gpus(submission, options),
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
    on_slurm = options.cluster == "slurm"
    if on_slurm and run_processes(submission) > 1:  # each task asks for every process's GPU and CPUs
        slurm_cluster.check_partition(options.partition, task_gpus(submission, options), task_cpus(submission, options))
    outcome = SubmitOutcome()
    executor = make_executor(submission, options)
    prepare_job = None
    if not submission.prepared():
        prepare_job = executor.submit(SubmittedTask(), submission.task([], options.prepared_wait, prepare=True))
        log(f"{submission.suite.name}: prepare job {prepare_job.job_id} submitted")
        if on_slurm:  # the array starts once the prepare job succeeded, and is cancelled if it failed
            executor.update_parameters(slurm_additional_parameters={
                "dependency": f"afterok:{prepare_job.job_id}", "kill-on-invalid-dep": "yes"})
        else:
            outcome.absorb(*_result(prepare_job, "prepare"))
            if outcome.errors or outcome.crashed:
                return outcome
            prepare_job = None
    tasks = [submission.task(ids, options.prepared_wait) for ids in run_tasks(submission, options.shards)]
    jobs = executor.map_array(SubmittedTask(), tasks)
    array_id = jobs[0].job_id.split("_")[0] if jobs else "-"
    log(f"{submission.suite.name}: array job {array_id} of {len(jobs)} tasks submitted ({len(submission.todo)} runs); "
        f"logs in {log_folder(submission, 'submitit')}")
    if on_slurm and jobs:
        _submit_cleanup(executor, submission, array_id, log)
    if not options.wait:
        return outcome
    if on_slurm:
        return _follow(prepare_job, jobs, tasks, submission, options, log)
    _wait_local(jobs, submission, log)
    for job, task in zip(jobs, tasks):
        outcome.absorb(*_result(job, task.label))
    return outcome


def _submit_cleanup(executor: submitit.Executor, submission: Submission, array_id: str, log) -> None:
    """A small job that removes the probe files once every array task has ended, however it ended."""
    executor.update_parameters(timeout_min=CLEANUP_TIMEOUT_MIN, gpus_per_node=0, cpus_per_task=1,
                               name=f"harness-{submission.suite.name}-cleanup",
                               slurm_additional_parameters={"dependency": f"afterany:{array_id}"})
    job = executor.submit(remove_probe, submission.results, submission.cache, submission.probe)
    submission.probe_cleanup = True
    log(f"{submission.suite.name}: cleanup job {job.job_id} removes the probe files after the array")


def _wait_local(jobs: list[submitit.Job], submission: Submission, log) -> None:
    """Print progress over runs until every local task has ended (submitit sees its processes)."""
    last = ""
    while not all(job.done() for job in jobs):
        last = _progress(submission, log, last)
        time.sleep(POLL_SECONDS)
    _progress(submission, log, last)


def _progress(submission: Submission, log, last: str) -> str:
    """Print the progress line when the count of stored runs changed; returns what was printed."""
    line = progress_line(submission)
    if line.split(" (")[0] != last:
        log(line)
    return line.split(" (")[0]


def _follow(prepare_job, jobs: list[submitit.Job], tasks: list[Task], submission: Submission,
            options: SubmitOptions, log) -> SubmitOutcome:
    """Wait for the jobs on SLURM, reading their states from the queue: a task that answered is
    absorbed, one that ended without an answer is lost. A failed prepare job ends the wait (its array
    is cancelled). Without an answer from the queue for longer than --timeout, the driver gives up."""
    outcome = SubmitOutcome()
    watched = {job.job_id: (job, task.label) for job, task in zip(jobs, tasks)}
    if prepare_job is not None:
        watched[prepare_job.job_id] = (prepare_job, "prepare")
    ended_since: dict[str, float] = {}
    queue_silent_since: float | None = None
    last = ""
    while watched:
        last = _progress(submission, log, last)
        try:
            states = slurm_cluster.job_states(list(watched))
            queue_silent_since = None
        except HarnessError as err:
            queue_silent_since = queue_silent_since or time.monotonic()
            if time.monotonic() - queue_silent_since > options.timeout_min * 60:
                for job_id, (_, label) in watched.items():
                    outcome.absorb(None, label, f"job {job_id}: no word from SLURM for {options.timeout_min} min "
                                                f"(--timeout; {err})")
                return outcome
            states = {}
        now = time.monotonic()
        for job_id in list(watched):
            job, label = watched[job_id]
            answered = job.paths.result_pickle.exists()
            state = states.get(job_id)
            if not answered and (state is None or state.live):
                ended_since.pop(job_id, None)
                continue
            if not answered and now - ended_since.setdefault(job_id, now) < LOST_AFTER_S:
                continue
            del watched[job_id]
            if answered:
                outcome.absorb(*_result(job, label))
            else:
                outcome.absorb(None, label, f"job {job_id} ended {state.state}"
                                            f"{f' ({state.reason})' if state.reason not in ('', 'None') else ''} "
                                            f"without an answer; its log: {job.paths.stderr}")
            if label == "prepare" and (outcome.errors or outcome.crashed):
                return _prepare_failed(outcome, watched, job_id, log)
        if watched:
            time.sleep(POLL_SECONDS)
    _progress(submission, log, last)
    return outcome


def _prepare_failed(outcome: SubmitOutcome, watched: dict, prepare_id: str, log) -> SubmitOutcome:
    """The prepare job failed: cancel the array (kill-on-invalid-dep does too) and report its runs."""
    slurm_cluster.cancel(list(watched))
    why = (outcome.errors or outcome.crashed)[0]
    log(f"prepare job {prepare_id} failed, so its array job was cancelled: {why}")
    if not outcome.errors:
        for job_id, (_, label) in watched.items():
            outcome.absorb(None, label, f"job {job_id} cancelled: the prepare job {prepare_id} failed")
    return outcome


def _result(job: submitit.Job, label: str) -> tuple[dict[str, Any] | None, str, str | None]:
    """(answer, label, crash) of an ended job: a task that died has no answer, only its reason; a
    prepare task that met bad input (PrepareFailed) answers with that one line as its error."""
    try:
        return job.result(), label, None
    except (submitit.core.utils.UncompletedJobError, submitit.core.utils.FailedJobError) as err:
        lines = [line for line in str(err).strip().splitlines() if line.strip()]
        refused = next((line.split(": ", 1)[1] for line in reversed(lines)
                        if line.startswith(f"{__name__}.{PrepareFailed.__name__}: ")), None)
        if refused is not None:
            return {"error": refused}, label, None
        return None, label, f"job {job.job_id} ended without an answer ({lines[0] if lines else 'no reason'})"
