"""Each method's search space in a tuned suite: the loss's declared space, narrowed by `tune.space`.

The declared space (LossSpec.space: the shared learning rate, then the loss's own dimensions) is
the default; a hyper-parameter the loss gives no range gets one derived by one stated rule
(harness.losses.base.DERIVATION_RULE; marked "derived" in the trials table and the report), so a
plugin written without a space still gets the same trials as every built-in. A numeric one that no
rule covers is refused before anything runs, naming the `search_space=` to add. A suite overrides a dimension per method, or for every method under "*":

    tune:
      space:
        "*":  {lr: 1.0}                        # one value: the dimension is fixed (lr: × train.lr)
        dpo:  {beta: [0.01, 0.1, 0.5]}         # a list: those values (a grid's points)
        ipo:  {tau: {low: 0.01, high: 1.0, scale: log}}   # a range

Every value of an override must satisfy the loss's constraint on that hyper-parameter (a negative
β range is refused before anything runs). A dimension's *centre* is the value a method runs with
untuned: the suite's own setting for it (methods: [{simpo: {beta: 2.5}}]) or the loss's default,
and a learning-rate factor of 1; a one-point grid is the centre, so it reproduces the untuned run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from harness.errors import HarnessError, did_you_mean
from harness.losses import get_loss
from harness.losses.base import Dimension, check_dimension, choice, derive_space, positive
from harness.suite import MethodEntry, Suite

ALL_METHODS = "*"
LR = "lr"  # the shared learning-rate dimension, a factor of train.lr


@dataclass(frozen=True)
class MethodSpace:
    """The space one method is tuned over, and where it starts."""

    method: str
    dimensions: dict[str, Dimension]  # name -> range or choices; "lr" is a factor of train.lr
    centre: dict[str, Any]  # name -> the untuned value (given or default; lr factor 1.0)
    fixed: dict[str, Any]  # hyper-parameters the suite gives as scalars, outside the space


def method_space(suite: Suite, entry: MethodEntry) -> MethodSpace:
    """`entry`'s search space under `suite`'s overrides. Raises HarnessError for an override that
    names no dimension, is malformed, or leaves the loss's constraints."""
    loss = get_loss(entry.name, where=f"{suite.path}: methods")
    own = _overrides(suite, entry.name)
    shared = _overrides(suite, ALL_METHODS)
    space = {**loss.space, **_derived(suite, loss, overridden={*own, *shared})}
    overrides = {**{(ALL_METHODS, k): v for k, v in shared.items() if k not in own},
                 **{(entry.name, k): v for k, v in own.items()}}
    for (owner, key), value in overrides.items():
        where = f"{suite.path}: tune.space.{owner}.{key}"
        if key not in space:
            if owner == ALL_METHODS:  # a "*" dimension this method lacks does not apply to it
                continue
            raise HarnessError(f"{where}: {entry.name} has no dimension {key!r}{did_you_mean(key, space)}")
        dim = _dimension(value, where)
        space[key] = replace(dim, relative_to=space[key].relative_to)  # lr stays a factor of train.lr
        check_dimension(where, space[key], positive() if key == LR else loss.constraints.get(key))
    given = {k: v for k, v in entry.hparams.items() if not isinstance(v, list)}
    defaults = loss.hparams
    centre = {key: (1.0 if key == LR else given.get(key, defaults.get(key))) for key in space}
    fixed = {k: v for k, v in given.items() if k not in space}
    return MethodSpace(entry.name, space, centre, fixed)


def _derived(suite: Suite, loss, overridden: set[str]) -> dict[str, Dimension]:
    """The loss's derived dimensions; a numeric hyper-parameter no rule covers is a HarnessError
    unless the suite's tune.space gives it a range (its placeholder is replaced by that override)."""
    dims, uncovered = derive_space(loss)
    for key in uncovered:
        if key in overridden:
            dims[key] = choice(loss.hparams[key], source="placeholder for the suite's tune.space override")
    uncovered = [key for key in uncovered if key not in overridden]
    if uncovered:
        key, default = uncovered[0], loss.hparams[uncovered[0]]
        raise HarnessError(
            f"{suite.path}: tune: {loss.origin}: loss {loss.name!r} declares no search space for {key!r} and none "
            f"can be derived from its default {default!r}; give register_loss(..., search_space={{{key!r}: "
            "linear_range(low, high, source)}) or fix it in the suite's tune.space")
    return dims


def derived_names(space: MethodSpace) -> list[str]:
    """The dimensions of `space` that were derived, not declared (for the trials table)."""
    return [key for key, dim in space.dimensions.items() if dim.derived]


def check_methods(suite: Suite) -> dict[str, MethodSpace]:
    """Every method's space, checked before any work; a `tune.space` key naming no method of the
    suite is a typo."""
    names = [entry.name for entry in suite.methods]
    for key in suite.tune.space:
        if key != ALL_METHODS and key not in names:
            raise HarnessError(f"{suite.path}: tune.space.{key}: no such method in the suite{did_you_mean(key, names)}")
    return {entry.name: method_space(suite, entry) for entry in suite.methods}


def _overrides(suite: Suite, key: str) -> dict[str, Any]:
    value = suite.tune.space.get(key) or {}
    if not isinstance(value, Mapping):
        raise HarnessError(f"{suite.path}: tune.space.{key} must map dimensions to values, e.g. {{beta: [0.05, 0.1]}}")
    return dict(value)


def _dimension(value: Any, where: str) -> Dimension:
    """A suite's override as a Dimension: a scalar (fixed), a list (choices) or {low, high, scale}."""
    source = f"suite override ({where.split(': ', 1)[0]})"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return choice(value, source=source)
    if isinstance(value, list) and value and all(isinstance(v, (int, float, bool, str)) for v in value):
        return choice(*dict.fromkeys(value), source=source)
    if isinstance(value, Mapping) and {"low", "high"} <= set(value) <= {"low", "high", "scale"}:
        scale = value.get("scale", "linear")
        if scale not in ("log", "linear"):
            raise HarnessError(f"{where}: scale {scale!r} should be log or linear")
        try:
            low, high = float(value["low"]), float(value["high"])
        except (TypeError, ValueError):
            raise HarnessError(f"{where}: low and high must be numbers") from None
        return Dimension(scale, source, low, high)
    raise HarnessError(f"{where} = {value!r}: give one value, a list of values or {{low, high, scale: log|linear}}")
