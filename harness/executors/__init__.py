"""Who runs a suite's runs: this process (`harness run`, optionally one `--shard K/N` of the
plan), SLURM job arrays through submitit, or Ray tasks. Every executor hands out run ids only;
a worker claims each run with a lease (harness/results/lease.py) in the shared results folder and
runs it with the same runner as `harness run`, so the loss, training and evaluation code never
knows which executor runs it. Executors sit above the runner (they import it, never the reverse).
Importing this package imports neither submitit nor Ray: they are extras."""

from __future__ import annotations

from harness.errors import HarnessError, did_you_mean

EXECUTORS = {
    "slurm": ("harness.executors.slurm", "submitit", "slurm"),
    "ray": ("harness.executors.ray_tasks", "ray", "ray"),
}


def executor_module(name: str):
    """The module implementing `harness submit --executor NAME`; HarnessError for an unknown name
    or a missing extra (`pip install -e ".[slurm]"` / `".[ray]"`)."""
    if name not in EXECUTORS:
        raise HarnessError(f"--executor {name!r} is not an executor{did_you_mean(name, EXECUTORS)}")
    import importlib

    module, package, extra = EXECUTORS[name]
    try:
        importlib.import_module(package)
    except ImportError:
        raise HarnessError(f"--executor {name} needs {package}: pip install -e \".[{extra}]\"") from None
    return importlib.import_module(module)
