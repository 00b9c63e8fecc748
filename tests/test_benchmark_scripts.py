"""The benchmark scripts run end to end at tiny settings and end in their `ratio:` line."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_train_throughput_runs_and_prints_a_ratio(capsys):
    pytest.importorskip("trl")
    script = load_script("train_throughput")
    code = script.main(["--steps", "2", "--warmup", "0", "--repeats", "1", "--batch-size", "4",
                        "--max-length", "24", "--hidden", "16", "--layers", "1", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.strip().splitlines()
    assert re.fullmatch(r"ratio: \d+\.\d\d", lines[-1]), out
    assert float(lines[-1].split()[1]) > 0
    table = [line.split() for line in lines if line.startswith(("harness ", "trl "))]
    assert [row[0] for row in table] == ["harness", "harness", "trl", "trl"]  # packed, padded, TRL x2
    steps = [re.search(r" (\d+) +\d+\.\d+ ", " ".join(row)).group(1) for row in table]
    assert steps == ["2"] * 4, out  # every side ran the steps it was asked for
