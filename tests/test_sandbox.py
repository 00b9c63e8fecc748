"""The sandbox world: every data shape with its columns, determinism and caching, the recorded
flip rate, stages ordered by the SFT margin, session segment masks, and `harness sandbox show`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main
from harness.data.jsonl import read_jsonl
from harness.sandbox.world import DATA_FILES, SandboxConfig, load_or_build_sandbox
from harness.sandbox.stages import implicit_margins
from harness.data.tokenize import encode_turns
from harness.errors import HarnessError
from tests.conftest import TINY_SANDBOX

# A larger tiny build: the same language model (only data settings differ), more pairs.
FLIP_BUILD = {**TINY_SANDBOX, "train_pairs": 400, "flip_rate": 0.25, "kto_desirable_ratio": 3.0,
              "eval_pairs": 4, "sessions": 8, "eval_sessions": 0}


@pytest.fixture(scope="module")
def tiny(harness_cache):
    sandbox, _ = load_or_build_sandbox(SandboxConfig.from_dict(TINY_SANDBOX, "test"), verbose=False)
    return sandbox


@pytest.fixture(scope="module")
def tokenizer(tiny):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny.sft_dir)


def test_every_data_shape_is_written_with_its_columns(tiny):
    counts = {"pairs_train": 48, "pairs_eval": 8, "unpaired_train": 32, "sessions_train": 16,
              "sessions_eval": 4, "eval_prompts": 8}
    for name, columns in DATA_FILES.items():
        rows = read_jsonl(tiny.data(name))
        assert rows, name
        assert all(list(r) == list(columns) for r in rows), (name, list(rows[0]))
        if name in counts:
            assert len(rows) == counts[name], name
    for row in read_jsonl(tiny.data("pairs_train")):
        assert (row["score_chosen"], row["score_rejected"]) == (row["chosen_reward"], row["rejected_reward"])
        assert isinstance(row["label_flipped"], bool) and row["stage"] in (0, 1)
    unpaired = read_jsonl(tiny.data("unpaired_train"))
    assert sum(r["label"] for r in unpaired) == 16  # kto_desirable_ratio 1.0: equal counts
    for row in read_jsonl(tiny.data("sessions_train")):
        assert row["segment_length"] == len(row["chosen_turns"]) == len(row["rejected_turns"])
        assert [t["role"] for t in row["chosen_turns"]] == [t["role"] for t in row["rejected_turns"]]
        assert row["chosen_turns"][0]["role"] == "agent" and row["prompt"].startswith("user : ")
        assert row["first_bad_turn"] == len(row["prompt"].split(" | "))  # the turns before it
    summary = tiny.summary()
    assert set(summary["data"]) == set(DATA_FILES)
    assert summary["vocab_size"] <= 4096 and summary["parameters"] > 0


def test_the_build_is_cached_and_deterministic(tiny, monkeypatch, tmp_path):
    config = SandboxConfig.from_dict(TINY_SANDBOX, "test")
    again, built = load_or_build_sandbox(config, verbose=False)
    assert not built and again.root == tiny.root
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))  # a cold cache: everything built again
    fresh, built = load_or_build_sandbox(config, verbose=False)
    assert built and fresh.root != tiny.root
    for name in DATA_FILES:
        assert fresh.data(name).read_bytes() == tiny.data(name).read_bytes(), name
    assert (fresh.sft_dir / "model.safetensors").read_bytes() == (tiny.sft_dir / "model.safetensors").read_bytes()


def test_a_changed_setting_is_a_new_world_on_the_same_language_model():
    base = SandboxConfig.from_dict(TINY_SANDBOX, "test")
    data_only = SandboxConfig.from_dict({**TINY_SANDBOX, "flip_rate": 0.1}, "test")
    lm_too = SandboxConfig.from_dict({**TINY_SANDBOX, "seed": 1}, "test")
    assert data_only.key() != base.key() and data_only.lm_key() == base.lm_key()
    assert lm_too.key() != base.key() and lm_too.lm_key() != base.lm_key()


def test_bad_settings_are_one_line_errors():
    with pytest.raises(HarnessError, match=r"suite.yaml: sandbox.flip_rate = 0.7 must be a probability below 0.5"):
        SandboxConfig.from_dict({"flip_rate": 0.7}, "suite.yaml")
    with pytest.raises(HarnessError, match=r"unknown key sandbox.flip_rat \(did you mean 'flip_rate'\?\)"):
        SandboxConfig.from_dict({"flip_rat": 0.1}, "suite.yaml")


@pytest.fixture(scope="module")
def flip_build(tiny):
    sandbox, _ = load_or_build_sandbox(SandboxConfig.from_dict(FLIP_BUILD, "test"), verbose=False)
    return sandbox


def test_the_flip_rate_is_recorded_and_reused_language_model(flip_build):
    pairs = read_jsonl(flip_build.data("pairs_train"))
    flipped = sum(r["label_flipped"] for r in pairs) / len(pairs)
    assert flipped == pytest.approx(0.25, abs=0.065)  # 3 binomial sd at n = 400
    summary = flip_build.summary()
    assert summary["data"]["pairs_train"]["flipped"] == pytest.approx(flipped, abs=1e-4)
    assert "language model (cached)" in summary["seconds"]
    unpaired = read_jsonl(flip_build.data("unpaired_train"))
    assert sum(r["label"] for r in unpaired) == 24 and len(unpaired) == 32  # 3 : 1


def test_stages_are_ordered_by_the_sft_margin(tiny, tokenizer):
    from transformers import AutoModelForCausalLM

    pairs = read_jsonl(tiny.data("pairs_train"))
    easy = [r["sft_margin"] for r in pairs if r["stage"] == 0]
    hard = [r["sft_margin"] for r in pairs if r["stage"] == 1]
    assert len(easy) == len(hard) == 24 and min(easy) >= max(hard)
    model = AutoModelForCausalLM.from_pretrained(tiny.sft_dir)
    config = SandboxConfig.from_dict(TINY_SANDBOX, "test")
    margins = implicit_margins(model, tokenizer, pairs[:8], config.max_length)
    assert [round(m, 4) for m in margins] == pytest.approx([r["sft_margin"] for r in pairs[:8]], abs=2e-3)


def test_session_segment_masks_cover_agent_tokens_only(tiny, tokenizer):
    """Rebuild the mask word by word (the tokenizer is word-level): a word of the completion is
    in the segment exactly when it is an agent turn's content, or the separator or EOS that
    ends an agent turn."""
    for row in read_jsonl(tiny.data("sessions_train")) + read_jsonl(tiny.data("sessions_eval")):
        for side in ("chosen_turns", "rejected_turns"):
            turns = row[side]
            encoded, mask = encode_turns(tokenizer, row["prompt"], turns, max_length=512)
            expected = [False] * (1 + len(row["prompt"].split()))
            for i, turn in enumerate(turns):
                expected += [i > 0 and turns[i - 1]["role"] == "agent"]  # the separator before it
                expected += [False, False]  # "role :"
                expected += [turn["role"] == "agent"] * len(turn["content"].split())
            expected += [turns[-1]["role"] == "agent"]  # EOS
            assert mask == expected
            assert all(c for c, m in zip(encoded.completion_mask, mask) if m)


def test_sandbox_show_prints_text_and_json(tiny, tiny_suite, capsys):
    assert main(["sandbox", "show", str(tiny_suite)]) == 0
    text = capsys.readouterr().out
    for expected in ("parameters", "SFT samples' gold reward", "gold agreement", "pairs_train.jsonl: 48 rows",
                     "unpaired_train.jsonl: 32 rows", "sessions_train.jsonl: 16 rows", "stages (easy to hard"):
        assert expected in text, expected
    assert main(["sandbox", "show", str(tiny_suite), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert Path(summary["root"]) == tiny.root and summary["data"]["pairs_train"]["rows"] == 48


def test_sandbox_show_of_an_unbuilt_world_is_an_error(tmp_path, capsys, harness_cache):
    suite = tmp_path / "other.yaml"
    suite.write_text(json.dumps({"name": "other", "sandbox": {**TINY_SANDBOX, "seed": 12345},
                                 "methods": ["dpo"], "seeds": [0], "budget": {"kind": "steps", "value": 1}}))
    assert main(["sandbox", "show", str(suite)]) == 2
    assert "is not built; run `harness sandbox build`" in capsys.readouterr().err
