"""The DPO family beyond the mission: golden values derived by hand, equivalences, constraints.

Golden values are worked out in each test's docstring from small inputs; logs are natural.
Handy constants: −log σ(0) = ln 2 = 0.6931472, −log σ(1) = ln(1 + e⁻¹) = 0.3132617,
−log σ(−1) = 1.3132617, −log σ(2) = 0.1269280, −log σ(3) = 0.0485874.
"""

from __future__ import annotations

import math

import pytest
import torch

from harness.errors import HarnessError
from harness.losses import LossInputs, get_loss

FAMILY = (
    "orpo", "cpo", "rpo", "ln_dpo", "r_dpo", "ld_dpo", "exo_pair", "nca_pair", "bco_pair",
    "sppo_hard", "apo_zero", "apo_down", "aot", "discopop", "f_dpo", "tr_dpo",
)  # fmt: skip

LN2 = math.log(2.0)
NLS1 = math.log1p(math.exp(-1.0))  # −log σ(1)


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def pair(
    policy_chosen, policy_rejected, reference_chosen=0.0, reference_rejected=0.0, chosen_len=1.0, rejected_len=1.0
) -> LossInputs:
    """One pair (B = 1) from scalars, or B pairs from equal-length lists."""

    def as_tensor(v):
        return t(*v) if isinstance(v, (list, tuple)) else t(v)

    return LossInputs(
        policy_chosen_logps=as_tensor(policy_chosen),
        policy_rejected_logps=as_tensor(policy_rejected),
        reference_chosen_logps=as_tensor(reference_chosen),
        reference_rejected_logps=as_tensor(reference_rejected),
        chosen_lengths=as_tensor(chosen_len),
        rejected_lengths=as_tensor(rejected_len),
    )


def random_inputs(
    seed: int = 0, batch: int = 5, positions: int = 7, *, equal_lengths: int | None = None
) -> LossInputs:
    """Consistent random inputs with every field a family loss may need: per-token log-probs
    (B, T) under completion masks, their sums, and token counts."""
    g = torch.Generator().manual_seed(seed)

    def mask() -> torch.Tensor:
        if equal_lengths is not None:
            lengths = torch.full((batch,), equal_lengths)
        else:
            lengths = torch.randint(1, positions + 1, (batch,), generator=g)
        return torch.arange(positions).unsqueeze(0) < lengths.unsqueeze(1)

    def token_logps(m: torch.Tensor) -> torch.Tensor:
        return -(0.05 + 3.0 * torch.rand(batch, positions, generator=g, dtype=torch.float64)) * m

    chosen_mask, rejected_mask = mask(), mask()
    tokens = {
        "policy_chosen": token_logps(chosen_mask),
        "policy_rejected": token_logps(rejected_mask),
        "reference_chosen": token_logps(chosen_mask),
        "reference_rejected": token_logps(rejected_mask),
    }
    return LossInputs(
        **{f"{k}_logps": v.sum(dim=1) for k, v in tokens.items()},
        **{f"{k}_token_logps": v for k, v in tokens.items()},
        chosen_mask=chosen_mask,
        rejected_mask=rejected_mask,
        chosen_lengths=chosen_mask.sum(dim=1).double(),
        rejected_lengths=rejected_mask.sum(dim=1).double(),
    )


def loss(name: str, inputs: LossInputs, **hparams) -> torch.Tensor:
    return get_loss(name)(inputs, **hparams).losses


def close(actual: torch.Tensor, expected, tol: float = 1e-6) -> None:
    expected = torch.as_tensor(expected, dtype=actual.dtype).expand_as(actual)
    torch.testing.assert_close(actual, expected, atol=tol, rtol=tol)


# ---------------------------------------------------------------------------------------------
# Contract, for each family member
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILY)
def test_family_contract(name):
    """(B,) finite losses, the four standard metrics (B,), a gradient to the policy only."""
    inputs = random_inputs(seed=3)
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


# ---------------------------------------------------------------------------------------------
# Golden values
# ---------------------------------------------------------------------------------------------


def test_orpo_golden():
    """λ = 0.1. Chosen: 2 tokens, summed log-prob 2·ln(1/2), so ℓ̄_w = ln(1/2), p = 1/2,
    odds = 1, log odds = 0. Rejected: 3 tokens, 3·ln(1/3), ℓ̄_l = ln(1/3), p = 1/3, odds = 1/2,
    log odds = −ln 2. log odds ratio = ln 2; −log σ(ln 2) = −log(2/3) = ln 1.5 = 0.4054651.
    NLL = −ℓ̄_w = ln 2 = 0.6931472. Loss = 0.6931472 + 0.1·0.4054651 = 0.7336937."""
    out = get_loss("orpo")(pair(2 * math.log(0.5), 3 * math.log(1 / 3), chosen_len=2.0, rejected_len=3.0))
    close(out.losses, 0.7336937)
    close(out.metrics["log_odds_ratio"], LN2)
    close(out.metrics["nll"], LN2)
    close(out.metrics["chosen_rewards"], 0.1 * math.log(0.5))


def test_orpo_stays_finite_at_certain_tokens():
    """ℓ̄ = 0 (every token certain) has infinite odds; the clamp keeps the loss finite."""
    out = get_loss("orpo")(pair(0.0, -1.0))
    assert torch.isfinite(out.losses).all()


def test_cpo_golden():
    """β = 0.1, α = 1. log πθ(y_w) = −10 over 5 tokens, log πθ(y_l) = −20.
    Preference: −log σ(0.1·(−10 + 20)) = −log σ(1) = 0.3132617. NLL_mean = 10/5 = 2.
    Loss = 2.3132617. No reference is read (it is 0 here and ignored anyway)."""
    out = get_loss("cpo")(pair(-10.0, -20.0, reference_chosen=123.0, chosen_len=5.0))
    close(out.losses, 2.0 + NLS1)
    close(out.metrics["nll"], 2.0)


def test_rpo_golden():
    """β = 0.1, α = 1. Policy/reference chosen −8/−13 → r_w = 5; rejected −10/−5 → r_l = −5.
    DPO: −log σ(0.1·10) = 0.3132617. NLL: 8 over 4 tokens = 2. Loss = 2.3132617."""
    out = get_loss("rpo")(pair(-8.0, -10.0, -13.0, -5.0, chosen_len=4.0))
    close(out.losses, 2.0 + NLS1)


def test_ln_dpo_golden():
    """β = 1. r_w = 2 over 4 tokens → 0.5; r_l = −3 over 6 tokens → −0.5.
    −log σ(1·(0.5 + 0.5)) = 0.3132617 (DPO on sums would be −log σ(5))."""
    close(loss("ln_dpo", pair(2.0, -3.0, chosen_len=4.0, rejected_len=6.0), beta=1.0), NLS1)


def test_ld_dpo_golden():
    """β = 1, α = 0.5. Chosen 4 tokens, rejected 2, so l_p = 2.
    Chosen policy tokens [−1, −1, −2, −2]: shared −2, tail −4 → −2 + 0.5·(−4) = −4;
    chosen reference [−1, −1, −1, −1]: −2 + 0.5·(−2) = −3; r_w = −1.
    Rejected policy [−1, −3] (no tail) = −4, reference [−1, −1] = −2; r_l = −2.
    h = −1 + 2 = 1: −log σ(1) = 0.3132617. (Plain DPO: r_w = −6 + 4 = −2, h = 0, ln 2.)"""
    mask_c = torch.tensor([[True, True, True, True]])
    mask_r = torch.tensor([[True, True, False, False]])
    inputs = LossInputs(
        policy_chosen_token_logps=t(-1, -1, -2, -2).unsqueeze(0),
        reference_chosen_token_logps=t(-1, -1, -1, -1).unsqueeze(0),
        policy_rejected_token_logps=t(-1, -3, 0, 0).unsqueeze(0),
        reference_rejected_token_logps=t(-1, -1, 0, 0).unsqueeze(0),
        chosen_mask=mask_c,
        rejected_mask=mask_r,
        policy_chosen_logps=t(-6.0),
        reference_chosen_logps=t(-4.0),
        policy_rejected_logps=t(-4.0),
        reference_rejected_logps=t(-2.0),
        chosen_lengths=t(4.0),
        rejected_lengths=t(2.0),
    )
    close(loss("ld_dpo", inputs, beta=1.0), NLS1)
    close(loss("ld_dpo", inputs, beta=1.0, alpha=1.0), LN2)
    close(loss("dpo", inputs, beta=1.0), LN2)


def test_exo_pair_golden():
    """β = 1, h = 0: σ(0) = ½ on both sides. Loss = ½[ln ½ − ln(1 − ε)] + ½[ln ½ − ln ε]
    = −ln 2 − ½ ln(ε (1 − ε)). ε = 1e-3: ln(9.99e-4) = −6.9087558, so the loss is
    −0.6931472 + 3.4543779 = 2.7612307. With ε = ½ the label distribution is uniform, p_θ is
    uniform too, and the KL is 0."""
    close(loss("exo_pair", pair(0.0, 0.0), beta=1.0), 2.7612307)
    close(loss("exo_pair", pair(0.0, 0.0), beta=1.0, epsilon=0.5), 0.0)


def test_exo_pair_is_minimal_where_model_matches_labels():
    """The KL is 0 at σ(βh) = 1 − ε, i.e. βh = ln((1 − ε)/ε); it grows beyond that point."""
    eps = 0.1
    h_star = math.log((1 - eps) / eps)
    at = loss("exo_pair", pair(h_star, 0.0), beta=1.0, epsilon=eps)
    close(at, 0.0)
    assert loss("exo_pair", pair(h_star + 2, 0.0), beta=1.0, epsilon=eps).item() > 1e-3


def test_nca_pair_golden():
    """β = 1. All rewards 0: −log σ(0) − ½ log σ(0) − ½ log σ(0) = 2 ln 2 = 1.3862944.
    r_w = ln 3, r_l = −ln 3: σ(ln 3) = ¾, σ(−ln 3) = ¼.
    −ln ¾ − ½ ln ¼ − ½ ln σ(ln 3) = ln(4/3) + ln 2 + ½ ln(4/3) = 1.5·0.2876821 + 0.6931472 = 1.1246703."""
    close(loss("nca_pair", pair(0.0, 0.0), beta=1.0), 2 * LN2)
    close(loss("nca_pair", pair(math.log(3), -math.log(3)), beta=1.0), 1.1246703)


def test_bco_pair_golden_and_state():
    """β = 1, r_w = 2, r_l = 0. No state: δ = mean(2, 0) = 1 (this batch's mean);
    −log σ(2 − 1) − log σ(−(0 − 1)) = 2·0.3132617 = 0.6265234; state → mean 1, count 1.
    State (mean 3, count 1): δ = (3·1 + 1)/2 = 2; −log σ(0) − log σ(2) = 0.6931472 + 0.1269280
    = 0.8200752; state → mean 2, count 2.
    reward_shift=False (TRL 1.16's δ = 0): −log σ(2) − log σ(0) = 0.8200752, no state update."""
    spec = get_loss("bco_pair")
    out = spec(pair(2.0, 0.0), beta=1.0)
    close(out.losses, 2 * NLS1)
    close(out.state_updates["reward_mean"], 1.0)
    close(out.state_updates["reward_count"], 1.0)

    inputs = pair(2.0, 0.0)
    stateful = LossInputs(**{**vars(inputs), "state": {"reward_mean": t(3.0)[0], "reward_count": t(1.0)[0]}})
    out = spec(stateful, beta=1.0)
    close(out.losses, LN2 + math.log1p(math.exp(-2.0)))
    close(out.metrics["bco_delta"], 2.0)
    close(out.state_updates["reward_mean"], 2.0)
    close(out.state_updates["reward_count"], 2.0)

    out = spec(stateful, beta=1.0, reward_shift=False)
    close(out.losses, LN2 + math.log1p(math.exp(-2.0)))
    assert out.state_updates == {}
    assert spec.state == ("reward_mean", "reward_count")


def test_apo_golden():
    """β = 1, r_w = ln 3, r_l = −ln 3: σ(ln 3) = ¾, σ(−ln 3) = ¼, σ(2 ln 3) = 9/10.
    zero: (1 − ¾) + ¼ = 0.5.   down: ¾ + (1 − 9/10) = 0.85.
    At r_w = r_l = 0: zero = ½ + ½ = 1, down = ½ + ½ = 1."""
    inputs = pair(math.log(3), -math.log(3))
    close(loss("apo_zero", inputs, beta=1.0), 0.5)
    close(loss("apo_down", inputs, beta=1.0), 0.85)
    close(loss("apo_zero", pair(0.0, 0.0), beta=1.0), 1.0)
    close(loss("apo_down", pair(0.0, 0.0), beta=1.0), 1.0)


def test_aot_golden():
    """β = 1, B = 2. Policy chosen [3, −1], rejected [0, 0]; reference chosen [0, 2], rejected [0, 0].
    Paired: policy differences [3, −1] sort to [−1, 3]; reference differences [0, 2] stay [0, 2];
    margins [−1, 1]: losses [1.3132617, 0.3132617], mean 0.8132617 (per-example DPO would pair
    3−0 and −1−2: margins [3, −3]).
    Unpaired: r_w = [3, −3] sorts to [−3, 3]; r_l = [0, 0]; margins [−3, 3]: losses
    [3.0485874, 0.0485874], mean 1.5485874."""
    inputs = pair([3.0, -1.0], [0.0, 0.0], [0.0, 2.0], [0.0, 0.0], [1.0, 1.0], [1.0, 1.0])
    close(loss("aot", inputs, beta=1.0), torch.tensor([1.0 + NLS1, NLS1], dtype=torch.float64))
    close(loss("aot", inputs, beta=1.0).mean(), 0.8132617)
    close(loss("aot", inputs, beta=1.0, variant="unpaired").mean(), 1.5485874)
    out = get_loss("aot")(inputs, beta=1.0)
    close(out.metrics["reward_margins"], torch.tensor([3.0, -3.0], dtype=torch.float64))  # unsorted


def test_discopop_golden():
    """β = 1, τ = 0.05. f = 0: m = σ(0) = ½; ½·ln 2 + ½·e⁰ = 0.8465736.
    f = 1: m = σ(20) = 1 − 2.06e-9; (1 − m)·0.3132617 + m·e⁻¹ = 0.3678794 (to 1e-7).
    f = −200: m = σ(−4000) = 0 and e^200·0 must not give NaN: the loss is softplus(200) = 200."""
    close(loss("discopop", pair(0.0, 0.0), beta=1.0), 0.5 * LN2 + 0.5)
    close(loss("discopop", pair(1.0, 0.0), beta=1.0), math.exp(-1.0))
    far = pair(-200.0, 0.0)
    far_float32 = LossInputs(**{k: (v.float() if torch.is_tensor(v) else v) for k, v in vars(far).items()})
    close(loss("discopop", far_float32, beta=1.0), 200.0, tol=1e-4)


def test_f_dpo_golden():
    """β = 1.
    forward_kl, f'(u) = −1/u: u_w = 2, u_l = ½ → −½ − (−2) = 1.5; −log σ(1.5) = 0.2014133.
    js_divergence, f'(u) = ln(2u/(1+u)): ln(4/3) − ln(2/3) = ln 2; −log σ(ln 2) = ln 1.5 = 0.4054651.
    alpha_divergence α = ½, f'(u) = 2(1 − u^−½): u_w = 4 → 1, u_l = ¼ → −2; diff 3;
    −log σ(3) = 0.0485874."""
    halves = pair(math.log(2), -math.log(2))
    close(loss("f_dpo", halves, beta=1.0, divergence="forward_kl"), math.log1p(math.exp(-1.5)))
    close(loss("f_dpo", halves, beta=1.0, divergence="js_divergence"), math.log(1.5))
    quarters = pair(math.log(4), -math.log(4))
    close(loss("f_dpo", quarters, beta=1.0, divergence="alpha_divergence"), math.log1p(math.exp(-3.0)))


def test_f_dpo_alpha_limits_match_the_papers_parameterization():
    """In the paper's α, f'(u) = (1 − u^−α)/α tends to ln u (reverse KL) as α → 0 and is
    1 − 1/u (forward KL, up to a constant) at α → 1: the other way round from TRL ≥ 0.29."""
    inputs = random_inputs(seed=5)
    close(loss("f_dpo", inputs, divergence="alpha_divergence", alpha=1e-6), loss("dpo", inputs), tol=1e-5)
    close(
        loss("f_dpo", inputs, divergence="alpha_divergence", alpha=1 - 1e-7),
        loss("f_dpo", inputs, divergence="forward_kl"),
        tol=1e-5,
    )


def test_tr_dpo_golden():
    """h = 0 → ln 2; h = 10 with β = 0.1 → −log σ(1) = 0.3132617."""
    close(loss("tr_dpo", pair(0.0, 0.0)), LN2)
    close(loss("tr_dpo", pair(10.0, 0.0)), NLS1)


# ---------------------------------------------------------------------------------------------
# Equivalences
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_equivalences_to_dpo(seed):
    """Each member reduces to DPO at its neutral setting."""
    inputs = random_inputs(seed=seed)
    dpo = loss("dpo", inputs)
    close(loss("f_dpo", inputs, divergence="reverse_kl"), dpo)
    close(loss("rpo", inputs, alpha=0.0), dpo)
    close(loss("r_dpo", inputs, alpha=0.0), dpo)
    close(loss("ld_dpo", inputs, alpha=1.0), dpo)
    close(loss("tr_dpo", inputs), dpo)


def test_discopop_as_tau_vanishes_switches_between_logistic_and_exponential():
    """τ → 0 makes m = σ(f/τ) a step: DPO's −log σ(f) for f < 0, e^(−f) for f > 0."""
    inputs = random_inputs(seed=1)
    chosen = inputs.policy_chosen_logps - inputs.reference_chosen_logps
    rejected = inputs.policy_rejected_logps - inputs.reference_rejected_logps
    f = 0.1 * (chosen - rejected)
    assert (f < 0).any() and (f > 0).any()
    expected = torch.where(f < 0, loss("dpo", inputs), torch.exp(-f))
    close(loss("discopop", inputs, beta=0.1, tau=1e-9), expected)


def test_r_dpo_is_dpo_for_equal_lengths():
    inputs = random_inputs(seed=2, equal_lengths=4)
    close(loss("r_dpo", inputs, alpha=0.5), loss("dpo", inputs))


def test_ld_dpo_is_dpo_for_equal_lengths():
    """With |y_w| = |y_l| there is no verbose part, whatever α."""
    inputs = random_inputs(seed=2, equal_lengths=4)
    close(loss("ld_dpo", inputs, alpha=0.0), loss("dpo", inputs))


def test_ln_dpo_is_dpo_with_beta_over_length():
    """Equal lengths L: β(r_w/L − r_l/L) = (β/L)(r_w − r_l)."""
    inputs = random_inputs(seed=4, equal_lengths=5)
    close(loss("ln_dpo", inputs, beta=2.0), loss("dpo", inputs, beta=2.0 / 5))


def test_cpo_without_nll_is_dpo_with_a_uniform_reference():
    inputs = random_inputs(seed=7)
    zero_reference = LossInputs(
        **{
            **vars(inputs),
            "reference_chosen_logps": torch.zeros_like(inputs.reference_chosen_logps),
            "reference_rejected_logps": torch.zeros_like(inputs.reference_rejected_logps),
        }
    )
    close(loss("cpo", inputs, alpha=0.0), loss("dpo", zero_reference))


def test_orpo_without_penalty_is_the_mean_nll():
    inputs = random_inputs(seed=8)
    close(loss("orpo", inputs, lambda_=0.0), -inputs.policy_chosen_logps / inputs.chosen_lengths)


@pytest.mark.parametrize("variant", ["paired", "unpaired"])
def test_aot_with_one_pair_is_dpo(variant):
    inputs = random_inputs(seed=9, batch=1)
    close(loss("aot", inputs, variant=variant), loss("dpo", inputs))


def test_aot_depends_on_the_batch_not_the_order():
    """Sorting makes the mean invariant to a permutation of the batch."""
    inputs = random_inputs(seed=10, batch=6)
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(0))
    shuffled = LossInputs(**{k: (v[perm] if torch.is_tensor(v) else v) for k, v in vars(inputs).items()})
    for variant in ("paired", "unpaired"):
        close(loss("aot", inputs, variant=variant).mean(), loss("aot", shuffled, variant=variant).mean())


def test_bco_pair_without_shift_ignores_state():
    inputs = random_inputs(seed=11)
    state = {"reward_mean": torch.tensor(5.0), "reward_count": torch.tensor(3.0)}
    stateful = LossInputs(**{**vars(inputs), "state": state})
    close(loss("bco_pair", stateful, reward_shift=False), loss("bco_pair", inputs, reward_shift=False))
