"""Checkpoints of a run in progress, so that a killed run resumes where it stopped.

One folder per run (`$HARNESS_CACHE/checkpoints/<run_id>/`): the policy's weights (and the
reference's, when a regime moves it) as safetensors, and everything else needed to continue
bit-for-bit on CPU (optimizer, scheduler, RNG states, budget counters, training curve, the
regime's phase and data) in a torch file. Written to a temporary folder and renamed, so a kill
during a save leaves the previous checkpoint intact. Removed once the run's results are stored.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from harness.cache import cache_root


def _state_dict_for_save(model: torch.nn.Module | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A model's (or a state dict's) tensors to save. Tied weights share storage, which
    safetensors refuses; save each tensor once, contiguous."""
    out, seen = {}, {}
    for name, tensor in (model if isinstance(model, dict) else model.state_dict()).items():
        key = (tensor.data_ptr(), tuple(tensor.shape))
        if key in seen:
            continue
        seen[key] = name
        out[name] = tensor.detach().cpu().contiguous()
    return out


class RunCheckpoint:
    """Save and load the in-progress state of one run."""

    def __init__(self, run_id: str, every: int, root: Path | None = None, guard: Callable[[], None] | None = None):
        self.folder = (root or cache_root() / "checkpoints") / run_id
        self.every = every
        self.guard = guard  # called before each save; raises to stop a run that must not write

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def save(self, policy: torch.nn.Module | dict[str, torch.Tensor], reference: torch.nn.Module | None, state: dict[str, Any]) -> None:
        if self.guard is not None:
            self.guard()
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.folder.name}.", dir=self.folder.parent))
        try:
            save_file(_state_dict_for_save(policy), str(tmp / "policy.safetensors"))
            if reference is not None:
                save_file(_state_dict_for_save(reference), str(tmp / "reference.safetensors"))
            torch.save(state, tmp / "state.pt")
            old = self.folder.with_name(self.folder.name + ".old")
            if self.folder.exists():
                os.replace(self.folder, old)
            os.replace(tmp, self.folder)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def load(self) -> dict[str, Any] | None:
        """The saved state (with 'policy' and 'reference' weight dicts), or None."""
        folder = self.folder if self.folder.exists() else self.folder.with_name(self.folder.name + ".old")
        if not (folder / "state.pt").exists():
            return None
        state = torch.load(folder / "state.pt", weights_only=False)
        state["policy"] = load_file(str(folder / "policy.safetensors"))
        ref = folder / "reference.safetensors"
        state["reference"] = load_file(str(ref)) if ref.exists() else None
        return state

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        shutil.rmtree(self.folder.with_name(self.folder.name + ".old"), ignore_errors=True)


def load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Load saved weights (tied tensors were saved once; strict=False lets ties fill in)."""
    missing, unexpected = model.load_state_dict(weights, strict=False)
    params = model.state_dict()
    loaded = {params[name].data_ptr() for name in weights}
    untied = [name for name in missing if params[name].data_ptr() not in loaded]
    if unexpected or untied:
        raise RuntimeError(f"checkpoint does not match the model: {(unexpected + untied)[:3]}")


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
