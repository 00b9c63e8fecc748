"""The shared core loss module: one small pure function per method, registered by name.

Usable without the trainer:

    from harness.losses import LossInputs, get_loss
    out = get_loss("dpo")(LossInputs(policy_chosen_logps=..., ...), beta=0.1)
    out.losses.mean().backward()
"""

from __future__ import annotations

import importlib
import pkgutil

from harness.losses.base import (
    LOSSES,
    NEEDS,
    SHARED_SPACE,
    Constraint,
    Dimension,
    LossInputs,
    LossOutput,
    LossSpec,
    choice,
    in_range,
    linear_range,
    log_range,
    non_negative,
    one_of,
    positive,
    register_loss,
)

from harness.losses.mixture import mixture_spec


def get_loss(name: str, *, where: str = "") -> LossSpec:
    """The registered loss `name`, or the mixture it names (components joined by "+",
    harness.losses.mixture), built from the registry on every call. Defined here, above both
    the registry (base) and the mixtures, so that neither module imports the other back."""
    if "+" in name and name not in LOSSES:
        return mixture_spec(name, where=where)
    return LOSSES.get(name, where=where)


_INFRASTRUCTURE = {"base", "common", "contract", "mixture", "running", "spaces"}


def _import_builtin_losses() -> None:
    """Import every module of this package so that its @register_loss decorators run."""
    for module in pkgutil.iter_modules(__path__):
        if module.name not in _INFRASTRUCTURE and not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


_import_builtin_losses()

__all__ = [
    "LOSSES",
    "NEEDS",
    "SHARED_SPACE",
    "Constraint",
    "Dimension",
    "LossInputs",
    "LossOutput",
    "LossSpec",
    "choice",
    "get_loss",
    "in_range",
    "linear_range",
    "log_range",
    "non_negative",
    "one_of",
    "positive",
    "register_loss",
]
