"""The one helper module of the loss tests (tests/test_losses_*.py, tests/test_loss_contract.py):
float64 inputs, the shared golden pair, random inputs, a closeness check, and the closed forms
golden values are written in. Golden values are worked out in each test's docstring from small
inputs; logs are natural. Handy constants: −log σ(0) = ln 2 = 0.6931472, −log σ(1) = 0.3132617,
−log σ(−1) = 1.3132617, −log σ(2) = 0.1269280, −log σ(3) = 0.0485874.

The contract tests' input builder is the library's (harness.losses.contract), which `harness rank`
also uses to check plugins, re-exported so that tests and plugins are held to the same rules.
"""

from __future__ import annotations

import math

import torch

from harness.losses import LossInputs, get_loss
from harness.losses.contract import (  # noqa: F401
    PAIRED_FIELDS,
    REFERENCE_FIELDS,
    UNPAIRED_FIELDS,
    BuiltInputs,
    build_loss_inputs,
    expected_fields,
)

LN2 = math.log(2.0)  # −log σ(0)
NLS1 = math.log1p(math.exp(-1.0))  # −log σ(1)
EXACT = 1e-9  # the tolerance for values computed in float64 from the same closed form


def nls(z: float) -> float:
    """−log σ(z) = log(1 + e^−z) = softplus(−z)."""
    return math.log1p(math.exp(-z))


def sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def pair(policy_chosen, policy_rejected, reference_chosen=0.0, reference_rejected=0.0, chosen_len=1.0,
         rejected_len=1.0, **extra) -> LossInputs:
    """B pairs from scalars (B = 1) or equal-length lists; lengths are token counts; `extra` sets
    other LossInputs fields."""

    def as_tensor(v):
        return t(*v) if isinstance(v, (list, tuple)) else t(v)

    def widen(v, like):
        return as_tensor(v).expand_as(like).clone() if not isinstance(v, (list, tuple)) else as_tensor(v)

    chosen = as_tensor(policy_chosen)
    return LossInputs(
        policy_chosen_logps=chosen,
        policy_rejected_logps=widen(policy_rejected, chosen),
        reference_chosen_logps=widen(reference_chosen, chosen),
        reference_rejected_logps=widen(reference_rejected, chosen),
        chosen_lengths=widen(chosen_len, chosen),
        rejected_lengths=widen(rejected_len, chosen),
        **extra,
    )


def golden_pair(**overrides) -> LossInputs:
    """The shared pair of many golden values (fields overridable by name):
        policy_chosen_logps = −10, reference_chosen_logps = −12   →  r_w = +2
        policy_rejected_logps = −14, reference_rejected_logps = −13  →  r_l = −1
        h = r_w − r_l = 3; 4 tokens each; with β = 0.1, β h = 0.3.
    −log σ(0.3) = 0.554355, −log σ(−0.3) = 0.854355 (they differ by exactly 0.3)."""
    fields = vars(pair(-10.0, -14.0, -12.0, -13.0, chosen_len=4.0, rejected_len=4.0))
    return LossInputs(**{**fields, **overrides})


def random_sums(batch: int = 16, seed: int = 0, **extra) -> LossInputs:
    """B random pairs of summed log-probs in [−30, 0], 10 tokens each; `extra` sets other fields."""
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


def random_pairs(seed: int = 0, batch: int = 6, positions: int = 7, equal_lengths: int | None = None) -> LossInputs:
    """Consistent random paired inputs: per-token log-probs (B, T) under completion masks, their
    sums and token counts, for policy and reference."""
    g = torch.Generator().manual_seed(seed)

    def mask() -> torch.Tensor:
        lengths = (torch.full((batch,), equal_lengths) if equal_lengths is not None
                   else torch.randint(1, positions + 1, (batch,), generator=g))
        return torch.arange(positions).unsqueeze(0) < lengths.unsqueeze(1)

    chosen_mask, rejected_mask = mask(), mask()
    masks = {"chosen": chosen_mask, "rejected": rejected_mask}
    tokens = {f"{who}_{side}": -(0.05 + 3.0 * torch.rand(batch, positions, generator=g, dtype=torch.float64)) * m
              for who in ("policy", "reference") for side, m in masks.items()}
    return LossInputs(
        **{f"{k}_logps": v.sum(dim=1) for k, v in tokens.items()},
        **{f"{k}_token_logps": v for k, v in tokens.items()},
        chosen_mask=chosen_mask, rejected_mask=rejected_mask,
        chosen_lengths=chosen_mask.sum(dim=1).double(), rejected_lengths=rejected_mask.sum(dim=1).double(),
    )


def stacked_pair_inputs(policy: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor, **extra) -> LossInputs:
    """LossInputs from token-level tensors of shape (2B, S) that stack the B chosen rows above the
    B rejected ones (as authors' code batches them): token log-probs, sums and lengths of both
    halves. `extra`: further (2B, S) tensors, split the same way, keyed by their chosen-side name
    with "chosen" in it (e.g. chosen_log_collision)."""
    pairs = policy.shape[0] // 2
    c, r = slice(0, pairs), slice(pairs, 2 * pairs)
    halves = {}
    for name, value in extra.items():
        halves[name], halves[name.replace("chosen", "rejected")] = value[c], value[r]
    return LossInputs(
        policy_chosen_token_logps=policy[c], policy_rejected_token_logps=policy[r],
        reference_chosen_token_logps=reference[c], reference_rejected_token_logps=reference[r],
        chosen_mask=mask[c], rejected_mask=mask[r],
        policy_chosen_logps=policy[c].sum(1), policy_rejected_logps=policy[r].sum(1),
        reference_chosen_logps=reference[c].sum(1), reference_rejected_logps=reference[r].sum(1),
        chosen_lengths=mask[c].sum(1).double(), rejected_lengths=mask[r].sum(1).double(), **halves,
    )


def loss(name: str, inputs: LossInputs, **hparams) -> torch.Tensor:
    """The registered loss's per-example losses (B,)."""
    return get_loss(name)(inputs, **hparams).losses


def close(actual: torch.Tensor, expected, tol: float = 1e-6) -> None:
    """`actual` equals `expected` (a number broadcasts) within `tol`, absolute and relative. The
    default suits golden values written to 7 digits; use EXACT for values from the same formula."""
    expected = torch.as_tensor(expected, dtype=actual.dtype).expand_as(actual)
    torch.testing.assert_close(actual, expected, atol=tol, rtol=tol)
