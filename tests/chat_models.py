"""Tiny random-weight models of the architectures users bring, each with a byte-level BPE
tokenizer trained here in well under a second and its family's published chat template.

The templates are the families' own (the chat_template of the instruct checkpoints' tokenizer
configs, written out minimally: the same text for the conversations the tests render):
Llama-3 (Meta-Llama-3-8B-Instruct), Qwen2 (Qwen2-7B-Instruct), Mistral (Mistral-7B-Instruct-v0.1),
Gemma-2 (gemma-2-9b-it), Phi-3 (Phi-3-mini-4k-instruct). Special tokens, eos ids and BOS
behaviour follow the same checkpoints (Qwen2 has no BOS; Llama-3 and Phi-3 list several
end-of-turn ids in generation_config.json).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
QWEN2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)
GEMMA2_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)
PHI3_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)


@dataclass(frozen=True)
class Family:
    name: str
    model_type: str
    template: str
    bos: str | None
    eos: str  # the tokenizer's eos_token
    end_of_turn: str  # the token that ends an assistant turn
    specials: tuple[str, ...]  # every special token of the vocabulary
    generation_eos: tuple[str, ...]  # generation_config.json's eos_token_id, as tokens
    config: dict  # architecture-specific config keys
    system: bool = True  # the template accepts a system message


FAMILIES = {
    "llama3": Family(
        "llama3", "llama", LLAMA3_TEMPLATE, "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>",
        ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
        ("<|end_of_text|>", "<|eot_id|>"), {"num_key_value_heads": 2}),
    "qwen2": Family(
        "qwen2", "qwen2", QWEN2_TEMPLATE, None, "<|im_end|>", "<|im_end|>",
        ("<|endoftext|>", "<|im_start|>", "<|im_end|>"), ("<|im_end|>", "<|endoftext|>"),
        {"num_key_value_heads": 2, "tie_word_embeddings": True}),
    "mistral": Family(
        "mistral", "mistral", MISTRAL_TEMPLATE, "<s>", "</s>", "</s>", ("<s>", "</s>", "<unk>"), ("</s>",),
        {"num_key_value_heads": 2, "sliding_window": 16}, system=False),
    "gemma2": Family(
        "gemma2", "gemma2", GEMMA2_TEMPLATE, "<bos>", "<eos>", "<end_of_turn>",
        ("<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"), ("<eos>", "<end_of_turn>"),
        {"num_key_value_heads": 2, "head_dim": 8, "final_logit_softcapping": 30.0,
         "attn_logit_softcapping": 50.0, "sliding_window": 16, "query_pre_attn_scalar": 8}, system=False),
    "phi3": Family(
        "phi3", "phi3", PHI3_TEMPLATE, None, "<|endoftext|>", "<|end|>",
        ("<|endoftext|>", "<|assistant|>", "<|end|>", "<|system|>", "<|user|>"),
        ("<|endoftext|>", "<|assistant|>", "<|end|>"), {"num_key_value_heads": 4}),
}

CORPUS = [
    "the cat sat on the mat and looked at the dog .", "a good answer is short and kind .",
    "what is the capital of france ? paris is the capital .", "how are you today ? i am fine , thanks .",
    "tell me a joke about cats . the cat ran away .", "system user assistant model hello hi you are helpful",
] * 4


@lru_cache(maxsize=None)
def _tokenizer_json(family: str) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    spec = FAMILIES[family]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=list(spec.specials),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    return tok.to_str()


def tokenizer(family: str, *, pad: bool = True, padding_side: str = "right", add_bos: bool | None = None):
    """The family's tokenizer: its template, BOS/EOS; `pad=False` leaves it without a pad token."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    spec = FAMILIES[family]
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_tokenizer_json(family)),
                                  bos_token=spec.bos, eos_token=spec.eos, padding_side=padding_side)
    tok.chat_template = spec.template
    if pad:
        tok.pad_token = "<pad>" if "<pad>" in spec.specials else spec.eos
    if add_bos is not None:
        tok.add_bos_token = add_bos
    return tok


def config(family: str, vocab_size: int):
    from transformers import AutoConfig

    spec = FAMILIES[family]
    tok = tokenizer(family)
    keys = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=256,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id)
    cfg = AutoConfig.for_model(spec.model_type, **{**keys, **spec.config})
    cfg._attn_implementation = "sdpa" if family != "gemma2" else "eager"
    return cfg


def model(family: str, seed: int = 0):
    """A random-weight causal LM of the family (fp32, eval mode), its generation_config listing
    the family's end-of-turn ids."""
    from transformers import AutoModelForCausalLM, GenerationConfig

    tok = tokenizer(family)
    torch.manual_seed(seed)
    lm = AutoModelForCausalLM.from_config(config(family, len(tok)))
    lm.generation_config = GenerationConfig(
        eos_token_id=[tok.convert_tokens_to_ids(t) for t in FAMILIES[family].generation_eos],
        bos_token_id=tok.bos_token_id)
    return lm.eval()


def reward_model(family: str, seed: int = 0):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    cfg = config(family, len(tokenizer(family)))
    cfg.num_labels = 1
    return AutoModelForSequenceClassification.from_config(cfg).eval()


def save(family: str, folder: Path, *, reward: bool = False, seed: int = 0) -> Path:
    """The family's model (or reward model) and tokenizer written as a model folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (reward_model(family, seed) if reward else model(family, seed)).save_pretrained(folder)
    tokenizer(family).save_pretrained(folder)
    return folder
