"""The pairwise LLM judge (harness.evaluate.judge) against a real HTTP server (tests/judge_server.py):
both orders, the verdicts' reading, the cache, retries, timeouts, concurrency, the samples
table's columns, the llm_judge evaluator and the preflight's one-line errors."""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.errors import HarnessError
from harness.evaluate.judge import (
    JudgeFailed, PairwiseJudge, VerdictCache, check_judge_server, check_judge_settings, judge_columns, read_one_token,
    read_verdict_label,
)
from harness.evaluate.metrics import llm_judge
from harness.evaluate.policy import NO_JUDGE, judged_prompts, scored_from_samples
from harness.suite import JudgeConfig, load_suite
from tests.judge_server import JudgeServer

LONG, SHORT = "a long and careful answer", "short"


def config(server: JudgeServer, **given) -> JudgeConfig:
    return replace(JudgeConfig(model="judge-7b", base_url=server.base_url, backoff=0.0), **given)


def judge_of(server: JudgeServer, tmp_path: Path, **given) -> PairwiseJudge:
    return PairwiseJudge(config(server, **given), cache=VerdictCache(tmp_path))


def where(key: str) -> str:
    return "suite.yaml"


# ----------------------------------------------------------------------------- reading verdicts


def test_one_token_answer_reads_the_weighted_share_from_logprobs():
    top = [{"token": "m", "logprob": math.log(0.75)}, {"token": " M", "logprob": math.log(0.25)}]
    assert read_one_token("m", top).first_share == pytest.approx(0.75)
    assert read_one_token("M", None).first_share == 0.0 and read_one_token("m", None).first_share == 1.0
    unreadable = read_one_token("The first one", None)
    assert unreadable.label is None and math.isnan(unreadable.first_share)


def test_verdict_labels_and_their_shares():
    assert read_verdict_label("... My final verdict: [[A>>B]]").first_share == 1.0
    assert read_verdict_label("[[A > B]]").label == "A>B"
    assert read_verdict_label("[[A=B]]").first_share == 0.5
    assert read_verdict_label("[[B>A]]").first_share == 0.0 and read_verdict_label("[[B>>A]]").first_share == 0.0
    changed_mind = read_verdict_label("first [[A>B]], on reflection [[B>A]]")
    assert changed_mind.label is None and math.isnan(changed_mind.first_share)
    assert read_verdict_label("[[A>B]] ... so [[A>B]]").label == "A>B"  # repeated, not contradicted
    assert math.isnan(read_verdict_label("no label at all").first_share)


# ----------------------------------------------------------------------------- through the server


def test_alpaca_eval_judges_both_orders_and_weights_by_logprobs(tmp_path):
    with JudgeServer(confidence=0.9) as server:
        pairs = judge_of(server, tmp_path).judge(["say it", "say that"], [LONG, SHORT], [SHORT, LONG])
        assert server.requests == 4  # two pairs, two orders each
        firsts = [b["messages"][-1]["content"].split("=== Response m ===\n")[1].split("\n")[0] for b in server.bodies]
        assert sorted(firsts) == sorted([LONG, SHORT, SHORT, LONG])
        assert all(b["max_tokens"] == 1 and b["logprobs"] for b in server.bodies)
    assert pairs[0].score == pytest.approx(0.9) and pairs[1].score == pytest.approx(0.1)
    assert pairs[0].labels == "m / M"  # the longer output won in both orders


def test_without_logprobs_the_answer_token_decides(tmp_path):
    with JudgeServer(logprobs=False) as server:
        pairs = judge_of(server, tmp_path).judge(["q"], [LONG], [SHORT])
    assert pairs[0].score == 1.0


def test_a_judge_that_always_picks_the_first_position_gives_no_one_an_edge(tmp_path):
    with JudgeServer(prefer=lambda first, second: "first", logprobs=False) as server:
        pairs = judge_of(server, tmp_path).judge(["q", "r"], [LONG, SHORT], [SHORT, LONG])
    assert [p.score for p in pairs] == [0.5, 0.5]


def test_arena_hard_reads_the_verdict_label(tmp_path):
    with JudgeServer() as server:
        pairs = judge_of(server, tmp_path, template="arena_hard", max_tokens=64).judge(
            ["q", "q", "q"], [LONG, SHORT, "same"], [SHORT, LONG, "same"])
        assert all(b["max_tokens"] == 64 and "logprobs" not in b for b in server.bodies)
        assert "[[A>>B]]" in server.bodies[0]["messages"][0]["content"]  # the labels are explained
    assert [p.score for p in pairs] == [1.0, 0.0, 0.5]
    assert pairs[0].labels == "A>B / B>A"


def test_a_comparison_met_twice_is_asked_once(tmp_path):
    with JudgeServer() as server:
        pairs = judge_of(server, tmp_path).judge(["q", "q"], [LONG, SHORT], [SHORT, LONG])
        assert server.requests == 2  # (q, LONG, SHORT) and (q, SHORT, LONG), each in both pairs
    assert [p.score for p in pairs] == [pytest.approx(0.9), pytest.approx(0.1)]


def test_a_rerun_asks_the_server_nothing(tmp_path):
    args = (["q", "r"], [LONG, SHORT], [SHORT, LONG])
    with JudgeServer() as server:
        first = judge_of(server, tmp_path).judge(*args)
        asked = server.requests
        again = judge_of(server, tmp_path)
        second = again.judge(*args)
        assert asked == 4 and server.requests == asked and again.requests == 0
        assert [p.score for p in second] == [p.score for p in first]
        assert second[0].policy_first.tokens == first[0].policy_first.tokens > 0  # the verdict's cost is kept
        judge_of(server, tmp_path, template="arena_hard").judge(*args)  # another template is another verdict
        assert server.requests == asked + 4


def test_failed_requests_are_retried_with_backoff(tmp_path):
    waits = []
    with JudgeServer(fail_first=2) as server:
        judge = PairwiseJudge(config(server, retries=3, backoff=0.5, concurrency=1), cache=VerdictCache(tmp_path),
                              sleep=waits.append)
        pairs = judge.judge(["q"], [LONG], [SHORT])
    assert waits == [0.5, 1.0]  # doubled each time
    assert pairs[0].score == pytest.approx(0.9)


def test_a_judge_that_keeps_failing_fails_the_run(tmp_path):
    with JudgeServer(fail_first=10) as server:
        with pytest.raises(JudgeFailed, match="did not answer after 2 tries"):
            judge_of(server, tmp_path, retries=1, concurrency=1).judge(["q"], [LONG], [SHORT])


def test_a_request_past_its_timeout_counts_as_failed(tmp_path):
    with JudgeServer(delay=1.5) as server:
        started = time.perf_counter()
        with pytest.raises(JudgeFailed, match="Timeout"):
            judge_of(server, tmp_path, retries=0, timeout=0.2, concurrency=1).judge(["q"], [LONG], [SHORT])
        assert time.perf_counter() - started < 1.4


def test_requests_run_concurrently_up_to_the_limit(tmp_path):
    with JudgeServer(delay=0.2) as server:
        judge_of(server, tmp_path, concurrency=3).judge([f"q{i}" for i in range(6)], [LONG] * 6, [SHORT] * 6)
    assert 2 <= server.most_in_flight <= 3


# ----------------------------------------------------------------------------- samples and metrics


def frame_of(completions, baselines, rewards, baseline_rewards) -> pd.DataFrame:
    """A per-sample table of two prompts × two samples (what sample_frame builds)."""
    rows = []
    for k, (c, b, r, br) in enumerate(zip(completions, baselines, rewards, baseline_rewards)):
        rows.append({"prompt_id": k // 2, "sample": k % 2, "prompt": f"prompt {k // 2}", "messages": None,
                     "completion": c, "completion_tokens": len(c.split()), "truncated": False, "reward": r,
                     "baseline_completion": b, "baseline_reward": br, "outcome": float(r > br),
                     "policy_logp": 0.0, "reference_logp": 0.0, "token_kl": 0.0, "token_logps": np.zeros(1),
                     "entropy": 0.0, "chosen_completion": None, "chosen_reward": math.nan,
                     "chosen_outcome": math.nan, "reward_model": "gold", **NO_JUDGE})
    return pd.DataFrame(rows)


def test_judge_columns_and_the_llm_judge_metrics(tmp_path):
    frame = frame_of([LONG, SHORT, LONG, LONG], [SHORT, LONG, SHORT, SHORT], [1.0, 1.0, 0.0, 2.0], [0.0, 0.0, 1.0, 1.0])
    with JudgeServer(logprobs=False) as server:
        judged = judge_columns(frame, judged_prompts(frame), judge_of(server, tmp_path))
    assert list(judged["judge_outcome"]) == [1.0, 0.0, 1.0, 1.0]
    assert list(judged["judge_verdicts"]) == ["m / M", "M / m", "m / M", "m / M"]
    assert set(judged["judge"]) == {"judge-7b (alpaca_eval)"} and set(judged["judge_baseline"]) == {"start"}
    assert (judged["judge_tokens"] > 0).all()
    metrics = llm_judge(scored_from_samples(judged, bootstrap=200, seed=0))
    assert metrics["judge_win_rate"].value == pytest.approx(0.75)
    assert metrics["judge_win_rate"].ci_low <= 0.75 <= metrics["judge_win_rate"].ci_high
    # the reward model (gold here) prefers the policy on samples 0, 1 and 3: the judge agrees on 0 and 3
    assert metrics["judge_reward_agreement"].value == pytest.approx(0.5)
    assert metrics["judge_tokens"].value == judged["judge_tokens"].sum()
    assert metrics["judge_seconds"].value == pytest.approx(judged["judge_seconds"].sum())
    assert llm_judge(scored_from_samples(frame, bootstrap=200, seed=0)) == {}  # no judge, no rows


def test_a_file_of_reference_outputs_is_the_baseline(tmp_path):
    references = tmp_path / "refs.jsonl"
    references.write_text('{"instruction": "prompt 0", "output": "short"}\n')
    frame = frame_of([LONG, SHORT, LONG, LONG], [SHORT] * 4, [0.0] * 4, [0.0] * 4)
    with JudgeServer(logprobs=False) as server:
        judged = judge_columns(frame, judged_prompts(frame), judge_of(server, tmp_path / "c", baseline=str(references)))
    assert list(judged["judge_outcome"][:2]) == [1.0, 0.5]  # "short" against itself ties
    assert judged["judge_outcome"][2:].isna().all()  # prompt 1 has no reference output
    assert "judge_reward_agreement" not in llm_judge(scored_from_samples(judged, bootstrap=50, seed=0))


# ----------------------------------------------------------------------------- bad input


def test_a_server_that_does_not_answer_is_one_line():
    with JudgeServer() as server:
        url = server.base_url
    with pytest.raises(HarnessError, match=r"evaluate.judge.base_url = .* does not answer"):
        check_judge_server(JudgeConfig(model="judge-7b", base_url=url, timeout=2.0), where)


def test_a_model_the_server_does_not_serve_gets_a_did_you_mean():
    with JudgeServer(models=("judge-7b", "other")) as server:
        check_judge_server(JudgeConfig(model="judge-7b", base_url=server.base_url), where)
        with pytest.raises(HarnessError, match=r"'judge-7c' is not served .* \(did you mean 'judge-7b'\?\)"):
            check_judge_server(JudgeConfig(model="judge-7c", base_url=server.base_url), where)


def test_an_unknown_template_or_a_missing_file_is_refused(tmp_path):
    suite = tmp_path / "s.yaml"
    suite.write_text("methods: [dpo]\nevaluate: {judge: {model: j, base_url: 'http://x/v1', template: arena-hard}}\n")
    with pytest.raises(HarnessError, match=r"evaluate.judge.template .*did you mean 'arena_hard'"):
        load_suite(suite)
    suite.write_text("methods: [dpo]\nevaluate: {judge: {model: j}}\n")
    with pytest.raises(HarnessError, match="needs both model and base_url"):
        load_suite(suite)
    with pytest.raises(HarnessError, match="neither start nor chosen nor a file"):
        check_judge_settings(JudgeConfig(model="j", base_url="http://x/v1", baseline="refs.jsonl"), where)
    bad = tmp_path / "refs.jsonl"
    bad.write_text('{"prompt": "p"}\n')
    with pytest.raises(HarnessError, match="needs an `instruction`"):
        check_judge_settings(JudgeConfig(model="j", base_url="http://x/v1", baseline=str(bad)), where)


def test_editing_the_reference_outputs_makes_new_runs(tmp_path):
    """The reference file's content is part of a judged run's identity, not only its path."""
    import yaml

    from harness.plan import plan_suite
    from harness.suite import load_suite
    from tests.conftest import tiny_suite_text

    references = tmp_path / "refs.jsonl"
    text = yaml.safe_load(tiny_suite_text("judged", methods="[dpo]"))
    text["evaluate"]["judge"] = {"model": "j", "base_url": "http://localhost:1/v1", "baseline": str(references)}
    (tmp_path / "judged.yaml").write_text(yaml.safe_dump(text))

    def run_ids(outputs: str) -> set[str]:
        references.write_text(outputs)
        return {s.run_id for s in plan_suite(load_suite(tmp_path / "judged.yaml"))}

    first = run_ids('{"instruction": "a", "output": "b"}\n')
    assert run_ids('{"instruction": "a", "output": "b"}\n') == first
    assert run_ids('{"instruction": "a", "output": "c"}\n').isdisjoint(first)
