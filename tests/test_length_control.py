"""harness.length_control: AlpacaEval 2.0's length-controlled win rate with the `alpaca-eval`
package's GLM, the suite's runs as its leaderboard's models.

- On stored samples (results/sandbox-all, committed), each run's value equals what the package's
  own `get_length_controlled_winrate` reports for the same annotations (glm `length_controlled_noreg`,
  the instruction difficulty handed to it as its `df_gamed.csv` would be) within 0.01.
- The bootstrap CI over prompts covers a known truth in simulation.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import special

from harness.length_control import (
    bootstrap_entry,
    featurize,
    instruction_difficulty,
    length_controlled_table,
    run_win_rate,
)

def _stored_comparisons(runs: int, scratch: Path) -> pd.DataFrame:
    from tests.published import published_runs

    files = sorted((published_runs("sandbox-all", scratch) / "sandbox-all").glob("*.samples.parquet"))[:runs]
    frame = pd.concat([pd.read_parquet(f, columns=["run_id", "prompt_id", "outcome", "completion",
                                                   "baseline_completion"]) for f in files])
    frame["policy_length"] = frame["completion"].str.len()
    frame["baseline_length"] = frame["baseline_completion"].str.len()
    return frame.reset_index(drop=True)


def test_matches_the_alpaca_eval_package_on_stored_samples(tmp_path, tmp_path_factory, monkeypatch):
    """Six stored runs: the joint difficulty is fitted across them; then, per run, the package's
    end-to-end function on AlpacaEval-style annotations (preference 1 = baseline wins, 2 = model
    wins, 1.5 = tie; output_1 the baseline) with its hub download of df_gamed.csv replaced by a
    local file holding that difficulty, gives our value within 0.01."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from alpaca_eval.metrics import glm_winrate
    comparisons = _stored_comparisons(6, tmp_path_factory.getbasetemp())
    features = featurize(comparisons)
    difficulty = instruction_difficulty(features)
    gamed = pd.DataFrame({"model": "none", "index": difficulty.index, "instruction_difficulty": difficulty.values})
    path = tmp_path / "df_gamed.csv"
    gamed.to_csv(path, index=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def local_only(*, filename: str, **_) -> str:  # never the network: only our difficulty is served
        if filename != "df_gamed.csv":
            raise AssertionError(f"alpaca-eval asked the hub for {filename}; this test must stay offline")
        return str(path)

    monkeypatch.setattr(glm_winrate, "hf_hub_download", local_only)
    for run_id, run in features.groupby("run_id"):
        ours, _ = run_win_rate(run, difficulty)
        annotations = pd.DataFrame({
            "preference": 1.0 + run["outcome"].to_numpy(float), "output_1": run["baseline_completion"].to_numpy(),
            "output_2": run["completion"].to_numpy(), "index": run["prompt_id"].to_numpy(),
            "generator_1": "start", "generator_2": str(run_id), "annotator": "gold"})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = glm_winrate.get_length_controlled_winrate(
                annotations, glm_name="length_controlled_noreg", save_weights_dir=None,
                is_warn_extreme_changes=False)["length_controlled_winrate"] / 100
        assert ours == pytest.approx(theirs, abs=0.01), run_id


def _simulate(rng, prompts: int, gamma: np.ndarray, theta: np.ndarray, phi: float, psi: float) -> pd.DataFrame:
    """Models m with 4 comparisons per prompt: the policy's length minus the baseline's ~ N(model
    drift, 40) characters; P(win) = σ(θ_m + φ·tanh(−Δ/40) + ψ·γ_x)."""
    rows = []
    for m, th in enumerate(theta):
        x = np.repeat(np.arange(prompts), 4)
        delta = rng.normal(30.0 * m, 40.0, x.size)  # policy − baseline: later models write longer
        p = special.expit(th + phi * np.tanh(delta / 40.0) + psi * gamma[x])
        rows.append(pd.DataFrame({"run_id": f"m{m}", "prompt_id": x, "outcome": rng.binomial(1, p).astype(float),
                                  "policy_length": 100.0 + delta, "baseline_length": 100.0}))
    return pd.concat(rows, ignore_index=True)


def test_length_control_removes_a_length_advantage():
    """Two models with the same θ, one writing much longer with φ = 1.5: its raw win rate is far
    higher, its length-controlled win rate close to the other's."""
    rng = np.random.default_rng(0)
    gamma = rng.normal(0, 1, 200)
    data = _simulate(rng, 200, gamma, np.array([0.0, 0.0, 0.0]), 1.5, 1.0)
    table = length_controlled_table(data, {"short": ["m0"], "long": ["m2"]}, resamples=200).set_index("entry")
    raw = data.groupby("run_id")["outcome"].mean()
    assert raw["m2"] - raw["m0"] > 0.15
    assert abs(table.loc["long", "value"] - table.loc["short", "value"]) < 0.08


def test_bootstrap_interval_covers_the_true_length_controlled_win_rate():
    """Known truth: with the difficulty γ_x known (drawn N(0, 1) afresh per dataset) and θ = 0.4,
    ψ = 1, the length-controlled win rate of the population of prompts is E σ(0.4 + γ) by
    quadrature. 80 datasets of 64 prompts × 4 comparisons (the model writing longer, φ = 1): the
    prompt-bootstrap CI around the package's fit covers it in 0.875-1 of them (nominal 0.95,
    MC sd 0.024)."""
    x, w = np.polynomial.hermite_e.hermegauss(80)
    truth = float((special.expit(0.4 + x) * w).sum() / w.sum())
    rng = np.random.default_rng(1)
    covered = 0
    reps = 80
    for _ in range(reps):
        gamma = rng.normal(0, 1, 64)
        data = _simulate(rng, 64, gamma, np.array([0.4]), 1.0, 1.0)
        run = featurize(data)
        difficulty = pd.Series(gamma, index=pd.Index(np.arange(64), name="prompt_id"))
        point, _ = run_win_rate(run, difficulty)
        low, high = bootstrap_entry([run], difficulty, point, resamples=200, seed=0)
        covered += low <= truth <= high
    assert 0.875 <= covered / reps <= 0.995, covered / reps
