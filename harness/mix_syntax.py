"""How a suite writes a mixture of losses, and how a mixture is named. Torch-free, so that the
suite parser can use it; the mixture itself is built in harness.losses.mixture.

    methods: [{mix: {dpo: 0.8, bco_pair: 0.2, sft: 1.0}}]          -> method "dpo+bco_pair+sft"
    methods: [{mix: {dpo: {weight: 0.8, beta: 0.2}, sft: 1.0}}]    -> dpo.weight, dpo.beta, sft.weight
"""

from __future__ import annotations

from typing import Any

from harness.errors import HarnessError

SEPARATOR = "+"  # between a mixture's component names
WEIGHT = "weight"  # each component's weight hyper-parameter: "<component>.weight"


def mixture_name(components: list[str]) -> str:
    return SEPARATOR.join(components)


def parse_mix(value: Any, where: str) -> tuple[str, dict[str, Any]]:
    """A suite's `{mix: {loss: weight | {weight: w, hparam: v}, ...}}` as (name, hyper-parameters).
    Weights and hyper-parameters may be lists (a grid, as for any method)."""
    if not isinstance(value, dict) or len(value) < 2:
        raise HarnessError(f"{where}: mix needs a mapping of two or more losses to weights, "
                           "e.g. {mix: {dpo: 0.8, sft: 1.0}}")
    hparams: dict[str, Any] = {}
    for component, setting in value.items():
        component = str(component)
        if SEPARATOR in component:
            raise HarnessError(f"{where}: mix.{component}: a mixture's components are single losses")
        given = dict(setting) if isinstance(setting, dict) else {WEIGHT: setting}
        for key, weight in given.items():
            if key == WEIGHT:
                _check_weight(weight, f"{where}: mix.{component}")
            hparams[f"{component}.{key}"] = weight
    return mixture_name(list(map(str, value))), hparams


def _check_weight(weight: Any, where: str) -> None:
    for value in weight if isinstance(weight, list) else [weight]:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise HarnessError(f"{where}: weight {value!r} must be a number >= 0")
