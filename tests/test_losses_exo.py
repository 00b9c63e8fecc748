"""EXO (exo.py): golden values and its minimum."""

from __future__ import annotations

import math

from tests.golden import close, loss, pair


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
