"""What every submitted task runs, on whatever host the engine puts it: check that the results
folder and the cache are the driver's (shared), then run the given run ids with the ordinary
runner, which claims each with a lease. The task's answer is plain data (the driver prints it);
bad input comes back as `error`, so the driver can end with one line and exit status 2. A suite
whose runs train over several GPUs (train.distributed) runs the task again in that many
processes on this node (torchrun: `python -m harness.executors.worker TASK ANSWER`), inside the
task the executor gave those GPUs (RunSpec.gpus_per_run)."""

from __future__ import annotations

import json
import os
import secrets
import socket
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

PROBE_PREFIX = ".harness-probe-"


@dataclass(frozen=True)
class Task:
    """One task of a submission: the suite (as the driver resolved it) and the runs it owns."""

    suite_path: str  # absolute
    overrides: tuple[str, ...]
    results: str  # absolute
    cache: str  # absolute: $HARNESS_CACHE of the driver
    probe: str  # the driver's token: the probe files this task must see
    run_ids: tuple[str, ...] = ()
    prepared_wait: float = 0.0  # seconds to wait for `harness prepare`
    prepare: bool = False  # this task is the suite's prepare stage, not runs
    label: str = field(default="", compare=False)


def new_probe(results: Path, cache: Path) -> str:
    """Write a probe file with a fresh token into the results folder and the cache; a task on a
    host that does not share them will not see the files."""
    token = secrets.token_hex(8)
    for folder in (results, cache):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{PROBE_PREFIX}{token}").write_text(socket.gethostname())
    return token


def remove_probe(results: Path, cache: Path, token: str) -> None:
    for folder in (results, cache):
        (folder / f"{PROBE_PREFIX}{token}").unlink(missing_ok=True)


def check_shared(results: Path, cache: Path, token: str) -> None:
    """HarnessError unless this host sees the driver's probe in both folders."""
    for what, folder in (("results folder", results), ("cache ($HARNESS_CACHE)", cache)):
        if not (folder / f"{PROBE_PREFIX}{token}").exists():
            raise HarnessError(
                f"{folder}: this {what} is not shared with host {socket.gethostname()} (the driver's probe file "
                f"is not there); put it on a filesystem every worker mounts at the same path")


def run_task(task: Task) -> dict[str, Any]:
    """Run one task; returns {"host", "pid", "runs": {run_id: status}, "failed": {run_id: error},
    "error": one line of bad input or None}."""
    os.environ["HARNESS_CACHE"] = task.cache  # before anything reads the cache location
    answer: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid(), "runs": {}, "failed": {}, "error": None}
    try:
        check_shared(Path(task.results), Path(task.cache), task.probe)
        from harness.suite import load_suite

        suite = load_suite(task.suite_path, list(task.overrides))
        from harness.models import quiet_libraries

        quiet_libraries()
        if task.prepare:
            from harness.prepared import prepare_suite

            prepare_suite(suite, wait_seconds=task.prepared_wait)
            return answer
        from harness.train.distributed import launched_distributed

        if suite.train.distributed.processes > 1 and not launched_distributed():
            return _in_processes(task, suite.train.distributed.processes)
        from harness.prepared import require_prepared
        from harness.runner import run_suite

        outcome = run_suite(suite, Path(task.results), run_ids=list(task.run_ids),
                            wait_for_shared=partial(require_prepared, wait_seconds=task.prepared_wait))
    except HarnessError as err:
        answer["error"] = str(err)
        return answer
    for run in outcome.runs:
        answer["runs"][run.spec.run_id] = run.status
        if run.status == "failed":
            answer["failed"][run.spec.run_id] = run.error
    return answer


def _in_processes(task: Task, processes: int) -> dict[str, Any]:
    """`run_task(task)` in `processes` processes (torchrun on this node); the main one's answer."""
    from harness.train.distributed import launch

    with tempfile.TemporaryDirectory(prefix="harness-task-") as folder:
        task_file, answer_file = Path(folder) / "task.json", Path(folder) / "answer.json"
        task_file.write_text(json.dumps(asdict(task)))
        status = launch(processes, ["-m", "harness.executors.worker", str(task_file), str(answer_file)])
        if not answer_file.exists():  # a crash, not bad input: the engine's retry takes the run over
            raise RuntimeError(f"{task.label}: its {processes} processes ended with status {status} and no answer")
        return json.loads(answer_file.read_text())


def _main(task_file: str, answer_file: str) -> None:
    """One of a task's processes (see `_in_processes`); the main process writes the answer."""
    raw = json.loads(Path(task_file).read_text())
    task = Task(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
    answer = run_task(task)
    from harness.train.distributed import is_main

    if is_main():
        Path(answer_file).write_text(json.dumps(answer))


if __name__ == "__main__":
    _main(*sys.argv[1:3])
