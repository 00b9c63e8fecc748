"""Expanding a suite into runs: methods × hyper-parameter grid × seeds, plus the starting model.

Each RunSpec is plain data whose content hash is its run_id: the same resolved spec always gets
the same id, so re-running a suite finds what is stored and runs only what is missing.

A spec keeps the loss's and the regime's hyper-parameters apart (each travels to its consumer
unchanged: loss -> TrainSetup -> the loss function, regime -> the regime's procedure); the run id
hashes their union, as it always has. Importing this module imports no torch: the losses' and
regimes' declarations are loaded when a suite is planned.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.cache import content_hash
from harness.errors import HarnessError
from harness.suite import (JUDGE_BASELINES, SANDBOX, SANDBOX_VERSION, Budget, DataConfig, EvalConfig, MethodEntry, Suite, TrainConfig,
                           identity_fields)

if TYPE_CHECKING:  # a type name only: importing the losses imports torch
    from harness.losses.regimes import MethodHparams

START = "start"  # the method name of the untrained starting model's evaluation run
TEST, VALIDATION = "test", "validation"  # RunSpec.prompts: the prompts a run is evaluated on


@dataclass(frozen=True)
class RunSpec:
    """One unit of work: train one method with one setting and seed, then evaluate it."""

    suite: str
    method: str
    method_version: str
    loss_hparams: tuple[tuple[str, Any], ...]  # resolved, defaults included, sorted
    regime_hparams: tuple[tuple[str, Any], ...]  # the loss's regime's, likewise
    seed: int
    model: str
    dataset: str
    sandbox: tuple[tuple[str, Any], ...]
    data: DataConfig
    budget: Budget
    train: TrainConfig
    evaluate: EvalConfig
    # Which prompts evaluation reads: "test" (what reports show) or "validation" (a tuning trial's,
    # harness.tuning; disjoint from the test prompts and the training data).
    prompts: str = "test"
    validation: tuple[tuple[str, Any], ...] = ()  # a trial's validation set: how many prompts, from where

    @property
    def trains(self) -> bool:
        return self.method != START

    def gpus_per_run(self) -> int:
        """The GPUs (processes) this run trains on: train.distributed's under FSDP, else 1. What an
        executor requests for the run's task (on one node); the run launches its own processes."""
        return self.train.distributed.processes if self.trains else 1

    @property
    def hparams(self) -> dict[str, Any]:
        """Every hyper-parameter of the run, the loss's and the regime's: what the id hashes."""
        return dict(sorted([*self.loss_hparams, *self.regime_hparams]))

    @property
    def run_id(self) -> str:
        return content_hash(self.identity(), length=12)

    def identity(self) -> dict[str, Any]:
        """Everything that determines the result (the run_id is its hash)."""
        return {
            "method": self.method, "method_version": self.method_version,
            "hparams": self.hparams, "seed": self.seed, "model": self.model,
            "dataset": self.dataset, "sandbox": dict(self.sandbox),
            # the world's version: a rebuilt world (new corpus, new defaults) is a new run
            **({"sandbox_version": SANDBOX_VERSION} if self.dataset == SANDBOX else {}),
            # how a real dataset is read; absent for the sandbox, whose run ids predate it
            **({"data": identity_fields(self.data)} if self.dataset != SANDBOX else {}),
            "budget": asdict(self.budget) if self.trains else None,
            "train": identity_fields(self.train) if self.trains else None,
            "evaluate": _evaluate_identity(self.evaluate),
            # absent for test prompts, so the run ids of untuned runs predate tuning
            **({"prompts": self.prompts, "validation": dict(self.validation)} if self.prompts != TEST else {}),
        }

    def label(self) -> str:
        """A short human name: the method, and its hyper-parameters when they differ from defaults."""
        if not self.trains:
            return START
        from harness.losses import get_loss
        from harness.losses.regimes import resolve_method_hparams

        defaults = resolve_method_hparams(get_loss(self.method), {}).union()
        changed = {k: v for k, v in self.hparams.items() if defaults.get(k) != v}
        args = ", ".join(f"{k}={v}" for k, v in changed.items())
        return f"{self.method}({args})" if args else self.method

    def hparams_json(self) -> str:
        return json.dumps(self.hparams, sort_keys=True)


def _evaluate_identity(evaluate) -> dict[str, Any]:
    """The evaluate section as a run's identity: lm_eval_chat_template only when it is not
    "auto" and the judge only when there is one (its identity fields), so that the run ids of
    suites that predate them stay what they were."""
    fields = asdict(evaluate)
    if fields.get("lm_eval_chat_template") == "auto":
        del fields["lm_eval_chat_template"]
    fields.pop("judge", None)
    if evaluate.judge.enabled:
        fields["judge"] = identity_fields(evaluate.judge)
        reference = Path(evaluate.judge.baseline).expanduser()
        if evaluate.judge.baseline not in JUDGE_BASELINES and reference.is_file():
            # the reference outputs' content, not only their path: an edited file is a new run
            fields["judge"]["baseline_sha256"] = hashlib.sha256(reference.read_bytes()).hexdigest()[:16]
    return fields


def plan_suite(suite: Suite) -> list[RunSpec]:
    """For each starting point (one unless `model:` names several): the starting model's run
    first, then every method setting × seed, in suite order. A setting listed twice (a method
    named twice, an entry giving its defaults, a grid repeating a value) is refused, as a seed
    listed twice is: it would silently run once."""
    from harness.losses import get_loss
    from harness.losses.regimes import MethodHparams, resolve_method_hparams

    runs = []
    for model in suite.start_models:
        runs.append(_spec(suite, START, "1", MethodHparams({}, {}), suite.seeds[0], model=model))
        entries: dict[str, int] = {}  # run id -> the methods entry (1-based) that gave it
        for number, entry in enumerate(suite.methods, 1):
            loss = get_loss(entry.name, where=f"{suite.where('methods')}: methods")
            for hparams in _grid(entry):
                resolved = resolve_method_hparams(loss, hparams, where=suite.where(f"methods.{entry.name}"))
                for seed in suite.seeds:
                    spec = _spec(suite, entry.name, loss.version, resolved, seed, model=model)
                    if spec.run_id in entries:
                        raise _listed_twice(suite, spec, entries[spec.run_id], number)
                    entries[spec.run_id] = number
                    runs.append(spec)
    return runs


def _listed_twice(suite: Suite, spec: RunSpec, first: int, second: int) -> HarnessError:
    entries = (f"entries {first} and {second} give the same hyper-parameters" if first != second
               else f"entry {first}'s grid repeats it")
    return HarnessError(f"{suite.where('methods')}: methods lists the setting {spec.label()} twice ({entries}); "
                        "list each method setting once")


def start_spec(suite: Suite, model: str | None = None) -> RunSpec:
    """The untrained starting model's evaluation run (on the test prompts), from `model` (default
    the suite's first starting point)."""
    from harness.losses.regimes import MethodHparams

    return _spec(suite, START, "1", MethodHparams({}, {}), suite.seeds[0], model=model)


def method_spec(suite: Suite, method: str, hparams: dict[str, Any], seed: int, *, lr: float | None = None,
                validation: dict[str, Any] | None = None, model: str | None = None) -> RunSpec:
    """One run of `method` with `hparams` (resolved against its defaults here) from `model`
    (default the suite's first starting point), at the suite's learning rate unless `lr` is given,
    evaluated on the test prompts, or on the validation prompts that `validation` describes (a
    tuning trial, harness.tuning)."""
    from harness.losses import get_loss
    from harness.losses.regimes import resolve_method_hparams

    loss = get_loss(method, where=f"{suite.where('methods')}: methods")
    resolved = resolve_method_hparams(loss, hparams, where=suite.where(f"methods.{method}"))
    train = suite.train if lr is None or lr == suite.train.lr else replace(suite.train, lr=float(lr))
    spec = replace(_spec(suite, method, loss.version, resolved, seed, model=model), train=train)
    if validation is not None:
        spec = replace(spec, prompts=VALIDATION, validation=tuple(sorted(validation.items())))
    return spec


def _spec(suite: Suite, method: str, version: str, hparams: MethodHparams, seed: int, *,
          model: str | None = None) -> RunSpec:
    """One run from `model` (default the suite's first starting point)."""
    return RunSpec(
        suite=suite.name, method=method, method_version=version,
        loss_hparams=tuple(sorted(hparams.loss.items())), regime_hparams=tuple(sorted(hparams.regime.items())),
        seed=seed, model=model or suite.model,
        dataset=suite.dataset, sandbox=tuple(sorted(suite.sandbox.items())), data=suite.data,
        budget=suite.budget, train=suite.train, evaluate=suite.evaluate,
    )


def _grid(entry: MethodEntry) -> list[dict[str, Any]]:
    """Hyper-parameters given as lists expand into their Cartesian product."""
    keys = list(entry.hparams)
    values = [v if isinstance(v, list) else [v] for v in entry.hparams.values()]
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)] or [{}]


def shard_ids(run_ids: Sequence[str], k: int, n: int) -> list[str]:
    """The run ids of shard k (1-based) of n, for `harness run --shard K/N`: a deterministic
    partition of the plan, so that the N tasks of a job array cover the suite with no coordination
    beyond the shared results folder. Ids are sorted (content hashes: the same on every host) and
    dealt round-robin, so shards differ in size by at most one run and every run is in exactly one.
    Adding a method can move runs between shards; runs are idempotent, so re-running a shard runs
    only what is missing."""
    return sorted(set(run_ids))[k - 1::n]


def deal(run_ids: Sequence[str], n: int) -> list[list[str]]:
    """Every non-empty shard of `run_ids` into n, as shard_ids deals them."""
    return [part for part in (shard_ids(run_ids, k, n) for k in range(1, n + 1)) if part]
