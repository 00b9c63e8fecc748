"""The data of the sandbox's local lm-eval tasks (suites/tasks/), generated from the sandbox
grammar with fixed seeds, so that the shipped jsonl files can be re-made and checked:

    python -m harness.evaluate.sandbox_tasks suites/tasks

- sandbox_grammar_mc (multiple choice): a prompt of the language, a grammatical continuation
  and the same words scrambled (the final "." kept last, so that only word order differs); the
  two choices in random order. A model that learned the grammar prefers the grammatical one.
- sandbox_grammar_ppl (perplexity, loglikelihood_rolling): documents of the language drawn with
  a seed of their own (not the sandbox corpus's), as held-out text.

The capability categories of the "Insights into Alignment" miniature (CATEGORIES; the world's
facts, myths, reasoning and instructions are in harness.sandbox.facts):

- sandbox_knowledge (multiple choice, chance 1/4): "anna lives in" -> the true city among four,
  for every fact that is not a myth;
- sandbox_truthfulness (multiple choice, chance 1/2): for every myth, the true value against
  the false one the corpus states more often;
- sandbox_reasoning (multiple choice, chance 1/3): the world's rule (job -> tool) applied to one
  or two premises in context; the choices are three tools, every premise's among them;
- sandbox_instructions (generation, sampled, exact check by harness.sandbox.facts.follows): a
  review prompt under one of the instructions (one word; two sentences; end with a given
  sentence);
- sandbox_fluency (generation, sampled, exact check by harness.sandbox.grammar.grammatical): the
  share of held-out review prompts whose completion finishes them as text the grammar produces.
  Multiple-choice grammar tests cannot move: the sandbox's models prefer the grammatical text to
  any one-place corruption of it (a swap, a dropped, stuttered or stray word) every time (1.0 for
  all three starts), so fluency is measured where models lose it, in what they say.

Both generation tasks sample from the policy's own distribution: temperature 1 with top_k 0 and
top_p 1 set in their YAML, since transformers' generate otherwise keeps only the 50 likeliest
tokens (measured on the SFT model: 0.975 of completions fluent under that truncation, 0.885
untruncated, by the word-pair check).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from harness.sandbox import facts, grammar

MC_SEED, MC_ROWS = 20240601, 300
PPL_SEED, PPL_ROWS = 20240602, 200
CATEGORY_SEED = 20240603  # each category's rows draw from their own stream of it
REASONING_ROWS, INSTRUCTION_ROWS, FLUENCY_ROWS = 300, 300, 200

# category -> (lm-eval task, the metric that scores it, its chance level; None for generation)
CATEGORIES: dict[str, tuple[str, str, float | None]] = {
    "knowledge": ("sandbox_knowledge", "acc", 1 / 4),
    "reasoning": ("sandbox_reasoning", "acc", 1 / 3),
    "instructions": ("sandbox_instructions", "follows", None),
    "truthfulness": ("sandbox_truthfulness", "acc", 1 / 2),
    "fluency": ("sandbox_fluency", "fluent", None),
}


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


def _stream(category: str) -> random.Random:
    return random.Random(f"{CATEGORY_SEED}/{category}")


def _choice_row(prompt: str, answer: str, others: list[str], rng: random.Random) -> dict:
    """A multiple-choice row: the answer among `others`, in a random order."""
    choices = [answer, *others]
    rng.shuffle(choices)
    return {"prompt": prompt, "choices": choices, "label": choices.index(answer)}


def knowledge_rows() -> list[dict]:
    """Every fact that is not a myth, its true value among four of the relation's values."""
    rng = _stream("knowledge")
    rows = []
    for fact in facts.facts():
        if fact.myth is None:
            values = [v for v in facts.RELATIONS[fact.relation][1] if v != fact.true]
            rows.append(_choice_row(fact.prompt, fact.true, rng.sample(values, 3), rng))
    return rows


def truthfulness_rows() -> list[dict]:
    """Every myth: the true value against the false value the corpus states more often."""
    rng = _stream("truthfulness")
    return [_choice_row(f.prompt, f.true, [f.myth], rng) for f in facts.facts() if f.myth is not None]


def reasoning_rows(n: int = REASONING_ROWS) -> list[dict]:
    rng = _stream("reasoning")
    rows = []
    for _ in range(n):
        context, answer, named = facts.reasoning_context(rng)
        others = [c for c in named if c != answer]
        others += rng.sample([c for c in facts.TOOLS.values() if c not in named], 2 - len(others))
        rows.append(_choice_row(context, answer, others, rng))
    return rows


def instruction_rows(n: int = INSTRUCTION_ROWS) -> list[dict]:
    """Instructed prompts and their instruction (the check reads it from the prompt)."""
    rng = _stream("instructions")
    rows = []
    for _ in range(n):
        prompt, _ = facts.instructed(rng)
        rows.append({"prompt": prompt, "instruction": facts.instruction_of(prompt)})
    return rows


def fluency_rows(n: int = FLUENCY_ROWS) -> list[dict]:
    """Held-out review prompts (their own stream) for the model to continue."""
    rng = _stream("fluency")
    return [{"prompt": grammar.prompt(rng)} for _ in range(n)]


TASK_ROWS = {
    "sandbox_grammar_mc": multiple_choice_rows, "sandbox_grammar_ppl": perplexity_rows,
    "sandbox_knowledge": knowledge_rows, "sandbox_truthfulness": truthfulness_rows,
    "sandbox_reasoning": reasoning_rows, "sandbox_instructions": instruction_rows,
    "sandbox_fluency": fluency_rows,
}


def process_instruction(doc: dict, results: list[str]) -> dict[str, float]:
    """lm-eval's process_results for sandbox_instructions: 1 when the greedy completion meets
    the prompt's instruction exactly (harness.sandbox.facts.follows), else 0."""
    return {"follows": float(facts.follows(doc["prompt"], results[0]))}


def category_scores(model_dir: Path, *, batch_size: int = 32) -> dict[str, dict[str, float]]:
    """The model in `model_dir` on every category: {category: {value, ci_low, ci_high, n, chance}},
    through lm-eval on the shipped task files (the code path every suite's lm-eval tasks take)."""
    from harness.evaluate.lmeval import results_rows, run_lm_eval
    from harness.models import load_policy, load_tokenizer

    model, tokenizer = load_policy(str(model_dir)), load_tokenizer(str(model_dir))
    tasks = [task for task, _, _ in CATEGORIES.values()]
    rows = {r["metric"]: r for r in results_rows(run_lm_eval(model, tokenizer, tasks, batch_size=batch_size,
                                                             bootstrap=100), step=0, bootstrap=100)}
    out = {}
    for category, (task, metric, chance) in CATEGORIES.items():
        row = rows[f"{task}/{metric}"]
        out[category] = {"value": round(row["value"], 4), "ci_low": round(row["ci_low"], 4),
                         "ci_high": round(row["ci_high"], 4), "n": row["n"],
                         "chance": None if chance is None else round(chance, 4)}
    return out


def process_fluency(doc: dict, results: list[str]) -> dict[str, float]:
    """lm-eval's process_results for sandbox_fluency: 1 when the prompt and its sampled completion
    are text the grammar produces (harness.sandbox.grammar.grammatical), else 0."""
    return {"fluent": float(grammar.grammatical(doc["prompt"], results[0]))}


def score_starts(sandbox) -> dict[str, dict[str, dict[str, float]]]:
    """Every starting model of a built world (harness.sandbox.world.Sandbox) on every category,
    kept beside its summary (START_SCORES, written atomically; read back when present)."""
    from harness.sandbox.world import START_SCORES

    path = sandbox.root / START_SCORES
    if path.exists():
        return json.loads(path.read_text())
    scores = {name: category_scores(folder) for name, folder in sandbox.start_dirs().items()}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(scores, indent=2))
    tmp.replace(path)
    return scores


def write_sandbox_tasks(folder: Path) -> list[Path]:
    """Write every task's jsonl file into `folder` (the YAMLs beside them name them)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, make in TASK_ROWS.items():
        path = folder / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in make()))
        out.append(path)
    return out


if __name__ == "__main__":
    for written in write_sandbox_tasks(Path(sys.argv[1] if len(sys.argv) > 1 else "suites/tasks")):
        print(written)
