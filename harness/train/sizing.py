"""A planned run's memory (harness.memory) and the device checks made before anything loads.

`harness plan` prints `predict_run` for each run on the suite's stated hardware (or the visible
device); `harness run` calls `check_devices` first, which refuses, with one line each:
train.quantize off CUDA, hardware.gpus or train.distributed.gpus past the visible GPUs, a method
FSDP cannot shard (its regime reads the policy between steps), bf16 on a GPU without it, LoRA
target modules the model does not have, and a run whose predicted peak does not fit the visible
device (naming the settings that would make it fit).
"""

from __future__ import annotations

import importlib.util
import os

import torch

from harness.errors import HarnessError
from harness.losses import get_loss
from harness.losses.regimes import REGIMES, train_data_shape
from harness.memory import (GIB, HEADROOM, Architecture, Device, Lora, Prediction, RunShape, fits, model_config, predict,
                            resolved_precision, what_would_fit)
from harness.needs import reference_runs_live
from harness.plan import RunSpec
from harness.suite import Suite
from harness.train.hardware import PEAK_BF16_FLOPS


def architecture(model: str, folder: str | None = None) -> Architecture:
    from harness.suite import SANDBOX_MODELS

    if folder is None and model in SANDBOX_MODELS:  # no config anywhere before the sandbox is built
        raise HarnessError(f"model {model!r}: the sandbox's models are built on the first run; "
                           "`harness sandbox build` first, then plan again")
    return Architecture.from_config(model_config(model, folder), where=f"model {model!r}")


def fsdp_processes(spec: RunSpec) -> int:
    """The processes FSDP shards the run's trained state over: `train.distributed.gpus` under
    strategy fsdp, or an accelerate FSDP launch's (ACCELERATE_USE_FSDP and WORLD_SIZE); else 1
    (a replica per process under DDP)."""
    if spec.train.distributed.processes > 1:
        return spec.train.distributed.processes
    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true")
    return int(os.environ.get("WORLD_SIZE", "1")) if fsdp else 1


def run_shape(spec: RunSpec, device_type: str, arch: Architecture, shards: int = 1) -> RunShape:
    """What the run's memory depends on, from its settings and its method's declarations."""
    train = spec.train
    lora = None
    if spec.trains and train.peft.enabled:
        lora = Lora(train.peft.r, lora_targets(arch, train.peft.target_modules, where="train.peft.target_modules"))
    shape = dict(micro_batch=train.batch_size // train.micro_batches, rows_per_example=1, live_reference=False)
    if spec.trains:
        loss = get_loss(spec.method)
        moves = REGIMES.get(loss.regime).name != "standard"  # a regime's own reference copy (TR-DPO, sDPO, SPIN)
        shape.update(rows_per_example=2 if train_data_shape(loss) == "paired" else 1,
                     live_reference=loss.uses_reference and reference_runs_live(loss.needs, moves) or moves)
    return RunShape(**shape, max_length=train.max_length, precision=resolved_precision(train.precision, device_type),
                    device_type=device_type, trains=spec.trains, checkpointing=train.gradient_checkpointing,
                    lora=lora, quantize=train.quantize, shards=shards,
                    eval_length=spec.train.max_length + spec.evaluate.max_new_tokens,
                    vllm=spec.evaluate.backend == "vllm" or spec.evaluate.backend == "auto" and _has_vllm(device_type))


def lora_targets(arch: Architecture, targets: tuple[str, ...], *, where: str) -> tuple[str, ...]:
    """The linear layers LoRA adapts ("all-linear": every one of a decoder layer); a name the
    model does not have is bad input."""
    known = tuple(arch.layer_linear_parameters())
    if tuple(targets) == ("all-linear",):
        return known
    unknown = [t for t in targets if t not in known]
    if unknown:
        raise HarnessError(f"{where}: the model has no module {unknown[0]!r}; its linear layers are "
                           f"{', '.join(known)} (or give all-linear)")
    return tuple(targets)


def predict_run(spec: RunSpec, suite: Suite, device_type: str, folder: str | None = None,
                shards: int | None = None) -> Prediction:
    """The run's memory per device; sharded over `shards` processes (default: its own, fsdp_processes)."""
    arch = architecture(spec.model, folder)
    shards = fsdp_processes(spec) if shards is None else shards
    return predict(arch, run_shape(spec, device_type, arch, shards), reward=_reward_architecture(suite))


def _reward_architecture(suite: Suite) -> Architecture | None:
    """The reward model's shape; None for the sandbox's gold reward (no network)."""
    name = suite.evaluate.reward_model
    return None if name == "gold" else architecture(name)


def _has_vllm(device_type: str) -> bool:
    if device_type != "cuda":
        return False
    return importlib.util.find_spec("vllm") is not None


def visible_device() -> Device:
    """The device `harness run` trains on: the first GPU, or the machine's memory on CPU."""
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return Device(props.name, float(props.total_memory), torch.cuda.device_count())
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return Device("cpu", float(memory), 0)


def stated_device(suite: Suite) -> Device | None:
    """The hardware the suite states it is sized for (`hardware:`), or None."""
    hw = suite.hardware
    return Device(hw.gpu, hw.memory_gb * GIB, hw.gpus) if hw.gpu else None


def peak_flops_of(name: str) -> float:
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), float("nan"))


def check_devices(suite: Suite, specs: list[RunSpec], model_folders: dict[str, str] | None = None) -> None:
    """Everything about the device the suite's runs need, before anything loads (see the module)."""
    device = visible_device()
    cuda = device.name != "cpu"
    train = suite.train
    if train.quantize != "none" and not cuda:
        raise HarnessError(f"{suite.where('train.quantize')}: train.quantize = {train.quantize!r} needs a CUDA GPU "
                           "(bitsandbytes); none is visible: set train.quantize=none")
    if cuda and train.distributed.processes > device.count:  # on CPU, gpus: N means N gloo processes
        raise HarnessError(f"{suite.where('train.distributed.gpus')}: train.distributed.gpus = "
                           f"{train.distributed.gpus} but {device.count} GPU(s) are visible; run where that many "
                           "are (submit asks the executor for them), or lower train.distributed.gpus")
    if suite.hardware.gpu and suite.hardware.gpus > max(device.count, 1 if cuda else 0):
        raise HarnessError(f"{suite.where('hardware.gpus')}: hardware.gpus = {suite.hardware.gpus} but {device.count} "
                           "GPU(s) are visible; run where that many are, or lower hardware.gpus")
    for needed, package, extra in ((train.peft.enabled, "peft", "peft"), (train.quantize == "nf4", "bitsandbytes", "qlora")):
        if needed and importlib.util.find_spec(package) is None:
            key = "train.peft" if package == "peft" else "train.quantize"
            raise HarnessError(f"{suite.where(key)}: {key} needs {package}, which is not installed: "
                               f"pip install 'harness[{extra}]'")
    precision = resolved_precision(train.precision, "cuda" if cuda else "cpu")
    if cuda and precision.startswith("bf16") and not torch.cuda.is_bf16_supported():
        raise HarnessError(f"{suite.where('train.precision')}: train.precision = {train.precision!r} computes in bf16, "
                           f"which {device.name} does not support; set train.precision=fp32")
    _check_sharded_methods(suite, specs)
    folders = model_folders or {}
    for spec in specs:
        if not _shape_known(spec.model, folders.get(spec.model)):
            continue  # not cached yet (a Hub id): checked when `harness run` has fetched it
        if spec.trains and train.peft.enabled:
            lora_targets(architecture(spec.model, folders.get(spec.model)), train.peft.target_modules,
                         where=f"{suite.where('train.peft.target_modules')}: train.peft.target_modules")
        prediction = predict_run(spec, suite, "cuda" if cuda else "cpu", folders.get(spec.model))
        if not fits(prediction, device):
            arch = architecture(spec.model, folders.get(spec.model))
            fixes = what_would_fit(arch, run_shape(spec, "cuda" if cuda else "cpu", arch, fsdp_processes(spec)), device,
                                   _reward_architecture(suite))
            raise HarnessError(f"{suite.path}: run {spec.label()} ({spec.run_id}) needs {prediction.describe()} per "
                               f"device, more than {HEADROOM:.0%} of {device.describe()}; fits with: "
                               f"{'; '.join(fixes) if fixes else 'none of LoRA, checkpointing or micro-batch 1 alone: more memory per GPU'}")


def _check_sharded_methods(suite: Suite, specs: list[RunSpec]) -> None:
    """A run sharded with FSDP whose regime reads the policy between optimizer steps is refused."""
    for spec in specs:
        if spec.gpus_per_run() > 1:
            regime = REGIMES.get(get_loss(spec.method).regime)
            if regime.reads_policy_between_steps:
                raise HarnessError(f"{suite.where('train.distributed')}: method {spec.method!r} (regime "
                                   f"{regime.name!r}) reads the policy between optimizer steps, which FSDP holds "
                                   "only sharded; run it in a suite without train.distributed")


def _shape_known(model: str, folder: str | None) -> bool:
    try:
        model_config(model, folder)
        return True
    except HarnessError:
        return False


def model_folders(suite: Suite) -> dict[str, str]:
    """The sandbox's start models' folders when its world is built ({} otherwise): their configs
    give their shapes. Real models are found by name (harness.memory.model_config)."""
    from harness.sandbox.world import SandboxConfig, find_sandbox
    from harness.suite import SANDBOX_MODELS

    if not any(m in SANDBOX_MODELS for m in suite.start_models):
        return {}
    sandbox = find_sandbox(SandboxConfig.from_dict(suite.sandbox, str(suite.path)))
    return {name: str(path) for name, path in sandbox.start_dirs().items()} if sandbox else {}


def budget_flops_bound(spec: RunSpec, arch: Architecture) -> float:
    """The FLOPs a run's budget allows, at most: a FLOP budget itself; other kinds counted at
    max_length tokens per sequence (shorter sequences cost less), the reference's forward included
    when the method reads it."""
    from harness.train.flops import ModelShape

    if spec.budget.kind == "flops":
        return spec.budget.value
    train = spec.train
    loss = get_loss(spec.method)
    rows = 2 if train_data_shape(loss) == "paired" else 1
    examples = {"examples": spec.budget.value, "steps": spec.budget.value * train.batch_size,
                "tokens": spec.budget.value / (rows * train.max_length)}[spec.budget.kind]
    shape = ModelShape.of_architecture(arch, lora=run_shape(spec, "cuda", arch).lora)
    sequences = [train.max_length] * rows
    per_example = shape.train_flops(sequences) + (shape.forward_flops(sequences) if loss.uses_reference else 0.0)
    return examples * per_example
