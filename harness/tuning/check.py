"""A tuned suite checked before anything runs (harness.preflight calls this): every method's
search space under the suite's overrides, a grid with room for the trials, and a selection
metric that the trials measure."""

from __future__ import annotations

from dataclasses import replace

from harness.errors import HarnessError, did_you_mean
from harness.evaluate.registry import EVALUATORS
from harness.losses import get_loss
from harness.suite import Suite
from harness.tuning.sampler import check_grid
from harness.tuning.space import MethodSpace, check_methods


def check_tuning(suite: Suite) -> dict[str, MethodSpace]:
    """Every method's space (raises a one-line HarnessError for the first bad override or grid)."""
    check_metric(suite)
    spaces = check_methods(suite)
    if suite.tune.sampler == "grid":
        for space in spaces.values():
            check_grid(space, suite.tune.trials, suite.tune.grid_points, get_loss(space.method).hparams,
                       suite.where("tune.trials"))
    return spaces


def check_metric(suite: Suite) -> None:
    """tune.metric is "reward" or a key an evaluator registers ("evaluator/metric"; plugins' too, as
    they are loaded first), so that a typo is found before the trials rather than after all of them;
    an lm-eval task's keys are known only once it runs, so only its evaluator part is checked."""
    import harness.evaluate.metrics  # noqa: F401 (importing it registers the evaluators)

    metric = suite.tune.metric
    if metric == "reward" or metric.startswith("lm_eval/") and suite.evaluate.lm_eval_tasks:
        return
    keys = {f"{name}/{m.name}" for name in EVALUATORS.names() for m in EVALUATORS.get(name).metrics}
    if metric not in keys:
        raise HarnessError(f"{suite.where('tune.metric')}: tune.metric = {metric!r} is not a metric the trials "
                           f"measure{did_you_mean(metric, ['reward', *keys])}; give 'reward' or an evaluator/metric "
                           "key (lm_eval/... needs evaluate.lm_eval_tasks)")


def defaults_suite(suite: Suite) -> Suite:
    """The suite whose plan is, for every starting point, the start run and every method's untuned
    setting × the final seeds."""
    return replace(suite, seeds=suite.final_seeds) if suite.tune else suite


def tuning_plan_text(suite: Suite) -> str:
    """What `harness plan` says about a tuned suite beyond its listed runs (the starts and defaults):
    every starting point tunes every method on its own, so the counts are per start."""
    tune, n, starts = suite.tune, len(suite.methods), len(suite.start_points)
    budget = f"{suite.budget.kind}={suite.budget.value:.3g}"
    per, times = (" per start", f" x {starts} starts") if starts > 1 else ("", "")
    studies = n * starts
    return (f"tune: {tune.trials} {tune.sampler} trials per method{per} x {n} methods{times} = {tune.trials * studies} "
            f"trial runs ({budget} each, on {tune.validation_prompts or suite.evaluate.prompts} validation prompts), "
            f"then each selected setting x {len(suite.final_seeds)} seeds = {studies * len(suite.final_seeds)} runs on "
            "the test prompts; the start and the defaults (listed) run with the same seeds")
