"""Encoding: prompt/completion special tokens, session rendering, and encode_turns' segment mask."""

from __future__ import annotations

import pytest

from harness.sandbox.lm import fit_tokenizer
from harness.data.tokenize import (
    TURN_SEPARATOR,
    completion_ids,
    encode_pair,
    encode_turns,
    open_turn,
    prompt_ids,
    render_turns,
)

HISTORY = "user : how was the food ? | agent : the food was great . | user : and the staff ?"
SEGMENT = [
    {"role": "agent", "content": "the staff was rude ."},
    {"role": "user", "content": "what about the room ?"},
    {"role": "agent", "content": "the room was dirty and cold ."},
]


@pytest.fixture(scope="module")
def tokenizer():
    return fit_tokenizer([HISTORY, render_turns(SEGMENT), "what about the room ?"])


def test_prompt_and_completion_get_one_bos_and_one_eos(tokenizer):
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    assert prompt_ids(tokenizer, "the food")[0] == bos
    assert prompt_ids(tokenizer, "<bos> the food").count(bos) == 1  # a template's BOS is not doubled
    assert completion_ids(tokenizer, "was great .")[-1] == eos
    assert completion_ids(tokenizer, "was great . <eos>").count(eos) == 1
    encoded = encode_pair(tokenizer, "the food", "was great .", max_length=64)
    assert encoded.input_ids.count(bos) == 1 and encoded.input_ids.count(eos) == 1
    assert encoded.completion_mask == [False] * 3 + [True] * 4


def test_rendering_is_one_function():
    assert render_turns(SEGMENT[:1], after="user : hi ?") == "user : hi ? | agent : the staff was rude ."
    assert render_turns(SEGMENT[:1]) == "agent : the staff was rude ."
    assert open_turn("user : hi ?") == "user : hi ? | agent :"
    assert TURN_SEPARATOR == "|"


def test_encode_turns_masks_agent_tokens_of_the_segment_only(tokenizer):
    """Word-level tokenizer, so tokens are words. Expected segment mask, by hand: the agent
    contents (5 + 7 words), the separator that ends the first agent turn, and the final EOS."""
    encoded, mask = encode_turns(tokenizer, HISTORY, SEGMENT, max_length=128)
    words = ["<bos>", *HISTORY.split(), *f"| {render_turns(SEGMENT)}".split(), "<eos>"]
    assert tokenizer.convert_ids_to_tokens(encoded.input_ids) == words
    n_prompt = 1 + len(HISTORY.split())
    assert encoded.completion_mask == [False] * n_prompt + [True] * (len(words) - n_prompt)
    expected = [False] * n_prompt
    expected += [False, False, False] + [True] * 5  # "| agent :" then "the staff was rude ."
    expected += [True, False, False] + [False] * 5  # "|" ends the agent turn; "user :" and the question
    expected += [False, False, False] + [True] * 7  # "| agent :" then the answer
    expected += [True]  # EOS ends the last agent turn
    assert mask == expected
    assert not encoded.truncated
    assert all(c for c, m in zip(encoded.completion_mask, mask) if m)  # the segment is inside the completion


def test_a_segment_ending_with_a_user_turn_leaves_the_eos_out(tokenizer):
    _, mask = encode_turns(tokenizer, HISTORY, SEGMENT[:2], max_length=128)
    assert mask[-1] is False
    assert sum(mask) == 5 + 1  # the agent's words and the separator after them


def test_encode_turns_cuts_the_history_first_then_the_turns(tokenizer):
    full, full_mask = encode_turns(tokenizer, HISTORY, SEGMENT, max_length=128)
    short, mask = encode_turns(tokenizer, HISTORY, SEGMENT, max_length=30)
    assert short.truncated and len(short.input_ids) == 30
    assert short.input_ids[0] == tokenizer.bos_token_id  # BOS kept, oldest history dropped
    assert short.input_ids[1:] == full.input_ids[len(full.input_ids) - 29 :]
    assert mask[1:] == full_mask[len(full_mask) - 29 :]
    tiny, tiny_mask = encode_turns(tokenizer, HISTORY, SEGMENT, max_length=10)
    assert tiny.truncated and len(tiny.input_ids) == 10 and len(tiny_mask) == 10
    assert tiny.completion_mask == [False] + [True] * 9  # only BOS left of the prompt
