"""Plugins: new losses (or evaluators, datasets, ...) registered from outside the package, and the
add-a-variant path, `harness rank my_variant.py --suite suites/quickstart.yaml`.

A plugin is Python code whose import registers things with the usual decorators
(`@register_loss`). It is named in one of three ways:

- a file path (`my_variant.py`; in a suite's `plugins:` list, relative to the suite file): the
  losses it registers get that file as their origin, shown by `harness methods` and in reports;
- a module name (`mypackage.losses`), imported as usual;
- an entry point of the group "harness.plugins" (in a package's pyproject:
  `[project.entry-points."harness.plugins"] mine = "mypackage.losses"`): every installed one is
  loaded before a suite is planned, and one can also be named by its entry-point name. An entry
  point may name a module, or a function `module:register` that is called once.

Every loss a plugin adds is checked against the loss contract (harness.losses.contract) before
anything runs: a plugin that breaks it ends in one line and exit status 2, and nothing is stored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.losses import LOSSES, get_loss

ENTRY_POINT_GROUP = "harness.plugins"

_LOADED: dict[str, list[str]] = {}  # plugin key -> names of the losses it registered
_CHECKED: set[str] = set()  # losses that passed the contract check in this process
_ENTRY_POINTS_LOADED = False


def load_plugin(ref: str, *, base: Path | None = None, where: str = "") -> list[str]:
    """Load one plugin (file path, entry-point name or module name; see the module docstring) and
    return the names of the losses it registered. Loading the same plugin again is a no-op that
    returns the same names. Any failure is a HarnessError naming the plugin."""
    prefix = f"{where}: " if where else ""
    path = _as_path(ref, base)
    if path is not None:
        key = f"file:{path}"
        return _load_once(key, lambda: _import_file(path), f"{prefix}{path}")
    entry_point = _entry_points().get(ref)
    if entry_point is not None:
        return _load_once(f"entry:{ref}", lambda: _load_entry_point(entry_point),
                          f"{prefix}entry point {ref!r} ({entry_point.value})")
    if importlib.util.find_spec(ref.split(".")[0]) is None:
        raise HarnessError(
            f"{prefix}plugin {ref!r} is not a file, an installed entry point of group "
            f"{ENTRY_POINT_GROUP!r} or an importable module; give a path to a .py file"
        )
    return _load_once(f"module:{ref}", lambda: importlib.import_module(ref), f"{prefix}module {ref!r}")


def load_entry_points() -> list[str]:
    """Load every installed plugin of the "harness.plugins" entry-point group (once per process);
    the names of the losses they registered."""
    global _ENTRY_POINTS_LOADED
    names: list[str] = []
    if not _ENTRY_POINTS_LOADED:
        _ENTRY_POINTS_LOADED = True
        for name in sorted(_entry_points()):
            names += load_plugin(name)
    return names


def load_plugins(refs: Iterable[str], *, base: Path | None = None, where: str = "", check: bool = True) -> list[str]:
    """Load installed entry points and then each of `refs`; with `check`, run the loss contract on
    every loss they registered. Returns the loss names registered by `refs`, in order."""
    entry_names = load_entry_points()
    names: list[str] = []
    for ref in refs:
        names += [n for n in load_plugin(str(ref), base=base, where=where) if n not in names]
    if check:
        check_losses([*entry_names, *names])
    return names


def load_suite_plugins(suite: Any) -> list[str]:
    """Load a suite's `plugins:` (paths relative to the suite file) and the installed entry
    points, and check their losses; called before a suite is planned."""
    path = Path(getattr(suite, "path", "."))
    return load_plugins(getattr(suite, "plugins", ()), base=path.parent, where=f"{path}: plugins")


def check_losses(names: Iterable[str]) -> None:
    """Raise a one-line HarnessError for the first loss among `names` that breaks the contract."""
    from harness.losses.contract import check_loss_contract

    for name in names:
        if name in _CHECKED:
            continue
        spec = get_loss(name)
        problems = check_loss_contract(spec)
        if problems:
            extra = len(problems) - 1
            more = f" (and {extra} more problem{'s' if extra > 1 else ''})" if extra else ""
            raise HarnessError(f"{spec.origin}: loss {name!r} breaks the loss contract: {problems[0]}{more}")
        _CHECKED.add(name)


# --------------------------------------------------------------------------- loading


def _as_path(ref: str, base: Path | None) -> Path | None:
    """`ref` as a plugin file, or None when it does not look like a path. A missing file that
    looks like one (ends in .py or has a slash) is an error."""
    looks_like_path = ref.endswith(".py") or "/" in ref or "\\" in ref
    candidates = [Path(ref)] if Path(ref).is_absolute() else [*([base / ref] if base else []), Path(ref)]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    if looks_like_path:
        raise HarnessError(f"{ref}: no such plugin file (give the path to a .py file that registers losses)")
    return None


def _load_once(key: str, load: Callable[[], Any], what: str) -> list[str]:
    if key in _LOADED:
        return list(_LOADED[key])
    before = set(LOSSES.names())
    try:
        load()
    except HarnessError as err:
        _forget(set(LOSSES.names()) - before)
        raise HarnessError(f"{what}: {err}") from None
    except Exception as err:  # noqa: BLE001 (a plugin's own bug, reported in one line)
        _forget(set(LOSSES.names()) - before)
        line = str(err).splitlines()[0] if str(err) else ""
        raise HarnessError(f"{what}: plugin failed to load: {type(err).__name__}: {line}") from None
    names = sorted(set(LOSSES.names()) - before)
    _LOADED[key] = names
    return list(names)


def _forget(names: set[str]) -> None:
    for name in names:
        LOSSES.remove(name)


def _import_file(path: Path) -> None:
    """Import a .py file as a module of its own (named after its path, so two files named alike
    do not clash); the module stays in sys.modules for pickling and dataclasses."""
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:10]
    name = f"harness_plugin_{path.stem.replace('-', '_')}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise HarnessError("cannot be imported as Python (is it a .py file?)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _load_entry_point(entry_point: metadata.EntryPoint) -> None:
    target = entry_point.load()
    if callable(target) and not inspect.ismodule(target):
        target()


# --------------------------------------------------------------------------- harness rank


def rank_new_methods(
    refs: list[str],
    suite_path: str | Path,
    *,
    overrides: list[str] | None = None,
    results_root: Path,
    reports_root: Path,
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
        from harness.runner import run_suite

        outcome = run_suite(suite, results_root, log=log)
        failed = outcome.failed
        for run in failed:
            log(f"  failed: {run.spec.label()} ({run.spec.run_id}): {run.error}")
    _print_ranking(results_root, suite.name, new, log)
    from harness.report import write_suite_report

    path = write_suite_report(results_root, suite.name, reports_root / f"{suite.name}.html")
    log(f"report: {path}")
    return 1 if failed else 0


def _print_ranking(results_root: Path, suite: str, new: list[str], log: Callable[[str], Any]) -> None:
    from harness.rank import (KL, WIN_RATE, format_interval, format_leaderboard, format_value, leaderboard,
                              paired_tests, reward_key)
    from harness.report.suite import label
    from harness.results import ResultStore

    store = ResultStore(results_root, suite)
    metrics = store.read_metrics()
    if metrics.empty:
        raise HarnessError(f"no results found for suite {suite!r} in {store.folder}")
    samples = store.read_samples(columns=SAMPLE_COLUMNS_FOR_STATS)
    board = leaderboard(metrics, samples=samples)
    log(format_leaderboard(board))
    tests = paired_tests(metrics, samples) if len(samples) else None
    reward = reward_key(metrics)
    for _, row in board[board["method"].isin(new)].iterrows():
        entry = row["entry"]
        parts = [f"{name} {format_interval(row[key], row[key + ':ci_low'], row[key + ':ci_high'])}"
                 for key, name in ((WIN_RATE, "win rate vs start"), (reward, label(reward)), (KL, "KL"))
                 if key in board.columns]
        log(f"{entry} ({get_loss(row['method']).origin}): rank {format_value(row['rank'])} of {len(board)}; "
            + "; ".join(parts))
        if tests is not None and len(tests):
            for _, t in tests[(tests["a"] == entry) | (tests["b"] == entry)].iterrows():
                other, sign = (t["b"], 1.0) if t["a"] == entry else (t["a"], -1.0)
                # + 0.0 turns the -0.0 of a mirrored zero difference into 0
                lo, hi = sorted((sign * t["diff_ci_low"] + 0.0, sign * t["diff_ci_high"] + 0.0))
                verdict = "significant" if t["significant"] else "not significant"
                log(f"  vs {other}: Δ {label(reward)} per prompt {sign * t['diff'] + 0.0:+.3g} [{lo:.3g}, {hi:.3g}], "
                    f"Wilcoxon p {format_value(t['p_value'])}, Holm p {format_value(t['p_holm'])} ({verdict})")


SAMPLE_COLUMNS_FOR_STATS = [
    "run_id", "prompt_id", "sample", "reward", "outcome", "policy_logp", "reference_logp", "token_kl",
    "completion_tokens",
]
