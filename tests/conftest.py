"""Shared fixtures: an isolated cache, and a tiny suite whose sandbox builds in seconds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"  # tests never reach a hub, whatever the environment says
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One thread: the sandbox's models are tiny, and intra-op threads only add contention.
torch.set_num_threads(1)

TINY_SANDBOX = {
    "corpus_documents": 400,
    "demonstrations": 200,
    "train_pairs": 48,
    "eval_prompts": 8,
    "eval_pairs": 8,
    "pretrain_steps": 10,
    "pretrain_batch_size": 8,
    "sft_steps": 5,
    "batch_size": 16,
    "max_new_tokens": 12,
    "model": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2},
    # the other data shapes, a batch or two each (harness/sandbox/world.py: DATA_FILES)
    "corpus_sessions": 100,
    "session_demonstrations": 50,
    "unpaired": 32,
    "sessions": 16,
    "eval_sessions": 4,
    "session_max_new_tokens": 10,
    "session_candidates": 6,  # the tiny model rarely says both a good and a bad answer in fewer
    # the capability categories' material and the instruction-tuned start, a little of each
    "corpus_facts": 100,
    "corpus_rules": 30,
    "corpus_reasoning": 60,
    "corpus_instructed": 20,
    "instruct_demonstrations": 200,
    "instruct_steps": 5,
}


def tiny_suite_text(name: str = "tiny", methods: str = "[dpo, ipo, simpo]", budget: float = 2.0e8) -> str:
    """A suite that trains each method a few steps on the tiny sandbox."""
    import yaml

    return yaml.safe_dump({
        "name": name,
        "sandbox": TINY_SANDBOX,
        "methods": yaml.safe_load(methods),
        "seeds": [0],
        "budget": {"kind": "flops", "value": budget},
        "train": {"batch_size": 8, "lr": 1e-3, "max_length": 48, "log_every": 1},
        "evaluate": {"prompts": 8, "samples_per_prompt": 2, "max_new_tokens": 12, "bootstrap": 200},
    })


@pytest.fixture(scope="session")
def harness_cache(tmp_path_factory) -> Path:
    """One cache for the whole test session, so the tiny sandbox is built once."""
    path = tmp_path_factory.mktemp("harness-cache")
    os.environ["HARNESS_CACHE"] = str(path)
    return path


@pytest.fixture
def tiny_suite(tmp_path, harness_cache) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(tiny_suite_text())
    return path
