"""Small helpers for golden-value loss tests: float64 tensors, one-pair inputs, a closeness check.

Handy constants: −log σ(0) = ln 2 = 0.6931472, −log σ(1) = 0.3132617, −log σ(2) = 0.1269280,
−log σ(3) = 0.0485874.
"""

from __future__ import annotations

import math

import torch

from harness.losses import LossInputs

LN2 = math.log(2.0)


def nls(z: float) -> float:
    """−log σ(z)."""
    return math.log1p(math.exp(-z))


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def pair(policy_chosen, policy_rejected, reference_chosen=0.0, reference_rejected=0.0, chosen_len=1.0,
         rejected_len=1.0) -> LossInputs:
    """B pairs from scalars (B = 1) or equal-length lists; lengths are token counts."""

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


def close(actual: torch.Tensor, expected, tol: float = 1e-6) -> None:
    expected = torch.as_tensor(expected, dtype=actual.dtype).expand_as(actual)
    torch.testing.assert_close(actual, expected, atol=tol, rtol=tol)
