"""The scale-out side of the `harness` command: `run --shard K/N`, `prepare` and `submit`.

Kept apart from cli.py so that the executors' options stay in one place; cli.py calls
`add_run_options` and `add_commands` when it builds its parser and dispatches to the commands here.
"""

from __future__ import annotations

import argparse
import re
import shlex
import signal
import sys
import threading
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from harness.errors import HarnessError

EXIT_RUN_FAILED = 1


def add_run_options(run: argparse.ArgumentParser) -> None:
    """`harness run`'s options for a worker of a job array."""
    run.add_argument("--shard", metavar="K/N",
                     help="run only shard K of N of the plan (1-based; a deterministic split by run id), as one "
                          "task of a job array; needs `harness prepare` first and writes no report")
    run.add_argument("--wait-prepared", type=float, metavar="SECONDS",
                     help="with --shard: wait this long for `harness prepare` to finish (default: fail at once)")


def add_commands(sub, suite_args) -> None:
    """The `prepare` and `submit` sub-commands (`suite_args` adds SUITE, --set, --results, --reports)."""
    prepare = sub.add_parser("prepare", help="build what a suite's runs share (data, reference log-probs, "
                                             "evaluation baseline) once, before a fan-out")
    suite_args(prepare)

    submit = sub.add_parser("submit", help="hand a suite's missing runs to SLURM (submitit) or Ray")
    suite_args(submit)
    submit.add_argument("--executor", required=True, metavar="{slurm,ray}", help="the engine that runs the runs")
    submit.add_argument("--gpus-per-run", type=float, default=0.0, metavar="G",
                        help="GPUs per run: whole GPUs, or a fraction with --executor ray (default 0)")
    submit.add_argument("--cpus-per-run", type=int, default=1, metavar="C", help="CPUs per run (default 1)")
    submit.add_argument("--wait-prepared", type=float, default=3600.0, metavar="SECONDS",
                        help="how long a task waits for the prepare stage (default 3600)")
    submit.add_argument("--no-report", action="store_true", help="do not write reports/<suite>.html at the end")
    slurm = submit.add_argument_group("--executor slurm")
    slurm.add_argument("--partition", help="SLURM partition")
    slurm.add_argument("--array-parallelism", type=int, metavar="K", help="at most K array tasks at once")
    slurm.add_argument("--timeout", type=int, default=60, metavar="MIN",
                       help="a task's time limit in minutes; at the limit it is requeued and resumes (default 60)")
    slurm.add_argument("--shards", type=int, metavar="N", help="N tasks, each running a shard of the missing "
                                                                 "runs (default: one task per run)")
    slurm.add_argument("--cluster", default="slurm", metavar="{slurm,local,debug}",
                       help="submitit's executor: slurm, or local/debug to run the same path on this machine")
    slurm.add_argument("--no-wait", action="store_true", help="return once submitted (see `harness results`)")
    ray = submit.add_argument_group("--executor ray")
    ray.add_argument("--address", help="the Ray cluster: auto, or host:port of its head (default: a local instance)")
    ray.add_argument("--max-retries", type=int, default=3, help="retries of a task whose worker died (default 3)")


def shard_of(args) -> tuple[int, int] | None:
    """`--shard K/N` parsed (HarnessError when malformed), or None."""
    if getattr(args, "shard", None) is None:
        if getattr(args, "wait_prepared", None) is not None:
            raise HarnessError("--wait-prepared applies to a worker: give --shard K/N with it")
        return None
    return parse_shard(args.shard)


def parse_shard(text: str) -> tuple[int, int]:
    """'K/N' -> (K, N), with 1 <= K <= N; HarnessError otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not match:
        raise HarnessError(f"--shard {text!r}: give K/N, shard K of N (e.g. --shard 1/4)")
    k, n = int(match[1]), int(match[2])
    if n < 1 or not 1 <= k <= n:
        raise HarnessError(f"--shard {text}: K must be between 1 and N (shards are numbered 1/{max(n, 1)} "
                           f"to {max(n, 1)}/{max(n, 1)})")
    return k, n


def run_kwargs(args) -> dict:
    """Extra keyword arguments of run_suite for `harness run` (empty without --shard)."""
    shard = shard_of(args)
    if shard is None:
        return {}
    from harness.prepared import require_prepared

    return {"shard": shard, "wait_for_shared": partial(require_prepared, wait_seconds=args.wait_prepared or 0.0)}


def cmd_prepare(args) -> int:
    from harness.models import quiet_libraries
    from harness.preflight import check_suite
    from harness.prepared import prepare_suite
    from harness.suite import load_suite

    suite = load_suite(args.suite, args.set)
    check_suite(suite, allow_large_budget=args.allow_large_budget)  # before anything is built
    quiet_libraries()
    prepare_suite(suite)
    return 0


def cmd_submit(args, write_report) -> int:
    """Submit, wait (unless --no-wait), then write the report; exit 2 when a task met bad input."""
    from harness.executors import executor_module
    from harness.executors.submit import (
        SubmitOptions,
        check_options,
        close_probe,
        open_probe,
        resolve,
    )

    module = executor_module(args.executor)
    options = SubmitOptions(
        executor=args.executor, gpus_per_run=args.gpus_per_run, cpus_per_run=args.cpus_per_run, shards=args.shards,
        partition=args.partition, array_parallelism=args.array_parallelism, timeout_min=args.timeout,
        cluster=args.cluster, address=args.address, max_retries=args.max_retries,
        prepared_wait=args.wait_prepared, wait=not args.no_wait,
    )
    check_options(options)
    module.check(options)
    started = time.perf_counter()
    submission = resolve(args.suite, args.set, args.results, allow_large_budget=args.allow_large_budget)
    if submission.suite.tune:
        raise HarnessError(f"{submission.suite.path}: harness submit sends a fixed plan, but a tuned suite's trials "
                           "follow from earlier results; run `harness run` in each process instead (studies and "
                           "runs are claimed with locks)")
    print(f"{submission.suite.name}: {len(submission.specs)} runs planned, "
          f"{len(submission.specs) - len(submission.todo)} stored, {len(submission.todo)} to run on {args.executor}")
    if submission.todo:
        open_probe(submission)
        try:
            with _terminate_as_interrupt():
                outcome = module.submit(submission, options)
        except BaseException:
            if not submission.probe_cleanup:  # no job of the cluster's removes the probe files: this driver does
                close_probe(submission)
            raise
        if options.wait:  # without waiting, tasks still to start need the probe files (their cleanup job removes them)
            close_probe(submission)
        if outcome.errors:
            raise HarnessError(outcome.errors[0])
        if not options.wait:
            return 0
        if not _all_stored(outcome, submission, resume="harness " + shlex.join(getattr(args, "argv", []))):
            return EXIT_RUN_FAILED
    if not args.no_report:
        write_report(Path(args.results), submission.suite.name, Path(args.reports))
    print(f"{submission.suite.name}: finished in {time.perf_counter() - started:.1f} s")
    return 0


@contextmanager
def _terminate_as_interrupt():
    """A driver stopped with SIGTERM (kill, a closed session's SIGHUP) ends as on Ctrl-C, so that its
    probe files are removed or left to the cleanup job, not left behind by an abrupt exit."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    if threading.current_thread() is not threading.main_thread():  # handlers belong to the main thread
        yield
        return
    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _all_stored(outcome, submission, *, resume: str) -> bool:
    """Print what went wrong (tasks that died and their runs, runs that failed, runs still missing)
    and the command that finishes the suite; True when every planned run is stored."""
    for crash in outcome.crashed:
        print(f"  task died: {crash}", file=sys.stderr)
    for run_id, error in outcome.failed.items():
        print(f"  failed: {run_id}: {error}", file=sys.stderr)
    missing = [s for s in submission.specs if not submission.store.has_result(s.run_id)]
    if missing:
        print(f"  {len(missing)} runs not stored ({', '.join(s.run_id for s in missing)}); submit again to run "
              f"only those: {resume}", file=sys.stderr)
    return not (outcome.crashed or outcome.failed or missing)
