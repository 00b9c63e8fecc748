"""Everything about a suite that can be checked before any run starts, for `harness plan`,
`harness run` and `harness rank` alike, so that a run never fails half-way on a foreseeable fault.

Cheap checks that import no torch come first (a typo costs well under a second, whichever command
finds it): the suite's schema (harness.suite, already applied by `load_suite`), the budget's size,
the results folder (writable, no damaged stored files), local models, datasets, reward models
and the LLM judge's reference outputs that must exist (a model folder's config.json, weights and
tokenizer files read). Then the checks that need the registries: the sandbox's settings, the
plugins, local start models' tokenizers, a tuned suite's spaces and metric, the methods'
hyper-parameters (planning), the reward model's name and the lm-eval tasks.
What needs the data itself (one full batch of every shape a method trains on) is checked by the
runner once the data is loaded, still before the first run (harness.runner.check_trainable).
A server a run will call (the LLM judge's) is asked by `check_services`, which `harness run` and
job submission call; `harness plan` contacts nothing.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from harness.errors import HarnessError, did_you_mean
from harness.suite import SANDBOX, SANDBOX_MODELS, Suite, check_budget_size

# A folder's tokenizer is one of these (fast, sentencepiece, byte-level BPE, WordPiece vocabularies).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "vocab.json", "vocab.txt")
WEIGHT_SUFFIXES = (".safetensors", ".bin")
# What a clone without git-lfs holds in place of each large file: a text file of three lines.
LFS_POINTER = b"version https://git-lfs.github.com/spec/v1"


def check_suite(suite: Suite, results_root: Path | None = None, *, allow_large_budget: bool = False) -> list:
    """Validate `suite` as a whole and return its planned runs (harness.plan.RunSpec); raises a
    one-line HarnessError naming the file and the key for the first problem found."""
    check_budget_size(suite, allow_large=allow_large_budget)
    if results_root is not None:
        check_results_folder(Path(results_root), suite.name)
    for model in suite.start_models:
        check_model_source(model, f"{suite.where('model')}: model")
    check_dataset_source(suite.dataset, f"{suite.where('dataset')}: dataset")
    if suite.evaluate.judge.enabled:
        from harness.evaluate.judge import check_judge_settings

        check_judge_settings(suite.evaluate.judge, lambda key: suite.where(f"evaluate.judge.{key}"))
    return check_registered(suite)


def check_services(suite: Suite) -> None:
    """What a run will call over the network answers now: the LLM judge's server serves its model
    (evaluate.judge). For `harness run` and job submission only: planning and ranking need no server."""
    if suite.evaluate.judge.enabled:
        from harness.evaluate.judge import check_judge_server

        check_judge_server(suite.evaluate.judge, lambda key: suite.where(f"evaluate.judge.{key}"))


def check_registered(suite: Suite) -> list:
    """The checks that import the registries (and so torch): sandbox settings, plugins, methods
    and hyper-parameters, the reward model and the lm-eval tasks. Returns the planned runs."""
    from harness.plan import plan_suite
    from harness.plugins import load_suite_plugins

    if suite.dataset == SANDBOX or any(m in SANDBOX_MODELS for m in suite.start_models):
        from harness.sandbox.world import SandboxConfig

        SandboxConfig.from_dict(suite.sandbox, suite.where("sandbox"))
    load_suite_plugins(suite)
    check_local_tokenizers(suite)
    if suite.tune:  # the spaces under the suite's overrides; the plan is the start and the defaults
        from harness.tuning.check import check_tuning, defaults_suite

        check_tuning(suite)
        check_tune_metric(suite)
        suite = defaults_suite(suite)
    specs = plan_suite(suite)
    check_reward_model(suite.evaluate.reward_model, f"{suite.where('evaluate.reward_model')}: evaluate.reward_model")
    if suite.evaluate.lm_eval_tasks:
        from harness.evaluate.lmeval import check_tasks

        check_tasks(suite.evaluate.lm_eval_tasks, (suite.path.parent / "tasks",), where=f"{suite.where('evaluate.lm_eval_tasks')}: evaluate.lm_eval_tasks")
    return specs


def check_tune_metric(suite: Suite) -> None:
    """tune.metric is "reward" or a key an evaluator registers ("evaluator/metric"; plugins' too, as
    they are loaded first), so that a typo is found before the trials rather than after all of them;
    an lm-eval task's keys are known only once it runs, so only its evaluator part is checked."""
    import harness.evaluate.metrics  # noqa: F401 (importing it registers the evaluators)
    from harness.evaluate.registry import EVALUATORS

    metric = suite.tune.metric
    if metric == "reward" or metric.startswith("lm_eval/") and suite.evaluate.lm_eval_tasks:
        return
    keys = {f"{name}/{m.name}" for name in EVALUATORS.names() for m in EVALUATORS.get(name).metrics}
    if metric not in keys:
        raise HarnessError(f"{suite.where('tune.metric')}: tune.metric = {metric!r} is not a metric the trials "
                           f"measure{did_you_mean(metric, ['reward', *keys])}; give 'reward' or an evaluator/metric "
                           "key (lm_eval/... needs evaluate.lm_eval_tasks)")


# --------------------------------------------------------------------------- the results folder


def check_results_folder(root: Path, suite_name: str) -> None:
    """The suite's results folder can be written (creating nothing), and holds no damaged files."""
    folder = root / suite_name
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise HarnessError(f"--results {root}: {existing} is a file, not a folder; pass --results with a folder")
    if not _writable(existing):
        raise HarnessError(f"--results {root}: {existing} is not writable; fix its permissions or pass "
                           "--results with a folder you can write")
    if folder.is_dir():
        from harness.results import ResultStore

        ResultStore(root, suite_name).check_intact()


def _writable(folder: Path) -> bool:
    """Whether a file can be created in `folder` (tried, then removed: permissions, read-only mounts
    and ACLs are all answered the same way the run would meet them)."""
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".harness-write-check."):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- models and data


def check_model_source(name: str, where: str) -> None:
    """A model named as a local folder must hold a saved model (its config.json); a Hub id is
    checked when it is fetched (that needs the network or the Hugging Face cache)."""
    if name in SANDBOX_MODELS:
        return
    if name.startswith(f"{SANDBOX}:"):
        raise HarnessError(f"{where}: unknown sandbox model {name!r}; use one of {', '.join(SANDBOX_MODELS)}")
    path = Path(name).expanduser()
    if path.is_dir():
        check_model_folder(path, name, where)
        return
    if path.exists():
        raise HarnessError(f"{where}: {name!r} is a file; give a model folder or a Hub id (owner/name)")
    if _looks_local(name):
        raise HarnessError(f"{where}: no such folder {name!r}; give a model folder or a Hub id (owner/name)")


def check_model_folder(path: Path, name: str, where: str) -> None:
    """A local model folder holds what loading reads: a config.json that parses, weights that are
    not git-lfs pointers, and tokenizer files (read here, without torch, before any work)."""
    config = path / "config.json"
    if not config.is_file():
        raise HarnessError(f"{where}: folder {name!r} holds no model (no config.json); give a folder written by "
                           "save_pretrained, or a Hub id")
    try:
        parsed = json.loads(config.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise HarnessError(f"{where}: folder {name!r}: config.json is not valid JSON ({err}); restore it "
                           "(save_pretrained writes it) or download the model again") from None
    if not isinstance(parsed, dict) or "model_type" not in parsed:
        raise HarnessError(f"{where}: folder {name!r}: config.json has no 'model_type'; restore it "
                           "(save_pretrained writes it) or download the model again")
    for weights in sorted(p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file()):
        if _is_lfs_pointer(weights):
            raise HarnessError(f"{where}: folder {name!r}: {weights.name} is a git-lfs pointer "
                               f"({weights.stat().st_size} bytes), not the weights; run `git lfs pull` in the "
                               "folder, or download the model with `hf download`")
    if not any((path / file).is_file() for file in TOKENIZER_FILES):
        raise HarnessError(f"{where}: folder {name!r} has no tokenizer files (none of {', '.join(TOKENIZER_FILES)}); "
                           "save the model's tokenizer into it (tokenizer.save_pretrained)")


def _is_lfs_pointer(file: Path) -> bool:
    with file.open("rb") as f:
        return f.read(len(LFS_POINTER)) == LFS_POINTER


def check_local_tokenizers(suite: Suite) -> None:
    """Each local start model's tokenizer loads and can pad (a Hub model's is checked when it is
    fetched, as the run starts); the tokenizer is small, so this costs well under a second."""
    from harness.models import load_tokenizer

    for model in suite.start_models:
        if model not in SANDBOX_MODELS and Path(model).expanduser().is_dir():
            load_tokenizer(os.path.expanduser(model), where=f"{suite.where('model')}: model")


def check_dataset_source(name: str, where: str) -> None:
    """A dataset named as a local path must exist (a Hub id is checked when it is read)."""
    if name == SANDBOX:
        return
    from harness.data.loading import FILE_SUFFIXES

    if not Path(name).expanduser().exists() and (_looks_local(name) or name.endswith(FILE_SUFFIXES)):
        raise HarnessError(f"{where}: no such file or folder {name!r}; give a .jsonl/.json/.parquet file, a folder "
                           "of them, or a Hub id")


def check_reward_model(name: str, where: str) -> None:
    """A registered reward model, a folder holding a saved model, or a Hub id."""
    from harness.evaluate.reward_models import REWARD_MODELS, load_reward_model

    if name in REWARD_MODELS:
        return
    path = Path(name).expanduser()
    if path.exists() or _looks_local(name):
        check_model_source(name, where)
        return
    if name.count("/") != 1:  # not owner/name: unknown everywhere; the loader's message says so
        load_reward_model(name, where=where)


def _looks_local(name: str) -> bool:
    """A path rather than a Hub id (owner/name)."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name
