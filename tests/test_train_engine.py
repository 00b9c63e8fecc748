"""The training engine on the tiny sandbox: every method trains, accumulation invariance, resume,
failed runs, the reference cache."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from harness.losses import LOSSES, LossOutput, get_loss, register_loss
from harness.plan import plan_suite
from harness.runner import _train, prepare_world
from harness.suite import load_suite
from harness.train.checkpoint import RunCheckpoint
from tests.conftest import tiny_suite_text

# Losses whose batch coupling makes accumulation change the result by design.
BATCH_COUPLED = {"aot", "bco_pair", "kto"}


@pytest.fixture(scope="module")
def world_and_suite(tmp_path_factory, harness_cache):
    path = tmp_path_factory.mktemp("engine") / "engine.yaml"
    path.write_text(tiny_suite_text(name="engine", methods="[dpo]"))
    suite = load_suite(path, ["budget.kind=steps", "budget.value=4", "train.batch_size=4"])
    return prepare_world(suite), suite


def spec_for(suite, method: str, **hparams):
    from dataclasses import replace

    from harness.suite import MethodEntry

    suite = replace(suite, methods=(MethodEntry(method, hparams),))
    return [s for s in plan_suite(suite) if s.trains][0], suite


def parameters(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def loss_hparams_for_tiny_runs(name: str) -> dict:
    """Regime settings that make a 3-step run exercise the regime (a sync, two stages, ...)."""
    regime = get_loss(name).regime
    return {"reference_sync": {"sync_every": 1}, "spin_iterations": {"iterations": 2, "gen_max_new_tokens": 6}}.get(regime, {})


# every registered loss, and a mixture (the trainer provides the union of its components' needs)
@pytest.mark.parametrize("name", sorted(LOSSES.names()) + ["dpo+bco_pair+sft"])
def test_every_registered_method_trains(world_and_suite, name):
    world, suite = world_and_suite
    spec, suite = spec_for(suite, name, **loss_hparams_for_tiny_runs(name))
    before = parameters(world.start_model)
    policy, result = _train(spec, suite, world)
    assert result.accounting.optimizer_steps >= 3
    assert not torch.equal(parameters(policy), before), "training did not change the parameters"
    assert torch.equal(parameters(world.start_model), before), "the frozen start model changed"
    assert all(math.isfinite(row["loss"]) for row in result.curve)


@pytest.mark.parametrize("name", ["dpo", "simpo", "ipo", "tdpo2", "sdpo_segment"])
def test_batch_times_accumulation_invariance(world_and_suite, monkeypatch, name):
    """The gradient of one step at batch 8 × accumulation 1 equals batch 1 × accumulation 8 (the
    same 8 examples). Gradients, not weights: Adam's first step is g/|g|, which turns float noise
    in near-zero gradients into full-size differences."""
    world, suite = world_and_suite
    grads = []
    real_clip = torch.nn.utils.clip_grad_norm_

    def recording_clip(params, max_norm):
        params = list(params)
        grads.append(torch.cat([p.grad.detach().flatten().clone() for p in params if p.grad is not None]))
        return real_clip(params, max_norm)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording_clip)
    for parts in (1, 8):
        s = load_suite(suite.path, ["budget.kind=steps", "budget.value=1", "train.batch_size=8",
                                    f"train.grad_accumulation={parts}"])
        spec, s = spec_for(s, name)
        _train(spec, s, world)
    assert len(grads) == 2
    # float32 summation order differs between the two: tolerate noise relative to the largest entry
    scale = grads[0].abs().max().item()
    assert torch.allclose(grads[0], grads[1], atol=1e-6 * max(scale, 1.0), rtol=1e-4)


class Killed(Exception):
    pass


# beta_dpo and alpha_dpo keep running statistics (and beta_dpo seeded draws) across steps: a resumed
# run matches only if that state survives the checkpoint
@pytest.mark.parametrize("name,settings", [("dpo", {}), ("tr_dpo", {"sync_every": 2}), ("sdpo_stepwise", {}),
                                           ("spin", {"iterations": 2, "gen_max_new_tokens": 6}),
                                           ("beta_dpo", {}), ("alpha_dpo", {})])
def test_resume_after_a_kill_matches_an_uninterrupted_run(world_and_suite, monkeypatch, name, settings):
    world, suite = world_and_suite
    s = load_suite(suite.path, ["budget.kind=steps", "budget.value=8", "train.batch_size=4", "train.checkpoint_every=2"])
    spec, s = spec_for(s, name, **settings)
    RunCheckpoint(spec.run_id, 0).clear()
    uninterrupted, full = _train(spec, s, world)
    RunCheckpoint(spec.run_id, 0).clear()

    import harness.train.loop as loop

    real_step, calls = loop._optimizer_step, {"n": 0}

    def dying_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:
            raise Killed
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loop, "_optimizer_step", dying_step)
    with pytest.raises(Killed):
        _train(spec, s, world)
    monkeypatch.setattr(loop, "_optimizer_step", real_step)
    assert RunCheckpoint(spec.run_id, 0).load() is not None
    resumed, result = _train(spec, s, world)
    RunCheckpoint(spec.run_id, 0).clear()
    assert torch.equal(parameters(resumed), parameters(uninterrupted))
    assert result.accounting.as_counts() == full.accounting.as_counts()
    assert [r["step"] for r in result.curve] == [r["step"] for r in full.curve]


def test_a_nan_loss_fails_the_run_and_the_suite_goes_on(tmp_path, harness_cache):
    from harness.cli import main

    @register_loss("always_nan_for_test", reduction="sum", paper="test", formula="NaN")
    def always_nan(inputs, *, beta: float = 0.1) -> LossOutput:
        return LossOutput(inputs.policy_chosen_logps * float("nan"))

    try:
        path = tmp_path / "nan.yaml"
        path.write_text(tiny_suite_text(name="nan", methods="[always_nan_for_test, simpo]"))
        code = main(["run", str(path), "--results", str(tmp_path / "r"), "--reports", str(tmp_path / "p")])
        assert code == 1  # a run failed; the others were stored
        import json

        manifests = [json.loads(p.read_text()) for p in (tmp_path / "r" / "nan").glob("*.json")]
        failed = [m for m in manifests if m["status"] == "failed"]
        assert len(failed) == 1 and "step 1" in failed[0]["error"] and "nan" in failed[0]["error"].lower()
        assert sum(m["status"] == "ok" for m in manifests) == 2  # start and simpo
    finally:
        LOSSES.remove("always_nan_for_test")


def test_the_reference_cache_is_shared_and_keyed_by_weights(world_and_suite):
    world, _ = world_and_suite
    first = world.reference_sums("paired")
    world._reference.clear()
    again = world.reference_sums("paired")
    assert torch.equal(first, again)
    other = copy.deepcopy(world.start_model)
    with torch.no_grad():
        next(other.parameters()).add_(0.1)
    from harness.train.reference import reference_sums

    assert not torch.equal(reference_sums(other, world.data("paired"), pad_id=world.tokenizer.pad_token_id), first)
