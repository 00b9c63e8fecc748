"""Sections of the suite page beyond the leaderboard: methods × tasks, paired significance and
the win-rate matrix, compute accounting, and one card per method.

Each function takes plain frames (results rows, per-sample rows, manifests) and returns HTML with
every user string escaped. Method cards come from the run manifests (harness.results.manifest), so
no loss code, plugin or torch is needed to render them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from harness.rank import compute_table, final_eval, format_interval, format_value, leaderboard
from harness.report.html import Cell, esc, number_cell, sort_key, table

# Evaluators first in the methods × tasks table, in this order; the rest follow alphabetically.
TASK_ORDER = ("lm_eval", "win_rate", "gold_reward")
EVALUATOR_TITLES = {"lm_eval": "lm-eval tasks", "win_rate": "win rates", "gold_reward": "gold reward",
                    "reward_model": "reward model",
                    "kl": "KL to the reference", "length": "length"}

COMPUTE_COLUMNS = (
    ("flops_policy", "policy FLOPs"), ("flops_reference", "reference FLOPs"),
    ("flops_generation", "generation FLOPs"), ("flops_total", "total FLOPs"),
    ("policy_tokens", "policy tokens"), ("reference_tokens", "reference tokens"),
    ("generated_tokens", "generated tokens"), ("optimizer_steps", "optimizer steps"),
    ("examples_seen", "examples"), ("train_seconds", "train s"), ("eval_seconds", "eval s"),
    ("peak_memory_mb", "peak memory (MiB)"), ("mfu", "MFU"),
)


# --------------------------------------------------------------------------- methods × tasks


def task_groups(metrics: pd.DataFrame) -> list[tuple[str, list[str]]]:
    """The held-out metric keys grouped by evaluator: lm_eval first, then win rates, gold reward,
    and the other evaluators alphabetically; keys sorted within a group."""
    keys = sorted(set(final_eval(metrics)["key"]))
    by: dict[str, list[str]] = {}
    for key in keys:
        by.setdefault(key.split("/", 1)[0], []).append(key)
    order = [e for e in TASK_ORDER if e in by] + sorted(e for e in by if e not in TASK_ORDER)
    return [(e, by[e]) for e in order]


def tasks_table(metrics: pd.DataFrame, order: Sequence[str], samples: pd.DataFrame | None = None,
                board: pd.DataFrame | None = None) -> str:
    """Methods × tasks, as in "Insights into Alignment" (Saeidi et al. 2024): one row per entry, one
    column per held-out metric grouped by evaluator (lm-eval task metrics, then win rates, then
    the rest), mean [95% CI] over seeds; the best entry of each column in bold. `board`: the
    leaderboard over every held-out key, indexed by entry, when the caller already has it."""
    groups = task_groups(metrics)
    keys = [k for _, ks in groups for k in ks]
    if not keys:
        return '<p class="muted">No held-out metrics stored.</p>'
    if board is None:
        board = leaderboard(metrics, headline=keys, rank=False, samples=samples).set_index("entry")
    board = board.reindex(order)
    direction = _directions(metrics)
    best = {k: _best(board[k], direction.get(k)) for k in keys}
    headers = [("entry", True)] + [(_metric_name(k), False) for k in keys]
    spans = [("", 1)] + [(EVALUATOR_TITLES.get(e, e), len(ks)) for e, ks in groups]
    rows = []
    for entry, r in board.iterrows():
        cells = [Cell(str(entry), str(entry), True, "entry")]
        for k in keys:
            css = "best" if best[k] is not None and r[k] == best[k] else ""
            cells.append(Cell(format_interval(r[k], r[k + ":ci_low"], r[k + ":ci_high"]), sort_key(r[k]), css=css))
        rows.append(("", cells))
    return table(headers, rows, groups=spans, table_id="tasks")


def _metric_name(key: str) -> str:
    return key.split("/", 1)[1] if "/" in key else key


def _directions(metrics: pd.DataFrame) -> dict[str, bool | None]:
    rows = final_eval(metrics)
    out: dict[str, bool | None] = {}
    for key, values in rows.groupby("key")["higher_is_better"]:
        known = values.dropna()
        out[str(key)] = bool(known.iloc[0]) if len(known) else None
    return out


def _best(values: pd.Series, higher: bool | None) -> float | None:
    """The best value of a column (None for metrics with no direction, or no value)."""
    values = values.dropna()
    if higher is None or values.empty:
        return None
    return values.max() if higher else values.min()


# --------------------------------------------------------------------------- significance


SIGNIFICANCE_TEXT = (
    "Each pair of entries is compared as methods on the same held-out prompts: Δ is the difference "
    "(A − B) of their mean {reward} over seeds and prompts; its variance holds each entry's seed "
    "variance (entries with 2 or more seeds) and the per-prompt variance of the difference, so two "
    "sets of seeds of one method differ no more often than the nominal 5%. The 95% CI and p are "
    "from Welch–Satterthwaite t; differences within a relative 1e-9 count as zero. Holm p is corrected "
    "for the number of pairs (family-wise error 5%). Rows significant after the correction are shaded."
)

MATRIX_TEXT = (
    "Cell (A, B): on each prompt, every sample of A (all seeds) is compared with every sample of B by "
    "{reward} (a win counts 1, a tie ½); the mean over sample pairs, then over prompts. Cells "
    "(A, B) and (B, A) add up to 1."
)


def significance_table(tests: pd.DataFrame, reward: str = "gold reward") -> str:
    """The paired tests (harness.rank.paired_tests) on `reward` (its name) as a sortable table,
    significant rows shaded."""
    if tests.empty:
        return '<p class="muted">Fewer than two entries have per-sample results: nothing to compare.</p>'
    headers = [("A", True), ("B", True), (f"Δ {reward} (A − B) [95% CI]", False), ("prompts", False),
               ("t-test p", False), ("Holm p", False), ("significant", True)]
    rows = []
    for _, t in tests.iterrows():
        cells = [Cell(str(t["a"]), str(t["a"]), True), Cell(str(t["b"]), str(t["b"]), True),
                 Cell(_signed_interval(t["diff"], t["diff_ci_low"], t["diff_ci_high"]), sort_key(t["diff"])),
                 number_cell(t["n_prompts"]), _p(t["p_value"]), _p(t["p_holm"]),
                 Cell("yes" if t["significant"] else "no", "1" if t["significant"] else "0", True)]
        rows.append(("significant" if t["significant"] else "", cells))
    return table(headers, rows, table_id="significance")


def _p(x) -> Cell:
    if x is None or pd.isna(x):
        return Cell("–", "")
    return Cell(f"{float(x):.3g}" if x >= 1e-4 else f"{float(x):.1e}", sort_key(x))


def _signed_interval(mean: float, lo: float, hi: float) -> str:
    if pd.isna(mean):
        return "–"
    mean, lo, hi = mean + 0.0, lo + 0.0, hi + 0.0  # no "-0"
    return f"{mean:+.3g} [{lo:+.3g}, {hi:+.3g}]" if not (pd.isna(lo) or pd.isna(hi)) else f"{mean:+.3g}"


# --------------------------------------------------------------------------- compute


COMPUTE_TEXT = (
    "Means over seeds. FLOPs count every model pass a method makes: policy forward and backward "
    "(6·N per token), reference forward (2·N per token, counted even though reference log-probs are "
    "cached), generation (2·N per generated token). Peak memory is the training process's; MFU is "
    "shown where the device's peak FLOP/s is known."
)


def compute_accounting_table(metrics: pd.DataFrame, order: Sequence[str]) -> str:
    """Compute used per entry: FLOPs by kind, tokens, steps, examples, wall seconds, peak memory."""
    table_ = compute_table(metrics).set_index("entry").reindex(order)
    present = [(c, label) for c, label in COMPUTE_COLUMNS if c in table_.columns]
    headers = [("entry", True), ("seeds", False)] + [(label, False) for _, label in present]
    rows = []
    for entry, r in table_.iterrows():
        cells = [Cell(str(entry), str(entry), True, "entry"), number_cell(r.get("n_seeds"))]
        cells += [number_cell(r[c]) for c, _ in present]
        rows.append(("start" if r.get("method") == "start" else "", cells))
    return table(headers, rows, table_id="compute")


# --------------------------------------------------------------------------- method cards


def method_cards_html(metrics: pd.DataFrame, cards: dict[str, dict[str, Any]], order: Sequence[str]) -> str:
    """One card per trained method: formula, paper, origin (built-in, or the plugin's file), the
    hyper-parameters of each entry and the defaults, data needs, reduction and regime, and the
    docstring folded. All from the run manifests."""
    labelled = metrics.drop_duplicates("run_id")
    methods = [m for m in dict.fromkeys(labelled["method"].astype(str)) if m != "start"]
    if not methods:
        return '<p class="muted">No trained method.</p>'
    from harness.rank import label_entries

    entries = label_entries(labelled).drop_duplicates("entry")
    rank = {e: i for i, e in enumerate(order)}
    first = {m: min((rank.get(e, 1e9) for e in entries.loc[entries["method"] == m, "entry"]), default=1e9)
             for m in methods}
    methods.sort(key=first.__getitem__)
    out = []
    for method in methods:
        card = cards.get(method, {})
        mine = entries[entries["method"] == method]
        out.append(_card(method, card, mine))
    return f'<div class="cards">{"".join(out)}</div>'


def _card(method: str, card: dict[str, Any], entries: pd.DataFrame) -> str:
    origin = str(card.get("origin") or "unknown")
    plugin = origin not in ("built-in", "unknown")
    badge = (f'<span class="badge plugin" title="{esc(origin)}">plugin</span>' if plugin
             else f'<span class="badge">{esc(origin)}</span>')
    facts = []
    if not card:
        facts.append(("note", "this suite's manifests carry no description of the method "
                              "(runs stored by an older harness)"))
    for label, key in (("formula", "formula"), ("paper", "paper"), ("origin", "origin")):
        if card.get(key):
            facts.append((label, str(card[key])))
    if card:
        needs = ", ".join(card.get("needs") or []) or "nothing beyond the policy's log-probs"
        facts += [("needs", needs), ("data", str(card.get("data", "?"))),
                  ("reduction", str(card.get("reduction", "?"))), ("regime", str(card.get("regime", "standard"))),
                  ("defaults", _hparams_text(card.get("defaults") or {}))]
    dl = "".join(
        f"<dt>{esc(k)}</dt><dd>{'<code>' + esc(v) + '</code>' if k == 'formula' else esc(v)}</dd>" for k, v in facts
    )
    rows = [("", [Cell(str(r["entry"]), "", True), Cell(_hparams_text(_parse(r["hparams"])), "", True)])
            for _, r in entries.iterrows()]
    used = table([("entry", True), ("hyper-parameters used", True)], rows, css="plain")
    doc = str(card.get("doc") or "")
    details = f"<details><summary>docstring</summary><pre>{esc(doc)}</pre></details>" if doc else ""
    return (f'<div class="card" id="method-{esc(method)}"><h3>{esc(method)}{badge}</h3>'
            f'<dl class="card-facts">{dl}</dl>{used}{details}</div>')


def _parse(text: Any) -> dict[str, Any]:
    try:
        value = json.loads(text) if isinstance(text, str) and text else {}
    except ValueError:
        return {"hparams": text}
    return value if isinstance(value, dict) else {"hparams": value}


def _hparams_text(hparams: dict[str, Any]) -> str:
    if not hparams:
        return "none"
    return ", ".join(f"{k}={_value(v)}" for k, v in hparams.items())


def _value(v: Any) -> str:
    if isinstance(v, float) and not np.isnan(v):
        return format_value(v) if abs(v) >= 1e-3 or v == 0 else f"{v:g}"
    return json.dumps(v) if isinstance(v, (dict, list)) else str(v)
