"""The one error type a user sees: a single line naming the file, the key and the fix.

The CLI turns a `HarnessError` into that line on stderr and exit status 2 (a `HarnessFault`,
exit status 1); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Iterable


class HarnessError(Exception):
    """Bad input: the message is the whole story, shown without a traceback."""


class HarnessFault(HarnessError):
    """A fault that no check could foresee (a full disk, a folder made read-only mid-run): one
    line too, but exit status 1, as the input was fine. Raised after the run's partial state is gone."""


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """' (did you mean 'dpo'?)' for the closest candidate, or a list of valid names when none is close."""
    candidates = sorted(candidates)
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.5)
    if close:
        return f" (did you mean {close[0]!r}?)"
    shown = ", ".join(candidates[:12]) + (", ..." if len(candidates) > 12 else "")
    return f" (valid: {shown})"


def warn(line: str) -> None:
    """A one-line warning on stderr: something the user should know that does not stop the work."""
    print(f"harness: warning: {line}", file=sys.stderr)
