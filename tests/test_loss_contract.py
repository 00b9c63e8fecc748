"""The loss contract, checked for every registered loss (built-ins and plugins registered later).

Each loss gets a LossInputs with exactly the fields its spec declares (tests/golden.py: build_loss_inputs), so a
loss that reads a field it did not declare fails here: that is how "a reference-free loss runs
with every reference field None" is tested.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from harness.errors import HarnessError
from harness.losses import LOSSES, NEEDS, LossOutput, get_loss
from harness.losses.base import SHARED_SPACE, unsearched, validate_search_space
from tests.golden import REFERENCE_FIELDS, build_loss_inputs, expected_fields

# Every registered loss, and two mixtures (a paired one with running state and an SFT term, an
# unpaired one), which must keep the same contract.
NAMES = LOSSES.names() + ["dpo+bco_pair+sft", "kto+apo_zero_unpaired"]
BATCH = 4


@pytest.fixture(params=NAMES)
def spec(request):
    return get_loss(request.param)


def test_every_need_is_buildable():
    """The builder knows every need in base.NEEDS; a new need must be added to harness.losses.contract."""
    from tests.golden import PAIRED_FIELDS, UNPAIRED_FIELDS

    assert set(NEEDS) <= set(PAIRED_FIELDS) and set(NEEDS) <= set(UNPAIRED_FIELDS)


def test_builder_provides_exactly_what_is_declared(spec):
    built = build_loss_inputs(spec, batch_size=BATCH)
    assert built.inputs.present() == expected_fields(spec)
    if not spec.uses_reference:
        assert not (built.inputs.present() & REFERENCE_FIELDS)


def test_declaration(spec):
    assert spec.data in ("paired", "unpaired")
    assert spec.paper and spec.formula and spec.doc, f"{spec.name}: paper, formula, docstring required"
    assert set(spec.needs) <= set(NEEDS)
    resolved = spec.resolve({})
    assert resolved == spec.hparams  # the defaults satisfy the spec's own constraints


def test_search_space(spec):
    """Every numeric hyper-parameter has a dimension with a source, inside its constraints and
    around its default; the learning rate is a dimension of every method."""
    assert unsearched(spec.hparams, spec.search_space) == [], f"{spec.name}: hyper-parameters without a range"
    validate_search_space(spec.name, spec.hparams, spec.constraints, spec.search_space)
    assert spec.space["lr"] is SHARED_SPACE["lr"] and spec.space["lr"].relative_to == "train.lr"
    for key, dim in spec.space.items():
        assert dim.source.strip(), f"{spec.name}.{key}: no source"


def test_unknown_hyperparameter_is_rejected(spec):
    if spec.hparams:
        name = next(iter(spec.hparams))
        with pytest.raises(HarnessError, match=f"did you mean '{name}'"):
            spec.resolve({name + "x": 1.0})
    else:
        with pytest.raises(HarnessError, match="takes no hyper-parameters"):
            spec.resolve({"beta": 1.0})


def test_output_shapes_and_finiteness(spec):
    built = build_loss_inputs(spec, batch_size=BATCH)
    out = spec(built.inputs)
    assert isinstance(out, LossOutput)
    assert out.losses.shape == (BATCH,)
    assert torch.isfinite(out.losses).all(), f"{spec.name}: non-finite losses {out.losses}"
    for key in ("chosen_rewards", "rejected_rewards", "reward_margins", "reward_accuracies"):
        assert key in out.metrics, f"{spec.name}: missing metric {key}"
    for key, value in out.metrics.items():
        assert isinstance(value, torch.Tensor), f"{spec.name}.{key} is not a tensor"
        assert value.shape in ((), (BATCH,)), f"{spec.name}.{key} has shape {tuple(value.shape)}"
        assert torch.isfinite(value).all(), f"{spec.name}.{key} is not finite: {value}"
        assert not value.requires_grad, f"{spec.name}.{key} should be detached (it is only logged)"


def test_batch_of_one(spec):
    out = spec(build_loss_inputs(spec, batch_size=1, seed=1).inputs)
    assert out.losses.shape == (1,)
    assert torch.isfinite(out.losses).all()


def test_gradients_reach_the_policy_and_only_the_policy(spec):
    built = build_loss_inputs(spec, batch_size=BATCH)
    spec(built.inputs).losses.sum().backward()
    for side, leaves in built.gradient_groups.items():
        grads = [leaf.grad for leaf in leaves if leaf.grad is not None]
        if side == "rejected" and not spec.trains_rejected:  # SFT: declared, and kept
            assert not any(g.abs().sum() > 0 for g in grads), f"{spec.name}: trains the rejected side"
            continue
        assert grads, f"{spec.name}: no gradient reaches the {side} policy log-probs"
        assert any(g.abs().sum() > 0 for g in grads), f"{spec.name}: zero gradient on {side}"
    for leaf in built.leaves:
        assert leaf.grad is None or torch.isfinite(leaf.grad).all()
    for name in built.inputs.present() & REFERENCE_FIELDS:
        value = getattr(built.inputs, name)
        assert not value.requires_grad and value.grad is None, f"{spec.name}: {name} got a gradient"


def test_inputs_are_not_mutated(spec):
    built = build_loss_inputs(spec, batch_size=BATCH)
    before = {name: getattr(built.inputs, name).detach().clone() for name in built.inputs.present()}
    spec(built.inputs)
    for name, value in before.items():
        assert torch.equal(getattr(built.inputs, name), value), f"{spec.name} modified {name} in place"


def test_pure(spec):
    built = build_loss_inputs(spec, batch_size=BATCH)
    first, second = spec(built.inputs), spec(built.inputs)
    torch.testing.assert_close(first.losses, second.losses)


def test_state(spec):
    """Stateless losses return no state; stateful ones start from an empty state and accept
    their own updates back (the trainer's loop), updating only what they declared."""
    built = build_loss_inputs(spec, batch_size=BATCH)
    out = spec(built.inputs)
    if not spec.state:
        assert out.state_updates == {}, f"{spec.name} returns state it did not declare"
        return
    assert set(out.state_updates) <= set(spec.state), f"{spec.name}: undeclared state keys"
    for key, value in out.state_updates.items():
        assert torch.isfinite(value).all() and not value.requires_grad, f"{spec.name}: bad state {key}"
    next_batch = build_loss_inputs(spec, batch_size=BATCH, seed=2).inputs
    again = spec(dataclasses.replace(next_batch, state=out.state_updates))
    assert torch.isfinite(again.losses).all()
    assert set(again.state_updates) <= set(spec.state)
