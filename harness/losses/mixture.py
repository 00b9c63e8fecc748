"""Mixtures: a weighted sum of registered losses, a method like any other.

A mixture is named by its components joined with "+" (`dpo+bco_pair+sft`), so its name says what
it is and every process can rebuild it from the name alone (no registration, nothing to ship to
a SLURM or Ray worker). Its hyper-parameters are each component's, prefixed with the component's
name (`dpo.beta`), and one weight per component (`dpo.weight`, default 1); they are recorded with
every result like any other hyper-parameters, and its version names its components' versions, so
a change to a component changes the mixture's run ids too. The trainer provides the union of the
components' needs; each component reads what it declared and ignores the rest.

In a suite:  methods: [{mix: {dpo: 0.8, bco_pair: 0.2, sft: 1.0}}]   (or {dpo: {weight: 0.8, beta: 0.2}})
This is TRL's `loss_type` list with `loss_weights` (as MPO combines DPO, BCO and SFT).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch

from harness.errors import HarnessError
from harness.losses.base import LOSSES, LossInputs, LossOutput, LossSpec, non_negative
from harness.losses.spaces import MIX_WEIGHT
from harness.mix_syntax import SEPARATOR, WEIGHT

# The metrics every paired loss reports; a mixture reports its first component's under these names.
HEADLINE_METRICS = ("chosen_rewards", "rejected_rewards", "reward_margins", "reward_accuracies")


def mixture_spec(name: str, *, where: str = "") -> LossSpec:
    """The LossSpec of the mixture `name` (components joined by "+"). Raises HarnessError, in one
    line, for an unknown or repeated component, or components that cannot train on one batch."""
    prefix = f"{where}: " if where else ""
    parts = name.split(SEPARATOR)
    if len(parts) < 2 or any(not p for p in parts) or len(set(parts)) != len(parts):
        raise HarnessError(f"{prefix}mixture {name!r} must name two or more different losses joined by '+'")
    specs = [LOSSES.get(part, where=f"{where or 'mixture'}: mix") for part in parts]
    _check_combinable(name, specs, prefix)
    defaults, constraints, space = {}, {}, {}
    for spec in specs:
        defaults[f"{spec.name}.{WEIGHT}"] = 1.0
        constraints[f"{spec.name}.{WEIGHT}"] = non_negative()
        space[f"{spec.name}.{WEIGHT}"] = MIX_WEIGHT
        defaults.update({f"{spec.name}.{k}": v for k, v in spec.hparams.items()})
        constraints.update({f"{spec.name}.{k}": c for k, c in spec.constraints.items()})
        space.update({f"{spec.name}.{k}": d for k, d in spec.search_space.items()})
    reductions = {spec.reduction for spec in specs}
    return LossSpec(
        name=name,
        fn=_mixture_fn(specs),
        needs=frozenset().union(*(spec.needs for spec in specs)),
        reduction=reductions.pop() if len(reductions) == 1 else "mixed",
        paper="a weighted sum of registered losses (TRL's loss_type list with loss_weights; MPO): "
        + "; ".join(f"{spec.name}: {spec.paper}" for spec in specs),
        formula=" + ".join(f"w_{spec.name}·[{spec.formula}]" for spec in specs),
        data=specs[0].data,
        version="mix1(" + ",".join(f"{spec.name}:{spec.version}" for spec in specs) + ")",
        constraints=constraints,
        state=tuple(f"{spec.name}.{key}" for spec in specs for key in spec.state),
        regime=specs[0].regime,
        origin="mixture of " + ", ".join(spec.origin for spec in specs),
        search_space=space,
        trains_rejected=any(spec.trains_rejected for spec in specs),
        defaults=defaults,
    )


def _check_combinable(name: str, specs: list[LossSpec], prefix: str) -> None:
    """One batch must serve every component: the same data shape and the same regime."""
    first = specs[0]
    for spec in specs[1:]:
        if spec.data != first.data:
            raise HarnessError(
                f"{prefix}mixture {name!r} combines {first.data} loss {first.name!r} with {spec.data} loss "
                f"{spec.name!r}; one batch cannot serve both: mix losses of one data shape"
            )
        if spec.regime != first.regime:
            raise HarnessError(
                f"{prefix}mixture {name!r} combines regime {first.regime!r} ({first.name}) with "
                f"{spec.regime!r} ({spec.name}); mix losses trained by the same procedure"
            )


def _own(values: Mapping[str, Any], component: str) -> dict[str, Any]:
    """The entries of `values` prefixed "component.", without the prefix."""
    start = len(component) + 1
    return {key[start:]: value for key, value in values.items() if key.startswith(component + ".")}


def _mixture_fn(specs: list[LossSpec]):
    def mixture(inputs: LossInputs, **hparams: Any) -> LossOutput:
        """Σ_c w_c·loss_c per example. Each component gets its own hyper-parameters and running
        state (both prefixed with its name) and the same inputs. Metrics: each component's under
        "component.metric", its per-example loss as "component.loss", and the first component's
        rewards, margins and accuracies unprefixed (the mixture's headline)."""
        total, metrics, state = None, {}, {}
        for spec in specs:
            own = _own(hparams, spec.name)
            weight = float(own.pop(WEIGHT))
            out = spec.fn(dataclasses.replace(inputs, state=_own(inputs.state, spec.name)), **own)
            total = weight * out.losses if total is None else total + weight * out.losses
            metrics[f"{spec.name}.loss"] = out.losses.detach()
            metrics.update({f"{spec.name}.{key}": value for key, value in out.metrics.items()})
            state.update({f"{spec.name}.{key}": value for key, value in out.state_updates.items()})
        headline = specs[0].name
        metrics.update({key: metrics[f"{headline}.{key}"] for key in HEADLINE_METRICS
                        if f"{headline}.{key}" in metrics})
        return LossOutput(total if total is not None else torch.zeros(()), metrics, state)

    return mixture
