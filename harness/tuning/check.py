"""A tuned suite checked before anything runs (harness.preflight calls this): every method's
search space under the suite's overrides, and a grid with room for the trials."""

from __future__ import annotations

from dataclasses import replace

from harness.losses import get_loss
from harness.suite import Suite
from harness.tuning.sampler import check_grid
from harness.tuning.space import MethodSpace, check_methods


def check_tuning(suite: Suite) -> dict[str, MethodSpace]:
    """Every method's space (raises a one-line HarnessError for the first bad override or grid)."""
    spaces = check_methods(suite)
    if suite.tune.sampler == "grid":
        for space in spaces.values():
            check_grid(space, suite.tune.trials, suite.tune.grid_points, get_loss(space.method).hparams,
                       suite.where("tune.trials"))
    return spaces


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
