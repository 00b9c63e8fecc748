"""The published suites' per-run files, for the tests that replay or re-measure them.

The repository keeps only each published suite's tables and pages (`results/<suite>/latest.json`
names the snapshot and where its runs are kept). A checkout whose `results/<suite>/` holds the runs
(fetched, or run locally) is used as it is; otherwise the runs are read from the git commit the
pointer names (`git:<commit>:<path>`), extracted once per test session. Where neither is possible
(no git, a shallow clone) the test is skipped with that reason, never passed.
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from harness.results import ResultStore

ROOT = Path(__file__).resolve().parents[1]


def published_runs(suite: str, scratch: Path) -> Path:
    """A results root holding `suite`'s published runs: the checkout's own results/ when its
    runs are there, else a folder under `scratch` extracted from the commit `latest.json` names."""
    if ResultStore(ROOT / "results", suite).run_ids():
        return ROOT / "results"
    pointer = json.loads((ROOT / "results" / suite / "latest.json").read_text())
    kind, commit, path = (pointer["full_results"].split(":", 2) + ["", ""])[:3]
    if kind != "git":
        pytest.skip(f"results/{suite}: its runs are kept at {pointer['full_results']}, not in git; fetch them to run this")
    target = scratch / f"{suite}-{commit}"
    if not ResultStore(target, suite).run_ids():
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", commit, path],
                                 capture_output=True)
        if archive.returncode != 0:
            pytest.skip(f"results/{suite}: commit {commit} is not in this clone ({archive.stderr.decode().strip()}); "
                        f"fetch it (git fetch --unshallow) to run this")
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(target / "_archive", filter="data")
        (target / "_archive" / path).rename(target / suite)
    return target
