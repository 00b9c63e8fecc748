"""Training curves in the experiment trackers people already watch (`train.report_to`).

Each harness run is one tracker run, named `<label>-<run_id>`, whose config is the run's resolved
spec; every logged curve point goes to each tracker under TRL's metric names, so a dashboard built
for TRL's DPOTrainer reads harness runs too. Trackers are optional: a library that is not
installed, or a tracker that fails to start or to log, costs one warning line and the tracker,
never the run (they are not part of a run's identity either).

TensorBoard's event files go under `HARNESS_TRACKER_DIR` (default `$HARNESS_CACHE/trackers`), in
`tensorboard/<suite>/<run name>/`; trackio, wandb and mlflow follow their own environment
(TRACKIO_DIR, read when trackio is imported; WANDB_MODE; MLFLOW_TRACKING_URI).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

# harness's curve names -> TRL's (trl DPOTrainer logs these); the rest keep their own names.
TRL_NAMES = {
    "loss": "loss",
    "chosen_rewards": "rewards/chosen",
    "rejected_rewards": "rewards/rejected",
    "reward_margins": "rewards/margins",
    "reward_accuracies": "rewards/accuracies",
    "policy_chosen_logps": "logps/chosen",
    "policy_rejected_logps": "logps/rejected",
    "grad_norm": "grad_norm",
    "lr": "learning_rate",
}


def trl_metrics(point: dict[str, Any]) -> dict[str, float]:
    """One curve point (harness.train.loop) as the metrics a tracker logs, without its step."""
    return {TRL_NAMES.get(key, key): float(value) for key, value in point.items() if key != "step"}


def tracker_dir() -> Path:
    from harness.cache import cache_root

    return Path(os.environ.get("HARNESS_TRACKER_DIR") or cache_root() / "trackers")


class TensorBoard:
    def __init__(self, project: str, name: str, config: dict[str, Any]):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(tracker_dir() / "tensorboard" / project / name))
        self.writer.add_text("config", f"```\n{_flat(config)}\n```")

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def finish(self) -> None:
        self.writer.close()


class Trackio:
    def __init__(self, project: str, name: str, config: dict[str, Any]):
        import trackio

        self.run = trackio.init(project=project, name=name, config=config, embed=False,
                                auto_log_gpu=False, auto_log_cpu=False)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def finish(self) -> None:
        self.run.finish()


class Wandb:
    def __init__(self, project: str, name: str, config: dict[str, Any]):
        import wandb

        self.run = wandb.init(project=project, name=name, config=config, reinit="create_new")

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def finish(self) -> None:
        self.run.finish()


class Mlflow:
    def __init__(self, project: str, name: str, config: dict[str, Any]):
        import mlflow

        self.mlflow = mlflow
        mlflow.set_experiment(project)
        self.run = mlflow.start_run(run_name=name)
        mlflow.log_params({k: str(v)[:500] for k, v in _flat_items(config)})

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics(metrics, step=step)

    def finish(self) -> None:
        self.mlflow.end_run()


TRACKER_CLASSES = {"tensorboard": TensorBoard, "trackio": Trackio, "wandb": Wandb, "mlflow": Mlflow}


class Trackers:
    """The started trackers of one run; each failure is one warning and drops that tracker."""

    def __init__(self, names: tuple[str, ...], project: str, name: str, config: dict[str, Any],
                 warn: Callable[[str], None]):
        self.warn, self.active = warn, []
        for tracker in names:
            try:
                self.active.append((tracker, TRACKER_CLASSES[tracker](project, name, config)))
            except Exception as err:  # noqa: BLE001 - any failure to start is the tracker's, not the run's
                warn(f"train.report_to: {tracker} did not start for {name} ({_reason(err)}); training goes on without it")

    def log(self, point: dict[str, Any]) -> None:
        metrics = trl_metrics(point)
        for tracker, instance in list(self.active):
            try:
                instance.log(metrics, int(point["step"]))
            except Exception as err:  # noqa: BLE001
                self._drop(tracker, instance, f"stopped logging ({_reason(err)})")

    def finish(self) -> None:
        for tracker, instance in list(self.active):
            try:
                instance.finish()
            except Exception as err:  # noqa: BLE001
                self.warn(f"train.report_to: {tracker} did not close cleanly ({_reason(err)})")
        self.active = []

    def _drop(self, tracker: str, instance, why: str) -> None:
        self.active = [(t, i) for t, i in self.active if i is not instance]
        self.warn(f"train.report_to: {tracker} {why}; training goes on without it")


def _reason(err: Exception) -> str:
    if isinstance(err, ImportError):
        return f"not installed: pip install {getattr(err, 'name', None) or 'it'}"
    return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}".rstrip(": ")


def _flat_items(config: dict[str, Any], prefix: str = ""):
    for key, value in config.items():
        if isinstance(value, dict):
            yield from _flat_items(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _flat(config: dict[str, Any]) -> str:
    return "\n".join(f"{k}: {v}" for k, v in _flat_items(config))


def with_trackers(setup, names: tuple[str, ...], project: str, name: str, config: dict[str, Any]):
    """`setup` feeding its curve points to the started trackers, and those trackers (whose
    finish() the caller calls when training ends); `setup` itself when none is asked for."""
    from harness.errors import warn
    from harness.train.distributed import is_main

    if not names or not is_main():
        return setup, Trackers((), project, name, config, warn)
    trackers = Trackers(names, project, name, config, warn)
    return (replace(setup, on_log=trackers.log) if trackers.active else setup), trackers
