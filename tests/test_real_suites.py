"""A suite on a real model, dataset and reward model, given as local folders (the Hub code path
with HF_HUB_OFFLINE=1): `harness run` trains, evaluates, stores and ranks as on the sandbox."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import pandas as pd
import pytest
import torch
import yaml
from huggingface_hub.errors import LocalEntryNotFoundError
from transformers import LlamaConfig, LlamaForCausalLM

from harness.cli import main
from harness.sandbox import grammar
from harness.sandbox.lm import fit_tokenizer
from tests.test_evaluate_reward_models import save_tiny_reward_model

WORDS = " ".join(grammar.vocabulary())


def save_tiny_policy(folder: Path) -> Path:
    tokenizer = fit_tokenizer([WORDS])
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_pairs(folder: Path, *, train: int = 24, test: int = 6, drop_column: str | None = None) -> Path:
    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", train), ("test", test)):
        rows = [{"prompt": grammar.prompt(rng), "chosen": grammar.document(rng), "rejected": grammar.document(rng)}
                for _ in range(n)]
        if drop_column:
            rows = [{k: v for k, v in r.items() if k != drop_column} for r in rows]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def save_unpaired(folder: Path) -> Path:
    """KTO-style data: prompt, completion, label; no pairs."""
    rng = random.Random(1)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 24), ("test", 6)):
        rows = [{"prompt": grammar.prompt(rng), "completion": grammar.document(rng), "label": i % 2 == 0}
                for i in range(n)]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def write_suite(path: Path, model: Path, dataset: Path, reward: str, methods: str = "[dpo, kto, simpo]") -> Path:
    path.write_text(yaml.safe_dump({
        "name": "real", "model": str(model), "dataset": str(dataset), "methods": yaml.safe_load(methods),
        "budget": {"kind": "steps", "value": 2},
        "train": {"batch_size": 4, "lr": 1e-3, "max_length": 48, "log_every": 1},
        "evaluate": {"prompts": 4, "samples_per_prompt": 1, "max_new_tokens": 6, "bootstrap": 100,
                     "reward_model": reward},
    }))
    return path


def harness(*args: str, cwd: Path, cache: Path) -> subprocess.CompletedProcess:
    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HARNESS_CACHE": str(cache), "OMP_NUM_THREADS": "1",
           "PATH": str(Path(sys.executable).parent)}
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(autouse=True)
def no_hub(monkeypatch):
    """Every test here runs offline whatever the environment says: HF_HUB_OFFLINE for the
    processes it starts, and in this process a snapshot download answers as an offline cache miss
    (a test that exercises the Hub branch replaces it with its own fake)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", _offline_cache_miss)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("real")
    return {"root": root, "model": save_tiny_policy(root / "policy"), "data": save_pairs(root / "pairs"),
            "reward": save_tiny_reward_model(root / "reward"), "cache": root / "cache"}


def test_a_real_suite_trains_evaluates_and_ranks(world):
    suite = write_suite(world["root"] / "real.yaml", world["model"], world["data"], str(world["reward"]))
    out = harness("run", str(suite), "--results", "results", "--reports", "reports", cwd=world["root"],
                  cache=world["cache"])
    assert out.returncode == 0, out.stderr[-3000:]
    assert "4 runs planned, 0 stored, 4 to run" in out.stdout
    frames = [pd.read_parquet(p) for p in (world["root"] / "results" / "real").glob("*.parquet")
              if not p.name.endswith(".samples.parquet")]
    results = pd.concat(frames)
    evaluated = results[results["split"] == "eval"]
    assert set(evaluated["method"]) == {"start", "dpo", "kto", "simpo"}
    assert (results.loc[results["method"] != "start", "optimizer_steps"] == 2).all()
    win = evaluated[evaluated["metric"] == "win_rate_vs_start"]
    assert len(win) == 4 and win["value"].between(0, 1).all()
    samples = pd.concat(pd.read_parquet(p) for p in (world["root"] / "results" / "real").glob("*.samples.parquet"))
    assert set(samples["reward_model"]) == {str(world["reward"])} and samples["reward"].notna().all()
    manifest = json.loads(next((world["root"] / "results" / "real").glob("*.json")).read_text())
    assert manifest["data_loading"]["pairs_train"]["rows"] == 24
    assert manifest["data_loading"]["unpaired_train"]["converted"] == "pairs -> unpaired"
    # judged by the reward model: its score is the reward column, the frontier and the tests' metric
    lines = out.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("rank "))
    assert "reward_model/reward_mean" in lines[header] and "gold_reward" not in lines[header]
    assert not any("–" in row for row in lines[header + 1 : header + 5]), lines[header : header + 5]  # no gaps
    html = (world["root"] / "reports" / "real.html").read_text()
    assert "reward-model score" in html and "Δ reward-model score (A − B)" in html
    assert "No entry has both" not in html and "gold reward" not in html
    again = harness("run", str(suite), "--results", "results", "--reports", "reports", cwd=world["root"],
                    cache=world["cache"])
    assert "4 runs planned, 4 stored, 0 to run" in again.stdout


def test_unpaired_only_data_trains_kto_and_refuses_paired_methods(world, harness_cache, capsys):
    data = save_unpaired(world["root"] / "unpaired")
    suite = write_suite(world["root"] / "kto.yaml", world["model"], data, str(world["reward"]), "[kto]")
    assert main(["run", str(suite), "--results", str(world["root"] / "results-kto"), "--no-report"]) == 0
    runs = pd.concat(pd.read_parquet(p) for p in (world["root"] / "results-kto" / "real").glob("*.parquet")
                     if not p.name.endswith(".samples.parquet"))
    assert set(runs["method"]) == {"start", "kto"} and (runs.loc[runs["method"] == "kto", "optimizer_steps"] == 2).all()
    capsys.readouterr()
    suite = write_suite(world["root"] / "dpo-unpaired.yaml", world["model"], data, str(world["reward"]), "[dpo]")
    assert main(["run", str(suite), "--results", str(world["root"] / "results-dpo-unpaired"), "--no-report"]) == 2
    assert "the dataset has no 'paired' data" in capsys.readouterr().err


def _offline_cache_miss(repo_id, **_):
    """What snapshot_download raises offline for a model that is not in the Hugging Face cache."""
    raise LocalEntryNotFoundError(f"{repo_id}: cannot find an appropriate cached snapshot folder "
                                  "and outgoing traffic has been disabled")


@pytest.mark.parametrize("case, expected", [
    ("gold", "'gold' scores the sandbox's language only"),
    ("no_rejected", "pairs data needs a 'rejected' column"),
    ("sft_method", "the dataset has no 'sft' data"),
    ("scores_method", "needs 'scores'"),
    ("hub_model", "cannot be fetched from the Hub"),
    ("one_file", "gives the same rows for data.train_split 'train' and data.eval_split 'test'"),
    ("one_batch_short", "train.batch_size = 4 is more than the 3 paired examples"),
])
def test_bad_real_suites_get_one_line_errors(world, harness_cache, capsys, monkeypatch, case, expected):
    model, data, reward, methods = world["model"], world["data"], str(world["reward"]), "[dpo]"
    if case == "gold":
        reward = "gold"
    elif case == "no_rejected":
        data = save_pairs(world["root"] / "broken", drop_column="rejected")
    elif case == "sft_method":
        methods = "[spin]"
    elif case == "scores_method":
        methods = "[odpo_offset]"
    elif case == "hub_model":
        model = Path("nobody-here/no-such-model")
        monkeypatch.setattr(huggingface_hub, "snapshot_download", _offline_cache_miss)  # never the network
    elif case == "one_file":
        data = world["data"] / "train.jsonl"
    elif case == "one_batch_short":  # refused before the start model is evaluated and stored
        data = save_pairs(world["root"] / "few", train=3)
    suite = write_suite(world["root"] / f"{case}.yaml", model, data, reward, methods)
    code = main(["run", str(suite), "--results", str(world["root"] / f"results-{case}"),
                 "--reports", str(world["root"] / f"reports-{case}")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and expected in err and len(err.splitlines()) == 1, err
    assert not list((world["root"] / f"results-{case}").rglob("*.json")), "a run started"


def test_a_hub_model_is_fetched_as_safetensors_or_else_with_its_bin_weights(tmp_path, monkeypatch):
    """resolve_model_path's Hub branch (no network here: snapshot_download is replaced by a fake
    that 'downloads' the files of a repo matching the patterns)."""
    import fnmatch

    from harness.models import resolve_model_path

    repos = {"org/modern": ["config.json", "model.safetensors", "pytorch_model.bin", "tokenizer.json"],
             "org/older": ["config.json", "pytorch_model.bin", "tokenizer.json"]}
    calls = []

    def fake_snapshot_download(repo_id, allow_patterns):
        calls.append((repo_id, "*.bin" in allow_patterns))
        folder = tmp_path / repo_id
        folder.mkdir(parents=True, exist_ok=True)
        for name in repos[repo_id]:
            if any(fnmatch.fnmatch(name, p) for p in allow_patterns):
                (folder / name).write_text("x")
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    modern = Path(resolve_model_path("org/modern", None))
    assert sorted(p.name for p in modern.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    older = Path(resolve_model_path("org/older", None))
    assert (older / "pytorch_model.bin").exists()
    assert calls == [("org/modern", False), ("org/older", False), ("org/older", True)]
