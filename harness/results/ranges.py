"""The range a stored metric's true value lies in, where it is known, and intervals cut to it.

The leaderboard's intervals (a t interval over seeds, the crossed seeds × prompts t interval, a
run's value ± z·stderr) are symmetric around the mean, so near the edge of a bounded quantity they
reach past it: a KL interval below 0, a win rate above 1. The true value always lies in the range,
so intersecting an interval with it drops only values the truth cannot take: the cut interval
contains the true value whenever the uncut one did (coverage never falls) and is never longer.
`clip_to_range` does that, and the point estimate is left as measured.

Which keys ("evaluator/metric", as harness.rank names them) are bounded, `metric_range`:
- `kl/*`, [0, ∞): KL(π‖π_ref) ≥ 0 (Gibbs' inequality), whichever estimator measured it.
  The exact per-token KL and k3 = (r − 1) − log r are ≥ 0 sample by sample (log r ≤ r − 1), so
  their means are too. k1 = log π(y) − log π_ref(y) is not: a sample's k1 is negative wherever
  the reference gives it more probability than the policy, and with a small KL a run's mean of
  k1 can be below 0. But k1 is unbiased, E_{y~π}[k1] = KL ≥ 0, and an interval over seeds or
  prompts is an interval for that expectation, so cutting it at 0 is as valid as for the others.
  The k1 point estimate is shown as measured (it may be below 0, outside its cut interval); an
  interval wholly below 0 becomes [0, 0] (the data and the range meet only at the edge).
- `win_rate/*`, [0, 1]: a mean of outcomes 1, ½, 0, and the length-controlled rates are
  probabilities σ(·); `implicit_reward/*` (a preference accuracy) and `diversity/*` (distinct-n,
  self-BLEU: fractions) likewise, and the LLM judge's win rate and agreement with the reward
  model (`llm_judge/judge_win_rate`, `llm_judge/judge_reward_agreement`: means of shares in
  [0, 1]); `length/*`, `entropy/*` and the judge's costs (`llm_judge/*` otherwise), [0, ∞).
  tests/test_intervals.py checks these against the evaluators' declared units.
- `lm_eval/<task>/<metric>[:<filter>]`, [0, 1] when the metric's name is a proportion
  (LM_EVAL_PROPORTIONS: lm-eval's registered accuracies and exact match, TruthfulQA's mc1/mc2,
  IFEval's four accuracies, the sandbox's follows and fluent) and every stored value of the key
  lies in [0, 1]: lm-eval itself does not say a metric's range, and a task that reports a
  proportion in percent (values above 1) is left uncut rather than cut wrongly. Other lm-eval
  metrics (perplexities, BLEU, F1 on SQuAD's 0-100 scale, ...) are unbounded here.
- Everything else is unbounded, the reward included: a real reward model's scores have no range,
  and no evaluator declares one for the sandbox's gold reward.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

UNBOUNDED = (-math.inf, math.inf)
NON_NEGATIVE = (0.0, math.inf)
UNIT = (0.0, 1.0)

# What a report says about it, beside its note on intervals.
RANGE_NOTE = ("Each interval is cut to its metric's range (KL ≥ 0; win rates and lm-eval accuracies in "
              "[0, 1]; the reward is not cut): the true value lies in the range, so this never lowers "
              "coverage.")

# evaluator -> the range of every metric it stores (see the module docstring for why)
EVALUATOR_RANGES: dict[str, tuple[float, float]] = {
    "kl": NON_NEGATIVE,
    "win_rate": UNIT,
    "implicit_reward": UNIT,
    "diversity": UNIT,
    "length": NON_NEGATIVE,
    "entropy": NON_NEGATIVE,
    "llm_judge": NON_NEGATIVE,  # its costs (tokens, seconds); its rates are METRIC_RANGES'
}

# metrics whose range is not their evaluator's: the LLM judge's win rate and agreement, fractions
METRIC_RANGES: dict[str, tuple[float, float]] = {
    "llm_judge/judge_win_rate": UNIT,
    "llm_judge/judge_reward_agreement": UNIT,
}

# lm-eval metric names that are proportions in [0, 1]: lm-eval's registered accuracies and exact
# match (lm_eval.api.registry), TruthfulQA's mc1 / mc2, IFEval's prompt- and instruction-level
# accuracies, and the sandbox tasks' own (suites/tasks: follows, fluent). Not f1 or bleu: some
# tasks report those on a 0-100 scale.
LM_EVAL_PROPORTIONS = frozenset({
    "acc", "acc_norm", "acc_mutual_info", "acc_all", "acc_bytes", "exact_match", "mc1", "mc2",
    "prompt_level_strict_acc", "prompt_level_loose_acc", "inst_level_strict_acc", "inst_level_loose_acc",
    "follows", "fluent",
})


def metric_range(key: str, values: Iterable[float] | None = None) -> tuple[float, float]:
    """(low, high) that the true value of metric `key` ("evaluator/metric") lies in; UNBOUNDED
    where it is not known. `values`: the key's stored values (every run), which an lm-eval
    proportion's must all lie in [0, 1] to be taken as one (see the module docstring)."""
    evaluator, _, metric = str(key).partition("/")
    if key in METRIC_RANGES:
        return METRIC_RANGES[key]
    if evaluator in EVALUATOR_RANGES:
        return EVALUATOR_RANGES[evaluator]
    if evaluator == "lm_eval":
        name = metric.rpartition("/")[2].split(":")[0]  # "<task>/<metric>[:<filter>]"
        seen = np.asarray(list(values) if values is not None else [], dtype=float)
        seen = seen[np.isfinite(seen)]
        if name in LM_EVAL_PROPORTIONS and np.all((seen >= 0.0) & (seen <= 1.0)):
            return UNIT
    return UNBOUNDED


def clip_to_range(low, high, bounds: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """The interval [low, high] intersected with [bounds[0], bounds[1]], elementwise (arrays or
    scalars; NaN stays NaN): each end moved into the range. An interval wholly outside becomes the
    nearest edge, [b, b]."""
    lo, hi = bounds
    return np.clip(np.asarray(low, dtype=float), lo, hi), np.clip(np.asarray(high, dtype=float), lo, hi)
