"""Fingerprints of what shaped a run, recorded in its manifest: the start model's weights, the
tokenizer, every data file, the evaluation prompts, the library versions and the hardware.

Two runs with the same run id (the same settings) should give the same numbers only when their
fingerprints match as well; `harness verify` compares them, component by component, so that a
rerun elsewhere can tell whether it built the same world. Each component is a short SHA-256 of
content, never of paths or timestamps, so the same world built twice hashes the same.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness.cache import content_hash

DIGEST_LENGTH = 16
# The libraries whose versions change numbers (kernels, tokenization, sampling, statistics).
LIBRARIES = ("torch", "transformers", "tokenizers", "safetensors", "numpy", "scipy", "vllm", "accelerate")


def weights_digest(model) -> str:
    """SHA-256 of a model's parameters and buffers as loaded (names, dtypes, shapes, bytes), in
    name order: exact, whatever file format or sharding the weights came in."""
    import torch

    digest = hashlib.sha256()
    tensors = dict(model.named_parameters())
    tensors.update(dict(model.named_buffers()))
    for name in sorted(tensors):
        t = tensors[name].detach()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:DIGEST_LENGTH]


def tokenizer_digest(tokenizer) -> str:
    """A hash of what the tokenizer does: its class, vocabulary, special tokens and settings that
    change encodings (not its files, whose formatting varies between library versions)."""
    return content_hash({
        "class": type(tokenizer).__name__,
        "vocab": sorted(tokenizer.get_vocab().items()),
        "special": {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())},
        "padding_side": tokenizer.padding_side, "truncation_side": tokenizer.truncation_side,
        "add_bos": getattr(tokenizer, "add_bos_token", None), "add_eos": getattr(tokenizer, "add_eos_token", None),
    }, DIGEST_LENGTH)


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:DIGEST_LENGTH]


def library_versions(names: Iterable[str] = LIBRARIES) -> dict[str, str]:
    """Installed versions of `names` (those not installed are left out), Python and harness."""
    from harness import __version__

    versions = {"python": platform.python_version(), "harness": __version__}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def hardware(device) -> dict[str, Any]:
    """What the numbers were computed on: float results differ between CPU models, GPUs and
    thread counts (reductions in another order)."""
    import torch

    info: dict[str, Any] = {"device": device.type, "machine": platform.machine(), "cpu": _cpu_model(),
                            "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def world_fingerprint(*, start_model, tokenizer, files: dict[str, Path], eval_prompts: list[str],
                      sandbox: str | None, device) -> dict[str, Any]:
    """The fingerprint of a suite's shared world and environment (one per suite run; every
    manifest carries it). `digest` hashes every other entry."""
    parts: dict[str, Any] = {
        "start_model": weights_digest(start_model),
        "tokenizer": tokenizer_digest(tokenizer),
        "data": {name: file_digest(path) for name, path in sorted(files.items()) if Path(path).is_file()},
        "eval_prompts": content_hash(list(eval_prompts), DIGEST_LENGTH),
        "sandbox": sandbox,
        "libraries": library_versions(),
        "hardware": hardware(device),
    }
    return {"digest": content_hash(parts, DIGEST_LENGTH), **parts}


def fingerprint_differences(stored: dict[str, Any] | None, current: dict[str, Any] | None) -> list[str]:
    """The components (dotted names, e.g. data.paired, libraries.torch) in which two fingerprints
    differ; ["missing"] when either has none."""
    if not stored or not current:
        return ["missing"]
    return sorted(_differences(
        {k: v for k, v in stored.items() if k != "digest"}, {k: v for k, v in current.items() if k != "digest"}, ""))


def _differences(a: Any, b: Any, prefix: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _differences(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]
