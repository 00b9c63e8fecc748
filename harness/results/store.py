"""Atomic reading and writing of one suite's results folder, and the per-run lock.

Layout: `<root>/<suite>/<run_id>.parquet` (metrics), `<run_id>.samples.parquet` (generations)
and `<run_id>.json` (manifest: resolved spec, versions, hardware, status, error). A run's files
are written to temporary names and renamed, metrics last: a metrics file exists only for a run
that finished, so a crash leaves nothing that a later invocation would mistake for a result.

Several processes may run one suite into one folder at once (two shells, a job array, Ray
tasks on several hosts). Each run is claimed first with a lease, `<run_id>.lock`
(harness/results/lease.py: host, PID, heartbeat). Only the holder trains the run; the others
skip it and come back to it after their other runs, finding it stored. A stale lease (its process
is gone, or its heartbeat stopped on any host) is taken over by the next claimant, which also
deletes that run's temporary files. A run's metrics file is published with a hard link, which
fails if one exists, so two workers never both store a run. Reading needs no lock: renames are
atomic.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from harness.errors import HarnessError
from harness.names import check_name
from harness.results.lease import Lease, LeaseLost, live_holder, owner_is_alive, try_acquire  # noqa: F401
from harness.results.schema import SCHEMA_VERSION, results_schema, samples_schema

TEMP_SUFFIX = ".tmp"
# A published suite's pointer and snapshot folders (harness.report.dataset) may sit in a suite's
# folder beside its runs: neither is a run, a manifest or a tuned suite's sub-store.
PUBLISHED_POINTER = "latest.json"
SNAPSHOT_NAME = re.compile(r"\d{8}T\d{6}Z")


def _atomic_write_bytes(path: Path, write: Callable[[Path], Any]) -> None:
    """Call write(tmp_path), then rename over `path` (same folder, so the rename is atomic).

    The temporary name is `.<name>.<pid>.<random>.tmp`: hidden, never matched by `*.parquet`,
    and deleted by whoever next claims the run if this process dies before the rename."""
    staged = StagedRun()
    try:
        staged.add(path, write)
    except BaseException:
        staged.discard()
        raise
    staged.commit()


def write_frame(path: Path, frame: pd.DataFrame) -> None:
    """Write a small table (not a run's results) as parquet, atomically."""
    _atomic_write_bytes(Path(path), lambda tmp: frame.to_parquet(tmp, index=False))


# The level every interval of a metrics file written before the `level` column was computed at.
LEVEL_BEFORE_THE_COLUMN = 0.95


def with_levels(metrics: pd.DataFrame) -> pd.DataFrame:
    """Metric rows with the `level` column: a file that predates it gets the level its intervals
    were computed at (LEVEL_BEFORE_THE_COLUMN) where a row has an interval, NaN where not."""
    if "level" in metrics.columns:
        return metrics
    has_interval = metrics["ci_low"].notna() & metrics["ci_high"].notna()
    out = metrics.copy()
    out.insert(list(out.columns).index("ci_high") + 1, "level",
               np.where(has_interval, LEVEL_BEFORE_THE_COLUMN, np.nan))
    return out


def _table(frame: pd.DataFrame, schema: pa.Schema, what: str) -> pa.Table:
    missing = [name for name in schema.names if name not in frame.columns]
    if missing:
        raise ValueError(f"{what} rows lack columns {missing}")
    table = pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
    # from_pandas keeps only its own "pandas" metadata: put the schema version back next to it.
    return table.replace_schema_metadata({**(table.schema.metadata or {}), **schema.metadata})


# --------------------------------------------------------------------------- run leases

RunLock = Lease  # the older name of a run's claim (owner_is_alive, imported above, is re-exported too)


# --------------------------------------------------------------------------- the store


def trials_table_path(root: Path | str, suite: str) -> Path:
    """Where a tuned suite's trials table lives (written by harness.tune, read by reports and ranks)."""
    return Path(root) / suite / "tuning" / "trials.parquet"


def read_trials_table(root: Path | str, suite: str) -> pd.DataFrame | None:
    """The suite's stored trials table, or None for a suite that was not tuned."""
    path = trials_table_path(root, suite)
    return pd.read_parquet(path) if path.exists() else None


class ResultStore:
    """The results folder of one suite."""

    def __init__(self, root: Path | str, suite: str):
        self.root = Path(root)
        self.suite = check_name(suite, "suite name")  # never a path out of `root`
        self.folder = self.root / suite

    def inner(self, *parts: str) -> ResultStore:
        """A store in a folder inside this suite's (a tuned suite's trials and defaults,
        harness.tune), each part a plain name."""
        store = ResultStore(self.root, self.suite)
        store.folder = self.folder.joinpath(*(check_name(p, "results sub-folder") for p in parts))
        return store

    def nested(self) -> list[ResultStore]:
        """The stores in folders inside this one that hold runs (a tuned suite's trials, defaults
        and superseded finals), at any depth: a folder counts when a run in it has a manifest."""
        found = []
        for folder in sorted(p for p in self.folder.rglob("*") if p.is_dir()):
            parts = folder.relative_to(self.folder).parts
            if SNAPSHOT_NAME.fullmatch(parts[0]):
                continue
            store = self.inner(*parts)
            if any(store.manifest_path(r).exists() for r in store.run_ids()):
                found.append(store)
        return found

    def _path(self, run_id: str, suffix: str) -> Path:
        return self.folder / f"{check_name(run_id, 'run id')}{suffix}"

    def metrics_path(self, run_id: str) -> Path:
        return self._path(run_id, ".parquet")

    def samples_path(self, run_id: str) -> Path:
        return self._path(run_id, ".samples.parquet")

    def manifest_path(self, run_id: str) -> Path:
        return self._path(run_id, ".json")

    def lock_path(self, run_id: str) -> Path:
        return self._path(run_id, ".lock")

    def has_result(self, run_id: str) -> bool:
        return self.metrics_path(run_id).exists()

    # ---- manifests

    def write_manifest(self, run_id: str, manifest: dict[str, Any]) -> None:
        text = json.dumps(manifest, indent=2, sort_keys=True, default=str)
        _atomic_write_bytes(self.manifest_path(run_id), lambda p: p.write_text(text))

    def read_manifest(self, run_id: str) -> dict[str, Any] | None:
        """The run's manifest, or None when it is missing or damaged (see `damaged`)."""
        path = self.manifest_path(run_id)
        if not path.exists():
            return None
        try:
            value = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        return value if isinstance(value, dict) else None

    def _manifest_files(self) -> list[Path]:
        return sorted(p for p in self.folder.glob("*.json") if p.name != PUBLISHED_POINTER)

    # ---- damage

    def damaged(self) -> list[tuple[Path, str]]:
        """(path, reason) for every stored file that cannot be read back: a manifest that is not a
        JSON object, a parquet file whose footer is unreadable (truncated, overwritten). Temporary
        files and locks are not results and are not checked."""
        out = []
        for path in self._manifest_files():
            if self.read_manifest(path.stem) is None:
                out.append((path, "not a JSON manifest"))
        for path in sorted(self.folder.glob("*.parquet")):
            try:
                pq.read_metadata(path)
            except (OSError, pa.ArrowInvalid) as err:
                out.append((path, f"unreadable parquet: {str(err).splitlines()[0] if str(err) else type(err).__name__}"))
        return out

    def check_intact(self) -> None:
        """Raise a one-line HarnessError naming the first damaged file and its repair, if any."""
        damaged = self.damaged()
        if damaged:
            path, reason = damaged[0]
            more = f" (and {len(damaged) - 1} more; `harness results {self.suite}` lists them)" if len(damaged) > 1 else ""
            raise HarnessError(f"{path}: damaged stored file ({reason}); {self.repair_hint(path)}{more}")

    def repair_hint(self, path: Path) -> str:
        """How to repair a damaged file: delete the run's files, and the next run re-runs it."""
        run_id = path.name.split(".", 1)[0]
        return f"delete {self.folder / run_id}.* and re-run the suite to run it again"

    def read_manifests(self) -> dict[str, dict[str, Any]]:
        """Every readable manifest of the suite, by run id."""
        out = {}
        for path in self._manifest_files():
            manifest = self.read_manifest(path.stem)
            if manifest is not None:
                out[path.stem] = manifest
        return out

    # ---- writing a run

    def write_run(
        self, run_id: str, metrics: pd.DataFrame, samples: pd.DataFrame | None, manifest: dict[str, Any],
        *, lease: Lease | None = None,
    ) -> None:
        """Store one finished run: samples, then manifest, then metrics (whose presence means done).

        With the run's `lease`, the files are renamed in only while the lease is held (LeaseLost
        otherwise), and the metrics file only if none exists (LeaseLost too): a worker whose lease
        was taken over stores nothing, and a run is never stored twice."""
        staged = self.stage_run(run_id, metrics, samples, manifest)
        if lease is None:
            staged.commit()
            return
        try:
            staged.commit(guard=lease.check, exclusive_last=True)
        except FileExistsError:
            raise LeaseLost(f"{run_id}: stored by another worker meanwhile; this copy is discarded") from None
        finally:
            staged.discard()  # what was not renamed in

    def stage_run(
        self, run_id: str, metrics: pd.DataFrame, samples: pd.DataFrame | None, manifest: dict[str, Any]
    ) -> StagedRun:
        """Write one run's files aside (temporary names next to the stored ones) without touching
        what is stored; `commit()` renames them in (renames need no space), `discard()` deletes
        them. Lets a change of many runs (rescoring) be all or nothing. Rows that state no level
        (a writer from before the column) get with_levels' 0.95."""
        metrics_table = _table(with_levels(metrics), results_schema(), "metrics")
        samples_table = _table(samples, samples_schema(), "samples") if samples is not None else None
        text = json.dumps(manifest, indent=2, sort_keys=True, default=str)
        staged = StagedRun()
        try:
            if samples_table is not None:
                staged.add(self.samples_path(run_id), lambda p: pq.write_table(samples_table, p))
            staged.add(self.manifest_path(run_id), lambda p: p.write_text(text))
            staged.add(self.metrics_path(run_id), lambda p: pq.write_table(metrics_table, p))
        except BaseException:
            staged.discard()
            raise
        return staged

    # ---- claiming runs

    def try_lock(self, run_id: str) -> Lease | None:
        """Claim `run_id` for this process: a Lease, or None while a live worker holds it. A stale
        lease is taken over, and the dead writer's temporary files of this run are deleted."""
        self.folder.mkdir(parents=True, exist_ok=True)
        lease = try_acquire(self.lock_path(run_id))
        if lease is not None:
            self._remove_partial_files(run_id)
        return lease

    def lock_owner(self, run_id: str) -> dict[str, Any] | None:
        """The live worker holding `run_id`'s lease, or None (no lease, or a stale one)."""
        return live_holder(self.lock_path(run_id))

    def claim_runs(
        self, run_ids: Iterable[str], *, poll_seconds: float = 0.5, log: Callable[[str], Any] | None = None
    ) -> Iterator[tuple[str, Lease | None]]:
        """Yield (run_id, lock) for each run this process must run (the caller runs it, then
        releases the lock), and (run_id, None) for a run another process stored meanwhile.

        Runs held by another live process are put off until the others are done, then waited for:
        when that process finishes, its result is found; when it died, the run is claimed here."""
        pending = list(dict.fromkeys(run_ids))
        announced: set[str] = set()
        while pending:
            waiting = []
            for run_id in pending:
                if self.has_result(run_id):
                    yield run_id, None
                    continue
                lock = self.try_lock(run_id)
                if lock is None:
                    waiting.append(run_id)
                    if log and run_id not in announced:
                        owner = self.lock_owner(run_id) or {}
                        label = (self.read_manifest(run_id) or {}).get("label", "")
                        log(f"  {label + ' ' if label else ''}({run_id}): being run by process "
                            f"{owner.get('pid', '?')} on {owner.get('host', '?')}; put off until the other runs are done")
                        announced.add(run_id)
                    continue
                if self.has_result(run_id):  # finished by another process between the two checks
                    lock.release()
                    yield run_id, None
                    continue
                yield run_id, lock
                lock.release()  # in case the caller did not
            if waiting:
                time.sleep(poll_seconds)
            pending = waiting

    def move_run(self, run_id: str, to: ResultStore) -> None:
        """Move a finished run's files into the store `to` (kept there, no longer read here): the
        metrics file first, so this store never lists a run whose other files are gone."""
        to.folder.mkdir(parents=True, exist_ok=True)
        for path, target in ((self.metrics_path(run_id), to.metrics_path(run_id)),
                             (self.samples_path(run_id), to.samples_path(run_id)),
                             (self.manifest_path(run_id), to.manifest_path(run_id))):
            if path.exists():  # another process may have moved it already
                os.replace(path, target)

    def _remove_partial_files(self, run_id: str) -> None:
        """Delete temporary files of `run_id` left by a writer that died before its rename (only
        called by the lock holder, so no live writer owns them)."""
        for path in self.folder.glob(f".{run_id}.*{TEMP_SUFFIX}"):
            path.unlink(missing_ok=True)

    # ---- reading

    def run_ids(self) -> list[str]:
        """The finished runs: those with a metrics file."""
        return sorted(p.name[: -len(".parquet")] for p in self.folder.glob("*.parquet")
                      if not p.name.endswith(".samples.parquet"))

    def read_metrics(self) -> pd.DataFrame:
        """All finished runs' rows of this suite (an empty frame with the schema when none)."""
        paths = [self.metrics_path(r) for r in self.run_ids()]
        if not paths:
            return results_schema().empty_table().to_pandas()
        return pd.concat([with_levels(_read(p)) for p in paths], ignore_index=True)

    def read_run(self, run_id: str) -> tuple[pd.DataFrame, pd.DataFrame | None]:
        """One finished run's metric rows and its per-sample rows (None when it has none)."""
        samples = self.samples_path(run_id)
        return with_levels(_read(self.metrics_path(run_id))), (_read(samples) if samples.exists() else None)

    def read_samples(self, columns: list[str] | None = None) -> pd.DataFrame:
        """The per-sample rows of the finished runs (all columns, or `columns`); empty if none."""
        schema = samples_schema()
        wanted = columns or schema.names
        unknown = [c for c in wanted if c not in schema.names]
        if unknown:
            raise ValueError(f"no sample columns {unknown}")
        paths = [p for p in (self.samples_path(r) for r in self.run_ids()) if p.exists()]
        if not paths:
            return schema.empty_table().select(wanted).to_pandas()
        return pd.concat([_read(p, wanted) for p in paths], ignore_index=True)

    def run_statuses(self) -> pd.DataFrame:
        """One row per run the folder knows of (manifest, result or lock): run_id, label, method,
        seed, status, error, seconds. Status: "ok" (stored), "damaged" (a file cannot be read back;
        the error names it and the repair), "running" (a live process holds its lock), "failed"
        (recorded failure, re-run on the next invocation), "interrupted" (its process died mid-run;
        re-run on the next invocation) or the manifest's own word."""
        ids = {p.stem for p in self._manifest_files()} | set(self.run_ids())
        ids |= {p.stem for p in self.folder.glob("*.lock")}
        damaged = {path.name.split(".", 1)[0]: (path, reason) for path, reason in reversed(self.damaged())}
        rows = []
        for run_id in sorted(ids | set(damaged)):
            manifest = self.read_manifest(run_id) or {}
            spec = manifest.get("spec") if isinstance(manifest.get("spec"), dict) else {}
            recorded = str(manifest.get("status", "unknown"))
            if run_id in damaged:
                path, reason = damaged[run_id]
                status, manifest = "damaged", {**manifest, "error": f"{path.name}: {reason}; {self.repair_hint(path)}"}
            elif self.has_result(run_id):
                status = "ok"
            elif self.lock_owner(run_id) is not None:
                status = "running"
            elif recorded == "running":
                status = "interrupted"
            else:
                status = recorded
            rows.append({
                "run_id": run_id, "label": str(manifest.get("label", spec.get("method", "?"))),
                "method": spec.get("method"), "seed": spec.get("seed"), "status": status,
                "error": str(manifest.get("error", "") or ""), "seconds": manifest.get("seconds"),
            })
        return pd.DataFrame(rows, columns=["run_id", "label", "method", "seed", "status", "error", "seconds"])


class StagedRun:
    """Files written aside under temporary names, each waiting to be renamed over its target, in
    the order added (a run's metrics last, as their presence means the run is done)."""

    def __init__(self) -> None:
        self.pending: list[tuple[Path, Path]] = []  # (temporary, target)

    def add(self, path: Path, write: Callable[[Path], Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=TEMP_SUFFIX, dir=path.parent)
        os.close(fd)
        self.pending.append((Path(tmp), path))
        write(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared and read

    def commit(self, *, guard: Callable[[], None] | None = None, exclusive_last: bool = False) -> None:
        """Rename every file in, in order. `guard` is called before each rename (it raises to stop);
        with `exclusive_last` the last file is linked in instead, which raises FileExistsError if
        its target exists (a run stored by another worker meanwhile)."""
        while self.pending:
            tmp, path = self.pending[0]
            if guard is not None:
                guard()
            if exclusive_last and len(self.pending) == 1:
                os.link(tmp, path)
                tmp.unlink()
            else:
                os.replace(tmp, path)
            self.pending.pop(0)

    def discard(self) -> None:
        for tmp, _ in self.pending:
            tmp.unlink(missing_ok=True)
        self.pending = []


def _read(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    try:
        table = pq.read_table(path, columns=columns)
    except (OSError, pa.ArrowInvalid) as err:
        raise HarnessError(f"{path}: unreadable parquet ({err}); delete it to re-run that run") from None
    version = (table.schema.metadata or {}).get(b"harness.schema_version")
    if version is not None and int(version) > SCHEMA_VERSION:
        raise HarnessError(
            f"{path}: written with results schema version {int(version)}, newer than this harness's "
            f"{SCHEMA_VERSION}; upgrade harness to read it"
        )
    return table.to_pandas()
