"""Proposing trials with Optuna's samplers, through ask/tell with fixed distributions.

Optuna proposes; the harness's store is the record. A study lives in memory only: on every
invocation it is replayed from trial 0, each proposal's result read from the store when that
trial is stored, so the same seed gives the same proposals and a killed tuning resumes where it
stopped (harness.tune). The samplers (one study per method, all seeded alike):

- grid: Optuna's GridSampler over each dimension's points: the choices, or `grid_points` values
  evenly spaced on the dimension's scale (one point: the dimension's centre, the untuned value);
  the trials visit grid points in a seeded random order, so `trials` may not exceed the grid;
- quasi-random: Optuna's QMCSampler (scrambled Sobol), choices drawn by a seeded RandomSampler;
- model-based: Optuna's TPESampler, its first third of the trials (at least 2, at most 10)
  drawn at random before the model proposes.

Continuous proposals are rounded to 4 significant digits, so a run id does not carry
floating-point noise and the values read well in reports.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from harness.errors import HarnessError
from harness.losses.base import Dimension
from harness.tuning.space import MethodSpace

SIGNIFICANT = 4


def rounded(value: float) -> float:
    """`value` to SIGNIFICANT significant digits."""
    return float(f"{value:.{SIGNIFICANT}g}")


def grid_values(dim: Dimension, centre: Any, points: int, *, integer: bool = False) -> list[Any]:
    """A dimension's grid: its choices, or `points` values spaced on its scale (1: the centre)."""
    if dim.scale == "choice":
        return list(dim.choices)
    if points == 1:
        return [centre]
    spaced = np.geomspace(dim.low, dim.high, points) if dim.scale == "log" else np.linspace(dim.low, dim.high, points)
    values = [int(round(v)) for v in spaced] if integer else [rounded(v) for v in spaced]
    return list(dict.fromkeys(values))


def grid_size(space: MethodSpace, points: int, defaults: dict[str, Any]) -> int:
    return math.prod(len(grid_values(d, space.centre[k], points, integer=_is_int(defaults.get(k))))
                     for k, d in space.dimensions.items())


def _is_int(default: Any) -> bool:
    return isinstance(default, int) and not isinstance(default, bool)


def distributions(space: MethodSpace, sampler: str, points: int, defaults: dict[str, Any]) -> dict[str, Any]:
    """Optuna distributions of the space: categorical for choices and grid points, else a float
    (or int, for an integer hyper-parameter) range on the dimension's scale."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out = {}
    for key, dim in space.dimensions.items():
        integer = _is_int(defaults.get(key))
        if sampler == "grid" or dim.scale == "choice":
            out[key] = CategoricalDistribution(grid_values(dim, space.centre[key], points, integer=integer))
        elif integer:
            out[key] = IntDistribution(int(math.ceil(dim.low)), int(dim.high), log=dim.scale == "log")
        else:
            out[key] = FloatDistribution(dim.low, dim.high, log=dim.scale == "log")
    return out


def make_study(sampler: str, seed: int, direction: str, trials: int, dists: dict[str, Any]):
    """An in-memory Optuna study for one method (direction: maximize or minimize)."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # QMCSampler's notice
    if sampler == "grid":
        chosen = optuna.samplers.GridSampler({k: list(d.choices) for k, d in dists.items()}, seed=seed)
    elif sampler == "quasi-random":
        chosen = optuna.samplers.QMCSampler(
            qmc_type="sobol", scramble=True, seed=seed, independent_sampler=optuna.samplers.RandomSampler(seed=seed),
            warn_independent_sampling=False, warn_asynchronous_seeding=False)
    elif sampler == "model-based":
        chosen = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, trials // 3)))
    else:  # the suite is validated against harness.suite.SAMPLERS
        raise HarnessError(f"tune.sampler {sampler!r} unknown")
    return optuna.create_study(sampler=chosen, direction=direction)


def proposal(trial, dists: dict[str, Any]) -> dict[str, Any]:
    """The trial's values, rounded (floats) and in the space's order."""
    return {k: rounded(v) if isinstance(v, float) else v for k, v in ((k, trial.params[k]) for k in dists)}


def check_grid(space: MethodSpace, trials: int, points: int, defaults: dict[str, Any], where: str) -> None:
    """A grid must have at least `trials` points, so every method gets `trials` distinct trials."""
    size = grid_size(space, points, defaults)
    if size < trials:
        raise HarnessError(f"{where}: tune.trials = {trials} exceeds the grid of {size} points for {space.method}; "
                           "lower tune.trials, raise tune.grid_points or widen tune.space")
