"""A tiny suite evaluated with every evaluator and an lm-eval task, then rescored from its stored
samples (`harness evaluate SUITE --rescore [--reward-model X]`) without training or generating."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from harness.cli import main
from harness.results.schema import results_schema
from tests.test_evaluate_reward_models import save_tiny_reward_model

SAMPLE_METRICS = {
    "gold_reward/reward_mean", "win_rate/win_rate_vs_start", "win_rate/length_controlled_minimal_vs_start",
    "win_rate/win_rate_vs_chosen", "win_rate/length_controlled_minimal_vs_chosen", "kl/kl_k1", "kl/kl_k3",
    "kl/kl_token_exact", "length/completion_tokens", "entropy/token_entropy", "diversity/distinct_1",
    "diversity/distinct_2", "diversity/distinct_1_per_prompt", "diversity/distinct_2_per_prompt",
    "diversity/self_bleu",
}


@pytest.fixture(scope="module")
def stored(tmp_path_factory, harness_cache):
    from tests.conftest import tiny_suite_text

    root = tmp_path_factory.mktemp("rescore")
    raw = yaml.safe_load(tiny_suite_text(name="tiny_rescore", methods="[dpo]"))
    raw["evaluate"].update({"lm_eval_tasks": ["sandbox_grammar_mc"], "lm_eval_limit": 8, "lm_eval_batch_size": 8})
    suite = root / "tiny_rescore.yaml"
    suite.write_text(yaml.safe_dump(raw))
    store = ["--results", str(root / "results"), "--reports", str(root / "reports")]
    assert main(["run", str(suite), *store, "--no-report"]) == 0
    return root, store


def _frames(root):
    folder = root / "results" / "tiny_rescore"
    metrics = {p.stem: pd.read_parquet(p) for p in folder.glob("*.parquet") if not p.name.endswith(".samples.parquet")}
    samples = {p.name.split(".")[0]: pd.read_parquet(p) for p in folder.glob("*.samples.parquet")}
    return metrics, samples


def _keys(frame):
    rows = frame[frame["split"] == "eval"]
    return set(rows["evaluator"] + "/" + rows["metric"])


def test_a_run_stores_every_evaluator_and_the_lm_eval_task(stored):
    root, _ = stored
    metrics, samples = _frames(root)
    assert len(metrics) == 2  # start + dpo
    for run_id, frame in metrics.items():
        keys = _keys(frame)
        assert SAMPLE_METRICS <= keys
        assert {"lm_eval/sandbox_grammar_mc/acc", "lm_eval/sandbox_grammar_mc/acc_norm"} <= keys
        table = samples[run_id]
        assert (table["reward_model"] == "gold").all()
        # The log-probs cover the stop token (ending the turn is part of π(y|x)); the length does not.
        stops = (~table["truncated"]).astype(int)
        assert [len(t) for t in table["token_logps"]] == (table["completion_tokens"] + stops).tolist()
        assert np.allclose([t.sum() for t in table["token_logps"]], table["policy_logp"], atol=1e-3)
        assert table["chosen_completion"].notna().all() and table["entropy"].gt(0).all()


def test_rescore_without_a_reward_model_reproduces_the_metrics(stored, capsys):
    root, store = stored
    before, _ = _frames(root)
    assert main(["evaluate", "tiny_rescore", "--rescore", "--no-report", *store]) == 0
    assert "2 runs rescored" in capsys.readouterr().out
    after, _ = _frames(root)
    for run_id, old in before.items():
        new = after[run_id]
        assert pq.read_schema(root / "results" / "tiny_rescore" / f"{run_id}.parquet").names == results_schema().names
        key = ["evaluator", "metric", "split", "step"]
        merged = old.merge(new, on=key, suffixes=("_old", "_new"))
        assert len(merged) == len(old) == len(new)
        assert np.allclose(merged["value_old"], merged["value_new"], equal_nan=True)
        manifest = json.loads((root / "results" / "tiny_rescore" / f"{run_id}.json").read_text())
        assert manifest["rescored"][-1]["rescored_rewards"] is False


def test_rescore_with_a_new_reward_model(stored, tmp_path):
    root, store = stored
    rm = save_tiny_reward_model(tmp_path / "rm")
    before, _ = _frames(root)
    assert main(["evaluate", "tiny_rescore", "--rescore", "--reward-model", str(rm), "--no-report", *store]) == 0
    after, samples = _frames(root)
    for run_id, new in after.items():
        keys = _keys(new)
        assert "gold_reward/reward_mean" not in keys and "reward_model/reward_mean" in keys
        assert "lm_eval/sandbox_grammar_mc/acc" in keys  # not sample-based: kept
        old = before[run_id]
        assert new[new["split"] == "train"].reset_index(drop=True).equals(old[old["split"] == "train"].reset_index(drop=True))
        assert (new["run_id"] == run_id).all() and new["flops_total"].nunique() == 1
        table = samples[run_id]
        assert (table["reward_model"] == str(rm)).all()
        assert not np.allclose(table["reward"], before_rewards(old))  # scores of another judge
        assert table["chosen_reward"].notna().all()


def before_rewards(metrics):
    """A stand-in of the gold rewards' scale: VADER scores lie in [-1, 1], the tiny RM's do not
    match them exactly; comparing against the stored gold mean is enough to see a change."""
    row = metrics[(metrics["evaluator"] == "gold_reward") & (metrics["metric"] == "reward_mean")]
    return float(row["value"].iloc[0])


def test_bad_input_is_one_line_and_changes_nothing(stored, capsys):
    root, store = stored
    folder = root / "results" / "tiny_rescore"
    before = {p: p.stat().st_mtime_ns for p in folder.glob("*")}
    assert main(["evaluate", "tiny_rescore", *store]) == 2
    assert "add --rescore" in capsys.readouterr().err
    assert main(["evaluate", "tiny_rescore", "--rescore", "--reward-model", "gld", *store]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "did you mean 'gold'" in err
    assert main(["evaluate", "no_such_suite", "--rescore", *store]) == 2
    assert {p: p.stat().st_mtime_ns for p in folder.glob("*")} == before


def test_samples_stored_before_the_new_columns_are_rescored(stored):
    """An older samples file (without token_logps, entropy, chosen_*, reward_model) still rescores:
    the metrics that need the missing columns are left out."""
    from harness.evaluate.rescore import rescore_run
    from harness.results import ResultStore

    root, _ = stored
    store = ResultStore(root / "results", "tiny_rescore")
    run_id = store.run_ids()[0]
    table = pd.read_parquet(store.samples_path(run_id))
    old = table.drop(columns=["token_logps", "entropy", "chosen_completion", "chosen_reward", "chosen_outcome", "reward_model"])
    old.to_parquet(store.samples_path(run_id))
    rescore_run(store, run_id, judge=None)
    keys = _keys(pd.read_parquet(store.metrics_path(run_id)))
    assert "entropy/token_entropy" not in keys and "win_rate/win_rate_vs_chosen" not in keys
    assert {"win_rate/win_rate_vs_start", "kl/kl_k3", "diversity/distinct_2"} <= keys


def test_rescoring_is_all_or_nothing(stored, capsys, monkeypatch):
    """A judge that fails on the second run leaves every run as it was (no run judged by a second
    model), no temporary file and no lock; the fault is one line and exit status 1."""
    import harness.evaluate.rescore as rescore

    root, store = stored
    folder = root / "results" / "tiny_rescore"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    calls = []

    def failing(samples, judge):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return original(samples, judge)

    original = rescore.rescored
    monkeypatch.setattr(rescore, "rescored", failing)
    assert main(["evaluate", "tiny_rescore", "--rescore", "--reward-model", "gold", "--no-report", *store]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err
    assert len(calls) == 2
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_a_table_that_counted_the_stop_token_is_recounted(stored):
    """Before the `truncated` column, completion_tokens counted the stop token. Rescoring such a
    table restores the length a reader counts and `truncated` as a new run stores them, exactly
    wherever the text keeps every content token (decoding drops special tokens the tiny model
    emits: at max_new_tokens such a sample is ambiguous and counts as cut)."""
    from harness.evaluate.rescore import rescore_run
    from harness.results import ResultStore

    root, _ = stored
    store = ResultStore(root / "results", "tiny_rescore")
    run_id = store.run_ids()[0]
    table = pd.read_parquet(store.samples_path(run_id))
    length_before = _length_row(pd.read_parquet(store.metrics_path(run_id)))
    old = table.drop(columns=["truncated"])
    old["completion_tokens"] = table["completion_tokens"] + (~table["truncated"]).astype(int)
    old.to_parquet(store.samples_path(run_id))
    rescore_run(store, run_id, judge=None)
    again = pd.read_parquet(store.samples_path(run_id))
    words = table["completion"].map(lambda text: len(text.split()))
    exact = (words == table["completion_tokens"]) | ~table["truncated"] & (table["completion_tokens"] < 11)
    assert exact.mean() > 0.9  # the check below covers most samples
    assert (again["completion_tokens"] == table["completion_tokens"])[exact].all()
    assert (again["truncated"] == table["truncated"])[exact].all()
    wrong = (again["completion_tokens"] != table["completion_tokens"]).sum()
    length_after = _length_row(pd.read_parquet(store.metrics_path(run_id)))
    assert length_after[0] == pytest.approx(length_before[0], abs=wrong / len(table) + 1e-12)


def _length_row(metrics: pd.DataFrame) -> list[float]:
    row = metrics[(metrics["evaluator"] == "length") & (metrics["metric"] == "completion_tokens")].iloc[0]
    return [row["value"], row["stderr"], row["ci_low"], row["ci_high"]]


def test_the_recount_rule_by_hand():
    """Shorter than max_new_tokens (here 4): it ended, one less. At the limit: on the sandbox the
    text's words decide (one per content token); elsewhere, or when they match neither, cut."""
    from harness.evaluate.rescore import recount_without_stop_token

    old = pd.DataFrame({"completion_tokens": [3, 4, 4, 4], "completion": ["a b", "a b c", "a b c d", "a b"]})
    spec = {"evaluate": {"max_new_tokens": 4}}
    sandbox = recount_without_stop_token(old, {"spec": {**spec, "model": "sandbox:instruct"}})
    assert sandbox["completion_tokens"].tolist() == [2, 3, 4, 4]
    assert sandbox["truncated"].tolist() == [False, False, True, True]
    other = recount_without_stop_token(old, {"spec": {**spec, "model": "Qwen/Qwen2.5-0.5B-Instruct"}})
    assert other["completion_tokens"].tolist() == [2, 4, 4, 4]
    assert other["truncated"].tolist() == [False, True, True, True]


def test_rescoring_a_suite_covers_its_tuning_folders(stored, capsys):
    """A tuned suite's trials (validation prompts) are rescored with the suite, keeping their split."""
    import shutil

    from harness.results import ResultStore

    root, store = stored
    suite = ResultStore(root / "results", "tiny_rescore")
    trial = suite.inner("tuning", "trials")
    trial.folder.mkdir(parents=True)
    run_id = suite.run_ids()[0]
    for path in (suite.metrics_path(run_id), suite.samples_path(run_id), suite.manifest_path(run_id)):
        shutil.copy(path, trial.folder / path.name)
    metrics = pd.read_parquet(trial.metrics_path(run_id))
    metrics.loc[metrics["split"] == "eval", "split"] = "validation"
    metrics.to_parquet(trial.metrics_path(run_id))
    try:
        assert main(["evaluate", "tiny_rescore", "--rescore", "--no-report", *store]) == 0
        assert "3 runs rescored" in capsys.readouterr().out
        again = pd.read_parquet(trial.metrics_path(run_id))
        assert set(again["split"]) <= {"validation", "train"} and "length" in set(again["evaluator"])
    finally:
        shutil.rmtree(trial.folder.parent)
