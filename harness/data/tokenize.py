"""Turning (prompt, completion) text into token tensors with completion masks.

Prompt and completion are tokenized separately and concatenated (the completion mask then marks
exactly the completion's tokens): [bos] + prompt + completion + [eos]. A prompt whose text
already starts with the BOS token (a chat template's rendering) gets no second one, and a
completion that already ends with EOS no second EOS. Prompts are left-padded for generation;
training sequences are right-padded.

Multi-turn sessions (SDPO's data) are rendered in one place, `render_turns`: each turn as
"role : content", turns joined by " | " (the sandbox tokenizer has both ":" and "|" as words).
`encode_turns` encodes a shared history (the prompt) followed by the rendered turns of a
segment, and returns a per-token segment mask over the agent turns' tokens.

A prompt is either a text or a conversation (a list of {"role", "content"} messages, system
messages included). A conversation is rendered with the tokenizer's own chat template, which
writes every special token itself: the prompt is its generation prompt, a completion the text the
template adds for the assistant's reply (its content and the template's end of turn, e.g. Qwen's
`<|im_end|>\n`), so no BOS or EOS is added to either. Sessions whose history is a conversation are
rendered with the template too (`encode_turns`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


Prompt = Any  # str (a text) or list[dict] (a conversation: {"role", "content"} messages)


def is_conversation(prompt: Prompt) -> bool:
    return isinstance(prompt, list)


def prompt_key(prompt: Prompt) -> str:
    """A prompt as one string, to compare, count and hash prompts by (a text is its own key)."""
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, ensure_ascii=False)


def distinct_prompts(prompts) -> list[Prompt]:
    """The distinct prompts among `prompts`, in their first order."""
    seen: dict[str, Prompt] = {}
    for prompt in prompts:
        seen.setdefault(prompt_key(prompt), prompt)
    return list(seen.values())


def prompt_text(tokenizer, prompt: Prompt) -> str:
    """The prompt as the policy reads it: a text as is, a conversation's generation prompt."""
    return generation_prompt(tokenizer, prompt) if is_conversation(prompt) else prompt


def chat_text(tokenizer, messages: list[dict], **options) -> str:
    """The tokenizer's chat template applied to `messages`, as text."""
    return tokenizer.apply_chat_template(messages, tokenize=False, **options)


def generation_prompt(tokenizer, messages: list[dict]) -> str:
    """What the policy reads before it answers `messages`: the template's generation prompt."""
    return chat_text(tokenizer, messages, add_generation_prompt=True)


def assistant_turn(tokenizer, messages: list[dict], content: str) -> str:
    """The text the template adds after the generation prompt of `messages` for an assistant reply
    `content`: the content and the template's end of turn (and whatever it writes after it)."""
    head = generation_prompt(tokenizer, messages)
    full = chat_text(tokenizer, messages + [{"role": "assistant", "content": content}])
    if not full.startswith(head):
        raise ValueError("the chat template's generation prompt is not the beginning of its rendering of "
                         "the reply, so a completion cannot be cut from it")
    return full[len(head):]


def _after_end_of_turn(tokenizer, messages: list[dict]) -> list[int]:
    """What a template writes after the special token that ends an assistant turn, such as the
    newline of ChatML's `<|im_end|>\n` and Gemma's `<end_of_turn>\n`. Generation stops at that
    token, so a sampled completion never has what follows: a training completion leaves it out
    too, or SPIN's generated and dataset completions would differ in it and nothing else."""
    ending = _text_ids(tokenizer, assistant_turn(tokenizer, messages, ""))
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    first = next((k for k, i in enumerate(ending) if i in special), None)
    return [] if first is None else ending[first + 1:]


def _text_ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def prompt_ids(tokenizer, prompt: Prompt) -> list[int]:
    if is_conversation(prompt):
        return _text_ids(tokenizer, generation_prompt(tokenizer, prompt))
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    if bos is None or (ids and ids[0] == bos):
        return list(ids)
    return [bos] + ids


def completion_ids(tokenizer, completion: str, prompt: Prompt = "") -> list[int]:
    """The completion's ids: after a conversation, the template's assistant turn through its
    end-of-turn token; after a text, the text and one EOS."""
    if is_conversation(prompt):
        turn = _text_ids(tokenizer, assistant_turn(tokenizer, prompt, completion))
        after = _after_end_of_turn(tokenizer, prompt)
        return turn[: len(turn) - len(after)] if after and turn[-len(after):] == after else turn
    ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    return list(ids) if ids and ids[-1] == eos else ids + [eos]


@dataclass(frozen=True)
class Encoded:
    """One tokenized (prompt, completion): ids and the completion mask, truncation recorded."""

    input_ids: list[int]
    completion_mask: list[bool]
    truncated: bool


def encode_pair(tokenizer, prompt: Prompt, completion: str, max_length: int) -> Encoded:
    """Tokenize one (prompt, completion); the completion is cut so the whole fits max_length."""
    head, tail = prompt_ids(tokenizer, prompt), completion_ids(tokenizer, completion, prompt)
    room = max(max_length - len(head), 0)
    truncated = len(tail) > room
    tail = tail[:room]
    return Encoded(head + tail, [False] * len(head) + [True] * len(tail), truncated)


# ---------------------------------------------------------------------------------------------
# Multi-turn sessions

TURN_SEPARATOR = "|"  # between turns, written " | "; a word of the sandbox tokenizer
AGENT_ROLES = ("agent", "assistant")  # turns whose tokens the segment mask covers


def render_turn(turn: dict) -> str:
    """One turn as text: "role : content"."""
    return f"{turn['role']} : {turn['content']}"


def render_turns(turns: list[dict], *, after: str = "") -> str:
    """Turns as text, joined by " | "; `after` (a rendered history) comes first, joined the same
    way. The one rendering of sessions: the sandbox's prompts and `encode_turns` both use it.

    >>> render_turns([{"role": "agent", "content": "good ."}], after="user : how was it ?")
    'user : how was it ? | agent : good .'
    """
    parts = ([after] if after else []) + [render_turn(t) for t in turns]
    return f" {TURN_SEPARATOR} ".join(parts)


def open_turn(history: str, role: str = "agent") -> str:
    """The prompt that asks for the next `role` turn after `history`: "... | agent :"."""
    return render_turns([{"role": role, "content": ""}], after=history).rstrip()


def encode_turns(tokenizer, prompt: Prompt, turns: list[dict], max_length: int) -> tuple[Encoded, list[bool]]:
    """Encode a shared history and the turns of a segment: (encoded, segment mask).

    A text history: the sequence is [bos] + prompt + " | " + turn_1 + " | " + ... + turn_n + [eos],
    the text of `render_turns(turns, after=prompt)`. A conversation: the chat template's rendering
    of the history followed by the turns (agent turns as the assistant's), `_chat_turns`.

    The completion mask is True on everything after the prompt (user turns of the segment
    included: they are context inside the completion). The segment mask, aligned with input_ids,
    is True only on AGENT turns' content tokens and on the token that ends each agent turn (the
    separator after it, or the final EOS; a template's end-of-turn token), as a chat template's
    assistant mask covers the assistant's text and its end-of-turn token; role headers
    ("| agent :", a template's "<|im_start|>assistant\n") and user turns are never in it.

    Too long for max_length: the history loses its oldest tokens first (BOS is kept); if the
    turns alone do not fit, they are cut at the end. Either way `truncated` is True.
    """
    build = _chat_turns if is_conversation(prompt) else _text_turns
    head, tail, segment = build(tokenizer, prompt, turns)
    head, tail, segment, truncated = _fit_turns(head, tail, segment, max_length, tokenizer.bos_token_id)
    encoded = Encoded(head + tail, [False] * len(head) + [True] * len(tail), truncated)
    return encoded, [False] * len(head) + segment


def _text_turns(tokenizer, prompt: str, turns: list[dict]) -> tuple[list[int], list[int], list[bool]]:
    """History ids, the turns' ids and their segment mask, in the sandbox's " | " rendering."""
    head = prompt_ids(tokenizer, prompt)
    tail: list[int] = []
    segment: list[bool] = []
    for i, turn in enumerate(turns):
        opens_text = i == 0 and not prompt
        if not opens_text:
            separator = _piece(tokenizer, f" {TURN_SEPARATOR}")
            ends_agent_turn = i > 0 and _is_agent(turns[i - 1])
            tail += separator
            segment += [ends_agent_turn] * len(separator)
        header = _piece(tokenizer, f"{'' if opens_text else ' '}{turn['role']} :")
        content = _piece(tokenizer, f" {turn['content']}")
        tail += header + content
        segment += [False] * len(header) + [_is_agent(turn)] * len(content)
    tail.append(tokenizer.eos_token_id)
    segment.append(bool(turns) and _is_agent(turns[-1]))
    return head, tail, segment


def _chat_turns(tokenizer, history: list[dict], turns: list[dict]) -> tuple[list[int], list[int], list[bool]]:
    """History ids, the turns' ids and their segment mask, through the chat template.

    The whole conversation is rendered once; each turn's text is where the renderings of the
    conversation up to it and up to the turn after it part (templates may write something at the
    very end, as Phi-3's EOS, that a longer conversation does not begin with). An agent turn's
    text is cut into its header, its content and what ends it; the segment mask covers the
    content and the first token after it, the template's end of turn."""
    messages = list(history) + [{"role": _chat_role(t["role"]), "content": t["content"]} for t in turns]
    full = chat_text(tokenizer, messages)
    ends = [_token_boundary(tokenizer, full, len(os.path.commonprefix([chat_text(tokenizer, messages[:k]), full])))
            if k else 0 for k in range(len(history), len(messages))] + [len(full)]
    head = _text_ids(tokenizer, full[: ends[0]])
    tail: list[int] = []
    segment: list[bool] = []
    for turn, start, end in zip(turns, ends, ends[1:]):
        text = full[start:end]
        if not _is_agent(turn):
            tail += _text_ids(tokenizer, text)
            segment += [False] * (len(tail) - len(segment))
            continue
        content = turn["content"] if turn["content"] in text else turn["content"].strip()  # templates that trim
        at = text.index(content)
        header, body, after = (_text_ids(tokenizer, part) for part in (text[:at], content, text[at + len(content):]))
        tail += header + body + after
        segment += [False] * len(header) + [True] * len(body) + [True] * min(len(after), 1) + [False] * max(len(after) - 1, 0)
    return head, tail, segment


def _token_boundary(tokenizer, text: str, at: int) -> int:
    """`at`, moved back to the start of the special token it falls inside, if any (two renderings
    may part inside one: Phi-3's "<|endoftext|>" and "<|assistant|>" share "<|")."""
    for token in {*tokenizer.all_special_tokens, *tokenizer.get_added_vocab()}:
        for start in range(max(at - len(token) + 1, 0), at):
            if text.startswith(token, start):
                return start
    return at


def _chat_role(role: str) -> str:
    """A session's role as a template knows it: the agent is the assistant."""
    return "assistant" if role in AGENT_ROLES else role


def _is_agent(turn: dict) -> bool:
    return turn["role"] in AGENT_ROLES


def _piece(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text.strip() else []


def _fit_turns(head: list[int], tail: list[int], segment: list[bool], max_length: int, bos: int | None):
    """Cut the history from the left (keeping BOS), then if need be the turns from the right."""
    if len(head) + len(tail) <= max_length:
        return head, tail, segment, False
    keep = 1 if head and head[0] == bos else 0
    room = max_length - len(tail) - keep
    if room > 0:
        return head[:keep] + head[len(head) - room :], tail, segment, True
    head = head[:keep]
    cut = max(max_length - len(head), 0)
    return head, tail[:cut], segment[:cut], True


def encode_ids(prompt_token_ids: list[int], completion_token_ids: list[int]) -> Encoded:
    """An already tokenized (prompt, completion), e.g. a generated sample, scored as is."""
    ids = list(prompt_token_ids) + list(completion_token_ids)
    mask = [False] * len(prompt_token_ids) + [True] * len(completion_token_ids)
    return Encoded(ids, mask, truncated=False)


def pad_right(rows: list[Encoded], pad_id: int) -> dict[str, Tensor]:
    """Stack encoded rows into input_ids, attention_mask and completion_mask, all (B, T)."""
    width = max(len(r.input_ids) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    completion_mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, row in enumerate(rows):
        n = len(row.input_ids)
        input_ids[i, :n] = torch.tensor(row.input_ids)
        attention_mask[i, :n] = 1
        completion_mask[i, :n] = torch.tensor(row.completion_mask)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "completion_mask": completion_mask}


def encode_prompts(tokenizer, prompts: list[str], device=None) -> tuple[Tensor, Tensor]:
    """Left-padded prompt ids and attention mask (B, T) for generation."""
    rows = [prompt_ids(tokenizer, p) for p in prompts]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, width - len(row) :] = torch.tensor(row)
        attention_mask[i, width - len(row) :] = 1
    return input_ids.to(device), attention_mask.to(device)
