"""The sandbox's world knowledge, in-context reasoning and instructions: what its capability
categories (harness.evaluate.sandbox_tasks) measure beside the sentiment reward.

- **Facts.** People (NAMES) each have a true city, job and pet, fixed by a seed of this module
  (not the sandbox's seed: the shipped lm-eval files hold the same facts for every world). The
  pretraining corpus states them ("anna lives in paris .") with Zipf-like frequencies, so some
  facts are seen hundreds of times and some a handful: a model knows some and not others, and
  can forget them in later training.
- **Myths.** For half of the facts, the corpus more often states a fixed false value than the
  true one (each myth with its own rate between 0.7 and 0.9): statements frequent but false
  against rarer true ones, as in TruthfulQA's imitative falsehoods. The world's rule (the true
  value) decides what is true, not the corpus.
- **Reasoning.** A rule of the world (each job has its tool: a baker uses ovens), stated in the
  corpus on its own ("a baker uses ovens .") and applied to premises given in context: "the girl
  is a baker so she uses" -> ovens. With two premises of different genders ("the man is a driver
  and the girl is a baker so he uses" -> trucks) the model must also resolve the pronoun to its
  premise: a learned rule composed with in-context binding.
- **Instructions.** A review prompt under one of a few instructions, each checked exactly by
  `follows`: "in one word :" (the completion is one word and "."), "in two parts :" (exactly two
  sentences), "end with we left early :" (its last sentence is "we left early ."). The corpus
  has a few such documents, the demonstrations a share of them (`instructed`).

None of these words carries sentiment (VADER scores them 0), so these categories do not move
with the gold reward by construction; the review grammar (harness.sandbox.grammar) is unchanged.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

from harness.sandbox import grammar

NAMES = [
    "anna", "ben", "cara", "dan", "eva", "finn", "gina", "hugo", "ida", "jack", "kate", "leo",
    "mona", "ned", "olga", "paul", "rosa", "sam", "tina", "ugo", "vera", "walt", "yara", "zack",
    "alma", "bob", "cleo", "dora", "emil", "fay", "gus", "hana", "ivan", "jade", "karl", "lina",
    "max", "nora", "otto", "pia", "ray", "sara", "tom", "uma", "vic", "wendy", "xavi", "zoe",
    "abel", "bea", "carl", "dina", "eli", "flo", "gil", "hal", "ines", "joel", "kim", "lars",
    "milo", "nina", "oren", "rita",
]
# relation -> (the words before the value, its values)
RELATIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "city": ("lives in", ("paris", "rome", "london", "berlin", "madrid", "vienna", "oslo", "lisbon")),
    "job": ("works as a", ("teacher", "doctor", "baker", "driver", "farmer", "singer", "painter", "lawyer")),
    "pet": ("has a pet", ("dog", "cat", "horse", "rabbit", "parrot", "goat", "turtle", "mouse")),
}
PEOPLE = {"he": ["the man", "the boy", "the uncle", "the king"], "she": ["the woman", "the girl", "the aunt", "the queen"]}
# The world's rule: job -> tool. The tool follows "uses" directly ("... so she uses ovens"): the
# word that asks for the tool is then one the model can attend from to the premise's job in a
# single step. (With "uses the" -> oven, the asking position was the commonest word of the language,
# and whether the rule was learned at all depended on the build: at chance in 4 of 11 tried.)
TOOLS = {"teacher": "chalk", "doctor": "needles", "baker": "ovens", "driver": "trucks", "farmer": "tractors",
         "singer": "microphones", "painter": "brushes", "lawyer": "laptops"}
ENDING = "we left early ."
INSTRUCTIONS = ("in one word :", "in two parts :", "end with we left early :")
FACTS_SEED = "sandbox-facts/1"  # the facts' own stream: the same people in every world
MYTH_SHARE = 1 / 2


@dataclass(frozen=True)
class Fact:
    """One (person, relation) of the world: its true value, how often the corpus mentions it,
    and, for a myth, the false value the corpus states at `myth_rate` of its mentions."""

    name: str
    relation: str
    true: str
    weight: float
    myth: str | None = None
    myth_rate: float = 0.0

    @property
    def prompt(self) -> str:
        return f"{self.name} {RELATIONS[self.relation][0]}"

    def statement(self, value: str) -> str:
        return f"{self.prompt} {value} ."


@lru_cache(maxsize=1)
def facts() -> tuple[Fact, ...]:
    """Every fact of the world, from the module's fixed stream: each person's values, Zipf-like
    mention weights (1/rank over a shuffled order), and half of the facts made myths."""
    rng = random.Random(FACTS_SEED)
    pairs = [(name, relation) for name in NAMES for relation in RELATIONS]
    ranks = rng.sample(range(1, len(pairs) + 1), len(pairs))
    myths = set(rng.sample(range(len(pairs)), round(MYTH_SHARE * len(pairs))))
    out = []
    for i, ((name, relation), rank) in enumerate(zip(pairs, ranks)):
        values = RELATIONS[relation][1]
        true = rng.choice(values)
        myth, rate = None, 0.0
        if i in myths:
            myth = rng.choice([v for v in values if v != true])
            rate = round(rng.uniform(0.7, 0.9), 3)  # 0.55-0.8 left the SFT model at chance (0.47)
        out.append(Fact(name, relation, true, 1.0 / rank ** 0.8, myth, rate))
    return tuple(out)


def stated_value(fact: Fact, rng: random.Random) -> str:
    """What one mention of `fact` in the corpus says: the myth at its rate, else the truth."""
    return fact.myth if fact.myth is not None and rng.random() < fact.myth_rate else fact.true


def fact_document(rng: random.Random) -> str:
    """One to three statements about people, drawn by their mention weights."""
    pool = facts()
    picks = rng.choices(pool, weights=[f.weight for f in pool], k=rng.choices([1, 2, 3], weights=[0.4, 0.4, 0.2])[0])
    return " ".join(f.statement(stated_value(f, rng)) for f in picks)


def reasoning_context(rng: random.Random) -> tuple[str, str, list[str]]:
    """(the context ending in "so PRONOUN uses", the answer, the tools of its premises): one
    person, or two of different genders, with distinct jobs; the pronoun names whose tool."""
    pronouns = rng.sample(list(PEOPLE), rng.choice([1, 2]))
    people = [rng.choice(PEOPLE[p]) for p in pronouns]
    jobs = rng.sample(list(TOOLS), len(people))
    premises = " and ".join(f"{p} is a {j}" for p, j in zip(people, jobs))
    j = rng.randrange(len(people))
    return f"{premises} so {pronouns[j]} uses", TOOLS[jobs[j]], [TOOLS[x] for x in jobs]


def rule_document(rng: random.Random) -> str:
    """The world's rule stated outright for one or two jobs: "a baker uses ovens ."."""
    jobs = rng.sample(list(TOOLS), rng.choice([1, 2]))
    return " ".join(f"a {job} uses {TOOLS[job]} ." for job in jobs)


def reasoning_document(rng: random.Random) -> str:
    context, answer, _ = reasoning_context(rng)
    return f"{context} {answer} ."


def instructed(rng: random.Random) -> tuple[str, str]:
    """A demonstration that follows an instruction: (instruction + a review prompt, a completion
    in the prompt's mood that meets it)."""
    instruction = rng.choice(INSTRUCTIONS)
    prompt = grammar.prompt(rng)
    mood = grammar.draw_mood(rng)
    if instruction == INSTRUCTIONS[0]:
        completion = f"{mood.adjective(rng)} ."
    elif instruction == INSTRUCTIONS[1]:
        first = grammar.demonstration(rng)[1].split(" . ")[0].removesuffix(" .")
        completion = f"{first} . {grammar.sentence(rng, mood)}"
    else:
        completion = f"{grammar.demonstration(rng)[1]} {ENDING}"
    return f"{instruction} {prompt}", completion


def instruction_of(prompt: str) -> str | None:
    """The instruction a prompt starts with, or None."""
    return next((i for i in INSTRUCTIONS if prompt.startswith(i + " ")), None)


def follows(prompt: str, completion: str) -> bool:
    """Whether `completion` meets the instruction in `prompt`, exactly: one word then "."; two
    sentences (two "."-ended parts, nothing after); or a last sentence "we left early ."."""
    instruction = instruction_of(prompt)
    sentences = [s.split() for s in completion.strip().split(".")]
    ended = completion.strip().endswith(".")
    if instruction == INSTRUCTIONS[0]:
        return ended and len(sentences) == 2 and len(sentences[0]) == 1
    if instruction == INSTRUCTIONS[1]:
        return ended and len(sentences) == 3 and all(sentences[:2])
    if instruction == INSTRUCTIONS[2]:
        return completion.split()[-4:] == ENDING.split() and len(completion.split()) > 4
    return False


def vocabulary() -> list[str]:
    """Every word these documents use (added to the tokenizer with the grammar's)."""
    words = {"so", "uses", "is", ".", *NAMES, *TOOLS.values(), *ENDING.split(), *PEOPLE}
    for prefix, values in RELATIONS.values():
        words.update(prefix.split())
        words.update(values)
    for phrase in (*(p for group in PEOPLE.values() for p in group), *INSTRUCTIONS):
        words.update(phrase.split())
    return sorted(words)
