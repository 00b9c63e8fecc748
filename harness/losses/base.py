"""The loss contract shared by every method of the family.

A loss is a small pure function, registered by name:

    @register_loss("dpo", needs=("reference",), reduction="sum", paper=..., formula=...)
    def dpo(inputs: LossInputs, *, beta: float = 0.1) -> LossOutput: ...

- Its keyword-only arguments are its hyper-parameters, with the papers' defaults; a suite is
  validated against that signature (unknown names get a "did you mean", `constraints` reject
  values such as a negative beta).
- `needs` declares what the trainer must provide beyond the policy's summed log-probs and token
  counts (see NEEDS); the trainer asks the spec, never the method's name.
- It receives summed completion log-probs *and* token counts and decides sum or mean in its own
  body, so a reader sees the choice.
- It returns per-example losses (B,) and named per-example metrics.
- `regime` names the procedure around the one training loop when the method changes the
  procedure, not just the formula (SPIN's iterations, sDPO's stages, TR-DPO's reference sync);
  the regime's own hyper-parameters are given in the suite next to the loss's.
- `search_space` declares, per numeric hyper-parameter, the range a tuner may search, its scale
  (log, linear, or a list of choices) and where the range comes from (a paper's sweep, the
  authors' configs); every method also gets the shared learning-rate dimension (SHARED_SPACE).
  Spaces are checked against the loss's constraints when it is registered.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from torch import Tensor

from harness.errors import HarnessError, did_you_mean
from harness.registry import Registry
from harness.values import Constraint, coerce, in_range, non_negative, one_of, positive  # noqa: F401 (re-exported)

# What a loss may ask the trainer for, and what each entails. Keep in sync with LossInputs.
NEEDS: dict[str, str] = {
    "reference": "summed reference log-probs of the same completions (reference_*_logps)",
    "token_logps": "per-token log-probs (B, T) with completion masks (*_token_logps, *_mask)",
    "vocab_kl": "per-position KL(pi_ref || pi_theta) over the full vocabulary (*_vocab_kl, B x T); "
    "the reference model runs live",
    "labels": "unpaired data: one completion per example with a desirable/undesirable label",
    "kl_pairs": "log-probs of mismatched prompt/completion pairs (KTO's z0 estimate)",
    "scores": "a scalar score per response (chosen_scores, rejected_scores)",
    "segments": "per-token segment masks of multi-turn sessions (*_segment_mask, B x T)",
    "sft_target": "summed log-probs of an SFT target completion (policy_sft_logps, sft_lengths)",
    "vocab_collision": "per-position log Σ_v πθ(v|x,y<t)² over the full vocabulary (*_log_collision, "
    "B x T), no grad (WPO's aligned weights)",
}

REDUCTIONS = ("sum", "mean", "hparam")
SCALES = ("log", "linear", "choice")  # "hparam": the loss exposes the choice as a hyper-parameter


@dataclass(frozen=True)
class LossInputs:
    """Everything a loss can read. B examples (pairs, or single completions when unpaired),
    T completion positions. Fields a loss did not declare in `needs` are None.

    Log-probs are sums over completion tokens (prompt and padding masked); lengths are completion
    token counts as float tensors, clamped at 1 by the trainer so that a mean never divides by 0.
    """

    # paired data: always present for paired losses
    policy_chosen_logps: Tensor | None = None  # (B,)
    policy_rejected_logps: Tensor | None = None  # (B,)
    chosen_lengths: Tensor | None = None  # (B,)
    rejected_lengths: Tensor | None = None  # (B,)
    # needs "reference"
    reference_chosen_logps: Tensor | None = None  # (B,)
    reference_rejected_logps: Tensor | None = None  # (B,)
    # needs "token_logps" (reference_* also when the loss needs "reference")
    policy_chosen_token_logps: Tensor | None = None  # (B, T), 0 outside the completion
    policy_rejected_token_logps: Tensor | None = None  # (B, T)
    reference_chosen_token_logps: Tensor | None = None  # (B, T)
    reference_rejected_token_logps: Tensor | None = None  # (B, T)
    chosen_mask: Tensor | None = None  # (B, T) bool, completion tokens
    rejected_mask: Tensor | None = None  # (B, T) bool
    # needs "vocab_kl": KL(pi_ref(.|x,y<t) || pi_theta(.|x,y<t)) per position, 0 outside the completion
    chosen_vocab_kl: Tensor | None = None  # (B, T), differentiable w.r.t. the policy
    rejected_vocab_kl: Tensor | None = None  # (B, T)
    # needs "labels": unpaired data
    policy_logps: Tensor | None = None  # (B,)
    reference_logps: Tensor | None = None  # (B,) with "reference"
    lengths: Tensor | None = None  # (B,)
    labels: Tensor | None = None  # (B,) bool, True = desirable
    # needs "kl_pairs": completion (i+1) mod B scored under prompt i
    policy_kl_logps: Tensor | None = None  # (B,)
    reference_kl_logps: Tensor | None = None  # (B,)
    # needs "scores"
    chosen_scores: Tensor | None = None  # (B,)
    rejected_scores: Tensor | None = None  # (B,)
    # needs "segments"
    chosen_segment_mask: Tensor | None = None  # (B, T) bool, tokens of the scored segment
    rejected_segment_mask: Tensor | None = None  # (B, T) bool
    # needs "sft_target"
    policy_sft_logps: Tensor | None = None  # (B,)
    sft_lengths: Tensor | None = None  # (B,)
    # needs "vocab_collision": log Σ_v πθ(v|x,y<t)², 0 outside the completion, detached
    chosen_log_collision: Tensor | None = None  # (B, T)
    rejected_log_collision: Tensor | None = None  # (B, T)
    # running state kept by the trainer for losses that declare `state` (e.g. BCO's reward mean)
    state: Mapping[str, Tensor] = field(default_factory=dict)

    def present(self) -> set[str]:
        """Names of the tensor fields that are set (for contract tests and debugging)."""
        return {f.name for f in fields(self) if f.name != "state" and getattr(self, f.name) is not None}


@dataclass
class LossOutput:
    """Per-example losses (B,) and named metrics, each (B,) or a scalar.

    Conventional metric names: chosen_rewards, rejected_rewards, reward_margins,
    reward_accuracies, plus the method's own terms (dpop_penalty, kto_z0, ...).
    `state_updates` carries new values for the loss's declared running state.
    """

    losses: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)
    state_updates: dict[str, Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class Dimension:
    """One hyper-parameter's search range: [low, high] on a log or linear scale, or a list of
    choices; `source` says where the range comes from (a paper's sweep, the authors' configs).
    `relative_to` names a suite setting the values multiply (the learning rate is searched as a
    factor of the suite's train.lr, so one space fits every model size)."""

    scale: str
    source: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()
    relative_to: str | None = None
    derived: bool = False  # made by DERIVATION_RULE for a loss that declared none (derive_space)

    def describe(self) -> dict[str, Any]:
        """A plain, JSON-serializable view (for `harness methods --json` and tuners)."""
        out: dict[str, Any] = {"scale": self.scale}
        if self.scale == "choice":
            out["choices"] = list(self.choices)
        else:
            out["low"], out["high"] = self.low, self.high
        if self.relative_to:
            out["relative_to"] = self.relative_to
        out["source"] = self.source
        if self.derived:
            out["derived"] = True
        return out

    def text(self) -> str:
        """A short one-line form: `log[0.01, 1]`, `choice{True, False}`, `x train.lr`."""
        if self.scale == "choice":
            body = "{" + ", ".join(map(repr, self.choices)) + "}"
        else:
            body = f"[{self.low:g}, {self.high:g}]"
        return (f"{self.scale}{body}" + (f"×{self.relative_to}" if self.relative_to else "")
                + (" (derived)" if self.derived else ""))

    def probes(self) -> list[Any]:
        """Values that must all satisfy the hyper-parameter's constraint: the ends, the middle."""
        if self.scale == "choice":
            return list(self.choices)
        if self.scale == "log":
            return [self.low, math.sqrt(self.low * self.high), self.high]
        return [self.low, (self.low + self.high) / 2, self.high]

    def contains(self, value: Any) -> bool:
        if self.scale == "choice":
            return value in self.choices
        return self.low <= value <= self.high


def log_range(low: float, high: float, source: str) -> Dimension:
    return Dimension("log", source, float(low), float(high))


def linear_range(low: float, high: float, source: str) -> Dimension:
    return Dimension("linear", source, float(low), float(high))


def choice(*choices: Any, source: str) -> Dimension:
    return Dimension("choice", source, choices=tuple(choices))


# The dimension every method gets, whatever its loss: methods differ in the step size they
# tolerate (reference-free ones with length-averaged rewards take larger steps), so comparing
# them at one shared learning rate favours some. A factor of the suite's train.lr, so the same
# space serves the sandbox's tiny model and a 7B one.
SHARED_SPACE: dict[str, Dimension] = {
    "lr": Dimension(
        "log",
        "the SimPO paper tunes the learning rate per method over 3e-7..1e-6 for 7-8B models (Meng "
        "et al. 2024, Table 7), a factor of ~3; a decade either side of train.lr covers that at any "
        "model size",
        0.1, 10.0, relative_to="train.lr",
    )
}


def validate_search_space(
    owner: str, defaults: Mapping[str, Any], constraints: Mapping[str, Constraint], space: Mapping[str, Dimension]
) -> None:
    """Every dimension names a hyper-parameter, has a source and a well-formed range whose ends and
    middle satisfy the constraint, and contains the default. Raises HarnessError."""
    for key, dim in space.items():
        where = f"{owner}: search_space[{key!r}]"
        if key not in defaults:
            raise HarnessError(f"{where} names no hyper-parameter{did_you_mean(key, defaults)}")
        check_dimension(where, dim, constraints.get(key))
        if not dim.contains(defaults[key]):
            raise HarnessError(f"{where}: {dim.text()} leaves out the default {defaults[key]!r}")


def check_dimension(where: str, dim: Dimension, constraint: Constraint | None) -> None:
    """A well-formed dimension with a source whose ends and middle satisfy `constraint` (also
    for a suite's narrowed space, harness.tuning.space). Raises HarnessError."""
    if dim.scale not in SCALES:
        raise HarnessError(f"{where}: scale {dim.scale!r} should be one of {', '.join(SCALES)}")
    if not dim.source.strip():
        raise HarnessError(f"{where}: give the source of the range (a paper's sweep, the authors' configs)")
    if dim.scale == "choice":
        if not dim.choices:
            raise HarnessError(f"{where}: a choice needs at least one value")
    elif dim.low is None or dim.high is None or not dim.low < dim.high:
        raise HarnessError(f"{where}: needs low < high, got [{dim.low}, {dim.high}]")
    elif dim.scale == "log" and dim.low <= 0:
        raise HarnessError(f"{where}: a log scale needs low > 0, got {dim.low}")
    for value in dim.probes():
        if constraint is not None and not constraint.check(value):
            raise HarnessError(f"{where}: {value!r} {constraint.text}; narrow the range")


def unsearched(defaults: Mapping[str, Any], space: Mapping[str, Dimension]) -> list[str]:
    """Numeric hyper-parameters without a dimension: a gap in the space (the contract asks for none).
    Switches between variants (bools, strings) may stay fixed at their defaults."""
    numeric = [k for k, v in defaults.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return [k for k in numeric if k not in space]


DERIVATION_RULE = (
    "a bool gets both values (only where the loss declares no search space: a loss that declares one chose "
    "its switches, as the built-ins do); a number whose constraint is exactly [0, 1] gets linear [0, 1]; any "
    "other positive default d gets log [d/10, 10d] (an integer's low end at least 1); strings stay at their "
    "defaults"
)


def derive_space(spec: LossSpec) -> tuple[dict[str, Dimension], list[str]]:
    """The dimensions a tuner derives for the hyper-parameters `spec` declares no range for, by
    DERIVATION_RULE (a plugin need not declare a space to be tuned like the built-ins), and the
    numeric ones no rule covers (a default <= 0 without a [0, 1] constraint, or a derived range
    that leaves the constraint). Built-in losses declare every numeric dimension, so none is
    derived for them."""
    derived: dict[str, Dimension] = {}
    uncovered: list[str] = []
    for key, default in spec.hparams.items():
        if key in spec.search_space or isinstance(default, str):
            continue
        if isinstance(default, bool):
            if not spec.search_space:
                derived[key] = Dimension("choice", f"derived ({DERIVATION_RULE})", choices=(False, True), derived=True)
            continue
        dim = _derived_range(default, spec.constraints.get(key))
        if dim is None:
            uncovered.append(key)
        else:
            derived[key] = dim
    return derived, uncovered


def _derived_range(default: int | float, constraint: Constraint | None) -> Dimension | None:
    """DERIVATION_RULE's range for one numeric default, or None when no rule covers it."""
    source = f"derived ({DERIVATION_RULE})"
    if constraint is not None and _is_unit_interval(constraint):
        return Dimension("linear", source, 0.0, 1.0, derived=True)
    if not default > 0:
        return None
    low = max(1, default // 10) if isinstance(default, int) else default / 10
    dim = Dimension("log", source, float(low), float(default * 10), derived=True)
    try:
        check_dimension("derived", dim, constraint)
    except HarnessError:
        return None
    return dim


def _is_unit_interval(constraint: Constraint) -> bool:
    """Whether `constraint` admits exactly [0, 1] (a weight or a probability)."""
    inside = all(constraint.check(v) for v in (0.0, 0.5, 1.0))
    return inside and not any(constraint.check(v) for v in (-1e-9, 1.0 + 1e-9))


@dataclass(frozen=True)
class LossSpec:
    """A registered loss: the function and what it declares about itself."""

    name: str
    fn: Callable[..., LossOutput]
    needs: frozenset[str]
    reduction: str
    paper: str
    formula: str
    data: str = "paired"  # "paired" or "unpaired"
    version: str = "1"
    constraints: Mapping[str, Constraint] = field(default_factory=dict)
    state: tuple[str, ...] = ()
    regime: str = "standard"  # the training procedure around the loop (harness.losses.regimes)
    origin: str = "built-in"
    search_space: Mapping[str, Dimension] = field(default_factory=dict)  # the loss's own; see `space`
    trains_rejected: bool = True  # False: only the chosen completion gets a gradient (SFT)
    defaults: Mapping[str, Any] | None = None  # hyper-parameters when not the signature's (mixtures)

    @property
    def hparams(self) -> dict[str, Any]:
        """Hyper-parameter names and their defaults, from the keyword-only signature."""
        return dict(self.defaults) if self.defaults is not None else keyword_defaults(self.fn)

    @property
    def space(self) -> dict[str, Dimension]:
        """The full search space a tuner gets: the shared dimensions, then the loss's own."""
        return {**SHARED_SPACE, **self.search_space}

    @property
    def uses_reference(self) -> bool:
        return "reference" in self.needs

    @property
    def doc(self) -> str:
        return inspect.cleandoc(self.fn.__doc__ or "")

    def resolve(self, given: Mapping[str, Any] | None, *, where: str = "") -> dict[str, Any]:
        """Defaults overridden by `given`, type-coerced and checked. Raises HarnessError."""
        return resolve_hparams(f"loss {self.name!r}", self.hparams, self.constraints, given, where=where)

    def __call__(self, inputs: LossInputs, **hparams: Any) -> LossOutput:
        return self.fn(inputs, **self.resolve(hparams))


def keyword_defaults(fn: Callable) -> dict[str, Any]:
    """The keyword-only parameters of `fn` and their defaults: a function's hyper-parameters."""
    sig = inspect.signature(fn)
    return {p.name: p.default for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY}


def resolve_hparams(
    owner: str,
    defaults: Mapping[str, Any],
    constraints: Mapping[str, Constraint],
    given: Mapping[str, Any] | None,
    *,
    where: str = "",
) -> dict[str, Any]:
    """`defaults` overridden by `given`: unknown names get a "did you mean", values the default's
    type, and every constraint is checked. Shared by losses and training regimes."""
    prefix = f"{where}: " if where else ""
    short = owner.split()[-1].strip("'")
    resolved = dict(defaults)
    for key, value in (given or {}).items():
        if key not in defaults:
            valid = did_you_mean(key, defaults) if defaults else " (it takes no hyper-parameters)"
            raise HarnessError(f"{prefix}{owner} has no hyper-parameter {key!r}{valid}")
        resolved[key] = coerce(value, defaults[key], f"{prefix}{short}.{key}")
    for key, constraint in constraints.items():
        if not constraint.check(resolved[key]):
            raise HarnessError(f"{prefix}{short}.{key} = {resolved[key]!r} {constraint.message(resolved[key])}")
    return resolved


LOSSES: Registry[LossSpec] = Registry("loss")


def register_loss(
    name: str,
    *,
    needs: tuple[str, ...] | list[str] = (),
    reduction: str,
    paper: str,
    formula: str,
    data: str = "paired",
    version: str = "1",
    constraints: Mapping[str, Constraint] | None = None,
    state: tuple[str, ...] = (),
    regime: str = "standard",
    search_space: Mapping[str, Dimension] | None = None,
    trains_rejected: bool = True,
) -> Callable[[Callable[..., LossOutput]], Callable[..., LossOutput]]:
    """Register a loss under `name`; see the module docstring for the contract."""
    unknown = set(needs) - set(NEEDS)
    if unknown:
        bad = sorted(unknown)[0]
        raise HarnessError(f"loss {name!r} declares unknown need {bad!r}{did_you_mean(bad, NEEDS)}")
    if reduction not in REDUCTIONS:
        raise HarnessError(f"loss {name!r}: reduction must be one of {REDUCTIONS}")
    if data not in ("paired", "unpaired"):
        raise HarnessError(f"loss {name!r}: data must be 'paired' or 'unpaired'")

    def wrap(fn: Callable[..., LossOutput]) -> Callable[..., LossOutput]:
        params = inspect.signature(fn).parameters.values()
        loose = [p.name for p in params if p.kind is not p.KEYWORD_ONLY and p.name != "inputs"]
        if loose:
            raise HarnessError(f"loss {name!r}: hyper-parameters must be keyword-only: {loose}")
        bare = [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.default is p.empty]
        if bare:  # the suite's defaults come from the signature: a bare one would fail mid-run
            raise HarnessError(f"loss {name!r}: give `{bare[0]}` a default (hyper-parameters are keyword-only "
                               f"arguments with the paper's default, e.g. `*, {bare[0]}: float = 0.1`)")
        origin = inspect.getsourcefile(fn) or "?"
        builtin = Path(origin).resolve().is_relative_to(Path(__file__).resolve().parent)
        spec = LossSpec(
            name=name,
            fn=fn,
            needs=frozenset(needs),
            reduction=reduction,
            paper=paper,
            formula=formula,
            data=data,
            version=version,
            constraints=dict(constraints or {}),
            state=tuple(state),
            regime=regime,
            origin="built-in" if builtin else origin,
            search_space=dict(search_space or {}),
            trains_rejected=trains_rejected,
        )
        for key in spec.constraints:
            if key not in spec.hparams:
                raise HarnessError(f"loss {name!r}: constraint on unknown hyper-parameter {key!r}")
        validate_search_space(f"loss {name!r}", spec.hparams, spec.constraints, spec.search_space)
        LOSSES.add(name, spec)
        return fn

    return wrap
