"""Faults and damage: damaged stored files reported with their repair, a fault mid-run leaving no
`running` manifest and no checkpoint, one line for a fault, a NaN loss naming the plugin file."""

from __future__ import annotations

import json

import pytest

from harness.cli import main
from harness.errors import HarnessError, HarnessFault
from harness.results import ResultStore
from tests import test_rank as fixtures  # the synthetic-suite builder, shared


@pytest.fixture
def store(tmp_path) -> ResultStore:
    return fixtures.build_suite(tmp_path, "toy", samples=True, cards=True)


def _damage(store: ResultStore, kind: str) -> str:
    """Damage one stored run's manifest or metrics; return its run id."""
    run_id = store.run_ids()[0]
    if kind == "manifest":
        store.manifest_path(run_id).write_text('{"run_id": ')
    else:
        data = store.metrics_path(run_id).read_bytes()
        store.metrics_path(run_id).write_bytes(data[: len(data) // 3])
    return run_id


@pytest.mark.parametrize("kind", ["manifest", "parquet"])
def test_results_lists_damaged_files_with_the_repair(store, capsys, kind):
    run_id = _damage(store, kind)
    statuses = store.run_statuses().set_index("run_id")
    assert statuses.loc[run_id, "status"] == "damaged"
    assert f"delete {store.folder / run_id}.*" in statuses.loc[run_id, "error"]
    assert (statuses.drop(index=run_id)["status"] == "ok").all()
    assert main(["results", "toy", "--results", str(store.root)]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(run_id))
    assert "damaged" in line and "delete" in line


@pytest.mark.parametrize("kind", ["manifest", "parquet"])
def test_report_refuses_a_damaged_store_and_names_the_file(store, capsys, tmp_path, kind):
    run_id = _damage(store, kind)
    assert main(["report", "toy", "--results", str(store.root), "--reports", str(tmp_path / "reports")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and run_id in err and "damaged stored file" in err and "delete" in err
    assert not (tmp_path / "reports").exists()


def test_names_that_would_leave_the_folder_are_refused(tmp_path, capsys):
    for name in ("../escaped", "/etc", "a/b", ".hidden", ""):
        with pytest.raises(HarnessError, match="not a plain name"):
            ResultStore(tmp_path, name)
    with pytest.raises(HarnessError, match="not a plain name"):
        ResultStore(tmp_path, "ok").metrics_path("../../x")
    assert main(["report", "../escaped", "--results", str(tmp_path), "--reports", str(tmp_path / "r")]) == 2
    assert "not a plain name" in capsys.readouterr().err


def test_a_fault_mid_run_leaves_no_running_manifest_and_no_checkpoint(tmp_path, monkeypatch, harness_cache):
    """A full disk while a run is stored: one HarnessFault; the run's 'running' manifest and its
    checkpoint are gone, so `harness results` shows nothing half-done and a re-run starts clean."""
    import harness.runner as runner
    from harness.train.checkpoint import RunCheckpoint

    class Spec:
        run_id = "0123456789ab"

        def label(self):
            return "dpo"

    store = ResultStore(tmp_path, "toy")

    def half_done(spec, suite, world, store, started, log, **_):
        store.write_manifest(spec.run_id, {"run_id": spec.run_id, "status": "running"})
        checkpoint = RunCheckpoint(spec.run_id, 1)
        checkpoint.folder.mkdir(parents=True)
        (checkpoint.folder / "state.pt").write_bytes(b"x")
        raise OSError(28, "No space left on device", str(store.metrics_path(spec.run_id)))

    monkeypatch.setattr(runner, "_run_and_store", half_done)
    with pytest.raises(HarnessFault, match="No space left on device.*nothing of this run was kept") as caught:
        runner.run_one(Spec(), None, None, store)
    assert "\n" not in str(caught.value)
    assert not store.manifest_path(Spec.run_id).exists()
    assert not RunCheckpoint(Spec.run_id, 1).folder.exists()
    assert store.run_statuses().empty


def test_a_fault_is_one_line_with_exit_status_1(monkeypatch, capsys):
    import harness.cli as cli

    def full_disk(args):
        raise OSError(28, "No space left on device", "reports/toy.html")

    monkeypatch.setitem(cli.COMMANDS, "leaderboard", full_disk)
    assert main(["leaderboard"]) == 1
    err = capsys.readouterr().err
    assert err == "harness: error: reports/toy.html: No space left on device; stored results are intact\n"


def test_a_nan_loss_names_the_plugin_file_and_a_fix(tmp_path):
    from harness.losses import LOSSES
    from harness.plugins import load_plugin
    from harness.train.loop import non_finite_message

    plugin = tmp_path / "nan_loss.py"
    plugin.write_text(
        "from harness.losses import LossOutput, register_loss\n"
        "@register_loss('faults_nan_loss', reduction='sum', paper='none', formula='none')\n"
        "def nan_loss(inputs, *, beta: float = 0.1):\n"
        "    return LossOutput(losses=inputs.policy_chosen_logps * float('nan'))\n"
    )
    try:
        (name,) = load_plugin(str(plugin))
        message = non_finite_message(LOSSES.get(name), float("nan"), 3)
    finally:
        LOSSES.remove("faults_nan_loss")
    assert message.startswith(f"{plugin.resolve()}: loss 'faults_nan_loss' is nan at step 3;")
    assert "train.lr" in message and "logsigmoid" in message
    assert not non_finite_message(LOSSES.get("dpo"), float("inf"), 1).startswith("/")  # built-in: no file


def test_a_budget_that_buys_no_step_is_refused_before_any_run(tmp_path, capsys, harness_cache):
    """A budget below one step's cost is found from the data before the first run (exit 2, one
    line naming the budget), not after the start model was evaluated."""
    from tests.conftest import tiny_suite_text

    suite = tmp_path / "tiny.yaml"
    suite.write_text(tiny_suite_text(methods="[dpo]", budget=1.0e3))
    results = tmp_path / "results"
    assert main(["run", str(suite), "--results", str(results), "--reports", str(tmp_path / "reports")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "budget" in err[0] and "buys no optimizer step" in err[0] and "dpo" in err[0]
    assert not list(results.rglob("*.parquet"))


def test_a_phase_whose_budget_runs_out_mid_run_fails_that_run_only(tmp_path, capsys, monkeypatch, harness_cache):
    """A phase that buys no step once it runs (SPIN's generation spent its share: known only then)
    is recorded as a failed run, like a NaN loss; the other runs are stored and the exit is 1."""
    import harness.runner as runner
    from harness.train.loop import BudgetExhausted
    from tests.conftest import tiny_suite_text

    trained = runner._train

    def spent_by_generation(spec, *args, **kwargs):
        if spec.method == "ipo":
            raise BudgetExhausted("budget flops=2e+08 is smaller than one step; raise budget.value")
        return trained(spec, *args, **kwargs)

    monkeypatch.setattr(runner, "_train", spent_by_generation)
    suite = tmp_path / "tiny.yaml"
    suite.write_text(tiny_suite_text(methods="[dpo, ipo]"))
    results = tmp_path / "results"
    assert main(["run", str(suite), "--results", str(results), "--reports", str(tmp_path / "reports")]) == 1
    statuses = ResultStore(results, "tiny").run_statuses().set_index("method")["status"]
    assert statuses["ipo"] == "failed" and statuses["dpo"] == "ok" and statuses["start"] == "ok"


@pytest.mark.parametrize("full", ["results", "cache", "unnamed"])
def test_a_full_disk_names_the_folder_that_is_full(full, tmp_path, monkeypatch, harness_cache):
    """ENOSPC mid-run: the line says whether the results folder or $HARNESS_CACHE is full (from
    the failed file's path, else from which has the least room) and how to give it room."""
    import harness.runner as runner
    from harness.cache import cache_root

    class Spec:
        run_id = "0123456789ab"

        def label(self):
            return "dpo"

    store = ResultStore(tmp_path / "results", "toy")
    failed_file = {"results": str(store.metrics_path(Spec.run_id)),
                   "cache": str(cache_root() / "checkpoints" / "state.pt"), "unnamed": None}[full]

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device", failed_file)

    monkeypatch.setattr(runner, "_run_and_store", disk_full)
    monkeypatch.setattr(runner, "_free_bytes", lambda folder: 0 if folder == cache_root() else 10**12)
    with pytest.raises(HarnessFault) as caught:
        runner.run_one(Spec(), None, None, store)
    message = str(caught.value)
    if full == "results":
        assert f"the results folder {tmp_path / 'results'} is full; free space there or pass --results" in message
    else:
        assert f"$HARNESS_CACHE ({cache_root()}) is full; free space there or set HARNESS_CACHE" in message
    assert "\n" not in message and message.startswith("dpo (0123456789ab): No space left on device")
