"""Reward models: the registry (gold, plugins, helpful errors) and any local
AutoModelForSequenceClassification, with and without a chat template, built offline in tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForSequenceClassification

from harness.sandbox import grammar
from harness.sandbox.lm import fit_tokenizer
from harness.sandbox.reward import GoldReward
from harness.errors import HarnessError
from harness.evaluate.reward_models import (
    REWARD_MODELS,
    GoldJudge,
    SequenceClassifierReward,
    as_reward_model,
    load_reward_model,
    register_reward_model,
)

PROMPTS = ["the movie was", "the food felt", "i think the plot seemed"]
COMPLETIONS = ["really great .", "bad and boring . we left early .", "fun ."]
TEMPLATE = "{% for m in messages %}<bos> {{ m['role'] }} {{ m['content'] }} <eos> {% endfor %}"


def save_tiny_reward_model(folder: Path, *, labels: int = 1, chat_template: str | None = None) -> Path:
    """A random tiny Llama sequence classifier and a word-level tokenizer over the sandbox's words."""
    tokenizer = fit_tokenizer([" ".join(grammar.vocabulary()) + " user assistant"])
    if chat_template:
        tokenizer.chat_template = chat_template
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                         num_labels=labels, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    LlamaForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _one_by_one(rm: SequenceClassifierReward, texts: list[str], special: bool) -> np.ndarray:
    out = []
    with torch.no_grad():
        for text in texts:
            ids = rm.tokenizer(text, add_special_tokens=special, return_tensors="pt")
            out.append(rm.model(**ids).logits[0, 0].item())
    return np.asarray(out)


def test_a_local_classifier_scores_joined_text_in_batches(tmp_path):
    """No chat template: the model reads "prompt completion"; a padded batch scores each pair as
    it scores alone (the head reads the last non-pad token)."""
    rm = load_reward_model(str(save_tiny_reward_model(tmp_path / "rm")), batch_size=2)
    assert isinstance(rm, SequenceClassifierReward)
    assert rm.texts(PROMPTS[:1], COMPLETIONS[:1]) == ["the movie was really great ."]
    scores = rm.score(PROMPTS, COMPLETIONS)
    assert scores.shape == (3,) and scores.dtype == np.float64
    expected = _one_by_one(rm, rm.texts(PROMPTS, COMPLETIONS), special=True)
    assert scores == pytest.approx(expected, abs=1e-5)
    assert len(set(np.round(scores, 6))) == 3  # a real function of the text


def test_the_reward_models_chat_template_is_applied(tmp_path):
    rm = load_reward_model(str(save_tiny_reward_model(tmp_path / "rm", chat_template=TEMPLATE)))
    texts = rm.texts(PROMPTS, COMPLETIONS)
    assert texts[0] == "<bos> user the movie was <eos> <bos> assistant really great . <eos> "
    scores = rm.score(PROMPTS, COMPLETIONS)
    assert scores == pytest.approx(_one_by_one(rm, texts, special=False), abs=1e-5)


def test_a_two_label_head_scores_the_log_odds_and_three_labels_are_refused(tmp_path):
    rm = load_reward_model(str(save_tiny_reward_model(tmp_path / "two", labels=2)))
    with torch.no_grad():
        ids = rm.tokenizer(rm.texts(PROMPTS[:1], COMPLETIONS[:1]), return_tensors="pt")
        logits = rm.model(**ids).logits[0]
    assert rm.score(PROMPTS[:1], COMPLETIONS[:1])[0] == pytest.approx((logits[1] - logits[0]).item(), abs=1e-5)
    with pytest.raises(HarnessError, match="has 3"):
        load_reward_model(str(save_tiny_reward_model(tmp_path / "three", labels=3)))


def test_gold_is_registered_and_scores_the_completion():
    gold = load_reward_model("gold", length_weight=0.0)
    assert isinstance(gold, GoldJudge) and gold.name == "gold"
    assert gold.score(PROMPTS, COMPLETIONS) == pytest.approx(GoldReward().many(COMPLETIONS))
    assert isinstance(as_reward_model(GoldReward(0.1)), GoldJudge)


def test_unknown_names_get_a_one_line_error():
    with pytest.raises(HarnessError, match="did you mean 'gold'"):
        load_reward_model("gld")
    with pytest.raises(HarnessError, match="cannot load"):
        load_reward_model("no-such-owner/no-such-reward-model")  # offline: a Hub id that is not there


def test_a_plugin_reward_model_is_found_by_name():
    class Shouty:
        name = "shouty"

        def score(self, prompts, completions):
            return np.asarray([c.count("!") for c in completions], dtype=float)

    register_reward_model("shouty")(lambda **context: Shouty())
    try:
        assert load_reward_model("shouty").score(["x"], ["a ! !"]).tolist() == [2.0]
    finally:
        REWARD_MODELS.remove("shouty")
