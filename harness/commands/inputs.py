"""`harness plan SUITE --show-inputs`: what each model reads, for one example of the suite.

- the policy's training sequence (the first training pair's chosen side), token by token, with
  its completion mask: the tokens the loss reads are in [brackets], the prompt's are not;
- a multi-turn session (when the data has them) with its segment mask: SDPO's agent tokens in {braces};
- the generation prompt of the first evaluation prompt, as the policy reads it;
- the reward model's input for that prompt and the dataset's chosen reply.

Texts are printed as Python string literals, so that every newline and space is visible.
"""

from __future__ import annotations

from harness.data.jsonl import read_jsonl
from harness.data.tokenize import encode_pair, encode_turns, prompt_ids, prompt_text
from harness.evaluate.policy import chosen_from_file
from harness.runner import World, prepare_world
from harness.suite import Suite


def show_inputs(suite: Suite) -> str:
    """The section `harness plan --show-inputs` prints (see the module docstring)."""
    world = prepare_world(suite)
    return "\n".join(_training(world) + _session(world) + _generation_and_reward(world, suite))


def _pieces(tokenizer, ids: list[int], marks: list[bool], left: str, right: str) -> str:
    """Each token's text (escaped: a newline is \\n), those marked between `left` and `right`,
    joined by "|"."""
    texts = [repr(tokenizer.decode([t]))[1:-1] for t in ids]
    return "|".join(f"{left}{text}{right}" if m else text for text, m in zip(texts, marks))


def _training(world: World) -> list[str]:
    shape = "paired" if "paired" in world.files else "unpaired"
    row = world.rows(shape)[0]
    completion = row["chosen"] if shape == "paired" else row["completion"]
    encoded = encode_pair(world.tokenizer, row["prompt"], completion, world.max_length)
    mask = encoded.completion_mask
    return [
        f"Training sequence ({world.files[shape].stem} row 0, {'chosen' if shape == 'paired' else 'completion'}; "
        f"{len(encoded.input_ids)} tokens, {sum(mask)} in the completion mask, [bracketed]):",
        f"  prompt:     {world.tokenizer.decode(encoded.input_ids[: mask.index(True)])!r}",
        f"  completion: {world.tokenizer.decode(encoded.input_ids[mask.index(True):])!r}",
        f"  tokens:     {_pieces(world.tokenizer, encoded.input_ids, mask, '[', ']')}",
    ]


def _session(world: World) -> list[str]:
    path = world.files.get("sessions")
    if path is None or not path.exists():
        return []
    row = read_jsonl(path)[0]
    encoded, segment = encode_turns(world.tokenizer, row["prompt"], row["chosen_turns"], world.max_length)
    start = encoded.completion_mask.index(True)
    return [
        f"Session ({path.stem} row 0, chosen turns; {sum(segment)} tokens in SDPO's segment mask, {{braced}}):",
        f"  tokens after the history: {_pieces(world.tokenizer, encoded.input_ids[start:], segment[start:], '{', '}')}",
    ]


def _generation_and_reward(world: World, suite: Suite) -> list[str]:
    prompt = world.eval_prompts[0]
    lines = [f"Generation prompt (evaluation prompt 0; {len(prompt_ids(world.tokenizer, prompt))} tokens):",
             f"  {prompt_text(world.tokenizer, prompt)!r}"]
    [chosen] = chosen_from_file(world.files.get("eval_pairs"), [prompt]) or [None]
    reply = chosen if chosen is not None else "<a sampled completion>"
    texts = getattr(world.reward, "texts", None)
    what = "the dataset's chosen reply" if chosen is not None else "a placeholder completion"
    if texts is None:
        return lines + [f"Reward-model input ({suite.evaluate.reward_model}: it reads the completion alone; "
                        f"{what}):", f"  {reply!r}"]
    return lines + [f"Reward-model input ({suite.evaluate.reward_model}, through its own chat template when it has "
                    f"one; {what}):", f"  {texts([prompt], [reply])[0]!r}"]
