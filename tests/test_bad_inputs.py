"""The corpus of bad inputs (tests/bad_inputs/, one suite per case; its README says how a case
states what it expects): `harness run` on each ends with exit status 2 and one line on stderr,
without a traceback, naming where the bad key came from and the key, before anything runs, and
nothing stored changes. In-process (`harness.cli.main`), so the whole corpus takes a few seconds;
a few cases also run as a real process to check the exit status, stderr and that the cheap
checks come before torch is imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main

CORPUS = Path(__file__).parent / "bad_inputs"
CASES = sorted(p.stem for p in CORPUS.glob("*.yaml"))
REPO = Path(__file__).resolve().parents[1]


def header(case: str, key: str) -> list[str]:
    """The values of a case's `# key: value` header lines."""
    lines = (CORPUS / f"{case}.yaml").read_text().splitlines()
    return [line.split(":", 1)[1].strip() for line in lines if line.startswith(f"# {key}:")]


def stored_world(tmp_path: Path, case: str) -> tuple[Path, Path]:
    """A results folder holding one stored run of the case's suite, and a reports folder with a
    published page; damaged as the case says. Returns (results, reports)."""
    results, reports = tmp_path / "results", tmp_path / "reports"
    name = "bad" if case.startswith(("damaged", "results")) else case
    folder = results / name
    folder.mkdir(parents=True)
    (folder / "0123456789ab.json").write_text('{"run_id": "0123456789ab", "status": "ok"}')
    (folder / "0123456789ab.parquet").write_bytes(_a_parquet())
    reports.mkdir()
    (reports / "index.html").write_text("<p>published</p>")
    damage = header(case, "damage")
    if damage == ["manifest"]:
        (folder / "0123456789ab.json").write_text('{"run_id": "0123')
    if damage == ["parquet"]:
        data = (folder / "0123456789ab.parquet").read_bytes()
        (folder / "0123456789ab.parquet").write_bytes(data[: len(data) // 2])
    if header(case, "results") == ["file"]:
        results = tmp_path / "results.txt"
        results.write_text("not a folder")
    return results, reports


def _a_parquet() -> bytes:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(pa.table({"value": [1.0, 2.0]}), sink)
    return sink.getvalue()


def snapshot(*folders: Path) -> dict[str, bytes]:
    """Every file under `folders` with its bytes."""
    return {str(p): p.read_bytes() for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()}


def argv(case: str, results: Path, reports: Path) -> list[str]:
    sets = [arg for value in header(case, "set") for arg in ("--set", value)]
    suite = CORPUS / f"{case}.yaml"
    if case.startswith(("damaged", "results")):
        suite = _named(suite, results.parent / "bad.yaml")
    return ["run", str(suite), *sets, "--results", str(results), "--reports", str(reports)]


def _named(suite: Path, copy: Path) -> Path:
    """The case's suite under the name `bad` (so it reads the damaged results folder)."""
    copy.write_text(suite.read_text() + "\nname: bad\n")
    return copy


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_and_changes_nothing(case, tmp_path, capsys, monkeypatch, harness_cache):
    monkeypatch.chdir(CORPUS)  # model and dataset paths in the corpus are relative to it
    results, reports = stored_world(tmp_path, case)
    args = argv(case, results, reports)
    before = snapshot(tmp_path, CORPUS)
    code = main(args)
    captured = capsys.readouterr()
    err = captured.err
    assert code == 2, f"{case}: exit {code}; stderr: {err!r}; stdout: {captured.out[-300:]!r}"
    assert err.count("\n") == 1 and err.startswith("harness: error: "), f"{case}: {err!r}"
    assert "Traceback" not in err
    where = header(case, "where") or [args[1]]
    assert where[0].format(results=results) in err, f"{case}: does not name {where[0]!r}: {err!r}"
    for text in header(case, "expect"):
        assert text in err, f"{case}: {text!r} not in {err!r}"
    assert snapshot(tmp_path, CORPUS) == before, f"{case}: stored files changed"
    assert not Path("/tmp/harness-abs").exists()


def test_every_case_states_what_it_expects():
    assert len(CASES) >= 40
    assert all(header(case, "expect") for case in CASES)


def run_process(*args: str) -> subprocess.CompletedProcess:
    """`harness` as a user runs it, printing afterwards whether torch had been imported."""
    code = ("import sys; from harness.cli import main; rc = main(sys.argv[1:]); "
            "print('torch imported' if 'torch' in sys.modules else 'torch not imported'); sys.exit(rc)")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=CORPUS,
                          env=env, timeout=120)


@pytest.mark.parametrize("case, before_torch", [("schedule_typo", True), ("set_malformed_value", True),
                                                ("method_typo", False)])
def test_bad_input_as_a_process(case, before_torch, tmp_path):
    """Exit status 2 and one stderr line from a real process; schema errors before torch loads
    (so `harness run` reports them as fast as `harness plan`)."""
    results, reports = stored_world(tmp_path, case)
    out = run_process(*argv(case, results, reports))
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert ("torch not imported" in out.stdout) == before_torch


def test_run_and_plan_refuse_alike(tmp_path, capsys, monkeypatch):
    """`harness plan` checks what `harness run` checks: the same line for the same suite."""
    monkeypatch.chdir(CORPUS)
    lines = []
    for command in ("plan", "run"):
        assert main([command, "model_empty_folder.yaml", "--results", str(tmp_path / "r")]) == 2
        lines.append(capsys.readouterr().err)
    assert lines[0] == lines[1]


def test_allow_large_budget_lets_a_huge_budget_through_the_check(tmp_path):
    from harness.preflight import check_suite
    from harness.suite import load_suite

    suite = load_suite(CORPUS / "budget_huge.yaml")
    with pytest.raises(Exception, match="allow-large-budget"):
        check_suite(suite, tmp_path)
    assert check_suite(suite, tmp_path, allow_large_budget=True)  # the runs are planned


def test_report_on_a_suite_never_run_suggests_only_real_paths(tmp_path, capsys, monkeypatch):
    """`harness report` (and `harness results`) on a suite with no stored run: the line names the
    suite file it was given, never a suites/<name>.yaml that is not there."""
    monkeypatch.chdir(tmp_path)  # no suites/ folder here
    suite = tmp_path / "mine.yaml"
    suite.write_text("name: never_run\nmethods: [dpo]\n")
    folders = ["--results", str(tmp_path / "results"), "--reports", str(tmp_path / "reports")]
    for command in ("report", "results"):
        assert main([command, "never_run", *folders]) == 2
        err = capsys.readouterr().err
        assert "suites/never_run.yaml" not in err and "whose name is 'never_run'" in err, err
        assert main([command, str(suite), *folders]) == 2
        assert f"`harness run {suite}` first" in capsys.readouterr().err
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "never_run.yaml").write_text("methods: [dpo]\n")
    assert main(["report", "never_run", *folders]) == 2
    assert "`harness run suites/never_run.yaml` first" in capsys.readouterr().err


def test_rank_reports_a_failed_run_on_stderr_as_run_does(tmp_path, capsys, monkeypatch):
    """A failed run's line goes to stderr under `harness rank` too; stdout keeps the leaderboard."""
    import harness.commands.rank as rank
    import harness.preflight as preflight
    from harness.runner import RunOutcome, SuiteOutcome

    class Spec:
        run_id = "0123456789ab"

        def label(self):
            return "my_loss"

    failed = SuiteOutcome([RunOutcome(Spec(), "failed", "the loss is NaN at step 3")])
    monkeypatch.setattr(rank, "load_plugin", lambda ref, base: ["my_loss"])
    monkeypatch.setattr(rank, "check_losses", lambda names: None)
    monkeypatch.setattr(preflight, "check_suite", lambda *a, **k: [])
    monkeypatch.setattr(rank, "_run", lambda suite, root, log: (failed, []))
    monkeypatch.setattr(rank, "_print_ranking", lambda root, suite, new, log: log("the leaderboard"))
    monkeypatch.setattr("harness.report.write_suite_report", lambda *a, **k: tmp_path / "r.html")
    suite = tmp_path / "s.yaml"
    suite.write_text("methods: [dpo]\n")
    code = rank.rank_new_methods(["my_loss.py"], suite, results_root=tmp_path, reports_root=tmp_path)
    out, err = capsys.readouterr()
    assert code == 1
    assert err == "  failed: my_loss (0123456789ab): the loss is NaN at step 3\n"
    assert "the loss is NaN" not in out and "the leaderboard" in out
