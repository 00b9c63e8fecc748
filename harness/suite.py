"""Suite files: load, validate with one-line errors, apply command-line overrides.

A suite is a YAML mapping; every key is checked here, so a typo is caught before anything runs:

    name: quickstart
    sandbox: {}                      # the offline world's settings (harness.sandbox.world)
    model: sandbox                   # "sandbox" (its SFT model), a local folder or a Hub id, or
                                     # starting points by name: {sft: sandbox, base: sandbox:base}
    dataset: sandbox                 # "sandbox" (its preference pairs), a local file or a Hub id
    data: {train_split: train, eval_split: test}   # how a real dataset is read (DataConfig)
    methods: [dpo, {ipo: {tau: 0.1}}, {simpo: {beta: [2.0, 2.5]}}]   # lists expand to a grid
    # a weighted sum of losses, named dpo+sft (harness.losses.mixture):
    #   methods: [{mix: {dpo: 0.8, sft: 1.0}}]
    seeds: [0]
    budget: {kind: flops, value: 3.0e11}
    train: {...}                     # TrainConfig
    evaluate: {...}                  # EvalConfig
    tune: {trials: 8, sampler: quasi-random, seeds: [0, 1, 2]}   # TuneConfig (harness.tuning)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from harness.errors import HarnessError, did_you_mean
from harness.mix_syntax import parse_mix
from harness.sampling import sampling_problem

DEFAULT_KL_BUDGET = 10.0  # nats: the ranks' budget (harness.rank), and a tuned suite's by default
from harness.names import check_name
from harness.values import Constraint, at_least, check_value, coerce, each, in_range, non_negative, one_of, positive

BUDGET_KINDS = ("flops", "tokens", "examples", "steps")
ON_INVALID = ("drop", "error")  # data.on_invalid: what harness.data.loading does with a bad row
SCHEDULES = ("cosine", "linear", "constant")  # harness.train.optim.lr_factor
BACKENDS = ("auto", "transformers", "vllm")  # harness.generation.BACKENDS
SANDBOX = "sandbox"  # the `model:` / `dataset:` value naming the offline world
# The sandbox's starting models as `model:` values: its SFT model, pretrained model and
# instruction-tuned model (harness.sandbox.world.STARTS maps them to the world's folders)
SANDBOX_MODELS = (SANDBOX, f"{SANDBOX}:base", f"{SANDBOX}:instruct")

# The sandbox world's version. Bump when the build procedure or a SandboxConfig default changes in a
# way that changes its output: it names the world's cache folder and is part of every sandbox run's
# identity (harness.plan.RunSpec.identity), so runs stored from another world are never reused.
# 3: the data are sampled from the SFT model's untruncated distribution (2 drew from its top 50).
# 4: the capability material in the corpus and demonstrations, the instruct start.
# 5: the tokenizer adds <bos> by default (lm-eval's contexts start as training's did); the rule
#    stated in the corpus and its tool right after "uses"; three times the reasoning documents and
#    twice the facts (half of them myths, stated at 0.7-0.9 of their mentions), 400 pretraining
#    steps (v4: reasoning at chance, truthfulness at chance). Sandbox run ids carry the version from 5 on.
SANDBOX_VERSION = 5


UNLESS_DEFAULT = "unless-default"  # a setting's identity: part of a run's id only when changed


def setting(default: Any, *checks: Constraint, identity: bool | str = True) -> Any:
    """A config field with the constraints its value must meet: declared here, next to the field,
    and checked generically by `parse_suite` for the suite file and `--set` alike. A field marked
    identity=False changes speed, not results, and is not part of a run's identity; one marked
    identity=UNLESS_DEFAULT is part of it only when it differs from its default (a setting added
    after runs were published: their ids stay as they were)."""
    return field(default=default, metadata={"checks": checks, **({} if identity is True else {"identity": identity})})


PRECISIONS = ("auto", "bf16-mixed", "bf16", "fp32")  # harness.memory.resolved_precision
TRACKERS = ("tensorboard", "trackio", "wandb", "mlflow")  # train.report_to (harness.train.trackers)
QUANTIZE = ("none", "nf4")  # train.quantize: the frozen base of a LoRA run, through bitsandbytes (CUDA)


@dataclass(frozen=True)
class PeftConfig:
    """`train.peft`: LoRA adapters through peft (harness.train.adapters); r = 0 trains every weight."""

    r: int = setting(0, non_negative())
    alpha: float = setting(16.0, positive())
    dropout: float = setting(0.0, in_range(0.0, 1.0, high_open=True))
    target_modules: tuple[str, ...] = setting(("all-linear",))  # module names, or peft's "all-linear"

    # The reference of a LoRA run is the base with the adapters disabled (harness.train.adapters):
    # these peft settings train weights that disabling the adapters does not revert.
    REFUSED = {"modules_to_save": "trains whole modules", "bias": "trains the base layers' biases"}

    @property
    def enabled(self) -> bool:
        return self.r > 0


DISTRIBUTED = ("none", "fsdp")  # train.distributed.strategy (harness.train.distributed)


def micro_batch_count(grad_accumulation: int, processes: int) -> int:
    """The micro-batches one global batch is cut into over `processes` (harness.train.distributed
    deals them). When the processes divide grad_accumulation, each takes whole micro-batches of the
    single process's size: the same forward passes and batch statistics, so the same numbers;
    otherwise each process cuts its share into grad_accumulation smaller ones."""
    return grad_accumulation if grad_accumulation % processes == 0 else grad_accumulation * processes


@dataclass(frozen=True)
class DistributedConfig:
    """`train.distributed`: one run's training sharded over `gpus` processes (GPUs; gloo processes
    on CPU) with FSDP (torch's fully_shard), launched by the harness (torchrun). The global batch,
    the micro-batches and the update are the single process's, so results agree up to float
    rounding: not part of a run's identity, like train.packing."""

    strategy: str = setting("none", one_of(*DISTRIBUTED))
    gpus: int = setting(1, positive())

    @property
    def processes(self) -> int:
        """How many processes train one run: `gpus` under FSDP, else 1."""
        return self.gpus if self.strategy == "fsdp" else 1


@dataclass(frozen=True)
class Budget:
    """How much compute every run of the suite gets."""

    kind: str = setting("flops", one_of(*BUDGET_KINDS))
    value: float = setting(3.0e11, positive())


# Budgets past these are refused unless confirmed (`--allow-large-budget`): a typo's extra zeros
# would start a run that never ends. For scale: DPO on 100k pairs of 512 tokens with a 70B model
# is about 2e20 FLOPs, 5e10 tokens, 1e5 examples, 1e4 steps.
LARGE_BUDGETS = {"flops": 1e23, "tokens": 1e13, "examples": 1e10, "steps": 1e7}


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = setting(16, positive())
    grad_accumulation: int = setting(1, positive())
    lr: float = setting(5e-5, positive())
    warmup_ratio: float = setting(0.1, in_range(0.0, 1.0))
    schedule: str = setting("cosine", one_of(*SCHEDULES))
    weight_decay: float = setting(0.0, non_negative())
    grad_clip: float = setting(1.0, positive())
    max_length: int = setting(64, at_least(2))  # a prompt token and a completion token at least
    log_every: int = setting(5, positive())
    checkpoint_every: int = setting(50, non_negative())  # optimizer steps between checkpoints (0: never); resume after a kill
    # Run the model on packed rows (shared prompts once, no padding; harness.data.packing) where it
    # supports that. Changes speed, not results (float rounding aside): not part of a run's identity.
    packing: bool = setting(True, identity=False)
    # auto: bf16 autocast over fp32 weights on CUDA, fp32 on CPU; bf16-mixed; bf16 (weights,
    # gradients and AdamW's moments); fp32. Part of a run's id when not auto.
    precision: str = setting("auto", one_of(*PRECISIONS), identity=UNLESS_DEFAULT)
    # Recompute each layer in the backward pass (non-reentrant): less memory, same results.
    gradient_checkpointing: bool = setting(False, identity=False)
    peft: PeftConfig = setting(PeftConfig(), identity=UNLESS_DEFAULT)
    quantize: str = setting("none", one_of(*QUANTIZE), identity=UNLESS_DEFAULT)  # nf4: QLoRA (needs train.peft)
    distributed: DistributedConfig = setting(DistributedConfig(), identity=False)
    # Experiment trackers that get each run's training curve (optional libraries; off by default).
    report_to: tuple[str, ...] = setting((), each(one_of(*TRACKERS)), identity=False)

    @property
    def micro_batches(self) -> int:
        """The micro-batches one global batch is cut into, over all the run's processes."""
        return micro_batch_count(self.grad_accumulation, self.distributed.processes)


def identity_fields(config) -> dict[str, Any]:
    """A config's fields that determine results: not those marked identity=False, nor those
    marked UNLESS_DEFAULT at their default. A nested config gives its own identity fields."""
    defaults = type(config)()
    out = {}
    for f in fields(config):
        value, identity = getattr(config, f.name), f.metadata.get("identity", True)
        if identity is False or identity == UNLESS_DEFAULT and value == getattr(defaults, f.name):
            continue
        out[f.name] = identity_fields(value) if is_dataclass(value) else value
    return out


@dataclass(frozen=True)
class HardwareConfig:
    """`hardware:` what a suite is sized for (harness.memory): `harness plan` predicts each run's
    memory on it and its GPU-hours at `mfu`; `harness run` checks the visible device instead.
    Not part of any run's identity."""

    gpu: str = setting("")  # a name of harness.train.hardware.PEAK_BF16_FLOPS (H100, A100, ...); "": none stated
    memory_gb: float = setting(80.0, positive())  # per GPU
    gpus: int = setting(1, positive())  # data-parallel processes (accelerate launch), each holding a full replica
    mfu: float = setting(0.4, in_range(0.0, 1.0, low_open=True))  # the model FLOP utilization GPU-hours assume


JUDGE_TEMPLATES = ("alpaca_eval", "arena_hard")  # harness.evaluate.judge.TEMPLATES
JUDGE_BASELINES = ("start", "chosen")  # or a jsonl file of reference outputs


@dataclass(frozen=True)
class JudgeConfig:
    """`evaluate.judge`: a pairwise LLM judge behind an OpenAI-compatible server (harness.evaluate.judge).
    Off while `model` is empty. What decides a verdict (the model, the template, the baseline, the
    judgment's length) is part of a run's identity; where the server is and how it is called is not."""

    model: str = setting("")  # the served model's name, as the server's /v1/models lists it
    base_url: str = setting("", identity=False)  # e.g. http://localhost:8000/v1
    template: str = setting("alpaca_eval", one_of(*JUDGE_TEMPLATES))
    baseline: str = setting("start")  # start | chosen | a jsonl file of {instruction or prompt, output}
    max_tokens: int = setting(1024, positive())  # the length of an arena_hard judgment (alpaca_eval answers 1 token)
    concurrency: int = setting(8, positive(), identity=False)  # requests in flight at once
    timeout: float = setting(120.0, positive(), identity=False)  # seconds per request
    retries: int = setting(4, non_negative(), identity=False)  # tries after the first, with exponential backoff
    backoff: float = setting(1.0, non_negative(), identity=False)  # seconds before the first retry; doubled each time

    @property
    def enabled(self) -> bool:
        return bool(self.model)


@dataclass(frozen=True)
class EvalConfig:
    prompts: int = setting(64, positive())
    samples_per_prompt: int = setting(2, positive())
    # How evaluation samples are drawn (harness.generation.SamplingConfig); the defaults draw from
    # the policy's own, untruncated distribution, which the KL estimators assume. Part of every
    # run's identity, so a change of any one is a different run. Their ranges are
    # harness.sampling.sampling_problem's (a CROSS_CHECKS entry), shared with the sandbox's sampling.
    max_new_tokens: int = setting(24)
    temperature: float = setting(1.0)
    top_k: int = setting(0)  # 0: off (never transformers' default of 50)
    top_p: float = setting(1.0)
    bootstrap: int = setting(2000, non_negative())
    seed: int = setting(1234, non_negative())
    backend: str = setting("auto", one_of(*BACKENDS))  # generation: auto (vLLM when installed and on CUDA)
    reward_model: str = setting("gold")  # a registered reward model, a local folder or a Hub id
    reward_batch_size: int = setting(16, positive())
    lm_eval_tasks: tuple[str, ...] = setting(())  # lm-eval registry names, suites/tasks/ names or YAML files
    lm_eval_limit: int = setting(0, non_negative())  # documents per task (0: all)
    lm_eval_fewshot: int = setting(-1, at_least(-1))  # few-shot examples (-1: each task's own default)
    lm_eval_batch_size: int = setting(8, positive())
    # lm-eval's prompts (harness.evaluate.lmeval.LM_EVAL_CHAT_TEMPLATE): auto | chat | plain
    lm_eval_chat_template: str = setting("auto", one_of("auto", "chat", "plain"))
    judge: JudgeConfig = setting(JudgeConfig(), identity=UNLESS_DEFAULT)  # off unless judge.model is set

    # One task's own few-shot count is part of its name in lm_eval_tasks, not of lm_eval_fewshot.
    HINTS = {"lm_eval_fewshot": lambda v: (f"; to give one task its own count, name it {v!r} in "
                                           "evaluate.lm_eval_tasks (the task:N form)") if ":" in str(v) else ""}


@dataclass(frozen=True)
class DataConfig:
    """How a real `dataset:` is read (harness.data.loading); the sandbox ignores it."""

    train_split: str = setting("train")
    eval_split: str = setting("test")  # held-out pairs: evaluation prompts and preference accuracy
    # a tuned suite's validation prompts (harness.tuning); "": the eval split's prompts after the test
    # ones. Only trials read it (their identity records it), so it is not part of other runs' identity.
    validation_split: str = setting("", identity=False)
    on_invalid: str = setting("drop", one_of(*ON_INVALID))  # rows with an empty completion or no room: drop (warned) | error
    max_prompt_length: int = setting(0, non_negative())  # tokens; longer prompts are invalid rows (0: no limit but max_length)


SAMPLERS = ("grid", "quasi-random", "model-based")  # harness.tuning.sampler: Optuna's Grid, QMC, TPE
DIRECTIONS = ("auto", "maximize", "minimize")


@dataclass(frozen=True)
class TuneConfig:
    """The `tune:` section: every method (plugins too) gets the same trials under the suite's budget,
    is selected on validation prompts and re-run with `seeds` on the test prompts (harness.tuning).

    `space` narrows or overrides a method's declared search space (harness.losses.base.Dimension):
    {method or "*": {dimension: [values] | value | {low, high, scale}}}, checked against the losses
    when plugins are loaded (harness.tuning.space); the learning rate `lr` is a factor of train.lr
    there, as `harness methods` shows it."""

    trials: int = setting(0, positive())  # per method, the same for every method (required)
    sampler: str = setting("quasi-random", one_of(*SAMPLERS))
    seed: int = setting(0, non_negative())  # the sampler's seed: the same for every method
    grid_points: int = setting(3, positive())  # grid sampler: points per range dimension (1: the untuned value)
    metric: str = setting("reward")  # "reward" (the suite's reward metric) or "evaluator/metric"
    direction: str = setting("auto", one_of(*DIRECTIONS))  # auto: the metric's own higher_is_better
    # The one KL budget of a tuned suite: selection takes the best trial whose validation KL (the
    # headline KL: exact, else k3) is within it, and the leaderboard ranks the entries within it
    # (harness.rank.ranking_kl_budget reads it back from the trials table); inf: select on the metric alone.
    kl_budget: float = setting(DEFAULT_KL_BUDGET, positive())
    seeds: tuple[int, ...] = ()  # re-runs of the selected setting (and of the defaults); () = the suite's seeds
    validation_prompts: int = setting(0, non_negative())  # prompts selection reads (0: as many as evaluate.prompts)
    space: dict[str, Any] = field(default_factory=dict)


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
    model: str = "sandbox"  # the first starting point's model
    dataset: str = "sandbox"
    data: DataConfig = field(default_factory=DataConfig)
    # starting points (name, model), when `model:` is a mapping; every method runs from each
    starts: tuple[tuple[str, str], ...] = ()
    seeds: tuple[int, ...] = (0,)
    budget: Budget = field(default_factory=Budget)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    plugins: tuple[str, ...] = ()
    # dotted key -> the `--set` text that gave it: errors found later name where a key came from
    overrides: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    tune: TuneConfig | None = None  # None: each method runs at its given settings

    @property
    def final_seeds(self) -> tuple[int, ...]:
        """The seeds each reported setting runs with: tune.seeds when tuned, else seeds."""
        return (self.tune.seeds or self.seeds) if self.tune else self.seeds

    def where(self, key: str = "") -> str:
        """The prefix of an error about `key`: the suite file, or the `--set` that gave the key."""
        return Source(self.path, self.overrides).where(key)

    @property
    def start_models(self) -> tuple[str, ...]:
        """The model of every starting point, in suite order (one for a plain `model:`)."""
        return tuple(model for _, model in self.starts) or (self.model,)

    @property
    def start_points(self) -> tuple[tuple[str, str], ...]:
        """Every starting point as (name, model): the names `model:` gives, or the model itself
        for a plain `model:` (one unnamed start)."""
        return self.starts or ((self.model, self.model),)


TOP_LEVEL_KEYS = {
    "name", "description", "sandbox", "model", "dataset", "data", "methods", "seeds", "budget", "train",
    "evaluate", "plugins", "tune", "hardware",
}
# The sections read into a config dataclass; every field is checked by its declared constraints.
SECTIONS: dict[str, type] = {"data": DataConfig, "budget": Budget, "train": TrainConfig, "evaluate": EvalConfig,
                             "hardware": HardwareConfig}


class Source:
    """Where a suite's keys came from: the file, or a `--set` override given on the command line;
    `where(key)` is the prefix of an error about that key."""

    def __init__(self, path: Path, overrides: dict[str, str] | None = None):
        self.path = path
        self.overrides = dict(overrides or {})  # dotted key -> the --set text that gave it

    def where(self, key: str = "", *, or_below: bool = False) -> str:
        """`or_below`: an override of a key under `key` counts too (an unknown section, e.g. the
        `trian` of `--set trian.lr=1`, that only the override wrote)."""
        for dotted, text in self.overrides.items():
            if key == dotted or key.startswith(dotted + ".") or or_below and dotted.startswith(key + "."):
                return f"--set {text} (over {self.path})"
        return str(self.path)

    def error(self, key: str, message: str, *, or_below: bool = False) -> HarnessError:
        return HarnessError(f"{self.where(key, or_below=or_below)}: {message}")


def run_suggestion(name: str | None, suite_file: str | Path | None = None) -> str:
    """How to produce results a command found missing: `harness run` with a suite file that exists
    (`suite_file`, else suites/<name>.yaml; suites/quickstart.yaml for no suite in particular), never
    a path that is not there."""
    for candidate in (suite_file, Path("suites") / f"{name or 'quickstart'}.yaml"):
        if candidate is not None and Path(candidate).is_file():
            return f"run `harness run {candidate}` first"
    if name is None:
        return "run a suite first (`harness run SUITE.yaml`)"
    return f"run `harness run SUITE.yaml` first, with the suite file whose name is {name!r}"


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
    except (OSError, UnicodeDecodeError) as err:
        raise HarnessError(f"{path}: cannot read the suite file ({err})") from None
    if not isinstance(raw, dict):
        raise HarnessError(f"{path}: a suite must be a YAML mapping of keys to values")
    given = {}
    for override in overrides or []:
        given[_apply_override(raw, override, path)] = override
    return parse_suite(raw, path, given)


def parse_suite(raw: dict[str, Any], path: Path, overrides: dict[str, str] | None = None) -> Suite:
    """Check every key and value of a raw suite mapping and build the Suite; `overrides` maps the
    dotted keys given with `--set` to their text, so that an error names where the key came from."""
    src = Source(path, overrides)
    _reject_unknown(raw, TOP_LEVEL_KEYS, src, "")
    if "methods" not in raw:
        raise src.error("methods", "missing key 'methods' (a list of method names, see `harness methods`)")
    configs = {key: _section(raw, key, cls, src) for key, cls in SECTIONS.items()}
    starts = _starts(raw.get("model", SANDBOX), src)
    suite = Suite(
        name=check_name(raw.get("name", path.stem), f"{src.where('name')}: name"),
        path=path,
        description=_text(raw, "description", src, ""),
        methods=_parse_methods(raw["methods"], src),
        sandbox=_mapping(raw.get("sandbox"), src, "sandbox"),
        model=starts[0][1] if starts else _text(raw, "model", src, SANDBOX, required=True),
        starts=starts,
        dataset=_text(raw, "dataset", src, SANDBOX, required=True),
        seeds=_seeds(raw.get("seeds", [0]), src),
        plugins=_strings(raw.get("plugins") or [], src, "plugins", "[my_loss.py]"),
        overrides=dict(overrides or {}),
        tune=_tune(raw, src) if "tune" in raw else None,
        **configs,
    )
    _cross_checks(suite, src)
    return suite


def _text(raw: dict[str, Any], key: str, src: Source, default: str, *, required: bool = False) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str) or required and not value.strip():
        raise src.error(key, f"{key} = {value!r} should be {'a non-empty' if required else 'a'} string")
    return value


def _starts(value: Any, src: Source) -> tuple[tuple[str, str], ...]:
    """`model:` as a mapping of starting points (name -> model), e.g. the sandbox's
    {sft: sandbox, base: sandbox:base, instruct: sandbox:instruct}; () for a single model."""
    if not isinstance(value, dict):
        return ()
    if not value or not all(isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in value.items()):
        raise src.error("model", "model must be a model name or a mapping of starting points to model names, "
                                 "e.g. {sft: sandbox, base: sandbox:base, instruct: sandbox:instruct}")
    models = list(value.values())
    repeated = next((m for m in models if models.count(m) > 1), None)
    if repeated is not None:
        raise src.error("model", f"model: {repeated!r} names two starting points; give each its own model")
    return tuple(value.items())


def _tune(raw: dict[str, Any], src: Source) -> TuneConfig:
    """The `tune:` section: its scalar fields checked like any section's; seeds (may be empty: the
    suite's) and the space overrides (checked against the losses by harness.tuning.space) apart."""
    given = _mapping(raw.get("tune"), src, "tune")
    space = _mapping(given.pop("space", None), src, "tune.space")
    seeds = given.pop("seeds", None)
    config = replace(_section({"tune": given}, "tune", TuneConfig, src), space=space,
                     seeds=_seeds(seeds, src, "tune.seeds") if seeds is not None else ())
    if "trials" not in given:
        raise src.error("tune.trials", "tune.trials is missing: the number of trials every method gets, e.g. 8")
    return config


def _seeds(value: Any, src: Source, key: str = "seeds") -> tuple[int, ...]:
    ok = isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                   for s in value)
    if not ok:
        raise src.error(key, f"{key} = {value!r} should be a non-empty list of integers >= 0, e.g. [0, 1, 2]")
    if len(set(value)) != len(value):
        raise src.error(key, f"{key} = {value!r} lists a seed twice; list each once")
    return tuple(value)


def _strings(value: Any, src: Source, key: str, example: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) and v.strip() for v in items):
        raise src.error(key, f"{key} = {value!r} should be a list of names, e.g. {example}")
    return tuple(items)


# Checks that involve more than one key: (the check, the message); a message starts with the key
# it names ("train.grad_accumulation = 3 must divide ..."), so an error says where that key came from.
CROSS_CHECKS: list[tuple[Callable[[Suite], bool], Callable[[Suite], str]]] = [
    (lambda s: s.train.quantize == "none" or s.train.peft.enabled,
     lambda s: f"train.quantize = {s.train.quantize!r} quantizes a frozen base, which only LoRA has; set "
               "train.peft.r (e.g. 16) or train.quantize=none"),
    (lambda s: s.train.distributed.processes == 1 or not s.train.peft.enabled,
     lambda s: "train.distributed shards a full fine-tune's weights, gradients and AdamW state; a LoRA run's "
               "are small: remove train.distributed (or train.peft)"),
    (lambda s: s.train.distributed.processes == 1 or s.tune is None,
     lambda s: "train.distributed is not wired for a suite with a tune: section (its trials are proposed as "
               "results arrive, by one process); remove train.distributed or tune:"),
    (lambda s: s.train.batch_size % s.train.grad_accumulation == 0,
     lambda s: f"train.grad_accumulation = {s.train.grad_accumulation} must divide train.batch_size = "
               f"{s.train.batch_size} (each micro-batch gets batch_size / grad_accumulation examples)"),
    (lambda s: s.train.distributed.processes == 1 or s.train.batch_size % s.train.micro_batches == 0,
     lambda s: f"train.distributed.gpus = {s.train.distributed.gpus} with train.grad_accumulation = "
               f"{s.train.grad_accumulation} cuts a batch into {s.train.micro_batches} micro-batches, which must "
               f"divide train.batch_size = {s.train.batch_size}; make grad_accumulation a multiple of gpus"),
    (lambda s: s.data.max_prompt_length < s.train.max_length,
     lambda s: f"data.max_prompt_length = {s.data.max_prompt_length} leaves no room for a completion in "
               f"train.max_length = {s.train.max_length}; make it smaller than train.max_length"),
    (lambda s: s.dataset == SANDBOX or s.evaluate.reward_model != "gold",
     lambda s: f"evaluate.reward_model 'gold' scores the sandbox's language only; with dataset {s.dataset!r} "
               "name a reward model (a local folder or a Hub id)"),
    (lambda s: s.dataset == SANDBOX or s.data.eval_split != s.data.train_split,
     lambda s: f"data.eval_split = {s.data.eval_split!r} is also the train split; held-out pairs need another "
               "split (e.g. test)"),
]


CROSS_CHECKS.append(
    (lambda s: bool(s.evaluate.judge.model) == bool(s.evaluate.judge.base_url),
     lambda s: "evaluate.judge needs both model and base_url (the OpenAI-compatible server, e.g. "
               "http://localhost:8000/v1); give both, or remove evaluate.judge"))


def _sampling_problem(suite: Suite) -> str | None:
    e = suite.evaluate
    return sampling_problem(temperature=e.temperature, top_k=e.top_k, top_p=e.top_p, max_new_tokens=e.max_new_tokens)


CROSS_CHECKS.append(  # harness.sampling's rules, shared with the sandbox: "top_p = 0.0 must be in (0, 1]"
    (lambda s: _sampling_problem(s) is None, lambda s: f"evaluate.{_sampling_problem(s)}"))


def _cross_checks(suite: Suite, src: Source) -> None:
    for check, message in CROSS_CHECKS:
        if not check(suite):
            text = message(suite)
            raise src.error(text.split(" ", 1)[0], text)


def check_budget_size(suite: Suite, *, allow_large: bool = False) -> None:
    """Refuse a budget past LARGE_BUDGETS (a run that would not end) unless `allow_large`."""
    limit = LARGE_BUDGETS[suite.budget.kind]
    if suite.budget.value > limit and not allow_large:
        raise HarnessError(
            f"{suite.where('budget.value')}: budget.value = {suite.budget.value:g} {suite.budget.kind} is past {limit:g}, which would "
            "not finish; lower it, or pass --allow-large-budget if you mean it"
        )


def _parse_methods(value: Any, src: Source) -> tuple[MethodEntry, ...]:
    if not isinstance(value, list) or not value:
        raise src.error("methods", "methods must be a non-empty list, e.g. [dpo, {ipo: {tau: 0.1}}]")
    entries = []
    for item in value:
        if isinstance(item, str) and item.strip():
            entries.append(MethodEntry(item))
        elif isinstance(item, dict) and len(item) == 1 and "mix" in item:
            entries.append(MethodEntry(*parse_mix(item["mix"], f"{src.where('methods')}: methods")))
        elif isinstance(item, dict) and len(item) == 1 and isinstance(next(iter(item)), str):
            (name, hparams), = item.items()
            entries.append(MethodEntry(name, _grid_values(_mapping(hparams, src, f"methods.{name}"), src, name)))
        else:
            raise src.error("methods", f"methods entry {item!r} must be a name or {{name: {{hparam: value}}}}")
    return tuple(entries)


def _grid_values(hparams: dict[str, Any], src: Source, method: str) -> dict[str, Any]:
    """A method's hyper-parameters, where a list is a grid's values: an empty one would expand to
    no setting at all, and the entry would silently run its defaults instead."""
    for name, value in hparams.items():
        if value == []:
            raise src.error(f"methods.{method}.{name}", f"methods.{method}.{name} = [] is an empty grid; give at "
                                                       f"least one value (e.g. {name}: [0.1, 0.3]) or remove it "
                                                       "for the default")
    return hparams


def _section(raw: dict[str, Any], key: str, cls: type, src: Source):
    """A config section: unknown keys get a "did you mean", each value is coerced to its field's
    type and checked against the field's declared constraints (see `setting`)."""
    given = _mapping(raw.get(key), src, key)
    refused = next((k for k in given if k in getattr(cls, "REFUSED", {})), None)
    if refused is not None:
        raise src.error(f"{key}.{refused}", f"{key}.{refused} is refused: it {cls.REFUSED[refused]}, which disabling "
                                            "the adapters does not revert, so the base would no longer be the "
                                            "reference; remove it")
    known = {f.name: f for f in fields(cls)}
    _reject_unknown(given, set(known), src, f"{key}.")
    defaults = cls()
    values = {}
    for name, value in given.items():
        dotted = f"{key}.{name}"
        default = getattr(defaults, name)
        if is_dataclass(default):  # a nested section (train.peft)
            values[name] = _section({dotted: value}, dotted, type(default), src)
            continue
        if isinstance(default, tuple):  # a list of names: one name alone is a list of one
            values[name] = _strings(value, src, dotted, "[arc_easy]")
        else:
            values[name] = _coerced(cls, name, value, default, f"{src.where(dotted)}: {dotted}")
        check_value(values[name], known[name].metadata.get("checks", ()), f"{src.where(dotted)}: {dotted}")
    return replace(defaults, **values)


def _coerced(cls: type, name: str, value: Any, default: Any, where: str) -> Any:
    """`coerce`, with the field's own advice (a section's HINTS) added to a refusal."""
    try:
        return coerce(value, default, where)
    except HarnessError as err:
        hint = getattr(cls, "HINTS", {}).get(name)
        advice = hint(value) if hint else ""
        raise HarnessError(f"{err}{advice}") from None


def _mapping(value: Any, src: Source, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise src.error(key, f"{key} must be a mapping of keys to values, not {value!r}")
    return dict(value)


def _reject_unknown(given: dict[str, Any], known: set[str], src: Source, prefix: str) -> None:
    for key in given:
        if key not in known:
            raise src.error(f"{prefix}{key}", f"unknown key {prefix}{key!r}{did_you_mean(str(key), known)}",
                            or_below=True)


def _apply_override(raw: dict[str, Any], override: str, path: Path) -> str:
    """Apply `a.b=value` to the raw mapping (the value is parsed as YAML: numbers, lists...);
    returns the dotted key."""
    dotted, sep, text = override.partition("=")
    keys = dotted.strip().split(".")
    if not sep or not all(k.strip() for k in keys):
        raise HarnessError(f"--set {override!r}: expected KEY=VALUE with a dotted key, e.g. budget.value=1e11")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise HarnessError(f"--set {override!r}: the value is not valid YAML; quote it "
                           f"(e.g. --set '{dotted}=\"{text}\"') or fix its brackets") from None
    node = raw
    for i, key in enumerate(keys[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise HarnessError(f"--set {override} (over {path}): {'.'.join(keys[: i + 1])} is not a mapping")
        node = child
    node[keys[-1]] = value
    return ".".join(keys)
