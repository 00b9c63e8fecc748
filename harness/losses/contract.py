"""The loss contract as a library check, for plugins (`harness rank my_variant.py`) and tests.

    problems = check_loss_contract(get_loss("dpo"))   # [] when the loss keeps the contract

The checks are those of tests/test_loss_contract.py, run on random inputs that provide exactly
the fields the spec declares (`build_loss_inputs`; the same construction as tests/loss_inputs.py):
a loss that reads a field it did not declare fails. A loss must

- declare its data shape; its defaults have a type a suite can set (bool, int, float, str) and
  satisfy its constraints, and a search space it declares is well formed;
- return a LossOutput whose `losses` are finite and of shape (B,), also for B = 1;
- log chosen_rewards, rejected_rewards, reward_margins and reward_accuracies, each a finite,
  detached tensor of shape () or (B,);
- send a non-zero gradient to the policy's log-probs of each side (of the chosen side only when
  it declares trains_rejected=False, as SFT does), and none to the reference;
- leave its inputs unmodified and be deterministic;
- return only the running state it declared.

Those are its *faults*: each makes a number wrong or a run fail, and a plugin with one is refused.
Beyond them a built-in loss documents itself (`advice`): a paper, a formula, a docstring, and a
search space for every numeric hyper-parameter. A plugin without them still runs and is ranked
(one warning line; a tuned suite derives the missing dimensions, harness.losses.base.derive_space);
the built-ins are held to all of it by `check_loss_contract` in their own tests.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import Tensor

from harness.errors import HarnessError
from harness.losses.base import LossInputs, LossOutput, LossSpec, NEEDS, unsearched, validate_search_space

BATCH = 4
SETTABLE_TYPES = (bool, int, float, str)  # what a suite's YAML value can be coerced to (harness.values)
REQUIRED_METRICS = ("chosen_rewards", "rejected_rewards", "reward_margins", "reward_accuracies")

# LossInputs fields each need makes available, per data shape; "base" is always provided.
PAIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "base": ("policy_chosen_logps", "policy_rejected_logps", "chosen_lengths", "rejected_lengths"),
    "reference": ("reference_chosen_logps", "reference_rejected_logps"),
    "token_logps": ("policy_chosen_token_logps", "policy_rejected_token_logps", "chosen_mask", "rejected_mask"),
    "reference+token_logps": ("reference_chosen_token_logps", "reference_rejected_token_logps"),
    "vocab_kl": ("chosen_vocab_kl", "rejected_vocab_kl"),
    "scores": ("chosen_scores", "rejected_scores"),
    "segments": ("chosen_segment_mask", "rejected_segment_mask"),
    "sft_target": ("policy_sft_logps", "sft_lengths"),
    "labels": (),
    "kl_pairs": ("policy_kl_logps", "reference_kl_logps"),
    "vocab_collision": ("chosen_log_collision", "rejected_log_collision"),
}
UNPAIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "base": ("policy_logps", "lengths"),
    "reference": ("reference_logps",),
    "labels": ("labels",),
    "kl_pairs": ("policy_kl_logps", "reference_kl_logps"),
    "sft_target": ("policy_sft_logps", "sft_lengths"),
    "scores": (),
    "token_logps": (),
    "reference+token_logps": (),
    "vocab_kl": (),
    "segments": (),
    "vocab_collision": (),
}
REFERENCE_FIELDS = frozenset({
    "reference_chosen_logps", "reference_rejected_logps", "reference_chosen_token_logps",
    "reference_rejected_token_logps", "reference_logps", "reference_kl_logps",
})


def expected_fields(spec: LossSpec) -> set[str]:
    """The LossInputs fields the trainer sets for this spec, and no others."""
    table = PAIRED_FIELDS if spec.data == "paired" else UNPAIRED_FIELDS
    keys = ["base", *spec.needs]
    if {"reference", "token_logps"} <= spec.needs:
        keys.append("reference+token_logps")
    out = {name for key in keys for name in table.get(key, ())}
    if "reference" not in spec.needs:  # e.g. kl_pairs without reference: the policy half only
        out -= REFERENCE_FIELDS
    return out


@dataclass
class BuiltInputs:
    """A LossInputs plus the policy leaves behind it, grouped by the side they belong to."""

    inputs: LossInputs
    gradient_groups: dict[str, list[Tensor]]
    leaves: list[Tensor] = field(default_factory=list)


def _leaf(values: Tensor) -> Tensor:
    return values.detach().clone().requires_grad_(True)


def _completion_masks(batch_size: int, seq_len: int, gen: torch.Generator) -> Tensor:
    """(B, T) bool: 1–3 prompt tokens, then a completion of at least one token, then padding."""
    masks = torch.zeros(batch_size, seq_len, dtype=torch.bool)
    for row in range(batch_size):
        start = int(torch.randint(1, 4, (1,), generator=gen))
        end = int(torch.randint(start + 1, seq_len + 1, (1,), generator=gen))
        masks[row, start:end] = True
    return masks


def _side(mask: Tensor, gen: torch.Generator, needs: frozenset[str]) -> dict[str, Tensor | None]:
    """One side (chosen or rejected) of a pair: token leaves, sums, reference, KL, segment."""
    token_values = -(torch.rand(mask.shape, generator=gen) * 2 + 0.05) * mask
    policy_tokens = _leaf(token_values)
    reference_tokens = (token_values + 0.3 * torch.randn(mask.shape, generator=gen)) * mask
    vocab_kl = _leaf(torch.rand(mask.shape, generator=gen) * 0.2 * mask)
    counts = mask.long().cumsum(-1)
    return {
        "policy_tokens": policy_tokens,
        "policy_logps": (policy_tokens * mask).sum(-1),
        "reference_tokens": reference_tokens,
        "reference_logps": (reference_tokens * mask).sum(-1),
        "lengths": mask.sum(-1).float().clamp(min=1),
        "vocab_kl": vocab_kl if "vocab_kl" in needs else None,
        "segment": mask & (counts > counts[:, -1:] // 2),  # the completion's last half
        # log Σ_v p(v)² lies in [2·log p(y_t), 0]: below 0, above twice the token's log-prob
        "log_collision": (policy_tokens.detach() * torch.rand(mask.shape, generator=gen)) * mask,
    }


def _paired(spec: LossSpec, batch_size: int, seq_len: int, gen: torch.Generator) -> BuiltInputs:
    chosen_mask = _completion_masks(batch_size, seq_len, gen)
    rejected_mask = _completion_masks(batch_size, seq_len, gen)
    chosen, rejected = _side(chosen_mask, gen, spec.needs), _side(rejected_mask, gen, spec.needs)
    rejected_scores = torch.rand(batch_size, generator=gen)
    values = {
        "policy_chosen_logps": chosen["policy_logps"], "policy_rejected_logps": rejected["policy_logps"],
        "chosen_lengths": chosen["lengths"], "rejected_lengths": rejected["lengths"],
        "reference_chosen_logps": chosen["reference_logps"], "reference_rejected_logps": rejected["reference_logps"],
        "policy_chosen_token_logps": chosen["policy_tokens"], "policy_rejected_token_logps": rejected["policy_tokens"],
        "reference_chosen_token_logps": chosen["reference_tokens"],
        "reference_rejected_token_logps": rejected["reference_tokens"],
        "chosen_mask": chosen_mask, "rejected_mask": rejected_mask,
        "chosen_vocab_kl": chosen["vocab_kl"], "rejected_vocab_kl": rejected["vocab_kl"],
        "chosen_scores": rejected_scores + 0.1 + torch.rand(batch_size, generator=gen),
        "rejected_scores": rejected_scores,
        "chosen_segment_mask": chosen["segment"], "rejected_segment_mask": rejected["segment"],
        "chosen_log_collision": chosen["log_collision"], "rejected_log_collision": rejected["log_collision"],
        "policy_sft_logps": _leaf(-(torch.rand(batch_size, generator=gen) * 10 + 1)),
        "sft_lengths": torch.full((batch_size,), 5.0),
        "policy_kl_logps": _leaf(-(torch.rand(batch_size, generator=gen) * 10 + 1)),
        "reference_kl_logps": -(torch.rand(batch_size, generator=gen) * 10 + 1),
    }
    groups = {
        "chosen": [t for t in (chosen["policy_tokens"], chosen["vocab_kl"]) if t is not None],
        "rejected": [t for t in (rejected["policy_tokens"], rejected["vocab_kl"]) if t is not None],
    }
    return _finish(spec, values, groups)


def _unpaired(spec: LossSpec, batch_size: int, gen: torch.Generator) -> BuiltInputs:
    policy_logps = _leaf(-(torch.rand(batch_size, generator=gen) * 10 + 1))
    values = {
        "policy_logps": policy_logps,
        "reference_logps": policy_logps.detach() + torch.randn(batch_size, generator=gen),
        "lengths": torch.randint(1, 8, (batch_size,), generator=gen).float(),
        "labels": torch.arange(batch_size) % 2 == 0,  # both labels present once B >= 2
        "policy_kl_logps": _leaf(-(torch.rand(batch_size, generator=gen) * 10 + 1)),
        "reference_kl_logps": -(torch.rand(batch_size, generator=gen) * 10 + 1),
        "policy_sft_logps": _leaf(-(torch.rand(batch_size, generator=gen) * 10 + 1)),
        "sft_lengths": torch.full((batch_size,), 5.0),
    }
    return _finish(spec, values, {"policy": [policy_logps]})


def _finish(spec: LossSpec, values: dict[str, Tensor | None], groups: dict[str, list[Tensor]]) -> BuiltInputs:
    inputs = LossInputs(**{name: values[name] for name in expected_fields(spec)})
    leaves = [t for t in values.values() if t is not None and t.is_leaf and t.requires_grad]
    return BuiltInputs(inputs, groups, leaves)


def build_loss_inputs(spec: LossSpec, *, batch_size: int = BATCH, seq_len: int = 8, seed: int = 0) -> BuiltInputs:
    """Random LossInputs with exactly the fields `spec` needs, for its data shape."""
    unknown = set(spec.needs) - set(NEEDS)
    if unknown:
        raise ValueError(f"{spec.name}: unknown needs {sorted(unknown)}")
    gen = torch.Generator().manual_seed(seed)
    if spec.data == "paired":
        return _paired(spec, batch_size, seq_len, gen)
    return _unpaired(spec, batch_size, gen)


# --------------------------------------------------------------------------- the checks


class _Broken(Exception):
    """A check found a problem that makes the later checks meaningless."""


@dataclass(frozen=True)
class ContractFindings:
    """What the contract check found: `faults` make numbers wrong (a plugin with one is refused),
    `advice` is documentation a built-in must have and a plugin should (a warning)."""

    faults: list[str]
    advice: list[str]


def contract_findings(spec: LossSpec) -> ContractFindings:
    """The faults of `spec` (declaration, shapes, finiteness, gradients, purity, state; the checks
    stop at the first that makes the rest meaningless) and its missing documentation."""
    faults: list[str] = []
    try:
        _check_declaration(spec, faults)
        _check_output(spec, faults)
        _check_gradients(spec, faults)
        _check_purity(spec, faults)
        _check_state(spec, faults)
    except _Broken:
        pass
    return ContractFindings(faults, _documentation_gaps(spec))


def check_loss_contract(spec: LossSpec) -> list[str]:
    """Every way `spec` breaks the strict contract the built-in losses keep, faults first, as
    short sentences; [] when it keeps it."""
    findings = contract_findings(spec)
    return [*findings.faults, *findings.advice]


def _call(spec: LossSpec, inputs: LossInputs, problems: list[str]) -> LossOutput:
    try:
        out = spec(inputs)
    except Exception as err:  # noqa: BLE001 (any exception is a broken contract, reported in a line)
        problems.append(f"raised {type(err).__name__}: {err}".splitlines()[0])
        raise _Broken from None
    if not isinstance(out, LossOutput):
        problems.append(f"returned {type(out).__name__}, expected LossOutput")
        raise _Broken
    if not isinstance(out.losses, Tensor):
        problems.append(f"losses is {type(out.losses).__name__}, expected a tensor")
        raise _Broken
    return out


def _check_declaration(spec: LossSpec, problems: list[str]) -> None:
    if spec.data not in ("paired", "unpaired"):
        problems.append(f"data is {spec.data!r}, expected 'paired' or 'unpaired'")
        raise _Broken
    untyped = {key: value for key, value in spec.hparams.items() if not isinstance(value, SETTABLE_TYPES)}
    if untyped:  # a suite could never set it (harness.values.coerce reads YAML by the default's type)
        key, value = next(iter(untyped.items()))
        problems.append(f"hyper-parameter {key!r} defaults to {value!r} ({type(value).__name__}); give a bool, "
                        "int, float or str default (the suite's values are read with the default's type)")
    try:
        resolved = spec.resolve({})
    except HarnessError as err:
        problems.append(f"its defaults break its constraints: {err}")
        raise _Broken from None
    if resolved != spec.hparams:
        problems.append("resolving the defaults changes them")
    try:
        validate_search_space(f"loss {spec.name!r}", spec.hparams, spec.constraints, spec.search_space)
    except HarnessError as err:
        problems.append(str(err))


def _documentation_gaps(spec: LossSpec) -> list[str]:
    """What a reader of the loss (and a tuner) lacks: paper, formula, docstring, search space."""
    gaps = [f"no {what} declared (give @register_loss(..., {what}=...))"
            for what in ("paper", "formula") if not str(getattr(spec, what) or "").strip()]
    if not spec.doc:
        gaps.append("no docstring (give the paper, the formula and where implementations disagree)")
    unsearched_keys = unsearched(spec.hparams, spec.search_space)
    if unsearched_keys:
        gaps.append(f"no search space for {unsearched_keys} (give register_loss(..., search_space={{name: "
                    "log_range(low, high, source)}))")
    return gaps


def _check_output(spec: LossSpec, problems: list[str]) -> None:
    for batch, seed in ((BATCH, 0), (1, 1)):
        out = _call(spec, build_loss_inputs(spec, batch_size=batch, seed=seed).inputs, problems)
        if tuple(out.losses.shape) != (batch,):
            problems.append(f"losses have shape {tuple(out.losses.shape)} for a batch of {batch}, expected ({batch},)")
            raise _Broken
        if not torch.isfinite(out.losses).all():
            problems.append(f"non-finite losses {out.losses.detach().tolist()}")
            raise _Broken
        if batch == BATCH:
            _check_metrics(out, problems)


def _check_metrics(out: LossOutput, problems: list[str]) -> None:
    missing = [key for key in REQUIRED_METRICS if key not in out.metrics]
    if missing:
        problems.append(f"missing metrics {missing} (harness.losses.common.preference_metrics computes them)")
    for key, value in out.metrics.items():
        if not isinstance(value, Tensor):
            problems.append(f"metric {key!r} is {type(value).__name__}, expected a tensor")
        elif tuple(value.shape) not in ((), (BATCH,)):
            problems.append(f"metric {key!r} has shape {tuple(value.shape)}, expected () or ({BATCH},)")
        elif not torch.isfinite(value).all():
            problems.append(f"metric {key!r} is not finite")
        elif value.requires_grad:
            problems.append(f"metric {key!r} requires grad (detach logged metrics)")


def _check_gradients(spec: LossSpec, problems: list[str]) -> None:
    built = build_loss_inputs(spec)
    out = _call(spec, built.inputs, problems)
    try:
        out.losses.sum().backward()
    except RuntimeError as err:
        problems.append(f"losses cannot be differentiated: {err}".splitlines()[0])
        raise _Broken from None
    for side, leaves in built.gradient_groups.items():
        if side == "rejected" and not spec.trains_rejected:
            continue  # SFT trains on the chosen completion only, and says so
        grads = [leaf.grad for leaf in leaves if leaf.grad is not None]
        if not grads or not any(g.abs().sum() > 0 for g in grads):
            problems.append(f"no gradient reaches the {side} policy log-probs")
    if any(leaf.grad is not None and not torch.isfinite(leaf.grad).all() for leaf in built.leaves):
        problems.append("non-finite gradients")
    for name in sorted(built.inputs.present() & REFERENCE_FIELDS):
        if getattr(built.inputs, name).requires_grad:
            problems.append(f"{name} requires grad: the reference must be frozen")


def _check_purity(spec: LossSpec, problems: list[str]) -> None:
    built = build_loss_inputs(spec)
    before = {name: getattr(built.inputs, name).detach().clone() for name in built.inputs.present()}
    first = _call(spec, built.inputs, problems)
    changed = [name for name, value in before.items() if not torch.equal(getattr(built.inputs, name), value)]
    if changed:
        problems.append(f"modifies its inputs in place: {changed}")
    second = _call(spec, built.inputs, problems)
    if not torch.allclose(first.losses.detach(), second.losses.detach(), equal_nan=True):
        problems.append("not deterministic: two calls on the same inputs differ")


def _check_state(spec: LossSpec, problems: list[str]) -> None:
    out = _call(spec, build_loss_inputs(spec).inputs, problems)
    undeclared = sorted(set(out.state_updates) - set(spec.state))
    if undeclared:
        problems.append(f"returns undeclared state {undeclared} (declare it with state=...)")
        return
    if spec.state:
        again = _call(spec, dataclasses.replace(build_loss_inputs(spec, seed=2).inputs, state=out.state_updates),
                      problems)
        if not torch.isfinite(again.losses).all():
            problems.append("non-finite losses once its own state is fed back")
