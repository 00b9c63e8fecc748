"""Search ranges shared by several losses, each with the source of its range.

A loss declares its search space next to its defaults (`register_loss(..., search_space=...)`);
the dimensions that recur across the family (DPO's β, a reward-free margin's β) live here so that
one source text serves them all. Where a range is widened beyond the cited sweep, the text says
why (usually: to contain the method's own default, which must lie inside its space).
"""

from __future__ import annotations

from harness.losses.base import Dimension, choice, linear_range, log_range

# β on summed log-ratios (DPO and every method that keeps its β·h form).
DPO_BETA = log_range(
    0.01, 0.5,
    "SimPO paper's baseline sweep β ∈ {0.01, 0.05, 0.1} (Meng et al. 2024, Table 7), up to the DPO "
    "paper's 0.5 for summarization (Rafailov et al. 2023, §6)",
)

# β on length-averaged rewards (SimPO-style, reference-free): an order of magnitude larger.
SIMPO_BETA = linear_range(
    1.0, 10.0,
    "SimPO paper: β between 2 and 10 across models (Meng et al. 2024, Table 7 and §4); down to 1 "
    "to contain LN-DPO's default",
)

SIMPO_GAMMA_BETA_RATIO = linear_range(
    0.0, 1.0,
    "SimPO paper: γ/β between 0.3 and 0.8 per model (Meng et al. 2024, Table 7); from 0 (no margin) to 1",
)

# A weight on an auxiliary NLL or SFT term.
NLL_WEIGHT = linear_range(
    0.0, 2.0,
    "CPO and RPO use weight 1 (Xu et al. 2024; Pang et al. 2024); from 0 (no NLL term) to twice that",
)

# A label-flip rate (cDPO, rDPO).
FLIP_RATE = linear_range(
    0.0, 0.4,
    "cDPO's note suggests ε between 0.1 and 0.2 (Mitchell 2023); rDPO assumes a known flip rate "
    "below 0.5 (Chowdhury et al. 2024); 0 is DPO",
)

# A mixture's weight on one of its components (harness.losses.mixture).
MIX_WEIGHT = linear_range(
    0.0, 2.0,
    "a mixture's own weights: from 0 (the component off) to twice the usual weight of 1 (TRL's "
    "loss_weights default to 1 per loss type)",
)


def boolean(source: str) -> Dimension:
    """A switch between two published variants, searched as a choice."""
    return choice(True, False, source=source)
