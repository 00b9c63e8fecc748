"""The tuning stage, above the runner: a tuned suite's start model, defaults, every method's trials
and selected settings (the protocol is in harness.tuning's docstring).

Where everything is stored (all ordinary runs, content-hash ids, reused when stored):

    results/<suite>/                    the start run and the selected settings × tune.seeds (test)
    results/<suite>/tuning/trials/      the trials (validation prompts)
    results/<suite>/tuning/defaults/    each method's untuned setting × tune.seeds (test)
    results/<suite>/tuning/trials.parquet   every trial's params, value, KL, compute; the selection

A method's study is claimed with a lock, so several processes tuning one suite (two shells, a job
array) share the methods between them; its trials are claimed like any run.
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
from harness.losses import get_loss
from harness.plan import RunSpec, method_spec, plan_suite, start_spec
from harness.plugins import load_suite_plugins
from harness.rank import kl_key
from harness.results import ResultStore
from harness.results.store import write_frame
from harness.runner import SuiteOutcome, WorldOnce, run_specs
from harness.suite import SANDBOX, Suite
from harness.tuning.check import check_tuning, defaults_suite
from harness.tuning.sampler import distributions, make_study, proposal, rounded
from harness.tuning.select import (TRIAL_COLUMNS, direction_of, metric_of, select, selected_params, unmet,
                                   validation_value)
from harness.tuning.space import LR, MethodSpace

TUNING, TRIALS, DEFAULTS = "tuning", "trials", "defaults"


def trials_store(root: Path, suite: str) -> ResultStore:
    return ResultStore(root, suite).inner(TUNING, TRIALS)


def defaults_store(root: Path, suite: str) -> ResultStore:
    return ResultStore(root, suite).inner(TUNING, DEFAULTS)


def trials_table_path(root: Path, suite: str) -> Path:
    return Path(root) / suite / TUNING / "trials.parquet"


@dataclass
class TunedOutcome:
    runs: SuiteOutcome
    trials: pd.DataFrame  # the trials table, with the selection
    unmet: list[str]  # methods for which nothing was selected

    @property
    def failed(self):
        return self.runs.failed


def tune_suite(suite: Suite, results_root: Path, *, log=print) -> TunedOutcome:
    """Run the tuned suite's missing runs and write its trials table (see the module docstring)."""
    load_suite_plugins(suite)
    spaces = check_tuning(suite)
    world = WorldOnce(suite)
    world()  # checks the validation prompts (disjoint from test and training) before any training
    main = ResultStore(results_root, suite.name)
    outcome = run_specs(suite, [start_spec(suite)], main, world, log=log, what=f"{suite.name} start")
    defaults = [s for s in plan_suite(defaults_suite(suite)) if s.trains]
    outcome.runs += run_specs(suite, defaults, defaults_store(results_root, suite.name), world, log=log,
                              what=f"{suite.name} defaults").runs
    start_rows = main.read_run(start_spec(suite).run_id)[0]
    key = metric_of(suite.tune.metric, start_rows)
    direction = direction_of(suite.tune.direction, key, start_rows)  # the metric's flag, not its values
    kl = kl_key(start_rows)  # the suite's headline KL (exact where computed), which the budget bounds
    records = _tune_methods(suite, spaces, (key, kl), direction, trials_store(results_root, suite.name), world,
                            outcome, log)
    table = select(pd.DataFrame(records, columns=[c for c in TRIAL_COLUMNS if c not in ("within_budget", "selected")]),
                   direction, suite.tune.kl_budget)[list(TRIAL_COLUMNS)]
    write_frame(trials_table_path(results_root, suite.name), table)
    chosen = selected_params(table)
    finals = [final_spec(suite, spaces[m], params, seed) for m, params in chosen.items() for seed in suite.final_seeds]
    outcome.runs += run_specs(suite, finals, main, world, log=log, what=f"{suite.name} selected settings").runs
    return TunedOutcome(outcome, table, unmet(table))


def _tune_methods(suite: Suite, spaces: dict[str, MethodSpace], keys: tuple[str, str], direction: str, store: ResultStore,
                  world: WorldOnce, outcome: SuiteOutcome, log) -> list[dict[str, Any]]:
    """Every method's study, each claimed with a lock; a study another process holds is put off
    and replayed from the store once it is done."""
    records: dict[str, list[dict[str, Any]]] = {}
    pending = list(spaces)
    while pending:
        waiting = []
        for method in pending:
            lock = store.try_lock(f"study-{content_hash(method, length=12)}")  # a mixture's "+" is no name
            if lock is None:
                waiting.append(method)
                continue
            with lock:
                records[method] = tune_method(suite, spaces[method], keys, direction, store, world, outcome, log)
        if waiting:
            time.sleep(1.0)
        pending = waiting
    return [r for method in spaces for r in records[method]]


def tune_method(suite: Suite, space: MethodSpace, keys: tuple[str, str], direction: str, store: ResultStore,
                world: WorldOnce, outcome: SuiteOutcome, log) -> list[dict[str, Any]]:
    """One method's trials, proposed by the suite's sampler and replayed from the store where
    stored; `keys` are the selection metric and the KL the budget bounds."""
    tune = suite.tune
    dists = distributions(space, tune.sampler, tune.grid_points, get_loss(space.method).hparams)
    study = make_study(tune.sampler, tune.seed, direction, tune.trials, dists)
    records = []
    for number in range(tune.trials):
        trial = study.ask(dists)
        params = proposal(trial, dists)
        spec = trial_spec(suite, space, params)
        if not store.has_result(spec.run_id):
            log(f"{space.method}: trial {number + 1} of {tune.trials}: {_text(params)}")
            outcome.runs += run_specs(suite, [spec], store, world, log=log, announce=False).runs
        hparams, lr = _setting(suite, space, params)
        record = _record(store, spec, {**hparams, LR: lr}, keys, number)
        records.append({**record, "metric": keys[0], "kl_metric": keys[1], "direction": direction,
                        "kl_budget": tune.kl_budget,
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


def _setting(suite: Suite, space: MethodSpace, params: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """A proposal as the loss's hyper-parameters and an absolute learning rate."""
    hparams = {**space.fixed, **{k: v for k, v in params.items() if k != LR}}
    factor = params.get(LR, 1.0)
    lr = suite.train.lr if factor == 1.0 else rounded(factor * suite.train.lr)
    return hparams, lr


def trial_spec(suite: Suite, space: MethodSpace, params: dict[str, Any]) -> RunSpec:
    """A trial: the proposal trained with the suite's budget and first seed, evaluated on the
    validation prompts; lm-eval tasks are left out (their documents are the tasks' test sets)."""
    hparams, lr = _setting(suite, space, params)
    spec = method_spec(suite, space.method, hparams, suite.seeds[0], lr=lr, validation=validation_set(suite))
    return replace(spec, evaluate=replace(spec.evaluate, lm_eval_tasks=()))


def validation_set(suite: Suite) -> dict[str, Any]:
    """What a trial's validation prompts are (part of its identity): how many, and for a real
    dataset the split they come from (the eval split's after the test prompts, or a named one)."""
    out: dict[str, Any] = {"prompts": suite.tune.validation_prompts or suite.evaluate.prompts}
    if suite.dataset != SANDBOX:
        out["split"] = suite.data.validation_split or f"{suite.data.eval_split} after the test prompts"
    return out


def final_spec(suite: Suite, space: MethodSpace, chosen: dict[str, Any], seed: int) -> RunSpec:
    """The selected setting (a trials-table params dict) re-run with `seed` on the test prompts."""
    lr = chosen.get(LR, suite.train.lr)
    hparams = {k: v for k, v in chosen.items() if k != LR}
    return method_spec(suite, space.method, hparams, seed, lr=lr)


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


def unmet_message(suite, unmet: list[str]) -> str:
    """The one line for methods with nothing selected (no trial within the KL budget)."""
    budget = suite.tune.kl_budget
    why = f"no trial has validation KL <= {budget:g}" if budget != float("inf") else "every trial failed"
    return (f"{suite.path}: tune.kl_budget: {why} for {', '.join(unmet)}; nothing selected for them (see "
            f"results/{suite.name}/tuning/trials.parquet); raise tune.kl_budget or narrow tune.space")
