"""Every loss's declarations: needs, data, reduction, papers' defaults, constraints, and the
contract's shape checks for the paired family (the formulas are tested per loss file)."""

from __future__ import annotations

import re

import pytest
import torch

from harness.errors import HarnessError
from harness.losses import get_loss
from tests.golden import random_pairs


MISSION = {
    "dpop": (("reference",), "paired"),
    "slic": (("sft_target",), "paired"),
    "tdpo1": (("reference", "vocab_kl"), "paired"),
    "tdpo2": (("reference", "vocab_kl"), "paired"),
    "kto": (("reference", "labels", "kl_pairs"), "unpaired"),
    "spin": (("reference",), "paired"),
    "sdpo_segment": (("reference", "token_logps", "segments"), "paired"),
    "sdpo_stepwise": (("reference",), "paired"),
    "odpo_offset": (("reference", "scores"), "paired"),
    "rdpo": (("reference",), "paired"),
    "cdpo": (("reference",), "paired"),
}


FAMILY = (
    "orpo", "cpo", "rpo", "ln_dpo", "r_dpo", "ld_dpo", "exo_pair", "nca_pair", "bco_pair",
    "sppo_hard", "apo_zero", "apo_down", "aot", "discopop", "f_dpo", "tr_dpo",
)  # fmt: skip


@pytest.mark.parametrize("name", sorted(MISSION))
def test_declarations(name):
    spec = get_loss(name)
    needs, data = MISSION[name]
    assert spec.needs == frozenset(needs)
    assert spec.data == data
    assert spec.reduction == "sum"
    assert "disagree" in spec.doc or name in ("sdpo_stepwise", "spin", "tdpo1", "tdpo2")
    assert "arXiv:" in spec.paper or name == "cdpo"


@pytest.mark.parametrize("name", FAMILY)
def test_family_contract(name):
    """(B,) finite losses, the four standard metrics (B,), a gradient to the policy only."""
    inputs = random_pairs(seed=3, batch=5)
    policy_fields = [f for f in vars(inputs) if f.startswith("policy_") and getattr(inputs, f) is not None]
    for field in policy_fields:
        getattr(inputs, field).requires_grad_(True)
    out = get_loss(name)(inputs)
    assert out.losses.shape == (5,)
    assert torch.isfinite(out.losses).all()
    for key in ("chosen_rewards", "rejected_rewards", "reward_margins", "reward_accuracies"):
        assert out.metrics[key].shape == (5,), key
        assert not out.metrics[key].requires_grad, f"{key} must be detached"
    out.losses.mean().backward()
    assert any(getattr(inputs, f).grad is not None for f in policy_fields)


@pytest.mark.parametrize(
    ("name", "hparams", "message"),
    [
        ("dpop", {"beta": -0.1}, "dpop.beta = -0.1 must be > 0"),
        ("tdpo1", {"beta": 0}, "must be > 0"),
        ("kto", {"beta": -1}, "must be > 0"),
        ("rdpo", {"epsilon": 0.5}, "rdpo.epsilon = 0.5 must be in [0.0, 0.5)"),
        ("rdpo", {"epsilon": -0.1}, "must be in"),
        ("cdpo", {"epsilon": 0.6}, "must be in [0.0, 0.5]"),
        ("dpop", {"lambda_": -1}, "must be >= 0"),
        ("slic", {"delta": -1}, "must be >= 0"),
        ("tdpo2", {"alpha": -0.5}, "must be >= 0"),
        ("kto", {"undesirable_weight": 0}, "must be > 0"),
        ("tdpo2", {"betta": 0.1}, "has no hyper-parameter 'betta' (did you mean 'beta'?)"),
        ("kto", {"desirable_wieght": 1.0}, "did you mean 'desirable_weight'"),
        ("dpop", {"lambda": 5}, "did you mean 'lambda_'"),
        ("rdpo", {"epsilon": "a lot"}, "should be a number"),
    ],
)
def test_invalid_hyperparameters(name, hparams, message):
    with pytest.raises(HarnessError, match=re.escape(message)):
        get_loss(name).resolve(hparams)


@pytest.mark.parametrize(
    "name, hparams",
    [
        ("orpo", {"lambda_": -0.1}),
        ("cpo", {"beta": 0.0}),
        ("rpo", {"alpha": -1.0}),
        ("ln_dpo", {"beta": -1.0}),
        ("r_dpo", {"alpha": -0.01}),
        ("ld_dpo", {"alpha": 1.5}),
        ("exo_pair", {"epsilon": 0.0}),
        ("nca_pair", {"beta": 0.0}),
        ("sppo_hard", {"beta": 0.0}),
        ("aot", {"variant": "pair"}),
        ("discopop", {"tau": 0.0}),
        ("f_dpo", {"divergence": "kl"}),
        ("f_dpo", {"alpha": 1.0}),
        ("wpo", {"beta": -0.1}),
    ],
)
def test_family_constraints_reject_bad_values(name, hparams):
    with pytest.raises(HarnessError, match=name):
        get_loss(name).resolve(hparams)


def test_defaults_are_the_papers():
    defaults = {name: get_loss(name).hparams for name in MISSION}
    assert defaults["dpop"] == {"beta": 0.1, "lambda_": 50.0}
    assert defaults["slic"] == {"delta": 1.0, "lambda_": 0.1}
    assert defaults["tdpo1"] == {"beta": 0.1}
    assert defaults["tdpo2"] == {"beta": 0.1, "alpha": 0.5}
    assert defaults["kto"] == {"beta": 0.1, "desirable_weight": 1.0, "undesirable_weight": 1.0}
    assert defaults["odpo_offset"] == {"beta": 0.1, "alpha": 1.0}
    assert defaults["rdpo"] == {"beta": 0.1, "epsilon": 0.1}
    assert defaults["cdpo"] == {"beta": 0.1, "epsilon": 0.1}
    for name in ("spin", "sdpo_segment", "sdpo_stepwise"):
        assert defaults[name] == {"beta": 0.1}
    assert get_loss("rdpo").resolve({"epsilon": "0.2"})["epsilon"] == 0.2  # YAML strings coerce
    assert get_loss("cdpo").resolve({"epsilon": 0.5})["epsilon"] == 0.5  # symmetric, allowed
