"""Loading real data (harness.data.loading): TRL formats from local files, offline Hub ids,
invalid rows and truncation counts. Every file is written by the test; nothing is downloaded."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness.data.loading import load_rows, read_records
from harness.sandbox.lm import fit_tokenizer
from harness.errors import HarnessError

# A tiny chat template in the Zephyr style, over a word-level tokenizer that knows its markers.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} </s> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)
WORDS = "<|user|> <|assistant|> <|system|> </s> the sky is blue green red what color ? . a b c d e f g h"

PAIRS = [
    {"prompt": "what color is the sky ?", "chosen": "blue .", "rejected": "green .", "score_chosen": 9.0, "score_rejected": 2.0},
    {"prompt": "the sky is", "chosen": "blue .", "rejected": "red .", "score_chosen": 8.0, "score_rejected": 1.0},
]


@pytest.fixture(scope="module")
def tokenizer():
    tok = fit_tokenizer([WORDS])
    tok.chat_template = CHAT_TEMPLATE
    return tok


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def messages(*pairs: tuple[str, str]) -> list[dict]:
    return [{"role": role, "content": content} for role, content in pairs]


# ---------------------------------------------------------------------------------------------
# Sources


def test_jsonl_json_parquet_and_folders_give_the_same_rows(tmp_path):
    jsonl = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    as_list = tmp_path / "list.json"
    as_list.write_text(json.dumps(PAIRS))
    as_columns = tmp_path / "columns.json"
    as_columns.write_text(json.dumps({k: [r[k] for r in PAIRS] for k in PAIRS[0]}))
    parquet = tmp_path / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist(PAIRS), parquet)
    folder = tmp_path / "dataset" / "data"
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(PAIRS[:1]), folder / "train-00000-of-00002.parquet")
    write_jsonl(folder / "train-00001-of-00002.jsonl", PAIRS[1:])
    write_jsonl(folder / "test.jsonl", [{"prompt": "x", "chosen": "a", "rejected": "b"}])
    expected = load_rows(str(jsonl), "pairs").rows
    assert expected == [{k: r[k] for k in ("prompt", "chosen", "rejected", "score_chosen", "score_rejected")} for r in PAIRS]
    for source in (as_list, as_columns, parquet, tmp_path / "dataset"):
        assert load_rows(str(source), "pairs").rows == expected, source
    assert len(load_rows(str(tmp_path / "dataset"), "pairs", split="test").rows) == 1
    with pytest.raises(HarnessError, match=r"no files for split 'validation' \(splits found: train, test\)"):
        load_rows(str(tmp_path / "dataset"), "pairs", split="validation")


def test_a_folder_without_split_names_is_one_split(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", PAIRS[:1])
    write_jsonl(tmp_path / "b.jsonl", PAIRS[1:])
    assert len(load_rows(str(tmp_path), "pairs", split="train").rows) == 2


def test_bad_sources_are_one_line_errors(tmp_path):
    with pytest.raises(HarnessError, match="no such file or folder"):
        load_rows(str(tmp_path / "missing.jsonl"), "pairs")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a"}\nnot json\n')
    with pytest.raises(HarnessError, match="line 2 is not JSON"):
        load_rows(str(tmp_path / "bad.jsonl"), "pairs")
    (tmp_path / "data.csv").write_text("prompt,chosen\n")
    with pytest.raises(HarnessError, match="unsupported file type '.csv'"):
        load_rows(str(tmp_path / "data.csv"), "pairs")
    with pytest.raises(HarnessError, match="unknown data shape 'triples'"):
        load_rows(str(tmp_path / "bad.jsonl"), "triples")
    with pytest.raises(HarnessError, match="on_invalid must be one of drop, error"):
        load_rows(str(tmp_path / "bad.jsonl"), "pairs", on_invalid="ignore")


def test_an_uncached_hub_dataset_offline_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    with pytest.raises(HarnessError) as err:
        load_rows("nobody-here/no-such-preferences", "pairs")
    message = str(err.value)
    assert "'nobody-here/no-such-preferences'" in message and "HF_HUB_OFFLINE=1" in message
    assert "\n" not in message


def test_sandbox_files_by_name(tmp_path):
    (tmp_path / "data").mkdir()
    write_jsonl(tmp_path / "data" / "pairs_train.jsonl", PAIRS)
    assert len(load_rows("sandbox:pairs_train", "pairs", sandbox=tmp_path).rows) == 2
    with pytest.raises(HarnessError, match="no such sandbox file"):
        load_rows("sandbox:pairs_test", "pairs", sandbox=tmp_path)
    with pytest.raises(HarnessError, match="needs the built sandbox"):
        read_records("sandbox:pairs_train")


# ---------------------------------------------------------------------------------------------
# Formats


def test_missing_columns_name_the_file_the_column_and_the_formats(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a", "chosen": "b"}])
    with pytest.raises(HarnessError) as err:
        load_rows(str(path), "pairs")
    message = str(err.value)
    assert str(path) in message and "'rejected'" in message and "implicit prompt" in message
    with pytest.raises(HarnessError, match="unpaired data needs a 'label' column"):
        load_rows(str(write_jsonl(tmp_path / "u.jsonl", [{"prompt": "a", "completion": "b"}])), "unpaired")
    with pytest.raises(HarnessError, match="sft data needs a 'prompt' column.*messages"):
        load_rows(str(write_jsonl(tmp_path / "s.jsonl", [{"question": "a"}])), "sft")
    with pytest.raises(HarnessError, match="row 1 has no 'rejected'"):
        load_rows(str(write_jsonl(tmp_path / "r.jsonl", [PAIRS[0], {"prompt": "a", "chosen": "b"}])), "pairs")


def test_implicit_prompt_standard(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"chosen": "the sky is blue .", "rejected": "the sky is bright ."}])
    loaded = load_rows(str(path), "pairs")
    assert loaded.rows == [{"prompt": "the sky is", "chosen": " blue .", "rejected": " bright ."}]
    assert loaded.stats.prompt == "implicit" and loaded.stats.format == "standard"


def test_conversational_pairs_use_the_chat_template_as_trl_does(tmp_path, tokenizer):
    explicit = {"prompt": messages(("user", "what color is the sky ?")),
                "chosen": messages(("assistant", "blue .")), "rejected": messages(("assistant", "green ."))}
    implicit = {"chosen": explicit["prompt"] + explicit["chosen"], "rejected": explicit["prompt"] + explicit["rejected"]}
    """The rows keep the conversation (the prompt's messages, each reply's content); the policy's
    rendering of them (harness.data.tokenize) is TRL's own."""
    from harness.data.tokenize import assistant_turn, generation_prompt

    for row, form in ((explicit, "explicit"), (implicit, "implicit")):
        loaded = load_rows(str(write_jsonl(tmp_path / f"{form}.jsonl", [row])), "pairs", tokenizer=tokenizer)
        assert loaded.rows == [{"prompt": explicit["prompt"], "chosen": "blue .", "rejected": "green ."}]
        assert loaded.stats.format == "conversational" and loaded.stats.prompt == form
    from trl.data_utils import apply_chat_template, extract_prompt

    trl = apply_chat_template(extract_prompt(implicit), tokenizer)
    assert trl == {"prompt": generation_prompt(tokenizer, explicit["prompt"]),
                   "chosen": assistant_turn(tokenizer, explicit["prompt"], "blue ."),
                   "rejected": assistant_turn(tokenizer, explicit["prompt"], "green .")}


def test_conversational_data_without_a_chat_template_is_an_error(tmp_path):
    row = {"prompt": messages(("user", "a")), "completion": messages(("assistant", "b")), "label": True}
    with pytest.raises(HarnessError, match="needs a tokenizer with a chat template"):
        load_rows(str(write_jsonl(tmp_path / "u.jsonl", [row])), "unpaired", tokenizer=fit_tokenizer(["a b"]))


def test_unpaired_standard_conversational_and_from_pairs(tmp_path, tokenizer):
    rows = [{"prompt": "the sky is", "completion": "blue .", "label": True},
            {"prompt": "the sky is", "completion": "red .", "label": 0, "score": -1.5}]
    loaded = load_rows(str(write_jsonl(tmp_path / "u.jsonl", rows)), "unpaired")
    assert loaded.rows == [{"prompt": "the sky is", "completion": "blue .", "label": True},
                           {"prompt": "the sky is", "completion": "red .", "label": False, "score": -1.5}]
    conversational = [{"prompt": messages(("user", "the sky is")), "completion": messages(("assistant", "blue .")),
                       "label": True}]
    loaded = load_rows(str(write_jsonl(tmp_path / "c.jsonl", conversational)), "unpaired", tokenizer=tokenizer)
    assert loaded.rows == [{"prompt": messages(("user", "the sky is")), "completion": "blue .", "label": True}]
    unpaired = load_rows(str(write_jsonl(tmp_path / "p.jsonl", PAIRS)), "unpaired")
    assert unpaired.stats.converted == "pairs -> unpaired" and len(unpaired.rows) == 4
    assert unpaired.rows[:2] == [
        {"prompt": PAIRS[0]["prompt"], "completion": "blue .", "label": True, "score": 9.0},
        {"prompt": PAIRS[0]["prompt"], "completion": "green .", "label": False, "score": 2.0},
    ]
    with pytest.raises(HarnessError, match="label must be a bool"):
        load_rows(str(write_jsonl(tmp_path / "l.jsonl", [{"prompt": "a", "completion": "b", "label": "maybe"}])), "unpaired")


def test_sft_prompt_completion_messages_and_text(tmp_path, tokenizer):
    assert load_rows(str(write_jsonl(tmp_path / "a.jsonl", [{"prompt": "a", "completion": "b"}])), "sft").rows == [
        {"prompt": "a", "completion": "b"}]
    chat = [{"messages": messages(("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d"))}]
    loaded = load_rows(str(write_jsonl(tmp_path / "m.jsonl", chat)), "sft", tokenizer=tokenizer)
    assert loaded.rows == [{"prompt": chat[0]["messages"][:3], "completion": "d"}]
    text = load_rows(str(write_jsonl(tmp_path / "t.jsonl", [{"text": "a b c"}])), "sft")
    assert text.rows == [{"prompt": "", "completion": "a b c"}] and text.stats.prompt == "none"


def test_sessions_pass_through_with_their_columns(tmp_path):
    row = {"prompt": "user : a ?", "chosen_turns": messages(("agent", "b ."), ("user", "c ?"), ("agent", "d .")),
           "rejected_turns": messages(("agent", "e ."), ("user", "c ?"), ("agent", "f .")), "first_bad_turn": 1}
    loaded = load_rows(str(write_jsonl(tmp_path / "s.jsonl", [row])), "sessions")
    assert loaded.rows == [{**row, "segment_length": 3}]
    bad = {**row, "chosen_turns": "b ."}
    with pytest.raises(HarnessError, match="row 0: 'chosen_turns' must be a list of"):
        load_rows(str(write_jsonl(tmp_path / "b.jsonl", [bad])), "sessions", on_invalid="error")


# ---------------------------------------------------------------------------------------------
# Invalid rows and truncation


def test_empty_completions_are_dropped_with_a_warning_or_rejected(tmp_path):
    rows = PAIRS + [{"prompt": "the sky is", "chosen": "  ", "rejected": "red ."}]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    with pytest.warns(UserWarning, match=r"dropped 1 of 3 rows \(1 empty completion\)"):
        loaded = load_rows(str(path), "pairs")
    assert len(loaded.rows) == 2 and loaded.stats.dropped == {"empty_completion": 1}
    assert loaded.stats.rows_read == 3 and loaded.stats.rows == 2
    with pytest.raises(HarnessError, match="1 invalid rows .*row 2: empty completion.*on_invalid: drop"):
        load_rows(str(path), "pairs", on_invalid="error")


def test_long_prompts_and_truncation_are_counted(tmp_path, tokenizer):
    """max_length 8. Prompt tokens are BOS + words; a completion is its words + EOS.
    row 0: prompt 1+5=6, chosen 2+1=3 > room 2 (cut), rejected 3 > 2 (cut);
    row 1: prompt 1+3=4, both completions 3 <= room 4;
    row 2: prompt 1+8=9 >= 8 leaves no room: invalid; row 3: prompt 5 > max_prompt_length 4 when set."""
    rows = [
        {"prompt": "what color is the sky", "chosen": "blue .", "rejected": "red ."},
        {"prompt": "the sky is", "chosen": "blue .", "rejected": "red ."},
        {"prompt": "a b c d e f g h", "chosen": "blue .", "rejected": "red ."},
    ]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    with pytest.warns(UserWarning, match="1 prompt too long"):
        loaded = load_rows(str(path), "pairs", tokenizer=tokenizer, max_length=8)
    assert [r["prompt"] for r in loaded.rows] == ["what color is the sky", "the sky is"]
    assert loaded.stats.truncated_rows == 1 and loaded.stats.truncated_completions == 2
    assert loaded.stats.dropped == {"prompt_too_long": 1} and loaded.stats.max_length == 8
    with pytest.warns(UserWarning, match="2 prompt too long"):
        capped = load_rows(str(path), "pairs", tokenizer=tokenizer, max_prompt_length=4)
    assert [r["prompt"] for r in capped.rows] == ["the sky is"]
    with pytest.raises(HarnessError, match="1 invalid rows .*prompt too long"):
        load_rows(str(path), "pairs", tokenizer=tokenizer, max_length=8, on_invalid="error")
    with pytest.raises(HarnessError, match="needs the tokenizer"):
        load_rows(str(path), "pairs", max_length=8)


def test_session_truncation_is_counted(tmp_path, tokenizer):
    """Prompt: BOS + 7 words = 8 tokens. Chosen: "| agent : a b c" + EOS = 7 tokens, 15 in all,
    over 13; rejected: "| agent : d" + EOS = 5, 13 in all, which fits."""
    row = {"prompt": "a b c d e f g", "chosen_turns": messages(("agent", "a b c")),
           "rejected_turns": messages(("agent", "d"))}
    loaded = load_rows(str(write_jsonl(tmp_path / "s.jsonl", [row])), "sessions", tokenizer=tokenizer, max_length=13)
    assert loaded.stats.truncated_completions == 1 and loaded.stats.truncated_rows == 1


def test_hub_ids_go_through_load_dataset_with_the_split(monkeypatch):
    """The Hub path, without the network: load_dataset is replaced by a stand-in that returns a
    datasets.Dataset, as a cached Hub dataset would be."""
    import datasets

    calls = []

    def fake_load_dataset(name, split=None, **kwargs):
        calls.append((name, split))
        return datasets.Dataset.from_list(PAIRS)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    loaded = load_rows("someone/preferences", "pairs", split="test")
    assert calls == [("someone/preferences", "test")]
    assert [r["chosen"] for r in loaded.rows] == ["blue .", "blue ."] and loaded.stats.source == "someone/preferences"


def test_a_row_mixing_strings_and_messages_is_an_error(tmp_path, tokenizer):
    row = {"prompt": "the sky is", "completion": messages(("assistant", "blue .")), "label": True}
    with pytest.raises(HarnessError, match="row 0: 'prompt' is a str while 'completion' is a list of messages"):
        load_rows(str(write_jsonl(tmp_path / "u.jsonl", [row])), "unpaired", tokenizer=tokenizer, on_invalid="error")


def test_malformed_conversations_are_dropped_and_counted(tmp_path, tokenizer):
    """issue 31: a message without a role or with one templates do not know, null content, an
    empty prompt, a string prompt with message completions: each refused with the row and the field, or dropped and counted."""
    good = {"prompt": messages(("user", "the sky is")), "completion": messages(("assistant", "blue .")), "label": True}
    bad = [{**good, "prompt": [{"content": "a"}]}, {**good, "completion": [{"role": "assistant", "content": None}]},
           {**good, "prompt": []}, {**good, "prompt": "the sky is"},
           {**good, "completion": messages(("assistant", "a"), ("user", "b"))},
           {**good, "prompt": messages(("usr", "the sky is"))}]
    path = write_jsonl(tmp_path / "u.jsonl", [good, *bad])
    with pytest.warns(UserWarning, match=r"dropped 6 of 7 rows \(6 malformed\)"):
        loaded = load_rows(str(path), "unpaired", tokenizer=tokenizer)
    assert loaded.rows == [{"prompt": good["prompt"], "completion": "blue .", "label": True}]
    assert loaded.stats.dropped == {"malformed": 6} and loaded.stats.rows_read == 7
    expected = ["row 1: 'prompt': message 0 has no 'role'", "row 1: 'completion': message 0 (assistant) has content None",
                "row 1: 'prompt' is an empty list of messages", "row 1: 'prompt' is a str while 'completion' is a list",
                "row 1: 'completion' must be one assistant message",
                "row 1: 'prompt': message 0 has role 'usr', which chat templates do not know (did you mean 'user'?)"]
    for i, text in enumerate(expected):
        rows = [good, bad[i]]
        with pytest.raises(HarnessError, match=re.escape(text)):
            load_rows(str(write_jsonl(tmp_path / f"b{i}.jsonl", rows)), "unpaired", tokenizer=tokenizer, on_invalid="error")
    mixed = [good, {"prompt": "the sky is", "completion": "blue .", "label": True}]
    with pytest.raises(HarnessError, match="rows mix strings and message lists"):
        load_rows(str(write_jsonl(tmp_path / "m.jsonl", mixed)), "unpaired", tokenizer=tokenizer)
