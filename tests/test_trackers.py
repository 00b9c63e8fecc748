"""train.report_to: each run's training curve in TensorBoard and trackio (their own local writers),
read back; a tracker that cannot start is one warning, never a failed run, and never a new run id."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from harness.cli import main
from harness.results import ResultStore
from harness.train.trackers import TRL_NAMES, Trackers, trl_metrics
from tests.conftest import tiny_suite_text

TRL_LOGGED = {"loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
              "logps/chosen", "logps/rejected", "grad_norm", "learning_rate"}


def _suite(tmp_path, report_to) -> str:
    text = yaml.safe_load(tiny_suite_text("tracked", methods="[dpo]"))
    if report_to is not None:
        text["train"]["report_to"] = report_to
    path = tmp_path / f"tracked-{'-'.join(report_to or ['none'])}.yaml"
    path.write_text(yaml.safe_dump(text))
    return str(path)


def _tensorboard_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_the_curve_reaches_tensorboard_and_trackio_under_trl_names(tmp_path, harness_cache):
    pytest.importorskip("tensorboard", reason="tensorboard is in the dev extra; install it to test this tracker")
    pytest.importorskip("trackio", reason="trackio is in the dev extra; install it to test this tracker")
    # a process of its own: trackio reads TRACKIO_DIR when it is imported
    env = {**os.environ, "HARNESS_TRACKER_DIR": str(tmp_path / "trackers"), "TRACKIO_DIR": str(tmp_path / "trackio"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    results = tmp_path / "results"
    done = subprocess.run([sys.executable, "-m", "harness.cli", "run", _suite(tmp_path, ["tensorboard", "trackio"]),
                           "--results", str(results), "--no-report"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "warning" not in done.stderr
    store = ResultStore(results, "tracked")
    metrics = store.read_metrics()
    dpo = metrics[(metrics["method"] == "dpo") & (metrics["split"] == "train")]
    run_id, label = dpo["run_id"].iloc[0], "dpo"
    stored = dpo.pivot_table(index="step", columns="metric", values="value")

    runs = list((tmp_path / "trackers" / "tensorboard" / "tracked").iterdir())
    assert [r.name for r in runs] == [f"{label}-{run_id}"]  # one tracker run per harness run (the start trains not)
    scalars = _tensorboard_scalars(runs[0])
    assert TRL_LOGGED <= set(scalars)
    for harness_name, trl_name in (("loss", "loss"), ("reward_margins", "rewards/margins"), ("lr", "learning_rate")):
        logged = pd.Series(dict(scalars[trl_name]))
        assert list(logged.index) == list(stored.index)
        assert logged.to_numpy() == pytest.approx(stored[harness_name].to_numpy(), rel=1e-6)

    database = tmp_path / "trackio" / "tracked.db"  # one database per project: the suite
    with sqlite3.connect(database) as db:
        tables = {row[0] for row in db.execute("select name from sqlite_master where type='table'")}
        assert "metrics" in tables
        rows = db.execute("select run_name, step, metrics from metrics").fetchall()
    assert {r[0] for r in rows} == {f"{label}-{run_id}"}
    assert sorted(r[1] for r in rows) == list(stored.index)
    logged = {step: json.loads(values) for _, step, values in rows}
    assert all(TRL_LOGGED <= set(values) for values in logged.values())
    assert [logged[step]["rewards/accuracies"] for step in stored.index] == pytest.approx(
        stored["reward_accuracies"].to_numpy(), rel=1e-6)


def test_a_tracker_that_cannot_start_is_one_warning_and_not_part_of_the_run_id(tmp_path, harness_cache, monkeypatch,
                                                                                 capsys):
    import harness.train.trackers as trackers

    class Broken:
        def __init__(self, *args, **kwargs):
            raise ImportError("no module named wandb", name="wandb")

    monkeypatch.setitem(trackers.TRACKER_CLASSES, "wandb", Broken)
    plain, tracked = tmp_path / "plain", tmp_path / "tracked"
    assert main(["run", _suite(tmp_path, None), "--results", str(plain), "--no-report"]) == 0
    capsys.readouterr()
    assert main(["run", _suite(tmp_path, ["wandb"]), "--results", str(tracked), "--no-report"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "wandb did not start" in warnings[0] and "pip install wandb" in warnings[0]
    assert ResultStore(plain, "tracked").run_ids() == ResultStore(tracked, "tracked").run_ids()


def test_a_tracker_failing_mid_run_is_dropped_with_one_warning():
    lines: list[str] = []

    class Flaky:
        def __init__(self, *_):
            self.calls = 0

        def log(self, metrics, step):
            self.calls += 1
            if self.calls == 2:
                raise OSError("disk full")

        def finish(self):
            pass

    trackers = Trackers((), "p", "n", {}, lines.append)
    trackers.active = [("flaky", Flaky())]
    for step in (1, 2, 3):
        trackers.log({"step": step, "loss": 0.5})
    trackers.finish()
    assert lines == ["train.report_to: flaky stopped logging (OSError: disk full); training goes on without it"]


def test_names_follow_trl_and_unknown_trackers_are_refused(tmp_path, capsys):
    assert trl_metrics({"step": 3, "chosen_rewards": 1.0, "kl": 0.2}) == {"rewards/chosen": 1.0, "kl": 0.2}
    assert set(TRL_NAMES.values()) == TRL_LOGGED
    assert main(["plan", _suite(tmp_path, ["tensorbord"]), "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "train.report_to" in err and "tensorboard" in err and err.count("\n") == 0
