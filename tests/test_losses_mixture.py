"""Mixtures (harness/losses/mixture.py, harness/mix_syntax.py): a weighted sum of registered
losses is a method like any other; bad mixtures are one line and exit status 2."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from harness.cli import main
from harness.errors import HarnessError
from harness.losses import get_loss
from harness.plan import plan_suite
from harness.suite import load_suite
from tests.conftest import tiny_suite_text
from tests.golden import LN2, close, pair, random_pairs


def test_mixture_golden():
    """dpo (β = 0.1) at h = 0 is ln 2; sft (token reduction) on one example of log-prob −4 over
    4 tokens is 1. Weights 0.8 and 1.0: 0.8 ln 2 + 1 = 1.5545177."""
    x = pair(-4.0, -4.0, -4.0, -4.0, chosen_len=4.0, rejected_len=4.0)
    out = get_loss("dpo+sft")(x, **{"dpo.weight": 0.8})
    close(out.losses, 0.8 * LN2 + 1.0)
    close(out.metrics["dpo.loss"], LN2)
    close(out.metrics["sft.loss"], 1.0)


def test_mixture_is_the_weighted_sum_of_its_components_with_their_own_settings_and_state():
    """Each component gets its prefixed hyper-parameters and running state; the headline metrics
    are the first component's."""
    x = random_pairs(seed=2)
    bco_state = {"reward_mean": torch.tensor(0.3), "reward_count": torch.tensor(2.0)}
    hparams = {"dpo.weight": 0.8, "dpo.beta": 0.2, "bco_pair.weight": 0.2, "bco_pair.beta": 0.5, "sft.weight": 1.0,
               "sft.reduction": "sequence"}
    mixed = get_loss("dpo+bco_pair+sft")(
        dataclasses.replace(x, state={f"bco_pair.{k}": v for k, v in bco_state.items()}), **hparams)
    dpo = get_loss("dpo")(x, beta=0.2)
    bco = get_loss("bco_pair")(dataclasses.replace(x, state=bco_state), beta=0.5)
    sft = get_loss("sft")(x, reduction="sequence")
    close(mixed.losses, 0.8 * dpo.losses + 0.2 * bco.losses + sft.losses)
    close(mixed.metrics["chosen_rewards"], dpo.metrics["chosen_rewards"])
    close(mixed.metrics["bco_pair.bco_delta"], bco.metrics["bco_delta"])
    assert set(mixed.state_updates) == {"bco_pair.reward_mean", "bco_pair.reward_count"}
    close(mixed.state_updates["bco_pair.reward_mean"], bco.state_updates["reward_mean"])


def test_mixture_spec_declares_the_union_of_needs_and_a_versioned_identity():
    spec = get_loss("dpo+wpo+sft")
    assert spec.needs == {"reference", "token_logps", "vocab_collision"}
    assert spec.version == "mix1(dpo:1,wpo:2,sft:1)"
    assert spec.hparams["dpo.weight"] == 1.0 and spec.hparams["wpo.weighting"] == "aligned"
    assert spec.space["dpo.weight"].scale == "linear" and spec.space["wpo.beta"] is get_loss("wpo").search_space["beta"]
    assert spec.trains_rejected and not get_loss("sft").trains_rejected


@pytest.mark.parametrize("name, message", [
    ("dpo+dpp", "unknown loss 'dpp'"),
    ("dpo+kto", "combines paired loss 'dpo' with unpaired loss 'kto'"),
    ("dpo+spin", "combines regime 'standard' (dpo) with 'spin_iterations' (spin)"),
    ("dpo+dpo", "two or more different losses"),
])
def test_bad_mixtures_are_refused(name, message):
    with pytest.raises(HarnessError, match=message.replace("(", r"\(").replace(")", r"\)")):
        get_loss(name)


def test_a_suite_mix_plans_as_one_method_with_its_weights_recorded(tmp_path):
    """{mix: {dpo: 0.8, bco_pair: 0.2, sft: 1.0}} is method dpo+bco_pair+sft; a weight list is a grid."""
    path = tmp_path / "mix.yaml"
    # written by hand: the mixture's name keeps the order of its components as written
    path.write_text("name: mix\nmethods: [{mix: {dpo: 0.8, bco_pair: 0.2, sft: 1.0}}, "
                    "{mix: {dpo: {weight: [0.5, 1.0], beta: 0.2}, sft: 1.0}}]\n")
    specs = [s for s in plan_suite(load_suite(path)) if s.trains]
    assert [s.method for s in specs] == ["dpo+bco_pair+sft", "dpo+sft", "dpo+sft"]
    first = specs[0].hparams
    assert (first["dpo.weight"], first["bco_pair.weight"], first["sft.weight"]) == (0.8, 0.2, 1.0)
    assert specs[0].method_version == "mix1(dpo:1,bco_pair:1,sft:1)"
    assert [s.hparams["dpo.weight"] for s in specs[1:]] == [0.5, 1.0]
    assert specs[1].label() == "dpo+sft(dpo.beta=0.2, dpo.weight=0.5)"


@pytest.mark.parametrize("methods, message", [
    ("[{mix: {dpp: 0.8, sft: 1.0}}]", "unknown loss 'dpp'"),
    ("[{mix: {dpo: -0.8, sft: 1.0}}]", "mix.dpo: weight -0.8 must be a number >= 0"),
    ("[{mix: {dpo: 0.8, kto: 1.0}}]", "combines paired loss 'dpo' with unpaired loss 'kto'"),
    ("[{mix: {dpo: 0.8}}]", "mix needs a mapping of two or more losses"),
    ("[{mix: {dpo: {weight: 0.5, bta: 0.2}, sft: 1.0}}]", "did you mean 'dpo.beta'"),
])
def test_bad_mix_in_a_suite_is_one_line_and_exit_2(capsys, tmp_path, methods, message):
    path = tmp_path / "bad.yaml"
    path.write_text(tiny_suite_text(methods=methods))
    code = main(["run", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and str(path) in err
    assert err.count("\n") == 1 and "Traceback" not in err
