"""The data of the sandbox's local lm-eval tasks (suites/tasks/), generated from the sandbox
grammar with fixed seeds, so that the shipped jsonl files can be re-made and checked:

    python -m harness.evaluate.sandbox_tasks suites/tasks

- sandbox_grammar_mc (multiple choice): a prompt of the language, a grammatical continuation
  and the same words scrambled (the final "." kept last, so that only word order differs); the
  two choices in random order. A model that learned the grammar prefers the grammatical one.
- sandbox_grammar_ppl (perplexity, loglikelihood_rolling): documents of the language drawn with
  a seed of their own (not the sandbox corpus's), as held-out text.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from harness.sandbox import grammar

MC_SEED, MC_ROWS = 20240601, 300
PPL_SEED, PPL_ROWS = 20240602, 200


def _scrambled(completion: str, rng: random.Random) -> str:
    words = completion.split()
    head, tail = (words[:-1], words[-1:]) if words[-1] == "." else (words, [])
    for _ in range(20):
        shuffled = head[:]
        rng.shuffle(shuffled)
        if shuffled != head:
            return " ".join(shuffled + tail)
    return " ".join(head[::-1] + tail)


def multiple_choice_rows(n: int = MC_ROWS, seed: int = MC_SEED) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    while len(rows) < n:
        prompt, completion = grammar.demonstration(rng)
        if len(completion.split()) < 4:  # too short to scramble into something clearly wrong
            continue
        choices = [completion, _scrambled(completion, rng)]
        label = rng.randrange(2)
        if label == 1:
            choices.reverse()
        rows.append({"prompt": prompt, "choices": choices, "label": label})
    return rows


def perplexity_rows(n: int = PPL_ROWS, seed: int = PPL_SEED) -> list[dict]:
    rng = random.Random(seed)
    return [{"text": grammar.document(rng)} for _ in range(n)]


def write_sandbox_tasks(folder: Path) -> list[Path]:
    """Write both tasks' jsonl files into `folder` (the YAMLs beside them name them)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, rows in (("sandbox_grammar_mc.jsonl", multiple_choice_rows()),
                       ("sandbox_grammar_ppl.jsonl", perplexity_rows())):
        path = folder / name
        path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        out.append(path)
    return out


if __name__ == "__main__":
    for written in write_sandbox_tasks(Path(sys.argv[1] if len(sys.argv) > 1 else "suites/tasks")):
        print(written)
