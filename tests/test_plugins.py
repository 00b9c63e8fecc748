"""Plugins and the add-a-variant path: loading from a file, a module or an entry point; the loss
contract as a library check; `harness rank my_variant.py --suite ...` end to end on the tiny
suite; broken plugins rejected with exit status 2 and nothing stored."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml

import harness.plugins as plugins
from harness.errors import HarnessError
from harness.losses import LOSSES, get_loss
from harness.losses.contract import check_loss_contract

ROOT = Path(__file__).resolve().parents[1]

HINGE = '''
"""A DPO variant for the tests: a hinge on the DPO log-ratio margin."""
import torch
from harness.losses import LossInputs, LossOutput, log_range, positive, register_loss
from harness.losses.common import chosen_rejected_logratios, preference_metrics


@register_loss(
    "{name}",
    search_space={{"beta": log_range(0.05, 5.0, "a decade either side of the default")}},
    needs=("reference",),
    reduction="sum",
    paper="SLiC-HF's hinge (Zhao et al. 2023) on DPO's margin",
    formula="max(0, 1 - beta h), h = DPO's log-ratio margin",
    constraints={{"beta": positive()}},
)
def {name}(inputs: LossInputs, *, beta: float = 0.5) -> LossOutput:
    """Hinge on the DPO margin: max(0, 1 - beta h)."""
    chosen, rejected = chosen_rejected_logratios(inputs)
    losses = torch.relu(1 - beta * (chosen - rejected))
    return LossOutput({losses}, preference_metrics(beta * chosen, beta * rejected))
'''


# A plugin as the family's simplest losses are written: needs, reduction, paper, formula, keyword
# hyper-parameters with defaults and a docstring, but no search space (issue 24's regression).
MINIMAL = '''
import torch.nn.functional as F
from harness.losses import LossInputs, LossOutput, register_loss
from harness.losses.common import preference_metrics


@register_loss("{name}", needs=("reference",), reduction="sum", paper="a user's clipped DPO",
               formula="-log sigmoid(min(beta (h_w - h_l), clip))")
def {name}(inputs: LossInputs, *, beta: float = 0.1, clip: float = 5.0) -> LossOutput:
    """DPO with its margin clipped at `clip`."""
    chosen = beta * (inputs.policy_chosen_logps - inputs.reference_chosen_logps)
    rejected = beta * (inputs.policy_rejected_logps - inputs.reference_rejected_logps)
    losses = -F.logsigmoid((chosen - rejected).clamp(max=clip))
    return LossOutput({losses}, preference_metrics(chosen, rejected))
'''


def minimal_plugin_source(name: str = "clipped_dpo", losses: str = "losses") -> str:
    """A plugin without a search space; `losses` is the expression returned (to break it on purpose)."""
    return MINIMAL.format(name=name, losses=losses)


def plugin_source(name: str = "dpo_hinge", losses: str = "losses") -> str:
    """A plugin file's text; `losses` is the expression returned (to break it on purpose)."""
    return HINGE.format(name=name, losses=losses)


@pytest.fixture
def restore_registry():
    """Plugins register into the process-wide registry: put it back as it was after the test."""
    items = dict(LOSSES._items)
    state = (dict(plugins._LOADED), set(plugins._CHECKED), plugins._ENTRY_POINTS_LOADED)
    modules = set(sys.modules)
    yield
    LOSSES._items.clear()
    LOSSES._items.update(items)
    plugins._LOADED.clear()
    plugins._LOADED.update(state[0])
    plugins._CHECKED.clear()
    plugins._CHECKED.update(state[1])
    plugins._ENTRY_POINTS_LOADED = state[2]
    for name in set(sys.modules) - modules:
        if name.startswith("harness_plugin_") or name.startswith("my_plugin"):
            del sys.modules[name]


# --------------------------------------------------------------------------- loading


def test_a_file_plugin_registers_with_its_path_as_origin(tmp_path, restore_registry):
    path = tmp_path / "variant.py"
    path.write_text(plugin_source("hinge_a"))
    assert plugins.load_plugin(str(path)) == ["hinge_a"]
    spec = get_loss("hinge_a")
    assert spec.origin == str(path.resolve()) and spec.hparams == {"beta": 0.5}
    assert plugins.load_plugin(str(path)) == ["hinge_a"]  # loading again is a no-op
    assert check_loss_contract(spec) == []


def test_a_module_plugin_and_an_entry_point(tmp_path, monkeypatch, restore_registry):
    (tmp_path / "my_plugin_mod.py").write_text(plugin_source("hinge_module"))
    (tmp_path / "my_plugin_ep.py").write_text(plugin_source("hinge_entry") + "\n\ndef register():\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert plugins.load_plugin("my_plugin_mod") == ["hinge_module"]
    entry = metadata.EntryPoint(name="mine", value="my_plugin_ep:register", group=plugins.ENTRY_POINT_GROUP)
    monkeypatch.setattr(plugins, "_entry_points", lambda: {"mine": entry})
    monkeypatch.setattr(plugins, "_ENTRY_POINTS_LOADED", False)
    assert plugins.load_entry_points() == ["hinge_entry"]
    assert plugins.load_entry_points() == []  # once per process
    assert plugins.load_plugin("mine") == ["hinge_entry"]  # named by its entry-point name


def test_unknown_and_failing_plugins_are_one_line_errors(tmp_path, restore_registry):
    with pytest.raises(HarnessError, match=r"missing\.py: no such plugin file"):
        plugins.load_plugin("missing.py")
    with pytest.raises(HarnessError, match=r"plugin 'no_such_module_xyz' is not a file, an installed entry point"):
        plugins.load_plugin("no_such_module_xyz")
    crash = tmp_path / "crash.py"
    crash.write_text("import torch\nraise RuntimeError('plugin bug\\nsecond line')\n")
    with pytest.raises(HarnessError, match=r"crash\.py: plugin failed to load: RuntimeError: plugin bug$"):
        plugins.load_plugin(str(crash))
    clash = tmp_path / "clash.py"
    clash.write_text(plugin_source("dpo"))
    with pytest.raises(HarnessError, match=r"clash\.py: loss 'dpo' is already registered"):
        plugins.load_plugin(str(clash))
    assert get_loss("dpo").origin == "built-in"


def test_a_half_registered_plugin_is_rolled_back(tmp_path, restore_registry):
    path = tmp_path / "half.py"
    path.write_text(plugin_source("half_ok") + "\nraise ValueError('after the first loss')\n")
    with pytest.raises(HarnessError, match="after the first loss"):
        plugins.load_plugin(str(path))
    assert "half_ok" not in LOSSES


def test_suite_plugins_are_loaded_before_planning(tmp_path, capsys, restore_registry):
    from harness.cli import main
    from tests.conftest import tiny_suite_text

    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "variant.py").write_text(plugin_source("hinge_suite"))
    raw = yaml.safe_load(tiny_suite_text(methods="[dpo, {hinge_suite: {beta: 0.25}}]"))
    raw["plugins"] = ["plugins/variant.py"]  # relative to the suite file, not the working folder
    suite = tmp_path / "with-plugin.yaml"
    suite.write_text(yaml.safe_dump(raw))
    assert main(["plan", str(suite)]) == 0
    assert re.search(r"hinge_suite\(beta=0\.25\)", capsys.readouterr().out)


def test_a_suite_plugin_that_breaks_the_contract_stops_the_plan(tmp_path, capsys, restore_registry):
    from harness.cli import main
    from tests.conftest import tiny_suite_text

    (tmp_path / "bad.py").write_text(plugin_source("hinge_nan", "losses * float('nan')"))
    raw = yaml.safe_load(tiny_suite_text(methods="[dpo]"))
    raw["plugins"] = ["bad.py"]
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(raw))
    assert main(["plan", str(tmp_path / "s.yaml")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "loss 'hinge_nan' breaks the loss contract: non-finite" in err


# --------------------------------------------------------------------------- the contract as a library


def test_every_builtin_loss_keeps_the_contract():
    builtin = [name for name in LOSSES.names() if get_loss(name).origin == "built-in"]  # not other tests' plugins
    broken = {name: check_loss_contract(get_loss(name)) for name in builtin}
    assert {name: problems for name, problems in broken.items() if problems} == {}


@pytest.mark.parametrize(
    ("losses", "problem"),
    [
        ("losses[:, None]", r"losses have shape \(4, 1\) for a batch of 4, expected \(4,\)"),
        ("losses * float('nan')", r"non-finite losses"),
        ("losses.sum()", r"losses have shape \(\) for a batch of 4"),
        ("losses.detach()", r"losses cannot be differentiated|no gradient reaches"),
        ("losses + inputs.scores", r"raised AttributeError"),
        ("(chosen - rejected).exp() * 0", r"no gradient reaches the chosen policy log-probs"),
        ("losses + inputs.policy_chosen_logps.add_(1)", r"modifies its inputs in place|raised RuntimeError"),
        ("losses * torch.rand(()).item()", r"not deterministic"),
    ],
)
def test_contract_violations_are_named(tmp_path, losses, problem, restore_registry):
    path = tmp_path / "broken.py"
    path.write_text(plugin_source("broken_loss", losses))
    plugins.load_plugin(str(path))
    problems = check_loss_contract(get_loss("broken_loss"))
    assert problems and re.search(problem, problems[0]), problems
    with pytest.raises(HarnessError, match=r"broken\.py: loss 'broken_loss' breaks the loss contract: "):
        plugins.check_losses(["broken_loss"])


def test_a_plugin_without_a_search_space_or_docstring_is_accepted_with_one_warning(tmp_path, restore_registry):
    source = minimal_plugin_source("plain_loss").replace('"""DPO with its margin clipped at `clip`."""', "")
    (tmp_path / "plain.py").write_text(source)
    plugins.load_plugin(str(tmp_path / "plain.py"))
    warnings: list[str] = []
    plugins.check_losses(["plain_loss"], warn=warnings.append)  # no HarnessError: nothing makes a number wrong
    assert len(warnings) == 1
    assert "plain.py: loss 'plain_loss' is run and ranked" in warnings[0]
    assert "no docstring" in warnings[0] and "no search space for ['beta', 'clip']" in warnings[0]
    # the built-ins' strict contract still names both gaps
    assert [p[:19] for p in check_loss_contract(get_loss("plain_loss"))] == ["no docstring (give ", "no search space for"]


def test_harness_methods_lists_a_plugin_with_its_derived_space(tmp_path, capsys, restore_registry):
    from harness.cli import main

    (tmp_path / "listed.py").write_text(minimal_plugin_source("listed_plain"))
    assert main(["methods", str(tmp_path / "listed.py")]) == 0
    captured = capsys.readouterr()
    line = next(line for line in captured.out.splitlines() if line.startswith("listed_plain "))
    assert "beta log[0.01, 1] (derived), clip log[0.5, 50] (derived)" in line and str(tmp_path / "listed.py") in line
    assert captured.err.count("harness: warning: ") == 1


@pytest.mark.parametrize(("losses", "fault"), [
    ("losses * float('nan')", "non-finite losses [nan, nan, nan, nan]"),
    ("losses + inputs.scores", "raised AttributeError"),
    ("losses[:, None]", "losses have shape (4, 1) for a batch of 4"),
])
def test_a_plugin_without_a_search_space_is_refused_for_its_real_fault(tmp_path, losses, fault, restore_registry):
    (tmp_path / "faulty.py").write_text(minimal_plugin_source("faulty_loss", losses))
    plugins.load_plugin(str(tmp_path / "faulty.py"))
    warnings: list[str] = []
    with pytest.raises(HarnessError) as err:
        plugins.check_losses(["faulty_loss"], warn=warnings.append)
    assert f"loss 'faulty_loss' breaks the loss contract: {fault}" in str(err.value)
    assert "search space" not in str(err.value) and warnings == []  # the fault, not a style complaint


def test_a_default_a_suite_cannot_set_is_a_fault(tmp_path, restore_registry):
    source = minimal_plugin_source("listed_loss").replace("clip: float = 5.0", "clip: tuple = (5.0,)")
    source = source.replace(".clamp(max=clip)", ".clamp(max=clip[0])")
    (tmp_path / "listed.py").write_text(source)
    plugins.load_plugin(str(tmp_path / "listed.py"))
    with pytest.raises(HarnessError, match=r"hyper-parameter 'clip' defaults to \(5\.0,\) \(tuple\); give a bool, int"):
        plugins.check_losses(["listed_loss"])


def test_missing_metrics_and_declarations_are_named(tmp_path, restore_registry):
    source = plugin_source("bare_loss").replace("preference_metrics(beta * chosen, beta * rejected)", "{}")
    source = source.replace('"""Hinge on the DPO margin: max(0, 1 - beta h)."""', "")
    (tmp_path / "bare.py").write_text(source)
    plugins.load_plugin(str(tmp_path / "bare.py"))
    problems = check_loss_contract(get_loss("bare_loss"))
    assert any("no docstring" in p for p in problems)
    assert any("missing metrics ['chosen_rewards'" in p for p in problems)


def test_the_readme_example_plugin_keeps_the_contract(tmp_path, restore_registry):
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```python\n(# my_variant\.py\n.*?)```", readme, flags=re.S)
    assert block, "README.md's add-a-variant example is missing"
    (tmp_path / "my_variant.py").write_text(block.group(1).replace('"dpo_hinge"', '"readme_hinge"'))
    assert plugins.load_plugin(str(tmp_path / "my_variant.py")) == ["readme_hinge"]
    assert check_loss_contract(get_loss("readme_hinge")) == []


# --------------------------------------------------------------------------- suites/sandbox-all.yaml


def test_sandbox_all_names_every_builtin_method_with_three_seeds():
    from dataclasses import replace

    from harness.plan import plan_suite
    from harness.suite import load_suite

    suite = load_suite(ROOT / "suites" / "sandbox-all.yaml")
    quickstart = load_suite(ROOT / "suites" / "quickstart.yaml")
    builtin = sorted(n for n in LOSSES.names() if get_loss(n).origin == "built-in")
    singles = [entry.name for entry in suite.methods if "+" not in entry.name]  # and mixtures beside them
    assert sorted(singles) == builtin
    assert suite.seeds == (0, 1, 2)
    assert suite.budget == quickstart.budget and suite.evaluate == quickstart.evaluate
    # the same training settings, but room for the sandbox's multi-turn sessions (~85 tokens)
    assert replace(suite.train, max_length=quickstart.train.max_length) == quickstart.train
    assert suite.train.max_length >= 96
    runs = plan_suite(suite)
    assert len(runs) == 1 + 3 * len(suite.methods)  # the start model once, every method × 3 seeds


# --------------------------------------------------------------------------- harness rank, end to end


@pytest.fixture(scope="module")
def stored_baselines(tmp_path_factory, harness_cache):
    """The tiny suite run once (start, dpo, ipo, simpo): the stored baselines."""
    from harness.cli import main
    from tests.conftest import tiny_suite_text

    root = tmp_path_factory.mktemp("rank")
    suite = root / "tiny.yaml"
    suite.write_text(tiny_suite_text())
    assert main(["run", str(suite), "--results", str(root / "results"), "--reports", str(root / "reports")]) == 0
    return root, suite


def _harness(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True,
                          timeout=540, cwd=cwd)


def _snapshot(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


@pytest.mark.slow
def test_rank_trains_only_the_new_method_and_ranks_it(stored_baselines):
    root, suite = stored_baselines
    (root / "my_variant.py").write_text(plugin_source("dpo_hinge"))
    before = _snapshot(root / "results" / "tiny")
    result = _harness("rank", "my_variant.py", "--suite", str(suite), "--results", "results",
                      "--reports", "reports", cwd=root)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "tiny: 5 runs planned, 4 stored, 1 to run" in out
    assert len(re.findall(r": done in ", out)) == 1  # the baselines were reused, not retrained
    line = re.search(r"^dpo_hinge \((.+)\): rank ([\d.]+) of 5; win rate vs start (\S+ \[\S+, \S+\])", out, flags=re.M)
    assert line, out
    assert line.group(1) == str((root / "my_variant.py").resolve())
    assert 1 <= float(line.group(2)) <= 5
    assert re.search(r"^  vs dpo: Δ gold reward .* t-test p .* Holm p ", out, flags=re.M)
    after = _snapshot(root / "results" / "tiny")
    assert {k: v for k, v in after.items() if k in before} == before  # stored runs untouched

    # the parquet: the new method is stored like any other, and ranks among the stored methods
    from harness.rank import leaderboard
    from harness.results import ResultStore

    store = ResultStore(root / "results", "tiny")
    metrics = store.read_metrics()
    assert set(metrics["method"]) == {"start", "dpo", "ipo", "simpo", "dpo_hinge"}
    board = leaderboard(metrics, samples=store.read_samples()).set_index("entry")
    assert board.loc["dpo_hinge", "rank"] == pytest.approx(float(line.group(2)))
    assert board.loc["dpo_hinge", "gold_reward/reward_mean:ci_kind"] == "prompts (one seed, t)"
    manifest = store.read_manifest(metrics.loc[metrics["method"] == "dpo_hinge", "run_id"].iloc[0])
    assert manifest["method"]["origin"] == line.group(1)

    # the HTML: a leaderboard row and a card that names the plugin file
    html = (root / "reports" / "tiny.html").read_text()
    board = html.split("<h2>Leaderboard</h2>")[1].split("<h2>")[0]
    rows = re.findall(r'<td class="text entry"[^>]*>([^<]+)</td>', board)
    assert "dpo_hinge" in rows and len(rows) == 5
    card = html[html.index('id="method-dpo_hinge"'):]
    assert 'class="badge plugin"' in card[:400] and "my_variant.py" in card[:400]


@pytest.mark.slow
def test_a_plugin_that_breaks_the_contract_is_rejected_and_nothing_is_stored(stored_baselines):
    root, suite = stored_baselines
    (root / "wrong_shape.py").write_text(plugin_source("hinge_shape", "losses[:, None]"))
    before = _snapshot(root / "results" / "tiny")
    report_before = (root / "reports" / "tiny.html").stat().st_mtime_ns
    result = _harness("rank", "wrong_shape.py", "--suite", str(suite), "--results", "results",
                      "--reports", "reports", cwd=root)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("harness: error: ")
    assert "wrong_shape.py: loss 'hinge_shape' breaks the loss contract: losses have shape (4, 1)" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert _snapshot(root / "results" / "tiny") == before
    assert (root / "reports" / "tiny.html").stat().st_mtime_ns == report_before


@pytest.mark.slow
def test_a_minimal_plugin_is_ranked_on_an_untuned_suite_with_one_warning(stored_baselines):
    root, suite = stored_baselines
    (root / "my_variant.py").write_text(minimal_plugin_source("clipped_dpo"))
    result = _harness("rank", "my_variant.py", "--suite", str(suite), "--results", "results",
                      "--reports", "reports", cwd=root)
    assert result.returncode == 0, result.stdout + result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("harness: warning: ")]
    assert len(warnings) == 1 and "loss 'clipped_dpo' is run and ranked" in warnings[0]
    assert "no search space for ['beta', 'clip']" in warnings[0]
    assert "harness: error" not in result.stderr
    assert re.search(r"^clipped_dpo \(.+my_variant\.py\): rank [\d.]+ of \d+; win rate vs start", result.stdout, flags=re.M)
    from harness.results import ResultStore

    assert "clipped_dpo" in set(ResultStore(root / "results", "tiny").read_metrics()["method"])


def test_a_nan_plugin_is_rejected_in_process(stored_baselines, capsys, restore_registry):
    from harness.cli import main

    root, suite = stored_baselines
    (root / "nan_variant.py").write_text(plugin_source("hinge_nan2", "losses * float('nan')"))
    before = _snapshot(root / "results" / "tiny")
    code = main(["rank", str(root / "nan_variant.py"), "--suite", str(suite), "--results", str(root / "results"),
                 "--reports", str(root / "reports")])
    assert code == 2
    err = capsys.readouterr().err
    assert "loss 'hinge_nan2' breaks the loss contract: non-finite losses [nan, nan, nan, nan]" in err
    assert _snapshot(root / "results" / "tiny") == before


def test_a_plugin_without_losses_is_rejected(stored_baselines, capsys, restore_registry):
    from harness.cli import main

    root, suite = stored_baselines
    (root / "empty_plugin.py").write_text("x = 1\n")
    assert main(["rank", str(root / "empty_plugin.py"), "--suite", str(suite), "--results", str(root / "results")]) == 2
    assert "registers no loss" in capsys.readouterr().err


def test_rank_without_plugins_ranks_what_is_stored(stored_baselines, capsys, tmp_path):
    from harness.cli import main

    root, suite = stored_baselines
    before = _snapshot(root / "results" / "tiny")
    assert main(["rank", "--suite", str(suite), "--results", str(root / "results"),
                 "--reports", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^rank\s+entry\s+seeds", out, flags=re.M) and "simpo" in out
    assert (tmp_path / "tiny.html").exists()
    assert _snapshot(root / "results" / "tiny") == before

