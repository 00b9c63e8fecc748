"""A probabilistic grammar over real English words: the sandbox's language.

Documents are short reviews of one or more sentences. Each document draws a mood (how likely its
adjectives are positive, negative or neutral), so the language carries sentiment that a model can
learn and a preference method can shift, while samples still vary in sentiment, length and
fluency. Everything is driven by one `random.Random`, so a seed fixes the corpus.

Sessions are short dialogues in the same language: a user asks about things, an agent answers
with reviews (`session`, `question`, `answer`); they are rendered as text by
`harness.data.tokenize.render_turns`. `corrupt` makes a document disfluent (a stutter, a dropped,
swapped or stray word) so that a model trained on a partly noisy corpus varies in fluency, and
`legal_bigrams` is the set of word pairs the grammar can produce, against which the gold reward's
fluency term measures a text.

Compatibility: `document`, `demonstration`, `prompt` and `sentence` draw exactly what they drew
before sessions were added (the shipped lm-eval task files in suites/tasks/ are made from them
with fixed seeds); the session word lists are separate, so they change nothing there.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import lru_cache

SUBJECTS = [
    "the movie", "the film", "the book", "the story", "the acting", "the music", "the ending",
    "the food", "the service", "the hotel", "the show", "the game", "the song", "the plot",
    "the room", "the staff", "the camera", "the phone", "the trip", "the class",
]
LINKING_VERBS = ["was", "is", "felt", "seemed", "looked", "sounded"]
POSITIVE = [
    "good", "great", "wonderful", "excellent", "amazing", "lovely", "beautiful", "fun", "happy",
    "brilliant", "nice", "charming", "delightful", "perfect", "enjoyable", "sweet", "clever",
    "fantastic", "pleasant", "warm",
]
NEGATIVE = [
    "bad", "terrible", "awful", "boring", "horrible", "sad", "ugly", "dull", "poor",
    "disappointing", "weak", "annoying", "stupid", "painful", "messy", "cold", "nasty", "rude",
    "broken", "worse",
]
NEUTRAL = [
    "long", "short", "quiet", "old", "new", "simple", "strange", "different", "slow", "big",
    "small", "loud", "dark", "bright", "plain", "usual", "late", "early", "busy", "full",
]
INTENSIFIERS = ["very", "really", "quite", "so", "extremely", "somewhat", "a bit", "pretty"]
CONNECTIVES = ["and", "but", "because", "so", "although", "while"]
OPINION_VERBS_POSITIVE = ["loved", "liked", "enjoyed", "admired", "recommend"]
OPINION_VERBS_NEGATIVE = ["hated", "disliked", "regret", "avoided", "hate"]
OPENERS = ["i think", "honestly ,", "to be fair ,", "my friend said", "in the end ,", "overall ,"]
CLOSERS = [
    "i would go again", "i would not go again", "we left early", "we stayed until the end",
    "it was worth the money", "it was a waste of time", "nothing happened", "everyone laughed",
]


@dataclass(frozen=True)
class Mood:
    """Probabilities of drawing a positive, negative or neutral adjective in one document."""

    positive: float
    negative: float

    def adjective(self, rng: random.Random) -> str:
        u = rng.random()
        if u < self.positive:
            return rng.choice(POSITIVE)
        if u < self.positive + self.negative:
            return rng.choice(NEGATIVE)
        return rng.choice(NEUTRAL)


def draw_mood(rng: random.Random) -> Mood:
    """Most documents lean one way; some are mixed, so sentiment varies within the language."""
    lean = rng.random()
    if lean < 0.4:
        return Mood(positive=0.7, negative=0.1)
    if lean < 0.8:
        return Mood(positive=0.1, negative=0.7)
    return Mood(positive=0.35, negative=0.35)


def _adjective_phrase(rng: random.Random, mood: Mood) -> str:
    parts = []
    if rng.random() < 0.35:
        parts.append(rng.choice(INTENSIFIERS))
    if rng.random() < 0.1:
        parts.insert(0, "not")
    parts.append(mood.adjective(rng))
    if rng.random() < 0.2:
        parts += ["and", mood.adjective(rng)]
    return " ".join(parts)


def _clause(rng: random.Random, mood: Mood) -> str:
    kind = rng.random()
    if kind < 0.6:
        return f"{rng.choice(SUBJECTS)} {rng.choice(LINKING_VERBS)} {_adjective_phrase(rng, mood)}"
    if kind < 0.85:
        liked = mood.adjective(rng) in POSITIVE or rng.random() < mood.positive
        verbs = OPINION_VERBS_POSITIVE if liked else OPINION_VERBS_NEGATIVE
        return f"i {rng.choice(verbs)} {rng.choice(SUBJECTS)}"
    return rng.choice(CLOSERS)


def sentence(rng: random.Random, mood: Mood) -> str:
    """One sentence: an optional opener, a clause, optionally joined to a second clause."""
    words = []
    if rng.random() < 0.2:
        words.append(rng.choice(OPENERS))
    words.append(_clause(rng, mood))
    if rng.random() < 0.45:
        words += [rng.choice(CONNECTIVES), _clause(rng, mood)]
    return " ".join(words) + " ."


def document(rng: random.Random) -> str:
    """A review of one to three sentences in one mood."""
    mood = draw_mood(rng)
    n_sentences = rng.choices([1, 2, 3], weights=[0.4, 0.4, 0.2])[0]
    return " ".join(sentence(rng, mood) for _ in range(n_sentences))


def prompt(rng: random.Random) -> str:
    """The opening of a review, as a prompt: neutral, so the completion carries the sentiment."""
    kind = rng.random()
    subject = rng.choice(SUBJECTS)
    if kind < 0.5:
        return f"{subject} {rng.choice(LINKING_VERBS)}"
    if kind < 0.8:
        return f"{rng.choice(OPENERS)} {subject} {rng.choice(LINKING_VERBS)}"
    return f"{subject} {rng.choice(LINKING_VERBS)} {rng.choice(NEUTRAL)} {rng.choice(CONNECTIVES)}"


def demonstration(rng: random.Random) -> tuple[str, str]:
    """A (prompt, completion) pair in the language: the prompt continued in some mood."""
    mood = draw_mood(rng)
    head = prompt(rng)
    first = _adjective_phrase(rng, mood)
    rest = []
    if rng.random() < 0.5:
        rest += [rng.choice(CONNECTIVES), _clause(rng, mood)]
    tail = " ".join([first, *rest]) + " ."
    if rng.random() < 0.4:
        tail += " " + sentence(rng, mood)
    return head, tail


# ---------------------------------------------------------------------------------------------
# Sessions: a user asks, an agent answers (in the review language), a few times over.

USER, AGENT = "user", "agent"
QUESTIONS = [
    "how was {s} ?", "what did you think of {s} ?", "did you like {s} ?", "what about {s} ?",
    "and {s} ?", "tell me about {s} .", "would you recommend {s} ?", "how did you find {s} ?",
]
ROLE_WORDS = [USER, AGENT, ":", "|"]  # the rendering's own tokens (harness.data.tokenize)


def question(rng: random.Random) -> str:
    """A user turn: a question about one of the subjects."""
    return rng.choice(QUESTIONS).format(s=rng.choice(SUBJECTS))


def answer(rng: random.Random, mood: Mood, about: str | None = None) -> str:
    """An agent turn: one or two sentences in `mood`, the first about `about` when given."""
    subject = about or rng.choice(SUBJECTS)
    if rng.random() < 0.75:
        first = f"{subject} {rng.choice(LINKING_VERBS)} {_adjective_phrase(rng, mood)}"
    else:
        liked = rng.random() < mood.positive / max(mood.positive + mood.negative, 1e-9)
        verbs = OPINION_VERBS_POSITIVE if liked else OPINION_VERBS_NEGATIVE
        first = f"i {rng.choice(verbs)} {subject}"
    if rng.random() < 0.3:
        first += f" {rng.choice(CONNECTIVES)} {_clause(rng, mood)}"
    text = first + " ."
    if rng.random() < 0.25:
        text += " " + sentence(rng, mood)
    return text


def _asked_about(question_text: str) -> str | None:
    """The subject a question names (its "the ..." phrase), so the answer can name it too."""
    for subject in SUBJECTS:
        if f" {subject} " in f" {question_text} ":
            return subject
    return None


def session(rng: random.Random, exchanges: int | None = None) -> list[dict[str, str]]:
    """A dialogue of 1-3 user/agent exchanges in one mood: [{"role", "content"}, ...]."""
    mood = draw_mood(rng)
    n = exchanges or rng.choices([1, 2, 3], weights=[0.3, 0.4, 0.3])[0]
    turns = []
    for _ in range(n):
        asked = question(rng)
        turns.append({"role": USER, "content": asked})
        turns.append({"role": AGENT, "content": answer(rng, mood, _asked_about(asked))})
    return turns


# ---------------------------------------------------------------------------------------------
# Fluency: disfluent documents for the corpus, and what counts as fluent.


def corrupt(text: str, rng: random.Random) -> str:
    """`text` with one disfluency: a stuttered, dropped or stray word, or two words swapped."""
    words = text.split()
    if len(words) < 3:
        return text
    i = rng.randrange(len(words) - 1)
    kind = rng.random()
    if kind < 0.3:
        words.insert(i, words[i])  # "the the movie"
    elif kind < 0.55:
        del words[i]  # "the was good"
    elif kind < 0.8:
        words[i], words[i + 1] = words[i + 1], words[i]  # "movie the was good"
    else:
        words.insert(i, rng.choice(POSITIVE + NEGATIVE + NEUTRAL + CONNECTIVES))  # a stray word
    return " ".join(words)


def vocabulary() -> list[str]:
    """Every word the grammar can emit, session rendering included (the tokenizer is fitted on
    the corpus; this list is added to it so that no grammar word is ever unknown)."""
    words: set[str] = {".", ",", "i", "not", "and", "a", "?", *ROLE_WORDS}
    for group in (SUBJECTS, LINKING_VERBS, POSITIVE, NEGATIVE, NEUTRAL, INTENSIFIERS, CONNECTIVES,
                  OPINION_VERBS_POSITIVE, OPINION_VERBS_NEGATIVE, OPENERS, CLOSERS, QUESTIONS):
        for phrase in group:
            words.update(w for w in phrase.split() if w != "{s}")
    return sorted(words)


@lru_cache(maxsize=1)
def legal_bigrams() -> frozenset[tuple[str, str]]:
    """Every pair of adjacent words the grammar produces inside a review or an answer.

    Taken from a large fixed-seed sample rather than derived by hand, so it follows the grammar
    when the grammar changes; the sample is far past saturation (20,000 of each kind find all
    ~1,900 pairs; 100,000 find no more, which tests/test_sandbox_reward.py checks).
    """
    return frozenset(_bigrams_of_sample(20_000, seed=1234))


def _bigrams_of_sample(n: int, seed: int) -> set[tuple[str, str]]:
    rng = random.Random(seed)
    pairs: set[tuple[str, str]] = set()
    for _ in range(n):
        mood = draw_mood(rng)
        for text in (document(rng), demonstration(rng)[1], answer(rng, mood)):
            words = text.split()
            pairs.update(zip(words, words[1:]))
    return pairs


def disfluency(text: str) -> float:
    """Fraction of the word pairs of `text` that are not fluent, in [0, 1]: a pair the grammar
    never produces (an unknown word, a stutter such as "the the", a broken transition such as
    "was the") or one that repeats the pair two words back (a loop: "good and good and good").
    A one-word text is disfluent only if the word is unknown; an empty text is fluent."""
    words = text.split()
    if len(words) < 2:
        return float(bool(words) and words[0] not in _known_words())
    legal = legal_bigrams()
    pairs = list(zip(words, words[1:]))
    bad = sum(
        pair not in legal or (i >= 2 and pair == pairs[i - 2])
        for i, pair in enumerate(pairs)
    )
    return bad / len(pairs)


@lru_cache(maxsize=1)
def _known_words() -> frozenset[str]:
    return frozenset(vocabulary())


# ---------------------------------------------------------------------------------------------
# Grammaticality: whether a review prompt and its continuation are text the grammar can produce.


def _one_of(phrases: list[str]) -> str:
    """A regex alternation of whole phrases, longest first (so "a bit" wins over "a")."""
    return "(?:" + "|".join(re.escape(p) for p in sorted(set(phrases), key=len, reverse=True)) + ")"


@lru_cache(maxsize=1)
def _continuation_pattern() -> re.Pattern[str]:
    """The language of `demonstration`'s prompts and completions, followed by any number of
    `sentence`s, as one regex over space-separated words, written from the functions above
    (tests/test_sandbox_insights.py checks that every text they draw matches, and that the
    corruptions of `corrupt` mostly do not)."""
    adjective = _one_of(POSITIVE + NEGATIVE + NEUTRAL)
    phrase = rf"(?:not )?(?:{_one_of(INTENSIFIERS)} )?{adjective}(?: and {adjective})?"
    subject, linking, connective = _one_of(SUBJECTS), _one_of(LINKING_VERBS), _one_of(CONNECTIVES)
    opinion = _one_of(OPINION_VERBS_POSITIVE + OPINION_VERBS_NEGATIVE)
    clause = rf"(?:{subject} {linking} {phrase}|i {opinion} {subject}|{_one_of(CLOSERS)})"
    full_sentence = rf"(?:{_one_of(OPENERS)} )?{clause}(?: {connective} {clause})? \."
    head = rf"(?:(?:{_one_of(OPENERS)} )?{subject} {linking}|{subject} {linking} {_one_of(NEUTRAL)} {connective})"
    return re.compile(rf"{head} {phrase}(?: {connective} {clause})? \.(?: {full_sentence})*")


def grammatical(prompt: str, completion: str) -> bool:
    """Whether a review prompt (`prompt`'s kinds) continued by `completion` is text the grammar
    produces: the prompt's sentence finished as a demonstration finishes it, then whole sentences.
    Stricter than `disfluency`, which sees only adjacent word pairs: "the food was good and bad
    and nice ." or "... good and the plot was dull but i liked the song ." (three clauses) pass
    that check, not this."""
    return _continuation_pattern().fullmatch(" ".join(f"{prompt} {completion}".split())) is not None
