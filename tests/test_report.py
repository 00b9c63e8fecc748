"""harness.report: the self-contained HTML page of a suite, from parquet only.

The synthetic suite is the one of tests/test_rank.py (start, dpo × 2 seeds, ipo, simpo; simpo is
reference-free and took 150 optimizer steps against 100 for the others).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.report import write_suite_report


from tests import test_rank as fixtures  # the synthetic-suite builder, shared
EVIL = "<script>alert(1)</script>"


@pytest.fixture
def report(tmp_path) -> str:
    fixtures.build_suite(tmp_path / "results", "toy")
    out = write_suite_report(tmp_path / "results", "toy", tmp_path / "reports" / "toy.html")
    return out.read_text(encoding="utf-8")


def test_report_names_every_method_and_has_the_figures(report):
    for method in ("start", "dpo", "ipo", "simpo"):
        assert f">{method}<" in report
    assert 'id="reward-vs-kl"' in report and 'class="plotly-graph-div"' in report
    assert 'id="training-curves"' in report
    assert "Plotly.newPlot" in report
    assert "<h1>Suite: toy</h1>" in report


def test_report_is_self_contained_with_the_shared_plotly_beside_it(report, tmp_path):
    from harness.report.html import PLOTLY_BUNDLE

    # one script from outside the page: plotly.js, by a relative name, written beside the page
    assert re.findall(r"<script[^>]*\bsrc\s*=\s*\"([^\"]+)\"", report, flags=re.I) == [PLOTLY_BUNDLE]
    assert not re.search(r"<link[^>]*\bhref\s*=\s*[\"']?https?:", report, flags=re.I)
    bundle = tmp_path / "reports" / PLOTLY_BUNDLE
    assert bundle.read_text(encoding="utf-8").startswith("/**") and bundle.stat().st_size > 1_000_000
    assert "/** @license" not in report and len(report) < 1_000_000  # the page holds its figures only
    before = bundle.stat().st_mtime_ns
    write_suite_report(tmp_path / "results", "toy", tmp_path / "reports" / "again.html")
    assert bundle.stat().st_mtime_ns == before  # written once per plotly version


def test_leaderboard_table_shows_cis_and_compute(report):
    table = report[report.index("<h2>Leaderboard</h2>"):report.index("<h2>Reward vs KL</h2>")]
    assert 'class="sortable"' in table
    assert "0.75 [0.7, 0.8]" in table  # simpo's win rate, its own CI (one seed)
    assert "0.65 [0.0147, 1]" in table  # dpo's: a t-interval over 2 seeds (0.0147 to 1.29), cut at 1
    for heading in ("FLOPs", "optimizer steps", "train seconds"):
        assert f">{heading}<" in table
    assert ">1e+10<" in table and ">150<" in table
    rows = re.findall(r'<td class="text entry"[^>]*>([^<]+)</td>', table)
    assert rows == ["simpo", "dpo", "ipo", "start"]  # best first


def test_report_notes_that_reference_free_methods_got_more_steps(report):
    note = re.search(r'<div class="note">(.*?)</div>', report, flags=re.S)
    assert note and "Reference-free" in note.group(1) and "simpo" in note.group(1)
    assert "more optimizer steps under the same FLOP budget" in note.group(1)


def test_no_reference_free_note_when_steps_match(tmp_path):
    store = fixtures.ResultStore(tmp_path, "ref")
    for frame in fixtures.suite_runs("ref")[:4]:  # start, dpo, ipo: all pay for the reference
        store.write_run(frame["run_id"].iloc[0], frame, None, {})
    html = write_suite_report(tmp_path, "ref", tmp_path / "ref.html").read_text()
    assert '<div class="note">' not in html


def test_user_strings_are_escaped(tmp_path):
    with pytest.raises(HarnessError, match="not a plain name"):  # a suite name is a path: never markup
        fixtures.ResultStore(tmp_path, "s<b>uite")
    suite = "s.uite"
    fixtures.build_suite(tmp_path, suite, names={"dpo": EVIL})
    store = fixtures.ResultStore(tmp_path, suite)
    frame = fixtures.run_rows(suite, "ipo", 3, fixtures.headline(0.5, 0.1, 0.1),
                              hparams={"tau": '"><img src=x onerror=alert(2)>'})
    store.write_run(frame["run_id"].iloc[0], frame, None, {})
    html = write_suite_report(tmp_path, suite, tmp_path / "evil.html").read_text()
    assert EVIL not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html


def test_plotly_json_cannot_close_the_script(tmp_path):
    fixtures.build_suite(tmp_path, "toy", names={"ipo": "</script><script>alert(3)</script>"})
    html = write_suite_report(tmp_path, "toy", tmp_path / "x.html").read_text()
    assert "alert(3)</script>" not in html


def test_empty_suite_is_a_clear_error(tmp_path):
    with pytest.raises(HarnessError, match=r"no results found.*harness run SUITE\.yaml` first, with the suite file whose "
                                           r"name is 'nothing'"):
        write_suite_report(tmp_path, "nothing", tmp_path / "nothing.html")
    assert not (tmp_path / "nothing.html").exists()


def test_write_is_atomic_and_replaces_the_old_page(tmp_path):
    fixtures.build_suite(tmp_path / "results", "toy")
    out = tmp_path / "reports" / "toy.html"
    out.parent.mkdir()
    out.write_text("old")
    assert write_suite_report(tmp_path / "results", "toy", out) == out
    assert out.read_text().startswith("<!DOCTYPE html>")
    from harness.report.html import PLOTLY_BUNDLE

    assert sorted(p.name for p in out.parent.iterdir()) == sorted([PLOTLY_BUNDLE, "toy.html"])  # no temp file


def test_report_without_training_rows_has_no_curves(tmp_path):
    store = fixtures.ResultStore(tmp_path, "eval-only")
    frame = fixtures.run_rows("eval-only", "dpo", 0, fixtures.headline(0.6, 1.0, 1.0), train_curve=False)
    store.write_run(frame["run_id"].iloc[0], frame, None, {})
    html = write_suite_report(tmp_path, "eval-only", tmp_path / "e.html").read_text()
    assert 'id="reward-vs-kl"' in html and 'id="training-curves"' not in html


def test_report_and_rank_do_not_import_torch(tmp_path):
    """The full page (bootstrap CIs, significance, win-rate matrix, method cards) and the
    leaderboard come from parquet and manifests alone: neither torch nor the loss registry."""
    fixtures.build_suite(tmp_path, "toy", samples=True, cards=True)
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        import harness.rank, harness.report
        out = harness.report.write_suite_report(Path({str(tmp_path)!r}), "toy", Path({str(tmp_path / "t.html")!r}))
        assert out.exists() and "method-simpo" in out.read_text()
        assert harness.report.write_leaderboard(Path({str(tmp_path)!r}), Path({str(tmp_path / "site")!r})).exists()
        print("torch" in sys.modules, "harness.losses" in sys.modules)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False False"


def test_frontier_figure_marks_the_pareto_entries(report):
    """The frontier trace joins start, ipo and simpo (by KL: 0, 1, 5), not dpo (KL 6)."""
    data = _plot_data(report, "reward-vs-kl")
    line = next(trace for trace in data if trace["name"] == "Pareto frontier")
    assert _floats(line["x"]) == [0.0, 1.0, 5.0]
    assert {trace["name"] for trace in data} == {"start", "dpo", "ipo", "simpo", "Pareto frontier"}


def _plot_data(html: str, div_id: str) -> list[dict]:
    """The data array passed to Plotly.newPlot for one div."""
    call = re.search(r'Plotly\.newPlot\(\s*"' + re.escape(div_id) + r'",\s*', html)
    data, _ = json.JSONDecoder().raw_decode(html, call.end())
    return data


def _floats(values) -> list[float]:
    if isinstance(values, dict):  # plotly may encode arrays as typed base64 blocks
        import base64

        import numpy as np

        return list(np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"]).astype(float))
    return [float(v) for v in values]


# --------------------------------------------------------------------------- the full page


@pytest.fixture
def full_report(tmp_path) -> str:
    """The synthetic suite with per-sample tables, method cards and lm-eval rows."""
    store = fixtures.build_suite(tmp_path / "results", "toy", samples=True, cards=True)
    for run_id in store.run_ids():  # add lm-eval task metrics to every run, as the lm_eval evaluator does
        frame = fixtures.pd.read_parquet(store.metrics_path(run_id))
        row = frame[frame["metric"] == "reward_mean"].copy()
        extra = []
        for metric, value in (("arc_easy/acc", 0.40), ("hellaswag/acc_norm", 0.30)):
            r = row.copy()
            r["evaluator"], r["metric"] = "lm_eval", metric
            r["value"] = value + (0.1 if r["method"].iloc[0] == "ipo" else 0.0)
            r["ci_low"], r["ci_high"] = r["value"] - 0.02, r["value"] + 0.02
            extra.append(r)
        frame = fixtures.pd.concat([frame, *extra], ignore_index=True)
        samples = fixtures.pd.read_parquet(store.samples_path(run_id))
        store.write_run(run_id, frame, samples, store.read_manifest(run_id))
    out = write_suite_report(tmp_path / "results", "toy", tmp_path / "reports" / "toy.html")
    return out.read_text(encoding="utf-8")


def _section(html: str, heading: str) -> str:
    start = html.index(f"<h2>{heading}</h2>")
    end = html.find("<h2>", start + 1)
    return html[start:end if end > 0 else len(html)]


def test_full_report_has_every_section(full_report):
    headings = re.findall(r"<h2>([^<]+)</h2>", full_report)
    assert headings == ["Leaderboard", "Reward vs KL", "Metrics", "Methods × tasks", "Alignment tax by category",
                        "Category score vs KL", "Paired significance", "Win-rate matrix", "Compute accounting",
                        "Training curves", "Sampling and reproducibility", "Methods"]
    for div in ("reward-vs-kl", "metric-bars", "category-vs-kl", "win-rate-matrix", "training-curves"):
        assert f'id="{div}"' in full_report


def test_leaderboard_uses_the_bootstrap_when_samples_exist(full_report):
    assert "crossed random effects" in full_report and "covers the mean over the populations of seeds and prompts" in full_report
    assert "0.65 [0.0147, 1]" not in _section(full_report, "Leaderboard")  # no longer the t-interval
    assert "Each interval is cut to its metric" in full_report  # the note on ranges (harness.results.ranges)


def test_metric_bars_have_error_bars(full_report):
    data = _plot_data(full_report, "metric-bars")
    assert all(trace["type"] == "bar" for trace in data)
    assert len(data) >= 5  # arc_easy, hellaswag, win rate, gold reward, KL k3, length, ...
    for trace in data:
        assert trace["error_y"]["type"] == "data" and not trace["error_y"]["symmetric"]
        assert trace["x"] == ["simpo", "dpo", "ipo", "start"]  # leaderboard order


def test_methods_by_tasks_puts_lm_eval_first_and_bolds_the_best(full_report):
    table = _section(full_report, "Methods × tasks")
    groups = re.findall(r'<th class="group" colspan="(\d+)">([^<]*)</th>', table)
    assert [label for _, label in groups][:4] == ["", "lm-eval tasks", "win rates", "gold reward"]
    assert groups[1][0] == "2"  # arc_easy/acc and hellaswag/acc_norm
    headings = re.findall(r"<th[^>]*>([^<]+)</th>", table.split("</tr>", 1)[1])
    assert headings[:4] == ["entry", "arc_easy/acc", "hellaswag/acc_norm", "win_rate_vs_start"]
    rows = dict(re.findall(r'<td class="text entry"[^>]*>([^<]+)</td>(.*?)</tr>', table, flags=re.S))
    assert 'class="best"' in rows["ipo"].split("</td>")[0]  # ipo is best on arc_easy (0.5)
    assert "0.5 [0.48, 0.52]" in rows["ipo"]


def test_significance_table_lists_every_pair_with_holm(full_report):
    table = _section(full_report, "Paired significance")
    pairs = re.findall(r'<tr[^>]*><td class="text"[^>]*>([^<]+)</td><td class="text"[^>]*>([^<]+)</td>', table)
    assert len(pairs) == 6  # 4 entries: 4·3/2 pairs
    assert pairs[0] == ("simpo", "dpo")  # leaderboard order: the better entry is A
    for heading in ("t-test p", "Holm p", "significant"):
        assert f">{heading}<" in table


def test_win_rate_heatmap_is_complementary(full_report):
    (trace,) = _plot_data(full_report, "win-rate-matrix")
    z = trace["z"]
    if isinstance(z, dict):  # plotly may encode the matrix as a typed base64 block
        z = _floats(z)
        z = [z[i:i + 4] for i in range(0, 16, 4)]
    assert trace["type"] == "heatmap" and trace["x"] == ["simpo", "dpo", "ipo", "start"]
    for i in range(4):
        assert z[i][i] == 0.5
        for j in range(4):
            assert z[i][j] + z[j][i] == pytest.approx(1.0)
    assert z[0][3] == 1.0  # simpo's every sample beats the start model's on the same prompt


def test_compute_accounting_table(full_report):
    table = _section(full_report, "Compute accounting")
    for heading in ("policy FLOPs", "reference FLOPs", "generation FLOPs", "total FLOPs", "policy tokens",
                    "reference tokens", "optimizer steps", "train s", "eval s", "peak memory (MiB)"):
        assert f">{heading}<" in table
    rows = dict(re.findall(r'<td class="text entry"[^>]*>([^<]+)</td>(.*?)</tr>', table, flags=re.S))
    assert set(rows) == {"simpo", "dpo", "ipo", "start"}
    assert ">6e+09<" in rows["dpo"]  # policy FLOPs 6e7 · 100 steps


def test_method_cards_come_from_the_manifests(full_report):
    cards = _section(full_report, "Methods")
    names = re.findall(r'<div class="card" id="method-([^"]+)">', cards)
    assert names == ["simpo", "dpo", "ipo"]  # trained methods, leaderboard order; no card for start
    simpo = cards[cards.index('id="method-simpo"'):cards.index('id="method-dpo"')]
    assert "-log σ(β h) for simpo" in simpo and "The simpo paper (2024)" in simpo
    assert 'class="badge plugin"' in simpo and "/home/user/variants.py" in simpo
    assert "beta=2, gamma=0.5" in simpo  # the hyper-parameters used
    dpo = cards[cards.index('id="method-dpo"'):cards.index('id="method-ipo"')]
    assert ">built-in<" in dpo and "beta=0.1" in dpo


def test_cards_without_manifest_metadata_say_so(report):
    assert "carry no description of the method" in _section(report, "Methods")


def test_report_without_samples_explains_what_is_missing(report):
    assert "paired tests and the win-rate" in _section(report, "Paired significance")
    assert 'id="win-rate-matrix"' not in report


def test_cards_and_tables_escape_user_strings(tmp_path):
    evil = {"dpo": EVIL}
    store = fixtures.build_suite(tmp_path, "toy", names=evil, samples=True, cards=True)
    for run_id, manifest in store.read_manifests().items():
        if manifest.get("method"):
            manifest["method"]["formula"] = "<img src=x onerror=alert(4)>"
            manifest["method"]["origin"] = '/tmp/"><script>alert(5)</script>.py'
            store.write_manifest(run_id, manifest)
    html = write_suite_report(tmp_path, "toy", tmp_path / "evil.html").read_text()
    assert EVIL not in html and "<img src=x" not in html and "alert(5)</script>" not in html
    assert "&lt;img src=x onerror=alert(4)&gt;" in html


# --------------------------------------------------------------------------- leaderboard across suites


def test_leaderboard_index_links_every_suite(tmp_path):
    from harness.report import write_leaderboard

    fixtures.build_suite(tmp_path / "results", "alpha", samples=True)
    fixtures.build_suite(tmp_path / "results", "b-eta")
    (tmp_path / "results" / "c<d>").mkdir()  # not a suite name (none could write it): skipped
    (tmp_path / "results" / "empty").mkdir()  # a folder without finished runs is skipped
    index = write_leaderboard(tmp_path / "results", tmp_path / "reports")
    html = index.read_text()
    assert index.name == "index.html"
    assert re.findall(r'<h2 id="suite-[^"]*"><a href="([^"]+)">([^<]+)</a></h2>', html) == [
        ("alpha.html", "alpha"), ("b-eta.html", "b-eta")]
    assert (tmp_path / "reports" / "alpha.html").exists() and (tmp_path / "reports" / "b-eta.html").exists()
    assert html.count("<table") == 2 and "empty" not in html
    for entry in ("simpo", "dpo", "ipo", "start"):
        assert f">{entry}<" in html
    assert "<script src" not in html and "Plotly" not in html  # no figure, no plotly.js: a light page


def test_leaderboard_and_report_commands(tmp_path, capsys):
    from harness.cli import main

    fixtures.build_suite(tmp_path / "results", "toy", samples=True, cards=True)
    store_args = ["--results", str(tmp_path / "results"), "--reports", str(tmp_path / "reports")]
    assert main(["leaderboard", *store_args]) == 0
    assert (tmp_path / "reports" / "index.html").exists()
    assert main(["report", "toy", *store_args]) == 0
    assert "report:" in capsys.readouterr().out
    assert main(["leaderboard", "--results", str(tmp_path / "nothing"), "--reports", str(tmp_path)]) == 2
    assert "no stored results" in capsys.readouterr().err


def test_the_report_and_the_leaderboard_state_the_intervals_level(tmp_path):
    """The level comes from the stored rows: a run whose CI was computed at 90 % (read from
    elsewhere) is named at 90 % on both pages, the others at 95 %."""
    from harness.report import write_leaderboard
    from harness.results import ResultStore

    store = ResultStore(tmp_path / "results", "toy")
    for frame in fixtures.suite_runs():
        if frame["method"].iloc[0] == "ipo":
            frame = frame.assign(level=frame["level"].where(frame["metric"] != "win_rate_vs_start", 0.9))
        store.write_run(frame["run_id"].iloc[0], frame, None, {"status": "ok"})
    stated = f"Intervals are 90% for {fixtures.WIN_RATE}; 95% for {fixtures.REWARD}, {fixtures.WIN_RATE}"
    report = write_suite_report(tmp_path / "results", "toy", tmp_path / "toy.html").read_text()
    assert stated in report
    assert stated in write_leaderboard(tmp_path / "results", tmp_path / "site").read_text()
    fixtures.build_suite(tmp_path / "plain", "toy")
    assert "Intervals are 95%: " in write_suite_report(tmp_path / "plain", "toy", tmp_path / "p.html").read_text()
