"""A tuned suite with several starting points is fair per start: every start gets every method's
study with the same trials, its own selection on its own validation trials and its own finals;
a one-start suite keeps its run ids, lock names and trials (the published sandbox-tuned replays
unchanged); the report shows the tuning per start; `harness verify` re-runs what a tuned suite
stored."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from harness.cli import main
from harness.results import ResultStore
from harness.suite import SANDBOX_VERSION
from tests.test_tuning import _table, tune_once, tuned_suite_text

ROOT = Path(__file__).resolve().parents[1]
TRIALS = 2
STARTS = {"sft": "sandbox", "base": "sandbox:base"}


def _suite(text: str, name: str = "tuned"):
    from harness.suite import parse_suite

    return parse_suite(yaml.safe_load(text), Path(f"{name}.yaml"))


def two_start_text() -> str:
    raw = yaml.safe_load(tuned_suite_text("starts", "[dpo]", trials=TRIALS))
    raw["model"] = dict(STARTS)
    return yaml.safe_dump(raw, sort_keys=False)  # the starts in their order: sft first


@pytest.fixture(scope="module")
def starts(tmp_path_factory, harness_cache):
    """The tiny suite tuned from two starting points (sft, base): dpo, two quasi-random trials each."""
    return tune_once(tmp_path_factory, "starts", two_start_text())


# --------------------------------------------------------------------------- one start: nothing moves

def test_a_one_start_suite_keeps_its_run_ids_and_lock_names():
    """The ids below were computed by main's code before starting points were tuned per start
    (commit 3e0993d: start_spec(suite), trial_spec(suite, space, params) with the proposal
    {lr: 0.5, beta: 0.2} (dpo) and {lr: 2.0, tau: 0.05} (ipo), final_spec(suite, space, setting,
    seed)), for tuned_suite_text()'s suite; the lock was "study-" + content_hash(method, 12).
    Since then a sandbox run's identity also carries the world's version (sandbox v5), and the
    tiny sandbox states the world's rule (`corpus_rules`, new in v5), both on purpose; the ids are
    compared without them, so that this test still shows per-start tuning moved nothing."""
    from harness.cache import content_hash
    from harness.plan import start_spec
    from harness.tune import _setting, final_spec, study_lock, trial_spec
    from harness.tuning.check import check_tuning

    def before_version(spec):
        identity = spec.identity()
        assert identity.pop("sandbox_version") == SANDBOX_VERSION
        identity["sandbox"].pop("corpus_rules")
        return content_hash(identity, length=12)

    suite = _suite(tuned_suite_text())
    spaces = check_tuning(suite)
    assert start_spec(suite).run_id == start_spec(suite, "sandbox").run_id
    assert before_version(start_spec(suite)) == "12bbbb7defb6"
    dpo = _setting(suite, spaces["dpo"], {"lr": 0.5, "beta": 0.2})
    assert trial_spec(suite, "dpo", dpo).run_id == trial_spec(suite, "dpo", dpo, model="sandbox").run_id
    assert before_version(trial_spec(suite, "dpo", dpo)) == "fa63d668b38d"
    assert before_version(trial_spec(suite, "ipo", _setting(suite, spaces["ipo"], {"lr": 2.0, "tau": 0.05}))) == "3e45918335d1"
    assert before_version(final_spec(suite, "dpo", {"beta": 0.2, "lr": 5e-4}, 0)) == "437e0d3006a2"
    assert before_version(final_spec(suite, "ipo", {"lr": 1e-3, "tau": 0.05}, 1)) == "0a2abb3b54d7"
    assert study_lock(suite, "sandbox", "dpo") == "study-8c5c9a714227"
    # several starts: each start's trial and lock are its own
    two = _suite(two_start_text(), "starts")
    assert trial_spec(two, "dpo", dpo, model="sandbox:base").run_id != trial_spec(two, "dpo", dpo).run_id
    assert len({study_lock(two, s, "dpo") for s in STARTS} | {study_lock(suite, "sandbox", "dpo")}) == 3


def test_the_published_sandbox_tuned_replays_unchanged(tmp_path, tmp_path_factory):
    """Replaying sandbox-tuned's study from its stored trials (a copy; every trial is stored, so
    nothing may train) gives the stored trials table (the start columns aside), and its headline
    folder holds exactly the start run and the finals the table selects."""
    from harness.plan import plan_suite
    from harness.runner import SuiteOutcome
    from harness.suite import load_suite
    from harness.tune import final_specs, read_trials, start_spec, tune_start
    from harness.tuning.check import check_tuning, defaults_suite

    from tests.published import published_runs

    shutil.copytree(published_runs("sandbox-tuned", tmp_path_factory.getbasetemp()) / "sandbox-tuned", tmp_path / "sandbox-tuned")
    suite = load_suite(ROOT / "suites" / "sandbox-tuned.yaml")

    def no_world(*_):
        raise AssertionError("a stored run is missing: nothing may train here")

    defaults = [s for s in plan_suite(defaults_suite(suite)) if s.trains]
    table = tune_start(suite, ("sandbox", "sandbox"), check_tuning(suite), defaults, tmp_path, no_world, SuiteOutcome(),
                       lambda *_: None)
    pd.testing.assert_frame_equal(table.reset_index(drop=True), read_trials(tmp_path, suite).reset_index(drop=True))
    assert set(ResultStore(tmp_path, suite.name).run_ids()) == {start_spec(suite).run_id} | {
        s.run_id for s in final_specs(suite, table)}


# --------------------------------------------------------------------------- several starts, end to end

def test_every_start_tunes_every_method_alike_and_selects_and_reruns_its_own(starts):
    from harness.plan import plan_suite
    from harness.suite import load_suite
    from harness.tune import final_specs
    from harness.tuning.check import defaults_suite

    root, suite_path = starts
    table = _table(root, "starts")
    assert table.groupby("start")["trial"].count().to_dict() == {"sft": TRIALS, "base": TRIALS}
    assert table.groupby("start")["selected"].sum().to_dict() == {"sft": 1, "base": 1}
    assert dict(zip(table["start"], table["model"])) == STARTS
    lrs = table.assign(lr=[json.loads(p)["lr"] for p in table["params"]]).pivot(index="trial", columns="start", values="lr")
    assert (lrs["sft"] == lrs["base"]).all()  # the same proposals from each start (one seed: fair)
    for _, group in table.groupby("start"):  # each start's own best validation value
        assert group.loc[group["selected"], "value"].iloc[0] == group["value"].max()
    trials = ResultStore(root / "results", "starts").inner("tuning", "trials").read_metrics().drop_duplicates("run_id")
    assert dict(zip(trials["run_id"], trials["model"])) == dict(zip(table["run_id"], table["model"]))  # run from its start
    suite = load_suite(suite_path)
    headline = ResultStore(root / "results", "starts").read_metrics().drop_duplicates("run_id")
    finals = final_specs(suite, table)
    assert sorted(s.model for s in finals) == sorted(STARTS.values())
    assert set(headline["run_id"]) == {s.run_id for s in finals} | {
        s.run_id for s in plan_suite(defaults_suite(suite)) if not s.trains}  # the starts' runs and finals only
    defaults = ResultStore(root / "results", "starts").inner("tuning", "defaults").read_metrics()
    assert sorted(defaults.drop_duplicates("run_id")["model"]) == sorted(STARTS.values())
    # the report: defaults against tuned, selections and compute, per start
    html = (root / "reports" / "starts.html").read_text()
    tuning = html[html.index("Tuning: does it change the ranking?"):html.index("Reward vs KL")]
    for name, model in STARTS.items():
        heading = f"Starting point: {name} ({model})"
        assert tuning.count(heading) >= 3, heading  # rank change, selection, compute (and sensitivity)


def test_plan_counts_trials_per_start(starts, capsys):
    _, suite = starts
    assert main(["plan", str(suite)]) == 0
    out = capsys.readouterr().out
    assert f"tune: {TRIALS} quasi-random trials per method per start x 1 methods x 2 starts = {2 * TRIALS} trial runs" in out
    assert "then each selected setting x 1 seeds = 2 runs on the test prompts" in out
    assert out.count(" base ") == 2 and out.count(" sft ") == 2  # the start column: each start's run and default


def test_verify_reruns_what_a_tuned_suite_stored(starts, capsys):
    """The starts' runs and selected settings first (not the untuned plan), then defaults and
    trials; each rerun bit-identical, nothing stored written."""
    from harness.commands.verify import BIT_IDENTICAL, stored_candidates
    from harness.suite import load_suite

    root, suite = starts
    results = root / "results"
    before = {p: p.read_bytes() for p in (results / "starts").rglob("*") if p.is_file() and "lock" not in p.name}
    candidates = stored_candidates(load_suite(suite), results)
    headline = set(ResultStore(results, "starts").run_ids())
    assert {s.run_id for s, _ in candidates[:4]} == headline  # 2 start runs + 2 finals come first
    assert all(store.has_result(s.run_id) for s, store in candidates)
    trial_ids = set(_table(root, "starts")["run_id"])
    capsys.readouterr()
    assert main(["verify", str(suite), "--runs", "7", "--results", str(results)]) == 0
    out = capsys.readouterr().out
    rerun = [line.split()[0] for line in out.splitlines() if BIT_IDENTICAL in line]
    assert len(rerun) == 7 and headline <= set(rerun) and set(rerun) & trial_ids, out
    assert "re-running 7 of" in out and "stored runs" in out
    assert {p: p.read_bytes() for p in before} == before


# --------------------------------------------------------------------------- selection and messages, unit

def test_selection_is_per_start_and_method_and_unmet_names_the_start():
    from harness.tune import unmet_message
    from harness.tuning.select import select, selected_params, unmet

    trials = pd.DataFrame({"start": ["sft", "sft", "base", "base"], "model": ["m0", "m0", "m1", "m1"],
                           "method": ["dpo"] * 4, "params": ['{"a": 1}', '{"a": 2}', '{"a": 3}', '{"a": 4}'],
                           "value": [0.2, 0.5, 0.9, 0.1], "kl": [0.1, 0.2, 5.0, 0.3], "status": ["ok"] * 4})
    chosen = select(trials, "maximize", math.inf)
    assert list(chosen["selected"]) == [False, True, True, False]  # one per start, not one overall
    assert selected_params(chosen) == [("m0", "dpo", {"a": 2}), ("m1", "dpo", {"a": 3})]
    budgeted = select(trials, "maximize", 1.0)
    assert list(budgeted["selected"]) == [False, True, False, True] and unmet(budgeted) == []
    none = select(trials[trials["start"] == "base"].assign(kl=9.0), "maximize", 1.0)
    assert unmet(none) == [("base", "dpo")]
    message = unmet_message(_suite(two_start_text(), "starts"), unmet(none))
    assert "for dpo @ base; nothing selected" in message
    assert "for dpo; nothing selected" in unmet_message(_suite(tuned_suite_text()), [("sandbox", "dpo")])
