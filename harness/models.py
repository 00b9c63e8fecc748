"""Loading the policy, the reference and the tokenizer, with one dtype and device policy.

A model is named by "sandbox" (the sandbox's SFT model; "sandbox:base" and "sandbox:instruct" are
its pretrained and instruction-tuned starts), a local folder, or a Hub id; all go
through the same `from_pretrained` path, so the local-folder tests exercise the Hub code.
Policy (train.precision, harness.memory.resolved_precision): by default fp32 on CPU (bf16 matmuls
are far slower there), and on CUDA fp32 weights trained under bf16 autocast; pure bf16 keeps the
trained weights in bf16. Frozen models (the start model) are bf16 on CUDA, fp32 on CPU.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from harness.errors import HarnessError
from harness.memory import frozen_bytes, resolved_precision


def quiet_libraries() -> None:
    """Keep the output to harness's own lines (transformers' save progress bars, advisories)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def pick_device() -> torch.device:
    """The GPU of this process (its LOCAL_RANK's under a multi-process launch), or the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


# What a causal LM's folder needs (weights, configs, tokenizer); not other formats' duplicates
# (.bin weights are fetched only for a model without safetensors).
_MODEL_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "tokenizer*"]


def resolve_model_path(name: str, sandbox_models: dict[str, Path] | None, *, where: str = "model") -> str:
    """A local folder for a suite's `model:` value: one of the sandbox's starting models
    (`sandbox_models`: name -> folder, harness.sandbox.world.Sandbox.start_dirs), a folder, or a
    Hub id's snapshot (downloaded, or from the Hugging Face cache when offline). Always a folder,
    so that the reference cache can fingerprint the weights."""
    if name == "sandbox" or name.startswith("sandbox:"):
        if sandbox_models is None:
            raise HarnessError(f"{where}: {name} needs the sandbox to be built first")
        if name not in sandbox_models:
            raise HarnessError(f"{where}: unknown sandbox model {name!r}; use one of {', '.join(sandbox_models)}")
        return str(sandbox_models[name])
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(name, allow_patterns=_MODEL_FILES)
        if not any(Path(folder).glob("*.safetensors")):  # an older model, published as PyTorch pickles
            folder = snapshot_download(name, allow_patterns=[*_MODEL_FILES, "*.bin"])
        return folder
    except Exception as err:  # noqa: BLE001 (any failure to fetch a named model is bad input)
        raise HarnessError(f"{where}: {name!r} is not a local folder and cannot be fetched from the Hub "
                           f"({type(err).__name__}: {_first_line(err)}); offline (HF_HUB_OFFLINE=1) only "
                           "models already in the Hugging Face cache load") from None


def cached_locally(name: str) -> bool:
    """Whether a suite's `model:` value loads without the network: a sandbox model, a local
    folder, or a Hub id whose snapshot is in the Hugging Face cache."""
    if name == "sandbox" or name.startswith("sandbox:") or Path(name).expanduser().is_dir():
        return True
    try:
        from huggingface_hub import snapshot_download

        snapshot_download(name, allow_patterns=_MODEL_FILES, local_files_only=True)
        return True
    except Exception:  # noqa: BLE001 (not cached, or not a valid id: either way not loadable offline)
        return False


def load_tokenizer(name_or_path: str, *, where: str = "model"):
    """The tokenizer of a model folder or Hub id, padding with its eos token where it has no pad token."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except Exception as err:  # noqa: BLE001 (a damaged tokenizer file fails in many types; all are bad input)
        raise HarnessError(f"{where}: {name_or_path!r}: cannot load its tokenizer ({_first_line(err)}); "
                           "restore the folder's tokenizer files (tokenizer.save_pretrained writes them)") from None
    fill_pad_token(tokenizer, name_or_path, where=where)
    return tokenizer


def fill_pad_token(tokenizer, name_or_path: str, *, where: str, fallbacks: tuple[str, ...] = ("eos_token",)) -> None:
    """Give a tokenizer without a pad token the first of `fallbacks` it has (decoder-only
    tokenizers often ship without one; padding is masked everywhere); one that has none of them
    cannot pad a batch, and is refused before any work."""
    if tokenizer.pad_token is not None:
        return
    token = next((getattr(tokenizer, name) for name in fallbacks if getattr(tokenizer, name) is not None), None)
    if token is None:
        raise HarnessError(f"{where}: {name_or_path!r}: its tokenizer has neither a pad nor an eos token; set "
                           "\"eos_token\" (its end-of-text token) in the folder's tokenizer_config.json")
    tokenizer.pad_token = token


def load_policy(name_or_path: str, device: torch.device | None = None, precision: str = "auto", *,
                quantize: str = "none"):
    """A trainable causal LM on `device`: fp32 weights, or bf16 ones under train.precision=bf16;
    with quantize="nf4" (QLoRA, CUDA only: harness.train.sizing refuses it elsewhere) its linear
    layers in 4-bit NF4 through bitsandbytes, computing in bf16, for adapters to train over."""
    device = device or pick_device()
    pure_bf16 = resolved_precision(precision, device.type) == "bf16"
    if quantize == "nf4":
        from transformers import BitsAndBytesConfig

        nf4 = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
        return _load(name_or_path, torch.bfloat16, quantization_config=nf4, device_map={"": device.index or 0})
    return _load(name_or_path, torch.bfloat16 if pure_bf16 else torch.float32).to(device)


def load_frozen(name_or_path: str, device: torch.device | None = None):
    """A frozen causal LM (the start model: reference, KL anchor, baseline sampler): bf16 on
    CUDA, fp32 on CPU; gradients off, in eval mode."""
    device = device or pick_device()
    model = _load(name_or_path, torch.bfloat16 if frozen_bytes(device.type) == 2 else torch.float32).to(device)
    model.eval()
    return model.requires_grad_(False)


def _load(name_or_path: str, dtype: torch.dtype, **kwargs):
    try:
        return AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype, **kwargs)
    except OSError as err:
        raise HarnessError(f"model {name_or_path!r}: cannot load it ({_first_line(err)})") from None


def enable_gradient_checkpointing(model) -> None:
    """Recompute each decoder layer in the backward pass instead of keeping its activations
    (train.gradient_checkpointing), non-reentrant: it works with frozen inputs (a LoRA's frozen
    base) and keyword arguments. transformers' own switch, so every HF causal LM takes it."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers 5's name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.config.use_cache = False  # a KV cache is useless in training and conflicts with recomputation


def frozen_copy(model):
    """A reference model: a copy of `model` with gradients off, in eval mode."""
    reference = copy.deepcopy(model)
    reference.eval()
    reference.requires_grad_(False)
    return reference


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
