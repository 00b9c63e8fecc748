"""`harness rank my_variant.py --suite suites/quickstart.yaml`: the add-a-variant path.

A command composes the stages (plugins, suite, runner, store, statistics, reports); no stage
imports a command.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.losses import get_loss
from harness.plugins import check_losses, load_plugin, load_suite_plugins


def rank_new_methods(
    refs: list[str],
    suite_path: str | Path,
    *,
    overrides: list[str] | None = None,
    results_root: Path,
    reports_root: Path,
    allow_large_budget: bool = False,
    log: Callable[[str], Any] = print,
) -> int:
    """The add-a-variant path. Load the plugins `refs` and check their new losses against the
    contract (a HarnessError, and nothing run, when one breaks it); add each new method to the
    suite with its default hyper-parameters; run only the runs not stored yet (the suite's stored
    runs are reused by run id); print the leaderboard, each new method's rank with its CIs and its
    paired comparisons; refresh reports/<suite>.html. Returns the exit status (1 if a run failed).
    With no plugin, ranks what is stored without running anything."""
    from harness.suite import MethodEntry, load_suite

    suite = load_suite(suite_path, overrides)
    load_suite_plugins(suite)
    new: list[str] = []
    for ref in refs:
        names = load_plugin(ref, base=Path.cwd())
        if not names:
            raise HarnessError(f"{ref}: registers no loss; decorate a function with @register_loss(...)")
        new += [n for n in names if n not in new]
    check_losses(new)
    failed = []
    if new:
        present = {entry.name for entry in suite.methods}
        added = tuple(MethodEntry(name) for name in new if name not in present)
        suite = dataclasses.replace(suite, methods=suite.methods + added)
        from harness.preflight import check_suite

        check_suite(suite, results_root, allow_large_budget=allow_large_budget)
        outcome, unmet = _run(suite, results_root, log)
        failed = outcome.failed
        outcome.report_failed()
        unmet = [(start, m) for start, m in unmet if m in new]
        if unmet:  # the new method has no setting to rank (no trial within the KL budget)
            from harness.tune import unmet_message

            raise HarnessError(unmet_message(suite, unmet))
    _print_ranking(results_root, suite.name, new, log)
    from harness.report import write_suite_report

    path = write_suite_report(results_root, suite.name, reports_root / f"{suite.name}.html")
    log(f"report: {path}")
    return 1 if failed else 0


def _run(suite, results_root: Path, log) -> tuple[Any, list[tuple[str, str]]]:
    """Run what is missing: the tuning protocol on a tuned suite (the new method gets the same
    trials and budget as the stored ones), else every method at its given setting."""
    if suite.tune:
        from harness.tune import tune_suite

        tuned = tune_suite(suite, results_root, log=log)
        return tuned.runs, tuned.unmet
    from harness.runner import run_suite

    return run_suite(suite, results_root, log=log), []


def _print_ranking(results_root: Path, suite: str, new: list[str], log: Callable[[str], Any]) -> None:
    from harness.rank import (WIN_RATE, format_interval, format_leaderboard, format_value, kl_key, paired_tests,
                              reward_key)
    from harness.report.suite import label, read_stored_suite

    stored = read_stored_suite(results_root, suite)
    metrics, samples = stored.metrics, stored.samples
    if metrics.empty:
        raise HarnessError(f"no results found for suite {suite!r} in {Path(results_root) / suite}")
    board = stored.board()
    log(format_leaderboard(board))
    tests = paired_tests(metrics, samples) if samples is not None else None
    reward = reward_key(metrics)
    for _, row in board[board["method"].isin(new)].iterrows():
        entry = row["entry"]
        parts = [f"{name} {format_interval(row[key], row[key + ':ci_low'], row[key + ':ci_high'])}"
                 for key, name in ((WIN_RATE, "win rate vs start"), (reward, label(reward)), (kl_key(metrics), "KL"))
                 if key in board.columns]
        log(f"{entry} ({get_loss(row['method']).origin}): rank {format_value(row['rank'])} of {len(board)}; "
            + "; ".join(parts))
        if tests is not None and len(tests):
            for _, t in tests[(tests["a"] == entry) | (tests["b"] == entry)].iterrows():
                other, sign = (t["b"], 1.0) if t["a"] == entry else (t["a"], -1.0)
                # + 0.0 turns the -0.0 of a mirrored zero difference into 0
                lo, hi = sorted((sign * t["diff_ci_low"] + 0.0, sign * t["diff_ci_high"] + 0.0))
                verdict = "significant" if t["significant"] else "not significant"
                log(f"  vs {other}: Δ {label(reward)} {sign * t['diff'] + 0.0:+.3g} [{lo:.3g}, {hi:.3g}], "
                    f"t-test p {format_value(t['p_value'])}, Holm p {format_value(t['p_holm'])} ({verdict})")
