"""A suite's results published as a dataset: a plain folder or a Hugging Face Hub dataset repo.

Layout (the same in a folder and on the Hub):

    README.md                                   the dataset card: suites, versions, how to reproduce
    leaderboard.parquet                         every suite's latest board, one row per entry (+ suite)
    <suite>/latest.json                         the pointer: which snapshot is the latest, and where its runs are
    <suite>/<snapshot>/leaderboard.parquet      that snapshot's board (the aggregated table)
    <suite>/<snapshot>/metrics.parquet          every headline run's metric rows, in one table
    <suite>/<snapshot>/suite.yaml               the suite file it was run from, when known
    <suite>/<snapshot>/runs/<suite>/...         the results folder itself: per-run parquet, samples, manifests

A snapshot is named by its UTC time (`20261208T033000Z`) and never rewritten; `latest.json` is
written last, so a reader sees the previous snapshot or the new one whole. `runs/` is a results
root, so `harness report` and `harness leaderboard` read a published suite exactly as they read
`results/`. A "tables-only" publication (the repository's own `results/`) leaves `runs/` out and
says in `latest.json` where the full snapshot is kept.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

import harness
from harness.errors import HarnessError
from harness.names import check_name
from harness.report.html import write_atomic
from harness.report.published import HUB_PREFIX, LATEST, hub_errors, hub_repo_id, latest_pointers
from harness.report.suite import read_stored_suite
from harness.results import ResultStore
from harness.results.store import write_frame
from harness.suite import run_suggestion

SNAPSHOT_FORMAT = "%Y%m%dT%H%M%SZ"  # harness.results.store.SNAPSHOT_NAME matches it
# What a reader needs to see the leaderboard without any run's files: fetched first from a Hub
# dataset (so a report of a published suite downloads only that suite's snapshot).
LIGHT_PATTERNS = ["README.md", "leaderboard.parquet", f"*/{LATEST}", "*/*/leaderboard.parquet",
                  "*/*/metrics.parquet", "*/*/suite.yaml"]
# A run's own files and a tuned suite's sub-folders; leases and temporary files are never published.
RUN_FILE_SUFFIXES = (".parquet", ".json")


@dataclass(frozen=True)
class Published:
    """What one publication wrote: where, which snapshot, how many runs."""

    target: str
    suite: str
    snapshot: str
    runs: int


# --------------------------------------------------------------------------- writing


def publish_suite(results_root: Path, suite: str, target: str, *, suite_file: Path | None = None,
                  tables_only: bool = False, full_results: str | None = None,
                  now: float | None = None) -> Published:
    """Publish `results_root/<suite>` to `target` (a folder, or hf://datasets/OWNER/NAME) as a new
    snapshot and point the suite's `latest.json` at it. `tables_only` leaves the runs out and
    records `full_results` (required then) as where they are kept."""
    check_name(suite, "suite name")
    if tables_only and not full_results:
        raise HarnessError("harness publish --tables-only: say where the full results are kept with "
                           "--full-results POINTER (an hf://datasets/... id, a URL or a git commit)")
    store = ResultStore(results_root, suite)
    store.check_intact()
    stored = read_stored_suite(Path(results_root), suite)
    if stored.metrics.empty:
        raise HarnessError(f"no results found for suite {suite!r} in {store.folder}: "
                           f"{run_suggestion(suite, suite_file)}")
    moment = time.gmtime(now)  # one instant: the snapshot's name and its "published" time
    snapshot = time.strftime(SNAPSHOT_FORMAT, moment)
    destination = open_target(target)
    with tempfile.TemporaryDirectory(prefix="harness-publish-") as tmp:
        staged = Path(tmp)
        destination.fetch_light(staged)
        snap = staged / suite / snapshot
        if snap.exists():
            raise HarnessError(f"{target}: snapshot {suite}/{snapshot} exists already; publish again in a second")
        board = stored.board().assign(suite=suite, snapshot=snapshot)
        write_frame(snap / "leaderboard.parquet", board)
        write_frame(snap / "metrics.parquet", stored.metrics)
        if suite_file is not None and Path(suite_file).is_file():
            shutil.copyfile(suite_file, snap / "suite.yaml")
        if not tables_only:
            copy_runs(store.folder, snap / "runs" / suite)
        pointer = {"suite": suite, "snapshot": snapshot, "harness": harness.__version__,
                   "runs": run_count(store), "published": time.strftime("%Y-%m-%dT%H:%M:%SZ", moment),
                   "full_results": full_results if tables_only else f"{snapshot}/runs"}
        write_atomic(staged / suite / LATEST, json.dumps(pointer, indent=1) + "\n")
        write_aggregate(staged)
        write_atomic(staged / "README.md", dataset_card(staged))
        destination.put(staged, changed=[f"{suite}/{snapshot}"])
    return Published(target, suite, snapshot, pointer["runs"])


def run_count(store: ResultStore) -> int:
    """Every stored run of the suite: the headline's and a tuned suite's trials, defaults and superseded."""
    return len(store.run_ids()) + sum(len(inner.run_ids()) for inner in store.nested())


def copy_runs(folder: Path, into: Path) -> None:
    """The suite's results folder as it is, less leases and temporary (hidden) files."""
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.is_file() and path.name.endswith(RUN_FILE_SUFFIXES):
            (into / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, into / relative)


def write_aggregate(root: Path) -> Path:
    """`leaderboard.parquet` at the dataset's root: every suite's latest board, stacked."""
    boards = [pd.read_parquet(root / suite / p["snapshot"] / "leaderboard.parquet")
              for suite, p in latest_pointers(root).items()
              if (root / suite / p["snapshot"] / "leaderboard.parquet").exists()]
    frame = pd.concat(boards, ignore_index=True) if boards else pd.DataFrame()
    path = root / "leaderboard.parquet"
    write_frame(path, frame)
    return path


def dataset_card(root: Path) -> str:
    """The dataset card (README.md): Hub metadata naming the aggregated table as the default
    configuration, then one section per suite with its snapshot, versions and how to reproduce it."""
    pointers = latest_pointers(root)
    lines = ["---", "configs:", "- config_name: leaderboard", "  data_files: leaderboard.parquet",
             "tags:", "- preference-optimization", "- dpo", "- leaderboard", "---", "",
             "# harness results", "",
             "Preference-optimization methods trained under a matched compute budget and evaluated by "
             "harness. `leaderboard.parquet` holds every suite's latest "
             "ranking; each suite's folder holds its snapshots (named by UTC time) and `latest.json`, "
             "the pointer to the newest.", ""]
    for suite, p in pointers.items():
        has_file = (root / suite / p["snapshot"] / "suite.yaml").exists()
        lines += [f"## {suite}", "",
                  f"- latest snapshot: `{suite}/{p['snapshot']}` ({p.get('runs', '?')} runs, published "
                  f"{p.get('published', '?')}, harness {p.get('harness', '?')})",
                  f"- per-run files and samples: `{p.get('full_results', '?')}`",
                  "- reproduce: `harness run " + (f"{suite}/{p['snapshot']}/suite.yaml`" if has_file
                                                  else f"suites/{suite}.yaml`"),
                  "- re-render: `harness report " + suite + " --results <this dataset>`"
                  + ("" if p.get("full_results") == f"{p['snapshot']}/runs" else
                     f", once the per-run files are fetched into `{suite}/` (this copy holds the tables only)"), ""]
    return "\n".join(lines)


class FolderTarget:
    """A dataset in a local folder."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def fetch_light(self, into: Path) -> None:
        for pattern in LIGHT_PATTERNS:
            for path in self.folder.glob(pattern):
                (into / path.relative_to(self.folder)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, into / path.relative_to(self.folder))

    def put(self, staged: Path, changed: list[str]) -> None:
        """The new snapshot first, then the tables, card and pointers (each renamed into place)."""
        for relative in changed:
            final = self.folder / relative
            final.parent.mkdir(parents=True, exist_ok=True)
            partial = final.with_name(f".{final.name}.partial")
            shutil.rmtree(partial, ignore_errors=True)
            shutil.copytree(staged / relative, partial)
            os.replace(partial, final)
        for path in sorted(staged.rglob("*")):
            relative = path.relative_to(staged)
            if path.is_file() and not any(relative.is_relative_to(c) for c in changed):
                (self.folder / relative).parent.mkdir(parents=True, exist_ok=True)
                write_atomic_copy(path, self.folder / relative)


def write_atomic_copy(source: Path, destination: Path) -> None:
    partial = destination.with_name(f".{destination.name}.partial")
    shutil.copyfile(source, partial)
    os.replace(partial, destination)


class HubTarget:
    """A dataset repository on a Hugging Face Hub (the endpoint huggingface_hub is configured for:
    HF_ENDPOINT, its token), written in one commit per publication."""

    def __init__(self, repo_id: str):
        self.repo_id = repo_id

    def _api(self):
        from huggingface_hub import HfApi

        return HfApi()

    def fetch_light(self, into: Path) -> None:
        from huggingface_hub.errors import RepositoryNotFoundError

        api = self._api()
        with hub_errors(f"{HUB_PREFIX}{self.repo_id}", "read"):
            try:
                api.snapshot_download(self.repo_id, repo_type="dataset", local_dir=into, allow_patterns=LIGHT_PATTERNS)
            except RepositoryNotFoundError:
                return  # a new dataset: created by put()

    def put(self, staged: Path, changed: list[str]) -> None:
        api = self._api()
        with hub_errors(f"{HUB_PREFIX}{self.repo_id}", "write"):
            api.create_repo(self.repo_id, repo_type="dataset", exist_ok=True)
            # snapshot_download's own bookkeeping folder is not part of the dataset
            api.upload_folder(repo_id=self.repo_id, repo_type="dataset", folder_path=staged,
                              ignore_patterns=[".cache/**"], commit_message=f"harness: publish {', '.join(changed)}")


def open_target(target: str):
    """The folder or Hub dataset that `target` names."""
    if target.startswith("hf://"):
        return HubTarget(hub_repo_id(target))
    return FolderTarget(Path(target))
