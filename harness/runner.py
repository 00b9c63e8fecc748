"""Running a suite: for each planned run whose result is not stored yet, prepare, train,
evaluate and store. One run's failure (a NaN loss) is recorded and the suite goes on."""

from __future__ import annotations

import errno
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from harness import __version__
from harness.cache import cache_root, content_hash
from harness.data.batches import TrainData, paired_from_rows, sessions_from_rows, unpaired_from_rows
from harness.data.jsonl import read_jsonl
from harness.data.tokenize import prompt_key
from harness.data.prepare import check_disjoint, prepare_dataset
from harness.errors import HarnessError, HarnessFault
from harness.evaluate.implicit import defines_implicit_reward, implicit_reward_accuracies
from harness.evaluate.judge import JudgeFailed
from harness.evaluate.policy import Baseline, baseline_settings, chosen_from_file, evaluate_policy, make_baseline
from harness.evaluate.reward_models import RewardModel, check_reads_conversations, load_reward_model
from harness.evaluate.stats import bootstrap_mean
from harness.fingerprint import world_fingerprint
from harness.generation import prepare_backend, release_engines
from harness.logprobs import completion_token_logps
from harness.losses import get_loss
from harness.losses.regimes import REGIMES, RegimeSpec, train_data_shape
from harness.lifetimes import Held
from harness.memory import resolved_precision
from harness.models import cached_locally, load_frozen, load_policy, load_tokenizer, pick_device, resolve_model_path
from harness.needs import reference_runs_live, unmet_needs
from harness.plan import TEST, VALIDATION, RunSpec, plan_suite, shard_ids
from harness.plugins import load_suite_plugins
from harness.results import ResultStore, method_card
from harness.results.lease import Lease, LeaseLost
from harness.sampling import sampling_fields
from harness.results.schema import ACCOUNTING_COLUMNS, IDENTITY_COLUMNS, SCHEMA_VERSION
from harness.sandbox.world import Sandbox, SandboxConfig, load_or_build_sandbox, sandbox_validation_prompts
from harness.suite import SANDBOX, SANDBOX_MODELS, Suite
from harness.train.budget import Accounting, step_amount
from harness.train.checkpoint import RunCheckpoint
from harness.train.distributed import barrier, broadcast, is_main, launched_distributed, rank_and_size
from harness.train.flops import ModelShape
from harness.train.hardware import mfu
from harness.train.loop import RunFailed, TrainResult, TrainSetup, forecast_phase
from harness.train.reference import cached_reference_sums, folder_fingerprint
from harness.train.adapters import AdaptersDisabled, add_adapters, merged
from harness.train.regimes import RegimeRun, run_regime
from harness.train.trackers import with_trackers

# The sandbox's training files for each data shape the trainer consumes, and their tokenizers.
SANDBOX_TRAIN_FILES = {"paired": "pairs_train", "unpaired": "unpaired_train", "sessions": "sessions_train", "sft": "sft_train"}
TOKENIZE = {"paired": paired_from_rows, "unpaired": unpaired_from_rows, "sessions": sessions_from_rows}


@dataclass
class World:
    """What every run of a suite shares: the start model, data, prompts, reward and baseline."""

    start_path: str
    tokenizer: Any
    start: Held  # the frozen start model: the reference, the KL anchor and the baseline sampler
    files: dict[str, Path]  # data shape (or "eval_pairs") -> its jsonl file
    max_length: int
    packing: bool  # train.packing: also how the reference's log-probs are computed
    eval_prompts: list[str]
    judge: Held  # evaluate.reward_model (a RewardModel): the judge of rewards and win rates
    device: torch.device
    data_loading: dict[str, Any] | None = None  # a real dataset's load stats per file (harness.data.prepare)
    sandbox: SandboxConfig | None = None  # the sandbox world the suite uses, if any
    reward_key: Any = None  # what identifies the judge beyond its name (the gold reward's weights)
    # a tuned suite's validation prompts (harness.tuning): disjoint from eval_prompts and training data
    validation_prompts: list[str] | None = None
    _validation: World | None = None
    _baseline: Baseline | None = None
    _fingerprint: dict[str, Any] | None = None
    _data: dict[str, TrainData] = field(default_factory=dict)
    _reference: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def start_model(self) -> torch.nn.Module:
        return self.start.get()

    @property
    def reward(self) -> RewardModel:
        return self.judge.get()

    def baseline(self, suite: Suite) -> Baseline:
        """The starting model's samples and their rewards, from `$HARNESS_CACHE/baselines/` or
        generated once and stored there, so every worker of a suite measures against the same."""
        if self._baseline is None:
            chosen = chosen_from_file(self.files.get("eval_pairs"), self.eval_prompts)
            key = content_hash({
                "model": folder_fingerprint(self.start_path), "prompts": self.eval_prompts, "chosen": chosen,
                "evaluate": baseline_settings(suite.evaluate), "reward": self.reward_key,
            })
            path = cache_root() / "baselines" / f"{key}.json"
            if path.exists():
                self._baseline = Baseline.from_json(json.loads(path.read_text()))
            else:
                self._baseline = make_baseline(self.start_model, self.tokenizer, self.eval_prompts, self.reward,
                                               suite.evaluate, chosen=chosen, progress="start: baseline")
                _write_json_atomically(path, self._baseline.to_json())
        return self._baseline

    def on(self, prompts: str) -> World:
        """This world evaluating on the test prompts (itself) or the validation prompts (a copy
        with its own baseline, sharing the loaded data and reference log-probs)."""
        if prompts == TEST:
            return self
        if self.validation_prompts is None:  # planned only for suites with a tune: section
            raise HarnessError("validation prompts are drawn for suites with a tune: section only")
        if self._validation is None:
            self._validation = replace(self, eval_prompts=self.validation_prompts, validation_prompts=None,
                                       _baseline=None, _fingerprint=None)
        return self._validation

    def fingerprint(self) -> dict[str, Any]:
        """What shaped every run of the suite (harness.fingerprint), hashed once per suite."""
        if self._fingerprint is None:
            self._fingerprint = world_fingerprint(
                start_model=self.start_model, tokenizer=self.tokenizer, files=self.files,
                eval_prompts=self.eval_prompts, sandbox=self.sandbox.key() if self.sandbox else None,
                device=self.device)
        return self._fingerprint

    def rows(self, shape: str) -> list[dict]:
        path = self.files.get(shape)
        if path is None or not path.exists():
            raise HarnessError(f"the dataset has no {shape!r} data ({path or 'no file'}); pick methods that train "
                               "on what it has (a real dataset gives pairs and unpaired rows, sft and sessions "
                               "only when it has their columns)")
        return read_jsonl(path)

    def data(self, shape: str) -> TrainData:
        """The tokenized training data of one shape, loaded once per suite."""
        if shape not in self._data:
            self._data[shape] = TOKENIZE[shape](self.tokenizer, self.rows(shape), self.max_length)
        return self._data[shape]

    def reference_sums(self, shape: str) -> torch.Tensor:
        """The start model's summed log-probs of that data, from the disk cache."""
        if shape not in self._reference:
            key = folder_fingerprint(self.start_path)
            self._reference[shape] = cached_reference_sums(self.start_model, key, self.data(shape), self.tokenizer.pad_token_id,
                                                          packing=self.packing)
        return self._reference[shape]


def _write_json_atomically(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


@dataclass
class RunOutcome:
    spec: RunSpec
    status: str  # "ok", "stored" (found, not re-run), "failed" or "lost" (lease taken over; nothing written)
    error: str = ""
    seconds: float = 0.0


@dataclass
class SuiteOutcome:
    runs: list[RunOutcome] = field(default_factory=list)

    @property
    def failed(self) -> list[RunOutcome]:
        return [r for r in self.runs if r.status == "failed"]

    def report_failed(self) -> None:
        """One line per failed run on stderr, where a command's errors go (`harness run` and
        `harness rank` alike), so that a script reading the leaderboard from stdout never reads them."""
        for run in self.failed:
            print(f"  failed: {run.spec.label()} ({run.spec.run_id}): {run.error}", file=sys.stderr)


# On CPU, models this small do not gain from intra-op threads, and on a shared machine a second
# thread makes every small op wait for the slower core (measured here: 10 DPO steps of the
# sandbox model took 1.5 s on one thread and 6.2 s on two while another process was busy).
TINY_MODEL_PARAMETERS = 20_000_000


def use_one_thread_for_tiny_models(device: torch.device, parameters: int) -> None:
    """One torch thread for sandbox-sized models on CPU, unless the user chose (OMP_NUM_THREADS)."""
    if device.type == "cpu" and parameters < TINY_MODEL_PARAMETERS and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)


def prepare_world(suite: Suite, model: str | None = None) -> World:
    """The start model (`model`, default the suite's first start), the data and the reward model
    of a suite: the sandbox's, or real ones (a local folder or Hub id for `model:` and
    `evaluate.reward_model`, a local file, folder or Hub id for `dataset:`), which may be mixed."""
    model = model or suite.model
    sandbox, config = _built_sandbox(suite) if _uses_sandbox(suite) else (None, SandboxConfig())
    device = pick_device()
    start_path = resolve_model_path(model, sandbox.start_dirs() if sandbox else None, where=f"{suite.path}: model")
    tokenizer = load_tokenizer(start_path, where=f"{suite.path}: model")
    data_loading = None
    validation = None
    if suite.dataset == SANDBOX:
        files = {shape: sandbox.data(name) for shape, name in SANDBOX_TRAIN_FILES.items()}
        files["eval_pairs"] = sandbox.data("pairs_eval")
        prompts = [r["prompt"] for r in read_jsonl(sandbox.data("eval_prompts"))]
        if suite.tune:
            validation = sandbox_validation_prompts(sandbox, config, _validation_count(suite))
    else:
        prepared = prepare_dataset(suite.dataset, suite.data, tokenizer, folder_fingerprint(start_path),
                                   suite.train.max_length, where=str(suite.path))
        files, prompts, data_loading = prepared.files, prepared.prompts, prepared.stats
        if suite.tune:
            validation = prepared.validation_prompts(suite.evaluate.prompts, _validation_count(suite),
                                                     where=suite.where("tune.validation_prompts"))
    if validation is not None:
        check_disjoint(validation, prompts[: suite.evaluate.prompts], _training_prompts(files),
                       where=f"{suite.where('tune')}: tune")
    start = Held(lambda: load_frozen(start_path, device))
    use_one_thread_for_tiny_models(device, sum(p.numel() for p in start.get().parameters()))
    judge = Held(lambda: load_reward_model(
        suite.evaluate.reward_model, length_weight=config.length_weight, fluency_weight=config.fluency_weight,
        device=device, batch_size=suite.evaluate.reward_batch_size, where=f"{suite.path}: evaluate.reward_model"))
    # a reward model that cannot load, or cannot read the data's conversations, is found before the first run
    check_reads_conversations(judge.get(), prompts, where=f"{suite.path}: evaluate.reward_model")
    return World(
        start_path=start_path, tokenizer=tokenizer,
        start=start, files=files,
        max_length=suite.train.max_length, packing=suite.train.packing,
        eval_prompts=prompts[: suite.evaluate.prompts],
        judge=judge,
        device=device, data_loading=data_loading, sandbox=config if sandbox else None,
        reward_key=[config.length_weight, config.fluency_weight] if suite.evaluate.reward_model == "gold" else None,
        validation_prompts=validation,
    )


def _validation_count(suite: Suite) -> int:
    return suite.tune.validation_prompts or suite.evaluate.prompts


def _training_prompts(files: dict[str, Path]) -> set[str]:
    """Every prompt the methods may train on (each training file's prompt column)."""
    return {prompt_key(row["prompt"]) for shape in SANDBOX_TRAIN_FILES if shape in files and files[shape].exists()
            for row in read_jsonl(files[shape])}


def _uses_sandbox(suite: Suite) -> bool:
    """Whether the suite's model or data come from the sandbox (a real dataset with the sandbox's
    gold judge is refused by the suite's own checks)."""
    return suite.dataset == SANDBOX or any(m in SANDBOX_MODELS for m in suite.start_models)


def _built_sandbox(suite: Suite) -> tuple[Sandbox, SandboxConfig]:
    config = SandboxConfig.from_dict(suite.sandbox, str(suite.path))
    if is_main():  # under a multi-process launch the main process builds, the others then read
        sandbox, _ = load_or_build_sandbox(config)
    barrier()
    if not is_main():
        sandbox, _ = load_or_build_sandbox(config, verbose=False)
    return sandbox, config


def run_suite(suite: Suite, results_root: Path, *, log=print, shard: tuple[int, int] | None = None,
              run_ids: list[str] | None = None, wait_for_shared: Callable[..., None] | None = None) -> SuiteOutcome:
    """Run every planned run of `suite` that is not stored under `results_root` yet: all of them,
    shard (k, n) of the plan, or the given `run_ids`. With `wait_for_shared`, this is a worker of
    a fan-out: before its first run it calls `wait_for_shared(suite, log=log)`, which waits for
    `harness prepare` to have built what runs share (harness.prepared.require_prepared, given by
    the caller: the precompute stage sits above the runner), and never builds it itself."""
    load_suite_plugins(suite)
    specs = _selected(plan_suite(suite), shard, run_ids, suite)
    store = ResultStore(results_root, suite.name)
    part = f" (shard {shard[0]}/{shard[1]})" if shard else ""
    return run_specs(suite, specs, store, WorldOnce(suite, wait_for_shared, log), log=log, what=f"{suite.name}{part}")


class WorldOnce:
    """The world of one starting model (default the suite's first), prepared on first use only
    (nothing is loaded when every run is stored); asking for another start replaces it, so one
    start model is held at a time. A fan-out worker's first call waits for `wait_for_shared`."""

    def __init__(self, suite: Suite, wait_for_shared: Callable[..., None] | None = None, log=print):
        self.suite, self.wait_for_shared, self.log, self._world, self._model = suite, wait_for_shared, log, None, None

    def __call__(self, model: str | None = None) -> World:
        model = model or self.suite.model
        if self._world is None or self._model != model:
            if self.wait_for_shared is not None and self._world is None:
                self.wait_for_shared(self.suite, log=self.log)
            self._world, self._model = None, model
            self._world = prepare_world(self.suite, model)
        return self._world


def run_specs(suite: Suite, specs: list[RunSpec], store: ResultStore, world: WorldOnce, *, log=print,
              what: str | None = None, announce: bool = True) -> SuiteOutcome:
    """Run each of `specs` not stored in `store` yet, claiming each with a lock first (a lease)."""
    todo = [s for s in specs if not store.has_result(s.run_id)]
    if announce and is_main():  # once, not once per process of a multi-process launch
        log(f"{what or suite.name}: {len(specs)} runs planned, {len(specs) - len(todo)} stored, {len(todo)} to run")
    outcome = SuiteOutcome([RunOutcome(s, "stored") for s in specs if s not in todo])
    if not todo:
        return outcome
    try:
        for model in dict.fromkeys(s.model for s in todo):  # one world per starting model, in plan order
            runs = [s for s in todo if s.model == model]
            for spec in runs:  # every run's data and needs, before the first run from this start
                check_trainable(spec, suite, world(model))
            if is_main():  # the process that evaluates
                prepare_backend(world(model).start_model, world(model).tokenizer, suite.evaluate.backend)
            _run_all(runs, suite, world(model), store, outcome, log=log)
        return outcome
    finally:
        release_engines()  # the suite's vLLM engines (one per model shape), if it started any


def _run_all(todo: list[RunSpec], suite: Suite, world: World, store: ResultStore, outcome: SuiteOutcome, *,
             log=print) -> SuiteOutcome:
    by_id = {s.run_id: s for s in todo}
    if launched_distributed():
        # One data-parallel job trains each run with all its processes: the main process's list
        # decides, and no locks are taken (one distributed job per results folder at a time).
        for run_id in broadcast(list(by_id)):
            outcome.runs.append(run_one(by_id[run_id], suite, world, store, log=log))
        return outcome
    # Each run is claimed with a lock file first, so that two processes never train the same run.
    for run_id, lock in store.claim_runs(list(by_id), log=log):
        if lock is None:  # stored by another process meanwhile
            outcome.runs.append(RunOutcome(by_id[run_id], "stored"))
            continue
        with lock:
            outcome.runs.append(run_one(by_id[run_id], suite, world, store, log=log, lease=lock))
    return outcome


def check_trainable(spec: RunSpec, suite: Suite, world: World) -> None:
    """A training run's data holds what its method needs and at least one full batch (else it
    would train zero steps or divide by zero mid-run); HarnessError naming the key to change."""
    if not spec.trains:
        return
    method = _method_run(spec, suite, world, with_reference_cache=False)
    forecast = forecast_phase(ModelShape.of(world.start_model), method.setup)
    if step_amount(forecast.step, suite.budget.kind) > suite.budget.value:
        raise HarnessError(f"{suite.where('budget')}: {suite.budget.kind}={suite.budget.value:g} buys no optimizer "
                           f"step of method {spec.method!r} (one step costs {forecast.step.flops:.3g} FLOPs, "
                           f"{forecast.step.examples:.0f} examples); raise budget.value")
    if method.regime.data:  # the regime reads rows of its own too (SPIN: demonstrations)
        try:
            world.rows(method.regime.data)
        except HarnessError as err:
            raise HarnessError(f"{suite.where('methods')}: method {spec.method!r}: {err}") from None


def _selected(specs: list[RunSpec], shard: tuple[int, int] | None, run_ids: list[str] | None,
              suite: Suite) -> list[RunSpec]:
    """The planned runs of one shard, or those named (unknown ids are bad input: the task was
    planned from another version of the suite)."""
    if run_ids is not None:
        by_id = {s.run_id: s for s in specs}
        unknown = [r for r in run_ids if r not in by_id]
        if unknown:
            raise HarnessError(f"{suite.path}: run {unknown[0]} is not in this suite's plan (the suite or its "
                               "--set values changed since it was submitted); submit it again")
        return [by_id[r] for r in run_ids]
    if shard is not None:
        chosen = set(shard_ids([s.run_id for s in specs], *shard))
        return [s for s in specs if s.run_id in chosen]
    return specs


def run_one(spec: RunSpec, suite: Suite, world: World, store: ResultStore, *, log=print,
            lease: Lease | None = None) -> RunOutcome:
    """Train, evaluate and store one run. The manifest says "running" from the start, so a crash
    leaves a trace; a non-finite loss (or a phase whose budget buys no step) is recorded as a failed run (no parquet) and the suite goes
    on. Under a data-parallel launch every process trains, and only the main one evaluates and
    writes (the barriers keep the helpers in step with it). Under a `lease`, every write (and
    checkpoint save) first checks that the lease is still held: a worker whose run was taken over
    stops, writing nothing."""
    started = time.perf_counter()
    if not is_main():  # a data-parallel helper: train, then leave evaluation to the main process
        return _train_as_helper(spec, suite, world, started)
    try:
        return _run_and_store(spec, suite, world, store, started, log=log, lease=lease)
    except LeaseLost as err:  # another worker holds the run now: leave its manifest and checkpoint alone
        log(f"  {spec.label()}: {err}")
        return RunOutcome(spec, "lost", str(err), time.perf_counter() - started)
    except HarnessError:  # found mid-run (a task's data that cannot be fetched): nothing half-done stays
        _discard_partial_run(spec, store)
        raise
    except OSError as err:  # a full disk, a folder gone read-only: unforeseeable, so cleaned up here
        _discard_partial_run(spec, store)
        detail = f"{err.strerror or err}" + (f" ({err.filename})" if err.filename else "")
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            detail += f": {_full_folder(err, store.root)}"
        raise HarnessFault(f"{spec.label()} ({spec.run_id}): {detail}; nothing of this run was kept (no manifest, "
                           "no checkpoint) and stored runs are intact; fix it and re-run the suite") from None


def _full_folder(err: OSError, results_root: Path) -> str:
    """Which of a run's two destinations is full, and how to give it room: the results folder
    (metrics, samples) or $HARNESS_CACHE (checkpoints, prepared data, reference log-probs); told
    by the failed file's path, else by which has the least room left (a write through an open
    file reports no path)."""
    folders = {"results": (Path(results_root), "free space there or pass --results with a folder that has room"),
               "cache": (cache_root(), "free space there or set HARNESS_CACHE to a folder that has room")}
    named = Path(os.path.abspath(err.filename)) if isinstance(err.filename, (str, os.PathLike)) else None
    deepest_first = sorted(folders, key=lambda k: -len(Path(os.path.abspath(folders[k][0])).parts))
    which = next((k for k in deepest_first
                  if named is not None and named.is_relative_to(os.path.abspath(folders[k][0]))), None)
    if which is None:
        which = min(folders, key=lambda k: _free_bytes(folders[k][0]))
    folder, fix = folders[which]
    what = f"the results folder {folder}" if which == "results" else f"$HARNESS_CACHE ({folder})"
    return f"{what} is full; {fix}"


def _free_bytes(folder: Path) -> float:
    """Free bytes on the disk holding `folder` (its nearest existing parent); inf if unknown."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    try:
        return shutil.disk_usage(existing).free if existing is not None else math.inf
    except OSError:
        return math.inf


def _discard_partial_run(spec: RunSpec, store: ResultStore) -> None:
    """Remove what a run that hit a fault left: its 'running' manifest and its checkpoint (the
    temporary files of a failed write are already gone)."""
    RunCheckpoint(spec.run_id, 0).clear()
    if not store.has_result(spec.run_id):
        try:
            store.manifest_path(spec.run_id).unlink(missing_ok=True)
        except OSError:
            pass  # the folder cannot be written at all: a later claimant treats the manifest as stale


def _run_and_store(spec: RunSpec, suite: Suite, world: World, store: ResultStore, started: float, *, log,
                   lease: Lease | None) -> RunOutcome:
    check = lease.check if lease is not None else (lambda: None)
    world = world.on(spec.prompts)  # a tuning trial reads the validation prompts, never the test ones
    manifest = _manifest(spec, world)
    check()
    store.write_manifest(spec.run_id, {**manifest, "status": "running"})
    try:
        policy, trained = _train(spec, suite, world, guard=check, log=log)
        barrier()
        evaluation = evaluate_policy(
            policy, world.start_model, world.tokenizer, world.eval_prompts, world.baseline(suite),
            world.reward, suite.evaluate, step=trained.accounting.optimizer_steps,
            progress=f"{spec.label()}: evaluating", task_dirs=(suite.path.parent / "tasks",),
        )
        # held-out pairs share prompts with the test set: a trial (validation) does not read them
        implicit = [] if spec.prompts == VALIDATION else _implicit_reward_rows(
            spec, suite, world, policy, trained.accounting.optimizer_steps)
        world.judge.release()  # scored: the next run trains without it
    except (RunFailed, JudgeFailed) as err:
        check()
        store.write_manifest(spec.run_id, {**manifest, "status": "failed", "error": str(err)})
        RunCheckpoint(spec.run_id, 0).clear()
        log(f"  {spec.label()}: FAILED: {err}")
        return RunOutcome(spec, "failed", str(err), time.perf_counter() - started)
    identity = _identity_columns(spec)
    accounting = _accounting_columns(trained, evaluation.seconds, world.device)
    rows = [{**r, "split": VALIDATION} if spec.prompts == VALIDATION and r["split"] == "eval" else r
            for r in evaluation.rows]
    metrics = _rows_frame(rows + implicit + _curve_rows(trained, spec), identity, accounting)
    samples = pd.DataFrame(evaluation.samples).assign(run_id=spec.run_id)
    seconds = time.perf_counter() - started
    # gradient checkpointing's recomputed forward: hardware work outside the budget and MFU
    recomputed = trained.accounting.flops_recomputed
    store.write_run(spec.run_id, metrics, samples, {**manifest, "status": "ok", "seconds": seconds, "accounting": accounting,
                                                    "flops_recomputed": recomputed}, lease=lease)
    RunCheckpoint(spec.run_id, 0).clear()
    log(f"  {spec.label()}: done in {seconds:.1f} s ({trained.accounting.optimizer_steps} steps)")
    barrier()
    return RunOutcome(spec, "ok", seconds=seconds)


def _train_as_helper(spec: RunSpec, suite: Suite, world: World, started: float) -> RunOutcome:
    try:
        _train(spec, suite, world)
    except RunFailed as err:  # every process sees it (the check is collective)
        return RunOutcome(spec, "failed", str(err), time.perf_counter() - started)
    barrier()  # the main process's evaluation
    barrier()  # and its write
    return RunOutcome(spec, "ok", seconds=time.perf_counter() - started)


@dataclass
class MethodRun:
    """A planned run resolved against the world: its loss, regime, data and standard setup."""

    loss: Any
    regime: RegimeSpec
    data_shape: str  # the world's data the loss trains on ("paired", "unpaired", "sessions")
    setup: TrainSetup


def _method_run(spec: RunSpec, suite: Suite, world: World, *, with_reference_cache: bool = True,
                log=None) -> MethodRun:
    loss = get_loss(spec.method)
    regime = REGIMES.get(loss.regime)
    shape = train_data_shape(loss)
    data = world.data(shape)
    missing = unmet_needs(loss.needs, data)
    if missing:
        raise HarnessError(f"{suite.path}: method {spec.method!r} needs {missing[0]!r}, which the "
                           f"{shape} data of dataset {suite.dataset!r} does not provide")
    if len(data) < spec.train.batch_size:
        raise HarnessError(f"{suite.path}: train.batch_size = {spec.train.batch_size} is more than the {len(data)} "
                           f"{shape} examples of dataset {suite.dataset!r} (method {spec.method!r}); lower "
                           "train.batch_size or give more data")
    # A regime that makes its own pairs from rows of its own (SPIN) never reads the start model's
    # log-probs of `data`: computing them would be wasted.
    cache = with_reference_cache and loss.uses_reference and regime.data is None
    setup = TrainSetup(
        loss=loss, hparams=dict(spec.loss_hparams), data=data, budget=spec.budget, config=spec.train,
        seed=spec.seed, pad_id=world.tokenizer.pad_token_id,
        # the start model as the reference only where a step reads it (a cached reference needs none)
        reference=world.start_model if loss.uses_reference and (
            not cache or regime.name != "standard" or reference_runs_live(loss.needs, False)) else None,
        cached_reference=world.reference_sums(shape) if cache else None,
        progress=f"{spec.label()}: training", log=log,
    )
    return MethodRun(loss, regime, shape, setup)


def _train(spec: RunSpec, suite: Suite, world: World, *, guard=None, log=None) -> tuple[torch.nn.Module, TrainResult]:
    """The trained policy (the start model itself for the start run) and its accounting. `guard`
    is called before every checkpoint save (a lease check: a worker that lost the run stops);
    `log` gets each training phase's budget forecast before it trains (its expected optimizer
    steps and what each costs)."""
    if not spec.trains:
        return world.start_model, TrainResult(Accounting(), seconds=0.0)
    method = _method_run(spec, suite, world, log=log)
    train = spec.train
    policy = load_policy(world.start_path, world.device, train.precision, quantize=train.quantize)
    setup = method.setup
    if train.peft.enabled:
        policy = add_adapters(policy, train.peft, gradient_checkpointing=train.gradient_checkpointing)
        if setup.reference is not None and method.regime.name == "standard":
            setup = replace(setup, reference=AdaptersDisabled(policy))  # the base: no copy
    standard = method.regime.name == "standard"
    if standard and (setup.reference is None or isinstance(setup.reference, AdaptersDisabled)):
        world.start.release()  # no step reads it: no frozen copy beside the policy while it trains
    run = RegimeRun(
        policy=policy, start_model=None if standard else world.start_model,
        setup=setup, tokenizer=world.tokenizer,
        rows=world.rows(method.regime.data) if method.regime.data else None,
        checkpoint=RunCheckpoint(spec.run_id, spec.train.checkpoint_every, guard=guard),
        generation_backend=suite.evaluate.backend,
    )
    run.setup, trackers = with_trackers(setup, train.report_to, suite.name, f"{spec.label()}-{spec.run_id}",
                                        {"run_id": spec.run_id, **spec.identity()})
    try:
        trained = run_regime(method.regime.name, run, dict(spec.regime_hparams))
    finally:
        trackers.finish()
    return merged(policy), trained  # evaluation (and vLLM) take the adapters merged into the weights


def estimate_plan(suite: Suite, specs: list[RunSpec]) -> dict[str, tuple[int, float]]:
    """Expected optimizer steps and training seconds per training run, from the data's lengths and
    a measured FLOP/s of one forward-backward pass; trains nothing. Empty when the sandbox is
    not built yet (building it would train the sandbox's model)."""
    if plan_estimate_blocker(suite) is not None:
        return {}
    out = {}
    for model in dict.fromkeys(s.model for s in specs):
        world = prepare_world(suite, model)
        shape = ModelShape.of(world.start_model)
        flops_per_second = measure_train_flops_per_second(world)
        for spec in specs:
            if spec.trains and spec.model == model:
                forecast = forecast_phase(shape, _method_run(spec, suite, world, with_reference_cache=False).setup)
                out[spec.run_id] = (forecast.steps, forecast.flops / flops_per_second)
    return out


def plan_estimate_blocker(suite: Suite) -> str | None:
    """Why steps and times cannot be estimated without building or downloading anything (plan
    never does either), or None when they can."""
    config = SandboxConfig.from_dict(suite.sandbox, str(suite.path))
    if _uses_sandbox(suite) and not (cache_root() / "sandbox" / config.key()).exists():
        return "steps and times need the sandbox's data: `harness sandbox build` first (plan trains nothing)"
    missing = [m for m in suite.start_models if not cached_locally(m)]
    if missing:
        return (f"model shape unknown until the model is cached: {', '.join(missing)} (plan downloads nothing; "
                "`harness run` fetches it, or huggingface-cli download)")
    if suite.evaluate.reward_model != "gold" and not cached_locally(suite.evaluate.reward_model):
        return f"reward model {suite.evaluate.reward_model} is not cached; steps and times need it loaded"
    return None


def measure_train_flops_per_second(world: World, repeats: int = 3) -> float:
    """Achieved FLOP/s of a forward and backward pass of the start model on one batch of pairs,
    computed as training computes it (completion log-probs; packed rows unless train.packing is off)."""
    model = load_policy(world.start_path, world.device)
    data = world.data("paired")
    batch = data.collate(list(range(min(16, len(data)))), world.tokenizer.pad_token_id).to(world.device)
    flops = ModelShape.of(model).train_flops(batch.lengths())
    timings = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        logps = completion_token_logps(model, batch.input_ids, batch.attention_mask, batch.completion_mask,
                                       packing=world.packing)
        logps.sum().backward()
        timings.append(time.perf_counter() - started)
    return flops / sorted(timings[1:])[len(timings[1:]) // 2]


def _implicit_reward_rows(spec: RunSpec, suite: Suite, world: World, policy, step: int) -> list[dict[str, Any]]:
    """Held-out preference accuracy of the method's implicit reward, for methods that define one."""
    if not spec.trains or "eval_pairs" not in world.files or not world.files["eval_pairs"].exists():
        return []
    loss = get_loss(spec.method)
    if not defines_implicit_reward(loss):
        return []
    pairs = paired_from_rows(world.tokenizer, read_jsonl(world.files["eval_pairs"]), world.max_length)
    accuracies = implicit_reward_accuracies(policy, world.start_model, loss, dict(spec.loss_hparams), pairs,
                                            world.tokenizer.pad_token_id)
    if accuracies is None:
        return []
    est = bootstrap_mean(accuracies, resamples=suite.evaluate.bootstrap, seed=suite.evaluate.seed)
    return [{"evaluator": "implicit_reward", "metric": "preference_accuracy", "split": "eval", "step": step,
             "value": est.value, "stderr": est.stderr, "ci_low": est.ci_low, "ci_high": est.ci_high,
             "level": est.stated_level, "n": est.n, "higher_is_better": True}]


def _identity_columns(spec: RunSpec) -> dict[str, Any]:
    values = {
        "schema_version": SCHEMA_VERSION, "run_id": spec.run_id, "suite": spec.suite,
        "method": spec.method, "method_version": spec.method_version, "hparams": spec.hparams_json(),
        "seed": spec.seed, "model": spec.model, "dataset": spec.dataset,
        "budget_kind": spec.budget.kind if spec.trains else "none",
        "budget_value": float(spec.budget.value) if spec.trains else 0.0,
    }
    assert set(values) == set(IDENTITY_COLUMNS)
    return values


def _accounting_columns(trained: TrainResult, eval_seconds: float, device: torch.device) -> dict[str, Any]:
    a = trained.accounting
    values = {
        "policy_tokens": a.policy_tokens, "reference_tokens": a.reference_tokens,
        "generated_tokens": a.generated_tokens, "flops_policy": a.flops_policy,
        "flops_reference": a.flops_reference, "flops_generation": a.flops_generation,
        "flops_total": a.flops_total, "optimizer_steps": a.optimizer_steps,
        "examples_seen": a.examples_seen, "train_seconds": trained.seconds,
        "eval_seconds": eval_seconds, "peak_memory_mb": trained.peak_memory_mb,
        "mfu": mfu(a.flops_total, trained.seconds, device),
    }
    assert set(values) == set(ACCOUNTING_COLUMNS)
    return values


def _curve_rows(trained: TrainResult, spec: RunSpec) -> list[dict[str, Any]]:
    rows = []
    for point in trained.curve:
        for metric, value in point.items():
            if metric != "step":
                rows.append({
                    "evaluator": "train", "metric": metric, "split": "train", "step": point["step"],
                    "value": float(value), "stderr": math.nan, "ci_low": math.nan, "ci_high": math.nan,
                    "level": math.nan, "n": spec.train.batch_size, "higher_is_better": None,
                })
    return rows


def _rows_frame(rows: list[dict[str, Any]], identity: dict[str, Any], accounting: dict[str, Any]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    for name, value in {**identity, **accounting}.items():
        frame[name] = value
    return frame


def _manifest(spec: RunSpec, world: World) -> dict[str, Any]:
    return {
        "run_id": spec.run_id, "suite": spec.suite, "label": spec.label(), "spec": spec.identity(),
        "schema_version": SCHEMA_VERSION,
        "method": method_card(get_loss(spec.method)) if spec.trains else None,  # for report cards
        "versions": {"harness": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "git_sha": _git_sha(), "hardware": _hardware(world.device),
        "truncated_sequences": {shape: data.truncated for shape, data in world._data.items()},
        "sampling": _sampling_record(spec, world), "fingerprint": world.fingerprint(),
        "training": _training_record(spec, world.device),
        "data_loading": world.data_loading, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **({"lm_eval": _lm_eval_record(spec, world)} if spec.evaluate.lm_eval_tasks else {}),
    }


def _lm_eval_record(spec: RunSpec, world: World) -> dict[str, Any]:
    """How lm-eval prompted the model: the suite's setting and what it resolved to."""
    from harness.evaluate.lmeval import uses_chat_template

    chat = uses_chat_template(spec.evaluate.lm_eval_chat_template, world.tokenizer)
    return {"chat_template_setting": spec.evaluate.lm_eval_chat_template, "apply_chat_template": chat,
            "fewshot_as_multiturn": chat}


def _training_record(spec: RunSpec, device: torch.device) -> dict[str, Any] | None:
    """How the run trained: full fine-tune, LoRA or QLoRA, the precision on this device (auto
    resolved) and gradient checkpointing; None for the start run."""
    if not spec.trains:
        return None
    train = spec.train
    kind = "full" if not train.peft.enabled else "qlora" if train.quantize == "nf4" else "lora"
    return {"fine_tuning": kind, "precision": resolved_precision(train.precision, device.type),
            "gradient_checkpointing": train.gradient_checkpointing,
            "peft": asdict(train.peft) if train.peft.enabled else None, "quantize": train.quantize,
            "distributed": _distributed_record(train)}


def _distributed_record(train) -> dict[str, Any] | None:
    """The processes the run trained over (this launch's), and how: None for one process."""
    processes = rank_and_size()[1]
    if processes == 1:
        return None
    # "accelerate": a launch without train.distributed (DDP, or the FSDP of `accelerate config`)
    return {"strategy": "fsdp" if train.distributed.strategy == "fsdp" else "accelerate", "processes": processes}


def _sampling_record(spec: RunSpec, world: World) -> dict[str, Any]:
    """How every sample behind the run was drawn: the evaluation's samples (policy and start
    baseline), the sandbox's data, and a regime's own generation (SPIN's gen_* settings)."""
    record: dict[str, Any] = {"evaluation": {**sampling_fields(spec.evaluate), "seed": spec.evaluate.seed,
                                             "backend": spec.evaluate.backend}}
    if world.sandbox is not None and spec.dataset == SANDBOX:
        record["sandbox_data"] = sampling_fields(world.sandbox.sampling(world.sandbox.max_new_tokens))
    generation = {k: v for k, v in spec.regime_hparams if k.startswith("gen_")}
    if generation:
        record["training_generation"] = generation
    return record


def _git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _hardware(device: torch.device) -> dict[str, Any]:
    info = {"device": device.type, "cpus": torch.get_num_threads(), "platform": platform.platform()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
