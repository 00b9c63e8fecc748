"""The results schema (long format, one row per run × evaluator × metric × split × step).

Version history:
  1: first version. Every parquet file also carries the version in its key-value metadata
     (`harness.schema_version`, `harness.table` = "metrics" or "samples"), and every row in the
     `schema_version` column; readers refuse files written by a newer version. Columns added
     since (null or NaN where a file predates them; harness.evaluate.rescore fills them): the
     samples' token_logps, entropy, chosen_*, reward_model, messages, truncated and judge*; the
     metrics' level (harness.results.store.with_levels gives an older file's intervals 0.95,
     the level every harness version computed them at).

Every row carries the run's identity and its compute accounting, so that any single parquet file
(or a concatenation of many) can be read with pandas or DuckDB without harness installed.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 1

# Who the run is: repeated on every row of the run.
IDENTITY_COLUMNS: dict[str, pa.DataType] = {
    "schema_version": pa.int32(),
    "run_id": pa.string(),
    "suite": pa.string(),
    "method": pa.string(),  # registry name, or "start" for the untrained starting model
    "method_version": pa.string(),
    "hparams": pa.string(),  # JSON of the resolved hyper-parameters (defaults included)
    "seed": pa.int64(),
    "model": pa.string(),
    "dataset": pa.string(),
    "budget_kind": pa.string(),  # flops | tokens | examples | steps
    "budget_value": pa.float64(),
}

# What the run cost: repeated on every row of the run.
ACCOUNTING_COLUMNS: dict[str, pa.DataType] = {
    "policy_tokens": pa.int64(),
    "reference_tokens": pa.int64(),
    "generated_tokens": pa.int64(),
    "flops_policy": pa.float64(),
    "flops_reference": pa.float64(),
    "flops_generation": pa.float64(),
    "flops_total": pa.float64(),
    "optimizer_steps": pa.int64(),
    "examples_seen": pa.int64(),
    "train_seconds": pa.float64(),
    "eval_seconds": pa.float64(),
    "peak_memory_mb": pa.float64(),
    "mfu": pa.float64(),  # NaN where the device's peak FLOP/s is unknown (CPU)
}

# One measurement.
METRIC_COLUMNS: dict[str, pa.DataType] = {
    "evaluator": pa.string(),
    "metric": pa.string(),
    "split": pa.string(),  # "eval" for held-out measurements, "train" for training curves
    "step": pa.int64(),  # optimizer step; the final measurement uses the last step
    "value": pa.float64(),
    "stderr": pa.float64(),
    "ci_low": pa.float64(),
    "ci_high": pa.float64(),
    "level": pa.float64(),  # the interval's confidence level (0.95); NaN where there is no interval
    "n": pa.int64(),
    "higher_is_better": pa.bool_(),
}

# Per-sample generations and scores (second table), so that metrics can be recomputed.
SAMPLE_COLUMNS: dict[str, pa.DataType] = {
    "run_id": pa.string(),
    "prompt_id": pa.int64(),
    "sample": pa.int64(),
    "prompt": pa.string(),
    "completion": pa.string(),
    "messages": pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())])),  # null: a text prompt
    "completion_tokens": pa.int64(),
    "truncated": pa.bool_(),  # the sample never ended its turn (cut at max_new_tokens)
    "reward": pa.float64(),
    "baseline_completion": pa.string(),
    "baseline_reward": pa.float64(),
    "outcome": pa.float64(),  # 1 win, 0.5 tie, 0 loss against the baseline
    "policy_logp": pa.float64(),
    "reference_logp": pa.float64(),
    "token_kl": pa.float64(),  # exact per-token KL summed along the sample
    "token_logps": pa.list_(pa.float32()),  # log π(y_t|x,y<t) per completion token, under the policy
    "entropy": pa.float64(),  # mean per-token entropy of the policy along the sample (nats/token)
    "chosen_completion": pa.string(),  # the dataset's chosen response for the prompt (null: none)
    "chosen_reward": pa.float64(),  # NaN where there is no chosen response
    "chosen_outcome": pa.float64(),  # 1 / 0.5 / 0 against the chosen response, NaN without one
    "reward_model": pa.string(),  # the judge of reward, baseline_reward and chosen_reward
    # the LLM judge's (evaluate.judge; null / NaN without one): harness.evaluate.judge
    "judge": pa.string(),
    "judge_baseline": pa.string(),
    "judge_verdicts": pa.string(),
    "judge_outcome": pa.float64(),
    "judge_tokens": pa.int64(),
    "judge_seconds": pa.float64(),
}


# One line per column, for README.md's "Results schema" section and `harness results --schema`.
COLUMN_DOCS: dict[str, str] = {
    "schema_version": "version of this schema the row was written with (SCHEMA_VERSION)",
    "run_id": "content hash of the run's resolved spec (12 hex digits); the file's name",
    "suite": "suite name",
    "method": 'registry name of the loss, or "start" for the untrained starting model',
    "method_version": "the loss's version string (bumped when its formula changes)",
    "hparams": "JSON object of the resolved hyper-parameters, defaults included",
    "seed": "training seed",
    "model": 'starting model ("sandbox", a local folder or a Hub id)',
    "dataset": 'preference data ("sandbox", a local file or a Hub id)',
    "budget_kind": 'flops | tokens | examples | steps ("none" for the start model)',
    "budget_value": "the budget in its unit (0 for the start model)",
    "policy_tokens": "tokens through the policy in training (forward and backward)",
    "reference_tokens": "tokens through the reference model (0 for reference-free methods)",
    "generated_tokens": "tokens generated during training (SPIN-style self-play)",
    "flops_policy": "FLOPs of policy forward and backward passes (6·N per token)",
    "flops_reference": "FLOPs of reference forward passes (2·N per token), cached or not",
    "flops_generation": "FLOPs of generation during training (2·N per generated token)",
    "flops_total": "sum of the FLOPs columns: what the budget is matched on",
    "optimizer_steps": "optimizer steps taken within the budget",
    "examples_seen": "training examples (pairs) consumed",
    "train_seconds": "wall-clock seconds of training",
    "eval_seconds": "wall-clock seconds of evaluation",
    "peak_memory_mb": "peak memory of the process during training (MiB; GPU memory on GPU)",
    "mfu": "model FLOPs utilization; NaN where the device's peak is unknown (CPU)",
    "evaluator": 'registered evaluator ("win_rate", "gold_reward", "kl", "length", "lm_eval", '
                 '"train" for training curves)',
    "metric": 'metric name within the evaluator ("win_rate_vs_start", "kl_k3", "arc_easy/acc", ...)',
    "split": '"eval" for held-out measurements, "train" for training curves',
    "step": "optimizer step of the measurement (the final one for eval rows)",
    "value": "the measurement (a mean over prompts for eval rows)",
    "stderr": "its standard error over prompts (NaN when not defined)",
    "ci_low": "lower end of its CI over prompts (bootstrap; NaN when not computed)",
    "ci_high": "upper end of its CI over prompts",
    "level": "the CI's confidence level (0.95 for every interval the harness computes; NaN: no interval)",
    "n": "number of prompts (eval) or examples (train) behind the value",
    "higher_is_better": "direction of the metric; null for costs that are shown, not ranked (KL, length)",
    "prompt_id": "index of the held-out prompt (the same prompts for every run of a suite)",
    "sample": "index of the sample for that prompt",
    "prompt": "the prompt text (a conversation: as the policy read it, through its chat template)",
    "messages": "the prompt's conversation, a list of {role, content} (null for a text prompt)",
    "truncated": "whether the completion never ended its turn: cut at max_new_tokens, no stop token",
    "completion": "the policy's sampled completion (its text, without the stop token)",
    "completion_tokens": "its length in tokens, without the stop token",
    "reward": "reward of the completion under the suite's reward model (gold by default)",
    "baseline_completion": "the starting model's completion for the same prompt and sample index",
    "baseline_reward": "reward of the baseline completion (same judge)",
    "outcome": "1 win, 0.5 tie, 0 loss of the completion against the baseline",
    "policy_logp": "summed log-prob of the completion under the policy",
    "reference_logp": "summed log-prob of the completion under the reference (starting) model",
    "token_kl": "exact per-token KL(π‖π_ref) over the vocabulary, summed along the completion",
    "token_logps": "log-prob of each completion token under the policy (list, float32)",
    "entropy": "mean per-token entropy of the policy along the completion (nats per token)",
    "chosen_completion": "the dataset's chosen response for the prompt (null where there is none)",
    "chosen_reward": "reward of the chosen response (NaN where there is none)",
    "chosen_outcome": "1 win, 0.5 tie, 0 loss of the completion against the chosen response (NaN: none)",
    "reward_model": 'the judge of the reward columns ("gold" or a reward model\'s name or path)',
    "judge": 'the LLM judge, "MODEL (TEMPLATE)" (evaluate.judge; null without one)',
    "judge_baseline": "what the LLM judge compared the completion with: start, chosen or a reference-outputs file",
    "judge_verdicts": 'the judge\'s two verdicts, policy first then baseline first ("m / M", "A>B / B>A"; "?": none read)',
    "judge_outcome": "the completion's share of the win under the LLM judge, both orders averaged (NaN: no verdict)",
    "judge_tokens": "tokens the LLM judge read and wrote for the two verdicts (as the server counted them)",
    "judge_seconds": "seconds of the two judge requests, retries included (when they were first judged)",
}


def _with_metadata(columns: dict[str, pa.DataType], table: str) -> pa.Schema:
    metadata = {"harness.schema_version": str(SCHEMA_VERSION), "harness.table": table}
    return pa.schema(columns, metadata=metadata)


def results_schema() -> pa.Schema:
    """The metrics table: identity, accounting and measurement columns, in that order."""
    return _with_metadata({**IDENTITY_COLUMNS, **ACCOUNTING_COLUMNS, **METRIC_COLUMNS}, "metrics")


def samples_schema() -> pa.Schema:
    """The per-sample table (`<run_id>.samples.parquet`)."""
    return _with_metadata(SAMPLE_COLUMNS, "samples")
