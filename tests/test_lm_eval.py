"""lm-eval on the in-memory policy with the local sandbox tasks (suites/tasks/), offline, from a
working directory other than the project's: data paths resolve against the task YAML."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.evaluate.lmeval import PROJECT_TASKS, local_task_config, local_tasks, results_rows, run_lm_eval
from harness.evaluate.sandbox_tasks import write_sandbox_tasks
from harness.suite import EvalConfig

TASKS = ("sandbox_grammar_mc", "sandbox_grammar_ppl")


@pytest.fixture(scope="module")
def sandbox_model(harness_cache):
    from harness.sandbox.world import SandboxConfig, load_or_build_sandbox
    from harness.models import load_policy, load_tokenizer
    from tests.conftest import TINY_SANDBOX

    sandbox, _ = load_or_build_sandbox(SandboxConfig.from_dict(TINY_SANDBOX, "tests"), verbose=False)
    return load_policy(str(sandbox.sft_dir), torch.device("cpu")), load_tokenizer(str(sandbox.sft_dir))


def test_shipped_task_data_is_what_the_generator_makes(tmp_path):
    """The jsonl files beside the YAMLs are reproducible from the grammar (fixed seeds) and small."""
    for path in write_sandbox_tasks(tmp_path):
        shipped = PROJECT_TASKS / path.name
        assert shipped.read_bytes() == path.read_bytes(), f"{shipped} differs from the generator's output"
        assert shipped.stat().st_size < 100_000
    rows = [json.loads(line) for line in (PROJECT_TASKS / "sandbox_grammar_mc.jsonl").read_text().splitlines()]
    assert len(rows) >= 200
    for row in rows:
        good, bad = row["choices"][row["label"]], row["choices"][1 - row["label"]]
        assert sorted(good.split()) == sorted(bad.split()) and good != bad  # same words, other order


def test_local_task_data_paths_resolve_against_the_yaml_not_the_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    found = local_tasks([PROJECT_TASKS])
    assert set(TASKS) <= set(found)
    cfg = local_task_config(found["sandbox_grammar_mc"])
    data = Path(cfg["dataset_kwargs"]["data_files"]["test"])
    assert data.is_absolute() and data.exists() and data.parent == PROJECT_TASKS.resolve()


def test_local_tasks_on_the_in_memory_policy_from_another_cwd(sandbox_model, tmp_path, monkeypatch):
    """Both sandbox tasks, 16 documents each: every metric is a row with a finite stderr (lm-eval's
    for accuracy; a bootstrap over documents for the perplexities, which lm-eval leaves without),
    n = 16, and the direction from the task. The global RNGs and the model's mode are untouched."""
    model, tokenizer = sandbox_model
    monkeypatch.chdir(tmp_path)
    model.train()
    random.seed(5)
    state = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    results = run_lm_eval(model, tokenizer, TASKS, limit=16, batch_size=16, bootstrap=200, seed=0)
    assert model.training
    assert torch.equal(state[0], torch.get_rng_state()) and np.array_equal(state[1], np.random.get_state()[1])
    assert state[2] == random.getstate()

    rows = {r["metric"]: r for r in results_rows(results, step=7, bootstrap=200, seed=0)}
    expected = {"sandbox_grammar_mc/acc": True, "sandbox_grammar_mc/acc_norm": True,
                "sandbox_grammar_ppl/word_perplexity": False, "sandbox_grammar_ppl/byte_perplexity": False,
                "sandbox_grammar_ppl/bits_per_byte": False}
    assert set(rows) == set(expected)
    for name, higher in expected.items():
        row = rows[name]
        assert row["evaluator"] == "lm_eval" and row["split"] == "eval" and row["step"] == 7
        assert row["n"] == 16 and row["higher_is_better"] is higher
        assert math.isfinite(row["stderr"]) and row["stderr"] >= 0
        assert row["ci_low"] <= row["value"] <= row["ci_high"]
    assert 0.0 <= rows["sandbox_grammar_mc/acc"]["value"] <= 1.0
    assert rows["sandbox_grammar_ppl/word_perplexity"]["value"] > 1.0


def test_a_suites_own_task_folder_and_a_yaml_path(sandbox_model, tmp_path, monkeypatch):
    """A task in `<suite folder>/tasks/` with its data in a subfolder, named by its task name, and
    the same YAML named by its path: found and run from an unrelated cwd."""
    from harness.evaluate.lmeval import lm_eval_rows

    model, tokenizer = sandbox_model
    tasks = tmp_path / "suite" / "tasks"
    (tasks / "data").mkdir(parents=True)
    shutil.copy(PROJECT_TASKS / "sandbox_grammar_mc.jsonl", tasks / "data" / "mini.jsonl")
    yaml_text = (PROJECT_TASKS / "sandbox_grammar_mc.yaml").read_text()
    yaml_text = yaml_text.replace("task: sandbox_grammar_mc", "task: my_mini_mc")
    yaml_text = yaml_text.replace("test: sandbox_grammar_mc.jsonl", "test: data/mini.jsonl")
    (tasks / "mini.yaml").write_text(yaml_text)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = EvalConfig(lm_eval_tasks=("my_mini_mc",), lm_eval_limit=4, lm_eval_batch_size=4, bootstrap=50)
    rows = lm_eval_rows(model, tokenizer, config, step=0, task_dirs=(tasks,))
    assert {r["metric"] for r in rows} == {"my_mini_mc/acc", "my_mini_mc/acc_norm"}
    by_path = EvalConfig(lm_eval_tasks=(str(tasks / "mini.yaml"),), lm_eval_limit=4, lm_eval_batch_size=4)
    assert {r["metric"] for r in lm_eval_rows(model, tokenizer, by_path, step=0)} == {"my_mini_mc/acc", "my_mini_mc/acc_norm"}


def _logged(task_scores: dict[str, list[float]], metric: str) -> list[dict]:
    """lm-eval's logged samples: one per document and filter, carrying that filter's value."""
    return [{"doc_id": i, "filter": filt, "metrics": [metric], metric: float(x)}
            for filt, scores in task_scores.items() for i, x in enumerate(scores)]


def test_proportions_get_wilson_intervals_and_other_metrics_keep_the_normal_one():
    """A hand-built lm-eval results dict (stderrs by lm-eval's own mean_stderr):
    - ceiling/acc, 150 of 150 documents: lm-eval's stderr is 0, value ± 1.96·0 = [1, 1]; Wilson
      gives [150/(150 + z²), 1] = [0.97503, 1] (tests/test_intervals.py derives it);
    - gen/exact_match:strict-match, 1 of 100 (beside the flexible-extract filter's 60 of 100 on the
      same documents): Wald is 0.01 ± 1.96·0.01 = [−0.0096, 0.0296]; Wilson [0.001767, 0.054486],
      from the strict-match documents only;
    - graded/score (documents scored 0, 1, 2 or 3, mean 1.5), a 0/1 metric the task aggregates by
      median, and a proportion whose documents were not logged: value ± 1.96·stderr as before.
    Every row keeps lm-eval's value and stderr."""
    from lm_eval.api.metrics import mean_stderr

    ceiling = [1.0] * 150
    strict, flexible = [1.0] + [0.0] * 99, [1.0] * 60 + [0.0] * 40
    graded = [0.0, 1.0, 2.0, 3.0] * 25
    med = [1.0] * 70 + [0.0] * 30
    results = {
        "results": {
            "ceiling": {"acc,none": 1.0, "acc_stderr,none": mean_stderr(ceiling)},
            "gen": {"exact_match,strict-match": 0.01, "exact_match_stderr,strict-match": mean_stderr(strict),
                    "exact_match,flexible-extract": 0.6, "exact_match_stderr,flexible-extract": mean_stderr(flexible)},
            "graded": {"score,none": 1.5, "score_stderr,none": mean_stderr(graded),
                       "vote,none": 1.0, "vote_stderr,none": 0.05},
            "unlogged": {"acc,none": 0.99, "acc_stderr,none": 0.01},
        },
        "configs": {
            "ceiling": {"metric_list": [{"metric": "acc", "aggregation": "mean"}]},
            "gen": {"metric_list": [{"metric": "exact_match", "aggregation": "mean"}]},
            "graded": {"metric_list": [{"metric": "score", "aggregation": "mean"},
                                       {"metric": "vote", "aggregation": "median"}]},
            "unlogged": {"metric_list": [{"metric": "acc", "aggregation": "mean"}]},
        },
        "n-samples": {t: {"effective": n} for t, n in (("ceiling", 150), ("gen", 100), ("graded", 100), ("unlogged", 50))},
        "samples": {
            "ceiling": _logged({"none": ceiling}, "acc"),
            "gen": _logged({"strict-match": strict, "flexible-extract": flexible}, "exact_match"),
            "graded": _logged({"none": graded}, "score") + _logged({"none": med}, "vote"),
        },
    }
    rows = {r["metric"]: r for r in results_rows(results, step=0)}

    top = rows["ceiling/acc"]
    assert (top["value"], top["stderr"], top["n"]) == (1.0, 0.0, 150)
    assert top["ci_low"] == pytest.approx(0.975030, abs=1e-6) and top["ci_high"] == 1.0

    low = rows["gen/exact_match:strict-match"]
    assert low["value"] == 0.01 and low["stderr"] == pytest.approx(0.01)
    assert (low["ci_low"], low["ci_high"]) == pytest.approx((0.001767, 0.054486), abs=2e-6)
    for row in (top, low):
        assert 0.0 <= row["ci_low"] <= row["value"] <= row["ci_high"] <= 1.0

    flex = rows["gen/exact_match:flexible-extract"]  # 60 of 100: Wilson [0.502, 0.691], not Wald's [0.503, 0.697]
    assert (flex["ci_low"], flex["ci_high"]) == pytest.approx((0.502, 0.691), abs=1e-3)

    for name in ("graded/score", "graded/vote", "unlogged/acc"):
        row = rows[name]
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((row["value"] - 1.96 * row["stderr"],
                                                                 row["value"] + 1.96 * row["stderr"]))
    assert rows["unlogged/acc"]["ci_high"] > 1.0  # no documents logged: left unclipped (module docstring)
