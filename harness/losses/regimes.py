"""Regimes' declarations: the procedures around the one training loop that a loss may name.

A loss names its regime (`register_loss(..., regime=...)`). What the planner and `harness methods`
need to know about a regime is declared here, beside the loss contract and without torch: its
name, its hyper-parameters with their defaults (given in the suite next to the loss's), their
constraints, and the rows it reads besides the loss's training data. The procedures themselves
(harness.train.regimes) implement these names; each takes exactly the declared hyper-parameters.

- standard: one pass of the loop against the frozen starting model.
- reference_sync (TR-DPO): the reference is updated every `sync_every` steps, softly
  (π_ref ← α πθ + (1 − α) π_ref in weight space) or hard (α = 1).
- stages (sDPO): the data's ordered stages one after another; the reference of stage t is the
  model after stage t − 1.
- spin_iterations (SPIN): each iteration generates the rejected responses with the current
  model on the SFT prompts, the SFT responses are the chosen ones, and the reference is the
  previous iterate; generation FLOPs come out of the budget.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.errors import HarnessError
from harness.losses.base import Constraint, LossSpec, in_range, non_negative, positive, resolve_hparams
from harness.registry import Registry


@dataclass(frozen=True)
class RegimeSpec:
    """A declared regime: its hyper-parameters' defaults and constraints, and its own data."""

    name: str
    hparams: Mapping[str, Any] = field(default_factory=dict)  # name -> default
    constraints: Mapping[str, Constraint] = field(default_factory=dict)
    # Rows the regime reads itself and makes its own training pairs from (SPIN: the SFT
    # demonstrations), so the start model's cached log-probs of the loss's data go unused.
    data: str | None = None
    # Reads the policy's weights between optimizer steps of a phase (TR-DPO's sync). An FSDP run
    # holds them only sharded until the phase ends (harness.train.distributed), so it is refused.
    reads_policy_between_steps: bool = False

    def resolve(self, given: Mapping[str, Any] | None, *, where: str = "") -> dict[str, Any]:
        return resolve_hparams(f"regime {self.name!r}", self.hparams, self.constraints, given, where=where)


REGIMES: Registry[RegimeSpec] = Registry("regime")


def declare_regime(name: str, *, hparams: Mapping[str, Any] | None = None,
                   constraints: Mapping[str, Constraint] | None = None, data: str | None = None,
                   reads_policy_between_steps: bool = False) -> RegimeSpec:
    """Declare a regime; harness.train.regimes implements it under the same name."""
    spec = RegimeSpec(name, dict(hparams or {}), dict(constraints or {}), data, reads_policy_between_steps)
    unknown = set(spec.constraints) - set(spec.hparams)
    if unknown:
        raise HarnessError(f"regime {name!r}: constraint on unknown hyper-parameter {sorted(unknown)[0]!r}")
    return REGIMES.add(name, spec)


declare_regime("standard")
# Defaults are TRL's (ref_model_mixup_alpha 0.6, ref_model_sync_steps 512); the paper finds
# α ≈ 0.5–0.6 and τ ≈ 256–512 best at its scale; small sandbox runs need a smaller τ.
declare_regime("reference_sync", hparams={"sync_alpha": 0.6, "sync_every": 512},
               constraints={"sync_alpha": in_range(0.0, 1.0, low_open=True), "sync_every": positive()},
               reads_policy_between_steps=True)
declare_regime("stages", hparams={"stages": 2}, constraints={"stages": positive()})
# gen_*: how SPIN samples y' (harness.sampling); the defaults draw from π_k itself, top-k and top-p off.
declare_regime("spin_iterations", data="sft",
               hparams={"iterations": 2, "mix_previous": False, "gen_max_new_tokens": 24, "gen_temperature": 1.0,
                        "gen_top_k": 0, "gen_top_p": 1.0},
               constraints={"iterations": positive(), "gen_temperature": in_range(0.0, 10.0, low_open=True),
                            "gen_top_k": non_negative(), "gen_top_p": in_range(0.0, 1.0, low_open=True),
                            "gen_max_new_tokens": positive()})


def train_data_shape(loss: LossSpec) -> str:
    """The data a loss trains on: multi-turn sessions when it needs segments, else its declared
    shape ("paired" or "unpaired")."""
    return "sessions" if "segments" in loss.needs else loss.data


@dataclass(frozen=True)
class MethodHparams:
    """A method's resolved hyper-parameters, the loss's and its regime's kept apart."""

    loss: dict[str, Any]
    regime: dict[str, Any]

    def union(self) -> dict[str, Any]:
        return {**self.loss, **self.regime}


def resolve_method_hparams(loss: LossSpec, given: Mapping[str, Any] | None, *, where: str = "") -> MethodHparams:
    """Resolve a suite's hyper-parameters for a method into the loss's and its regime's. A name
    neither declares is reported against the loss's names (the usual typo)."""
    regime = REGIMES.get(loss.regime, where=f"loss {loss.name!r}")
    overlap = set(loss.hparams) & set(regime.hparams)
    if overlap:
        raise HarnessError(f"loss {loss.name!r} and regime {regime.name!r} both define {sorted(overlap)}")
    given = dict(given or {})
    regime_given = {k: v for k, v in given.items() if k in regime.hparams}
    loss_given = {k: v for k, v in given.items() if k not in regime_given}
    return MethodHparams(loss.resolve(loss_given, where=where), regime.resolve(regime_given, where=where))
