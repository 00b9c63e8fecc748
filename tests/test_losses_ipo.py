"""IPO (harness/losses/ipo.py): the length-averaged default and the summed variant."""

from __future__ import annotations

from harness.losses import get_loss
from tests.golden import close, pair


def test_ipo_default_averages_per_token():
    """τ = 0.1 → target 1/(2τ) = 5. r_w = 2 over 4 tokens → 0.5, r_l = −2 over 2 tokens → −1:
    averaged h = 1.5, (1.5 − 5)² = 12.25 (the default); summed h = 4, (4 − 5)² = 1."""
    inputs = pair(2.0, -2.0, chosen_len=4.0, rejected_len=2.0)
    close(get_loss("ipo")(inputs).losses, 12.25)
    close(get_loss("ipo")(inputs, length_normalize=False).losses, 1.0)
    assert get_loss("ipo").hparams["length_normalize"] is True and get_loss("ipo").version == "2"
