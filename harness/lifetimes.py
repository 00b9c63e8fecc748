"""How long each model of a suite is held: loaded when a step needs it, released when none does.

The runner (harness.runner) holds the start model and the reward model through `Held`: the start
model is loaded for what reads it (the reference cache, a live reference, the baseline, each
run's evaluation) and released before a run trains whose reference comes from the cache, so no
frozen copy sits beside the policy; the reward model is loaded for scoring and released before
the next run trains. Loading again costs a read from disk (the page cache, usually), against a
training run's minutes or hours.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Generic, TypeVar

import torch

T = TypeVar("T")


class Held(Generic[T]):
    """A model loaded on first use (`get`) and dropped on `release`, its memory returned."""

    def __init__(self, load: Callable[[], T]):
        self._load, self._value = load, None

    @property
    def loaded(self) -> bool:
        return self._value is not None

    def get(self) -> T:
        if self._value is None:
            self._value = self._load()
        return self._value

    def release(self) -> None:
        if self._value is None:
            return
        self._value = None
        gc.collect()  # the model's tensors are freed now, not at the next collection
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
