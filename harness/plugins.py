"""Plugins: new losses (or evaluators, datasets, ...) registered from outside the package. The
add-a-variant command that uses them, `harness rank my_variant.py --suite ...`, is
harness.commands.rank; this module only loads plugins and checks their losses, so it sits just
above harness.losses and below everything that loads plugins (the planner, the runner, the CLI).

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
anything runs: a plugin with a fault (a wrong shape, a NaN, no gradient, an impure or
non-deterministic loss, a default a suite cannot set) ends in one line and exit status 2, and
nothing is stored. Missing documentation (paper, formula, docstring, search space) is one warning
line on stderr: the loss runs and is ranked, and a tuned suite derives its missing dimensions.
"""

from __future__ import annotations

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
from harness.errors import warn as warn_line
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
    path = _as_path(ref, base, prefix)
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


def check_losses(names: Iterable[str], *, warn: Callable[[str], Any] | None = None) -> None:
    """Raise a one-line HarnessError for the first loss among `names` with a contract fault; say
    each one's missing documentation in one warning line through `warn` (default: stderr)."""
    from harness.losses.contract import contract_findings

    for name in names:
        if name in _CHECKED:
            continue
        spec = get_loss(name)
        findings = contract_findings(spec)
        if findings.faults:
            extra = len(findings.faults) - 1
            more = f" (and {extra} more problem{'s' if extra > 1 else ''})" if extra else ""
            raise HarnessError(f"{spec.origin}: loss {name!r} breaks the loss contract: {findings.faults[0]}{more}")
        if findings.advice:
            (warn or warn_line)(f"{spec.origin}: loss {name!r} is run and ranked, but lacks what the built-in losses "
                            f"declare (a tuned suite derives a missing search space: `harness methods` shows it): "
                            f"{'; '.join(findings.advice)}")
        _CHECKED.add(name)


# --------------------------------------------------------------------------- loading


def _as_path(ref: str, base: Path | None, prefix: str = "") -> Path | None:
    """`ref` as a plugin file, or None when it does not look like a path. A missing file that
    looks like one (ends in .py or has a slash) is an error."""
    looks_like_path = ref.endswith(".py") or "/" in ref or "\\" in ref
    candidates = [Path(ref)] if Path(ref).is_absolute() else [*([base / ref] if base else []), Path(ref)]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    if looks_like_path:
        raise HarnessError(f"{prefix}{ref}: no such plugin file (looked in {base or Path.cwd()}); give the path to "
                           "a .py file that registers losses")
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
