"""The tuning stage, above the runner: a tuned suite's start model, defaults, every method's trials
and selected settings (the protocol is in harness.tuning's docstring). With several starting
points (`model: {sft: ..., base: ...}`) each start does all of this on its own, one start after
another: its start run, its defaults, one study per method with `tune.trials` trials from that
start, selection on that start's validation trials (its own start run gives the metric and KL
keys), and its selected settings' re-runs.

Where everything is stored (all ordinary runs, content-hash ids, reused when stored):

    results/<suite>/                    each start's run and selected settings × tune.seeds (test)
    results/<suite>/tuning/trials/      the trials (validation prompts)
    results/<suite>/tuning/defaults/    each method's untuned setting × tune.seeds (test)
    results/<suite>/tuning/trials.parquet   every trial's params, value, KL, compute; the selection
    results/<suite>/tuning/superseded/  re-runs of an earlier selection (another KL budget or space)

A study (one start's, one method's) is claimed with a lock, so several processes tuning one suite
(two shells, a job array) share the methods between them; its trials are claimed like any run.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from harness.cache import content_hash
from harness.errors import HarnessError, did_you_mean
from harness.losses import get_loss
from harness.plan import RunSpec, method_spec, plan_suite, start_spec
from harness.plugins import load_suite_plugins
from harness.rank import START_SEPARATOR, kl_key
from harness.results import ResultStore
from harness.results.store import trials_table_path, write_frame
from harness.runner import SuiteOutcome, WorldOnce, run_specs
from harness.suite import SANDBOX, Suite
from harness.tuning.check import check_tuning, defaults_suite
from harness.tuning.sampler import distributions, make_study, proposal, rounded
from harness.tuning.select import (TRIAL_COLUMNS, direction_of, metric_of, select, selected_params, unmet,
                                   validation_value)
from harness.tuning.space import LR, MethodSpace, derived_names

TUNING, TRIALS, DEFAULTS, SUPERSEDED = "tuning", "trials", "defaults", "superseded"


def trials_store(root: Path, suite: str) -> ResultStore:
    return ResultStore(root, suite).inner(TUNING, TRIALS)


def defaults_store(root: Path, suite: str) -> ResultStore:
    return ResultStore(root, suite).inner(TUNING, DEFAULTS)


@dataclass
class TunedOutcome:
    runs: SuiteOutcome
    trials: pd.DataFrame  # the trials table, with the selection
    unmet: list[tuple[str, str]]  # (start, method) studies for which nothing was selected

    @property
    def failed(self):
        return self.runs.failed


Start = tuple[str, str]  # a starting point: (its name, its model)


def tune_suite(suite: Suite, results_root: Path, *, log=print) -> TunedOutcome:
    """Run the tuned suite's missing runs and write its trials table (see the module docstring),
    one starting point after another: each start tunes every method on its own."""
    load_suite_plugins(suite)
    spaces = check_tuning(suite)
    world = WorldOnce(suite)
    world()  # checks the validation prompts (disjoint from test and training) before any training
    outcome = SuiteOutcome()
    defaults = [s for s in plan_suite(defaults_suite(suite)) if s.trains]
    tables: list[pd.DataFrame] = []
    for start in suite.start_points:
        tables.append(tune_start(suite, start, spaces, [d for d in defaults if d.model == start[1]], results_root,
                                 world, outcome, log))
        # on record (every start so far) before this start's selected settings re-run
        write_frame(trials_table_path(results_root, suite.name), pd.concat(tables, ignore_index=True))
        finals = final_specs(suite, tables[-1])
        file_selection(suite, start, finals, results_root, log)
        outcome.runs += run_specs(suite, finals, ResultStore(results_root, suite.name), world,
                                  log=log, what=f"{_what(suite, start)} selected settings").runs
    table = pd.concat(tables, ignore_index=True)
    return TunedOutcome(outcome, table, unmet(table))


def file_selection(suite: Suite, start: Start, finals: list[RunSpec], results_root: Path, log) -> None:
    """Make results/<suite>/ hold exactly the current selection's re-runs from `start` (the
    headline ranks every run there): re-runs of an earlier selection (another KL budget, space or
    trial count) move to results/<suite>/tuning/superseded/, kept but not ranked, and a re-run
    set aside earlier that is selected again moves back instead of training again."""
    main = ResultStore(results_root, suite.name)
    superseded = main.inner(TUNING, SUPERSEDED)
    for spec in finals:
        if superseded.has_result(spec.run_id) and not main.has_result(spec.run_id):
            superseded.move_run(spec.run_id, main)
    stored = main.read_metrics()
    keep = {spec.run_id for spec in finals} | {start_spec(suite, start[1]).run_id}
    methods = {entry.name for entry in suite.methods}
    mine = stored[(stored["model"] == start[1]) & stored["method"].isin(methods) & ~stored["run_id"].isin(keep)]
    old = list(dict.fromkeys(mine["run_id"]))
    if old:
        log(f"{_what(suite, start)}: {len(old)} stored re-runs of an earlier selection moved to "
            f"{superseded.folder} (kept, not ranked)")
    for run_id in old:
        main.move_run(run_id, superseded)


def tune_start(suite: Suite, start: Start, spaces: dict[str, MethodSpace], defaults: list[RunSpec],
               results_root: Path, world: WorldOnce, outcome: SuiteOutcome, log) -> pd.DataFrame:
    """One starting point: its start run and `defaults`, then every method's study, selected on
    this start's validation trials; its rows of the trials table."""
    main = ResultStore(results_root, suite.name)
    first = start_spec(suite, start[1])
    outcome.runs += run_specs(suite, [first], main, world, log=log, what=f"{_what(suite, start)} start").runs
    start_rows = main.read_run(first.run_id)[0]  # this start's own keys: its metric and headline KL
    key = metric_of(suite.tune.metric, start_rows)
    check_measured(suite, key, start_rows)
    outcome.runs += run_specs(suite, defaults, defaults_store(results_root, suite.name), world, log=log,
                              what=f"{_what(suite, start)} defaults").runs
    direction = direction_of(suite.tune.direction, key, start_rows)  # the metric's flag, not its values
    kl = kl_key(start_rows)  # the suite's headline KL (exact where computed), which the budget bounds
    records = _tune_methods(suite, start, spaces, (key, kl), direction, trials_store(results_root, suite.name), world,
                            outcome, log)
    table = select(pd.DataFrame(records, columns=[c for c in TRIAL_COLUMNS if c not in ("within_budget", "selected")]),
                   direction, suite.tune.kl_budget)[list(TRIAL_COLUMNS)]
    log(f"{_what(suite, start)}: {_within_text(table, suite.tune.kl_budget)}")
    return table


def check_measured(suite: Suite, key: str, start_rows: pd.DataFrame) -> None:
    """The selection metric is among the start run's: every run reports the same evaluators' keys,
    so a metric the start does not report (an lm-eval task's typo, which preflight cannot know, or
    a metric its evaluator leaves out) would leave every trial without a value; found before them."""
    measured = set(start_rows["evaluator"].astype(str) + "/" + start_rows["metric"].astype(str))
    if key not in measured:
        raise HarnessError(f"{suite.where('tune.metric')}: tune.metric = {suite.tune.metric!r}: the start run "
                           f"reports no {key!r}{did_you_mean(key, measured)}, so no trial would; name a metric "
                           "it reports")


def _within_text(table: pd.DataFrame, budget: float) -> str:
    """How many of each method's trials are within the KL budget: the methods with fewer than all
    by name, and those with none (nothing selected, so not ranked)."""
    within = table.groupby("method", sort=False)["within_budget"].agg(["sum", "size"])
    short = [f"{method} {int(r['sum'])}/{int(r['size'])}" for method, r in within.iterrows() if r["sum"] < r["size"]]
    none = [method for method, r in within.iterrows() if r["sum"] == 0]
    text = (f"trials within the KL budget of {budget:g} nats: all of them for {len(within) - len(short)} of "
            f"{len(within)} methods" + (f"; {', '.join(short)}" if short else ""))
    return text + (f"; none for {', '.join(none)}" if none else "")


def final_specs(suite: Suite, table: pd.DataFrame) -> list[RunSpec]:
    """Every selected setting of the trials table × the final seeds, each from its own start."""
    return [final_spec(suite, method, params, seed, model=model)
            for model, method, params in selected_params(table) for seed in suite.final_seeds]


def _what(suite: Suite, start: Start) -> str:
    """The suite's name in progress lines, with the start's when there are several."""
    return suite.name if len(suite.start_points) == 1 else f"{suite.name} ({start[0]})"


def study_name(suite: Suite, start: str, method: str) -> str:
    """A study in messages: the method, "method @ start" when there are several starts."""
    return method if len(suite.start_points) == 1 else f"{method}{START_SEPARATOR}{start}"


def study_lock(suite: Suite, start: str, method: str) -> str:
    """The lock name of a study: one start's is the method's hash alone (as before starting
    points were an axis), several starts' hash the start too."""
    key = method if len(suite.start_points) == 1 else [start, method]
    return f"study-{content_hash(key, length=12)}"  # a mixture's "+" is no name


def _tune_methods(suite: Suite, start: Start, spaces: dict[str, MethodSpace], keys: tuple[str, str], direction: str,
                  store: ResultStore, world: WorldOnce, outcome: SuiteOutcome, log) -> list[dict[str, Any]]:
    """Every method's study from `start`, each claimed with a lock; a study another process holds
    is put off and replayed from the store once it is done."""
    records: dict[str, list[dict[str, Any]]] = {}
    pending = list(spaces)
    while pending:
        waiting = []
        for method in pending:
            lock = store.try_lock(study_lock(suite, start[0], method))
            if lock is None:
                waiting.append(method)
                continue
            with lock:
                records[method] = tune_method(suite, spaces[method], keys, direction, store, world, outcome, log,
                                              start=start)
        if waiting:
            time.sleep(1.0)
        pending = waiting
    return [r for method in spaces for r in records[method]]


def tune_method(suite: Suite, space: MethodSpace, keys: tuple[str, str], direction: str, store: ResultStore,
                world: WorldOnce, outcome: SuiteOutcome, log, *, start: Start | None = None) -> list[dict[str, Any]]:
    """One method's trials from `start` (default the suite's first), proposed by the suite's
    sampler and replayed from the store where stored; `keys` are the selection metric and the KL
    the budget bounds."""
    tune = suite.tune
    name, model = start or suite.start_points[0]
    dists = distributions(space, tune.sampler, tune.grid_points, get_loss(space.method).hparams)
    study = make_study(tune.sampler, tune.seed, direction, tune.trials, dists)
    records = []
    for number in range(tune.trials):
        trial = study.ask(dists)
        params = proposal(trial, dists)
        setting = _setting(suite, space, params)
        spec = trial_spec(suite, space.method, setting, model=model)
        if not store.has_result(spec.run_id):
            log(f"{study_name(suite, name, space.method)}: trial {number + 1} of {tune.trials}: {_text(params)}")
            outcome.runs += run_specs(suite, [spec], store, world, log=log, announce=False).runs
        record = _record(store, spec, setting, keys, number)
        records.append({"start": name, "model": model, **record, "derived": ",".join(derived_names(space)),
                        "metric": keys[0], "kl_metric": keys[1], "direction": direction, "kl_budget": tune.kl_budget,
                        "sampler": tune.sampler, "seed": tune.seed, "trials": tune.trials})
        if number < tune.trials - 1:  # no proposal follows the last (and a spent grid would stop the study)
            _tell(study, trial, record["value"])
    return records


def _tell(study, trial, value: float) -> None:
    """The trial's validation value, or a failure (a NaN loss, a missing metric)."""
    from optuna.trial import TrialState

    if math.isfinite(value):
        study.tell(trial, value)
    else:
        study.tell(trial, state=TrialState.FAIL)


def _setting(suite: Suite, space: MethodSpace, params: dict[str, Any]) -> dict[str, Any]:
    """A proposal as a setting: the loss's hyper-parameters and the absolute learning rate (as
    the trials table's params record it)."""
    factor = params.get(LR, 1.0)
    lr = suite.train.lr if factor == 1.0 else rounded(factor * suite.train.lr)
    return {**space.fixed, **{k: v for k, v in params.items() if k != LR}, LR: lr}


def _split(suite: Suite, setting: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """A setting as the loss's hyper-parameters and an absolute learning rate."""
    return {k: v for k, v in setting.items() if k != LR}, setting.get(LR, suite.train.lr)


def trial_spec(suite: Suite, method: str, setting: dict[str, Any], *, model: str | None = None) -> RunSpec:
    """A trial of `setting` (hyper-parameters and absolute lr) from `model` (default the first
    start): trained with the suite's budget and first seed, evaluated on the validation prompts;
    lm-eval tasks are left out (their documents are the tasks' test sets)."""
    hparams, lr = _split(suite, setting)
    spec = method_spec(suite, method, hparams, suite.seeds[0], lr=lr, validation=validation_set(suite), model=model)
    return replace(spec, evaluate=replace(spec.evaluate, lm_eval_tasks=()))


def validation_set(suite: Suite) -> dict[str, Any]:
    """What a trial's validation prompts are (part of its identity): how many, and for a real
    dataset the split they come from (the eval split's after the test prompts, or a named one)."""
    out: dict[str, Any] = {"prompts": suite.tune.validation_prompts or suite.evaluate.prompts}
    if suite.dataset != SANDBOX:
        out["split"] = suite.data.validation_split or f"{suite.data.eval_split} after the test prompts"
    return out


def final_spec(suite: Suite, method: str, chosen: dict[str, Any], seed: int, *, model: str | None = None) -> RunSpec:
    """The selected setting (a trials-table params dict) re-run with `seed` on the test prompts,
    from `model` (default the first start)."""
    hparams, lr = _split(suite, chosen)
    return method_spec(suite, method, hparams, seed, lr=lr, model=model)


def read_trials(results_root: Path, suite: Suite) -> pd.DataFrame:
    """The suite's stored trials table (empty when none). A table written before starting points
    were an axis has no start column: it is the first (only) start's."""
    path = trials_table_path(results_root, suite.name)
    if not path.exists():
        return pd.DataFrame(columns=list(TRIAL_COLUMNS))
    table = pd.read_parquet(path)
    if "start" not in table.columns:
        name, model = suite.start_points[0]
        table.insert(0, "model", model)
        table.insert(0, "start", name)
    return table


def stored_runs(suite: Suite, results_root: Path) -> list[tuple[RunSpec, ResultStore]]:
    """Every run the tuned suite stores, each with the store it is in, once: first what the
    headline reads (results/<suite>/: each start's run, then the selected settings × the final
    seeds, as the trials table records them), then the defaults, then the trials."""
    main, table = ResultStore(results_root, suite.name), read_trials(results_root, suite)
    runs = [(start_spec(suite, model), main) for model in suite.start_models]
    runs += [(spec, main) for spec in final_specs(suite, table)]
    defaults, trials = defaults_store(results_root, suite.name), trials_store(results_root, suite.name)
    runs += [(spec, defaults) for spec in plan_suite(defaults_suite(suite)) if spec.trains]
    runs += [(trial_spec(suite, r.method, json.loads(r.params), model=r.model), trials) for r in table.itertuples()]
    once: dict[str, tuple[RunSpec, ResultStore]] = {}
    for spec, store in runs:  # a selected default setting is stored twice: the headline's copy is listed
        once.setdefault(spec.run_id, (spec, store))
    return list(once.values())


def _record(store: ResultStore, spec: RunSpec, setting: dict[str, Any], keys: tuple[str, str],
            number: int) -> dict[str, Any]:
    """One trials-table row: the trial's setting, its validation value and KL, its compute."""
    record = {"method": spec.method, "trial": number, "run_id": spec.run_id,
              "params": json.dumps(setting, sort_keys=True)}
    if not store.has_result(spec.run_id):
        return {**record, "value": math.nan, "kl": math.nan, "status": "failed", "flops_total": 0.0,
                "train_seconds": 0.0, "eval_seconds": 0.0}
    rows, _ = store.read_run(spec.run_id)
    first = rows.iloc[0]
    return {**record, "value": validation_value(rows, keys[0]), "kl": validation_value(rows, keys[1]), "status": "ok",
            "flops_total": float(first["flops_total"]), "train_seconds": float(first["train_seconds"]),
            "eval_seconds": float(first["eval_seconds"])}


def _text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def unmet_message(suite, unmet: list[tuple[str, str]]) -> str:
    """The one line for (start, method) studies with nothing selected (no trial within the KL budget)."""
    budget = suite.tune.kl_budget
    why = f"no trial has validation KL <= {budget:g}" if budget != float("inf") else "every trial failed"
    names = ", ".join(study_name(suite, start, method) for start, method in unmet)
    return (f"{suite.path}: tune.kl_budget: {why} for {names}; nothing selected for them (see "
            f"results/{suite.name}/tuning/trials.parquet); raise tune.kl_budget or narrow tune.space")
