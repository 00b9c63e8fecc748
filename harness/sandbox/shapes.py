"""The sandbox's data shapes, sampled from the SFT model and labelled with the gold reward.

- pairs (DPO and most methods; ODPO reads the scores, sDPO the stages): two samples per prompt,
  labelled by the Bradley-Terry judge, a known fraction of labels flipped on purpose.
- unpaired (KTO): one sample per prompt, desirable when the judge prefers it to the threshold
  (by default the median gold reward of the first samples), in a desirable:undesirable ratio.
- sessions (SDPO): user/agent dialogues whose rejected segment starts at the first bad agent turn
  and whose chosen segment continues the same history with good agent turns.

Every function takes its own `random.Random`, so that each shape is a deterministic function of
the seed and of the SFT model.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from harness.sandbox import grammar
from harness.sandbox.reward import BradleyTerryJudge, GoldReward
from harness.sandbox.stages import assign_stages, implicit_margins
from harness.data.tokenize import TURN_SEPARATOR, open_turn, render_turns
from harness.generation import sample_completions
from harness.sampling import SamplingConfig


def _sample(model, tokenizer, prompts: list[str], n: int, sampling: SamplingConfig, rng: random.Random) -> list[str]:
    """n completions per prompt (prompt-major), drawn as `sampling` says (the world's
    temperature, top-k, top-p and length), from one seed drawn from `rng`."""
    if not prompts:
        return []
    config = replace(sampling, n=n, seed=rng.randrange(2**31), batch_size=256)
    return [c.text for c in sample_completions(model, tokenizer, prompts, config)]


# ---------------------------------------------------------------------------------------------
# Pairs


def preference_pairs(model, tokenizer, prompts: list[str], reward: GoldReward, judge: BradleyTerryJudge,
                     rng: random.Random, *, sampling: SamplingConfig, max_length: int, stages: int) -> list[dict[str, Any]]:
    """Two SFT samples per prompt labelled by the judge (TRL's paired format plus the sandbox's
    columns); `stage` orders them easy to hard by the SFT model's own margin."""
    samples = _sample(model, tokenizer, prompts, 2, sampling, rng)
    pairs = []
    for i, prompt in enumerate(prompts):
        a, b = samples[2 * i], samples[2 * i + 1]
        ra, rb = reward(a), reward(b)
        a_chosen, flipped = judge.label(ra, rb, rng)
        (chosen, rc), (rejected, rr) = ((a, ra), (b, rb)) if a_chosen else ((b, rb), (a, ra))
        pairs.append({
            "prompt": prompt, "chosen": chosen, "rejected": rejected,
            "score_chosen": rc, "score_rejected": rr, "label_flipped": flipped,
            # the old names, kept while readers move to score_* (harness/train reads both)
            "chosen_reward": rc, "rejected_reward": rr,
        })
    margins = implicit_margins(model, tokenizer, pairs, max_length)
    for row, margin, stage in zip(pairs, margins, assign_stages(margins, stages)):
        row["stage"] = stage
        row["sft_margin"] = round(margin, 4)
    return pairs


# ---------------------------------------------------------------------------------------------
# Unpaired


@dataclass
class UnpairedResult:
    rows: list[dict[str, Any]]
    threshold: float
    pool: int  # samples drawn before subsampling to the ratio


def unpaired_rows(model, tokenizer, prompts: Callable[[int], list[str]], reward: GoldReward,
                  judge: BradleyTerryJudge, rng: random.Random, *, rows: int, ratio: float,
                  threshold: float | None, sampling: SamplingConfig) -> UnpairedResult:
    """KTO's data: one SFT sample per prompt, label = the judge prefers it to `threshold` (the
    first batch's median gold reward when None), with flips at the judge's flip rate; then the
    first desirable and undesirable rows in prompt order, in the ratio desirable:undesirable =
    ratio. `prompts(n)` gives n new training prompts; more are drawn while a side is short."""
    want = {True: round(rows * ratio / (1.0 + ratio))}
    want[False] = rows - want[True]
    kept: dict[bool, list[tuple[int, dict]]] = {True: [], False: []}
    seen = {True: 0, False: 0}  # labels drawn, kept or not: each side's share of the samples
    cut, drawn = threshold, 0
    for _attempt in range(8):
        short = {side: want[side] - len(kept[side]) for side in (True, False)}
        if max(short.values()) <= 0:
            break
        # about half of the samples fall on each side of a median; later, the shares seen so far
        share = {side: (seen[side] / drawn if drawn else 0.5) for side in (True, False)}
        n = max(math.ceil(short[side] / max(share[side], 0.02) * 1.25) for side in (True, False) if short[side] > 0)
        batch = prompts(min(n, 20 * rows) + 8)
        samples = _sample(model, tokenizer, batch, 1, sampling, rng)
        scores = reward.many(samples)
        if cut is None:
            cut = statistics.median(scores)
        for prompt, completion, score in zip(batch, samples, scores):
            label, flipped = judge.label(score, cut, rng)
            seen[label] += 1
            if len(kept[label]) < want[label]:
                kept[label].append((drawn, {"prompt": prompt, "completion": completion, "label": label,
                                            "score": score, "label_flipped": flipped}))
            drawn += 1
    ordered = sorted(kept[True] + kept[False], key=lambda pair: pair[0])
    return UnpairedResult([row for _, row in ordered], cut if cut is not None else 0.0, drawn)


# ---------------------------------------------------------------------------------------------
# Sessions


@dataclass
class _Session:
    questions: list[str]
    target: int  # the first exchange at which a branch is tried (so branch points vary)
    history: list[dict[str, str]] = field(default_factory=list)
    branch: int | None = None
    prompt: str = ""
    chosen: list[dict[str, str]] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)
    chosen_scores: list[float] = field(default_factory=list)
    rejected_scores: list[float] = field(default_factory=list)
    dropped: bool = False

    def done(self, segment_turns: int) -> bool:
        return self.dropped or (self.branch is not None and len(self.chosen) + 2 > segment_turns)


def agent_turn(text: str) -> str:
    """A sampled agent turn: up to the first turn separator (the model may go on with the next
    user turn), stripped."""
    words = text.split()
    if TURN_SEPARATOR in words:
        words = words[: words.index(TURN_SEPARATOR)]
    return " ".join(words)


def session_rows(model, tokenizer, count: int, reward: GoldReward, rng: random.Random, *, exchanges: int,
                 segment_turns: int, candidates: int, threshold: float, sampling: SamplingConfig) -> list[dict[str, Any]]:
    """`count` session pairs (SDPO's data), built a round of sampling at a time:

    A session is `exchanges` user questions from the grammar, the agent answering each. At each
    exchange the SFT model proposes `candidates` answers. Before the branch, the history goes on
    with a random acceptable answer (gold reward above −threshold); at or after the session's
    target exchange, if the candidates hold a bad answer (≤ −threshold) and a good one
    (≥ threshold), the session branches there: the worst answer starts the rejected segment (its
    first bad agent turn; every earlier agent turn is acceptable) and the best starts the chosen
    one. Both segments then take the next user question (the same in both) and another answer
    each (chosen: best of the candidates; rejected: a plain sample) until the segment has
    `segment_turns` turns or the session ends, so both have the same length. A session with no
    branch, or whose candidates are all bad before it branched, is dropped and more are drawn.
    """
    out: list[dict[str, Any]] = []
    success = 0.6  # the share of sessions that branch, re-estimated after each attempt
    for _attempt in range(8):
        need = count - len(out)
        if need <= 0:
            break
        drawn = min(math.ceil(need / success * 1.2) + 4, 50 * count + 4)
        sessions = [_Session([grammar.question(rng) for _ in range(exchanges)], rng.randrange(exchanges))
                    for _ in range(drawn)]
        for k in range(exchanges):
            _session_round(model, tokenizer, sessions, k, reward, rng, segment_turns=segment_turns,
                           candidates=candidates, threshold=threshold, sampling=sampling)
        found = [_session_row(s) for s in sessions if s.branch is not None and not s.dropped]
        success = max(len(found) / drawn, success / 4)  # grow at most 4-fold per attempt
        out += found[:need]
    return out


def _session_round(model, tokenizer, sessions: list[_Session], k: int, reward: GoldReward, rng: random.Random,
                   *, segment_turns: int, candidates: int, threshold: float, sampling: SamplingConfig) -> None:
    """Exchange k of every live session: one batch of candidates for the sessions still looking
    for a branch and for the chosen segments, one plain sample for the rejected segments."""
    searching = [s for s in sessions if s.branch is None and not s.dropped]
    going_on = [s for s in sessions if s.branch is not None and not s.done(segment_turns)]
    for s in going_on:
        asked = {"role": grammar.USER, "content": s.questions[k]}
        s.chosen.append(asked)
        s.rejected.append(dict(asked))
    many_prompts = [open_turn(render_turns(s.history + [{"role": grammar.USER, "content": s.questions[k]}]))
                    for s in searching]
    many_prompts += [open_turn(render_turns(s.chosen, after=s.prompt)) for s in going_on]
    many = _sample(model, tokenizer, many_prompts, candidates, sampling, rng)
    one = _sample(model, tokenizer, [open_turn(render_turns(s.rejected, after=s.prompt)) for s in going_on],
                  1, sampling, rng)
    for j, s in enumerate(searching + going_on):
        texts = [agent_turn(t) for t in many[j * candidates : (j + 1) * candidates]]
        scores = reward.many(texts)
        if j < len(searching):
            _search_step(s, k, texts, scores, rng, threshold, last=k == len(s.questions) - 1)
        else:
            best = max(range(len(texts)), key=lambda i: (bool(texts[i]), scores[i]))
            s.chosen.append({"role": grammar.AGENT, "content": texts[best]})
            s.chosen_scores.append(scores[best])
    for s, text in zip(going_on, one):
        text = agent_turn(text)
        s.rejected.append({"role": grammar.AGENT, "content": text})
        s.rejected_scores.append(reward(text))


def _search_step(s: _Session, k: int, texts: list[str], scores: list[float], rng: random.Random,
                 threshold: float, *, last: bool) -> None:
    asked = {"role": grammar.USER, "content": s.questions[k]}
    bad = [i for i, r in enumerate(scores) if r <= -threshold and texts[i]]
    good = [i for i, r in enumerate(scores) if r >= threshold and texts[i]]
    if k >= s.target and bad and good:
        worst = min(bad, key=lambda i: scores[i])
        best = max(good, key=lambda i: scores[i])
        s.branch, s.prompt = k, render_turns(s.history + [asked])
        s.history.append(asked)
        s.chosen = [{"role": grammar.AGENT, "content": texts[best]}]
        s.rejected = [{"role": grammar.AGENT, "content": texts[worst]}]
        s.chosen_scores, s.rejected_scores = [scores[best]], [scores[worst]]
        return
    acceptable = [i for i, r in enumerate(scores) if r > -threshold and texts[i]]
    if last or not acceptable:
        s.dropped = True
        return
    s.history += [asked, {"role": grammar.AGENT, "content": texts[rng.choice(acceptable)]}]


def _session_row(s: _Session) -> dict[str, Any]:
    return {
        "prompt": s.prompt,
        "chosen_turns": s.chosen,
        "rejected_turns": s.rejected,
        "first_bad_turn": len(s.history),  # index of the rejected segment's first (bad) agent turn
        "segment_length": len(s.chosen),
        "score_chosen": sum(s.chosen_scores),  # gold reward summed over the segment's agent turns
        "score_rejected": sum(s.rejected_scores),
    }
