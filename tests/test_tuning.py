"""The fair comparison protocol (harness.tuning): a tuned tiny suite end to end; selection reads the
validation prompts only; equal trials and budgets for every method, a plugin included; resuming a
killed tuning; deterministic samplers; a one-point grid reproduces the untuned runs; bad input."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import yaml

from harness.cli import main
from harness.results import ResultStore
from tests.conftest import tiny_suite_text

TRIALS = 3


def tuned_suite_text(name: str = "tuned", methods: str = "[dpo, ipo]", **tune) -> str:
    raw = yaml.safe_load(tiny_suite_text(name, methods))
    raw["tune"] = {"trials": TRIALS, "sampler": "quasi-random", "seeds": [0], "validation_prompts": 8, **tune}
    return yaml.safe_dump(raw)


def _run(suite: Path, root: Path, *extra: str) -> int:
    return main(["run", str(suite), "--results", str(root / "results"), "--reports", str(root / "reports"), *extra])


def _table(root: Path, name: str = "tuned") -> pd.DataFrame:
    return pd.read_parquet(root / "results" / name / "tuning" / "trials.parquet")


def tune_once(tmp_path_factory, name: str, text: str) -> tuple[Path, Path]:
    """A suite written to a fresh folder and run (tuned) there: (the folder, the suite file)."""
    root = tmp_path_factory.mktemp(name)
    suite = root / f"{name}.yaml"
    suite.write_text(text)
    assert _run(suite, root) == 0
    return root, suite


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, harness_cache):
    """The tiny suite tuned once: dpo and ipo, three quasi-random trials each."""
    return tune_once(tmp_path_factory, "tuned", tuned_suite_text())


def _selection_view(table: pd.DataFrame) -> pd.DataFrame:
    return table[["method", "trial", "run_id", "params", "value", "kl", "selected"]].reset_index(drop=True)


# --------------------------------------------------------------------------- the protocol, end to end

def test_every_method_gets_the_same_trials_on_validation_and_its_selection_rerun_on_test(tuned):
    root, _ = tuned
    table = _table(root)
    assert table.groupby("method")["trial"].count().to_dict() == {"dpo": TRIALS, "ipo": TRIALS}
    assert table.groupby("method")["selected"].sum().to_dict() == {"dpo": 1, "ipo": 1}
    # the same quasi-random proposals for both methods' shared dimension (one seed, fair)
    lrs = table.assign(lr=[json.loads(p)["lr"] for p in table["params"]]).pivot(index="trial", columns="method", values="lr")
    assert (lrs["dpo"] == lrs["ipo"]).all()
    # the selected trial is the best validation value (gold reward, maximized)
    for _, group in table.groupby("method"):
        assert group.loc[group["selected"], "value"].iloc[0] == group["value"].max()
    trials = ResultStore(root / "results", "tuned").inner("tuning", "trials").read_metrics()
    assert set(trials["split"]) == {"validation", "train"}  # no test-prompt row in a trial
    assert set(trials["budget_value"]) == {2.0e8} and set(trials["budget_kind"]) == {"flops"}
    main_rows = ResultStore(root / "results", "tuned").read_metrics()
    assert "validation" not in set(main_rows["split"])
    finals = main_rows[main_rows["method"] != "start"].drop_duplicates("run_id")
    for r in finals.itertuples():  # the selected setting, re-run on the test prompts
        chosen = json.loads(table.loc[(table["method"] == r.method) & table["selected"], "params"].iloc[0])
        assert {k: v for k, v in json.loads(r.hparams).items() if k in chosen} == {k: v for k, v in chosen.items() if k != "lr"}
    html = (root / "reports" / "tuned.html").read_text()
    for heading in ("Tuning: does it change the ranking?", "Selected hyper-parameters", "Sensitivity", "Tuning compute"):
        assert heading in html


def test_selection_reads_validation_only_when_test_prompts_are_poisoned(tuned, tmp_path, monkeypatch):
    """The test prompts are replaced by others before anything runs: every trial, its value and
    the selection are unchanged, while the final runs (which read the test prompts) change."""
    import harness.runner as runner
    from harness.data.jsonl import read_jsonl

    root, suite = tuned
    prepare = runner.prepare_world

    def poisoned(s, model=None):
        world = prepare(s, model)
        training = [r["prompt"] for r in read_jsonl(world.files["paired"])]
        world.eval_prompts = list(dict.fromkeys(training))[: len(world.eval_prompts)]
        return world

    monkeypatch.setattr(runner, "prepare_world", poisoned)
    assert _run(suite, tmp_path) == 0
    pd.testing.assert_frame_equal(_selection_view(_table(tmp_path)), _selection_view(_table(root)))
    clean = ResultStore(root / "results", "tuned").read_metrics()
    dirty = ResultStore(tmp_path / "results", "tuned").read_metrics()
    key = (clean["evaluator"] == "gold_reward") & (clean["metric"] == "reward_mean") & (clean["method"] == "dpo")
    dkey = (dirty["evaluator"] == "gold_reward") & (dirty["metric"] == "reward_mean") & (dirty["method"] == "dpo")
    assert clean.loc[key, "value"].iloc[0] != dirty.loc[dkey, "value"].iloc[0]  # the poison did reach the test


def test_selection_ignores_test_rows_of_a_trial():
    """Unit: a trial's value is read from its validation rows; poisoned eval rows change nothing."""
    from harness.tuning.select import select, validation_value

    rows = pd.DataFrame({"evaluator": ["gold_reward"] * 3, "metric": ["reward_mean"] * 3,
                         "split": ["validation", "validation", "eval"], "step": [0, 5, 5],
                         "value": [0.1, 0.3, 99.0], "higher_is_better": [True] * 3})
    assert validation_value(rows, "gold_reward/reward_mean") == 0.3  # last step, validation split
    trials = pd.DataFrame({"method": ["m"] * 3, "run_id": list("abc"), "value": [0.2, 0.5, 0.4],
                           "kl": [0.1, 2.0, 0.3], "status": ["ok"] * 3})
    assert list(select(trials, "maximize", math.inf)["selected"]) == [False, True, False]
    assert list(select(trials, "maximize", 1.0)["selected"]) == [False, False, True]  # 0.5 is over budget
    assert list(select(trials, "minimize", 1.0)["selected"]) == [True, False, False]
    assert not select(trials, "maximize", 0.01)["selected"].any()  # none meets the budget: nothing


def test_a_kl_budget_no_trial_meets_selects_nothing_and_exits_2(tuned, capsys):
    root, suite = tuned
    assert _run(suite, root, "--set", "tune.kl_budget=1e-9") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no trial has validation KL <= 1e-09 for dpo, ipo; nothing selected" in err[0]
    table = _table(root)
    assert not table["selected"].any() and len(table) == 2 * TRIALS  # the trials are kept
    main_store = ResultStore(root / "results", "tuned")
    superseded = main_store.inner("tuning", "superseded")
    assert set(main_store.read_metrics()["method"]) == {"start"}  # the old selection is not ranked...
    assert set(superseded.read_metrics()["method"]) == {"dpo", "ipo"}  # ...but kept
    assert _run(suite, root) == 0  # and reused: selection is back without training anything
    assert "done in" not in capsys.readouterr().out
    assert _table(root)["selected"].sum() == 2
    assert set(main_store.read_metrics()["method"]) == {"start", "dpo", "ipo"} and superseded.run_ids() == []


def test_a_metric_the_start_run_does_not_report_stops_before_any_trial(tuned, tmp_path, capsys):
    """A registered metric the runs leave out (as an lm-eval task's typo would be, which preflight
    cannot know): one line naming tune.metric once the start run is stored, and no trial trains."""
    root, suite = tuned
    plugin = tmp_path / "silent_evaluator.py"
    plugin.write_text("from harness.evaluate.registry import MetricInfo, register_evaluator\n\n\n"
                      "@register_evaluator('silent', MetricInfo('never', True, 'x', 'declared, never computed'))\n"
                      "def silent(scored):\n    return {}\n")
    assert _run(suite, root, "--set", f"plugins=[{plugin}]", "--set", "tune.metric=silent/never") == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "tune.metric = 'silent/never': the start run reports no 'silent/never'" in err[0], err
    assert "trial 1 of" not in captured.out and "done in" not in captured.out


def test_tuning_and_ranking_share_one_kl_budget(tuned):
    from harness.rank import DEFAULT_KL_BUDGET, ranking_kl_budget
    from harness.suite import load_suite

    root, suite = tuned
    assert load_suite(suite).tune.kl_budget == DEFAULT_KL_BUDGET == 10.0
    table = _table(root)
    assert set(table["kl_budget"]) == {DEFAULT_KL_BUDGET} and ranking_kl_budget(table) == DEFAULT_KL_BUDGET
    assert ranking_kl_budget(table.assign(kl_budget=3.5)) == 3.5 and ranking_kl_budget(None) == DEFAULT_KL_BUDGET
    assert table["within_budget"].equals(table["kl"] <= DEFAULT_KL_BUDGET)
    html = (root / "reports" / "tuned.html").read_text()
    assert "KL budget 10 (kl/kl_token_exact)" in html and "Within a KL budget of 10 nats" in html
    assert "Every method had at least one trial within the KL budget (10)." in html


def test_the_report_names_the_methods_with_no_trial_within_the_budget():
    from harness.report.tuning import budget_note

    trials = pd.DataFrame({"method": ["a", "a", "b"], "within_budget": [True, False, False],
                           "derived": ["", "", "beta,clip"]})
    text = budget_note(trials, "10")
    assert "nothing selected or ranked: b." in text and "b: beta, clip" in text


def test_resume_after_a_kill_mid_tuning_runs_only_the_missing_trials(tuned, tmp_path, monkeypatch):
    import harness.runner as runner
    from harness.plan import VALIDATION

    root, suite = tuned
    run_one = runner.run_one
    trained: list[str] = []

    def killed_at_the_fourth_trial(spec, *args, **kwargs):
        if spec.prompts == VALIDATION:
            if len(trained) == 3 and kill:
                raise KeyboardInterrupt
            trained.append(spec.run_id)
        return run_one(spec, *args, **kwargs)

    monkeypatch.setattr(runner, "run_one", killed_at_the_fourth_trial)
    kill = True
    assert _run(suite, tmp_path) == 130  # interrupted
    first = list(trained)
    assert len(first) == 3 and len(ResultStore(tmp_path / "results", "tuned").inner("tuning", "trials").run_ids()) == 3
    trained.clear()
    kill = False
    assert _run(suite, tmp_path) == 0
    assert len(trained) == 2 * TRIALS - 3 and not set(trained) & set(first)  # only the missing ones
    pd.testing.assert_frame_equal(_selection_view(_table(tmp_path)), _selection_view(_table(root)))


# --------------------------------------------------------------------------- samplers and spaces

@pytest.mark.parametrize("sampler", ["grid", "quasi-random", "model-based"])
def test_the_sampler_is_deterministic_for_a_seed(sampler):
    from harness.losses.base import choice, log_range
    from harness.tuning.sampler import distributions, make_study, proposal
    from harness.tuning.space import MethodSpace

    space = MethodSpace("m", {"lr": log_range(0.1, 10.0, "test"), "beta": log_range(0.01, 1.0, "test"),
                              "flag": choice(True, False, source="test")}, {"lr": 1.0, "beta": 0.1, "flag": True}, {})

    def proposals(seed: int) -> list[dict]:
        dists = distributions(space, sampler, 4, {"beta": 0.1, "flag": True})
        study = make_study(sampler, seed, "maximize", 8, dists)
        out = []
        for _ in range(8):
            trial = study.ask(dists)
            params = proposal(trial, dists)
            out.append(params)
            study.tell(trial, -abs(math.log(params["beta"] / 0.05)) + (0.1 if params["flag"] else 0.0))
        return out

    first = proposals(3)
    assert first == proposals(3)
    assert first != proposals(4)
    assert len({json.dumps(p, sort_keys=True) for p in first}) == 8  # distinct proposals


def test_a_grid_of_one_point_reproduces_the_untuned_run_ids(tmp_path, harness_cache):
    from harness.plan import plan_suite
    from harness.suite import load_suite

    suite = tmp_path / "one.yaml"
    suite.write_text(tuned_suite_text("one", "[dpo, {ipo: {tau: 0.2}}]", sampler="grid", grid_points=1, trials=1))
    assert _run(suite, tmp_path) == 0
    untuned = replace(load_suite(suite), tune=None)
    assert set(ResultStore(tmp_path / "results", "one").run_ids()) == {s.run_id for s in plan_suite(untuned)}
    table = _table(tmp_path, "one")
    assert json.loads(table.loc[table["method"] == "ipo", "params"].iloc[0])["tau"] == 0.2  # the suite's centre


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("tune, fragment", [
    ({"trials": 0}, "tune.trials = 0 must be > 0"),
    ({"space": {"dpo": {"beta": {"low": -0.1, "high": 0.5}}}}, "tune.space.dpo.beta: -0.1 must be > 0"),
    ({"space": {"dpo": {"gamma": [1.0]}}}, "dpo has no dimension 'gamma'"),
    ({"space": {"dpx": {"beta": [0.1]}}}, "tune.space.dpx: no such method"),
    ({"sampler": "grid", "grid_points": 1}, "tune.trials = 3 exceeds the grid of 1 points for dpo"),
    ({"sampler": "bayes"}, "tune.sampler = 'bayes' must be one of 'grid', 'quasi-random', 'model-based'"),
    ({"kl_budget": -1}, "tune.kl_budget = -1.0 must be > 0"),
    ({"trial": 3}, "unknown key tune.'trial' (did you mean 'trials'?)"),
])
def test_bad_tune_sections_are_one_line_errors_before_any_work(tmp_path, capsys, harness_cache, tune, fragment):
    suite = tmp_path / "bad.yaml"
    suite.write_text(tuned_suite_text("bad", **tune))
    assert _run(suite, tmp_path) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0] and str(suite) in err[0], err
    assert not (tmp_path / "results").exists()  # nothing ran


def test_validation_prompts_overlapping_the_test_prompts_are_refused(tmp_path, capsys, harness_cache, monkeypatch):
    import harness.runner as runner
    from harness.data.jsonl import read_jsonl

    def overlapping(sandbox, config, n):
        return [r["prompt"] for r in read_jsonl(sandbox.data("eval_prompts"))][:n]

    monkeypatch.setattr(runner, "sandbox_validation_prompts", overlapping)
    suite = tmp_path / "overlap.yaml"
    suite.write_text(tuned_suite_text("overlap"))
    assert _run(suite, tmp_path) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "validation prompts are also test prompts" in err[0], err
    assert not list((tmp_path / "results").rglob("*.parquet"))  # nothing ran


def test_the_sandbox_validation_prompts_are_disjoint_from_everything_it_holds(tuned):
    from harness.data.jsonl import read_jsonl
    from harness.sandbox.world import DATA_FILES, SandboxConfig, find_sandbox, sandbox_validation_prompts
    from harness.suite import load_suite

    _, suite = tuned
    config = SandboxConfig.from_dict(load_suite(suite).sandbox, "test")
    sandbox = find_sandbox(config)
    prompts = sandbox_validation_prompts(sandbox, config, 40)
    assert len(set(prompts)) == 40 and prompts == sandbox_validation_prompts(sandbox, config, 40)
    held = {r["prompt"] for name in DATA_FILES for r in read_jsonl(sandbox.data(name))}
    assert not set(prompts) & held


# --------------------------------------------------------------------------- add a variant (last: it adds to the store)

def _rank_plugin(tuned, filename: str, source: str) -> list[str]:
    """`harness rank` of a plugin file written beside the tuned suite; its log lines."""
    from harness.commands.rank import rank_new_methods

    root, suite = tuned
    (root / filename).write_text(source)
    lines: list[str] = []
    status = rank_new_methods([str(root / filename)], suite, results_root=root / "results",
                              reports_root=root / "reports", log=lines.append)
    assert status == 0, lines
    return lines


def test_rank_tunes_a_plugin_with_the_same_trials_and_ranks_its_selection(tuned, capsys):
    from tests.test_plugins import plugin_source

    root, _ = tuned
    lines = _rank_plugin(tuned, "tuned_variant.py", plugin_source("tuned_hinge"))
    table = _table(root)
    assert table.groupby("method")["trial"].count().to_dict() == {"dpo": TRIALS, "ipo": TRIALS, "tuned_hinge": TRIALS}
    costs = ResultStore(root / "results", "tuned").inner("tuning", "trials").read_metrics().drop_duplicates("run_id")
    assert costs.groupby("method")["budget_value"].unique().map(tuple).to_dict() == {
        "dpo": (2.0e8,), "ipo": (2.0e8,), "tuned_hinge": (2.0e8,)}
    trial_lines = [line for line in lines if ": trial " in line]
    assert len(trial_lines) == TRIALS and all(line.startswith("tuned_hinge") for line in trial_lines)  # others reused
    assert any(line.startswith("tuned_hinge (") and ": rank " in line for line in lines), lines


def test_a_plugin_without_a_search_space_gets_as_many_trials_as_dpo_over_a_derived_space(tuned):
    from harness.losses import get_loss
    from harness.methods import describe_methods
    from tests.test_plugins import minimal_plugin_source

    root, _ = tuned
    _rank_plugin(tuned, "plain_variant.py", minimal_plugin_source("plain_tuned"))
    table = _table(root)
    counts = table.groupby("method")["trial"].count()
    assert counts["plain_tuned"] == counts["dpo"] == TRIALS
    derived = table.groupby("method")["derived"].first().to_dict()
    assert derived["plain_tuned"] == "beta,clip" and derived["dpo"] == ""
    params = pd.DataFrame([json.loads(p) for p in table.loc[table["method"] == "plain_tuned", "params"]])
    assert params["beta"].between(0.01, 1.0).all() and params["clip"].between(0.5, 50.0).all()
    assert params["beta"].nunique() == TRIALS  # searched, not fixed at the default
    html = (root / "reports" / "tuned.html").read_text()
    assert "plain_tuned (derived space)" in html and "plain_tuned: beta, clip" in html
    listed = {m["name"]: m for m in describe_methods()}["plain_tuned"]
    assert listed["space_text"] == "beta log[0.01, 1] (derived), clip log[0.5, 50] (derived)"
    assert listed["search_space"]["beta"]["derived"] is True and get_loss("plain_tuned").search_space == {}


def test_a_hyperparameter_no_rule_covers_is_one_line_error_before_any_work(tuned, tmp_path, capsys):
    from tests.test_plugins import minimal_plugin_source

    root, _ = tuned
    source = minimal_plugin_source("offset_loss").replace("clip: float = 5.0", "clip: float = 5.0, offset: float = 0.0")
    (tmp_path / "offset.py").write_text(source)
    raw = yaml.safe_load(tuned_suite_text("offsets", "[dpo, offset_loss]"))
    raw["plugins"] = [str(tmp_path / "offset.py")]
    (tmp_path / "offsets.yaml").write_text(yaml.safe_dump(raw))
    assert _run(tmp_path / "offsets.yaml", tmp_path) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0].startswith("harness: warning: ")  # the missing space, then the refusal
    assert "loss 'offset_loss' declares no search space for 'offset' and none can be derived from its default 0.0" in err[1]
    assert "search_space={'offset': linear_range(low, high, source)}" in err[1]
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").rglob("*.parquet"))


def test_the_derivation_rule():
    from harness.losses.base import LossSpec, derive_space, in_range, non_negative, positive

    def loss(*, beta: float = 0.1, weight: float = 0.3, steps: int = 4, flag: bool = True, name: str = "x",
             offset: float = 0.0, capped: float = 0.4):
        """A loss for the rule."""

    constraints = {"beta": positive(), "weight": in_range(0.0, 1.0), "offset": non_negative(),
                   "capped": in_range(0.0, 0.5)}
    spec = LossSpec("rule", loss, frozenset(), "sum", "p", "f", constraints=constraints)
    dims, uncovered = derive_space(spec)
    assert {k: d.text() for k, d in dims.items()} == {
        "beta": "log[0.01, 1] (derived)",  # a positive default d: log [d/10, 10 d]
        "weight": "linear[0, 1] (derived)",  # a weight in [0, 1]
        "steps": "log[1, 40] (derived)",  # an integer's low end at least 1
        "flag": "choice{False, True} (derived)",  # a bool: both values
    }
    assert uncovered == ["offset", "capped"]  # a zero default; a range that leaves the constraint
    declared = LossSpec("rule2", loss, frozenset(), "sum", "p", "f", constraints=constraints,
                        search_space={"offset": tuning_dim()})
    assert "flag" not in derive_space(declared)[0]  # a loss that declares a space chose its switches


def tuning_dim():
    from harness.losses.base import linear_range

    return linear_range(0.0, 1.0, "test")


# --------------------------------------------------------------------------- a real dataset's validation split

def _real_tuned_suite(root: Path, validation_rows: list[dict] | None) -> Path:
    from tests.test_evaluate_reward_models import save_tiny_reward_model
    from tests.test_real_suites import save_pairs, save_tiny_policy, write_suite

    data = save_pairs(root / "pairs", train=12, test=6)
    if validation_rows is not None:
        (data / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in validation_rows))
    suite = write_suite(root / "real.yaml", save_tiny_policy(root / "policy"), data,
                        str(save_tiny_reward_model(root / "reward")), methods="[dpo]")
    raw = yaml.safe_load(suite.read_text())
    raw["tune"] = {"trials": 1, "sampler": "grid", "grid_points": 1, "validation_prompts": 2}
    if validation_rows is not None:
        raw["data"] = {"validation_split": "validation"}
    suite.write_text(yaml.safe_dump(raw))
    return suite


def test_a_real_dataset_takes_validation_prompts_from_its_eval_split_or_a_named_split(tmp_path, harness_cache, capsys):
    from tests.test_real_suites import save_pairs

    # without a named split: the eval split's prompts after the 4 test prompts
    suite = _real_tuned_suite(tmp_path / "a", None)
    assert _run(suite, tmp_path / "a") == 0
    manifest = next(m for m in ResultStore(tmp_path / "a" / "results", "real").inner("tuning", "trials").read_manifests().values())
    assert manifest["spec"]["prompts"] == "validation"
    assert manifest["spec"]["validation"] == {"prompts": 2, "split": "test after the test prompts"}
    # a named validation split whose prompts are also test prompts is refused before any work
    test_rows = [json.loads(line) for line in (save_pairs(tmp_path / "probe", train=12, test=6) / "test.jsonl").read_text().splitlines()]
    suite = _real_tuned_suite(tmp_path / "b", test_rows[:3])
    capsys.readouterr()
    assert _run(suite, tmp_path / "b") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "validation prompts are also test prompts" in err[0], err
    assert not list((tmp_path / "b" / "results").rglob("*.parquet"))


# --------------------------------------------------------------------------- the published suites

ROOT = Path(__file__).resolve().parents[1]


def test_sandbox_tuned_tunes_every_method_of_sandbox_all_alike():
    from harness.losses import LOSSES, get_loss
    from harness.suite import load_suite
    from harness.tune import check_tuning

    tuned, every = load_suite(ROOT / "suites" / "sandbox-tuned.yaml"), load_suite(ROOT / "suites" / "sandbox-all.yaml")
    builtin = sorted(n for n in LOSSES.names() if get_loss(n).origin == "built-in")
    assert sorted(e.name for e in tuned.methods) == builtin
    assert [e for e in every.methods if "+" not in e.name] == list(tuned.methods)  # the same default settings
    assert (tuned.budget, tuned.train, tuned.evaluate) == (every.budget, every.train, every.evaluate)
    assert tuned.final_seeds == every.seeds == (0, 1, 2) and tuned.tune.trials == 8
    assert set(check_tuning(tuned)) == set(builtin)  # every space valid under the suite


def test_sandbox_beta_sweeps_beta_at_one_learning_rate():
    from harness.losses import get_loss
    from harness.suite import load_suite
    from harness.tune import check_tuning
    from harness.tuning.sampler import distributions

    suite = load_suite(ROOT / "suites" / "sandbox-beta.yaml")
    betas = [0.01, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    for method, space in check_tuning(suite).items():
        dists = distributions(space, "grid", suite.tune.grid_points, get_loss(method).hparams)
        swept = {k: list(d.choices) for k, d in dists.items() if len(d.choices) > 1}
        assert swept == {"tau" if method == "ipo" else "beta": betas}  # everything else, lr too, one value
        assert list(dists["lr"].choices) == [1.0]
    assert suite.tune.trials == len(betas)


def test_simpo_suite_searches_each_grid_with_the_papers_learning_rates_in_equal_trials():
    """suites/simpo-llama3-8b-instruct.yaml: every method's grid × the learning rates {3e-7, 5e-7,
    6e-7, 1e-6} (factors 0.3, 0.5, 0.6, 1 of train.lr = 1e-6); trials = the smallest full grid
    (3 β × 4 learning rates = 12), so DPO, CPO and KTO are searched whole and the rest in part."""
    from harness.losses import get_loss
    from harness.suite import load_suite
    from harness.tune import _setting, check_tuning
    from harness.tuning.sampler import distributions, grid_size

    suite = load_suite(ROOT / "suites" / "simpo-llama3-8b-instruct.yaml")
    spaces = check_tuning(suite)
    sizes = {m: grid_size(s, suite.tune.grid_points, get_loss(m).hparams) for m, s in spaces.items()}
    assert sizes == {"dpo": 12, "ipo": 16, "cpo": 12, "kto": 12, "orpo": 16, "r_dpo": 48, "simpo": 24}
    assert suite.tune.sampler == "grid" and suite.tune.trials == min(sizes.values())
    for method, space in spaces.items():
        lrs = distributions(space, "grid", suite.tune.grid_points, get_loss(method).hparams)["lr"].choices
        assert [_setting(suite, space, {"lr": f})["lr"] for f in lrs] == [3e-7, 5e-7, 6e-7, 1e-6]
