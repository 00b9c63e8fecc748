"""The package's floors stay one-way: every import inside harness/ (module level, inside functions
and under TYPE_CHECKING alike, read with ast) goes down the floors below or stays on its own floor,
no module imports itself round a circle, and the light entry points import no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "harness"

# Lowest first. A module may import its own package and the floors below it, never a floor above
# nor another package of its own floor: stages never import a command, reports and statistics
# never import training or evaluation, and training and evaluation (one floor) never import each
# other: both use harness.needs and harness.data.batches below them.
FLOORS: list[tuple[str, ...]] = [
    ("harness", "harness.errors"),  # "harness": the package's own __init__ (its version) only
    ("harness.names", "harness.values"),
    ("harness.cache", "harness.registry"),
    ("harness.sampling", "harness.mix_syntax", "harness.fingerprint"),
    ("harness.suite",),
    ("harness.memory",),  # the memory model: a run's peak per device from its model's config alone
    ("harness.results",),
    ("harness.intervals", "harness.length_control"),
    ("harness.rank",),
    ("harness.report",),
    ("harness.losses",),  # the loss contract and the regimes' declarations
    ("harness.plugins",),
    ("harness.plan", "harness.methods"),
    ("harness.tuning",),  # search spaces, samplers, selection: plain data over losses, suites and ranks
    ("harness.data",),  # formats, loading, tokenizing, collation, packing
    ("harness.packed_attention",),  # packed rows through FlexAttention: the BlockMask and the attention function
    ("harness.logprobs",),
    ("harness.needs",),
    ("harness.generation", "harness.models"),
    ("harness.sandbox",),
    ("harness.train", "harness.evaluate"),
    ("harness.lifetimes",),  # when the start and reward models are loaded and released
    ("harness.runner", "harness.preflight"),  # preflight: the checks commands run before any work
    ("harness.tune",),  # the tuning stage: trials, selection and re-runs through the runner
    ("harness.prepared",),  # the precompute stage before a fan-out, through the runner's World
    ("harness.executors",),
    ("harness.commands",),
    ("harness.cli",),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The harness modules `name` imports anywhere in its source (a `from x import y` counts as
    x.y when that is a module, else as x)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "harness"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing module's package
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] == "harness":
                out |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
    return out - {name}


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(name, path, set(found)) for name, path in found.items()}


def place(name: str) -> tuple[int, str]:
    """The floor of `name` and the package (the longest prefix of FLOORS) it belongs to."""
    best, level = "", -1
    for i, prefixes in enumerate(FLOORS):
        for prefix in prefixes:
            below = name.startswith(prefix + ".") and prefix != "harness"  # a new module needs a floor
            if (name == prefix or below) and len(prefix) > len(best):
                best, level = prefix, i
    return level, best


def floor(name: str) -> int:
    return place(name)[0]


def test_every_module_has_a_floor():
    assert [name for name in modules() if floor(name) < 0] == []


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    """Imports of a floor above, or of another package of the same floor ("harness" itself, the
    package's __init__, is imported by name only for its version)."""
    def wrong(a: str, b: str) -> bool:
        (floor_a, package_a), (floor_b, package_b) = place(a), place(b)
        return floor_b > floor_a or (floor_b == floor_a and package_b != package_a and package_b != "harness")

    return [f"{a} -> {b}" for a, deps in sorted(edges.items()) for b in sorted(deps) if wrong(a, b)]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every circle a depth-first search closes (a back edge), as the path round it."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    found: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(edges.get(node, ())):
            if state.get(dep) == 1:
                found.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])
    return found


def test_imports_go_down_the_floors():
    assert upward_imports(graph()) == []


@pytest.mark.parametrize("package", ["harness.losses", "harness.results", "harness.report", "harness.rank"])
def test_results_reports_and_losses_never_import_training_evaluation_or_the_runner(package):
    forbidden = ("harness.train", "harness.evaluate", "harness.runner")
    bad = [f"{a} -> {b}" for a, deps in graph().items() if a == package or a.startswith(package + ".")
           for b in deps if b.startswith(forbidden)]
    assert bad == []


def test_no_import_cycle():
    """Over every import, lazy ones included (a lazy import round a circle is still a circle)."""
    assert cycles(graph()) == []


def test_the_checks_see_what_they_look_for():
    """An upward import and a circle in a made-up graph are reported; the import reader sees what
    a real loss module imports."""
    made_up = {"harness.losses.dpo": {"harness.losses.base", "harness.train.loop"},
               "harness.evaluate.implicit": {"harness.train.data"},
               "harness.plugins": {"harness.runner"}, "harness.runner": {"harness.plugins"}}
    assert upward_imports(made_up) == ["harness.evaluate.implicit -> harness.train.data",
                                       "harness.losses.dpo -> harness.train.loop", "harness.plugins -> harness.runner"]
    assert cycles(made_up) == [["harness.plugins", "harness.runner", "harness.plugins"]]
    assert "harness.losses.base" in imports("harness.losses.dpo", PACKAGE / "losses" / "dpo.py", set(modules()))


def _fresh_modules(code: str) -> set[str]:
    """The top-level modules a fresh interpreter holds after running `code`."""
    script = f"import sys\n{code}\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            cwd=PACKAGE.parent)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_importing_the_planner_imports_no_torch():
    assert "torch" not in _fresh_modules("import harness.plan")


def test_planning_a_suite_imports_no_transformers():
    """Planning needs the losses' signatures (torch), not models or tokenizers."""
    loaded = _fresh_modules("from harness.plan import plan_suite\nfrom harness.suite import load_suite\n"
                            "plan_suite(load_suite('suites/quickstart.yaml'))")
    assert "torch" in loaded and "transformers" not in loaded


def test_results_ranks_and_reports_import_no_torch():
    assert "torch" not in _fresh_modules("import harness.results, harness.rank, harness.report")
