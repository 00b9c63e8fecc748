"""Checking one configured value: its type (coerced from YAML like the default's) and its range.

Shared by the suite schema (harness.suite: every section's fields declare their constraint in the
field's metadata) and by the hyper-parameters of losses and regimes, so that a suite key, a
`--set` override and a loss's `beta` are judged by the same rules. Imports no torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from harness.errors import HarnessError, did_you_mean


@dataclass(frozen=True)
class Constraint:
    """A check on one value, with the text shown when it fails (`hint` adds a "did you mean")."""

    check: Callable[[Any], bool]
    text: str
    hint: Callable[[Any], str] | None = None

    def message(self, value: Any) -> str:
        """Why `value` fails: the constraint's text and, for choices, the nearest valid one."""
        return self.text + (self.hint(value) if self.hint else "")


def positive() -> Constraint:
    return Constraint(lambda v: v > 0, "must be > 0")


def non_negative() -> Constraint:
    return Constraint(lambda v: v >= 0, "must be >= 0")


def at_least(low: float) -> Constraint:
    return Constraint(lambda v: v >= low, f"must be >= {low}")


def in_range(low: float, high: float, *, high_open: bool = False, low_open: bool = False) -> Constraint:
    lo_b, hi_b = ("(" if low_open else "["), (")" if high_open else "]")

    def check(v: float) -> bool:
        lo_ok = v > low if low_open else v >= low
        hi_ok = v < high if high_open else v <= high
        return lo_ok and hi_ok

    return Constraint(check, f"must be in {lo_b}{low}, {high}{hi_b}")


def one_of(*choices: str) -> Constraint:
    """An enumeration: a value outside it gets the nearest choice as a "did you mean"."""
    return Constraint(lambda v: v in choices, f"must be one of {', '.join(map(repr, choices))}",
                      hint=lambda v: did_you_mean(str(v), choices).replace(" (valid: ", " (choices: "))


def each(constraint: Constraint) -> Constraint:
    """The constraint applied to every item of a list value."""
    return Constraint(lambda v: all(constraint.check(x) for x in v), f"items {constraint.text}",
                      hint=lambda v: next((constraint.hint(x) for x in v if not constraint.check(x)), "")
                      if constraint.hint else None)


def coerce(value: Any, default: Any, where: str) -> Any:
    """`value` with the type of `default` (YAML writes 1e-3 as a string, 1 as an int), refusing
    lossy or silent conversions: 1.5 for an int, "false" for a bool, NaN or infinity for a
    float, a number for a string. `where` names the key in the error ("suite.yaml: train.lr")."""
    try:
        if isinstance(default, bool):
            if isinstance(value, bool):
                return value
            raise ValueError
        if isinstance(default, float) or default is None and isinstance(value, (int, float)):
            if isinstance(value, bool):
                raise ValueError
            out = float(value)
            if not math.isfinite(out):
                raise HarnessError(f"{where} = {value!r} must be a finite number")
            return out
        if isinstance(default, int):
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        if isinstance(default, str):
            if not isinstance(value, str):
                raise ValueError
            return value
    except (TypeError, ValueError, OverflowError):
        kind = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}.get(
            type(default).__name__, f"a {type(default).__name__}")
        raise HarnessError(f"{where} = {value!r} should be {kind} like the default {default!r}") from None
    return value


def check_value(value: Any, constraints: Sequence[Constraint], where: str) -> None:
    """Raise a HarnessError naming `where` for the first constraint `value` fails."""
    for constraint in constraints:
        if not constraint.check(value):
            raise HarnessError(f"{where} = {value!r} {constraint.message(value)}")
