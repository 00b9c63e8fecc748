"""Suite files: load, validate with one-line errors, apply command-line overrides.

A suite is a YAML mapping; every key is checked here, so a typo is caught before anything runs:

    name: quickstart
    sandbox: {}                      # the offline world's settings (harness.sandbox.world)
    model: sandbox                   # "sandbox" (its SFT model), a local folder or a Hub id
    dataset: sandbox                 # "sandbox" (its preference pairs), a local file or a Hub id
    data: {train_split: train, eval_split: test}   # how a real dataset is read (DataConfig)
    methods: [dpo, {ipo: {tau: 0.1}}, {simpo: {beta: [2.0, 2.5]}}]   # lists expand to a grid
    # a weighted sum of losses, named dpo+sft (harness.losses.mixture):
    #   methods: [{mix: {dpo: 0.8, sft: 1.0}}]
    seeds: [0]
    budget: {kind: flops, value: 3.0e11}
    train: {...}                     # TrainConfig
    evaluate: {...}                  # EvalConfig
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from harness.errors import HarnessError, did_you_mean
from harness.mix_syntax import parse_mix
from harness.sampling import sampling_problem

BUDGET_KINDS = ("flops", "tokens", "examples", "steps")
ON_INVALID = ("drop", "error")  # data.on_invalid: what harness.data.loading does with a bad row
SANDBOX = "sandbox"  # the `model:` / `dataset:` value naming the offline world


@dataclass(frozen=True)
class Budget:
    """How much compute every run of the suite gets."""

    kind: str = "flops"
    value: float = 3.0e11


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 16
    grad_accumulation: int = 1
    lr: float = 5e-5
    warmup_ratio: float = 0.1
    schedule: str = "cosine"  # cosine | linear | constant
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    max_length: int = 64
    log_every: int = 5
    checkpoint_every: int = 50  # optimizer steps between checkpoints (0: never); resume after a kill
    # Run the model on packed rows (shared prompts once, no padding; harness.data.packing) where it
    # supports that. Changes speed, not results (float rounding aside): not part of a run's identity.
    packing: bool = field(default=True, metadata={"identity": False})


def identity_fields(config) -> dict[str, Any]:
    """A config's fields that determine results (those not marked identity=False)."""
    return {f.name: getattr(config, f.name) for f in fields(config) if f.metadata.get("identity", True)}


@dataclass(frozen=True)
class EvalConfig:
    prompts: int = 64
    samples_per_prompt: int = 2
    # How evaluation samples are drawn (harness.generation.SamplingConfig); the defaults draw from
    # the policy's own, untruncated distribution, which the KL estimators assume. Part of every
    # run's identity, so a change of any one is a different run.
    max_new_tokens: int = 24
    temperature: float = 1.0
    top_k: int = 0  # 0: off (never transformers' default of 50)
    top_p: float = 1.0
    bootstrap: int = 2000
    seed: int = 1234
    backend: str = "auto"  # generation: auto (vLLM when installed and on CUDA) | transformers | vllm
    reward_model: str = "gold"  # a registered reward model, a local folder or a Hub id
    reward_batch_size: int = 16
    lm_eval_tasks: tuple[str, ...] = ()  # lm-eval registry names, suites/tasks/ names or YAML files
    lm_eval_limit: int = 0  # documents per task (0: all)
    lm_eval_fewshot: int = -1  # few-shot examples (-1: each task's own default)
    lm_eval_batch_size: int = 8


@dataclass(frozen=True)
class DataConfig:
    """How a real `dataset:` is read (harness.data.loading); the sandbox ignores it."""

    train_split: str = "train"
    eval_split: str = "test"  # held-out pairs: evaluation prompts and preference accuracy
    on_invalid: str = "drop"  # rows with an empty completion or no room for one: drop (warned) | error
    max_prompt_length: int = 0  # tokens; longer prompts are invalid rows (0: no limit but max_length)


@dataclass(frozen=True)
class MethodEntry:
    """One `methods:` entry: a registry name and the hyper-parameters given for it (may hold lists)."""

    name: str
    hparams: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Suite:
    name: str
    path: Path
    methods: tuple[MethodEntry, ...]
    description: str = ""
    sandbox: dict[str, Any] = field(default_factory=dict)
    model: str = "sandbox"
    dataset: str = "sandbox"
    data: DataConfig = field(default_factory=DataConfig)
    seeds: tuple[int, ...] = (0,)
    budget: Budget = field(default_factory=Budget)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    plugins: tuple[str, ...] = ()


TOP_LEVEL_KEYS = {
    "name", "description", "sandbox", "model", "dataset", "data", "methods", "seeds", "budget", "train",
    "evaluate", "plugins",
}


def load_suite(path: str | Path, overrides: list[str] | None = None) -> Suite:
    """Read, override (`key.sub=value` strings, YAML-typed) and validate a suite file."""
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"{path}: no such suite file (suites live in suites/*.yaml)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        line = getattr(getattr(err, "problem_mark", None), "line", None)
        where = f" at line {line + 1}" if line is not None else ""
        raise HarnessError(f"{path}: not valid YAML{where}; fix the syntax") from None
    if not isinstance(raw, dict):
        raise HarnessError(f"{path}: a suite must be a YAML mapping of keys to values")
    for override in overrides or []:
        _apply_override(raw, override, path)
    return parse_suite(raw, path)


def parse_suite(raw: dict[str, Any], path: Path) -> Suite:
    where = str(path)
    _reject_unknown(raw, TOP_LEVEL_KEYS, where, "")
    if "methods" not in raw:
        raise HarnessError(f"{where}: missing key 'methods' (a list of method names, see `harness methods`)")
    name = str(raw.get("name") or path.stem)
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not all(isinstance(s, int) for s in seeds) or not seeds:
        raise HarnessError(f"{where}: seeds must be a non-empty list of integers, e.g. [0, 1, 2]")
    return Suite(
        name=name,
        path=path,
        description=str(raw.get("description", "")),
        methods=_parse_methods(raw["methods"], where),
        sandbox=_mapping(raw.get("sandbox"), where, "sandbox"),
        model=str(raw.get("model", "sandbox")),
        dataset=str(raw.get("dataset", "sandbox")),
        data=_data(_section(raw, "data", DataConfig, where), where),
        seeds=tuple(seeds),
        budget=_budget(_section(raw, "budget", Budget, where), where),
        train=_section(raw, "train", TrainConfig, where),
        evaluate=_evaluate(_section(raw, "evaluate", EvalConfig, where), where),
        plugins=tuple(str(p) for p in raw.get("plugins", []) or []),
    )


def _data(data: DataConfig, where: str) -> DataConfig:
    if data.on_invalid not in ON_INVALID:
        raise HarnessError(f"{where}: data.on_invalid = {data.on_invalid!r} should be one of {', '.join(ON_INVALID)}")
    if data.max_prompt_length < 0:
        raise HarnessError(f"{where}: data.max_prompt_length must be >= 0 (0: no limit)")
    return data


def _parse_methods(value: Any, where: str) -> tuple[MethodEntry, ...]:
    if not isinstance(value, list) or not value:
        raise HarnessError(f"{where}: methods must be a non-empty list, e.g. [dpo, {{ipo: {{tau: 0.1}}}}]")
    entries = []
    for item in value:
        if isinstance(item, str):
            entries.append(MethodEntry(item))
        elif isinstance(item, dict) and len(item) == 1 and "mix" in item:
            entries.append(MethodEntry(*parse_mix(item["mix"], f"{where}: methods")))
        elif isinstance(item, dict) and len(item) == 1:
            (name, hparams), = item.items()
            entries.append(MethodEntry(str(name), _mapping(hparams, where, f"methods.{name}")))
        else:
            raise HarnessError(f"{where}: methods entry {item!r} must be a name or {{name: {{hparam: value}}}}")
    return tuple(entries)


def _section(raw: dict[str, Any], key: str, cls: type, where: str):
    given = _mapping(raw.get(key), where, key)
    known = {f.name: f for f in fields(cls)}
    _reject_unknown(given, set(known), where, f"{key}.")
    defaults = cls()
    values = {}
    for name, value in given.items():
        default = getattr(defaults, name)
        if isinstance(default, tuple):  # a list of names: one name alone is a list of one
            values[name] = _names(value, where, f"{key}.{name}")
            continue
        try:
            values[name] = type(default)(value) if not isinstance(default, bool) else bool(value)
        except (TypeError, ValueError):
            raise HarnessError(
                f"{where}: {key}.{name} = {value!r} should be a {type(default).__name__}"
            ) from None
    return replace(defaults, **values)


def _names(value: Any, where: str, key: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) and v for v in items):
        raise HarnessError(f"{where}: {key} = {value!r} should be a list of names, e.g. [arc_easy]")
    return tuple(items)


def _evaluate(config: EvalConfig, where: str) -> EvalConfig:
    backends = ("auto", "transformers", "vllm")  # harness.generation.BACKENDS
    if config.backend not in backends:
        raise HarnessError(f"{where}: evaluate.backend {config.backend!r} unknown{did_you_mean(config.backend, backends)}")
    if not config.reward_model:
        raise HarnessError(f"{where}: evaluate.reward_model is empty; use gold, a folder or a Hub id")
    problem = sampling_problem(temperature=config.temperature, top_k=config.top_k, top_p=config.top_p,
                               max_new_tokens=config.max_new_tokens)
    if problem:
        raise HarnessError(f"{where}: evaluate.{problem}")
    return config


def _budget(budget: Budget, where: str) -> Budget:
    if budget.kind not in BUDGET_KINDS:
        raise HarnessError(f"{where}: budget.kind {budget.kind!r} unknown{did_you_mean(budget.kind, BUDGET_KINDS)}")
    if not budget.value > 0:
        raise HarnessError(f"{where}: budget.value must be > 0")
    return budget


def _mapping(value: Any, where: str, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise HarnessError(f"{where}: {key} must be a mapping of keys to values")
    return dict(value)


def _reject_unknown(given: dict[str, Any], known: set[str], where: str, prefix: str) -> None:
    for key in given:
        if key not in known:
            raise HarnessError(f"{where}: unknown key {prefix}{key!r}{did_you_mean(str(key), known)}")


def _apply_override(raw: dict[str, Any], override: str, path: Path) -> None:
    """Apply `a.b=value` to the raw mapping; the value is parsed as YAML (numbers, lists...)."""
    if "=" not in override:
        raise HarnessError(f"--set {override!r}: expected KEY=VALUE, e.g. budget.value=1e11")
    dotted, text = override.split("=", 1)
    keys = dotted.strip().split(".")
    node = raw
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise HarnessError(f"{path}: --set {dotted}: {key!r} is not a mapping")
        node = child
    node[keys[-1]] = yaml.safe_load(text)
