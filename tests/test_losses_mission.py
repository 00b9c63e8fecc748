"""The mission's losses: golden values derived by hand, equivalences, hyper-parameter validation.

Shared numbers for the paired golden values (one pair, β = 0.1):
    policy_chosen_logps = −10, reference_chosen_logps = −12   →  r_w = +2
    policy_rejected_logps = −14, reference_rejected_logps = −13  →  r_l = −1
    h = r_w − r_l = 3, β h = 0.3
softplus(z) = log(1 + e^z) = −log σ(−z); softplus(−0.3) = 0.554355, softplus(0.3) = 0.854355
(they differ by exactly 0.3, since softplus(z) − softplus(−z) = z).
"""

from __future__ import annotations

import dataclasses
import math
import re

import pytest
import torch

from harness.errors import HarnessError
from harness.losses import LossInputs, get_loss

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


def softplus(z: float) -> float:
    return math.log1p(math.exp(z))


def sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def pair(**overrides) -> LossInputs:
    """The shared pair of the module docstring (h = 3); fields overridable."""
    fields = dict(
        policy_chosen_logps=t(-10.0),
        policy_rejected_logps=t(-14.0),
        reference_chosen_logps=t(-12.0),
        reference_rejected_logps=t(-13.0),
        chosen_lengths=t(4.0),
        rejected_lengths=t(4.0),
    )
    fields.update(overrides)
    return LossInputs(**fields)


def random_pairs(batch: int = 16, seed: int = 0, **extra) -> LossInputs:
    gen = torch.Generator().manual_seed(seed)
    logps = lambda: -torch.rand(batch, generator=gen, dtype=torch.float64) * 30  # noqa: E731
    return LossInputs(
        policy_chosen_logps=logps(),
        policy_rejected_logps=logps(),
        reference_chosen_logps=logps(),
        reference_rejected_logps=logps(),
        chosen_lengths=torch.full((batch,), 10.0, dtype=torch.float64),
        rejected_lengths=torch.full((batch,), 10.0, dtype=torch.float64),
        **extra,
    )


def losses(name: str, inputs: LossInputs, **hparams) -> torch.Tensor:
    return get_loss(name)(inputs, **hparams).losses


def close(actual: torch.Tensor, expected) -> None:
    expected = torch.as_tensor(expected, dtype=actual.dtype)
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------------------------ declarations


@pytest.mark.parametrize("name", sorted(MISSION))
def test_declarations(name):
    spec = get_loss(name)
    needs, data = MISSION[name]
    assert spec.needs == frozenset(needs)
    assert spec.data == data
    assert spec.reduction == "sum"
    assert "disagree" in spec.doc or name in ("sdpo_stepwise", "spin", "tdpo1", "tdpo2")
    assert "arXiv:" in spec.paper or name == "cdpo"


# ---------------------------------------------------------------------------------- golden values


def test_dpop_golden():
    """policy_chosen −12.5 vs reference −12: r_w = −0.5, so the penalty is max(0, 0.5) = 0.5;
    r_l = −1, h = 0.5. With λ = 50, β = 0.1: β (h − λ·0.5) = 0.1·(0.5 − 25) = −2.45,
    loss = softplus(2.45) = 2.532772. Penalty inside the β bracket (outside, it would be
    softplus(−0.05) + 25 ≈ 25.67)."""
    out = get_loss("dpop")(pair(policy_chosen_logps=t(-12.5)))
    close(out.losses, [softplus(2.45)])
    assert abs(out.losses.item() - 2.532772) < 1e-6
    close(out.metrics["dpop_penalty"], [0.5])


def test_slic_golden():
    """δ = 1, λ = 0.1. Pair 1: log πθ(y_w) = −10, log πθ(y_l) = −9.5, hinge = max(0, 1 + 10 − 9.5)
    = 1.5; SFT target log-prob −20 → 0.1·20 = 2; loss 3.5. Pair 2: −5 vs −9, hinge
    max(0, 1 − 4) = 0; SFT −10 → loss 1.0. No reference is read (its fields are None)."""
    inputs = LossInputs(
        policy_chosen_logps=t(-10.0, -5.0),
        policy_rejected_logps=t(-9.5, -9.0),
        chosen_lengths=t(4.0, 4.0),
        rejected_lengths=t(4.0, 4.0),
        policy_sft_logps=t(-20.0, -10.0),
        sft_lengths=t(5.0, 5.0),
    )
    out = get_loss("slic")(inputs)
    close(out.losses, [3.5, 1.0])
    close(out.metrics["slic_hinge"], [1.5, 0.0])


def _tdpo_pair(chosen_kl=(0.2, 0.3), rejected_kl=(1.0, 0.5), requires_grad=False) -> LossInputs:
    chosen = t(*chosen_kl).unsqueeze(0).requires_grad_(requires_grad)
    rejected = t(*rejected_kl).unsqueeze(0).requires_grad_(requires_grad)
    return pair(chosen_vocab_kl=chosen, rejected_vocab_kl=rejected)


def test_tdpo1_golden():
    """Per-position KLs chosen [0.2, 0.3] → D_w = 0.5, rejected [1.0, 0.5] → D_l = 1.5.
    TDPO₁: β (h − (D_l − D_w)) = 0.1·(3 − 1) = 0.2, loss = softplus(−0.2) = 0.598139.
    dL/dD_w = −β σ(−0.2) = −0.045017 per position (the KL gradient flows on both sides)."""
    inputs = _tdpo_pair(requires_grad=True)
    out = get_loss("tdpo1")(inputs)
    close(out.losses, [softplus(-0.2)])
    close(out.metrics["tdpo_chosen_kl"], [0.5])
    close(out.metrics["tdpo_rejected_kl"], [1.5])
    out.losses.sum().backward()
    close(inputs.chosen_vocab_kl.grad, [[-0.1 * sigmoid(-0.2)] * 2])
    close(inputs.rejected_vocab_kl.grad, [[0.1 * sigmoid(-0.2)] * 2])


def test_tdpo2_golden():
    """Same KLs, α = 0.5: β (h − α (D_l − sg(D_w))) = 0.1·(3 − 0.5·1) = 0.25,
    loss = softplus(−0.25) = 0.575939. The chosen KL gets no gradient (stop-gradient)."""
    inputs = _tdpo_pair(requires_grad=True)
    out = get_loss("tdpo2")(inputs)
    close(out.losses, [softplus(-0.25)])
    out.losses.sum().backward()
    assert inputs.chosen_vocab_kl.grad is None or not inputs.chosen_vocab_kl.grad.any()
    close(inputs.rejected_vocab_kl.grad, [[0.1 * 0.5 * sigmoid(-0.25)] * 2])


def _kto_batch(policy_kl=(-11.0, -15.0), reference_kl=(-12.0, -15.5)) -> LossInputs:
    policy_kl_logps = t(*policy_kl).requires_grad_(True)
    return LossInputs(
        policy_logps=t(-10.0, -14.0).requires_grad_(True),
        reference_logps=t(-12.0, -13.0),
        lengths=t(4.0, 4.0),
        labels=torch.tensor([True, False]),
        policy_kl_logps=policy_kl_logps,
        reference_kl_logps=t(*reference_kl),
    )


def test_kto_golden():
    """Example 1 desirable, r = −10 − (−12) = 2; example 2 undesirable, r = −14 − (−13) = −1.
    Mismatched pairs: policy [−11, −15] minus reference [−12, −15.5] = [1, 0.5], mean 0.75 = z0.
    β = 0.1, λ_D = λ_U = 1: desirable 1 − σ(0.1·(2 − 0.75)) = 1 − σ(0.125) = 0.468791;
    undesirable 1 − σ(0.1·(0.75 + 1)) = 1 − σ(0.175) = 0.456362.
    Rewards β r = [0.2, −0.1]: chosen_rewards 0.2, rejected_rewards −0.1, margin 0.3; both on their
    label's side of β z0 = 0.075, so accuracies [1, 1]. z0 is detached: no gradient to the KL pairs."""
    inputs = _kto_batch()
    out = get_loss("kto")(inputs)
    close(out.losses, [1 - sigmoid(0.125), 1 - sigmoid(0.175)])
    close(out.metrics["kto_z0"], 0.75)
    close(out.metrics["chosen_rewards"], 0.2)
    close(out.metrics["rejected_rewards"], -0.1)
    close(out.metrics["reward_margins"], 0.3)
    close(out.metrics["reward_accuracies"], [1.0, 1.0])
    out.losses.sum().backward()
    assert inputs.policy_kl_logps.grad is None
    assert inputs.policy_logps.grad is not None


def test_kto_z0_clamped_at_zero_and_weights():
    """Mismatched-pair log-ratios [−1, −0.5] average −0.75 → z0 = max(0, −0.75) = 0.
    λ_D = 2, λ_U = 0.5: 2·(1 − σ(0.2)) = 0.900332 and 0.5·(1 − σ(0.1)) = 0.237503."""
    inputs = _kto_batch(reference_kl=(-10.0, -14.5))
    out = get_loss("kto")(inputs, desirable_weight=2.0, undesirable_weight=0.5)
    close(out.metrics["kto_z0"], 0.0)
    close(out.losses, [2 * (1 - sigmoid(0.2)), 0.5 * (1 - sigmoid(0.1))])


def test_kto_single_label_batch_metrics_stay_finite():
    inputs = LossInputs(
        policy_logps=t(-1.0, -2.0), reference_logps=t(-1.5, -2.5), lengths=t(1.0, 1.0),
        labels=torch.tensor([True, True]),
        policy_kl_logps=t(-1.0, -1.0),
        reference_kl_logps=t(-1.0, -1.0),
    )
    out = get_loss("kto")(inputs)
    close(out.metrics["rejected_rewards"], 0.0)  # no undesirable example: 0, not NaN
    close(out.metrics["num_undesirable"], 0.0)


@pytest.mark.parametrize("name", ["spin", "sdpo_stepwise"])
def test_dpo_shaped_golden(name):
    """SPIN and sDPO are DPO per step: softplus(−β h) = softplus(−0.3) = 0.554355."""
    close(losses(name, pair()), [softplus(-0.3)])


def test_sdpo_segment_golden():
    """Chosen tokens: policy [−1, −2, −3, −4], reference [−1.5, −2.5, −2, −4.5], segment mask
    [0, 1, 1, 0]: segment log-ratio (−2 + 2.5) + (−3 + 2) = −0.5 (positions 0 and 3, whose
    ratios are +0.5 each, are context and do not count).
    Rejected tokens: policy [−2]*4, reference [−1]*4, segment [0, 0, 1, 1]: −1 − 1 = −2.
    Margin −0.5 − (−2) = 1.5; β = 0.1: loss = softplus(−0.15) = 0.620957."""
    inputs = LossInputs(
        policy_chosen_logps=t(-10.0),
        policy_rejected_logps=t(-8.0),
        reference_chosen_logps=t(-10.5),
        reference_rejected_logps=t(-4.0),
        chosen_lengths=t(4.0),
        rejected_lengths=t(4.0),
        policy_chosen_token_logps=t(-1.0, -2.0, -3.0, -4.0).unsqueeze(0),
        reference_chosen_token_logps=t(-1.5, -2.5, -2.0, -4.5).unsqueeze(0),
        policy_rejected_token_logps=t(-2.0, -2.0, -2.0, -2.0).unsqueeze(0),
        reference_rejected_token_logps=t(-1.0, -1.0, -1.0, -1.0).unsqueeze(0),
        chosen_mask=torch.ones(1, 4, dtype=torch.bool),
        rejected_mask=torch.ones(1, 4, dtype=torch.bool),
        chosen_segment_mask=torch.tensor([[False, True, True, False]]),
        rejected_segment_mask=torch.tensor([[False, False, True, True]]),
    )
    out = get_loss("sdpo_segment")(inputs)
    close(out.losses, [softplus(-0.15)])
    close(out.metrics["chosen_rewards"], [-0.05])
    close(out.metrics["rejected_rewards"], [-0.2])


def test_odpo_offset_golden():
    """Scores s_w = 1 + e^0.3, s_l = 1: Δ = α log(e^0.3) = 0.3 with α = 1, which cancels β h = 0.3,
    so loss = −log σ(0) = log 2 = 0.693147. With α = 2, Δ = 0.6: softplus(0.3) = 0.854355."""
    inputs = pair(chosen_scores=t(1 + math.exp(0.3)), rejected_scores=t(1.0))
    close(losses("odpo_offset", inputs), [math.log(2)])
    close(losses("odpo_offset", inputs, alpha=2.0), [softplus(0.3)])


def test_odpo_offset_tie_is_finite():
    inputs = pair(chosen_scores=t(0.5), rejected_scores=t(0.5))
    assert torch.isfinite(losses("odpo_offset", inputs)).all()


def test_rdpo_golden():
    """ε = 0.1, β h = 0.3: [(0.9)·softplus(−0.3) − 0.1·softplus(0.3)] / 0.8
    = (0.498920 − 0.085436) / 0.8 = 0.516855."""
    expected = (0.9 * softplus(-0.3) - 0.1 * softplus(0.3)) / 0.8
    close(losses("rdpo", pair()), [expected])
    assert abs(expected - 0.516855) < 1e-6


def test_rdpo_is_unbounded_below():
    """policy_chosen +88 vs reference −12: r_w = 100, r_l = −1, h = 101, β h = 10.1:
    (0.9·softplus(−10.1) − 0.1·softplus(10.1)) / 0.8 ≈ (0.000037 − 1.010004) / 0.8 = −1.262459:
    negative, as the unbiased estimator allows."""
    value = losses("rdpo", pair(policy_chosen_logps=t(88.0)))
    assert value.item() < 0
    close(value, [(0.9 * softplus(-10.1) - 0.1 * softplus(10.1)) / 0.8])
    assert abs(value.item() + 1.262459) < 1e-6


def test_cdpo_golden():
    """ε = 0.1: 0.9·softplus(−0.3) + 0.1·softplus(0.3) = softplus(−0.3) + 0.1·0.3 = 0.584355."""
    close(losses("cdpo", pair()), [softplus(-0.3) + 0.03])


# ----------------------------------------------------------------------------------- equivalences


def test_rdpo_and_cdpo_at_zero_epsilon_are_dpo():
    inputs = random_pairs()
    dpo = losses("dpo", inputs)
    close(losses("rdpo", inputs, epsilon=0.0), dpo)
    close(losses("cdpo", inputs, epsilon=0.0), dpo)


def test_tdpo_reduces_to_dpo():
    """TDPO₂ at α = 0, either TDPO with zero KL, and TDPO₁ with equal sequential KLs on both sides."""
    batch = 16
    gen = torch.Generator().manual_seed(1)
    kl = torch.rand(batch, 6, generator=gen, dtype=torch.float64)
    zeros = torch.zeros(batch, 6, dtype=torch.float64)
    dpo = losses("dpo", random_pairs(batch))
    different_kl = random_pairs(batch, chosen_vocab_kl=kl, rejected_vocab_kl=kl.flip(0))
    close(losses("tdpo2", different_kl, alpha=0.0), dpo)
    for name in ("tdpo1", "tdpo2"):
        zero_kl = random_pairs(batch, chosen_vocab_kl=zeros, rejected_vocab_kl=zeros)
        close(losses(name, zero_kl), dpo)
    # rolling along positions keeps each row's sum: D_w = D_l
    equal_kl = random_pairs(batch, chosen_vocab_kl=kl, rejected_vocab_kl=kl.roll(1, -1))
    close(losses("tdpo1", equal_kl), dpo)


def test_dpop_is_dpo_when_the_chosen_ratio_is_not_negative():
    inputs = random_pairs()
    gain = torch.rand(16, dtype=torch.float64)  # r_w = gain ≥ 0
    inputs = dataclasses.replace(inputs, policy_chosen_logps=inputs.reference_chosen_logps + gain)
    out = get_loss("dpop")(inputs)
    close(out.losses, losses("dpo", inputs))
    close(out.metrics["dpop_penalty"], torch.zeros(16))


def test_dpop_penalizes_a_falling_chosen_likelihood():
    inputs = pair(policy_chosen_logps=t(-12.5))
    assert losses("dpop", inputs).item() > losses("dpo", inputs).item()


@pytest.mark.parametrize("name", ["spin", "sdpo_stepwise"])
def test_dpo_shaped_losses_are_dpo(name):
    inputs = random_pairs(seed=3)
    close(losses(name, inputs), losses("dpo", inputs))


def test_odpo_offset_at_zero_alpha_is_dpo():
    inputs = random_pairs(seed=4, chosen_scores=torch.rand(16) + 1, rejected_scores=torch.rand(16))
    close(losses("odpo_offset", inputs, alpha=0.0), losses("dpo", inputs))


def test_sdpo_segment_over_whole_completions_is_dpo():
    """With segment masks = completion masks, segment sums are the summed log-ratios: DPO."""
    gen = torch.Generator().manual_seed(5)
    mask = torch.rand(8, 6, generator=gen) > 0.3
    tokens = [-torch.rand(8, 6, generator=gen, dtype=torch.float64) * mask for _ in range(4)]
    inputs = LossInputs(
        policy_chosen_logps=tokens[0].sum(-1),
        policy_rejected_logps=tokens[1].sum(-1),
        reference_chosen_logps=tokens[2].sum(-1),
        reference_rejected_logps=tokens[3].sum(-1),
        policy_chosen_token_logps=tokens[0],
        policy_rejected_token_logps=tokens[1],
        reference_chosen_token_logps=tokens[2],
        reference_rejected_token_logps=tokens[3],
        chosen_mask=mask,
        rejected_mask=mask,
        chosen_segment_mask=mask,
        rejected_segment_mask=mask,
    )
    close(losses("sdpo_segment", inputs), losses("dpo", inputs))


# ------------------------------------------------------------------------- hyper-parameter checks


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
