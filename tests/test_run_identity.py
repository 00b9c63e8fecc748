"""A run's identity names everything that determines its result, the sandbox world included."""

from __future__ import annotations

import harness.plan
from harness.plan import plan_suite
from harness.suite import load_suite


def test_a_rebuilt_sandbox_world_gives_new_run_ids(tmp_path, monkeypatch):
    """Runs stored from an older world (another corpus, other defaults: a new SANDBOX_VERSION)
    are never reused as if they came from the current one; a real dataset's ids do not carry it."""
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nmethods: [dpo]\n")
    now = {s.run_id for s in plan_suite(load_suite(path))}
    monkeypatch.setattr(harness.plan, "SANDBOX_VERSION", harness.plan.SANDBOX_VERSION + 1)
    assert now.isdisjoint({s.run_id for s in plan_suite(load_suite(path))})
    path.write_text("name: s\nmodel: org/some-model\ndataset: org/some-data\nmethods: [dpo]\n"
                    "evaluate: {reward_model: org/some-reward-model}\n")
    real = plan_suite(load_suite(path))
    assert all("sandbox_version" not in s.identity() for s in real)
