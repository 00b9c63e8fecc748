"""A pairwise LLM judge behind an OpenAI-compatible chat server (`evaluate.judge`): vLLM's
`vllm serve`, or any server with /v1/chat/completions and /v1/models.

Each policy sample is compared with its baseline (the start model's sample, the dataset's chosen
response, or a file of reference outputs) twice, once in each order, and its score is the mean
of the two, so that a judge which favours one position gains nothing from it. Two templates:

- alpaca_eval: the judge answers one token, "m" (the first output) or "M" (the second), as
  AlpacaEval's weighted annotators ask; where the server returns the top log-probs of that token,
  the score is P(m) / (P(m) + P(M)) (the weighted form), else the answer itself.
- arena_hard: the judge writes a judgment ending in a verdict label, [[A>>B]], [[A>B]], [[A=B]],
  [[B>A]] or [[B>>A]], as Arena-Hard's judges do; A ahead counts 1, a tie ½, B ahead 0 (the
  strength is kept in the verdict text, not in the score).

The prompts are the harness's own wording. A verdict is cached under $HARNESS_CACHE/judge by the
hash of everything that decides it (model, template, instruction, both outputs in their order),
so a rerun asks nothing twice. Requests run `concurrency` at a time, each with a timeout, and
a failed request is retried with exponential backoff; a judge that still does not answer fails
the run (JudgeFailed: the runner records it as failed), and the suite goes on.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.cache import cache_root, content_hash
from harness.errors import HarnessError, did_you_mean
from harness.suite import JUDGE_BASELINES, JudgeConfig

API_KEY_VARIABLE = "OPENAI_API_KEY"  # read when set; a local server takes any key
PROBE_TIMEOUT = 10.0  # seconds the preflight waits for /v1/models


# ----------------------------------------------------------------------------------------------
# Templates: the messages of one comparison, and how the answer is read


@dataclass(frozen=True)
class Reading:
    """One judge answer read: the verdict's label ("m", "A>B", ...; None when none was found) and
    the first output's share of the win in [0, 1] (NaN when unreadable)."""

    label: str | None
    first_share: float


@dataclass(frozen=True)
class Template:
    name: str
    version: str  # bumped when the wording or the reading changes: part of every cached verdict's key
    system: str
    user: str  # str.format fields: instruction, first, second
    read: Callable[[str, list[dict[str, float]] | None], Reading]  # (answer text, top log-probs of its first token)
    answer_tokens: Callable[[JudgeConfig], int]
    wants_logprobs: bool

    def messages(self, instruction: str, first: str, second: str) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system},
                {"role": "user", "content": self.user.format(instruction=instruction, first=first, second=second)}]


def read_one_token(text: str, top_logprobs: list[dict[str, float]] | None) -> Reading:
    """alpaca_eval's answer: "m" for the first output, "M" for the second. With the answer token's
    top log-probs, the share is the probability mass on m against m and M together."""
    label = text.strip()[:1] if text.strip()[:1] in ("m", "M") else None
    mass = {"m": 0.0, "M": 0.0}
    for entry in top_logprobs or []:
        token = str(entry.get("token", "")).strip()
        if token in mass:
            mass[token] += math.exp(float(entry["logprob"]))
    if mass["m"] + mass["M"] > 0:
        return Reading(label, mass["m"] / (mass["m"] + mass["M"]))
    return Reading(label, {"m": 1.0, "M": 0.0}.get(label or "", math.nan))


VERDICT_LABEL = re.compile(r"\[\[\s*([AB]\s*(?:>>|>|=)\s*[AB])\s*\]\]")
FIRST_SHARE = {"A>>B": 1.0, "A>B": 1.0, "A=B": 0.5, "B=A": 0.5, "B>A": 0.0, "B>>A": 0.0}


def read_verdict_label(text: str, _top_logprobs=None) -> Reading:
    """arena_hard's answer: the judgment's verdict label. Several different labels in one answer
    (the judge changed its mind) read as none."""
    labels = {re.sub(r"\s+", "", found) for found in VERDICT_LABEL.findall(text)}
    labels &= set(FIRST_SHARE)
    if len(labels) != 1:
        return Reading(None, math.nan)
    label = labels.pop()
    return Reading(label, FIRST_SHARE[label])


ALPACA_EVAL = Template(
    name="alpaca_eval", version="1",
    system=("You compare two responses an AI assistant could give to the same instruction and say which one a "
            "careful, well-informed reader would rather receive: the more helpful, correct and complete one. "
            "The order in which the two appear means nothing, and a longer response is not better for being "
            "longer."),
    user=("Instruction:\n{instruction}\n\n"
          "=== Response m ===\n{first}\n=== End of response m ===\n\n"
          "=== Response M ===\n{second}\n=== End of response M ===\n\n"
          "Which response is better? Reply with a single character and nothing else: m for the first "
          "response, M for the second."),
    read=read_one_token, answer_tokens=lambda config: 1, wants_logprobs=True,
)

ARENA_HARD = Template(
    name="arena_hard", version="1",
    system=("You are the referee between two AI assistants that answered the same user prompt. Begin by "
            "working out a good answer of your own. Then weigh each assistant's answer against it: name its "
            "mistakes and omissions, and judge whether it is helpful, relevant and to the point. Neither the "
            "order of the answers nor their length should sway you. End with exactly one of these verdict "
            "labels on a line of its own:\n"
            "[[A>>B]] when assistant A is clearly better,\n"
            "[[A>B]] when assistant A is a little better,\n"
            "[[A=B]] when they are about as good,\n"
            "[[B>A]] when assistant B is a little better,\n"
            "[[B>>A]] when assistant B is clearly better."),
    user=("User prompt:\n{instruction}\n\n"
          "=== Answer A ===\n{first}\n=== End of answer A ===\n\n"
          "=== Answer B ===\n{second}\n=== End of answer B ==="),
    read=read_verdict_label, answer_tokens=lambda config: config.max_tokens, wants_logprobs=False,
)

TEMPLATES: dict[str, Template] = {t.name: t for t in (ALPACA_EVAL, ARENA_HARD)}


def template_named(name: str, where: str = "evaluate.judge.template") -> Template:
    if name not in TEMPLATES:
        raise HarnessError(f"{where}: unknown judge template {name!r}{did_you_mean(name, TEMPLATES)}")
    return TEMPLATES[name]


# ----------------------------------------------------------------------------------------------
# Talking to the server


def judge_client(config: JudgeConfig, *, timeout: float | None = None):
    """An OpenAI client for the judge's server; retries are ours (`ask`), not the client's."""
    from openai import OpenAI

    return OpenAI(base_url=config.base_url, api_key=os.environ.get(API_KEY_VARIABLE) or "EMPTY",
                  timeout=config.timeout if timeout is None else timeout, max_retries=0)


def _retryable(err: Exception) -> bool:
    """A refused connection, a timeout, rate limiting or a server error may pass; a bad request will not."""
    import openai

    if isinstance(err, (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError)):
        return True
    return isinstance(err, openai.APIStatusError) and (err.status_code in (408, 409, 429) or err.status_code >= 500)


class JudgeFailed(HarnessError):
    """The judge's server refused or never answered a request: the run that needed the verdict is
    recorded as failed with this reason, as a run that fails in training is (harness.runner)."""


@dataclass(frozen=True)
class Answer:
    text: str
    top_logprobs: list[dict[str, float]] | None
    tokens: int  # prompt and completion tokens, as the server counted them (0 when it does not say)
    seconds: float  # the request's wall-clock time, retries and their waits included


def ask(client, config: JudgeConfig, template: Template, messages: list[dict[str, str]],
        sleep: Callable[[float], None] = time.sleep) -> Answer:
    """One judge request, retried `config.retries` times after a retryable failure, waiting
    backoff · 2^k seconds before the k-th retry."""
    started = time.perf_counter()
    extra = {"logprobs": True, "top_logprobs": 5} if template.wants_logprobs else {}
    for attempt in range(config.retries + 1):
        try:
            response = client.chat.completions.create(
                model=config.model, messages=messages, temperature=0.0,
                max_tokens=template.answer_tokens(config), **extra)
            break
        except Exception as err:  # noqa: BLE001 - sorted by _retryable; the rest are raised
            if not _retryable(err):
                raise JudgeFailed(f"judge {config.model} at {config.base_url} refused a request: {err}") from None
            if attempt == config.retries:
                raise JudgeFailed(f"judge {config.model} at {config.base_url} did not answer after "
                                f"{config.retries + 1} tries ({type(err).__name__}: {err}); is the server up?") from None
            sleep(config.backoff * 2**attempt)
    choice = response.choices[0]
    usage = response.usage
    return Answer(text=choice.message.content or "", top_logprobs=_first_token_top_logprobs(choice),
                  tokens=int(usage.total_tokens) if usage is not None else 0,
                  seconds=time.perf_counter() - started)


def _first_token_top_logprobs(choice) -> list[dict[str, float]] | None:
    content = getattr(getattr(choice, "logprobs", None), "content", None)
    if not content:
        return None
    return [{"token": t.token, "logprob": float(t.logprob)} for t in content[0].top_logprobs or []]


# ----------------------------------------------------------------------------------------------
# Verdicts, cached by content


@dataclass(frozen=True)
class Verdict:
    """One comparison in one order: the label, the first output's share, what it cost."""

    label: str | None
    first_share: float
    tokens: int
    seconds: float


class VerdictCache:
    """Verdicts as small JSON files under `<cache>/judge/`, named by the hash of what decides them."""

    def __init__(self, root: Path | None = None):
        self.root = (root or cache_root()) / "judge"

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> Verdict | None:
        try:
            data = json.loads(self.path(key).read_text())
        except (OSError, ValueError):
            return None
        return Verdict(data["label"], math.nan if data["first_share"] is None else float(data["first_share"]),
                       int(data["tokens"]), float(data["seconds"]))

    def put(self, key: str, verdict: Verdict) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {**asdict(verdict), "first_share": None if math.isnan(verdict.first_share) else verdict.first_share}
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", dir=path.parent)
        with os.fdopen(fd, "w") as out:
            json.dump(data, out)
        os.replace(tmp, path)  # a reader never sees half a verdict


@dataclass(frozen=True)
class PairVerdict:
    """A policy sample against its baseline, judged in both orders."""

    policy_first: Verdict
    baseline_first: Verdict

    @property
    def score(self) -> float:
        """The policy's share of the win, averaged over the orders that gave a verdict (NaN: none did)."""
        shares = [s for s in (self.policy_first.first_share, 1.0 - self.baseline_first.first_share)
                  if not math.isnan(s)]
        return float(np.mean(shares)) if shares else math.nan

    @property
    def labels(self) -> str:
        """Both verdicts as the judge gave them, policy-first order first ("?" where none was read)."""
        return f"{self.policy_first.label or '?'} / {self.baseline_first.label or '?'}"


class PairwiseJudge:
    """Judges (instruction, policy output, baseline output) triples through the server, both orders each."""

    def __init__(self, config: JudgeConfig, *, client=None, cache: VerdictCache | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.config = config
        self.template = template_named(config.template)
        self.client = client if client is not None else judge_client(config)
        self.cache = cache or VerdictCache()
        self.sleep = sleep
        self.requests = 0  # sent to the server by this judge (cache hits send none)
        self._lock = threading.Lock()

    def key(self, instruction: str, first: str, second: str) -> str:
        t = self.template
        return content_hash({"model": self.config.model, "template": t.name, "version": t.version,
                             "answer_tokens": t.answer_tokens(self.config),
                             "instruction": instruction, "first": first, "second": second}, length=32)

    def verdict(self, instruction: str, first: str, second: str) -> Verdict:
        key = self.key(instruction, first, second)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        with self._lock:
            self.requests += 1
        answer = ask(self.client, self.config, self.template, self.template.messages(instruction, first, second),
                     sleep=self.sleep)
        reading = self.template.read(answer.text, answer.top_logprobs)
        verdict = Verdict(reading.label, reading.first_share, answer.tokens, answer.seconds)
        self.cache.put(key, verdict)
        return verdict

    def judge(self, instructions: Sequence[str], policy: Sequence[str], baseline: Sequence[str]) -> list[PairVerdict]:
        """Every triple in both orders, `concurrency` requests at a time; a comparison met twice
        (two samples with the same text) is asked once."""
        orders = [(i, p, b) for i, p, b in zip(instructions, policy, baseline)]
        jobs = [job for i, p, b in orders for job in ((i, p, b), (i, b, p))]
        distinct = list(dict.fromkeys(jobs))
        with ThreadPoolExecutor(max_workers=self.config.concurrency) as pool:
            verdicts = dict(zip(distinct, pool.map(lambda job: self.verdict(*job), distinct)))
        return [PairVerdict(verdicts[jobs[2 * k]], verdicts[jobs[2 * k + 1]]) for k in range(len(orders))]


# ----------------------------------------------------------------------------------------------
# The samples table's judge columns


def judge_name(config: JudgeConfig) -> str:
    return f"{config.model} ({config.template})"


def instruction_text(prompt: Any) -> str:
    """What the judge reads as the instruction: a text prompt itself; a conversation's turns, one
    "role: content" paragraph each (the last is the user's turn the outputs answer)."""
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in prompt)


def reference_outputs(path: Path, where: str) -> dict[str, str]:
    """A file of reference outputs (AlpacaEval's layout): one JSON object per line, or a JSON list,
    each with `instruction` (or `prompt`) and `output`; keyed by the instruction text."""
    from harness.data.jsonl import read_jsonl

    try:
        rows = json.loads(path.read_text()) if path.suffix == ".json" else read_jsonl(path)
    except (OSError, ValueError) as err:
        raise HarnessError(f"{where}: cannot read {path} ({err}); give a .jsonl or .json file of reference outputs")
    out = {}
    for row in rows:
        prompt = row.get("instruction", row.get("prompt")) if isinstance(row, dict) else None
        if not isinstance(prompt, str) or not isinstance(row.get("output"), str):
            raise HarnessError(f"{where}: {path}: every row needs an `instruction` (or `prompt`) and an `output` "
                               f"text; found {str(row)[:80]!r}")
        out.setdefault(prompt, row["output"])
    return out


def baseline_texts(frame: pd.DataFrame, config: JudgeConfig, instructions: list[str]) -> list[str | None]:
    """Per sample, the output the policy's sample is judged against (None: the baseline has none)."""
    if config.baseline == "start":
        return list(frame["baseline_completion"])
    if config.baseline == "chosen":
        return [c if isinstance(c, str) else None for c in frame["chosen_completion"]]
    references = reference_outputs(Path(config.baseline).expanduser(), "evaluate.judge.baseline")
    return [references.get(i) for i in instructions]


def judge_columns(frame: pd.DataFrame, prompts: Sequence[Any], judge: PairwiseJudge) -> pd.DataFrame:
    """The per-sample table with the judge's columns (harness.results.schema.SAMPLE_COLUMNS):
    judge_outcome (the policy's share of the win, both orders averaged; NaN where there is no
    baseline or no verdict), judge_verdicts, judge_tokens, judge_seconds, judge and judge_baseline.
    `prompts`: each row's prompt, a text or a conversation."""
    instructions = [instruction_text(p) for p in prompts]
    against = baseline_texts(frame, judge.config, instructions)
    have = [k for k, b in enumerate(against) if b is not None]
    pairs = judge.judge([instructions[k] for k in have], [str(frame["completion"].iloc[k]) for k in have],
                        [against[k] for k in have])
    by_row = dict(zip(have, pairs))
    frame = frame.copy()
    frame["judge_outcome"] = [by_row[k].score if k in by_row else math.nan for k in range(len(frame))]
    frame["judge_verdicts"] = [by_row[k].labels if k in by_row else None for k in range(len(frame))]
    frame["judge_tokens"] = [_cost(by_row.get(k), "tokens") for k in range(len(frame))]
    frame["judge_seconds"] = [float(_cost(by_row.get(k), "seconds")) for k in range(len(frame))]
    frame["judge"] = judge_name(judge.config)
    frame["judge_baseline"] = judge.config.baseline
    return frame


def _cost(pair: PairVerdict | None, what: str):
    if pair is None:
        return 0
    return getattr(pair.policy_first, what) + getattr(pair.baseline_first, what)


# ----------------------------------------------------------------------------------------------
# Preflight: the server answers and serves the model


def check_judge_settings(config: JudgeConfig, where: Callable[[str], str]) -> None:
    """What can be checked without the server: the template and the baseline (a file must hold
    reference outputs). `where(key)` is the prefix of an error about `evaluate.judge.<key>`."""
    if not config.enabled:
        return
    template_named(config.template, f"{where('template')}: evaluate.judge.template")
    if config.baseline in JUDGE_BASELINES:
        return
    path = Path(config.baseline).expanduser()
    if not path.is_file():
        raise HarnessError(f"{where('baseline')}: evaluate.judge.baseline = {config.baseline!r} is neither "
                           f"{' nor '.join(JUDGE_BASELINES)} nor a file; give start, chosen or a jsonl file of "
                           "{instruction, output} reference outputs")
    reference_outputs(path, f"{where('baseline')}: evaluate.judge.baseline")


def check_judge_server(config: JudgeConfig, where: Callable[[str], str]) -> None:
    """The server at base_url answers /v1/models and lists the judge's model."""
    if not config.enabled:
        return
    import openai

    try:
        served = [m.id for m in judge_client(config, timeout=min(config.timeout, PROBE_TIMEOUT)).models.list()]
    except openai.APIStatusError as err:
        raise HarnessError(f"{where('base_url')}: evaluate.judge.base_url = {config.base_url!r} answered "
                           f"{err.status_code} to /models; give the server's OpenAI API root (e.g. "
                           "http://localhost:8000/v1)") from None
    except openai.APIError as err:
        raise HarnessError(f"{where('base_url')}: evaluate.judge.base_url = {config.base_url!r} does not answer "
                           f"({type(err).__name__}); start the server (e.g. `vllm serve MODEL`) or fix the URL") from None
    if config.model not in served:
        raise HarnessError(f"{where('model')}: evaluate.judge.model = {config.model!r} is not served at "
                           f"{config.base_url}{did_you_mean(config.model, served) if served else ' (it serves none)'}")
