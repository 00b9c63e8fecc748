"""lm-eval tasks on the in-memory policy: what a method may cost in knowledge and fluency.

    evaluate:
      lm_eval_tasks: [sandbox_grammar_mc, sandbox_grammar_ppl, arc_easy]
      lm_eval_limit: 200        # documents per task (0: all)
      lm_eval_fewshot: -1       # -1: each task's own default
      lm_eval_batch_size: 8

A task name may end in ":N" to give that task its own few-shot count (`arc_challenge:25`), as
the Open LLM Leaderboard does; the others take `lm_eval_fewshot`. Tasks are evaluated in one
lm-eval call per distinct count, and their results merged.

A task is named by an lm-eval registry name (`arc_easy`, `mmlu`, ...: needs the Hub unless the
datasets are cached), by the `task:` name of a YAML in `suites/tasks/` (the suite file's folder's
`tasks/`, then the project's), or by a YAML file's path. The model is wrapped, not reloaded:
lm-eval's HFLM around the policy object, on the policy's device (named explicitly: HFLM's
default is "cuda").

Local data paths. In lm-eval 0.4.x a task's `dataset_kwargs.data_files` (and a relative
`dataset_path`) are resolved against the working directory. Local YAMLs are therefore loaded
here (with lm-eval's own loader, `!function` and `include:` work) and handed to lm-eval as
configs whose data paths have been made absolute against the YAML's folder, so a suite runs the
same from any directory.

Every metric becomes a row: evaluator "lm_eval", metric "<task>/<metric>" (with ":<filter>"
when the filter is not "none"), the stderr lm-eval reports, a 95% CI, n = the documents
evaluated, higher_is_better from the task. The CI:
- a proportion (the task averages the metric by mean and every logged document scored 0 or 1:
  accuracies, the sandbox categories): the Wilson score interval of k of n documents
  (harness.intervals.proportion_interval). It is not symmetric around the value, stays within
  [0, 1], and does not collapse at 0/n or n/n as value ± 1.96·stderr does (that covered 0.26 of
  the time at p = 0.01 with 30 documents). The row's stderr stays lm-eval's (the bootstrap's
  below where lm-eval gives none), so the CI is not value ± 1.96·stderr for these rows;
- other metrics with a stderr from lm-eval: value ± 1.96·stderr. So are proportions whose
  documents were not logged (results without "samples"): their range is not known here, and
  the interval is left unclipped;
- where lm-eval reports no stderr (its perplexities): the stderr and a percentile CI from a
  bootstrap over documents of the task's own aggregation (`evaluate.bootstrap` resamples, at
  most 1000; `evaluate.seed`).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.errors import HarnessError, did_you_mean
from harness.intervals import CONFIDENCE, proportion_interval

PROJECT_TASKS = Path(__file__).resolve().parents[2] / "suites" / "tasks"


def search_dirs(extra: Sequence[Path] = ()) -> tuple[Path, ...]:
    """Where local task YAMLs are looked up: the given folders (a suite passes its folder's
    `tasks/`), then the project's suites/tasks; those that exist, without repeats."""
    out, seen = [], set()
    for d in [*map(Path, extra), PROJECT_TASKS]:
        if d.is_dir() and d.resolve() not in seen:
            seen.add(d.resolve())
            out.append(d)
    return tuple(out)


def local_tasks(dirs: Sequence[Path]) -> dict[str, Path]:
    """task name -> YAML path for every task YAML under `dirs` (earlier folders win)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    found: dict[str, Path] = {}
    for folder in dirs:
        for path in sorted(Path(folder).rglob("*.yaml")):
            try:
                cfg = load_yaml(path, resolve_func=False)
            except Exception:  # noqa: BLE001 - not a task YAML (or a broken one): lm-eval skips it too
                continue
            name = cfg.get("task")
            if isinstance(name, str) and name not in found:
                found[name] = path
    return found


def local_task_config(path: Path) -> dict[str, Any]:
    """The task's config from its YAML, with data paths made absolute against its folder."""
    from lm_eval.tasks._yaml_loader import load_yaml

    path = Path(path).resolve()
    cfg = load_yaml(path, resolve_func=True, recursive=True)
    folder = path.parent
    dataset_path = cfg.get("dataset_path")
    if isinstance(dataset_path, str) and (folder / dataset_path).exists() and not Path(dataset_path).is_absolute():
        cfg["dataset_path"] = str(folder / dataset_path)
    kwargs = dict(cfg.get("dataset_kwargs") or {})
    if "data_files" in kwargs:
        kwargs["data_files"] = _absolute(kwargs["data_files"], folder)
    if "data_dir" in kwargs and isinstance(kwargs["data_dir"], str):
        kwargs["data_dir"] = str(_absolute(kwargs["data_dir"], folder))
    if kwargs:
        cfg["dataset_kwargs"] = kwargs
    cfg.setdefault("metadata", {})
    return cfg


def _absolute(files: Any, folder: Path) -> Any:
    """data_files may be a path, a list of paths or {split: path(s)}; relative ones join `folder`.
    Remote URLs and glob patterns pass through (globs are joined too, which keeps them local)."""
    if isinstance(files, dict):
        return {k: _absolute(v, folder) for k, v in files.items()}
    if isinstance(files, (list, tuple)):
        return [_absolute(v, folder) for v in files]
    if isinstance(files, str) and "://" not in files and not Path(files).is_absolute():
        return str(folder / files)
    return files


def resolve_tasks(names: Sequence[str], dirs: Sequence[Path]) -> tuple[list[Any], bool]:
    """lm-eval task specs for `names` (configs for local YAMLs, names for the registry) and
    whether lm-eval's built-in task index is needed."""
    local = local_tasks(dirs)
    specs: list[Any] = []
    registry = False
    for name in names:
        if name in local:
            specs.append(local_task_config(local[name]))
        elif name.endswith((".yaml", ".yml")):
            path = Path(name)
            candidates = [path] if path.is_absolute() else [Path.cwd() / path, *(d / path for d in dirs)]
            found = next((c for c in candidates if c.is_file()), None)
            if found is None:
                raise HarnessError(f"evaluate.lm_eval_tasks: no such task file {name!r}")
            specs.append(local_task_config(found))
        else:
            specs.append(name)
            registry = True
    return specs, registry


@contextlib.contextmanager
def _preserved_state(model: torch.nn.Module) -> Iterator[None]:
    """lm-eval seeds the global RNGs and puts the model in eval mode: undo both afterwards, so
    that evaluating a run never changes what the next run trains on."""
    py, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    training = model.training
    quiet = {name: logging.getLogger(name).level for name in ("lm_eval", "lm-eval")}
    for name in quiet:
        logging.getLogger(name).setLevel(logging.ERROR)
    multiproc = os.environ.get("DISABLE_MULTIPROC")
    os.environ["DISABLE_MULTIPROC"] = "1"  # lm-eval's bootstrap would fork a pool from a torch process
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        model.train(training)
        for name, level in quiet.items():
            logging.getLogger(name).setLevel(level)
        if multiproc is None:
            os.environ.pop("DISABLE_MULTIPROC", None)
        else:
            os.environ["DISABLE_MULTIPROC"] = multiproc


def check_tasks(names: Sequence[str], task_dirs: Sequence[Path] = (), *, where: str = "evaluate.lm_eval_tasks") -> None:
    """Raise a HarnessError naming `where` for the first task that is neither a local task YAML
    nor in lm-eval's registry: run before any run starts, so a typo does not wait for training."""
    _checked_specs([split_fewshot(name)[0] for name in names], search_dirs(task_dirs), where)


def _checked_specs(names: Sequence[str], dirs: Sequence[Path], where: str):
    """(task specs, lm-eval TaskManager) for `names`; unknown names are a HarnessError."""
    from lm_eval.tasks import TaskManager

    try:
        specs, registry = resolve_tasks(names, dirs)
    except HarnessError as err:
        raise HarnessError(str(err).replace("evaluate.lm_eval_tasks", where, 1)) from None
    manager = TaskManager(include_path=[str(d) for d in dirs] or None, include_defaults=registry)
    unknown = [s for s in specs if isinstance(s, str) and s not in manager.all_tasks]
    if unknown:
        raise HarnessError(f"{where}: unknown lm-eval task {unknown[0]!r}{did_you_mean(unknown[0], manager.all_tasks)}")
    return specs, manager


def split_fewshot(name: str) -> tuple[str, int | None]:
    """("arc_challenge", 25) for "arc_challenge:25"; (name, None) for a name without a count."""
    head, sep, tail = name.rpartition(":")
    return (head, int(tail)) if sep and head and tail.isdigit() else (name, None)


LM_EVAL_CHAT_TEMPLATE = {
    "auto": "the start model's chat template when its tokenizer has one (the Open LLM Leaderboard's "
            "setting for chat and instruct models: apply_chat_template with fewshot_as_multiturn), else plain text",
    "chat": "always the chat template, few-shot examples as turns (refused for a tokenizer without one)",
    "plain": "plain-text prompts, as for a base model",
}


def uses_chat_template(setting: str, tokenizer, *, where: str = "evaluate.lm_eval_chat_template") -> bool:
    """Whether lm-eval renders its prompts with the tokenizer's chat template (and few-shot
    examples as turns), for the suite's `lm_eval_chat_template` (LM_EVAL_CHAT_TEMPLATE)."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if setting == "chat" and not has_template:
        raise HarnessError(f"{where}: chat, but the start model's tokenizer has no chat template; "
                           "use auto or plain")
    return setting == "chat" or (setting == "auto" and has_template)


def run_lm_eval(model, tokenizer, tasks: Sequence[str], *, limit: int = 0, num_fewshot: int = -1,
                batch_size: int = 8, bootstrap: int = 2000, seed: int = 1234,
                task_dirs: Sequence[Path] = (), chat_template: bool = False) -> dict[str, Any]:
    """lm-eval's results dict for `tasks` on the in-memory `model` (samples included); a task
    named "task:N" runs with N few-shot examples, the rest with `num_fewshot`; `chat_template`:
    prompts through the tokenizer's chat template, few-shot examples as turns."""
    groups: dict[int, list[str]] = {}
    for name in tasks:
        task, shots = split_fewshot(name)
        groups.setdefault(num_fewshot if shots is None else shots, []).append(task)
    merged: dict[str, Any] = {}
    for shots, names in groups.items():
        results = _run_lm_eval(model, tokenizer, names, limit=limit, num_fewshot=shots, batch_size=batch_size,
                               bootstrap=bootstrap, seed=seed, task_dirs=task_dirs, chat_template=chat_template) or {}
        for key, value in results.items():
            if isinstance(value, dict):
                merged.setdefault(key, {}).update(value)
            else:
                merged.setdefault(key, value)
    return merged


def _run_lm_eval(model, tokenizer, tasks: Sequence[str], *, limit: int, num_fewshot: int, batch_size: int,
                 bootstrap: int, seed: int, task_dirs: Sequence[Path], chat_template: bool) -> dict[str, Any]:
    """One lm-eval call: `tasks` with one few-shot setting."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    dirs = search_dirs(task_dirs)
    specs, manager = _checked_specs(tasks, dirs, "evaluate.lm_eval_tasks")
    device = next(model.parameters()).device
    with _preserved_state(model):
        # a copy of the tokenizer: HFLM sets its pad token and padding side
        lm = HFLM(pretrained=model, tokenizer=copy.deepcopy(tokenizer), device=str(device), batch_size=batch_size)
        try:
            return simple_evaluate(
                model=lm, tasks=specs, num_fewshot=None if num_fewshot < 0 else num_fewshot,
                limit=None if limit <= 0 else limit, bootstrap_iters=bootstrap, task_manager=manager,
                log_samples=True, random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                fewshot_random_seed=seed, apply_chat_template=chat_template, fewshot_as_multiturn=chat_template,
            )
        except OSError as err:  # a dataset that cannot be fetched (offline, a wrong data_files path)
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise HarnessError(f"evaluate.lm_eval_tasks: cannot load a task's data ({first}); "
                               "check the network (HF_DATASETS_OFFLINE) or the task's data_files") from None


def results_rows(results: dict[str, Any], *, step: int, bootstrap: int = 2000, seed: int = 1234) -> list[dict[str, Any]]:
    """Metric rows (harness.results.schema.METRIC_COLUMNS) from lm-eval's results dict; the CI of
    each as the module docstring says (Wilson for proportions, else normal or bootstrap)."""
    rows = []
    samples = results.get("samples") or {}
    for task, values in sorted(results.get("results", {}).items()):
        directions = (results.get("higher_is_better") or {}).get(task, {})
        n_docs = (results.get("n-samples") or {}).get(task, {}).get("effective")
        for key, value in values.items():
            if "," not in key or "_stderr," in key or not isinstance(value, (int, float)):
                continue
            metric, filt = key.split(",", 1)
            stderr = values.get(f"{metric}_stderr,{filt}")
            stderr = float(stderr) if isinstance(stderr, (int, float)) else math.nan
            value = float(value)
            low, high = (value - 1.96 * stderr, value + 1.96 * stderr) if math.isfinite(stderr) else (math.nan, math.nan)
            if not math.isfinite(stderr) and task in samples:
                boot = _bootstrap_task_metric(results, task, metric, filt, bootstrap, seed)
                if boot is not None:
                    stderr, low, high = boot
            wilson = _proportion_ci(results, task, metric, filt, value) if task in samples else None
            if wilson is not None:
                low, high = wilson
            name = f"{task}/{metric}" + ("" if filt == "none" else f":{filt}")
            hib = directions.get(metric)
            rows.append({
                "evaluator": "lm_eval", "metric": name, "split": "eval", "step": step,
                "value": value, "stderr": stderr, "ci_low": low, "ci_high": high,
                "level": CONFIDENCE if math.isfinite(low) and math.isfinite(high) else math.nan,
                "n": int(n_docs) if n_docs is not None else len(samples.get(task, [])),
                "higher_is_better": bool(hib) if hib is not None else None,
            })
    return rows


def _document_scores(results, task: str, metric: str, filt: str) -> list[Any]:
    """The logged per-document values of `metric` under filter `filt` (lm-eval logs one sample
    per document and filter, each carrying that filter's metric values)."""
    return [s[metric] for s in results["samples"][task] if s.get("filter", "none") == filt and metric in s]


def _task_aggregation(results, task: str, metric: str):
    """The function the task aggregates `metric` with: its metric_list entry's aggregation, else
    lm-eval's registered default for the metric; None when unknown."""
    from lm_eval.api.registry import get_aggregation, get_metric_aggregation

    config = (results.get("configs") or {}).get(task, {})
    for entry in config.get("metric_list") or []:
        if entry.get("metric") == metric and isinstance(entry.get("aggregation"), str):
            found = get_aggregation(entry["aggregation"])
            if found is not None:
                return found
    try:
        return get_metric_aggregation(metric)
    except Exception:  # noqa: BLE001 - a custom metric without a registered aggregation
        return None


def _proportion_ci(results, task: str, metric: str, filt: str, value: float) -> tuple[float, float] | None:
    """The Wilson 95% interval of a metric that is a proportion: the task aggregates it by mean
    and every logged document scored 0 or 1, k of n, with k/n the reported value (documents that
    do not add up to it belong to another evaluation: no interval from them). None otherwise."""
    from lm_eval.api.registry import get_aggregation

    scores = _document_scores(results, task, metric, filt)
    if not scores or _task_aggregation(results, task, metric) is not get_aggregation("mean"):
        return None
    if not all(isinstance(x, (bool, int, float, np.bool_, np.integer, np.floating)) and x in (0, 1) for x in scores):
        return None
    k, n = int(sum(scores)), len(scores)
    if not math.isclose(k / n, value, rel_tol=0.0, abs_tol=1e-9):
        return None
    low, high = proportion_interval(k, n)
    return float(low), float(high)


def _bootstrap_task_metric(results, task: str, metric: str, filt: str, resamples: int, seed: int):
    """(stderr, ci_low, ci_high) of a metric lm-eval gives no stderr for: the task's aggregation
    over documents resampled with replacement. None when the aggregation is unknown."""
    items = _document_scores(results, task, metric, filt)
    if len(items) < 2 or resamples < 1:
        return None
    aggregation = _task_aggregation(results, task, metric)
    if aggregation is None:
        return None
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(min(resamples, 1000)):  # python-level aggregation: 1000 draws bound the time
        picks = rng.integers(0, len(items), size=len(items))
        draws.append(float(aggregation([items[i] for i in picks])))
    draws = np.asarray(draws)
    draws = draws[np.isfinite(draws)]
    if draws.size < 2:
        return None
    low, high = np.percentile(draws, [2.5, 97.5])
    return float(draws.std(ddof=1)), float(low), float(high)


def lm_eval_rows(model, tokenizer, config, *, step: int, task_dirs: Sequence[Path] = ()) -> list[dict[str, Any]]:
    """Run `config.lm_eval_tasks` (an EvalConfig) on the model and return its metric rows."""
    results = run_lm_eval(
        model, tokenizer, list(config.lm_eval_tasks), limit=config.lm_eval_limit,
        num_fewshot=config.lm_eval_fewshot, batch_size=config.lm_eval_batch_size,
        bootstrap=config.bootstrap, seed=config.seed, task_dirs=task_dirs,
        chat_template=uses_chat_template(config.lm_eval_chat_template, tokenizer),
    )
    return results_rows(results or {}, step=step, bootstrap=config.bootstrap, seed=config.seed)

