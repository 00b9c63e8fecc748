"""The precompute stage before a fan-out (`harness prepare SUITE`): build once, on one worker,
everything a suite's runs share, so that the workers of a job array or a Ray cluster never race
to build the same artifact.

What is built (all in `$HARNESS_CACHE`, each by content hash): the sandbox world or the prepared
real dataset; the reference's summed log-probs of every data shape the plan's reference-based
methods train on; the evaluation baseline (the starting model's samples and rewards). Then a
marker `prepared/<suite>-<key>.json` says it is complete. The key hashes what those artifacts
depend on (model, dataset, sandbox and data settings, evaluation settings, the methods), so a
changed suite needs preparing again.

Two `harness prepare` at once: the first takes a lease on the marker and builds; the other waits
for the marker. A worker (`harness run --shard`, a submitted task) that finds no marker waits
for it as long as it was told (`--wait-prepared`), then fails with a line saying what to run;
it never builds a shared artifact itself.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from harness.cache import cache_root, content_hash
from harness.errors import HarnessError
from harness.results.lease import live_holder, try_acquire
from harness.plan import plan_suite
from harness.plugins import load_suite_plugins
from harness.suite import Suite

POLL_SECONDS = 2.0


def prepare_key(suite: Suite) -> str:
    """Hash of what the shared artifacts depend on (not the seeds, budget or optimizer settings)."""
    methods = sorted({(s.method, s.method_version) for s in plan_suite(suite)})
    return content_hash({
        "model": suite.model if not suite.starts else list(suite.start_models), "dataset": suite.dataset, "sandbox": suite.sandbox, "data": asdict(suite.data),
        "max_length": suite.train.max_length, "packing": suite.train.packing,
        "evaluate": asdict(suite.evaluate), "methods": methods,
    })


def marker_path(suite: Suite) -> Path:
    return cache_root() / "prepared" / f"{suite.name}-{prepare_key(suite)}.json"


def _failure_path(marker: Path) -> Path:
    return marker.with_suffix(".failed")


def prepare_suite(suite: Suite, *, log=print, wait_seconds: float = 3600.0) -> dict[str, Any]:
    """Build the suite's shared artifacts once (or find them built); returns the marker's content."""
    load_suite_plugins(suite)
    marker = marker_path(suite)
    if marker.exists():
        log(f"{suite.name}: already prepared ({marker})")
        return json.loads(marker.read_text())
    lease = try_acquire(marker.with_suffix(".lock"))
    if lease is None:
        log(f"{suite.name}: being prepared by another worker; waiting for it")
        require_prepared(suite, wait_seconds=wait_seconds, log=log)
        return json.loads(marker.read_text())
    with lease:
        _failure_path(marker).unlink(missing_ok=True)
        try:
            built = _build(suite, log)
        except BaseException as err:
            _failure_path(marker).write_text(f"{type(err).__name__}: {err}")
            raise
        lease.check()
        tmp = marker.with_name(f".{marker.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(built, indent=2))
        os.replace(tmp, marker)
    log(f"{suite.name}: prepared in {built['seconds']:.1f} s ({marker})")
    return built


def _build(suite: Suite, log) -> dict[str, Any]:
    """Everything the runs share, through the same World the runs use (so the cache keys agree)."""
    from harness.runner import _method_run, prepare_world

    started = time.perf_counter()
    shapes, references, paths = set(), set(), []
    for model in suite.start_models:  # each starting point's baseline and reference log-probs
        world = prepare_world(suite, model)
        log(f"{suite.name}: building the evaluation baseline of {model}")
        world.baseline(suite)
        for spec in plan_suite(suite):
            if spec.trains and spec.model == model:  # tokenizes the data, reads or computes the reference's
                shapes.add(_method_run(spec, suite, world).data_shape)
        references.update(world._reference)
        paths.append(str(world.start_path))
    return {"suite": suite.name, "key": prepare_key(suite), "start_model": paths[0], "start_models": paths,
            "reference_logps": sorted(references), "data_shapes": sorted(shapes),
            "baseline_prompts": len(world.eval_prompts), "seconds": time.perf_counter() - started,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def require_prepared(suite: Suite, *, wait_seconds: float, log=print) -> None:
    """Return once the suite is prepared; wait up to `wait_seconds` for a preparing worker, and
    raise HarnessError (saying what to run) when it is not prepared by then or preparing failed."""
    marker = marker_path(suite)
    deadline = time.monotonic() + wait_seconds
    announced = False
    while not marker.exists():
        failure = _failure_path(marker)
        if failure.exists() and live_holder(marker.with_suffix(".lock")) is None:
            raise HarnessError(f"{suite.path}: `harness prepare` failed ({failure.read_text().strip()}); "
                               f"fix that and run `harness prepare {suite.path}` again")
        if time.monotonic() >= deadline:
            waited = f" after waiting {wait_seconds:.0f} s" if wait_seconds > 0 else ""
            raise HarnessError(
                f"{suite.path}: not prepared{waited} (no {marker}); run `harness prepare {suite.path}` once "
                f"before the workers (same $HARNESS_CACHE), or give them --wait-prepared SECONDS")
        if not announced:
            log(f"{suite.name}: waiting for `harness prepare` to finish ({marker.name})")
            announced = True
        time.sleep(min(POLL_SECONDS, max(deadline - time.monotonic(), 0.01)))
