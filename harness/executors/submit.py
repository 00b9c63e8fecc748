"""The driver side of `harness submit`, common to every executor: resolve the suite and the
folders the workers must share, decide the tasks, and turn the tasks' answers into one outcome.
The executors (slurm.py, ray_tasks.py) only carry tasks to workers and answers back."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.cache import cache_root
from harness.errors import HarnessError
from harness.executors.worker import Task, new_probe, remove_probe
from harness.plan import RunSpec, deal
from harness.results import ResultStore
from harness.suite import Suite, load_suite


@dataclass
class SubmitOptions:
    """What `harness submit` was asked for, executor-specific fields included."""

    executor: str
    gpus_per_run: float = 0.0
    cpus_per_run: int = 1
    shards: int | None = None  # SLURM: tasks run shards of the missing runs instead of single runs
    partition: str | None = None
    array_parallelism: int | None = None
    timeout_min: int = 60
    cluster: str = "slurm"  # submitit: slurm, or local / debug on one machine
    address: str | None = None  # Ray: None starts a local instance; "auto" or host:port joins one
    max_retries: int = 3
    prepared_wait: float = 3600.0
    wait: bool = True


@dataclass
class Submission:
    """A suite resolved by the driver: its missing runs, and the folders every worker must see."""

    suite: Suite
    suite_path: Path
    overrides: tuple[str, ...]
    results: Path
    cache: Path
    specs: list[RunSpec]
    todo: list[RunSpec]
    probe: str = ""
    probe_cleanup: bool = False  # a job of the cluster's removes the probe files once the tasks ended
    started: float = field(default_factory=time.perf_counter)

    @property
    def store(self) -> ResultStore:
        return ResultStore(self.results, self.suite.name)

    def task(self, run_ids: list[str], prepared_wait: float, *, prepare: bool = False, label: str = "") -> Task:
        return Task(suite_path=str(self.suite_path), overrides=self.overrides, results=str(self.results),
                    cache=str(self.cache), probe=self.probe, run_ids=tuple(run_ids), prepared_wait=prepared_wait,
                    prepare=prepare, label=label or (", ".join(run_ids) if run_ids else "prepare"))

    def prepared(self) -> bool:
        from harness.prepared import marker_path

        return marker_path(self.suite).exists()


def gpus_for(spec: RunSpec, options: SubmitOptions) -> float:
    """The GPUs a run's task asks for: --gpus-per-run, or more when the run itself trains on more
    (train.distributed: RunSpec.gpus_per_run)."""
    return max(options.gpus_per_run, spec.gpus_per_run())


def check_options(options: SubmitOptions) -> None:
    """Bad combinations of resources, before anything is submitted."""
    g = options.gpus_per_run
    if g < 0 or (g > 1 and g != int(g)):
        raise HarnessError(f"--gpus-per-run {g:g}: give a fraction of one GPU (0.25) or a whole number of GPUs")
    if options.cpus_per_run < 1:
        raise HarnessError(f"--cpus-per-run {options.cpus_per_run}: give at least 1")
    if options.shards is not None and options.shards < 1:
        raise HarnessError(f"--shards {options.shards}: give at least 1")


def resolve(suite_text: str, overrides: list[str], results: str, *, allow_large_budget: bool = False) -> Submission:
    """Load, check (harness.preflight) and plan the suite as the workers will, with absolute paths
    (a worker's working folder is not the driver's)."""
    from harness.preflight import check_services, check_suite

    suite_path = Path(suite_text).resolve()
    suite = load_suite(suite_path, overrides)
    results_root = Path(results).resolve()
    specs = check_suite(suite, results_root, allow_large_budget=allow_large_budget)
    check_services(suite)
    store = ResultStore(results_root, suite.name)
    todo = [s for s in specs if not store.has_result(s.run_id)]
    return Submission(suite, suite_path, tuple(overrides), results_root, cache_root().resolve(), specs, todo)


def run_tasks(submission: Submission, shards: int | None) -> list[list[str]]:
    """The run ids of each task: one run per task, or the missing runs dealt into `shards` shards
    exactly as `harness run --shard K/N` deals the plan."""
    ids = [s.run_id for s in submission.todo]
    if shards is None:
        return [[r] for r in ids]
    return deal(ids, shards)


def open_probe(submission: Submission) -> None:
    submission.probe = new_probe(submission.results, submission.cache)


def close_probe(submission: Submission) -> None:
    if submission.probe:
        remove_probe(submission.results, submission.cache, submission.probe)


@dataclass
class SubmitOutcome:
    """What the tasks answered: bad input (one line each), failed runs, tasks that died."""

    errors: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    crashed: list[str] = field(default_factory=list)

    def absorb(self, answer: dict[str, Any] | None, task_label: str, crash: str | None = None) -> None:
        if crash is not None or answer is None:
            self.crashed.append(f"{task_label}: {crash or 'no answer'}")
            return
        if answer.get("error"):
            self.errors.append(answer["error"])
        self.failed.update(answer.get("failed") or {})


def progress_line(submission: Submission) -> str:
    stored = sum(submission.store.has_result(s.run_id) for s in submission.specs)
    seconds = time.perf_counter() - submission.started
    return f"{submission.suite.name}: {stored}/{len(submission.specs)} runs stored ({seconds:.0f} s)"


def log_folder(submission: Submission, executor: str) -> Path:
    """Where an engine's own logs go: beside the results, on the shared filesystem."""
    folder = submission.results / f".{executor}" / submission.suite.name
    folder.mkdir(parents=True, exist_ok=True)
    return folder

