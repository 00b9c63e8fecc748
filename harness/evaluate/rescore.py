"""Rescoring stored runs: recompute every sample-based metric from `<run_id>.samples.parquet`,
without training or generating (`harness evaluate SUITE --rescore [--reward-model X]`).

With a reward model (a registered name, a folder or a Hub id) the policy's completions, the
start model's baseline completions and the dataset's chosen responses are scored again by it
first; without one the stored rewards are kept and only the metrics are recomputed (after an
upgrade that adds or fixes a metric). Each run's metrics file is rewritten atomically through
ResultStore.write_run, under the run's lock: the identity and accounting columns and every row
that does not come from the samples (training curves, lm-eval, implicit-reward accuracy) are kept;
the eval rows of the sample-based evaluators are replaced. The manifest records the rescoring.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from harness.data.tokenize import prompt_key
from harness.errors import HarnessError
from harness.evaluate.policy import metric_rows, rescored, scored_from_samples
from harness.evaluate.registry import EVALUATORS
from harness.evaluate.reward_models import RewardModel, load_reward_model, reward_model_name
from harness.results import ResultStore
from harness.results.store import StagedRun, with_levels
from harness.results.schema import ACCOUNTING_COLUMNS, IDENTITY_COLUMNS, samples_schema
from harness.plan import VALIDATION
from harness.suite import EvalConfig

# Sample columns added after the first schema, with what an older file stands for.
_LATER_SAMPLE_COLUMNS: dict[str, Any] = {
    "token_logps": None, "entropy": math.nan, "chosen_completion": None, "chosen_reward": math.nan,
    "chosen_outcome": math.nan, "reward_model": "gold", "messages": None, "truncated": None,
    "judge": None, "judge_baseline": None, "judge_verdicts": None, "judge_outcome": math.nan, "judge_tokens": 0,
    "judge_seconds": 0.0,
}


class MemoJudge:
    """A reward model that scores each distinct (prompt, completion) once: the start model's
    baseline completions are the same in every run of a suite."""

    def __init__(self, judge: RewardModel):
        self.judge = judge
        self.name = reward_model_name(judge)
        self._scores: dict[tuple[str, str], float] = {}

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        keys = [(prompt_key(p), c) for p, c in zip(prompts, completions)]
        todo = {k: (p, c) for k, p, c in zip(keys, prompts, completions) if k not in self._scores}
        if todo:
            values = self.judge.score([p for p, _ in todo.values()], [c for _, c in todo.values()])
            self._scores.update(zip(todo, map(float, values)))
        return np.asarray([self._scores[k] for k in keys], dtype=np.float64)


def _read(path: Path) -> pd.DataFrame:
    try:
        return pq.read_table(path).to_pandas()
    except (OSError, pa.ArrowInvalid) as err:
        raise HarnessError(f"{path}: unreadable parquet ({err})") from None


def _complete_samples(samples: pd.DataFrame, run_id: str, manifest: dict[str, Any] | None = None) -> pd.DataFrame:
    """Samples with every column of the current schema (older files lack the later ones)."""
    samples = samples.copy()
    if "truncated" not in samples.columns:
        samples = recount_without_stop_token(samples, manifest)
    for name, value in _LATER_SAMPLE_COLUMNS.items():
        if name not in samples.columns:
            samples[name] = [value] * len(samples)
    if "run_id" not in samples.columns:
        samples["run_id"] = run_id
    return samples[samples_schema().names]


def recount_without_stop_token(samples: pd.DataFrame, manifest: dict[str, Any] | None) -> pd.DataFrame:
    """A table stored before the `truncated` column, whose completion_tokens counted the stop
    token, with the length a reader counts (harness.generation.Completion.content_tokens) and
    `truncated` filled in.

    A sample shorter than max_new_tokens can only have ended by its stop token: one token less.
    One at the limit either ended with its last token or was cut there. On the sandbox, whose
    tokenizer is word-level, the text tells which: it has one word per content token. Where the
    words match neither, and for any other tokenizer, the sample counts as cut, the common case
    at the limit (85 % of the published sandbox suites'). The text drops special tokens (<unk>,
    <pad>, <bos>), so a cut sample that emitted one reads as ended: about 0.03 % of the published
    samples below the limit drop one, so a handful of the 16,571 at it may be off by one token."""
    spec = (manifest or {}).get("spec") or {}
    limit = int((spec.get("evaluate") or {}).get("max_new_tokens", EvalConfig().max_new_tokens))
    counted = samples["completion_tokens"].to_numpy(np.int64)
    at_limit = counted >= limit
    if str(spec.get("model", "")).split(":")[0] == "sandbox":
        words = samples["completion"].map(lambda text: len(str(text).split())).to_numpy(np.int64)
        ended_at_limit = at_limit & (words == counted - 1)
    else:
        ended_at_limit = np.zeros(len(samples), dtype=bool)
    truncated = at_limit & ~ended_at_limit
    out = samples.copy()
    out["truncated"] = truncated
    out["completion_tokens"] = counted - (~truncated).astype(np.int64)
    return out


def _eval_config(manifest: dict[str, Any] | None) -> EvalConfig:
    given = ((manifest or {}).get("spec") or {}).get("evaluate") or {}
    defaults = EvalConfig()
    return EvalConfig(bootstrap=int(given.get("bootstrap", defaults.bootstrap)),
                      seed=int(given.get("seed", defaults.seed)),
                      reward_model=str(given.get("reward_model", defaults.reward_model)))


def _gold_weights(manifest: dict[str, Any] | None) -> tuple[float, float]:
    """The run's sandbox gold-reward terms (length_weight, fluency_weight), 0 when unset."""
    sandbox = ((manifest or {}).get("spec") or {}).get("sandbox") or {}
    return float(sandbox.get("length_weight", 0.0)), float(sandbox.get("fluency_weight", 0.0))


def rescore_run(store: ResultStore, run_id: str, judge: RewardModel | None) -> int:
    """Rescore one stored run (see the module docstring); returns the number of metric rows written."""
    staged, rows = stage_rescore(store, run_id, judge)
    staged.commit()
    return rows


def stage_rescore(store: ResultStore, run_id: str, judge: RewardModel | None) -> tuple[StagedRun, int]:
    """One run's rescored files, written aside (harness.results.store.StagedRun), and the number
    of metric rows; nothing stored changes until the caller commits."""
    metrics = with_levels(_read(store.metrics_path(run_id)))
    manifest = store.read_manifest(run_id) or {}
    samples = _complete_samples(_read(store.samples_path(run_id)), run_id, manifest)
    config = _eval_config(manifest)
    if judge is not None:
        samples = rescored(samples, judge)
    scored = scored_from_samples(samples, bootstrap=config.bootstrap, seed=config.seed)
    sample_based = metrics["split"].isin(["eval", VALIDATION]) & metrics["evaluator"].isin(EVALUATORS.names())
    old_steps = metrics.loc[sample_based, "step"]
    step = int(old_steps.max()) if len(old_steps) else int(metrics["optimizer_steps"].iloc[0])
    fresh = pd.DataFrame(metric_rows(scored, step))
    # A tuning trial's samples are of the validation prompts: its rows keep that split.
    fresh["split"] = metrics.loc[sample_based, "split"].iloc[0] if sample_based.any() else "eval"
    for column in (*IDENTITY_COLUMNS, *ACCOUNTING_COLUMNS):
        fresh[column] = metrics[column].iloc[0]
    kept = metrics[~sample_based]
    out = pd.concat([kept, fresh[metrics.columns]], ignore_index=True) if len(kept) else fresh[metrics.columns]
    history = list(manifest.get("rescored", []))
    history.append({"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "reward_model": scored.reward_model,
                    "rescored_rewards": judge is not None})
    return store.stage_run(run_id, out, samples, {**manifest, "rescored": history}), len(fresh)


def rescore_suite(results_root: Path, suite: str, *, reward_model: str | None = None,
                  log: Callable[[str], Any] = print) -> int:
    """Rescore every stored run of `suite` that has a samples table, those of its tuning folders
    too (harness.results.ResultStore.nested); returns how many were.

    All or nothing, so that a suite is never judged by two reward models: every run is claimed
    (its lock) and rescored into files written aside first; only when every run has succeeded are
    they renamed in. A failure part-way deletes what was written aside and changes nothing."""
    store = ResultStore(results_root, suite)
    stores = [store, *store.nested()] if store.folder.is_dir() else [store]
    for each in stores:
        each.check_intact()
    if not store.run_ids():
        raise HarnessError(f"{store.folder}: no runs stored; run `harness run suites/{suite}.yaml` first")
    todo = []
    for each in stores:
        for run_id in each.run_ids():
            if each.samples_path(run_id).exists():
                todo.append((each, run_id))
            else:
                log(f"  {run_id}: no samples table stored; skipped")
    judges: dict[tuple[str, float, float], MemoJudge] = {}
    locks, staged = [], []
    try:
        for each, run_id in todo:
            lock = each.try_lock(run_id)
            if lock is None:
                raise HarnessError(f"{each.manifest_path(run_id)}: being written by another process; nothing was "
                                   "rescored, try again when it has finished")
            locks.append(lock)
        for each, run_id in todo:
            manifest = each.read_manifest(run_id)
            judge = None
            if reward_model is not None:
                key = (reward_model, *_gold_weights(manifest))
                if key not in judges:
                    judges[key] = MemoJudge(load_reward_model(reward_model, length_weight=key[1],
                                                              fluency_weight=key[2], where="--reward-model"))
                judge = judges[key]
            run_staged, rows = stage_rescore(each, run_id, judge)
            staged.append(run_staged)
            where = each.folder.relative_to(store.folder).as_posix()
            log(f"  {'' if where == '.' else where + '/'}{run_id} {(manifest or {}).get('label', '?')}: "
                f"{rows} metric rows recomputed" + (f" with reward model {reward_model!r}" if reward_model else ""))
        for run_staged in staged:  # renames only: every file is already written
            run_staged.commit()
    finally:
        for run_staged in staged:
            run_staged.discard()  # after a commit there is nothing left to discard
        for lock in locks:
            lock.release()
    return len(todo)
