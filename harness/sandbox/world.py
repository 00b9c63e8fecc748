"""Building the sandbox world, once per configuration, into the cache.

What is built, in order:
1. the language models (cached on their own, by the settings that shape them, so that changing
   only a data setting such as flip_rate reuses them): a corpus of reviews and dialogues from the
   grammar, some made disfluent, plus statements of the world's facts and myths, in-context
   reasoning and instructed reviews (harness.sandbox.facts); demonstrations; a word-level
   tokenizer fitted to them; a tiny Llama pretrained on the corpus (the `base` start) and
   fine-tuned on the demonstrations (the SFT model, the `sft` start every method starts from by
   default); and the `instruct` start, fine-tuned from the same pretrained weights by a stronger
   recipe (twice the demonstrations, a larger share that follow an instruction, more steps);
   (each start's scores on the capability categories are added beside the summary, in
   start_scores.json, by harness.evaluate.sandbox_tasks.score_starts: evaluation sits above);
2. the data, sampled from the SFT model and labelled with the gold reward, as jsonl under
   data/ in TRL's column names (see DATA_FILES);
3. summary.json: sizes, the SFT model's gold-reward distribution, samples, and for every file
   its rows, label noise, gold agreement and lengths (`harness sandbox show` prints it).

A world's folder is named by the hash of its configuration and SANDBOX_VERSION, so a change of
either builds a new world and an unchanged one is reused. Every part draws from a random stream
of its own (`_stream`), so a seed fixes everything.
"""

from __future__ import annotations

import copy
import json
import random
import shutil
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from harness.cache import cached_folder, content_hash
from harness.data.jsonl import read_jsonl, write_jsonl
from harness.sandbox import facts, grammar, shapes, summary as summarize
from harness.sandbox.lm import (
    TinyModelConfig,
    build_model,
    encode_demonstrations,
    fit_tokenizer,
    pack_documents,
    train_next_token,
)
from harness.sandbox.reward import BradleyTerryJudge, GoldReward
from harness.data.tokenize import encode_turns, open_turn, render_turns
from harness.errors import HarnessError, did_you_mean
from harness.suite import SANDBOX_MODELS, SANDBOX_VERSION
from harness.sampling import SamplingConfig, sampling_problem


# Every data file of a world (data/<name>.jsonl) and its columns; the trainer reads these.
DATA_FILES: dict[str, tuple[str, ...]] = {
    "pairs_train": ("prompt", "chosen", "rejected", "score_chosen", "score_rejected", "label_flipped",
                    "stage", "sft_margin", "chosen_reward", "rejected_reward"),
    "pairs_eval": ("prompt", "chosen", "rejected", "score_chosen", "score_rejected", "label_flipped",
                   "stage", "sft_margin", "chosen_reward", "rejected_reward"),
    "unpaired_train": ("prompt", "completion", "label", "score", "label_flipped"),
    "sft_train": ("prompt", "completion"),
    "sessions_train": ("prompt", "chosen_turns", "rejected_turns", "first_bad_turn", "segment_length",
                       "score_chosen", "score_rejected"),
    "sessions_eval": ("prompt", "chosen_turns", "rejected_turns", "first_bad_turn", "segment_length",
                      "score_chosen", "score_rejected"),
    "eval_prompts": ("prompt",),
}

# The settings that shape the language model (the rest only shape the data sampled from it).
LM_FIELDS = ("seed", "corpus_documents", "corpus_sessions", "corpus_noise", "demonstrations",
             "session_demonstrations", "max_length", "model", "pretrain_steps", "pretrain_lr",
             "pretrain_batch_size", "sft_steps", "sft_lr", "batch_size", "corpus_facts", "corpus_rules", "corpus_reasoning",
             "corpus_instructed", "instructed_share", "instruct_demonstrations", "instruct_instructed_share",
             "instruct_steps")

# The starting models a world provides: suite `model:` value -> its folder in the world.
STARTS = dict(zip(SANDBOX_MODELS, ("sft", "pretrained", "instruct")))
START_SCORES = "start_scores.json"  # beside summary.json: written by harness.evaluate.sandbox_tasks


@dataclass(frozen=True)
class SandboxConfig:
    """Everything that determines the sandbox world; its hash names the cache folder."""

    seed: int = 0
    # the language model
    corpus_documents: int = 12000  # reviews in the pretraining corpus
    corpus_sessions: int = 3000  # dialogues in the pretraining corpus
    corpus_noise: float = 0.3  # fraction of corpus documents given one disfluency
    demonstrations: int = 3000  # single-turn (prompt, completion) demonstrations for fine-tuning
    session_demonstrations: int = 800  # agent turns of dialogues, also fine-tuned on
    max_length: int = 64  # tokens per pretraining row and per demonstration
    model: TinyModelConfig = field(default_factory=TinyModelConfig)
    pretrain_steps: int = 400  # 160 before the capability material, 320 before v5's doubled facts
    pretrain_lr: float = 3e-3
    pretrain_batch_size: int = 32  # packed rows of max_length tokens
    sft_steps: int = 80
    sft_lr: float = 1e-3
    batch_size: int = 64
    # the capability categories' material in the corpus and demonstrations (harness.sandbox.facts)
    corpus_facts: int = 12000  # documents stating facts (and myths) about people
    corpus_rules: int = 3000  # the world's rule stated ("a baker uses ovens .")
    corpus_reasoning: int = 12000  # the world's rule applied to premises (4000: not learned)
    corpus_instructed: int = 600  # reviews under an instruction that they follow
    instructed_share: float = 0.2  # of the single-turn SFT demonstrations
    # the instruction-tuned start: the same pretrained weights, a stronger fine-tuning recipe
    instruct_demonstrations: int = 6000  # single-turn; plus twice the session demonstrations
    instruct_instructed_share: float = 0.5
    instruct_steps: int = 120
    # the data
    train_pairs: int = 512
    eval_prompts: int = 64
    eval_pairs: int = 128
    unpaired: int = 512
    kto_desirable_ratio: float = 1.0  # desirable : undesirable rows of unpaired_train
    kto_threshold: float | None = None  # gold reward a desirable sample beats; None: the median
    sessions: int = 128
    eval_sessions: int = 32
    session_exchanges: int = 3  # user/agent exchanges per dialogue
    session_segment_turns: int = 3  # most turns in a segment (agent, user, agent, ...)
    session_candidates: int = 3  # agent answers sampled per turn when looking for good and bad
    session_threshold: float = 0.05  # an agent turn is bad at gold ≤ −t, good at ≥ t
    stages: int = 2  # sDPO's ordered chunks of pairs_train
    max_new_tokens: int = 24
    session_max_new_tokens: int = 16
    # how the data are sampled from the SFT model (defaults: its own, untruncated distribution)
    sample_temperature: float = 1.0
    sample_top_k: int = 0  # 0: off
    sample_top_p: float = 1.0
    # the gold reward and the judge
    judge_temperature: float = 0.25
    flip_rate: float = 0.0
    length_weight: float = 0.0
    fluency_weight: float = 0.0

    @classmethod
    def from_dict(cls, given: dict[str, Any] | None, where: str) -> SandboxConfig:
        """Build from a suite's `sandbox:` mapping, rejecting unknown keys with a suggestion."""
        given = dict(given or {})
        known = {f.name for f in fields(cls)}
        for key in given:
            if key not in known:
                raise HarnessError(f"{where}: unknown key sandbox.{key}{did_you_mean(key, known)}")
        model = given.pop("model", None)
        if model is not None:
            model_known = {f.name for f in fields(TinyModelConfig)}
            for key in model:
                if key not in model_known:
                    hint = did_you_mean(key, model_known)
                    raise HarnessError(f"{where}: unknown key sandbox.model.{key}{hint}")
            given["model"] = TinyModelConfig(**model)
        try:
            config = cls(**given)
        except TypeError as err:
            raise HarnessError(f"{where}: bad sandbox settings ({err})") from None
        config.validate(where)
        return config

    def validate(self, where: str) -> None:
        """Reject values that cannot build a world, naming the key."""
        checks = [
            ("flip_rate", 0.0 <= self.flip_rate < 0.5, "a probability below 0.5"),
            ("corpus_noise", 0.0 <= self.corpus_noise <= 1.0, "a fraction in [0, 1]"),
            ("instructed_share", 0.0 <= self.instructed_share <= 1.0, "a fraction in [0, 1]"),
            ("instruct_instructed_share", 0.0 <= self.instruct_instructed_share <= 1.0, "a fraction in [0, 1]"),
            ("judge_temperature", self.judge_temperature > 0, "positive"),
            ("kto_desirable_ratio", self.kto_desirable_ratio > 0, "positive"),
            ("stages", self.stages >= 1, "at least 1"),
            ("session_exchanges", self.session_exchanges >= 1, "at least 1"),
            ("session_segment_turns", self.session_segment_turns >= 1, "at least 1"),
            ("session_candidates", self.session_candidates >= 2, "at least 2"),
            ("session_threshold", self.session_threshold >= 0, "non-negative"),
        ]
        for name in ("corpus_documents", "demonstrations", "train_pairs", "eval_prompts", "pretrain_steps",
                     "sft_steps", "batch_size", "pretrain_batch_size", "max_new_tokens", "max_length",
                     "instruct_demonstrations", "instruct_steps"):
            checks.append((name, getattr(self, name) >= 1, "at least 1"))
        for name in ("corpus_sessions", "session_demonstrations", "eval_pairs", "unpaired", "sessions",
                     "eval_sessions", "corpus_facts", "corpus_rules", "corpus_reasoning", "corpus_instructed"):
            checks.append((name, getattr(self, name) >= 0, "non-negative"))
        for name, ok, what in checks:
            if not ok:
                raise HarnessError(f"{where}: sandbox.{name} = {getattr(self, name)!r} must be {what}")
        problem = sampling_problem(temperature=self.sample_temperature, top_k=self.sample_top_k,
                                   top_p=self.sample_top_p, max_new_tokens=self.max_new_tokens)
        if problem:
            raise HarnessError(f"{where}: sandbox.sample_{problem}")

    def sampling(self, max_new_tokens: int) -> SamplingConfig:
        """How the data are sampled from the SFT model, with completions of at most `max_new_tokens`."""
        return SamplingConfig(max_new_tokens=max_new_tokens, temperature=self.sample_temperature,
                              top_k=self.sample_top_k, top_p=self.sample_top_p)

    def key(self) -> str:
        return content_hash({"version": SANDBOX_VERSION, **asdict(self)})

    def lm_key(self) -> str:
        settings = asdict(self)
        return content_hash({"version": SANDBOX_VERSION, **{k: settings[k] for k in LM_FIELDS}})

    def gold_reward(self) -> GoldReward:
        """The gold reward these settings define (what evaluation should score with)."""
        return GoldReward(self.length_weight, self.fluency_weight)

    def judge(self) -> BradleyTerryJudge:
        return BradleyTerryJudge(self.judge_temperature, self.flip_rate)


@dataclass(frozen=True)
class Sandbox:
    """Paths into one built sandbox world."""

    root: Path

    @property
    def tokenizer_dir(self) -> Path:
        return self.root / "sft"  # the tokenizer is saved beside the SFT weights

    @property
    def sft_dir(self) -> Path:
        return self.root / "sft"

    @property
    def pretrained_dir(self) -> Path:
        return self.root / "pretrained"

    @property
    def instruct_dir(self) -> Path:
        return self.root / "instruct"

    def start_dirs(self) -> dict[str, Path]:
        """Suite `model:` value -> folder, for every starting model of the world (STARTS)."""
        return {name: self.root / part for name, part in STARTS.items()}

    def data(self, name: str) -> Path:
        return self.root / "data" / f"{name}.jsonl"

    def summary(self) -> dict[str, Any]:
        """summary.json, with the starts' category scores (start_scores.json) once they are made."""
        scores = self.root / START_SCORES
        extra = {"start_scores": json.loads(scores.read_text())} if scores.exists() else {}
        return {**json.loads((self.root / "summary.json").read_text()), **extra, "root": str(self.root)}


# Torch threads while building. The tiny model's matmuls are too small for intra-op parallelism to
# pay: a second thread gains little on an idle 2-core machine and, measured on a busy one, makes
# training and sampling 10-20 times slower (threads spin waiting for each other).
BUILD_THREADS = 1


def load_or_build_sandbox(config: SandboxConfig, *, verbose: bool = True) -> tuple[Sandbox, bool]:
    """The sandbox for `config`, built now if not cached. Returns (sandbox, built_now)."""
    path, built = cached_folder("sandbox", config.key(), lambda tmp: _build_with_threads(config, tmp, verbose))
    return Sandbox(path), built


def _build_with_threads(config: SandboxConfig, out: Path, verbose: bool) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(BUILD_THREADS)
    try:
        _build(config, out, verbose)
    finally:
        torch.set_num_threads(before)


def find_sandbox(config: SandboxConfig) -> Sandbox | None:
    """The cached sandbox for `config`, or None when it is not built."""
    from harness.cache import cache_root

    path = cache_root() / "sandbox" / config.key()
    return Sandbox(path) if (path / "summary.json").exists() else None


def sandbox_validation_prompts(sandbox: Sandbox, config: SandboxConfig, n: int) -> list[str]:
    """`n` distinct prompts for selecting hyper-parameters (harness.tuning), drawn from the
    language's prompt grammar by a stream of their own and disjoint from every prompt the world's
    data files hold: the test prompts, the held-out pairs and every training file. Derived from the
    built world, not stored in it, so worlds built before tuning existed serve as they are."""
    taken = {row["prompt"] for name in DATA_FILES if sandbox.data(name).exists()
             for row in read_jsonl(sandbox.data(name))}
    rng = _stream(config.seed, "validation_prompts")
    out: dict[str, None] = {}
    for _ in range(100 * n + 1000):  # the grammar has thousands of prompts; a cap, not a loop forever
        if len(out) == n:
            return list(out)
        p = grammar.prompt(rng)
        if p not in taken:
            out[p] = None
    raise HarnessError(f"sandbox {config.key()}: found only {len(out)} prompts outside its data for "
                       f"{n} validation prompts; lower tune.validation_prompts")


def _stream(seed: int, part: str) -> random.Random:
    """The random stream of one part of the build (str seeds hash with SHA-512: stable)."""
    return random.Random(f"sandbox/{seed}/{part}")


def _say(verbose: bool):
    return print if verbose else (lambda *a, **k: None)


# ---------------------------------------------------------------------------------------------
# 1. The language model


def _build_lm(config: SandboxConfig, out: Path, verbose: bool) -> None:
    say = _say(verbose)
    say(f"sandbox: training the language model {config.lm_key()} (seed {config.seed})")
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    rng = _stream(config.seed, "corpus")
    documents = [grammar.document(rng) for _ in range(config.corpus_documents)]
    documents += [render_turns(grammar.session(rng)) for _ in range(config.corpus_sessions)]
    rng.shuffle(documents)
    noisy = 0
    for i in range(len(documents)):
        if rng.random() < config.corpus_noise:
            documents[i], noisy = grammar.corrupt(documents[i], rng), noisy + 1
    demonstrations = _demonstrations(rng, config.demonstrations, config.session_demonstrations, config.instructed_share)
    # The capability material draws from a stream of its own, so the reviews above are what
    # they were before it was added.
    documents += _capability_documents(config, _stream(config.seed, "capabilities"))
    rng.shuffle(documents)
    instruct_demonstrations = _demonstrations(_stream(config.seed, "instruct"), config.instruct_demonstrations,
                                              2 * config.session_demonstrations, config.instruct_instructed_share)
    tokenizer = fit_tokenizer(documents + [f"{p} {c}" for p, c in demonstrations],
                              grammar.vocabulary() + facts.vocabulary())

    model = build_model(config.model, tokenizer, config.seed)
    rows = pack_documents(tokenizer, documents, config.max_length)
    pretrain_loss = train_next_token(
        model, rows, steps=config.pretrain_steps, batch_size=min(config.pretrain_batch_size, len(rows)),
        lr=config.pretrain_lr, seed=config.seed, completion_only=False, pad_id=tokenizer.pad_token_id,
        desc="sandbox: pretraining",
    )
    model.save_pretrained(out / "pretrained")
    tokenizer.save_pretrained(out / "pretrained")
    pretrained = copy.deepcopy(model)
    pretrain_seconds = time.perf_counter() - started
    sft_loss = train_next_token(
        model, encode_demonstrations(tokenizer, demonstrations, config.max_length), steps=config.sft_steps,
        batch_size=min(config.batch_size, len(demonstrations)), lr=config.sft_lr, seed=config.seed + 1,
        completion_only=True, pad_id=tokenizer.pad_token_id, desc="sandbox: fine-tuning",
    )
    model.save_pretrained(out / "sft")
    tokenizer.save_pretrained(out / "sft")
    write_jsonl(out / "sft_train.jsonl", ({"prompt": p, "completion": c} for p, c in demonstrations))
    sft_seconds = time.perf_counter() - started - pretrain_seconds
    instruct_loss = train_next_token(
        pretrained, encode_demonstrations(tokenizer, instruct_demonstrations, config.max_length),
        steps=config.instruct_steps, batch_size=min(config.batch_size, len(instruct_demonstrations)),
        lr=config.sft_lr, seed=config.seed + 2, completion_only=True, pad_id=tokenizer.pad_token_id,
        desc="sandbox: instruction tuning",
    )
    pretrained.save_pretrained(out / "instruct")
    tokenizer.save_pretrained(out / "instruct")
    instruct_seconds = time.perf_counter() - started - pretrain_seconds - sft_seconds
    info = {
        "vocab_size": len(tokenizer), "parameters": sum(p.numel() for p in model.parameters()),
        "pretrain_loss": round(pretrain_loss, 4), "sft_loss": round(sft_loss, 4),
        "instruct_loss": round(instruct_loss, 4), "instruct_demonstrations": len(instruct_demonstrations),
        "corpus_documents": len(documents), "noisy_documents": noisy,
        "corpus_tokens": sum(len(r.input_ids) for r in rows), "pretrain_rows": len(rows),
        "demonstrations": len(demonstrations),
        "seconds": {"pretraining": round(pretrain_seconds, 1), "fine-tuning": round(sft_seconds, 1),
                    "instruction tuning": round(instruct_seconds, 1)},
    }
    (out / "lm.json").write_text(json.dumps(info, indent=2))
    say(f"sandbox: language model trained in {time.perf_counter() - started:.1f} s")


def _demonstrations(rng: random.Random, single: int, sessions: int, instructed_share: float) -> list[tuple[str, str]]:
    """`single` single-turn demonstrations (a share of them following an instruction) and
    `sessions` agent turns of dialogues, shuffled."""
    out = [facts.instructed(rng) if rng.random() < instructed_share else grammar.demonstration(rng)
           for _ in range(single)]
    for _ in range(sessions):
        turns = grammar.session(rng)
        j = rng.randrange(1, len(turns), 2)  # an agent turn
        out.append((open_turn(render_turns(turns[:j])), turns[j]["content"]))
    rng.shuffle(out)
    return out


def _capability_documents(config: SandboxConfig, rng: random.Random) -> list[str]:
    """The corpus's statements of facts and myths, reasoning documents and instructed reviews."""
    docs = [facts.fact_document(rng) for _ in range(config.corpus_facts)]
    docs += [facts.reasoning_document(rng) for _ in range(config.corpus_reasoning)]
    docs += [facts.rule_document(rng) for _ in range(config.corpus_rules)]
    docs += [" ".join(facts.instructed(rng)) for _ in range(config.corpus_instructed)]
    return docs


# ---------------------------------------------------------------------------------------------
# 2. The data, and 3. the summary


def _build(config: SandboxConfig, out: Path, verbose: bool) -> None:
    say = _say(verbose)
    started = time.perf_counter()
    lm_dir, lm_built = cached_folder("sandbox-lm", config.lm_key(), lambda tmp: _build_lm(config, tmp, verbose))
    for part in STARTS.values():
        shutil.copytree(lm_dir / part, out / part)
    lm = json.loads((lm_dir / "lm.json").read_text())
    seconds = dict(lm["seconds"]) if lm_built else {"language model (cached)": 0.0}
    say(f"sandbox: sampling the data of world {config.key()}")

    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out / "sft")
    model = AutoModelForCausalLM.from_pretrained(out / "sft", dtype=torch.float32)
    model.eval()
    reward, judge = config.gold_reward(), config.judge()
    data = out / "data"
    data.mkdir()
    shutil.copyfile(lm_dir / "sft_train.jsonl", data / "sft_train.jsonl")

    t = time.perf_counter()
    eval_prompts, training_prompts = _prompts(config)
    train_prompts = training_prompts(config.train_pairs)
    files: dict[str, list[dict]] = {"eval_prompts": [{"prompt": p} for p in eval_prompts[: config.eval_prompts]]}
    for name, prompts in (("pairs_train", train_prompts), ("pairs_eval", eval_prompts[: config.eval_pairs])):
        files[name] = shapes.preference_pairs(
            model, tokenizer, prompts, reward, judge, _stream(config.seed, name),
            sampling=config.sampling(config.max_new_tokens), max_length=config.max_length, stages=config.stages,
        )
    seconds["pairs"] = time.perf_counter() - t

    t = time.perf_counter()
    unpaired = shapes.unpaired_rows(
        model, tokenizer, training_prompts, reward, judge, _stream(config.seed, "unpaired"),
        rows=config.unpaired, ratio=config.kto_desirable_ratio, threshold=config.kto_threshold,
        sampling=config.sampling(config.max_new_tokens),
    )
    files["unpaired_train"] = unpaired.rows
    seconds["unpaired"] = time.perf_counter() - t

    t = time.perf_counter()
    sessions = shapes.session_rows(
        model, tokenizer, config.sessions + config.eval_sessions, reward, _stream(config.seed, "sessions"),
        exchanges=config.session_exchanges, segment_turns=config.session_segment_turns,
        candidates=config.session_candidates, threshold=config.session_threshold,
        sampling=config.sampling(config.session_max_new_tokens),
    )
    files["sessions_train"] = sessions[: config.sessions]
    files["sessions_eval"] = sessions[config.sessions :]
    seconds["sessions"] = time.perf_counter() - t
    asked = {"pairs_train": config.train_pairs, "unpaired_train": config.unpaired, "sessions_train": config.sessions,
             "sessions_eval": config.eval_sessions}
    for name, n in asked.items():
        if len(files[name]) < n:
            warnings.warn(f"sandbox {config.key()}: {name} has {len(files[name])} rows, not {n} "
                          "(the SFT model rarely gave what that shape needs)", stacklevel=2)
    for name, rows in files.items():  # exactly the documented columns, in their order
        write_jsonl(data / f"{name}.jsonl", ({c: row[c] for c in DATA_FILES[name]} for row in rows))

    summary = _summary(config, lm, files, unpaired, read_jsonl(data / "sft_train.jsonl"), tokenizer)
    summary["seconds"] = {k: round(v, 1) for k, v in {**seconds, "total": time.perf_counter() - started}.items()}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    say(f"sandbox: world {config.key()} built in {summary['seconds']['total']:.1f} s")


def _prompts(config: SandboxConfig) -> tuple[list[str], Callable[[int], list[str]]]:
    """Held-out prompts (distinct, for eval_prompts and pairs_eval), and a supply of training
    prompts (pairs_train's, then unpaired_train's), none of which is a held-out prompt."""
    rng = _stream(config.seed, "prompts")
    held_out: list[str] = []
    seen: set[str] = set()
    while len(held_out) < max(config.eval_prompts, config.eval_pairs):
        p = grammar.prompt(rng)
        if p not in seen:
            seen.add(p)
            held_out.append(p)

    def training(n: int) -> list[str]:
        out = []
        while len(out) < n:
            p = grammar.prompt(rng)
            if p not in seen:
                out.append(p)
        return out

    return held_out, training


def _summary(config: SandboxConfig, lm: dict, files: dict[str, list[dict]], unpaired: shapes.UnpairedResult,
             sft_rows: list[dict], tokenizer) -> dict[str, Any]:
    pairs = files["pairs_train"]
    texts = [r[side] for r in pairs for side in ("chosen", "rejected")]
    prompts = [r["prompt"] for r in pairs for _ in (0, 1)]
    rewards = [r[f"score_{side}"] for r in pairs for side in ("chosen", "rejected")]
    disfluency = [grammar.disfluency(t) for t in texts]
    data: dict[str, Any] = {}
    for name in ("pairs_train", "pairs_eval"):
        data[name] = summarize.pair_stats(files[name])
    data["unpaired_train"] = summarize.unpaired_stats(unpaired.rows, unpaired.threshold, unpaired.pool)
    data["sft_train"] = summarize.sft_stats(sft_rows)
    for name in ("sessions_train", "sessions_eval"):
        rows = files[name]
        tokens = [len(encode_turns(tokenizer, r["prompt"], r[side], 10_000)[0].input_ids)
                  for r in rows for side in ("chosen_turns", "rejected_turns")]
        data[name] = summarize.session_stats(rows, tokens, config.max_length)
    data["eval_prompts"] = {"rows": len(files["eval_prompts"]),
                            "lengths": {"prompt": summarize.lengths([r["prompt"] for r in files["eval_prompts"]])}}
    for name, d in data.items():
        d["columns"] = list(DATA_FILES[name])
    return {
        "key": config.key(),
        "lm_key": config.lm_key(),
        "version": SANDBOX_VERSION,
        "config": asdict(config),
        "vocab_size": lm["vocab_size"],
        "parameters": lm["parameters"],
        "pretrain_loss": lm["pretrain_loss"],
        "sft_loss": lm["sft_loss"],
        "lm": lm,
        "sft_samples": {
            "reward": summarize.distribution(rewards),
            "disfluent_fraction": round(sum(d > 0 for d in disfluency) / max(len(texts), 1), 4),
            "disfluency_mean": round(statistics.fmean(disfluency), 4) if texts else 0.0,
            "lengths": summarize.lengths(texts),
            # how many of the vocabulary's words the samples use (a top-50 sampler capped this)
            "distinct_words": len({w for t in texts for w in t.split()}),
        },
        "samples": _examples(prompts, texts, rewards),
        "data": data,
    }


def _examples(prompts: list[str], texts: list[str], rewards: list[float], k: int = 6) -> list[dict[str, Any]]:
    """k samples spread over the reward range (lowest to highest), for a reader to see."""
    order = sorted(range(len(texts)), key=lambda i: (rewards[i], i))
    if not order:
        return []
    picks = sorted({order[round(j * (len(order) - 1) / max(k - 1, 1))] for j in range(k)}, key=lambda i: rewards[i])
    return [{"prompt": prompts[i], "completion": texts[i], "reward": round(rewards[i], 4)} for i in picks]
