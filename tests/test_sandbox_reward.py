"""The sandbox's grammar, gold reward (sentiment, length, fluency) and Bradley-Terry judge."""

from __future__ import annotations

import math
import random

import pytest

from harness.sandbox import grammar
from harness.sandbox.reward import BradleyTerryJudge, GoldReward
from harness.data.tokenize import render_turns


def test_the_grammar_is_deterministic_and_its_words_are_known():
    a, b = random.Random(3), random.Random(3)
    assert [grammar.document(a) for _ in range(20)] == [grammar.document(b) for _ in range(20)]
    assert grammar.session(random.Random(5)) == grammar.session(random.Random(5))
    known = set(grammar.vocabulary())
    rng = random.Random(0)
    for _ in range(300):
        turns = grammar.session(rng)
        assert [t["role"] for t in turns] == ["user", "agent"] * (len(turns) // 2)
        text = " ".join([grammar.document(rng), *grammar.demonstration(rng), render_turns(turns)])
        assert set(text.split()) <= known
    assert len(known) < 4096


def test_the_shipped_task_files_still_match_the_grammar():
    """document() and demonstration() draw what they drew before sessions were added (the lm-eval
    task files in suites/tasks/ are made from them with fixed seeds)."""
    first = "the story looked excellent and everyone laughed . i think the camera looked simple ."
    assert grammar.document(random.Random(20240602)) == first  # sandbox_grammar_ppl.jsonl's first row
    assert grammar.demonstration(random.Random(0)) == ("i think the plot felt", "big but the hotel is fantastic .")


def test_legal_bigrams_are_saturated():
    """A second, independent sample of the grammar twice as large finds no new word pair, so the
    fluency term's notion of "a pair the grammar produces" is the grammar's, not the sample's."""
    assert grammar._bigrams_of_sample(40_000, seed=99) <= grammar.legal_bigrams()


@pytest.mark.parametrize(("text", "expected"), [
    ("", 0.0),
    ("the movie was great .", 0.0),
    ("great", 0.0),
    ("blorp", 1.0),  # an unknown word
    ("the the movie was great .", 1 / 5),  # a stutter: "the the"
    ("the movie was the great .", 2 / 5),  # "was the", "the great"
    ("good and good and good .", 2 / 5),  # a loop: "good and" / "and good" repeat two words back
])
def test_disfluency_by_hand(text, expected):
    assert grammar.disfluency(text) == pytest.approx(expected)


def test_corrupt_makes_a_document_disfluent():
    rng = random.Random(1)
    docs = [grammar.document(rng) for _ in range(200)]
    corrupted = [grammar.corrupt(d, rng) for d in docs]
    changed = [c for c, d in zip(corrupted, docs) if c != d]
    assert len(changed) > 150
    assert sum(grammar.disfluency(c) > 0 for c in changed) / len(changed) > 0.7


def test_gold_reward_terms():
    """VADER compound, plus length_weight per word, minus fluency_weight times disfluency; the
    default is VADER alone, and GoldReward(length_weight) still means what it meant."""
    plain = GoldReward()
    text = "the the movie was great ."
    vader = plain(text)
    assert 0.5 < vader < 1.0
    assert GoldReward(0.01)(text) == pytest.approx(vader + 0.06)
    assert GoldReward(fluency_weight=1.0)(text) == pytest.approx(vader - 0.2)
    assert GoldReward(0.01, 0.5)(text) == pytest.approx(vader + 0.06 - 0.1)
    assert plain("the movie was awful .") < 0 < plain("the movie was wonderful .")
    assert plain.many(["good .", "bad ."]) == [plain("good ."), plain("bad .")]


def test_judge_is_bradley_terry_with_temperature():
    judge = BradleyTerryJudge(temperature=0.5)
    assert judge.prefer_first(0.3, 0.3) == 0.5
    assert judge.prefer_first(1.0, 0.0) == pytest.approx(1 / (1 + math.exp(-2.0)))
    assert judge.prefer_first(100.0, -100.0) == pytest.approx(1.0)  # clamped, no overflow
    rng = random.Random(0)
    labels = [judge.label(0.25, 0.0, rng)[0] for _ in range(4000)]
    assert sum(labels) / len(labels) == pytest.approx(1 / (1 + math.exp(-0.5)), abs=0.03)


def test_judge_flips_at_its_rate_and_records_them():
    judge = BradleyTerryJudge(temperature=1e-3, flip_rate=0.2)
    rng = random.Random(0)
    draws = [judge.label(1.0, 0.0, rng) for _ in range(4000)]
    flipped = [f for _, f in draws]
    assert sum(flipped) / len(draws) == pytest.approx(0.2, abs=0.03)
    assert all(chosen != f for chosen, f in draws)  # a flip is exactly what made the label wrong
