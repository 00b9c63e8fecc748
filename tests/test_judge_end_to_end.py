"""The sandbox through the LLM judge's path end to end: `harness run` with evaluate.judge pointing
at a local HTTP judge server (tests/judge_server.py), the verdicts in the samples table and the
llm_judge metrics in the parquet; a rerun into a fresh results folder asks the server nothing;
a judge that does not answer, or does not serve the model, stops `harness run` before training."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from harness.cli import main
from tests.judge_server import JudgeServer


@pytest.fixture(scope="module")
def server():
    with JudgeServer(models=("sandbox-judge",)) as running:
        yield running


@pytest.fixture(scope="module")
def judged_suite(tmp_path_factory, harness_cache, server):
    from tests.conftest import tiny_suite_text

    root = tmp_path_factory.mktemp("judged")
    raw = yaml.safe_load(tiny_suite_text(name="judged", methods="[dpo]"))
    raw["evaluate"]["judge"] = {"model": "sandbox-judge", "base_url": server.base_url, "template": "alpaca_eval",
                                "baseline": "start", "backoff": 0.0}
    suite = root / "judged.yaml"
    suite.write_text(yaml.safe_dump(raw))
    assert main(["run", str(suite), "--results", str(root / "results"), "--reports", str(root / "reports")]) == 0
    return root, suite, server.requests


def stored(root, table: str) -> pd.DataFrame:
    files = sorted((root / "results" / "judged").glob(f"*.{table}.parquet" if table == "samples" else "*.parquet"))
    files = [f for f in files if (table == "samples") == f.name.endswith(".samples.parquet")]
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def test_every_sample_is_judged_in_both_orders(judged_suite):
    root, _, requests = judged_suite
    samples = stored(root, "samples")
    assert len(samples) == 2 * 8 * 2  # the start run and dpo, 8 prompts × 2 samples
    assert requests <= 2 * len(samples)  # two orders per pair; a pair met twice (a repeated text) is asked once
    assert samples["judge_outcome"].between(0, 1).all()
    assert set(samples["judge"]) == {"sandbox-judge (alpaca_eval)"} and set(samples["judge_baseline"]) == {"start"}
    assert samples["judge_verdicts"].str.fullmatch(r"[mM] / [mM]").all()
    assert (samples["judge_tokens"] > 0).all()


def test_the_judge_metrics_are_stored_per_run(judged_suite):
    root, _, _ = judged_suite
    metrics = stored(root, "metrics")
    judge = metrics[metrics["evaluator"] == "llm_judge"].pivot(index="run_id", columns="metric", values="value")
    assert len(judge) == 2
    assert set(judge.columns) == {"judge_win_rate", "judge_reward_agreement", "judge_tokens", "judge_seconds"}
    samples = stored(root, "samples")
    for run_id, row in judge.iterrows():
        mine = samples[samples["run_id"] == run_id]
        assert row["judge_win_rate"] == pytest.approx(mine.groupby("prompt_id")["judge_outcome"].mean().mean())
        assert row["judge_tokens"] == mine["judge_tokens"].sum()
        assert 0 <= row["judge_reward_agreement"] <= 1
    win = metrics[(metrics["evaluator"] == "llm_judge") & (metrics["metric"] == "judge_win_rate")]
    assert (win["ci_low"] <= win["value"]).all() and (win["value"] <= win["ci_high"]).all()
    assert (win["level"] == 0.95).all()  # every interval states its level
    costs = metrics[metrics["metric"].isin(["judge_tokens", "judge_seconds"])]
    assert costs["level"].isna().all() and costs["ci_low"].isna().all()  # a total has no interval


def test_a_rerun_judges_nothing_twice(judged_suite, server, tmp_path):
    root, suite, requests = judged_suite
    assert main(["run", str(suite), "--results", str(tmp_path / "results"), "--reports", str(tmp_path / "r")]) == 0
    assert server.requests == requests  # every verdict came from the cache
    again = pd.concat([pd.read_parquet(f) for f in sorted((tmp_path / "results" / "judged").glob("*.samples.parquet"))])
    assert sorted(again["judge_outcome"]) == sorted(stored(root, "samples")["judge_outcome"])


@pytest.mark.parametrize("override, message", [
    ("evaluate.judge.base_url=http://127.0.0.1:9/v1", "evaluate.judge.base_url = 'http://127.0.0.1:9/v1' does not answer"),
    ("evaluate.judge.model=sandbox-judg", "is not served at"),
])
def test_a_judge_that_cannot_judge_stops_the_run_before_training(judged_suite, tmp_path, capsys, override, message):
    _, suite, _ = judged_suite
    code = main(["run", str(suite), "--results", str(tmp_path / "results"), "--set", override])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert err.startswith(f"harness: error: --set {override}")  # names where the key came from
    assert not (tmp_path / "results" / "judged").exists() or not list((tmp_path / "results" / "judged").glob("*.parquet"))


def test_a_judge_that_stops_answering_fails_the_run_not_the_suite(judged_suite, tmp_path):
    """The server lists its model (the preflight passes) but refuses every judgment: each run is
    recorded as failed with the reason, and `harness run` ends with status 1, not a traceback."""
    import json

    _, suite, _ = judged_suite
    with JudgeServer(models=("sandbox-judge",), fail_first=10**6) as failing:
        code = main(["run", str(suite), "--results", str(tmp_path / "results"), "--reports", str(tmp_path / "r"),
                     "--set", f"evaluate.judge.base_url={failing.base_url}", "--set", "evaluate.judge.retries=0",
                     "--set", "evaluate.judge.template=arena_hard"])  # another template: no verdict is cached
    assert code == 1
    manifests = [json.loads(p.read_text()) for p in (tmp_path / "results" / "judged").glob("*.json")]
    assert manifests and all(m["status"] == "failed" and "did not answer after 1 tries" in m["error"]
                             for m in manifests)
