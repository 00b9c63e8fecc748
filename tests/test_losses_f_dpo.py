"""f-DPO (f_dpo.py): golden values and the α-divergence's limits."""

from __future__ import annotations

import math

import pytest

from tests.golden import close, loss, pair, random_pairs


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
    inputs = random_pairs(seed=5, batch=5)
    close(loss("f_dpo", inputs, divergence="alpha_divergence", alpha=1e-6), loss("dpo", inputs), tol=1e-5)
    close(
        loss("f_dpo", inputs, divergence="alpha_divergence", alpha=1 - 1e-7),
        loss("f_dpo", inputs, divergence="forward_kl"),
        tol=1e-5,
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_f_dpo_reverse_kl_is_dpo(seed):
    inputs = random_pairs(seed=seed, batch=5)
    close(loss("f_dpo", inputs, divergence="reverse_kl"), loss("dpo", inputs))
