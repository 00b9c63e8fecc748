"""Real architectures with their real chat templates (tests/chat_models.py): what each model reads,
where generation stops, packing, one training step per data shape, per family."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from harness.data.loading import load_rows
from harness.data.packing import pack_sequences
from harness.data.tokenize import encode_pair, encode_prompts, encode_turns, pad_right, prompt_ids
from harness.errors import HarnessError
from harness.evaluate.reward_models import SequenceClassifierReward
from harness.generation import SamplingConfig, sample_completions
from harness.logprobs import _packed_mask, packing_refusal
from tests import chat_models as cm

FAMILIES = list(cm.FAMILIES)
QUESTION = "what is the capital of france ?"
REPLY = "paris is the capital ."


def conversation(family: str) -> list[dict]:
    system = [{"role": "system", "content": "you are helpful"}] if cm.FAMILIES[family].system else []
    return system + [{"role": "user", "content": QUESTION}]


# Written out by hand from the families' published templates: what the policy is trained on after
# its generation prompt (the reply and the template's end of turn, nothing appended), and what a
# reward model of the family reads for [prompt messages, assistant reply].
# What the policy trains on: the reply through the token that ends its turn, where generation stops.
COMPLETION_TEXT = {
    "llama3": "paris is the capital .<|eot_id|>",
    "qwen2": "paris is the capital .<|im_end|>",
    "mistral": "paris is the capital .</s>",
    "gemma2": "paris is the capital .<end_of_turn>",
    "phi3": "paris is the capital .<|end|>",
}
# What the template writes after it, which a sampled completion never has.
AFTER_THE_TURN = {"llama3": "", "qwen2": "\n", "mistral": "", "gemma2": "\n", "phi3": "\n<|endoftext|>"}
REWARD_TEXT = {
    "llama3": "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nyou are helpful<|eot_id|>"
              "<|start_header_id|>user<|end_header_id|>\n\nwhat is the capital of france ?<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\nparis is the capital .<|eot_id|>",
    "qwen2": "<|im_start|>system\nyou are helpful<|im_end|>\n<|im_start|>user\nwhat is the capital of france ?"
             "<|im_end|>\n<|im_start|>assistant\nparis is the capital .<|im_end|>\n",
    "mistral": "<s>[INST] what is the capital of france ? [/INST]paris is the capital .</s>",
    "gemma2": "<bos><start_of_turn>user\nwhat is the capital of france ?<end_of_turn>\n<start_of_turn>model\n"
              "paris is the capital .<end_of_turn>\n",
    "phi3": "<|system|>\nyou are helpful<|end|>\n<|user|>\nwhat is the capital of france ?<|end|>\n<|assistant|>\n"
            "paris is the capital .<|end|>\n<|endoftext|>",
}
# why packing is refused, where it is: Mistral's sliding window; Gemma-2's soft-capped logits (and windows)
REFUSED = {"llama3": None, "qwen2": None, "phi3": None, "mistral": "sliding-window",
           "gemma2": "post-processes its logits (final_logit_softcapping)"}


@pytest.mark.parametrize("family", FAMILIES)
def test_one_bos_and_one_end_of_turn_per_template(family):
    spec = cm.FAMILIES[family]
    for add_bos in (False, True):  # the template writes BOS; the tokenizer's own setting adds none
        tok = cm.tokenizer(family, add_bos=add_bos)
        encoded = encode_pair(tok, conversation(family), REPLY, max_length=256)
        start = encoded.completion_mask.index(True)
        head, tail = encoded.input_ids[:start], encoded.input_ids[start:]
        if spec.bos:
            assert head[0] == tok.bos_token_id and encoded.input_ids.count(tok.bos_token_id) == 1
        else:
            assert tok.bos_token_id is None
        assert tok.decode(tail) == COMPLETION_TEXT[family]
        assert tail.count(tok.convert_tokens_to_ids(spec.end_of_turn)) == 1
        assert tok.convert_ids_to_tokens(tail[-1]) == spec.end_of_turn and spec.end_of_turn in spec.generation_eos
        # the policy's rendering of the whole conversation, as its family's reward model reads it
        assert tok.decode(head) + COMPLETION_TEXT[family] + AFTER_THE_TURN[family] == REWARD_TEXT[family]
        assert prompt_ids(tok, conversation(family)) == head


@pytest.mark.parametrize("family", FAMILIES)
def test_packed_forward_equals_padded_or_is_refused_with_its_reason(family, recwarn):
    model, tok = cm.model(family), cm.tokenizer(family)
    rows = [encode_pair(tok, conversation(family), reply, 256) for reply in (REPLY, "a good answer .")]
    rows.append(encode_pair(tok, [{"role": "user", "content": "how are you today ?"}], "i am fine .", 256))
    batch = pad_right(rows, tok.pad_token_id)
    reason = packing_refusal(model)
    if REFUSED[family]:
        assert reason is not None and REFUSED[family] in reason
        assert [str(w.message) for w in recwarn if "train.packing" in str(w.message)] == [
            f"train.packing: {type(model).__name__} keeps the padded batch: {reason}"]  # printed, once
        assert packing_refusal(model) == reason and not [w for w in recwarn if "train.packing" in str(w.message)][1:]
        return
    assert reason is None
    ids, mask, completion = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
    layout = pack_sequences(ids, mask, completion, share_prompts=True)
    assert layout.tokens < int(mask.sum())  # the shared prompt is computed once
    with torch.no_grad():
        padded = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)
        packed = model(input_ids=layout.input_ids, attention_mask=_packed_mask(model, layout.attends()),
                       position_ids=layout.position_ids).logits.float()
        packed = torch.log_softmax(packed, -1).flatten(0, 1)[layout.index]
    real = mask.bool()
    targets = ids[:, 1:]
    got = packed[:, :-1].gather(-1, targets[..., None])[..., 0][real[:, 1:]]
    want = padded[:, :-1].gather(-1, targets[..., None])[..., 0][real[:, 1:]]
    assert torch.allclose(got, want, atol=1e-5, rtol=0)


def _steer(model, tokens: list[int], forbid: list[int] = ()):
    """Make greedy decoding emit `tokens` in order (then the last forever), none of `forbid`."""
    calls = {"n": 0}

    def hook(_module, _inputs, logits):
        logits = logits.clone()
        logits[:, -1, list(forbid)] = -1e4 if forbid else logits[:, -1, list(forbid)]
        logits[:, -1, tokens[min(calls["n"], len(tokens) - 1)]] += 1e4
        calls["n"] += 1
        return logits

    return model.get_output_embeddings().register_forward_hook(hook)


@pytest.mark.parametrize("family", FAMILIES)
def test_generation_stops_at_the_end_of_the_turn(family):
    """The turn ends with the template's end-of-turn id (Llama-3's <|eot_id|>, Gemma's
    <end_of_turn>, Phi-3's <|end|>: ids of generation_config's list, not the tokenizer's EOS);
    the text leaves it out, the ids keep it, and a sample that never ends is truncated."""
    model, tok = cm.model(family), cm.tokenizer(family)
    word, end = tok.convert_tokens_to_ids("a"), tok.convert_tokens_to_ids(cm.FAMILIES[family].end_of_turn)
    greedy = SamplingConfig(max_new_tokens=6, temperature=0.0)
    handle = _steer(model, [word, word, end])
    [sample] = sample_completions(model, tok, [conversation(family)], greedy)
    handle.remove()
    assert sample.token_ids == (word, word, end) and not sample.truncated
    assert sample.content_tokens == 2  # the length a reader counts leaves the end of turn out
    assert sample.text == tok.decode([word, word]) and cm.FAMILIES[family].end_of_turn not in sample.text
    stops = [tok.convert_tokens_to_ids(t) for t in cm.FAMILIES[family].generation_eos] + [tok.eos_token_id]
    handle = _steer(model, [word], forbid=stops)
    [endless] = sample_completions(model, tok, [conversation(family)], greedy)
    handle.remove()
    assert endless.truncated and len(endless.token_ids) == 6 and endless.content_tokens == 6


@pytest.mark.parametrize("family", FAMILIES)
def test_the_reward_model_reads_the_conversation_through_its_own_template(family, tmp_path):
    folder = cm.save(family, tmp_path / "rm", reward=True)
    rm = SequenceClassifierReward(str(folder), device=torch.device("cpu"))
    assert rm.texts([conversation(family)], [REPLY]) == [REWARD_TEXT[family]]
    other = "llama3" if family != "llama3" else "qwen2"  # a reply sampled from another family's policy
    assert cm.FAMILIES[other].end_of_turn not in rm.texts([conversation(family)], [REPLY])[0]
    assert torch.isfinite(torch.tensor(rm.score([conversation(family), QUESTION], [REPLY, REPLY]))).all()


def test_a_reward_model_without_a_chat_template_refuses_conversations(tmp_path):
    folder = cm.save("qwen2", tmp_path / "rm", reward=True)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    for name in ("chat_template.jinja", "chat_template.json"):
        (folder / name).unlink(missing_ok=True)
    rm = SequenceClassifierReward(str(folder), device=torch.device("cpu"))
    assert rm.texts(["a text prompt"], ["b"]) == ["a text prompt b"]  # text prompts: joined, as before
    with pytest.raises(HarnessError, match="has no chat template, so it cannot read the dataset's conversations"):
        rm.texts([conversation("qwen2")], [REPLY])


SESSION_HISTORY = [{"role": "user", "content": "how are you today ?"}, {"role": "assistant", "content": "i am fine ."},
                   {"role": "user", "content": "tell me a joke about cats ."}]
SESSION_TURNS = [{"role": "agent", "content": "the cat sat on the mat ."}, {"role": "user", "content": "and the dog ?"},
                 {"role": "agent", "content": "the dog ran away ."}]


@pytest.mark.parametrize("family", FAMILIES)
def test_the_segment_mask_covers_exactly_the_agent_turns_per_template(family):
    """Each agent turn's content and the template's end-of-turn token after it; no role header,
    no user turn, nothing of the history."""
    tok = cm.tokenizer(family)
    encoded, segment = encode_turns(tok, SESSION_HISTORY, SESSION_TURNS, max_length=512)
    masked = [t for t, m in zip(encoded.input_ids, segment) if m]
    end = cm.FAMILIES[family].end_of_turn
    assert tok.decode(masked) == f"the cat sat on the mat .{end}the dog ran away .{end}"
    full = SESSION_HISTORY + [{"role": "assistant" if t["role"] == "agent" else "user", "content": t["content"]}
                              for t in SESSION_TURNS]
    # the template's text, tokenized as a whole would be (no special token cut between turns)
    assert encoded.input_ids == tok(tok.apply_chat_template(full, tokenize=False), add_special_tokens=False)["input_ids"]
    start = encoded.completion_mask.index(True)
    history = tok.apply_chat_template(SESSION_HISTORY, tokenize=False)
    assert tok.decode(encoded.input_ids[:start]) == history.removesuffix("<|endoftext|>")  # Phi-3 ends a text with EOS


def test_tokenizer_without_pad_and_padding_on_the_left(tmp_path):
    from harness.models import load_tokenizer

    folder = tmp_path / "policy"
    folder.mkdir()
    cm.tokenizer("llama3", pad=False).save_pretrained(folder)
    tok = load_tokenizer(str(folder))
    assert tok.pad_token_id == tok.eos_token_id  # none shipped: EOS pads (always masked)
    left = cm.tokenizer("llama3", padding_side="left")
    prompts = [conversation("llama3"), [{"role": "user", "content": "hi"}]]
    assert torch.equal(encode_prompts(tok, prompts)[0] != tok.pad_token_id, encode_prompts(left, prompts)[0] != left.pad_token_id)
    model = cm.model("llama3")
    config = SamplingConfig(n=2, max_new_tokens=4, seed=3)
    assert [s.token_ids for s in sample_completions(model, tok, prompts, config)] == \
        [s.token_ids for s in sample_completions(model, left, prompts, config)]


# ---------------------------------------------------------------------------------------------
# Bad conversations, per template


def _write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize("family", ["mistral", "gemma2"])
def test_a_system_message_where_the_template_has_none_is_refused(family, tmp_path):
    row = {"prompt": [{"role": "system", "content": "be kind"}, {"role": "user", "content": "hi"}],
           "chosen": [{"role": "assistant", "content": "hello"}], "rejected": [{"role": "assistant", "content": "go"}]}
    with pytest.raises(HarnessError, match=r"row 0: 'prompt': the chat template .* refuses this conversation \(roles system, user"):
        load_rows(_write(tmp_path / "p.jsonl", [row]), "pairs", tokenizer=cm.tokenizer(family), on_invalid="error")


def test_a_role_the_template_leaves_out_is_refused(tmp_path):
    row = {"prompt": [{"role": "tool", "content": "42"}, {"role": "user", "content": "hi"}],
           "completion": [{"role": "assistant", "content": "hello"}], "label": True}
    with pytest.raises(HarnessError, match=r"leaves out message 0 \(role 'tool'\)"):
        load_rows(_write(tmp_path / "u.jsonl", [row]), "unpaired", tokenizer=cm.tokenizer("phi3"), on_invalid="error")
    with pytest.warns(UserWarning, match="1 template drops message"):
        loaded = load_rows(_write(tmp_path / "u2.jsonl", [row, {**row, "prompt": row["prompt"][1:]}]), "unpaired",
                           tokenizer=cm.tokenizer("phi3"))
    assert loaded.stats.dropped == {"template_drops_message": 1} and len(loaded.rows) == 1


# ---------------------------------------------------------------------------------------------
# One training step of each data shape, per architecture, through the runner


def _dataset(folder: Path, family: str) -> Path:
    folder.mkdir(parents=True)
    for split, n in (("train", 8), ("test", 4)):
        rows = []
        for i in range(n):
            prompt = conversation(family)[:-1] + [{"role": "user", "content": f"{QUESTION} {i}"}]
            rows.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": REPLY}],
                         "rejected": [{"role": "assistant", "content": "the cat sat ."}],
                         "chosen_turns": SESSION_TURNS, "rejected_turns": SESSION_TURNS[:1] + [
                             {"role": "user", "content": "and the dog ?"}, {"role": "agent", "content": "no ."}]})
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


@pytest.mark.parametrize("family", FAMILIES)
def test_one_training_step_of_each_data_shape(family, tmp_path, harness_cache):
    from harness.plan import plan_suite
    from harness.runner import _train, prepare_world
    from harness.suite import MethodEntry, load_suite

    policy, rm = cm.save(family, tmp_path / "policy"), cm.save(family, tmp_path / "rm", reward=True)
    path = tmp_path / "chat.yaml"
    path.write_text(yaml.safe_dump({
        "name": f"chat-{family}", "model": str(policy), "dataset": str(_dataset(tmp_path / "data", family)),
        "methods": ["dpo"], "budget": {"kind": "steps", "value": 1},
        "train": {"batch_size": 4, "lr": 1e-3, "max_length": 128, "log_every": 1},
        "evaluate": {"prompts": 2, "samples_per_prompt": 1, "max_new_tokens": 4, "reward_model": str(rm)},
    }))
    suite = load_suite(path)
    world = prepare_world(suite)
    assert world.eval_prompts[0][-1]["role"] == "user"  # the prompts stay conversations
    for method in ("dpo", "kto", "sdpo_segment"):  # paired, unpaired, sessions
        one = replace(suite, methods=(MethodEntry(method, {}),))
        spec = next(s for s in plan_suite(one) if s.trains)
        trained, result = _train(spec, one, world)
        assert result.accounting.optimizer_steps == 1, method
        changed = any(not torch.equal(a, b) for a, b in zip(trained.parameters(), world.start_model.parameters()))
        assert changed, method


def _chat_suite(tmp_path: Path, family: str, reward_family: str) -> tuple[Path, Path]:
    """A suite training a `family` policy on conversations, judged by a `reward_family` reward model."""
    policy, rm = cm.save(family, tmp_path / "policy"), cm.save(reward_family, tmp_path / "rm", reward=True)
    path = tmp_path / "chat.yaml"
    path.write_text(yaml.safe_dump({
        "name": "chat", "model": str(policy), "dataset": str(_dataset(tmp_path / "data", family)),
        "methods": ["dpo"], "budget": {"kind": "steps", "value": 1},
        "train": {"batch_size": 4, "lr": 1e-3, "max_length": 128, "log_every": 1},
        "evaluate": {"prompts": 2, "samples_per_prompt": 2, "max_new_tokens": 6, "bootstrap": 50,
                     "reward_model": str(rm)},
    }))
    return path, rm


def test_plan_shows_what_each_model_reads(tmp_path, harness_cache, capsys):
    from harness.cli import main

    path, _ = _chat_suite(tmp_path, "qwen2", "llama3")
    assert main(["plan", str(path), "--show-inputs", "--results", str(tmp_path / "results")]) == 0
    out = capsys.readouterr().out
    prompt = ("<|im_start|>system\\nyou are helpful<|im_end|>\\n<|im_start|>user\\nwhat is the capital of france ? 0"
              "<|im_end|>\\n<|im_start|>assistant\\n")
    assert f"  prompt:     '{prompt}'" in out and f"Generation prompt (evaluation prompt 0; " in out
    assert "  completion: 'paris is the capital .<|im_end|>'" in out
    assert "|[ .]|[<|im_end|>]\n" in out  # the mask covers the reply and its end of turn, once
    assert "|{ .}|{<|im_end|>}|\\n|<|im_start|>|u|s|er|" in out  # SDPO's segment: agent content and end of turn
    reward = REWARD_TEXT["llama3"].replace(QUESTION, f"{QUESTION} 0").replace("\n", "\\n")
    assert f"  '{reward}'" in out.splitlines()


def test_a_chat_suite_stores_the_conversations_and_rescores_them_alike(tmp_path, harness_cache):
    """A Qwen2 policy judged by a Llama-3 reward model: the samples table keeps each prompt's
    messages, completions without the policy's end of turn, and whether each was truncated;
    rescoring from the table (the reward model reading the messages again) gives the same rewards."""
    import pandas as pd

    from harness.cli import main
    from harness.evaluate.rescore import rescore_suite

    path, rm = _chat_suite(tmp_path, "qwen2", "llama3")
    results = tmp_path / "results"
    assert main(["run", str(path), "--results", str(results), "--no-report"]) == 0
    samples = pd.concat(pd.read_parquet(p) for p in (results / "chat").glob("*.samples.parquet"))
    first = samples[samples["prompt_id"] == 0].iloc[0]
    assert [dict(m) for m in first["messages"]] == conversation("qwen2")[:-1] + [
        {"role": "user", "content": f"{QUESTION} 0"}]
    assert first["prompt"].endswith("<|im_start|>assistant\n")  # the text the policy read
    assert not samples["completion"].str.contains("<|im_end|>", regex=False).any()
    assert samples["truncated"].dtype == bool
    stops = (~samples["truncated"]).astype(int)  # the log-probs cover the end of turn, the length does not
    assert (samples["token_logps"].map(len) == samples["completion_tokens"] + stops).all()
    before = samples.sort_values(["run_id", "prompt_id", "sample"])["reward"].to_numpy()
    rescore_suite(results, "chat", reward_model=str(rm), log=lambda _: None)
    again = pd.concat(pd.read_parquet(p) for p in (results / "chat").glob("*.samples.parquet"))
    assert again.sort_values(["run_id", "prompt_id", "sample"])["reward"].to_numpy() == pytest.approx(before, abs=1e-5)


def test_lm_eval_applies_the_chat_template_as_the_leaderboard_does_and_says_so(monkeypatch):
    """auto: a chat model's prompts through its template, few-shot examples as turns (what the Open
    LLM Leaderboard does for chat models); plain text for a tokenizer without one; recorded."""
    import lm_eval

    from harness.evaluate.lmeval import run_lm_eval, uses_chat_template
    from harness.report.reproducibility import _lm_eval_lines

    chat, plain = cm.tokenizer("qwen2"), cm.tokenizer("qwen2")
    plain.chat_template = None
    assert uses_chat_template("auto", chat) and not uses_chat_template("auto", plain)
    assert not uses_chat_template("plain", chat) and uses_chat_template("chat", chat)
    with pytest.raises(HarnessError, match="evaluate.lm_eval_chat_template: chat, but .* has no chat template"):
        uses_chat_template("chat", plain)
    seen = {}
    monkeypatch.setattr(lm_eval, "simple_evaluate", lambda **kwargs: seen.update(kwargs) or {})
    run_lm_eval(cm.model("qwen2"), chat, ["sandbox_grammar_mc"], chat_template=True)
    assert seen["apply_chat_template"] is True and seen["fewshot_as_multiturn"] is True
    manifests = {"a": {"lm_eval": {"chat_template_setting": "auto", "apply_chat_template": True}}}
    assert _lm_eval_lines(manifests) == ["lm-eval prompts: through the start model's chat template, few-shot "
                                         "examples as turns (evaluate.lm_eval_chat_template: auto; 1 run)."]
