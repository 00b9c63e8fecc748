"""A whole suite on the tiny sandbox: plan, train, evaluate, parquet, report; then a re-run that
trains nothing."""

from __future__ import annotations

import json
import re

import pandas as pd
import pyarrow.parquet as pq
import pytest

from harness.cli import main
from harness.results.schema import results_schema, samples_schema

METHODS = ("dpo", "ipo", "simpo")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, harness_cache):
    from tests.conftest import tiny_suite_text

    root = tmp_path_factory.mktemp("e2e")
    suite = root / "tiny.yaml"
    suite.write_text(tiny_suite_text())
    args = [str(suite), "--results", str(root / "results"), "--reports", str(root / "reports")]
    assert main(["run", *args]) == 0
    return root, args


def test_every_run_is_stored_with_the_schema(finished_run):
    root, _ = finished_run
    files = sorted((root / "results" / "tiny").glob("*.parquet"))
    metrics = [f for f in files if not f.name.endswith(".samples.parquet")]
    samples = [f for f in files if f.name.endswith(".samples.parquet")]
    assert len(metrics) == 4 and len(samples) == 4  # start + three methods
    for path in metrics:
        assert pq.read_schema(path).names == results_schema().names
    for path in samples:
        assert pq.read_schema(path).names == samples_schema().names
    frame = pd.concat(pd.read_parquet(p) for p in metrics)
    assert set(frame["method"]) == {"start", *METHODS}
    final = frame[frame["split"] == "eval"]
    for method in METHODS:
        rows = final[final["method"] == method].set_index("metric")
        assert 0.0 <= rows.loc["win_rate_vs_start", "value"] <= 1.0
        assert rows.loc["win_rate_vs_start", "ci_low"] <= rows.loc["win_rate_vs_start", "value"] <= rows.loc["win_rate_vs_start", "ci_high"]
        assert rows.loc["kl_k3", "value"] >= 0.0
        assert rows.loc["reward_mean", "n"] == 8


def test_matched_budget_and_accounting(finished_run):
    root, _ = finished_run
    frame = pd.concat(pd.read_parquet(p) for p in (root / "results" / "tiny").glob("*[0-9a-f].parquet"))
    runs = frame.drop_duplicates("run_id").set_index("method")
    for method in METHODS:
        assert 0 < runs.loc[method, "flops_total"] <= 2.0e8
        assert runs.loc[method, "optimizer_steps"] >= 1
    assert runs.loc["simpo", "flops_reference"] == 0.0  # reference-free
    assert runs.loc["dpo", "flops_reference"] > 0.0
    # the same FLOPs buy the reference-free method more steps
    assert runs.loc["simpo", "optimizer_steps"] > runs.loc["dpo", "optimizer_steps"]
    assert runs.loc["start", "optimizer_steps"] == 0


def test_training_curves_are_stored(finished_run):
    root, _ = finished_run
    frame = pd.concat(pd.read_parquet(p) for p in (root / "results" / "tiny").glob("*[0-9a-f].parquet"))
    curves = frame[(frame["split"] == "train") & (frame["method"] == "dpo")]
    assert {"loss", "reward_margins", "grad_norm", "lr"} <= set(curves["metric"])
    assert curves["step"].nunique() >= 2


def test_manifests_record_status_and_spec(finished_run):
    root, _ = finished_run
    for path in (root / "results" / "tiny").glob("*.json"):
        manifest = json.loads(path.read_text())
        assert manifest["status"] == "ok" and manifest["run_id"] == path.stem
        assert "torch" in manifest["versions"] and "spec" in manifest


def test_report_names_every_method(finished_run):
    root, _ = finished_run
    html = (root / "reports" / "tiny.html").read_text()
    for method in ("start", *METHODS):
        assert f">{method}<" in html or f">{method} " in html or method in html
    from harness.report.html import PLOTLY_BUNDLE

    # no script from the network: only the shared plotly.js, by a relative name, beside the page
    assert re.findall(r'<script src="([^"]+)"', html) == [PLOTLY_BUNDLE]
    assert (root / "reports" / PLOTLY_BUNDLE).exists()


def test_second_run_trains_nothing(finished_run, capsys):
    root, args = finished_run
    before = {p: p.stat().st_mtime_ns for p in (root / "results" / "tiny").glob("*")}
    assert main(["run", *args]) == 0
    assert "4 stored, 0 to run" in capsys.readouterr().out
    after = {p: p.stat().st_mtime_ns for p in (root / "results" / "tiny").glob("*")}
    assert before == after
