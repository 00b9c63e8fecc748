"""`harness submit --executor ray`: one Ray task per run, with the run's resources.

The driver connects to a Ray cluster (`--address auto` or host:port; none: a local instance on
this machine; a `ray.init` already made in this process is used as it is), runs the prepare stage
as one task unless the suite is prepared, then submits one task per missing run with
`num_gpus=--gpus-per-run` (a fraction lets several small runs share a GPU) and
`num_cpus=--cpus-per-run`. A run of more than one GPU runs in a placement group of its own (one
bundle holding its GPUs and CPUs, STRICT_PACK: on one node; removed when the task ends), which
also holds any task the run starts. A run with train.distributed asks for its own GPU count
(submit.gpus_for) and launches its processes inside the task (harness.executors.worker). Tasks write their results into the shared results folder themselves; the
driver prints progress over runs as tasks end, and the report is written at the end. A task
whose worker process dies (a lost node, SIGKILL) is retried by Ray up to `--max-retries` times;
the retry takes the dead worker's lease over and resumes from the run's last checkpoint.
"""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import urlparse

import ray

from harness.errors import HarnessError
from harness.executors.submit import Submission, SubmitOptions, SubmitOutcome, gpus_for, progress_line
from harness.executors.worker import Task, run_task

CONNECT_TIMEOUT_S = 5.0


def check(options: SubmitOptions) -> None:
    if options.shards is not None:
        raise HarnessError("--shards is for --executor slurm; Ray runs one task per run")
    if options.max_retries < 0:
        raise HarnessError(f"--max-retries {options.max_retries}: give 0 or more")
    if options.address not in (None, "auto", "local") and not ray.is_initialized():
        _check_reachable(options.address)  # before the suite is even loaded


def connect(address: str | None) -> None:
    """Join the cluster at `address` (or start a local instance); HarnessError when it does not
    answer. A Ray already initialised in this process (a test's `ray.init(num_cpus=2)`) is kept."""
    if ray.is_initialized():
        return
    try:
        ray.init(address=None if address == "local" else address, include_dashboard=False, log_to_driver=False)
    except ConnectionError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise HarnessError(f"--address {address}: no Ray cluster answers ({first}); start one with `ray start "
                           "--head` or give the head node's host:port") from None


def _check_reachable(address: str) -> None:
    """A quick TCP connect to host:port, so that an address nobody answers fails in seconds
    rather than after Ray's own minute of retries."""
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    if not parsed.hostname or parsed.port is None:
        raise HarnessError(f"--address {address!r}: give auto, or the head node's host:port (e.g. 10.0.0.1:6379)")
    try:
        socket.create_connection((parsed.hostname, parsed.port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise HarnessError(f"--address {address}: no Ray cluster answers ({err.strerror or err}); start one with "
                           "`ray start --head` or give the head node's host:port") from None


def task_options(gpus_per_run: float, cpus_per_run: int, max_retries: int) -> dict[str, Any]:
    """The options of one run's task (a multi-GPU run adds its placement group, `placement_bundles`)."""
    return {"num_cpus": cpus_per_run, "num_gpus": gpus_per_run, "max_retries": max_retries,
            "retry_exceptions": False}


def placement_bundles(gpus_per_run: float, cpus_per_run: int) -> list[dict[str, float]] | None:
    """The placement group of a multi-GPU run: one bundle with all its GPUs and CPUs (a task must
    fit in one bundle), or None for a run of at most one GPU."""
    if gpus_per_run <= 1:
        return None
    return [{"GPU": float(gpus_per_run), "CPU": float(cpus_per_run)}]


def scheduled(remote_fn, options: SubmitOptions, gpus: float | None = None):
    """(the remote function with the run's resources, its placement group or None); `gpus`
    (default --gpus-per-run) is the run's own count when it trains on several (submit.gpus_for)."""
    gpus = options.gpus_per_run if gpus is None else gpus
    opts = task_options(gpus, options.cpus_per_run, options.max_retries)
    bundles = placement_bundles(gpus, options.cpus_per_run)
    group = None
    if bundles is not None:
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        group = placement_group(bundles, strategy="STRICT_PACK")
        opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
            group, placement_group_bundle_index=0, placement_group_capture_child_tasks=True)
    return remote_fn.options(**opts), group


def _remove(group) -> None:
    if group is not None:
        from ray.util.placement_group import remove_placement_group

        remove_placement_group(group)


_remote_task = ray.remote(run_task)


def submit(submission: Submission, options: SubmitOptions, *, log=print) -> SubmitOutcome:
    check(options)
    connect(options.address)
    outcome = SubmitOutcome()
    if not submission.prepared():
        log(f"{submission.suite.name}: preparing (one task)")
        task = submission.task([], options.prepared_wait, prepare=True)
        fn, group = scheduled(_remote_task, options)
        outcome.absorb(*_get(fn.remote(task), "prepare"))
        _remove(group)
        if outcome.errors or outcome.crashed:
            return outcome
    pending: dict[Any, tuple[Task, Any]] = {}
    for spec in submission.todo:
        task = submission.task([spec.run_id], options.prepared_wait, label=f"{spec.label()} ({spec.run_id})")
        fn, group = scheduled(_remote_task, options, gpus_for(spec, options))
        pending[fn.remote(task)] = (task, group)
    log(f"{submission.suite.name}: {len(pending)} Ray tasks submitted "
        f"(num_gpus={options.gpus_per_run:g}, num_cpus={options.cpus_per_run} each)")
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        task, group = pending.pop(done[0])
        answer, label, crash = _get(done[0], task.label)
        _remove(group)
        outcome.absorb(answer, label, crash)
        status = crash or (answer or {}).get("error") or ", ".join(sorted(set((answer or {}).get("runs", {}).values())))
        log(f"  {label}: {status} — {progress_line(submission)}")
    return outcome


def _get(ref, label: str) -> tuple[dict[str, Any] | None, str, str | None]:
    try:
        return ray.get(ref), label, None
    except (ray.exceptions.RayTaskError, ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as err:
        reason = str(err).strip().splitlines()
        return None, label, f"task failed ({reason[0] if reason else type(err).__name__})"
