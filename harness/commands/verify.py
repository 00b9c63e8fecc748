"""Reproducing stored runs: `harness verify SUITE --runs K` re-runs K stored runs of a suite,
chosen across its methods (a tuned suite's: among what it stored, the start runs and selected
settings first), into a temporary results folder (the stored results are only read),
and says for each whether the rerun is bit-identical, within the stored 95% CIs, or outside
them, and whether the fingerprints (harness.fingerprint) of the two runs match.

Bit-identical means every metric value and every sample (text, reward, log-probs) is equal to
the last bit. On one machine with the same fingerprint a rerun should be; elsewhere, float
differences in building the sandbox or in sampling grow through training, and the fingerprint
differences name the likely cause (hardware, a library version, a data file).
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from harness.errors import HarnessError
from harness.fingerprint import fingerprint_differences
from harness.plan import RunSpec, plan_suite
from harness.plugins import load_suite_plugins
from harness.results import ResultStore
from harness.runner import prepare_world, run_one
from harness.suite import Suite

BIT_IDENTICAL, WITHIN, OUTSIDE, FAILED = "bit-identical", "within the stored CIs", "outside the stored CIs", "failed"
METRIC_KEY = ["evaluator", "metric", "split", "step"]
# The per-sample columns that must match for a rerun to be bit-identical.
SAMPLE_KEY = ["prompt_id", "sample"]
SAMPLE_VALUES = ["completion", "reward", "baseline_completion", "policy_logp", "reference_logp", "token_kl"]


@dataclass
class Verdict:
    """The comparison of one stored run with its rerun."""

    run_id: str
    label: str
    seed: int
    outcome: str  # BIT_IDENTICAL, WITHIN, OUTSIDE or FAILED
    outside: list[str] = field(default_factory=list)  # metrics outside their stored CI (or missing)
    fingerprint: list[str] = field(default_factory=list)  # differing components; [] when they match

    def line(self) -> str:
        """One line for the terminal."""
        text = f"{self.run_id}  {self.label:<28} seed={self.seed:<3} {self.outcome}"
        if self.outside:
            shown = ", ".join(self.outside[:4]) + (f" and {len(self.outside) - 4} more" if len(self.outside) > 4 else "")
            text += f" ({shown})"
        if self.fingerprint == ["missing"]:
            return text + "; fingerprint: none stored (a run from before fingerprints)"
        return text + ("; fingerprint: match" if not self.fingerprint
                       else f"; fingerprint differs in {', '.join(self.fingerprint)}")


def pick_runs(specs: list[RunSpec], stored: set[str], k: int) -> list[RunSpec]:
    """Up to k stored runs spread across methods: each method's first stored run in plan order,
    round after round (the start model's run counts as a method), until k are picked."""
    by_method: dict[str, list[RunSpec]] = {}
    for spec in specs:
        if spec.run_id in stored:
            by_method.setdefault(spec.method, []).append(spec)
    picked: list[RunSpec] = []
    queues = list(by_method.values())
    while len(picked) < k and any(queues):
        for queue in queues:
            if queue and len(picked) < k:
                picked.append(queue.pop(0))
    return picked


def compare_metrics(stored: pd.DataFrame, rerun: pd.DataFrame) -> tuple[bool, list[str]]:
    """(every value equal to the bit, NaN equal to NaN; the metrics whose rerun value falls outside
    the stored row's [ci_low, ci_high], or that the rerun lacks). Rows without a CI (training
    curves, counts) count only towards bit-identity."""
    merged = stored[METRIC_KEY + ["value"]].merge(rerun[METRIC_KEY + ["value"]], on=METRIC_KEY, how="outer",
                                                   suffixes=("_stored", "_rerun"), indicator=True)
    identical = bool((merged["_merge"] == "both").all() and np.array_equal(
        merged["value_stored"].to_numpy(np.float64), merged["value_rerun"].to_numpy(np.float64), equal_nan=True))
    values = rerun.set_index(METRIC_KEY)["value"].to_dict()
    outside = []
    for row in stored.itertuples(index=False):
        if not all(pd.notna(v) and math.isfinite(v) for v in (row.ci_low, row.ci_high)):
            continue
        value = values.get((row.evaluator, row.metric, row.split, row.step))
        if value is None or not row.ci_low <= value <= row.ci_high:
            outside.append(f"{row.evaluator}/{row.metric}")
    return identical, outside


def samples_identical(stored: pd.DataFrame | None, rerun: pd.DataFrame | None) -> bool:
    """Whether two runs drew the same samples and scored them to the bit."""
    if stored is None or rerun is None:
        return stored is None and rerun is None
    columns = SAMPLE_KEY + [c for c in SAMPLE_VALUES if c in stored.columns and c in rerun.columns]
    a = stored[columns].sort_values(SAMPLE_KEY).reset_index(drop=True)
    b = rerun[columns].sort_values(SAMPLE_KEY).reset_index(drop=True)
    return a.shape == b.shape and a.equals(b)


def verdict(spec: RunSpec, stored: ResultStore, rerun: ResultStore) -> Verdict:
    """Compare the stored run `spec` with its rerun in `rerun`."""
    fingerprint = fingerprint_differences((stored.read_manifest(spec.run_id) or {}).get("fingerprint"),
                                          (rerun.read_manifest(spec.run_id) or {}).get("fingerprint"))
    if not rerun.has_result(spec.run_id):
        error = (rerun.read_manifest(spec.run_id) or {}).get("error", "")
        return Verdict(spec.run_id, spec.label(), spec.seed, FAILED, [error] if error else [], fingerprint)
    old_metrics, old_samples = stored.read_run(spec.run_id)
    new_metrics, new_samples = rerun.read_run(spec.run_id)
    same, outside = compare_metrics(old_metrics, new_metrics)
    if same and samples_identical(old_samples, new_samples):
        return Verdict(spec.run_id, spec.label(), spec.seed, BIT_IDENTICAL, [], fingerprint)
    return Verdict(spec.run_id, spec.label(), spec.seed, OUTSIDE if outside else WITHIN, outside, fingerprint)


def stored_candidates(suite: Suite, results_root: Path) -> list[tuple[RunSpec, ResultStore]]:
    """The runs verify may pick, each with the store it is in: a plain suite's plan (results/<suite>/);
    a tuned suite's stored runs (harness.tune.stored_runs: each start's run and the selected settings,
    then the defaults and the trials), since its plan alone lists the untuned settings."""
    if suite.tune:
        from harness.tune import stored_runs

        return stored_runs(suite, results_root)
    store = ResultStore(results_root, suite.name)
    return [(spec, store) for spec in plan_suite(suite)]


def verify_suite(suite: Suite, results_root: Path, *, runs: int = 3, log=print) -> list[Verdict]:
    """Re-run `runs` stored runs of `suite` (chosen across methods) in a temporary folder and
    compare each with what is stored under `results_root`; nothing stored is written."""
    if runs < 1:
        raise HarnessError(f"harness verify: --runs {runs} must be at least 1")
    load_suite_plugins(suite)
    candidates = stored_candidates(suite, results_root)
    specs, store_of = [spec for spec, _ in candidates], {spec.run_id: store for spec, store in candidates}
    chosen = pick_runs(specs, {spec.run_id for spec, store in candidates if store.has_result(spec.run_id)}, runs)
    if not chosen:
        folder = ResultStore(results_root, suite.name).folder
        raise HarnessError(f"{folder}: no stored run of suite {suite.name!r} matches its plan; run "
                           f"`harness run {suite.path}` first (or give the --set values it was run with)")
    log(f"{suite.name}: re-running {len(chosen)} of {len(specs)} {'stored' if suite.tune else 'planned'} runs in a "
        "temporary folder")
    worlds = {}  # one per starting model the chosen runs start from
    out = []
    with tempfile.TemporaryDirectory(prefix="harness-verify-") as folder:
        scratch = ResultStore(Path(folder), suite.name)
        for spec in chosen:
            world = worlds.get(spec.model) or worlds.setdefault(spec.model, prepare_world(suite, spec.model))
            run_one(spec, suite, world, scratch, log=lambda *_: None)
            out.append(verdict(spec, store_of[spec.run_id], scratch))
            log(out[-1].line())
    return out
