"""harness.rank on a synthetic suite whose statistics are derived by hand below.

The synthetic suite (`build_suite`, also used by tests/test_report.py): the start model, dpo with
two seeds, ipo and simpo with one seed each. Headline numbers per run (value [ci_low, ci_high]):

    entry  seed  win rate           gold reward              KL k3   steps  ref FLOPs
    start  0     0.50 [0.45, 0.55]  0.0 [-0.1, 0.1]          0.0     0      0
    dpo    0     0.60 (CI ignored)  1.0                      5.0     100    >0
    dpo    1     0.70               1.2                      7.0     100    >0
    ipo    0     0.55 [0.50, 0.60]  0.8 [0.7, 0.9]           1.0     100    >0
    simpo  0     0.75 [0.70, 0.80]  1.5, no CI, stderr 0.1   5.0     150    0

dpo, two seeds: t-interval, mean ± t(0.975, 1)·sd/√2, and for two values sd/√2 = |a − b|/2:
    win rate 0.65 ± 12.7062·0.05 = [0.01469, 1.28531], cut to the win rate's range [0, 1]:
    [0.01469, 1]; reward 1.1 ± 12.7062·0.1 = [−0.17062, 2.37062] (unbounded: not cut);
    KL 6.0 ± 12.7062·1.0 = [−6.7062, 18.7062], cut at 0: [0, 18.7062].
simpo, one seed without a CI: 1.5 ± 1.95996·0.1 = [1.30400, 1.69600].

Ranks (no samples: 1 + the number of entries whose CI lies entirely above, on the gold reward,
`harness.intervals.significance_ranks`). CIs: simpo [1.304, 1.696], dpo [−0.17, 2.37], ipo
    [0.7, 0.9], start [−0.1, 0.1]. dpo's overlaps every other, so it neither beats nor is beaten.
    simpo is beaten by none (rank 1), ipo by simpo (rank 2), start by simpo and ipo (rank 3), dpo
    by none (rank 1). Sorted by rank, then reward: simpo 1.5, dpo 1.1 (rank 1), ipo, start. With a
    KL budget of 5.5 nats dpo (KL 6) is over it and not ranked: simpo 1, ipo 2, start 3.
Frontier (reward vs KL): start (0, 0), ipo (1, 0.8), simpo (5, 1.5); dpo (6, 1.1) is dominated by
simpo (less KL, more reward).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.rank import (
    KL,
    REWARD,
    WIN_RATE,
    KL_K3,
    compute_table,
    entry_names,
    final_eval,
    format_interval,
    format_leaderboard,
    holm,
    leaderboard,
    paired_tests,
    pareto_frontier,
    per_prompt_values,
    seed_interval,
    win_rate_matrix,
)
from harness.intervals import crossed_interval
from harness.results import ResultStore
from harness.results.schema import results_schema

NAN = float("nan")
T975_1 = 12.706204736174698  # scipy.stats.t.ppf(0.975, 1)
Z975 = 1.959963984540054


# --------------------------------------------------------------------------- fixture builder


def run_rows(
    suite: str,
    method: str,
    seed: int,
    evals: dict[str, tuple[float, float, float, float]],
    *,
    hparams: dict | None = None,
    steps: int = 100,
    flops_reference: float = 2e9,
    train_curve: bool = True,
) -> pd.DataFrame:
    """All result rows of one synthetic run. evals: key -> (value, ci_low, ci_high, stderr);
    with train_curve, loss and reward_margins rows every 25 steps."""
    hparams_json = json.dumps(hparams if hparams is not None else {"beta": 0.1}, sort_keys=True)
    run_id = hashlib.sha256(f"{method}|{hparams_json}|{seed}".encode()).hexdigest()[:16]
    identity = {
        "schema_version": 1, "run_id": run_id, "suite": suite, "method": method, "method_version": "1",
        "hparams": hparams_json, "seed": seed, "model": "sandbox-tiny", "dataset": "sandbox-pairs",
        "budget_kind": "flops", "budget_value": 1e10,
    }
    accounting = {
        "policy_tokens": 1000 * steps, "reference_tokens": 1000 * steps if flops_reference else 0,
        "generated_tokens": 0, "flops_policy": 6e7 * steps, "flops_reference": flops_reference,
        "flops_generation": 0.0, "flops_total": 1e10 if steps else 0.0, "optimizer_steps": steps,
        "examples_seen": 8 * steps, "train_seconds": 0.5 * steps, "eval_seconds": 3.0,
        "peak_memory_mb": 100.0, "mfu": NAN,
    }
    rows = []
    for key, (value, lo, hi, se) in evals.items():
        evaluator, metric = key.split("/", 1)
        rows.append({"evaluator": evaluator, "metric": metric, "split": "eval", "step": steps,
                     "value": value, "stderr": se, "ci_low": lo, "ci_high": hi,
                     "level": 0.95 if lo == lo and hi == hi else NAN, "n": 64,
                     "higher_is_better": metric not in ("kl_k1", "kl_k3", "kl_token_exact", "completion_tokens")})
    if train_curve and steps:
        for step in range(0, steps + 1, 25):
            for metric, value in (("loss", 0.69 - step / (4 * steps)), ("reward_margins", step / steps)):
                rows.append({"evaluator": "train", "metric": metric, "split": "train", "step": step,
                             "value": value, "stderr": NAN, "ci_low": NAN, "ci_high": NAN, "level": NAN, "n": 8,
                             "higher_is_better": metric == "reward_margins"})
    frame = pd.DataFrame(rows)
    for column, value in {**identity, **accounting}.items():
        frame[column] = value
    return frame[results_schema().names]


def headline(win, reward, kl, win_ci=(NAN, NAN), reward_ci=(NAN, NAN), reward_se=NAN) -> dict:
    return {WIN_RATE: (win, *win_ci, NAN), REWARD: (reward, *reward_ci, reward_se), KL: (kl, kl, kl, 0.0),
            KL_K3: (kl, kl, kl, 0.0),
            "length/completion_tokens": (20.0, 19.0, 21.0, 0.5)}


def suite_runs(suite: str = "toy", names: dict[str, str] | None = None) -> list[pd.DataFrame]:
    """The runs of the synthetic suite in the module docstring; `names` renames methods."""
    name = lambda m: (names or {}).get(m, m)  # noqa: E731
    return [
        run_rows(suite, "start", 0, headline(0.5, 0.0, 0.0, (0.45, 0.55), (-0.1, 0.1)), hparams={},
                 steps=0, flops_reference=0.0),
        run_rows(suite, name("dpo"), 0, headline(0.60, 1.0, 5.0, (0.5, 0.7), (0.9, 1.1))),
        run_rows(suite, name("dpo"), 1, headline(0.70, 1.2, 7.0, (0.6, 0.8), (1.1, 1.3))),
        run_rows(suite, name("ipo"), 0, headline(0.55, 0.8, 1.0, (0.50, 0.60), (0.7, 0.9)), hparams={"tau": 0.1}),
        run_rows(suite, name("simpo"), 0, headline(0.75, 1.5, 5.0, (0.70, 0.80), reward_se=0.1),
                 hparams={"beta": 2.0, "gamma": 0.5}, steps=150, flops_reference=0.0),
    ]


def build_suite(root: Path, suite: str = "toy", names: dict[str, str] | None = None, *,
                samples: bool = False, cards: bool = False) -> ResultStore:
    """Write the synthetic suite with ResultStore.write_run and return the store; with `samples`,
    per-sample tables consistent with the stored values (`run_samples`); with `cards`, manifests
    that describe each method (`method_card`)."""
    store = ResultStore(root, suite)
    for frame in suite_runs(suite, names):
        method = frame["method"].iloc[0]
        manifest = {"status": "ok", "started": "2025-01-01T00:00:00"}
        if cards and method != "start":
            manifest["method"] = method_card(method)
        store.write_run(frame["run_id"].iloc[0], frame, run_samples(frame) if samples else None, manifest)
    return store


PROMPTS, PER_PROMPT = 8, 2
OFFSETS = np.array([-0.3, -0.2, -0.1, 0.0, 0.0, 0.1, 0.2, 0.3])  # per prompt, mean 0


def run_samples(frame: pd.DataFrame) -> pd.DataFrame:
    """PROMPTS × PER_PROMPT samples whose means reproduce the run's stored gold reward and KL:
    reward = stored reward + a per-prompt offset (mean 0) ± 0.05; log-probs chosen so that every
    sample's k3 KL equals the stored KL; outcomes (1, ½ or 0) spread over the prompts so that
    their mean is the stored win rate to within 1/32."""
    from scipy.optimize import brentq

    from harness.results.schema import samples_schema

    evals = frame[frame["split"] == "eval"].set_index("metric")["value"]
    reward, kl, win = float(evals["reward_mean"]), float(evals["kl_k3"]), float(evals["win_rate_vs_start"])
    log_r = -brentq(lambda y: np.expm1(-y) + y - kl, 0.0, 50.0) if kl > 0 else 0.0
    total = PROMPTS * PER_PROMPT
    halves = round(win * 2 * total)  # the win rate in half-wins: a win counts 2, a tie 1
    rows = []
    for prompt in range(PROMPTS):
        for sample in range(PER_PROMPT):
            value = reward + OFFSETS[prompt] + (0.05 if sample else -0.05)
            rank = ((prompt * PER_PROMPT + sample) * 5) % total  # 5 is coprime with 16: a permutation
            outcome = 1.0 if 2 * (rank + 1) <= halves else (0.5 if 2 * rank < halves else 0.0)
            rows.append({
                "run_id": frame["run_id"].iloc[0], "prompt_id": prompt, "sample": sample,
                "prompt": f"prompt {prompt}", "completion": f"completion {prompt}.{sample}",
                "completion_tokens": 20, "reward": value, "baseline_completion": "base",
                "baseline_reward": 0.0, "outcome": outcome,
                "policy_logp": -10.0, "reference_logp": -10.0 + log_r, "token_kl": kl,
            })
    frame = pd.DataFrame(rows)
    for name in samples_schema().names:  # columns added by later evaluators: left empty here
        if name not in frame.columns:
            frame[name] = None
    return frame[samples_schema().names]


def method_card(method: str) -> dict:
    """A manifest's "method" entry as the runner writes it (harness.results.manifest.method_card)."""
    return {
        "name": method, "formula": f"-log σ(β h) for {method}", "paper": f"The {method} paper (2024)",
        "origin": "/home/user/variants.py" if method == "simpo" else "built-in",
        "defaults": {"beta": 0.1}, "needs": [] if method == "simpo" else ["reference"], "data": "paired",
        "reduction": "sum", "regime": "standard", "version": "1", "doc": f"{method}: the docstring.",
    }


@pytest.fixture
def metrics(tmp_path) -> pd.DataFrame:
    return build_suite(tmp_path).read_metrics()


# --------------------------------------------------------------------------- leaderboard


def test_leaderboard_values_and_cis_match_hand_computation(metrics):
    board = leaderboard(metrics).set_index("entry")
    assert set(board.index) == {"start", "dpo", "ipo", "simpo"}
    dpo = board.loc["dpo"]
    assert dpo["n_seeds"] == 2
    assert dpo[WIN_RATE] == pytest.approx(0.65)
    assert dpo[WIN_RATE + ":ci_low"] == pytest.approx(0.65 - T975_1 * 0.05)
    assert dpo[WIN_RATE + ":ci_high"] == 1.0  # 0.65 + T975_1 * 0.05 = 1.285, cut to the range
    assert dpo[REWARD + ":ci_low"] == pytest.approx(1.1 - T975_1 * 0.1)  # unbounded: below 0 stays
    assert dpo[KL] == pytest.approx(6.0)
    assert dpo[KL + ":ci_low"] == 0.0  # 6.0 - T975_1 * 1.0 = -6.7, cut at 0
    assert dpo[KL + ":ci_high"] == pytest.approx(6.0 + T975_1 * 1.0)
    # one seed: the run's own CI, else value ± z·stderr
    assert (board.loc["ipo", WIN_RATE + ":ci_low"], board.loc["ipo", WIN_RATE + ":ci_high"]) == pytest.approx((0.5, 0.6))
    assert board.loc["simpo", REWARD + ":ci_low"] == pytest.approx(1.5 - Z975 * 0.1)
    assert board.loc["simpo", REWARD + ":ci_high"] == pytest.approx(1.5 + Z975 * 0.1)


def test_leaderboard_compute_columns_are_means_over_seeds(metrics):
    board = leaderboard(metrics).set_index("entry")
    assert board.loc["dpo", "optimizer_steps"] == 100
    assert board.loc["simpo", "optimizer_steps"] == 150
    assert board.loc["dpo", "train_seconds"] == pytest.approx(50.0)
    assert board.loc["simpo", "flops_total"] == pytest.approx(1e10)
    assert board.loc["start", "n_seeds"] == 1 and bool(board.loc["start", "is_start"])


def test_leaderboard_ranks_count_the_entries_significantly_better(metrics):
    board = leaderboard(metrics)
    assert list(board["entry"]) == ["simpo", "dpo", "ipo", "start"]
    assert board.set_index("entry")["rank"].to_dict() == {"simpo": 1, "dpo": 1, "ipo": 2, "start": 3}
    assert board.set_index("entry")["beaten_by"].to_dict() == {"simpo": 0, "dpo": 0, "ipo": 1, "start": 2}
    assert set(board["rank_basis"]) == {"CI overlap"}
    assert bool(board["within_budget"].all())


def test_entries_over_the_kl_budget_are_shown_not_ranked(metrics):
    board = leaderboard(metrics, kl_budget=5.5)
    assert list(board["entry"]) == ["simpo", "ipo", "start", "dpo"]
    by = board.set_index("entry")
    assert by["rank"].to_dict() == pytest.approx({"simpo": 1, "ipo": 2, "start": 3, "dpo": NAN}, nan_ok=True)
    assert not by.loc["dpo", "within_budget"]
    assert by["beats"].to_dict() == pytest.approx({"simpo": 2, "ipo": 1, "start": 0, "dpo": NAN}, nan_ok=True)
    assert "over KL budget" in format_leaderboard(board)


def test_frontier_column_and_headline_kl(metrics):
    board = leaderboard(metrics).set_index("entry")
    assert board["frontier"].to_dict() == {"simpo": True, "dpo": False, "ipo": True, "start": True}
    assert KL in board.columns and KL_K3 in board.columns  # exact KL first, k3 secondary


def test_final_eval_keeps_the_last_step_per_metric(metrics):
    extra = metrics[(metrics["method"] == "ipo") & (metrics["metric"] == "reward_mean")].copy()
    extra["step"], extra["value"] = 50, -9.0  # an earlier measurement must not win
    rows = final_eval(pd.concat([metrics, extra], ignore_index=True))
    ipo = rows[(rows["method"] == "ipo") & (rows["key"] == REWARD)]
    assert list(ipo["value"]) == [0.8]
    assert not (rows["split"] == "train").any()


def test_empty_metrics_give_an_empty_leaderboard():
    empty = results_schema().empty_table().to_pandas()
    assert leaderboard(empty).empty


def test_format_leaderboard_lists_every_entry(metrics):
    text = format_leaderboard(leaderboard(metrics))
    for entry in ("simpo", "dpo", "ipo", "start"):
        assert entry in text
    assert "0.65 [0.0147, 1]" in text  # dpo's win rate, cut at 1


# --------------------------------------------------------------------------- statistics


def test_seed_interval_one_seed_uses_own_ci_then_stderr_then_point():
    assert seed_interval([0.6], [0.5], [0.7], [0.05]) == pytest.approx((0.6, 0.5, 0.7))
    assert seed_interval([0.6], [NAN], [NAN], [0.05]) == pytest.approx((0.6, 0.6 - Z975 * 0.05, 0.6 + Z975 * 0.05))
    assert seed_interval([0.6]) == pytest.approx((0.6, 0.6, 0.6))
    assert all(math.isnan(v) for v in seed_interval([NAN]))


def test_seed_interval_several_seeds_is_a_t_interval():
    """Three seeds 1, 2, 3: mean 2, sd 1, half-width t(0.975, 2)·1/√3 = 4.302653·0.577350 = 2.484138."""
    mean, lo, hi = seed_interval([1.0, 2.0, 3.0], [0, 0, 0], [9, 9, 9])  # per-seed CIs are not used
    assert mean == pytest.approx(2.0)
    assert (lo, hi) == pytest.approx((2.0 - 2.484138, 2.0 + 2.484138), abs=1e-6)
    assert seed_interval([1.0, NAN, 3.0])[0] == pytest.approx(2.0)  # missing seeds are skipped


def test_pareto_frontier_on_a_hand_made_case():
    """A and B coincide (both kept); C has A's reward for more KL (dominated); D has the least KL;
    E the most reward; G is beaten by E on both axes; F lacks a KL and is left out."""
    df = pd.DataFrame({
        "entry": ["A", "B", "C", "D", "E", "F", "G"],
        "kl": [1.0, 1.0, 2.0, 0.5, 3.0, NAN, 3.5],
        "reward": [1.0, 1.0, 1.0, 0.5, 2.0, 9.0, 1.5],
    })
    assert pareto_frontier(df, x="kl", y="reward") == {"A", "B", "D", "E"}


def test_pareto_frontier_of_the_suite(metrics):
    assert pareto_frontier(leaderboard(metrics)) == {"start", "ipo", "simpo"}


def test_entry_names_add_the_differing_hparams_only():
    settings = [("dpo", '{"beta": 0.1, "label_smoothing": 0}'), ("dpo", '{"beta": 0.05, "label_smoothing": 0}'),
                ("ipo", '{"tau": 0.1}')]
    assert entry_names(settings) == {
        settings[0]: "dpo (beta=0.1)", settings[1]: "dpo (beta=0.05)", settings[2]: "ipo"}


def test_leaderboard_separates_hparam_settings_of_one_method(tmp_path):
    store = ResultStore(tmp_path, "sweep")
    for beta, win in ((0.1, 0.6), (0.5, 0.7)):
        frame = run_rows("sweep", "dpo", 0, headline(win, 1.0, 1.0, (win - 0.05, win + 0.05)), hparams={"beta": beta})
        store.write_run(frame["run_id"].iloc[0], frame, None, {})
    board = leaderboard(store.read_metrics())
    assert list(board["entry"]) == ["dpo (beta=0.1)", "dpo (beta=0.5)"]  # equal reward and rank: by name
    assert list(board["n_seeds"]) == [1, 1]


def test_format_interval():
    assert format_interval(0.62, 0.55, 0.69) == "0.62 [0.55, 0.69]"
    assert format_interval(0.62, NAN, NAN) == "0.62"
    assert format_interval(NAN, 0.1, 0.2) == "–"


# --------------------------------------------------------------------------- per-sample statistics


def test_holm_on_a_hand_example():
    """p = (0.01, 0.04, 0.03, 0.005), m = 4. Sorted: 0.005·4 = 0.02; 0.01·3 = 0.03; 0.03·2 =
    0.06; 0.04·1 = 0.04, raised to the running maximum 0.06. Back in input order:
    (0.03, 0.06, 0.06, 0.02). A NaN stays NaN and does not count in m."""
    assert list(holm([0.01, 0.04, 0.03, 0.005])) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    out = holm([0.02, NAN, 0.5])
    assert out[0] == pytest.approx(0.04) and math.isnan(out[1]) and out[2] == pytest.approx(0.5)
    assert list(holm([0.6, 0.9])) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]).size == 0


def _sample_frame(rewards: dict[str, list[list[float]]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(metrics, samples) for runs named by method, rewards[method][prompt] = its samples' rewards."""
    metrics, samples = [], []
    for method, per_prompt in rewards.items():
        frame = run_rows("pairs", method, 0, headline(0.5, float(np.mean(per_prompt)), 0.0), hparams={})
        metrics.append(frame)
        for prompt, values in enumerate(per_prompt):
            for k, value in enumerate(values):
                samples.append({"run_id": frame["run_id"].iloc[0], "prompt_id": prompt, "sample": k,
                                "reward": value, "outcome": 0.5, "policy_logp": -1.0, "reference_logp": -1.0,
                                "token_kl": 0.0, "completion_tokens": 5})
    return pd.concat(metrics, ignore_index=True), pd.DataFrame(samples)


def test_paired_tests_hand_example():
    """Ten prompts; Y's reward on prompt i is i, X's is i + 0.1·(i + 1), Z equals X; one seed each,
    so no seed variance enters and the test is the paired t test on the per-prompt differences
    d = 0.1, ..., 1.0: mean 0.55, sd 0.1·sd(1..10) = 0.302765, se 0.0957427, t = 5.7446 on 9 df.
    X vs Z: every difference 0, p = 1 exactly. Holm over the three pairs: 3p, 2p (raised to 3p), 1."""
    from scipy import stats

    y = [float(i) for i in range(10)]
    x = [i + 0.1 * (i + 1) for i in range(10)]
    metrics, samples = _sample_frame({"X": [[v, v] for v in x], "Y": [[v, v] for v in y], "Z": [[v, v] for v in x]})
    tests = paired_tests(metrics, samples, order=["X", "Z", "Y"]).set_index(["a", "b"])
    assert list(tests.index) == [("X", "Z"), ("X", "Y"), ("Z", "Y")]
    xy = tests.loc[("X", "Y")]
    p = 2 * stats.t.sf(0.55 / (0.1 * np.std(np.arange(1, 11), ddof=1) / np.sqrt(10)), 9)
    assert xy["n_prompts"] == 10 and xy["diff"] == pytest.approx(0.55) and xy["statistic"] == pytest.approx(5.7446, abs=1e-4)
    assert xy["p_value"] == pytest.approx(p) and xy["df"] == pytest.approx(9)
    assert xy["p_holm"] == pytest.approx(3 * p) and bool(xy["significant"])
    assert xy["diff_ci_low"] == pytest.approx(0.55 - stats.t.ppf(0.975, 9) * 0.0957427, abs=1e-6)
    assert tests.loc[("X", "Z"), "p_value"] == 1.0 and not tests.loc[("X", "Z"), "significant"]
    assert tests.loc[("X", "Z"), "diff"] == 0.0 and tests.loc[("X", "Z"), "seed_variance"] == "none"


def test_paired_tests_with_one_seed_each_match_scipy_paired_t():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.3, 1, 30), rng.normal(0.0, 1, 30)
    metrics, samples = _sample_frame({"A": [[v] for v in a], "B": [[v] for v in b]})
    from scipy import stats

    test = paired_tests(metrics, samples, order=["A", "B"]).iloc[0]
    assert test["p_value"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert test["p_holm"] == pytest.approx(test["p_value"])  # one pair: Holm changes nothing


def test_win_rate_matrix_hand_example():
    """Prompt 0: A's samples 1, 3 against B's 2, 2: 3 beats both, 1 loses both → ½. Prompt 1: A's
    5, 5 against B's 5, 0: two ties (½ each) and two wins → (½ + 1 + ½ + 1)/4 = ¾. W[A, B] = mean
    over prompts = 0.625; W[B, A] = 0.375; the diagonal is ½."""
    metrics, samples = _sample_frame({"A": [[1, 3], [5, 5]], "B": [[2, 2], [5, 0]]})
    matrix = win_rate_matrix(metrics, samples, order=["A", "B"])
    assert matrix.loc["A", "B"] == pytest.approx(0.625)
    assert matrix.loc["B", "A"] == pytest.approx(0.375)
    assert matrix.loc["A", "A"] == 0.5 and list(matrix.index) == ["A", "B"]


def test_win_rate_matrix_pools_seeds_and_skips_unshared_prompts():
    """A has two seeds, one sample each per prompt: on prompt 0, A's {1, 3} against B's {2} →
    ½. B has no sample on prompt 1, so prompt 1 does not count."""
    metrics, samples = _sample_frame({"A": [[1], [9]], "B": [[2]]})
    second = run_rows("pairs", "A", 1, headline(0.5, 2.0, 0.0), hparams={})
    extra = pd.DataFrame([{"run_id": second["run_id"].iloc[0], "prompt_id": 0, "sample": 0, "reward": 3.0}])
    matrix = win_rate_matrix(pd.concat([metrics, second]), pd.concat([samples, extra]), order=["A", "B"])
    assert matrix.loc["A", "B"] == pytest.approx(0.5)


def test_leaderboard_with_samples_uses_the_crossed_interval(tmp_path):
    store = build_suite(tmp_path, samples=True)
    metrics, samples = store.read_metrics(), store.read_samples()
    board = leaderboard(metrics, samples=samples).set_index("entry")
    assert board.loc["dpo", REWARD + ":ci_kind"] == "seeds × prompts (crossed t)"
    assert board.loc["ipo", REWARD + ":ci_kind"] == "prompts (one seed, t)"
    assert board.loc["dpo", KL + ":ci_kind"] == board.loc["dpo", KL_K3 + ":ci_kind"] == "seeds × prompts (crossed t)"
    # dpo: two seeds; its per-prompt reward means form the seeds × prompts table
    prompts = per_prompt_values(samples, metrics, [REWARD])
    table = prompts[prompts["entry"] == "dpo"].pivot_table(index="run_id", columns="prompt_id", values="value")
    _, lo, hi = crossed_interval(table.to_numpy())
    assert board.loc["dpo", REWARD] == pytest.approx(1.1)
    assert (board.loc["dpo", REWARD + ":ci_low"], board.loc["dpo", REWARD + ":ci_high"]) == pytest.approx((lo, hi))
    # the exact KL is recomputed from the samples, and matches the stored values
    assert (board.loc["ipo", KL + ":ci_low"], board.loc["ipo", KL + ":ci_high"]) == pytest.approx((1.0, 1.0))
    assert set(board["rank_basis"]) == {"paired tests"}
    assert 0.0 <= board.loc["simpo", "win_rate/length_controlled_vs_start"] <= 1.0
    # without samples: the t-interval over seeds
    assert leaderboard(metrics).set_index("entry").loc["dpo", REWARD + ":ci_kind"] == "t over seeds (these prompts)"


def test_leaderboard_keeps_seed_intervals_for_runs_without_samples(tmp_path):
    store = build_suite(tmp_path, samples=True)
    metrics, samples = store.read_metrics(), store.read_samples()
    dpo_runs = set(metrics.loc[metrics["method"] == "dpo", "run_id"])
    partial = samples[samples["run_id"] != sorted(dpo_runs)[0]]  # one dpo seed lost its samples
    board = leaderboard(metrics, samples=partial).set_index("entry")
    assert board.loc["dpo", REWARD + ":ci_kind"] == "t over seeds (these prompts)"
    assert board.loc["ipo", REWARD + ":ci_kind"] == "prompts (one seed, t)"


def test_compute_table_means_over_seeds(metrics):
    table = compute_table(metrics).set_index("entry")
    assert table.loc["dpo", "n_seeds"] == 2
    assert table.loc["dpo", "flops_policy"] == pytest.approx(6e9)
    assert table.loc["simpo", "reference_tokens"] == 0
    assert table.loc["dpo", "peak_memory_mb"] == pytest.approx(100.0)
    assert {"flops_generation", "generated_tokens", "eval_seconds", "mfu"} <= set(table.columns)


# --------------------------------------------------------------------------- intervals cut to the range

KL_K1 = "kl/kl_k1"
FLUENT = "lm_eval/sandbox_fluency/fluent"
PERPLEXITY = "lm_eval/sandbox_grammar_ppl/word_perplexity"
EDGE_KEYS = [REWARD, WIN_RATE, KL, KL_K3, KL_K1, FLUENT, PERPLEXITY]


def _edge_suite(samples: bool = False) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(metrics, samples) of entries near the edges of their metrics' ranges. "near", three seeds
    (value per seed; no stored CI, so the t interval over seeds):

        KL exact / k3   0.01, 0.05, 0.30    t interval: 0.12 ± 4.3027·0.1550/√3 = [−0.265, 0.505]
        KL k1          −0.02, 0.05, 0.20    0.0767 ± 0.2789 = [−0.202, 0.356]
        win rate        0.90, 0.99, 1.00    0.9633 ± 0.1368 = [0.827, 1.100]
        fluent          0.85, 0.93, 0.98    0.92 ± 0.1630 = [0.757, 1.083] (the insights table's case)
        gold reward     0.10, −0.50, 0.60   unbounded: [−0.91, 1.051] stays
        perplexity      1.1, 1.5, 9.0       unbounded here: its lower end below 0 stays

    "single", one seed: KL 0.02 with stderr 0.05 and no CI: 0.02 ± 1.96·0.05 = [−0.078, 0.118]; its
    stored win-rate CI [0.97, 1.02] (a normal interval from an evaluator) is cut at 1 as well.
    With `samples`: 3 (resp. 1) seeds × 8 prompts × 2 samples of k1 ~ N(0.02, 0.3²), exact KL
    |N(0, 0.03²)|, outcomes 1 with probability 0.97 else 0 (seeded)."""
    per_seed = {KL: (0.01, 0.05, 0.30), KL_K3: (0.01, 0.05, 0.30), KL_K1: (-0.02, 0.05, 0.20),
                WIN_RATE: (0.90, 0.99, 1.00), FLUENT: (0.85, 0.93, 0.98), REWARD: (0.10, -0.50, 0.60),
                PERPLEXITY: (1.1, 1.5, 9.0)}
    frames = [run_rows("edge", "near", seed, {k: (v[seed], NAN, NAN, NAN) for k, v in per_seed.items()})
              for seed in range(3)]
    single = {KL: (0.02, NAN, NAN, 0.05), KL_K3: (0.02, NAN, NAN, 0.05), KL_K1: (0.02, NAN, NAN, 0.05),
              WIN_RATE: (0.995, 0.97, 1.02, NAN), FLUENT: (0.9, 0.85, 0.95, NAN), REWARD: (0.2, 0.1, 0.3, NAN),
              PERPLEXITY: (2.0, 1.5, 2.5, NAN)}
    frames.append(run_rows("edge", "single", 0, single, hparams={"tau": 0.1}))
    metrics = pd.concat(frames, ignore_index=True)
    if not samples:
        return metrics, None
    rng = np.random.default_rng(3)
    rows = []
    for run_id in metrics["run_id"].unique():
        for prompt in range(8):
            for sample in range(2):
                rows.append({"run_id": run_id, "prompt_id": prompt, "sample": sample,
                             "reward": rng.normal(0.3, 0.5), "outcome": float(rng.random() < 0.97),
                             "policy_logp": -10.0 + rng.normal(0.02, 0.3), "reference_logp": -10.0,
                             "token_kl": abs(rng.normal(0, 0.03)), "completion_tokens": 5})
    return metrics, pd.DataFrame(rows)


def _without_the_cut(monkeypatch):
    monkeypatch.setattr("harness.rank.clip_to_range", lambda low, high, bounds: (low, high))


def test_leaderboard_cuts_intervals_to_the_metrics_ranges_only():
    metrics, _ = _edge_suite()
    board = leaderboard(metrics, headline=EDGE_KEYS).set_index("entry")
    near, single = board.loc["near"], board.loc["single"]
    for key in (KL, KL_K3, KL_K1):
        assert near[key + ":ci_low"] == 0.0 and single[key + ":ci_low"] == 0.0
    assert near[KL + ":ci_high"] == pytest.approx(seed_interval([0.01, 0.05, 0.30])[2])
    assert single[KL + ":ci_high"] == pytest.approx(0.02 + Z975 * 0.05)
    assert near[WIN_RATE + ":ci_high"] == 1.0 and single[WIN_RATE + ":ci_high"] == 1.0
    assert near[WIN_RATE + ":ci_low"] == pytest.approx(seed_interval([0.90, 0.99, 1.00])[1])
    assert (near[FLUENT + ":ci_low"], near[FLUENT + ":ci_high"]) == pytest.approx((0.92 - 0.16297, 1.0), abs=1e-4)
    # the means stay; unbounded metrics keep their t intervals, below 0 included
    assert near[KL_K1] == pytest.approx(0.23 / 3) and near[WIN_RATE] == pytest.approx(2.89 / 3)
    for key, values in ((REWARD, [0.10, -0.50, 0.60]), (PERPLEXITY, [1.1, 1.5, 9.0])):
        assert (near[key], near[key + ":ci_low"], near[key + ":ci_high"]) == pytest.approx(seed_interval(values))
    assert near[PERPLEXITY + ":ci_low"] < 0 and near[REWARD + ":ci_low"] < 0
    assert "0.92 [0.757, 1]" in format_leaderboard(board.reset_index(), EDGE_KEYS)


def test_crossed_intervals_are_cut_and_ranks_and_tests_do_not_move(monkeypatch):
    """With samples (the crossed intervals; one seed: the t over prompts) every KL interval stays
    at or above 0 and every win-rate interval within [0, 1], where uncut they cross the edges;
    means, ranks, frontier and the paired tests are the same with and without the cut."""
    metrics, samples = _edge_suite(samples=True)
    cut = leaderboard(metrics, headline=EDGE_KEYS, samples=samples)
    tests = paired_tests(metrics, samples)
    _without_the_cut(monkeypatch)
    uncut = leaderboard(metrics, headline=EDGE_KEYS, samples=samples)
    assert set(cut[KL_K1 + ":ci_kind"]) == {"seeds × prompts (crossed t)", "prompts (one seed, t)"}
    assert (uncut[KL_K1 + ":ci_low"] < 0).all() and (uncut[WIN_RATE + ":ci_high"] > 1).any()
    assert (cut[[KL + ":ci_low", KL_K3 + ":ci_low", KL_K1 + ":ci_low"]] >= 0).all().all()
    assert ((cut[WIN_RATE + ":ci_low"] >= 0) & (cut[WIN_RATE + ":ci_high"] <= 1)).all()
    for key in EDGE_KEYS:
        pd.testing.assert_series_equal(cut[key], uncut[key])
    pd.testing.assert_frame_equal(cut[[REWARD + ":ci_low", REWARD + ":ci_high"]],
                                  uncut[[REWARD + ":ci_low", REWARD + ":ci_high"]])
    columns = ["entry", "rank", "rank_basis", "beats", "beaten_by", "frontier", "within_budget"]
    pd.testing.assert_frame_equal(cut[columns], uncut[columns])
    pd.testing.assert_frame_equal(tests, paired_tests(metrics, samples))


# --------------------------------------------------------------------------- confidence levels


def test_every_interval_on_the_board_states_its_level():
    """A single run's CI keeps the level it was stored at (one read from elsewhere, at 90 %); the
    t interval over seeds is at CONFIDENCE; the text names each level with its columns."""
    from harness.rank import levels_text

    runs = suite_runs()
    runs[3] = runs[3].assign(level=np.where(runs[3]["metric"] == "win_rate_vs_start", 0.9, runs[3]["level"]))
    board = leaderboard(pd.concat(runs, ignore_index=True)).set_index("entry")
    assert board.loc["ipo", f"{WIN_RATE}:level"] == 0.9  # one seed: its run's CI, at its level
    assert board.loc["dpo", f"{WIN_RATE}:level"] == 0.95  # two seeds: the t interval
    assert levels_text(board) == f"90% for {WIN_RATE}; 95% for {REWARD}, {WIN_RATE}, {KL}, {KL_K3}"
    assert levels_text(leaderboard(pd.concat(suite_runs(), ignore_index=True))) == "95%"
    assert format_leaderboard(board.reset_index()).endswith(f"intervals: 90% for {WIN_RATE}; 95% for "
                                                            f"{REWARD}, {WIN_RATE}, {KL}, {KL_K3}")
