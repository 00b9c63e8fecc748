"""What the driver asks the SLURM controller itself, with `sinfo`, `squeue` and `scancel`: the
partitions and their GPUs (to refuse bad options before anything is submitted), and the state of
submitted jobs. submitit learns a job's state from `sacct`, which needs SLURM's accounting
database; a cluster without one (a one-node cluster, many small ones) answers `sacct` with an
error, and submitit then only notices a task that wrote its result. A task killed without one
would be waited for forever, so the driver reads the queue instead."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

from harness.errors import HarnessError

QUERY_TIMEOUT_S = 30.0
# States of a job that may still run (SLURM's squeue(1) "JOB STATE CODES"); every other state is final.
LIVE_STATES = frozenset({
    "PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING",
    "SUSPENDED", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD",
})
# Reasons a pending job can never start for: SLURM keeps such a job pending until it is cancelled.
NEVER_STARTS = frozenset({"DependencyNeverSatisfied", "BadConstraints", "PartitionConfig", "InvalidQOS",
                          "InvalidAccount", "PartitionDown"})


@dataclass(frozen=True)
class Partition:
    name: str
    default: bool
    gpus: int  # the most GPUs one node of the partition has (sinfo's Gres), 0 without GPUs
    cpus: int  # the most CPUs one node of the partition has


def _query(command: list[str]) -> str:
    """The output of a SLURM command; HarnessError with its one-line reason when it fails."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=QUERY_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise HarnessError(f"`{' '.join(command)}` failed ({err}); is the SLURM controller up?") from None
    if done.returncode != 0:
        reason = (done.stderr.strip() or done.stdout.strip() or f"exit status {done.returncode}").splitlines()[0]
        raise HarnessError(f"`{' '.join(command)}` failed: {reason}")
    return done.stdout


def node_gpus(gres: str) -> int:
    """GPUs in a node's Gres text: 'gpu:4', 'gpu:a100:2(S:0-1)', 'gpu:1,shard:8' -> 4, 2, 1; '(null)' -> 0."""
    return sum(int(count) for count in re.findall(r"(?:^|,)gpu(?::[^:,(]+)?:(\d+)", gres))


def partitions() -> dict[str, Partition]:
    """The cluster's partitions, from `sinfo` (one line per partition and node configuration)."""
    found: dict[str, Partition] = {}
    for line in _query(["sinfo", "-h", "-o", "%P|%G|%c"]).splitlines():
        parts = line.strip().split("|")
        if len(parts) != 3:
            continue
        label, gres, cpus = parts
        name = label.rstrip("*")
        known = found.get(name) or Partition(name, False, 0, 0)
        found[name] = Partition(name, label.endswith("*") or known.default, max(node_gpus(gres), known.gpus),
                                max(int(cpus.rstrip("+")) if cpus.rstrip("+").isdigit() else 0, known.cpus))
    return found


def check_partition(name: str | None, gpus: int, cpus: int = 1) -> None:
    """HarnessError unless the partition (or the cluster's default one) exists and has nodes with
    `gpus` GPUs and `cpus` CPUs (what one task asks for, on one node)."""
    known = partitions()
    if name is not None and name not in known:
        raise HarnessError(f"--partition {name}: no such SLURM partition (sinfo lists: "
                           f"{', '.join(sorted(known)) or 'none'})")
    chosen = known.get(name) if name else next((p for p in known.values() if p.default), None)
    if chosen is None:
        raise HarnessError("--executor slurm: the cluster has no default partition; give --partition "
                           f"({', '.join(sorted(known)) or 'sinfo lists none'})")
    if gpus > chosen.gpus:
        has = f"at most {chosen.gpus} GPUs per node" if chosen.gpus else "no GPUs (sinfo shows no gpu Gres)"
        raise HarnessError(f"--gpus-per-run {gpus}: partition {chosen.name} has {has}; give another --partition "
                           "or fewer GPUs per run")
    if cpus > chosen.cpus:
        raise HarnessError(f"--cpus-per-run: a task asks for {cpus} CPUs but the nodes of partition {chosen.name} "
                           f"have at most {chosen.cpus}; give fewer CPUs per run (a run of several processes asks "
                           "for them for each)")


@dataclass(frozen=True)
class JobState:
    state: str  # SLURM's state, or "GONE" once the controller has forgotten the job
    reason: str = ""

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES and not (self.state == "PENDING" and self.reason in NEVER_STARTS)


def job_states(job_ids: list[str]) -> dict[str, JobState]:
    """The state of each job id ('12' or an array task '13_2'), from `squeue` (which keeps ended jobs
    for the controller's MinJobAge, 300 s by default); a job it no longer lists is "GONE"."""
    queue = _query(["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T|%r"])
    seen = {}
    for line in queue.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            seen[parts[0]] = JobState(parts[1], parts[2])
    return {job_id: seen.get(job_id, JobState("GONE")) for job_id in job_ids}


def cancel(job_ids: list[str]) -> None:
    """Cancel jobs (those already ended are ignored by scancel)."""
    if job_ids:
        subprocess.run(["scancel", *job_ids], capture_output=True, timeout=QUERY_TIMEOUT_S, check=False)
