"""Evaluating one policy on the held-out prompts: sample, score every sample, run the
registered evaluators (and lm-eval tasks when the suite names some). Returns plain rows for the
results store.

The per-sample table (`sample_frame`, stored as `<run_id>.samples.parquet`) is the single input
of every sample-based metric: `scored_from_samples` turns it back into `ScoredSamples`, after
generation as when a suite is rescored without generating (`harness.evaluate.rescore`).

A prompt is a text or a conversation (harness.data.tokenize): the policy reads a conversation
through its chat template; the reward model gets the messages themselves and the completion's
text (the assistant's content, without the policy's end of turn) and renders them with its own.
The table keeps a conversation in its `messages` column, beside the text the policy read.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from harness.data.tokenize import Prompt, encode_ids, is_conversation, pad_right, prompt_ids, prompt_key, prompt_text
from harness.evaluate.judge import PairwiseJudge, judge_columns
from harness.evaluate.metrics import pairwise_outcomes  # importing it registers the evaluators
from harness.evaluate.registry import EVALUATORS, ScoredSamples
from harness.evaluate.reward_models import RewardModel, as_reward_model, reward_model_name
from harness.generation import Completion, SamplingConfig, sample_completions
from harness.logprobs import completion_entropy, completion_kl, shifted_logits, token_logps_from_logits
from harness.suite import EvalConfig

# Scoring holds (rows, T, V) float32 logits of the policy and the reference at once (and a few
# temporaries of that size): rows per batch are cut so that one such tensor stays under this.
LOGITS_BUDGET_BYTES = 512 * 2**20


@dataclass(frozen=True)
class Baseline:
    """What win rates are measured against, on the same prompts: the starting model's samples
    (one per policy sample) and, where the dataset has one, the prompt's chosen response."""

    completions: list[str]  # (prompts × samples), prompt-major
    rewards: np.ndarray  # (prompts, samples)
    chosen: list[str | None] = field(default_factory=list)  # (prompts,), None where there is none
    chosen_rewards: np.ndarray | None = None  # (prompts,), NaN where there is none

    def to_json(self) -> dict[str, Any]:
        """Plain data that `from_json` turns back into an equal Baseline (dtypes kept: a float32
        reward read back as float64 would change later arithmetic)."""
        rewards = np.asarray(self.rewards)
        chosen_rewards = None if self.chosen_rewards is None else np.asarray(self.chosen_rewards)
        return {
            "completions": list(self.completions), "rewards": rewards.tolist(), "dtype": str(rewards.dtype),
            "chosen": list(self.chosen),
            "chosen_rewards": None if chosen_rewards is None else [None if np.isnan(v) else v for v in chosen_rewards.tolist()],
            "chosen_dtype": None if chosen_rewards is None else str(chosen_rewards.dtype),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Baseline:
        chosen_rewards = data.get("chosen_rewards")
        if chosen_rewards is not None:
            chosen_rewards = np.array([np.nan if v is None else v for v in chosen_rewards], dtype=data["chosen_dtype"])
        return cls(list(data["completions"]), np.array(data["rewards"], dtype=data["dtype"]), list(data["chosen"]),
                   chosen_rewards)


@dataclass
class Evaluation:
    rows: list[dict[str, Any]]  # metric rows (evaluator, metric, value, stderr, ci_*, n, higher_is_better)
    samples: list[dict[str, Any]]  # one per generated sample
    generated_tokens: int
    seconds: float


def sampling_config(config: EvalConfig, seed: int) -> SamplingConfig:
    """How evaluation samples: every parameter from the suite's `evaluate:` section."""
    return SamplingConfig(
        n=config.samples_per_prompt, max_new_tokens=config.max_new_tokens,
        temperature=config.temperature, top_k=config.top_k, top_p=config.top_p, seed=seed,
    )


def _vocab_size(model) -> int:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return int(head.weight.shape[0]) if head is not None else int(model.config.vocab_size)


@torch.no_grad()
def score_completions(policy, reference, tokenizer, prompts: list[str], samples: list[Completion],
                      batch_size: int = 64, *, progress: str | None = None) -> dict[str, Any]:
    """Per sample, from one forward of each model over (prompt, completion):

    policy_logp / reference_logp: summed completion log-probs (N,);
    token_kl: Σ_t KL(π(·|x,y<t) ‖ π_ref(·|x,y<t)) over the vocabulary (N,);
    entropy: the mean over the completion's tokens of H(π(·|x,y<t)) (N,), nats per token;
    token_logps: log π(y_t|x,y<t) per completion token (list of N float32 arrays).
    """
    from tqdm.auto import tqdm

    out: dict[str, list] = {"policy_logp": [], "reference_logp": [], "token_kl": [], "entropy": [], "token_logps": []}
    device = next(policy.parameters()).device
    rows = [encode_ids(prompt_ids(tokenizer, prompts[s.prompt_id]), list(s.token_ids)) for s in samples]
    width = max((len(r.input_ids) for r in rows), default=1)
    per_row = width * _vocab_size(policy) * 4
    step = max(1, min(batch_size, LOGITS_BUDGET_BYTES // max(per_row, 1)))
    hide = True if progress is None else None
    for start in tqdm(range(0, len(rows), step), desc=progress, disable=hide, leave=False):
        batch = {k: v.to(device) for k, v in pad_right(rows[start : start + step], tokenizer.pad_token_id).items()}
        args = (batch["input_ids"], batch["attention_mask"])
        mask = batch["completion_mask"]
        policy_logits = shifted_logits(policy, *args)
        # the start model evaluated against itself: one forward serves both
        reference_logits = policy_logits if reference is policy else shifted_logits(reference, *args)
        policy_tokens = token_logps_from_logits(policy_logits, batch["input_ids"]) * mask
        reference_tokens = token_logps_from_logits(reference_logits, batch["input_ids"]) * mask
        kl = completion_kl(policy_logits, reference_logits, mask)  # KL(π ‖ π_ref)
        entropy = completion_entropy(policy_logits, mask)
        counts = mask.sum(-1).clamp(min=1)
        out["policy_logp"] += policy_tokens.sum(-1).tolist()
        out["reference_logp"] += reference_tokens.sum(-1).tolist()
        out["token_kl"] += kl.sum(-1).tolist()
        out["entropy"] += (entropy.sum(-1) / counts).tolist()
        out["token_logps"] += [policy_tokens[i][mask[i]].cpu().numpy() for i in range(len(mask))]
    return {k: (v if k == "token_logps" else np.asarray(v)) for k, v in out.items()}


def evaluate_policy(policy, reference, tokenizer, prompts: list[str], baseline: Baseline, reward,
                    config: EvalConfig, *, step: int, progress: str | None = None,
                    task_dirs: tuple[Path, ...] = ()) -> Evaluation:
    """Sample config.samples_per_prompt completions per prompt, score them, compute every
    evaluator, and run the suite's lm-eval tasks (config.lm_eval_tasks) on the policy."""
    started = time.perf_counter()
    judge = as_reward_model(reward)
    samples = sample_completions(policy, tokenizer, prompts, sampling_config(config, config.seed),
                                 progress=progress, backend=config.backend)
    rewards = judge.score([prompts[s.prompt_id] for s in samples], [s.text for s in samples])
    scores = score_completions(policy, reference, tokenizer, prompts, samples,
                               progress=f"{progress}: scoring" if progress else None)
    frame = sample_frame(prompts, samples, rewards, scores, baseline, reward_model_name(judge),
                         shown=[prompt_text(tokenizer, p) for p in prompts])
    if config.judge.enabled:
        frame = judge_columns(frame, judged_prompts(frame), PairwiseJudge(config.judge))
    scored = scored_from_samples(frame, bootstrap=config.bootstrap, seed=config.seed)
    rows = metric_rows(scored, step)
    if config.lm_eval_tasks:
        from harness.evaluate.lmeval import lm_eval_rows

        rows += lm_eval_rows(policy, tokenizer, config, step=step, task_dirs=task_dirs)
    generated = sum(len(s.token_ids) for s in samples)
    return Evaluation(rows, frame.to_dict("records"), generated, time.perf_counter() - started)


def metric_rows(scored: ScoredSamples, step: int) -> list[dict[str, Any]]:
    """One row per metric of every registered evaluator (those an evaluator cannot compute from
    these samples, e.g. vs-chosen without a dataset response, are left out)."""
    rows = []
    for name in EVALUATORS.names():
        evaluator = EVALUATORS.get(name)
        info = {m.name: m for m in evaluator.metrics}
        for metric, est in evaluator.compute(scored).items():
            rows.append({
                "evaluator": name, "metric": metric, "split": "eval", "step": step,
                "value": est.value, "stderr": est.stderr, "ci_low": est.ci_low, "ci_high": est.ci_high,
                "level": est.stated_level, "n": est.n, "higher_is_better": info[metric].higher_is_better,
            })
    return rows


# The judge columns of a sample no LLM judge has read (harness.evaluate.judge.judge_columns fills them).
NO_JUDGE = {"judge": None, "judge_baseline": None, "judge_verdicts": None, "judge_outcome": float("nan"),
            "judge_tokens": 0, "judge_seconds": 0.0}


def sample_frame(prompts: list[Prompt], samples: list[Completion], rewards: np.ndarray, scores: dict[str, Any],
                 baseline: Baseline, reward_model: str, *, shown: list[str] | None = None) -> pd.DataFrame:
    """The per-sample table (harness.results.schema.SAMPLE_COLUMNS, without run_id); `shown`: each
    prompt as the policy read it (a text prompt is its own)."""
    shown = shown or list(prompts)
    n = len(samples) // max(len(prompts), 1)
    base_rewards = np.asarray(baseline.rewards, np.float64).reshape(-1)
    chosen = list(baseline.chosen) or [None] * len(prompts)
    chosen_rewards = (np.full(len(prompts), np.nan) if baseline.chosen_rewards is None
                      else np.asarray(baseline.chosen_rewards, np.float64))
    rewards = np.asarray(rewards, np.float64)
    rows = []
    for i, s in enumerate(samples):
        p = s.prompt_id
        reward = float(rewards[i])
        rows.append({
            "prompt_id": p, "sample": s.sample, "prompt": shown[p],
            "messages": prompts[p] if is_conversation(prompts[p]) else None,
            "completion": s.text, "completion_tokens": s.content_tokens, "truncated": s.truncated, "reward": reward,
            "baseline_completion": baseline.completions[p * n + s.sample],
            "baseline_reward": float(base_rewards[p * n + s.sample]),
            "outcome": float(pairwise_outcomes(reward, base_rewards[p * n + s.sample])),
            "policy_logp": float(scores["policy_logp"][i]),
            "reference_logp": float(scores["reference_logp"][i]),
            "token_kl": float(scores["token_kl"][i]),
            "token_logps": np.asarray(scores["token_logps"][i], dtype=np.float32),
            "entropy": float(scores["entropy"][i]),
            "chosen_completion": chosen[p],
            "chosen_reward": float(chosen_rewards[p]),
            "chosen_outcome": float(pairwise_outcomes(reward, chosen_rewards[p])),
            "reward_model": reward_model,
            **NO_JUDGE,
        })
    return pd.DataFrame(rows)


def scored_from_samples(frame: pd.DataFrame, *, bootstrap: int, seed: int) -> ScoredSamples:
    """ScoredSamples from the per-sample table (every prompt must have the same number of
    samples). Columns added after a table was stored (entropy, chosen_*, reward_model) may be
    missing: the metrics that need them are then left out."""
    frame = frame.sort_values(["prompt_id", "sample"], kind="stable")
    prompts = frame["prompt_id"].nunique()
    if prompts == 0 or len(frame) % prompts:
        raise ValueError("the samples table must hold the same number of samples for every prompt")
    shape = (prompts, len(frame) // prompts)

    def grid(column: str, dtype=np.float64) -> np.ndarray | None:
        if column not in frame.columns:
            return None
        return frame[column].to_numpy(dtype=dtype).reshape(shape)

    first = frame.groupby("prompt_id", sort=True).head(1)
    chosen_rewards = (first["chosen_reward"].to_numpy(np.float64) if "chosen_reward" in frame.columns
                      else None)
    chosen = first["chosen_completion"].to_numpy(object) if "chosen_completion" in frame.columns else None
    judges = frame["reward_model"].dropna().unique() if "reward_model" in frame.columns else []
    judged_against = frame["judge_baseline"].dropna().unique() if "judge_baseline" in frame.columns else []
    return ScoredSamples(
        rewards=grid("reward"), baseline_rewards=grid("baseline_reward"),
        policy_logps=grid("policy_logp"), reference_logps=grid("reference_logp"),
        token_kl=grid("token_kl"), lengths=grid("completion_tokens"),
        bootstrap=bootstrap, seed=seed,
        completions=grid("completion", object), baseline_completions=grid("baseline_completion", object),
        chosen_completions=chosen, chosen_rewards=chosen_rewards, entropy=grid("entropy"),
        reward_model=str(judges[0]) if len(judges) else "gold",
        judge_outcomes=grid("judge_outcome") if len(judged_against) else None,
        judge_baseline=str(judged_against[0]) if len(judged_against) else None,
        judge_tokens=grid("judge_tokens") if len(judged_against) else None,
        judge_seconds=grid("judge_seconds") if len(judged_against) else None,
    )


def baseline_settings(config: EvalConfig) -> dict[str, Any]:
    """The evaluate settings the start model's baseline depends on (its cache key): all but the
    judge, which reads the baseline and does not shape it."""
    settings = asdict(config)
    del settings["judge"]
    return settings


def make_baseline(start_model, tokenizer, prompts: list[str], reward, config: EvalConfig,
                  chosen: list[str | None] | None = None, *, progress: str | None = None) -> Baseline:
    """The starting model's samples, with a seed distinct from the policies' sampling seed, so
    that the starting model evaluated against its own baseline wins about half the time; and
    the dataset's chosen responses (`chosen`, one per prompt or None), scored by the same judge."""
    judge: RewardModel = as_reward_model(reward)
    samples = sample_completions(start_model, tokenizer, prompts, sampling_config(config, config.seed + 1),
                                 progress=progress, backend=config.backend)
    texts = [s.text for s in samples]
    rewards = judge.score([prompts[s.prompt_id] for s in samples], texts).reshape(len(prompts), config.samples_per_prompt)
    chosen = list(chosen) if chosen is not None else [None] * len(prompts)
    chosen_rewards = np.full(len(prompts), np.nan)
    have = [i for i, c in enumerate(chosen) if c is not None]
    if have:
        chosen_rewards[have] = judge.score([prompts[i] for i in have], [chosen[i] for i in have])
    return Baseline(texts, rewards, chosen, chosen_rewards)


def chosen_responses(pairs: list[dict[str, Any]], prompts: list[Prompt]) -> list[str | None]:
    """Per prompt, the dataset's chosen response for it (the first pair with that prompt), or None."""
    by_prompt: dict[str, str] = {}
    for pair in pairs:
        by_prompt.setdefault(prompt_key(pair["prompt"]), pair["chosen"])
    return [by_prompt.get(prompt_key(p)) for p in prompts]


def chosen_from_file(path: Path | None, prompts: list[str]) -> list[str | None] | None:
    """chosen_responses from a jsonl of preference pairs; None when there is no such file."""
    if path is None or not Path(path).exists():
        return None
    from harness.data.jsonl import read_jsonl

    return chosen_responses(read_jsonl(Path(path)), prompts)


def rescored(frame: pd.DataFrame, judge: RewardModel) -> pd.DataFrame:
    """The per-sample table with every reward (policy, start baseline, chosen) and outcome
    recomputed by `judge`; nothing is generated."""
    frame = frame.copy()
    frame["reward"] = judge.score(judged_prompts(frame), list(frame["completion"]))
    frame["baseline_reward"] = judge.score(judged_prompts(frame), list(frame["baseline_completion"]))
    if "chosen_completion" in frame.columns:
        first = frame.drop_duplicates("prompt_id")
        have = first[first["chosen_completion"].notna()]
        scores = dict(zip(have["prompt_id"], judge.score(judged_prompts(have), list(have["chosen_completion"]))))
        frame["chosen_reward"] = frame["prompt_id"].map(scores).astype(np.float64)
        frame["chosen_outcome"] = pairwise_outcomes(frame["reward"].to_numpy(), frame["chosen_reward"].to_numpy())
    frame["outcome"] = pairwise_outcomes(frame["reward"].to_numpy(), frame["baseline_reward"].to_numpy())
    frame["reward_model"] = reward_model_name(judge)
    return frame


def judged_prompts(frame: pd.DataFrame) -> list[Prompt]:
    """The prompts a reward model scores a samples table's rows on: the conversation where the
    row has one (its `messages`), else the prompt text."""
    messages = frame["messages"] if "messages" in frame.columns else [None] * len(frame)
    return [_as_messages(m) if m is not None else p for p, m in zip(frame["prompt"], messages)]


def _as_messages(value) -> list[dict]:
    """Messages as plain dicts (parquet gives a list column back as an array of dicts)."""
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in value]


__all__ = [
    "judged_prompts",
    "Baseline", "baseline_settings", "Evaluation", "chosen_from_file", "chosen_responses", "evaluate_policy", "make_baseline", "metric_rows",
    "rescored", "sample_frame", "sampling_config", "score_completions", "scored_from_samples",
]
