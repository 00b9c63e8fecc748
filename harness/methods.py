"""What `harness methods` prints: every registered loss with its hyper-parameters, needs and paper.

Read from the registry only (plugins included once they are loaded), so the listing cannot drift
from the code: the defaults come from each function's signature, the rest from @register_loss.
"""

from __future__ import annotations

import json
from typing import Any

from harness.losses import LOSSES
from harness.losses.base import DERIVATION_RULE, SHARED_SPACE, derive_space
from harness.losses.regimes import REGIMES

# Text-table columns: (header, key in describe_methods()'s dicts). `formula` stays in --json: it
# is too long for one aligned line.
_COLUMNS = (
    ("name", "name"),
    ("hyper-parameters", "hparams"),
    ("search space", "space_text"),
    ("needs", "needs"),
    ("data", "data"),
    ("regime", "regime_label"),
    ("reduction", "reduction"),
    ("version", "version"),
    ("origin", "origin"),
    ("paper", "paper"),
)


def describe_methods() -> list[dict[str, Any]]:
    """One plain dict per registered loss, sorted by name: name, hparams (name -> default), search
    space (name -> scale, range or choices, source; the shared learning rate first), needs (sorted),
    data, reduction, state, regime (and its hyper-parameters), paper, formula, version, origin.
    JSON-serializable."""
    methods = []
    for name in LOSSES.names():
        spec = LOSSES.get(name)
        derived, uncovered = derive_space(spec)
        methods.append(
            {
                "name": spec.name,
                "hparams": dict(spec.hparams),
                "constraints": {key: c.text for key, c in spec.constraints.items()},
                "search_space": {key: dim.describe() for key, dim in {**spec.space, **derived}.items()},
                "space_text": _space_text({**spec.search_space, **derived}, uncovered),
                "needs": sorted(spec.needs),
                "data": spec.data,
                "reduction": spec.reduction,
                "state": list(spec.state),
                "regime": spec.regime,
                "regime_hparams": dict(REGIMES.get(spec.regime).hparams),
                "regime_label": _regime_label(spec.regime),
                "paper": spec.paper,
                "formula": spec.formula,
                "version": spec.version,
                "origin": spec.origin,
            }
        )
    return methods


def _space_text(space, uncovered: list[str]) -> str:
    """The loss's own (and derived) dimensions in one cell, `beta log[0.01, 0.5]`, and `clip none`
    for a hyper-parameter a tuned suite could not search; the shared learning rate is said once,
    under the table."""
    return ", ".join([*(f"{key} {dim.text()}" for key, dim in space.items()), *(f"{key} none" for key in uncovered)])


def _regime_label(name: str) -> str:
    """'-' for the standard loop, else the regime with its hyper-parameters' defaults."""
    if name == "standard":
        return "-"
    params = ", ".join(f"{k}={v!r}" for k, v in REGIMES.get(name).hparams.items())
    return f"{name}({params})"


def render_methods(as_json: bool = False) -> str:
    """The listing as an aligned text table (one line per method), or as JSON when `as_json`."""
    methods = describe_methods()
    if as_json:
        return json.dumps(methods, indent=2, ensure_ascii=False, default=repr)
    rows = [[header for header, _ in _COLUMNS]]
    rows += [[_cell(method[key]) for _, key in _COLUMNS] for method in methods]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    lines.append(f"\n{len(methods)} methods. Every method's search space also has {_shared_text()}. "
                 "`harness methods --json` adds formulas, constraints and each range's source. A range marked "
                 f"(derived) is not declared by the loss: {DERIVATION_RULE}; `none`: no rule covers it, so a tuned "
                 "suite refuses the method until the loss declares search_space= (or tune.space gives a range).")
    return "\n".join(lines)


def _shared_text() -> str:
    return ", ".join(f"{key} {dim.text()}" for key, dim in SHARED_SPACE.items())


def _cell(value: Any) -> str:
    """A value as table text: hparams as `k=v` pairs, lists comma-separated, `-` when empty."""
    if isinstance(value, dict):
        text = ", ".join(f"{key}={val!r}" for key, val in value.items())
    elif isinstance(value, (list, tuple)):
        text = ", ".join(map(str, value))
    else:
        text = str(value)
    return text or "-"
