"""harness publish: a suite's results as a dataset (folder or Hub), read back by report and leaderboard.

The synthetic suite is tests/test_rank.py's (start, dpo × 2 seeds, ipo, simpo), with samples."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from harness.cli import main
from harness.errors import HarnessError
from harness.report import write_suite_report
from harness.report.dataset import publish_suite
from harness.report.published import suite_results_root
from harness.results import ResultStore
from tests import test_rank as fixtures

T0 = 1_800_000_000.0  # a fixed publication instant: 2027-01-15T08:00:00Z


def _stamp_free(html: str) -> str:
    return re.sub(r"rendered \d{4}-\d\d-\d\d \d\d:\d\d", "rendered -", html)


@pytest.fixture
def stored(tmp_path) -> Path:
    fixtures.build_suite(tmp_path / "results", "toy", samples=True, cards=True)
    return tmp_path / "results"


def test_a_published_folder_holds_the_snapshot_the_pointer_the_tables_and_the_card(stored, tmp_path):
    done = publish_suite(stored, "toy", str(tmp_path / "ds"), now=T0)
    ds = tmp_path / "ds"
    assert done.snapshot == "20270115T080000Z" and done.runs == 5
    pointer = json.loads((ds / "toy" / "latest.json").read_text())
    assert pointer["snapshot"] == done.snapshot and pointer["runs"] == 5 and pointer["published"] == "2027-01-15T08:00:00Z"
    snap = ds / "toy" / done.snapshot
    run_files = sorted(p.name for p in (snap / "runs" / "toy").iterdir())
    assert run_files == sorted(p.name for p in (stored / "toy").iterdir() if not p.name.startswith("."))
    board = pd.read_parquet(ds / "leaderboard.parquet")
    assert set(board["entry"]) == {"start", "dpo", "ipo", "simpo"} and set(board["suite"]) == {"toy"}
    assert len(pd.read_parquet(snap / "metrics.parquet")) == len(pd.concat(
        pd.read_parquet(p) for p in (stored / "toy").glob("*.parquet") if not p.name.endswith(".samples.parquet")))
    card = (ds / "README.md").read_text()
    assert card.startswith("---\nconfigs:\n- config_name: leaderboard\n  data_files: leaderboard.parquet")
    assert "## toy" in card and f"`toy/{done.snapshot}` (5 runs" in card


def test_report_and_leaderboard_read_a_published_dataset_as_they_read_results(stored, tmp_path):
    publish_suite(stored, "toy", str(tmp_path / "ds"), now=T0)
    direct = write_suite_report(stored, "toy", tmp_path / "a" / "toy.html").read_text()
    assert main(["report", "toy", "--results", str(tmp_path / "ds"), "--reports", str(tmp_path / "b")]) == 0
    assert _stamp_free((tmp_path / "b" / "toy.html").read_text()) == _stamp_free(direct)
    assert main(["leaderboard", "--results", str(tmp_path / "ds"), "--reports", str(tmp_path / "b")]) == 0
    assert 'href="toy.html"' in (tmp_path / "b" / "index.html").read_text()


def test_a_new_snapshot_keeps_the_old_one_and_moves_latest(stored, tmp_path):
    ds = tmp_path / "ds"
    first = publish_suite(stored, "toy", str(ds), now=T0)
    fixtures.build_suite(stored, "other")
    second = publish_suite(stored, "toy", str(ds), now=T0 + 3600)
    publish_suite(stored, "other", str(ds), now=T0 + 7200)
    assert (ds / "toy" / first.snapshot / "runs" / "toy").is_dir()  # never rewritten
    assert json.loads((ds / "toy" / "latest.json").read_text())["snapshot"] == second.snapshot
    board = pd.read_parquet(ds / "leaderboard.parquet")
    assert board.groupby("suite")["snapshot"].unique().map(list).to_dict() == {
        "toy": [second.snapshot], "other": ["20270115T100000Z"]}
    assert "## other" in (ds / "README.md").read_text() and not list(ds.rglob(".*partial"))


def test_tables_only_says_where_the_runs_are_and_report_points_there(stored, tmp_path, capsys):
    with pytest.raises(HarnessError, match="--full-results"):
        publish_suite(stored, "toy", str(tmp_path / "light"), tables_only=True)
    publish_suite(stored, "toy", str(tmp_path / "light"), tables_only=True, full_results="git:abc1234:results/toy",
                  now=T0)
    assert not (tmp_path / "light" / "toy" / "20270115T080000Z" / "runs").exists()
    assert main(["report", "toy", "--results", str(tmp_path / "light"), "--reports", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "git:abc1234:results/toy" in err and "only the published tables" in err


def test_a_results_folder_with_runs_is_read_before_its_published_pointer(stored, tmp_path):
    """The repository's results/ holds the published tables next to a user's own fresh runs: the
    runs win, so `harness run` then `harness report` shows what was just run."""
    publish_suite(stored, "toy", str(stored), tables_only=True, full_results="elsewhere", now=T0)
    assert suite_results_root(stored, "toy") == stored
    store = ResultStore(stored, "toy")  # the pointer and the snapshot folder are not runs
    assert sorted(store.read_manifests()) == store.run_ids() and store.nested() == [] and not store.damaged()
    assert sorted(store.run_statuses()["run_id"]) == store.run_ids()


def test_publishing_asks_for_a_stored_suite_and_a_dataset_name(stored, tmp_path, capsys):
    assert main(["publish", "nothing", "--results", str(stored), "--to", str(tmp_path / "ds")]) == 2
    assert "no results found for suite 'nothing'" in capsys.readouterr().err
    assert main(["publish", "toy", "--results", str(stored), "--to", "hf://models/me/x"]) == 2
    assert "hf://datasets/OWNER/NAME" in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()


def test_a_hub_target_commits_the_same_tree_in_one_upload(stored, tmp_path, monkeypatch):
    """No Hub endpoint runs here: huggingface_hub's HfApi is replaced by a recorder, so this checks
    what would be committed (the folder layout above, in one upload_folder call), not the protocol."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the recorder stands in for HfApi; nothing may leave regardless
    import huggingface_hub

    calls: list[tuple[str, dict]] = []

    class Recorder:
        def snapshot_download(self, repo_id, **kwargs):
            from huggingface_hub.errors import RepositoryNotFoundError

            calls.append(("download", {"repo_id": repo_id, **kwargs}))
            raise RepositoryNotFoundError.__new__(RepositoryNotFoundError)  # a new repo (no HTTP response to quote)

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create", {"repo_id": repo_id, **kwargs}))

        def upload_folder(self, **kwargs):
            files = sorted(str(p.relative_to(kwargs["folder_path"])) for p in Path(kwargs["folder_path"]).rglob("*")
                           if p.is_file())
            calls.append(("upload", {**kwargs, "files": files}))

    monkeypatch.setattr(huggingface_hub, "HfApi", Recorder)
    done = publish_suite(stored, "toy", "hf://datasets/me/harness-results", now=T0)
    kinds = [k for k, _ in calls]
    assert kinds == ["download", "create", "upload"]
    upload = calls[-1][1]
    assert upload["repo_id"] == "me/harness-results" and upload["repo_type"] == "dataset"
    assert {"README.md", "leaderboard.parquet", "toy/latest.json",
            f"toy/{done.snapshot}/leaderboard.parquet"} <= set(upload["files"])
    assert sum(f.startswith(f"toy/{done.snapshot}/runs/toy/") for f in upload["files"]) == 15


def test_an_unreachable_hub_dataset_is_one_line_not_a_traceback(stored, tmp_path, monkeypatch, capsys):
    """Offline (as every test runs: HF_HUB_OFFLINE=1, so huggingface_hub itself refuses before any
    request), reading or publishing a Hub dataset ends in one line naming it, exit 2."""
    import huggingface_hub.constants

    assert huggingface_hub.constants.HF_HUB_OFFLINE  # the real client, in offline mode: no request leaves
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    assert main(["report", "toy", "--results", "hf://datasets/nobody/nothing", "--reports", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "hf://datasets/nobody/nothing: could not read the Hub dataset" in err
    assert main(["publish", "toy", "--results", str(stored), "--to", "hf://datasets/nobody/nothing"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "hf://datasets/nobody/nothing: could not" in err
