"""One generic registry for everything that is chosen by name: losses, regimes, evaluators,
datasets, reward models. Unknown names get a "did you mean" error, as in lm-eval."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from harness.errors import HarnessError, did_you_mean
from harness.names import check_name

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> object, filled by decorators at import time."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T, *, replace: bool = False) -> T:
        # a registered name is written into results, reports and sometimes paths: a plain name only
        check_name(name, f"{self.kind} name")
        if name in self._items and not replace:
            raise HarnessError(f"{self.kind} {name!r} is already registered; pick another name")
        self._items[name] = item
        return item

    def get(self, name: str, *, where: str = "") -> T:
        if name not in self._items:
            prefix = f"{where}: " if where else ""
            raise HarnessError(f"{prefix}unknown {self.kind} {name!r}{did_you_mean(name, self._items)}")
        return self._items[name]

    def remove(self, name: str) -> None:
        self._items.pop(name, None)

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def decorator(self, name: str, factory: Callable[[Callable], T]) -> Callable[[Callable], Callable]:
        """A decorator that registers `factory(fn)` under `name` and returns `fn` unchanged."""

        def wrap(fn: Callable) -> Callable:
            self.add(name, factory(fn))
            return fn

        return wrap
