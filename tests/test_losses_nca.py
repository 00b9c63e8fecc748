"""NCA (nca.py): golden values."""

from __future__ import annotations

import math

from tests.golden import LN2, close, loss, pair


def test_nca_pair_golden():
    """β = 1. All rewards 0: −log σ(0) − ½ log σ(0) − ½ log σ(0) = 2 ln 2 = 1.3862944.
    r_w = ln 3, r_l = −ln 3: σ(ln 3) = ¾, σ(−ln 3) = ¼.
    −ln ¾ − ½ ln ¼ − ½ ln σ(ln 3) = ln(4/3) + ln 2 + ½ ln(4/3) = 1.5·0.2876821 + 0.6931472 = 1.1246703."""
    close(loss("nca_pair", pair(0.0, 0.0), beta=1.0), 2 * LN2)
    close(loss("nca_pair", pair(math.log(3), -math.log(3)), beta=1.0), 1.1246703)
