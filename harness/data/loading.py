"""Loading real preference data (TRL's dataset formats) into the rows the trainer consumes.

One entry point, `load_rows(source, shape, ...)`, for every source and shape:

- source: a local .jsonl, .json or .parquet file; a folder of them (the files of the split are
  those whose path names it, e.g. train.jsonl, data/train-00000-of-00001.parquet, pairs_train.jsonl;
  a folder that names no split at all is read whole); "sandbox:<name>" (a file of a built sandbox,
  given as `sandbox=`); anything else is a Hub dataset id, read with
  `datasets.load_dataset(id, split=split)` (offline, HF_HUB_OFFLINE=1, only a cached one loads).
- shape and the formats accepted (TRL's names), each standard (strings) or conversational
  (lists of {"role", "content"} messages):
    pairs:    prompt, chosen, rejected; or chosen, rejected alone (implicit prompt: the shared
              beginning of the two, as TRL's extract_prompt). Optional: score_chosen,
              score_rejected (also read from chosen_reward, rejected_reward), label_flipped, stage.
    unpaired: prompt, completion, label (bool or 0/1); or paired data, unpaired as TRL's
              unpair_preference_dataset does (chosen -> True, rejected -> False). Optional: score.
    sft:      prompt, completion; or messages (the last assistant message is the completion,
              the conversation before it the prompt); or text (an empty prompt).
    sessions: prompt, chosen_turns, rejected_turns (lists of {"role", "content"}); optional
              first_bad_turn, segment_length (the sandbox's sessions files).
- conversational data stays a conversation: the prompt is kept as its list of messages (system
  messages included), each completion as the assistant reply's text (its content). Each model
  renders them with its own chat template (harness.data.tokenize for the policy, the reward
  model's own in harness.evaluate.reward_models). A dataset is conversational or not as a whole
  (mixing strings and message lists is refused). Each conversational row is checked when read: a
  message without a role or with one outside system/user/assistant/tool, content that is not a string, an empty prompt, a string prompt with
  message completions, a completion that is not one assistant message, a conversation the policy's
  template refuses or renders without one of its messages; such a row is refused with one line
  naming the file, the row, the field and the fix, or dropped and counted (data.on_invalid).

The rows returned carry the sandbox's column names (harness/sandbox/world.py: DATA_FILES),
so the trainer consumes sandbox and real data identically. Invalid rows (an empty completion; a
prompt that leaves no room for a completion in max_length tokens, or longer than
max_prompt_length) are dropped with a warning (on_invalid="drop") or rejected
(on_invalid="error"); completions longer than the room left are truncated by the encoder, and
counted here. Every count is in `LoadedRows.stats`, for the run to record.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError, did_you_mean
from harness.suite import ON_INVALID

SHAPES = ("pairs", "unpaired", "sft", "sessions")
FILE_SUFFIXES = (".jsonl", ".json", ".parquet")
SPLIT_NAMES = ("train", "test", "validation", "valid", "eval", "dev")
# The roles chat templates know. ChatML-style templates render any role name as given, so a
# typo or another format's name ('human', 'gpt') would be trained on silently: refused instead.
CHAT_ROLES = ("system", "user", "assistant", "tool")
SESSION_TURN_ROLES = (*CHAT_ROLES, "agent")  # the sandbox's sessions name the assistant 'agent'

ACCEPTED = {
    "pairs": "prompt/chosen/rejected, or chosen/rejected with the prompt inside them (implicit prompt); "
             "strings or lists of {role, content} messages",
    "unpaired": "prompt/completion/label, or paired data (prompt/chosen/rejected) to unpair; "
                "strings or lists of {role, content} messages",
    "sft": "prompt/completion, messages (a conversation), or text",
    "sessions": "prompt/chosen_turns/rejected_turns (turns: lists of {role, content})",
}


@dataclass
class LoadStats:
    """What loading did, for the run's manifest."""

    source: str
    shape: str
    split: str
    format: str = "standard"  # or "conversational"
    prompt: str = "explicit"  # or "implicit" (extracted from chosen/rejected) or "none"
    converted: str | None = None  # e.g. "pairs -> unpaired"
    rows_read: int = 0
    rows: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> rows
    truncated_rows: int = 0  # rows with a completion longer than the room max_length leaves
    truncated_completions: int = 0
    max_length: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LoadedRows:
    rows: list[dict[str, Any]]
    stats: LoadStats


def load_rows(source: str, shape: str, *, tokenizer=None, split: str = "train", max_length: int | None = None,
              max_prompt_length: int | None = None, on_invalid: str = "drop", sandbox=None,
              records: tuple[list[dict[str, Any]], str] | None = None) -> LoadedRows:
    """Standardized rows of `shape` from `source` (see the module docstring), and what was done.

    `tokenizer` renders conversational data and counts tokens (needed for those, and for any
    length limit); `sandbox` is a built `Sandbox` (or its folder) for "sandbox:<name>" sources;
    `records` is what `read_records(source, split)` returned, for a caller reading several shapes.
    """
    if shape not in SHAPES:
        raise HarnessError(f"{source}: unknown data shape {shape!r} (valid: {', '.join(SHAPES)})")
    if on_invalid not in ON_INVALID:
        raise HarnessError(f"{source}: on_invalid must be one of {', '.join(ON_INVALID)}, not {on_invalid!r}")
    if (max_length is not None or max_prompt_length is not None) and tokenizer is None:
        raise HarnessError(f"{source}: a length limit needs the tokenizer to count tokens")
    records, name = records or read_records(source, split, sandbox=sandbox)
    stats = LoadStats(source=name, shape=shape, split=split, rows_read=len(records), max_length=max_length)
    if not records:
        raise HarnessError(f"{name}: no rows (split {split!r})")
    standardize = {"pairs": _pairs, "unpaired": _unpaired, "sft": _sft, "sessions": _sessions}[shape]
    rows, reasons = standardize(records, name, tokenizer, stats)
    if stats.format == "conversational" and tokenizer is not None:
        reasons = _check_template(rows, reasons, shape, tokenizer, name)
    rows, reasons = _check_lengths(rows, reasons, shape, tokenizer, max_length, max_prompt_length, stats)
    kept = _apply_policy(rows, reasons, name, on_invalid, stats)
    stats.rows = len(kept)
    if not kept:
        raise HarnessError(f"{name}: every row is invalid ({_reasons_text(stats.dropped)})")
    return LoadedRows(kept, stats)


# ---------------------------------------------------------------------------------------------
# Reading


def read_records(source: str, split: str = "train", *, sandbox=None) -> tuple[list[dict[str, Any]], str]:
    """The raw records of `source` and the name to report it by."""
    if source.startswith("sandbox:"):
        if sandbox is None:
            raise HarnessError(f"{source}: a sandbox file needs the built sandbox (load it, then pass sandbox=)")
        root = Path(sandbox) if isinstance(sandbox, (str, os.PathLike)) else Path(sandbox.root)
        path = root / "data" / f"{source.split(':', 1)[1].removesuffix('.jsonl')}.jsonl"
        if not path.exists():
            found = sorted(p.stem for p in (root / "data").glob("*.jsonl"))
            raise HarnessError(f"{source}: no such sandbox file (files: {', '.join(found)})")
        return _read_file(path), str(path)
    path = Path(source).expanduser()
    if path.is_file():
        return _read_file(path), str(path)
    if path.is_dir():
        return _read_folder(path, split), str(path)
    if _looks_local(source):
        raise HarnessError(f"{source}: no such file or folder")
    return _read_hub(source, split), source


def _looks_local(source: str) -> bool:
    return (source.startswith((".", "/", "~")) or source.endswith(FILE_SUFFIXES)
            or source.count("/") > 1 or os.sep != "/" and os.sep in source)


def _read_file(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(path)
    if suffix == ".json":
        return _read_json(path)
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except Exception as err:  # noqa: BLE001 (any unreadable file is bad input)
            raise HarnessError(f"{path}: not a readable parquet file ({err})") from None
    raise HarnessError(f"{path}: unsupported file type {suffix!r} (accepted: {', '.join(FILE_SUFFIXES)})")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open() as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise HarnessError(f"{path}: line {number} is not JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise HarnessError(f"{path}: line {number} is not a JSON object")
            rows.append(row)
    return rows


def _read_json(path: Path) -> list[dict[str, Any]]:
    """A list of records, a dict of equal-length columns, or {"data"|"rows": [records]};
    JSON lines in a .json file are read too (as the datasets json loader does)."""
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        return _read_jsonl(path)
    if isinstance(data, dict):
        for key in ("data", "rows"):
            if isinstance(data.get(key), list):
                data = data[key]
                break
        else:
            columns = {k: v for k, v in data.items() if isinstance(v, list)}
            if columns and len(columns) == len(data) and len({len(v) for v in columns.values()}) == 1:
                n = len(next(iter(columns.values())))
                data = [{k: v[i] for k, v in columns.items()} for i in range(n)]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise HarnessError(f"{path}: expected a list of records or a dict of equal-length columns")
    return data


def _split_pattern(split: str) -> re.Pattern:
    return re.compile(rf"(^|[/_.\-]){re.escape(split)}([/_.\-]|$)")


def _read_folder(folder: Path, split: str) -> list[dict[str, Any]]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in FILE_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if not files:
        raise HarnessError(f"{folder}: no {', '.join(FILE_SUFFIXES)} files in the folder")
    named = lambda s: [p for p in files if _split_pattern(s).search(p.relative_to(folder).as_posix())]  # noqa: E731
    chosen = named(split)
    if not chosen:
        present = [s for s in SPLIT_NAMES if named(s)]
        if present:
            raise HarnessError(f"{folder}: no files for split {split!r} (splits found: {', '.join(present)})")
        chosen = files  # a folder that names no split is one split
    return [row for path in chosen for row in _read_file(path)]


def _read_hub(name: str, split: str) -> list[dict[str, Any]]:
    try:
        import datasets

        datasets.logging.set_verbosity_error()
        dataset = datasets.load_dataset(name, split=split)
    except Exception as err:  # noqa: BLE001 (any failure to fetch a named dataset is bad input)
        offline = any(os.environ.get(v, "").lower() in ("1", "true", "yes")
                      for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
        hint = ("; offline (HF_HUB_OFFLINE=1), only datasets already in the Hugging Face cache load"
                if offline else "")
        raise HarnessError(f"dataset {name!r} (split {split!r}): not a local file or folder and cannot be "
                           f"loaded from the Hub ({type(err).__name__}: {_first_line(err)}){hint}") from None
    return [dict(r) for r in dataset]


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else "no message"


# ---------------------------------------------------------------------------------------------
# Formats


class _Invalid(Exception):
    """A malformed row: the reason it is counted under, and one line naming the file, the row, the
    field and the fix (the error under data.on_invalid: error)."""

    def __init__(self, reason: str, line: str):
        super().__init__(line)
        self.reason, self.line = reason, line


def _is_messages(value: Any) -> bool:
    """Whether a field holds a conversation (a list of messages; checked by `_messages`)."""
    return isinstance(value, list)


def _conversational(records: list[dict], name: str, columns: tuple[str, ...]) -> bool:
    """Whether the dataset is conversational: every row holds message lists or none does."""
    kinds = [any(_is_messages(r.get(c)) for c in columns) for r in records]
    if len(set(kinds)) > 1:
        text, chat = kinds.index(False), kinds.index(True)
        raise HarnessError(f"{name}: rows mix strings and message lists (row {text} is text, row {chat} holds "
                           "{role, content} messages); give every row in one format")
    return kinds[0]


def _messages(value: Any, name: str, i: int, column: str, *, empty_ok: bool = False,
              roles: tuple[str, ...] = CHAT_ROLES) -> list[dict[str, str]]:
    """A field's list of {role, content} messages, each checked (other keys are left out)."""
    where = f"{name}: row {i}: {column!r}"
    if not isinstance(value, list):
        raise _Invalid("malformed", f"{where} must be a list of {{role, content}} messages, not a "
                                    f"{type(value).__name__}; give every field of a conversational row as messages")
    if not value and not empty_ok:
        raise _Invalid("malformed", f"{where} is an empty list of messages; give at least one {{role, content}} message")
    out = []
    for k, message in enumerate(value):
        if not isinstance(message, dict):
            raise _Invalid("malformed", f"{where}: message {k} is a {type(message).__name__}, not a {{role, content}} object")
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not role:
            raise _Invalid("malformed", f"{where}: message {k} has no 'role'; give each message a role "
                                        "(system, user or assistant)")
        if role not in roles:
            raise _Invalid("malformed", f"{where}: message {k} has role {role!r}, which chat templates do not "
                                        f"know{did_you_mean(role, roles)}; rename it to one of {', '.join(roles)}")
        if not isinstance(content, str):
            raise _Invalid("malformed", f"{where}: message {k} ({role}) has content {content!r}, not a string; "
                                        "give its text (\"\" for none)")
        out.append({"role": role, "content": content})
    return out


def _reply(value: Any, name: str, i: int, column: str) -> str:
    """A completion given as messages: one assistant message, whose content is the completion."""
    messages = _messages(value, name, i, column)
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        roles = ", ".join(m["role"] for m in messages)
        raise _Invalid("malformed", f"{name}: row {i}: {column!r} must be one assistant message (the reply), not "
                                    f"messages with roles {roles}; put the conversation before it in 'prompt'")
    return messages[0]["content"]


def _conversation(prompt: Any, completions: list, name: str, i: int,
                  columns: tuple[str, ...]) -> tuple[list[dict], list[str]]:
    """A conversational row's prompt messages and its completions' texts, checked."""
    if not _is_messages(prompt):
        raise _Invalid("malformed", f"{name}: row {i}: 'prompt' is a {type(prompt).__name__} while {columns[0]!r} "
                                    "is a list of messages; give the prompt as messages too "
                                    "([{\"role\": \"user\", \"content\": ...}]) or every field as a string")
    messages = _messages(prompt, name, i, "prompt")
    if messages[-1]["role"] == "assistant":
        raise _Invalid("malformed", f"{name}: row {i}: 'prompt' ends with an assistant message; the completion is "
                                    "the assistant's reply: end the prompt with the message it answers")
    return messages, [_reply(c, name, i, column) for c, column in zip(completions, columns)]


class MissingColumns(HarnessError):
    """The data has no columns for a shape (a dataset need not have every shape)."""


def _require(records: list[dict], name: str, shape: str, columns: tuple[str, ...]) -> None:
    present = set(records[0])
    for column in columns:
        if column not in present:
            raise MissingColumns(
                f"{name}: {shape} data needs a {column!r} column (columns found: {', '.join(sorted(present)) or 'none'}); "
                f"accepted formats: {ACCEPTED[shape]}"
            )
    for i, record in enumerate(records):
        missing = [c for c in columns if c not in record]
        if missing:
            raise HarnessError(f"{name}: row {i} has no {missing[0]!r} (every row needs {', '.join(columns)})")


def _check_text(value: Any, name: str, i: int, column: str) -> None:
    if not isinstance(value, str):
        raise HarnessError(f"{name}: row {i}: {column!r} must be a string or a list of "
                           f"{{role, content}} messages, not {type(value).__name__}")


def _require_template(tokenizer, name: str) -> None:
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        what = "no tokenizer was given" if tokenizer is None else f"tokenizer {tokenizer.name_or_path!r} has none"
        raise HarnessError(f"{name}: conversational data needs a tokenizer with a chat template ({what}); "
                           "use a chat model's tokenizer or standard (string) data")


def _each_row(records: list[dict], build) -> tuple[list, list]:
    """`build(i, record)` for every record: the rows, and a malformed row's `_Invalid` (its row
    None) where building refused it."""
    rows, problems = [], []
    for i, record in enumerate(records):
        try:
            rows.append(build(i, record))
            problems.append(None)
        except _Invalid as err:
            rows.append(None)
            problems.append(err)
    return rows, problems


def _shared_prefix(chosen, rejected):
    """TRL's extract_prompt: the longest common beginning of chosen and rejected (messages, or
    text cut back to a word boundary so that no word is split) and the two remainders."""
    k = 0
    while k < min(len(chosen), len(rejected)) and chosen[k] == rejected[k]:
        k += 1
    if isinstance(chosen, str) and k < min(len(chosen), len(rejected)):
        space = chosen.rfind(" ", 0, k + 1)
        k = space if space >= 0 else 0  # the space goes with the completions, as in TRL
    return chosen[:k], chosen[k:], rejected[k:]


def _pairs(records: list[dict], name: str, tokenizer, stats: LoadStats):
    _require(records, name, "pairs", ("chosen", "rejected"))
    conversational = _conversational(records, name, ("prompt", "chosen", "rejected"))
    if conversational:
        stats.format = "conversational"
        _require_template(tokenizer, name)

    def build(i: int, r: dict) -> dict:
        chosen, rejected, prompt = r["chosen"], r["rejected"], r.get("prompt")
        if prompt is None:
            prompt, chosen, rejected = _shared_prefix(chosen, rejected)  # implicit prompt
            stats.prompt = "implicit"
        if conversational:
            prompt, (chosen, rejected) = _conversation(prompt, [chosen, rejected], name, i, ("chosen", "rejected"))
        else:
            for column, value in (("prompt", prompt), ("chosen", chosen), ("rejected", rejected)):
                _check_text(value, name, i, column)
        row = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
        for out, names in (("score_chosen", ("score_chosen", "chosen_reward")),
                           ("score_rejected", ("score_rejected", "rejected_reward"))):
            value = next((r[n] for n in names if r.get(n) is not None), None)
            if value is not None:
                row[out] = float(value)
        if "label_flipped" in r:
            row["label_flipped"] = bool(r["label_flipped"])
        if r.get("stage") is not None:
            row["stage"] = int(r["stage"])
        return row

    rows, problems = _each_row(records, build)
    kept = [row for row in rows if row is not None]
    if not all("score_chosen" in row and "score_rejected" in row for row in kept):
        for row in kept:  # scores are all or nothing: a loss that reads them reads every row's
            row.pop("score_chosen", None)
            row.pop("score_rejected", None)
    return rows, [p or _empty(row, ("chosen", "rejected")) for row, p in zip(rows, problems)]


def _label(value: Any, name: str, i: int) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise HarnessError(f"{name}: row {i}: label must be a bool (or 0/1), not {value!r}")


def _unpaired(records: list[dict], name: str, tokenizer, stats: LoadStats):
    if "completion" not in records[0] and {"chosen", "rejected"} <= set(records[0]):
        pairs, reasons = _pairs(records, name, tokenizer, stats)
        stats.converted = "pairs -> unpaired"
        rows, out_reasons = [], []
        for pair, reason in zip(pairs, reasons):
            for side, label in (("chosen", True), ("rejected", False)):
                if pair is None:  # a malformed pair: both its rows are
                    rows.append(None)
                    out_reasons.append(reason)
                    continue
                row = {"prompt": pair["prompt"], "completion": pair[side], "label": label}
                if f"score_{side}" in pair:
                    row["score"] = pair[f"score_{side}"]
                rows.append(row)
                out_reasons.append(_empty(row, ("completion",)) or reason)
        return rows, out_reasons
    _require(records, name, "unpaired", ("prompt", "completion", "label"))
    conversational = _conversational_rows(records, name, tokenizer, stats)

    def build(i: int, r: dict) -> dict:
        prompt, completion = _prompt_completion(r, name, i, conversational)
        row = {"prompt": prompt, "completion": completion, "label": _label(r["label"], name, i)}
        if r.get("score") is not None:
            row["score"] = float(r["score"])
        if "label_flipped" in r:
            row["label_flipped"] = bool(r["label_flipped"])
        return row

    rows, problems = _each_row(records, build)
    return rows, [p or _empty(row, ("completion",)) for row, p in zip(rows, problems)]


def _conversational_rows(records: list[dict], name: str, tokenizer, stats: LoadStats) -> bool:
    """Whether prompt/completion records are conversational (then the tokenizer needs a template)."""
    conversational = _conversational(records, name, ("prompt", "completion"))
    if conversational:
        stats.format = "conversational"
        _require_template(tokenizer, name)
    return conversational


def _prompt_completion(r: dict, name: str, i: int, conversational: bool) -> tuple[Any, str]:
    """A row's prompt (a text or messages) and its completion's text, both checked."""
    prompt, completion = r["prompt"], r["completion"]
    if conversational:
        prompt, (completion,) = _conversation(prompt, [completion], name, i, ("completion",))
        return prompt, completion
    _check_text(prompt, name, i, "prompt")
    _check_text(completion, name, i, "completion")
    return prompt, completion


def _sft(records: list[dict], name: str, tokenizer, stats: LoadStats):
    first = set(records[0])
    if {"prompt", "completion"} <= first:
        _require(records, name, "sft", ("prompt", "completion"))
        conversational = _conversational_rows(records, name, tokenizer, stats)

        def build(i: int, r: dict) -> dict:
            prompt, completion = _prompt_completion(r, name, i, conversational)
            return {"prompt": prompt, "completion": completion}
    elif "messages" in first:
        _require(records, name, "sft", ("messages",))
        stats.format, stats.prompt = "conversational", "explicit"
        _require_template(tokenizer, name)

        def build(i: int, r: dict) -> dict:
            messages = _messages(r["messages"], name, i, "messages")
            if messages[-1]["role"] != "assistant":  # no assistant answer to learn: an empty completion
                return {"prompt": messages, "completion": ""}
            if len(messages) == 1:
                raise _Invalid("malformed", f"{name}: row {i}: 'messages' holds the assistant's answer alone; "
                                            "put the message it answers before it")
            return {"prompt": messages[:-1], "completion": messages[-1]["content"]}
    elif "text" in first:
        _require(records, name, "sft", ("text",))
        stats.prompt = "none"

        def build(i: int, r: dict) -> dict:
            _check_text(r["text"], name, i, "text")
            return {"prompt": "", "completion": r["text"]}
    else:
        _require(records, name, "sft", ("prompt", "completion"))
    rows, problems = _each_row(records, build)
    return rows, [p or _empty(row, ("completion",)) for row, p in zip(rows, problems)]


def _sessions(records: list[dict], name: str, tokenizer, stats: LoadStats):
    """Sessions: a history (a text, or messages rendered with the chat template) and turns."""
    _require(records, name, "sessions", ("prompt", "chosen_turns", "rejected_turns"))
    stats.format = "conversational"
    if _conversational(records, name, ("prompt",)):
        _require_template(tokenizer, name)

    def build(i: int, r: dict) -> dict:
        if _is_messages(r["prompt"]):
            prompt = _messages(r["prompt"], name, i, "prompt", empty_ok=True)
        else:
            _check_text(r["prompt"], name, i, "prompt")
            prompt = r["prompt"]
        chosen = _messages(r["chosen_turns"], name, i, "chosen_turns", empty_ok=True, roles=SESSION_TURN_ROLES)
        rejected = _messages(r["rejected_turns"], name, i, "rejected_turns", empty_ok=True, roles=SESSION_TURN_ROLES)
        row = {"prompt": prompt, "chosen_turns": chosen, "rejected_turns": rejected,
               "segment_length": int(r.get("segment_length", len(chosen)))}
        for key in ("first_bad_turn", "score_chosen", "score_rejected"):
            if r.get(key) is not None:
                row[key] = r[key]
        return row

    def empty(row: dict) -> str | None:
        turns = row["chosen_turns"] + row["rejected_turns"]
        blank = not row["chosen_turns"] or not row["rejected_turns"] or any(not t["content"].strip() for t in turns)
        return "empty_completion" if blank else None

    rows, problems = _each_row(records, build)
    return rows, [p or empty(row) for row, p in zip(rows, problems)]


def _empty(row: dict, columns: tuple[str, ...]) -> str | None:
    return "empty_completion" if any(not row[c].strip() for c in columns) else None


def _check_template(rows: list, reasons: list, shape: str, tokenizer, name: str) -> list:
    """Refuse conversations the policy's chat template rejects (it raises: a role it does not
    know, a system message where it has none) or renders without one of their messages (it
    skips a role silently)."""
    from harness.data.tokenize import AGENT_ROLES, is_conversation

    out = list(reasons)
    for i, row in enumerate(rows):
        if out[i] or row is None or not is_conversation(row["prompt"]):
            continue
        if shape == "sessions":
            conversations = [row["prompt"] + [{"role": "assistant" if t["role"] in AGENT_ROLES else t["role"],
                                               "content": t["content"]} for t in row[side]]
                             for side in ("chosen_turns", "rejected_turns")]
        else:
            sides = ("chosen", "rejected") if shape == "pairs" else ("completion",)
            conversations = [row["prompt"] + [{"role": "assistant", "content": row[side]}] for side in sides]
        out[i] = next(filter(None, (_template_problem(tokenizer, c, name, i) for c in conversations)), None)
    return out


def _template_problem(tokenizer, messages: list[dict], name: str, i: int) -> _Invalid | None:
    from harness.data.tokenize import assistant_turn, chat_text

    template = f"the chat template of {tokenizer.name_or_path or 'the tokenizer'!r}"
    try:
        text = chat_text(tokenizer, messages)
        if messages[-1]["role"] == "assistant" and len(messages) > 1:  # the prompt and reply it renders
            assistant_turn(tokenizer, messages[:-1], messages[-1]["content"])
    except Exception as err:  # noqa: BLE001 (a template refuses with raise_exception: TemplateError, or anything)
        roles = ", ".join(dict.fromkeys(m["role"] for m in messages))
        return _Invalid("template_rejects", f"{name}: row {i}: 'prompt': {template} refuses this conversation "
                                            f"(roles {roles}): {_first_line(err)}; use the roles it accepts "
                                            "(some templates have no system message)")
    for k, message in enumerate(messages):
        if message["content"].strip() and message["content"].strip() not in text:
            return _Invalid("template_drops_message", f"{name}: row {i}: 'prompt': {template} leaves out message {k} "
                                                      f"(role {message['role']!r}); use a role it renders")
    return None


# ---------------------------------------------------------------------------------------------
# Lengths and the invalid-row policy


def _check_lengths(rows, reasons, shape, tokenizer, max_length, max_prompt_length, stats):
    if tokenizer is None or (max_length is None and max_prompt_length is None):
        return rows, reasons
    from harness.data.tokenize import completion_ids, encode_turns, prompt_ids

    out = list(reasons)
    for i, row in enumerate(rows):
        if out[i] or row is None:
            continue
        n_prompt = len(prompt_ids(tokenizer, row["prompt"]))
        if max_prompt_length is not None and n_prompt > max_prompt_length:
            out[i] = "prompt_too_long"
            continue
        if max_length is None:
            continue
        if shape == "sessions":
            cut = [encode_turns(tokenizer, row["prompt"], row[side], max_length)[0].truncated
                   for side in ("chosen_turns", "rejected_turns")]
        else:
            if n_prompt >= max_length:
                out[i] = "prompt_too_long"
                continue
            room = max_length - n_prompt
            sides = ("chosen", "rejected") if shape == "pairs" else ("completion",)
            cut = [len(completion_ids(tokenizer, row[side], row["prompt"])) > room for side in sides]
        stats.truncated_completions += sum(cut)
        stats.truncated_rows += any(cut)
    return rows, out


def _reasons_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in counts.items())


def _apply_policy(rows, reasons, name, on_invalid, stats):
    """Drop the invalid rows, counted by reason in stats.dropped (a malformed row's reason is its
    `_Invalid`'s), or refuse the data at the first under on_invalid: error."""
    counts = Counter(r.reason if isinstance(r, _Invalid) else r for r in reasons if r)
    stats.dropped = dict(sorted(counts.items()))
    if not counts:
        return rows
    first = next(i for i, r in enumerate(reasons) if r)
    if on_invalid == "error" and isinstance(reasons[first], _Invalid):
        raise HarnessError(f"{reasons[first].line} (or set data.on_invalid: drop to drop such rows)")
    if on_invalid == "error":
        raise HarnessError(f"{name}: {sum(counts.values())} invalid rows ({_reasons_text(counts)}; the first is "
                           f"row {first}: {reasons[first].replace('_', ' ')}); fix the data or set on_invalid: drop")
    warnings.warn(f"{name}: dropped {sum(counts.values())} of {len(rows)} rows ({_reasons_text(counts)})",
                  stacklevel=3)
    return [row for row, reason in zip(rows, reasons) if not reason]
