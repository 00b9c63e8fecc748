"""Fingerprints in every manifest, and `harness verify`: on one machine a rerun of stored runs is
bit-identical and its fingerprint matches; the comparison tells bit-identical, within the stored
CIs and outside them apart; the stored results are never written."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from harness.fingerprint import fingerprint_differences
from harness.commands.verify import BIT_IDENTICAL, compare_metrics, pick_runs


def _rows(values: dict[str, float]) -> pd.DataFrame:
    """Metric rows with a CI of value ± 0.1 (and a training-curve row without one)."""
    rows = [{"evaluator": "reward", "metric": m, "split": "eval", "step": 3, "value": v,
             "ci_low": v - 0.1, "ci_high": v + 0.1} for m, v in values.items()]
    rows.append({"evaluator": "train", "metric": "loss", "split": "train", "step": 1, "value": 0.5,
                 "ci_low": math.nan, "ci_high": math.nan})
    return pd.DataFrame(rows)


def test_compare_metrics_tells_identical_within_and_outside_apart():
    stored = _rows({"mean": 1.0, "win": 0.5})
    assert compare_metrics(stored, stored.copy()) == (True, [])
    within = _rows({"mean": 1.05, "win": 0.5}).assign(ci_low=0.0, ci_high=0.0)  # the rerun's own CIs are ignored
    assert compare_metrics(stored, within) == (False, [])
    outside = _rows({"mean": 1.2, "win": 0.5})
    assert compare_metrics(stored, outside) == (False, ["reward/mean"])
    missing = outside[outside["metric"] != "win"]
    assert compare_metrics(stored, missing) == (False, ["reward/mean", "reward/win"])
    curve = stored.copy()
    curve.loc[curve["metric"] == "loss", "value"] = 0.5 + 1e-12  # no CI, but not the same bits
    assert compare_metrics(stored, curve) == (False, [])


def test_fingerprint_differences_name_the_component():
    a = {"digest": "x", "start_model": "m", "data": {"paired": "p"}, "libraries": {"torch": "2.13"}}
    b = {"digest": "y", "start_model": "m", "data": {"paired": "q"}, "libraries": {"torch": "2.14"}}
    assert fingerprint_differences(a, dict(a)) == []
    assert fingerprint_differences(a, b) == ["data.paired", "libraries.torch"]
    assert fingerprint_differences(None, b) == ["missing"]


def test_picked_runs_spread_across_methods(tiny_suite):
    from harness.plan import plan_suite
    from harness.suite import load_suite

    specs = plan_suite(load_suite(tiny_suite, ["seeds=[0, 1]"]))
    stored = {s.run_id for s in specs}
    picked = pick_runs(specs, stored, 4)
    assert [s.method for s in picked] == ["start", "dpo", "ipo", "simpo"]
    assert [s.method for s in pick_runs(specs, stored, 6)][4:] == ["dpo", "ipo"]  # then second seeds
    assert pick_runs(specs, set(), 3) == []


def test_a_rerun_on_one_machine_is_bit_identical(tiny_suite, tmp_path, capsys):
    """Run the tiny suite (start, dpo) once, then `harness verify --runs 2`: both reruns are
    bit-identical with matching fingerprints, and nothing stored changes. The manifest records
    the fingerprint and the sampling parameters, and the report shows both."""
    from harness.cli import main
    from harness.results import ResultStore

    results, reports = tmp_path / "results", tmp_path / "reports"
    args = ["--set", "methods=[dpo]", "--results", str(results), "--reports", str(reports)]
    assert main(["run", str(tiny_suite), *args]) == 0
    store = ResultStore(results, "tiny")
    before = {p.name: p.read_bytes() for p in store.folder.iterdir()}
    manifest = next(iter(store.read_manifests().values()))
    fingerprint = manifest["fingerprint"]
    assert set(fingerprint) >= {"digest", "start_model", "tokenizer", "data", "eval_prompts", "libraries", "hardware"}
    assert {"paired", "eval_pairs"} <= set(fingerprint["data"]) and "transformers" in fingerprint["libraries"]
    assert manifest["sampling"]["evaluation"]["top_k"] == 0
    assert manifest["sampling"]["sandbox_data"] == {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "max_new_tokens": 12}
    html = (reports / "tiny.html").read_text()
    assert fingerprint["digest"] in html and "top-k off" in html
    capsys.readouterr()

    assert main(["verify", str(tiny_suite), "--runs", "2", *args]) == 0
    out = capsys.readouterr().out
    assert out.count(f"{BIT_IDENTICAL}; fingerprint: match") == 2, out
    assert "2 of 2 reruns reproduce the stored results bit for bit" in out
    assert {p.name: p.read_bytes() for p in store.folder.iterdir()} == before


def test_verify_without_stored_runs_is_bad_input(tiny_suite, tmp_path, capsys):
    from harness.cli import main

    assert main(["verify", str(tiny_suite), "--results", str(tmp_path / "none")]) == 2
    assert "no stored run" in capsys.readouterr().err


@pytest.mark.parametrize("runs", [0])
def test_verify_needs_at_least_one_run(tiny_suite, tmp_path, capsys, runs):
    from harness.cli import main

    assert main(["verify", str(tiny_suite), "--runs", str(runs), "--results", str(tmp_path)]) == 2
    assert "--runs 0" in capsys.readouterr().err
