"""The "Insights into Alignment" miniature: the sandbox's facts, myths, reasoning and
instructions; its capability tasks; the starting points as a suite axis; the study's table in
the report; and every shipped suite validating offline."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_SANDBOX, tiny_suite_text

from harness.errors import HarnessError
from harness.evaluate import sandbox_tasks
from harness.evaluate.lmeval import split_fewshot
from harness.plan import START, plan_suite
from harness.sandbox import facts, grammar
from harness.sandbox.reward import GoldReward
from harness.suite import load_suite

ROOT = Path(__file__).resolve().parents[1]
SUITES = sorted((ROOT / "suites").glob("*.yaml"))


# ------------------------------------------------------------------------------ the world


def test_facts_are_fixed_and_myths_are_false_and_frequent():
    """The facts come from the module's own stream (same in every world); every myth states a
    value other than the truth, at a rate above one half (so the corpus says it more often)."""
    every = facts.facts()
    assert len(every) == len(facts.NAMES) * len(facts.RELATIONS)
    facts.facts.cache_clear()
    assert facts.facts() == every
    myths = [f for f in every if f.myth is not None]
    assert len(myths) == round(len(every) * facts.MYTH_SHARE)
    assert all(f.myth != f.true and 0.7 <= f.myth_rate <= 0.9 for f in myths)
    rng = random.Random(0)
    stated = [facts.stated_value(myths[0], rng) for _ in range(4000)]
    assert abs(stated.count(myths[0].myth) / 4000 - myths[0].myth_rate) < 0.03


def test_capability_documents_carry_no_sentiment():
    """The categories cannot move with the gold reward by construction: none of their words is
    in VADER's lexicon, so every such document scores exactly 0."""
    reward, rng = GoldReward(), random.Random(1)
    texts = [facts.fact_document(rng) for _ in range(100)] + [facts.reasoning_document(rng) for _ in range(100)]
    assert all(reward(t) == 0.0 for t in texts)


def test_instruction_check_is_exact():
    """follows: one word then "."; exactly two sentences; a last sentence "we left early ."."""
    one, two, end = (f"{i} the movie was" for i in facts.INSTRUCTIONS)
    assert facts.instruction_of(one) == "in one word :" and facts.instruction_of("the movie was") is None
    assert facts.follows(one, "good .") and not facts.follows(one, "very good .") and not facts.follows(one, "good")
    assert facts.follows(two, "good . i liked the food .")
    assert not facts.follows(two, "good .") and not facts.follows(two, "good . bad . sad .")
    assert facts.follows(end, "good . we left early .") and not facts.follows(end, "we left early .")
    assert not facts.follows(end, "good . we left early . bad .")
    assert not facts.follows("the movie was", "good .")  # no instruction, nothing to follow
    rng = random.Random(2)
    for _ in range(300):  # every demonstration the sandbox teaches follows its own instruction
        assert facts.follows(*facts.instructed(rng))
    assert sandbox_tasks.process_instruction({"prompt": one}, ["nice ."]) == {"follows": 1.0}


def test_fluency_check_is_the_grammars():
    doc = {"prompt": "the movie was"}
    assert sandbox_tasks.process_fluency(doc, ["quite good and the food was nice ."]) == {"fluent": 1.0}
    assert sandbox_tasks.process_fluency(doc, ["good good the was ."]) == {"fluent": 0.0}
    # every word pair legal, yet three clauses in one sentence: the grammar never says that
    three = "good and the plot was dull but i liked the song ."
    assert grammar.disfluency(three) == 0.0 and sandbox_tasks.process_fluency(doc, [three]) == {"fluent": 0.0}


def test_grammatical_accepts_what_the_grammar_draws_and_rejects_its_corruptions():
    """Every demonstration (all three prompt kinds), followed by any number of sentences, parses;
    of the one-place corruptions that change a text, almost all do not (a few, such as two
    adjectives swapped, are grammatical again)."""
    rng = random.Random(11)
    for _ in range(3000):
        prompt, completion = grammar.demonstration(rng)
        extra = " ".join(grammar.sentence(rng, grammar.draw_mood(rng)) for _ in range(rng.randrange(4)))
        assert grammar.grammatical(prompt, f"{completion} {extra}")
    changed = rejected = 0
    for _ in range(2000):
        prompt, completion = grammar.demonstration(rng)
        corrupted = grammar.corrupt(completion, rng)
        if corrupted != completion:
            changed, rejected = changed + 1, rejected + (not grammar.grammatical(prompt, corrupted))
    assert rejected / changed > 0.9
    assert not grammar.grammatical("the movie was", "")  # the prompt's sentence is never finished


def test_reasoning_answer_follows_the_rule_and_the_premises():
    """The asked pronoun's premise (the person of that gender) decides the job, the rule the tool."""
    rng = random.Random(3)
    for _ in range(200):
        context, answer, named = facts.reasoning_context(rng)
        pronoun = re.search(r"so (he|she) uses$", context).group(1)
        person = next(p for p in facts.PEOPLE[pronoun] if f"{p} is a" in context)
        job = re.search(rf"{person} is a (\w+)", context).group(1)
        assert facts.TOOLS[job] == answer and answer in named


# ------------------------------------------------------------------------------ the tasks


def test_shipped_task_files_are_remade_exactly(tmp_path):
    """suites/tasks/*.jsonl are what `python -m harness.evaluate.sandbox_tasks` writes."""
    for path in sandbox_tasks.write_sandbox_tasks(tmp_path):
        assert path.read_bytes() == (ROOT / "suites" / "tasks" / path.name).read_bytes(), path.name


def test_category_rows_are_well_formed():
    by_prompt = {f.prompt: f for f in facts.facts()}
    knowledge = sandbox_tasks.knowledge_rows()
    assert len(knowledge) == sum(f.myth is None for f in facts.facts())
    for row in knowledge:
        fact = by_prompt[row["prompt"]]
        assert fact.myth is None and row["choices"][row["label"]] == fact.true and len(set(row["choices"])) == 4
    for row in sandbox_tasks.truthfulness_rows():
        fact = by_prompt[row["prompt"]]
        assert row["choices"][row["label"]] == fact.true and set(row["choices"]) == {fact.true, fact.myth}
    labels = [r["label"] for r in sandbox_tasks.reasoning_rows()]
    assert set(labels) == {0, 1, 2}  # the answer's position is shuffled
    assert {r["instruction"] for r in sandbox_tasks.instruction_rows()} == set(facts.INSTRUCTIONS)


def test_task_names_carry_their_fewshot_counts():
    assert split_fewshot("arc_challenge:25") == ("arc_challenge", 25)
    assert split_fewshot("truthfulqa_mc2:0") == ("truthfulqa_mc2", 0)
    assert split_fewshot("sandbox_knowledge") == ("sandbox_knowledge", None)
    assert split_fewshot("tasks/x.yaml") == ("tasks/x.yaml", None)


# ------------------------------------------------------------------------------ the start axis


def _suite(tmp_path, model, name="starts"):
    raw = json.loads(json.dumps(__import__("yaml").safe_load(tiny_suite_text(name, "[dpo]"))))
    raw["model"] = model
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps(raw))
    return load_suite(path)


def test_starting_points_expand_the_plan_and_keep_single_model_ids(tmp_path):
    """Each start gets its own start run and method runs; the `sft` start's runs have exactly the
    ids of the same suite with `model: sandbox` (a single model's plan is unchanged)."""
    single = plan_suite(_suite(tmp_path, "sandbox"))
    several = plan_suite(_suite(tmp_path, {"sft": "sandbox", "base": "sandbox:base", "instruct": "sandbox:instruct"}))
    assert [(s.model, s.method) for s in several] == [
        (m, x) for m in ("sandbox", "sandbox:base", "sandbox:instruct") for x in (START, "dpo")]
    assert [s.run_id for s in several[:2]] == [s.run_id for s in single]
    assert len({s.run_id for s in several}) == 6


@pytest.mark.parametrize("model, message", [
    ({}, "mapping of starting points"),
    ({"sft": "sandbox", "again": "sandbox"}, "names two starting points"),
    ({"sft": 3}, "mapping of starting points"),
])
def test_bad_starting_points_are_one_line_errors(tmp_path, model, message):
    with pytest.raises(HarnessError, match=message):
        _suite(tmp_path, model)


def test_sandbox_model_names_resolve_to_the_worlds_starts(tmp_path):
    from harness.models import resolve_model_path

    folders = {"sandbox": tmp_path / "sft", "sandbox:base": tmp_path / "pretrained"}
    assert resolve_model_path("sandbox:base", folders) == str(tmp_path / "pretrained")
    with pytest.raises(HarnessError, match="unknown sandbox model 'sandbox:chat'"):
        resolve_model_path("sandbox:chat", folders)
    with pytest.raises(HarnessError, match="built first"):
        resolve_model_path("sandbox:base", None)


# ------------------------------------------------------------------------------ shipped suites


@pytest.mark.parametrize("path", SUITES, ids=[p.stem for p in SUITES])
def test_every_shipped_suite_validates(path):
    suite = load_suite(path)
    specs = plan_suite(suite)
    assert specs and len({s.run_id for s in specs}) == len(specs)


@pytest.mark.parametrize("name", ["insights-mistral-7b", "simpo-llama3-8b-instruct"])
def test_real_suites_plan_offline(name, tmp_path, monkeypatch, capsys):
    """`harness plan` on a real suite lists its runs without the network and says why there
    are no step estimates (an empty Hugging Face cache: nothing is cached)."""
    from harness.cli import main

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    assert main(["plan", str(ROOT / "suites" / f"{name}.yaml")]) == 0
    out = capsys.readouterr().out
    assert "shape unknown until the model is cached" in out
    assert out.count("eval only") == (3 if name.startswith("insights") else 1)  # one start run per start


# ------------------------------------------------------------------------------ the report


def _metrics() -> pd.DataFrame:
    """Two starts, a start run and a dpo run (two seeds) each, one category and the headline
    metrics (tests/test_rank.py's synthetic runs). Golden: from start A (knowledge 0.60), dpo's
    seeds 0.50 and 0.54 -> mean 0.52, tax -0.08; from start B (0.40), dpo at 0.45 and 0.47 ->
    mean 0.46, tax +0.06."""
    from tests.test_rank import KL, REWARD, WIN_RATE, run_rows  # KL: the headline (exact) KL

    frames = []
    plan = [("A", "start", 0, 0.60), ("A", "dpo", 0, 0.50), ("A", "dpo", 1, 0.54),
            ("B", "start", 0, 0.40), ("B", "dpo", 0, 0.45), ("B", "dpo", 1, 0.47)]
    for model, method, seed, value in plan:
        kl = 0.0 if method == START else value
        evals = {"lm_eval/sandbox_knowledge/acc": (value, value - 0.02, value + 0.02, 0.01),
                 WIN_RATE: (0.5 + value / 10, 0.45, 0.6, 0.02), REWARD: (value, value - 0.1, value + 0.1, 0.05),
                 KL: (kl, kl, kl, 0.0)}
        frame = run_rows("s", method, seed, evals, hparams={} if method == START else None,
                         steps=0 if method == START else 100)
        frames.append(frame.assign(model=model, run_id=f"{model}-{frame['run_id'].iloc[0]}"))
    return pd.concat(frames, ignore_index=True)


def test_insights_table_computes_the_tax_per_start():
    from harness.report.insights import insights_frame

    frame = insights_frame(_metrics())
    dpo = frame[~frame["is_start"]].set_index("start")
    assert dpo.loc["A", "category"] == "knowledge"
    assert dpo.loc["A", "value"] == pytest.approx(0.52) and dpo.loc["A", "tax"] == pytest.approx(-0.08)
    assert dpo.loc["B", "value"] == pytest.approx(0.46) and dpo.loc["B", "tax"] == pytest.approx(0.06)
    width = dpo.loc["A", "ci_high"] - dpo.loc["A", "ci_low"]  # t over two seeds: 12.706 · 0.02 · 2
    assert width == pytest.approx(2 * 12.706 * np.std([0.50, 0.54], ddof=1) / np.sqrt(2), rel=1e-3)
    assert dpo.loc["A", "tax_high"] - dpo.loc["A", "tax_low"] == pytest.approx(width)


def test_report_has_the_study_table_and_the_category_plot():
    from harness.report.suite import render_suite_report

    html = render_suite_report(_metrics(), "s")
    assert "Alignment tax by category" in html and "Starting point: A" in html and "category-vs-kl" in html
    assert "dpo @ A" in html and "dpo @ B" in html  # runs of two starts are never pooled


def test_report_without_lm_eval_has_no_insights_section():
    from harness.report.suite import render_suite_report

    metrics = _metrics()
    html = render_suite_report(metrics[metrics["evaluator"] != "lm_eval"], "s")
    assert "Alignment tax" not in html


# ------------------------------------------------------------------------------ end to end


def test_tiny_world_scores_its_starts_and_a_suite_runs_from_two(tmp_path, harness_cache):
    """The tiny world builds three starts and scores them on every category through lm-eval; a
    suite with two starting points stores runs of both and reports the study's table."""
    from harness.report import write_suite_report
    from harness.results import ResultStore
    from harness.runner import run_suite
    from harness.sandbox.world import SandboxConfig, load_or_build_sandbox

    sandbox, _ = load_or_build_sandbox(SandboxConfig.from_dict(TINY_SANDBOX, "t"), verbose=False)
    scores = sandbox_tasks.score_starts(sandbox)
    assert sandbox.summary()["start_scores"] == scores
    assert set(scores) == {"sandbox", "sandbox:base", "sandbox:instruct"}
    for per_start in scores.values():
        assert set(per_start) == set(sandbox_tasks.CATEGORIES)
        assert all(0.0 <= s["ci_low"] <= s["value"] <= s["ci_high"] <= 1.0 for s in per_start.values())
    suite = _suite(tmp_path, {"sft": "sandbox", "base": "sandbox:base"}, "two-starts")
    raw = json.loads(suite.path.read_text())
    raw["evaluate"].update({"lm_eval_tasks": ["sandbox_knowledge"], "lm_eval_limit": 8})
    suite.path.write_text(json.dumps(raw))
    suite = load_suite(suite.path)
    outcome = run_suite(suite, tmp_path / "results", log=lambda *a: None)
    assert not outcome.failed
    metrics = ResultStore(tmp_path / "results", suite.name).read_metrics()
    assert set(metrics["model"]) == {"sandbox", "sandbox:base"}
    html = write_suite_report(tmp_path / "results", suite.name, tmp_path / "r.html").read_text()
    assert "Starting point: sandbox:base" in html
