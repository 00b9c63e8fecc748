"""The `harness` command. Bad input ends in one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from harness.commands import scale as cli_scale
from harness.errors import HarnessError, HarnessFault

EXIT_BAD_INPUT = 2
EXIT_RUN_FAILED = 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train and evaluate every missing run of a suite, then report")
    _suite_args(run)
    run.add_argument("--no-report", action="store_true", help="do not write reports/<suite>.html")
    cli_scale.add_run_options(run)

    plan = sub.add_parser("plan", help="print the planned runs and their budgets; trains nothing")
    _suite_args(plan)
    plan.add_argument("--show-inputs", action="store_true",
                      help="also print what each model reads for one example: a training sequence with its "
                           "completion mask, a generation prompt and a reward-model input (loads the models)")

    report = sub.add_parser("report", help="write reports/<suite>.html from stored results")
    report.add_argument("suite", help="a suite name or suite file")
    _store_args(report)

    results = sub.add_parser("results", help="list the stored runs of a suite with their status")
    results.add_argument("suite", help="a suite name or suite file")
    _store_args(results)

    rank = sub.add_parser("rank", help="add plugin methods to a suite, run what is missing, rank them")
    rank.add_argument("plugins", nargs="*", metavar="PLUGIN",
                      help="a .py file, module or entry point registering new losses (none: rank what is stored)")
    rank.add_argument("--suite", required=True, help="suite YAML file whose stored runs are the baselines")
    rank.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a suite value")
    _budget_arg(rank)
    _store_args(rank)

    board = sub.add_parser("leaderboard", help="write reports/index.html across every stored suite")
    _store_args(board)

    publish = sub.add_parser("publish", help="write a suite's stored results as a dataset: a folder or a Hub dataset")
    publish.add_argument("suite", help="a suite name or suite file")
    publish.add_argument("--to", required=True, metavar="DIR|hf://datasets/OWNER/NAME",
                         help="the dataset: a local folder, or a Hub dataset repo (huggingface_hub's endpoint and token)")
    publish.add_argument("--tables-only", action="store_true",
                         help="publish the aggregated tables, the suite file and the pointer, not the runs' files")
    publish.add_argument("--full-results", metavar="POINTER",
                         help="with --tables-only: where the full snapshot is kept (recorded in latest.json)")
    _store_args(publish)

    evaluate = sub.add_parser("evaluate", help="recompute stored runs' metrics from their samples (--rescore)")
    evaluate.add_argument("suite", help="a suite name or suite file")
    evaluate.add_argument("--rescore", action="store_true",
                          help="recompute every sample-based metric from <run_id>.samples.parquet; "
                               "trains and generates nothing")
    evaluate.add_argument("--reward-model", metavar="NAME",
                          help="score the stored samples again with this reward model first "
                               "(gold, a folder or a Hub id)")
    evaluate.add_argument("--no-report", action="store_true", help="do not rewrite reports/<suite>.html")
    _store_args(evaluate)

    verify = sub.add_parser("verify", help="re-run K stored runs in a temporary folder: bit-identical, within "
                                           "the stored CIs or outside them, and whether fingerprints match")
    verify.add_argument("suite", help="a suite file (or the name of suites/NAME.yaml)")
    verify.add_argument("--runs", type=int, default=3, metavar="K", help="runs to re-run, across methods (default 3)")
    verify.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="the overrides the suite was run with (repeatable)")
    _store_args(verify)

    methods = sub.add_parser("methods", help="list every registered method")
    methods.add_argument("--json", action="store_true", help="print JSON")
    methods.add_argument("plugins", nargs="*", metavar="PLUGIN",
                         help="a .py file, module or entry point whose losses to list too (checked as `rank` does)")

    sandbox = sub.add_parser("sandbox", help="build or show the offline sandbox world")
    sandbox.add_argument("action", choices=["build", "show"])
    sandbox.add_argument("suite", nargs="?", help="take the sandbox settings from this suite")
    sandbox.add_argument("--json", action="store_true", help="print the summary as JSON")
    cli_scale.add_commands(sub, _suite_args)
    return parser


def _suite_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", help="suite YAML file, e.g. suites/quickstart.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a suite value, e.g. --set budget.value=1e11 (repeatable)")
    _budget_arg(p)
    _store_args(p)


def _budget_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-large-budget", action="store_true",
                   help="accept a budget past harness.suite.LARGE_BUDGETS (refused otherwise: a run that would not end)")


def _store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", default="results", help="results folder (default: results)")
    p.add_argument("--reports", default="reports", help="reports folder (default: reports)")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what a relaunch under torchrun repeats
    try:
        return COMMANDS[args.command](args)
    except HarnessError as err:
        print(f"harness: error: {err}", file=sys.stderr)
        return EXIT_RUN_FAILED if isinstance(err, HarnessFault) else EXIT_BAD_INPUT
    except OSError as err:  # a fault outside any run (a full disk while writing a report): one line
        where = f"{err.filename}: " if err.filename else ""
        print(f"harness: error: {where}{err.strerror or err}; stored results are intact", file=sys.stderr)
        return EXIT_RUN_FAILED
    except KeyboardInterrupt:
        print("harness: interrupted; stored results are intact, re-run to finish", file=sys.stderr)
        return 130


def _quiet_libraries() -> None:
    """Keep the output to harness's own lines (transformers' save progress bars, advisories)."""
    from harness.models import quiet_libraries

    quiet_libraries()


def _checked_suite(args):
    """The suite of `harness run` and `harness plan`, checked as a whole before anything runs
    (harness.preflight), and its planned runs; the runner (and its imports) come after."""
    from harness.preflight import check_suite
    from harness.suite import load_suite

    suite = load_suite(args.suite, args.set)
    specs = check_suite(suite, Path(args.results), allow_large_budget=args.allow_large_budget)
    return suite, specs


def cmd_run(args) -> int:
    started = time.perf_counter()
    scale = cli_scale.run_kwargs(args)  # --shard K/N: one worker of a job array
    suite, specs = _checked_suite(args)
    from harness.preflight import check_services

    check_services(suite)  # the LLM judge's server answers and serves its model, before anything trains
    _quiet_libraries()
    from harness.train.sizing import check_devices, model_folders

    check_devices(suite, specs, model_folders(suite))  # the device and each run's memory, before anything loads
    from harness.train.distributed import launch, launched_distributed

    processes = suite.train.distributed.processes
    if processes > 1 and not launched_distributed():  # the runs train sharded: this command again, in N processes
        print(f"{suite.name}: training each run over {processes} processes (torchrun, FSDP)")
        return 0 if launch(processes, ["-m", "harness.cli", *args.argv]) == 0 else EXIT_RUN_FAILED
    unmet: list[str] = []
    if suite.tune and scale:
        raise HarnessError(f"{suite.path}: --shard splits a fixed plan, but a tuned suite's trials follow from earlier "
                           "results; run `harness run` without --shard in each process (studies and runs are "
                           "claimed with locks)")
    if suite.tune:  # the fair-comparison protocol (harness.tuning)
        from harness.tune import tune_suite

        tuned = tune_suite(suite, Path(args.results))
        outcome, unmet = tuned.runs, tuned.unmet
    else:
        from harness.runner import run_suite

        outcome = run_suite(suite, Path(args.results), **scale)
    from harness.train.distributed import is_main

    if not is_main():  # a data-parallel helper process: the main one reports
        return 0
    if scale:
        print(f"{suite.name}: shard {args.shard} done; `harness report {args.suite}` once every shard has run")
    elif not args.no_report:
        _write_report(Path(args.results), suite.name, Path(args.reports))
    print(f"{suite.name}: finished in {time.perf_counter() - started:.1f} s")
    outcome.report_failed()
    if unmet:  # reported after everything else is stored: the trials stay, nothing is relaxed
        from harness.tune import unmet_message

        raise HarnessError(unmet_message(suite, unmet))
    return EXIT_RUN_FAILED if outcome.failed else 0


def _write_report(results: Path, suite_name: str, reports: Path) -> None:
    from harness.rank import format_leaderboard
    from harness.report import write_suite_report
    from harness.report.suite import read_stored_suite

    stored = read_stored_suite(results, suite_name)
    if stored.metrics.empty:
        return
    print(format_leaderboard(stored.board()))
    path = write_suite_report(results, suite_name, reports / f"{suite_name}.html")
    print(f"report: {path}")


def cmd_plan(args) -> int:
    suite, specs = _checked_suite(args)
    if suite.tune:  # trials are proposed as results arrive; the runs listed are the start and defaults
        from harness.tuning.check import tuning_plan_text

        print(tuning_plan_text(suite))
    _quiet_libraries()
    from harness.runner import estimate_plan, plan_estimate_blocker

    estimates = estimate_plan(suite, specs)
    start_of = {model: name for name, model in suite.starts}  # a start column when there are several
    start = (lambda spec: f"{start_of[spec.model]:<10} ") if start_of else (lambda spec: "")
    print(f"{'run_id':<12}  {'start':<10} " if start_of else f"{'run_id':<12}  ", end="")
    print(f"{'method':<28} {'seed':>4}  {'budget':<16} {'steps':>7} {'est. train time':>15}")
    for spec in specs:
        budget = f"{spec.budget.kind}={spec.budget.value:.3g}" if spec.trains else "eval only"
        steps, seconds = estimates.get(spec.run_id, (None, None))
        steps_text = f"~{steps}" if steps is not None else "?"
        time_text = f"~{seconds:.0f} s" if seconds is not None else "?"
        print(f"{spec.run_id:<12}  {start(spec)}{spec.label():<28} {spec.seed:>4}  {budget:<16} {steps_text:>7} "
              f"{time_text:>15}")
    if not estimates:
        print(plan_estimate_blocker(suite) or "no run trains: nothing to estimate")
    _print_memory_plan(suite, specs)
    if args.show_inputs:
        from harness.commands.inputs import show_inputs

        print()
        print(show_inputs(suite))
    return 0


def _print_memory_plan(suite, specs) -> None:
    """Each run's predicted peak memory per device (harness.memory) on the suite's stated
    hardware, or the visible device, and the GPU-hours its budget needs at the stated MFU."""
    from harness.memory import GIB, fits, gpu_hours
    from harness.train.sizing import (architecture, budget_flops_bound, model_folders, peak_flops_of, predict_run,
                                      stated_device, visible_device)

    stated = stated_device(suite)
    device = stated or visible_device()
    cuda = device.name != "cpu"
    folders = model_folders(suite)
    hw = suite.hardware
    peak = peak_flops_of(device.name)
    hours = f"; GPU-hours at {hw.mfu:.0%} MFU of {device.name}'s {peak / 1e12:.0f} TFLOP/s bf16 peak, from the " \
            "budget at max_length tokens per sequence (an upper bound)" if stated and peak == peak else ""
    print(f"memory per device on {device.describe()}{' (hardware: in the suite)' if stated else ' (visible)'}{hours}")
    for spec in specs:
        try:
            prediction = predict_run(spec, suite, "cuda" if cuda else "cpu", folders.get(spec.model))
        except HarnessError as err:
            print(f"{spec.run_id:<12}  {spec.label():<28} ?: {err}")
            continue
        verdict = "fits" if fits(prediction, device) else "DOES NOT FIT"
        sharded_over = spec.train.distributed.processes if spec.trains else 1
        if sharded_over > 1:
            verdict += f" (FSDP over {sharded_over}: training {prediction.training_peak / GIB:.0f} GiB)"
        elif stated and hw.gpus > 1 and spec.trains and not spec.train.peft.enabled:  # what sharding would give
            sharded = predict_run(spec, suite, "cuda", folders.get(spec.model), shards=hw.gpus)
            verdict += (f" ({sharded.peak / GIB:.0f} GiB with train.distributed={{strategy: fsdp, "
                        f"gpus: {hw.gpus}}})")
        gpu_time = ""
        if hours and spec.trains:
            flops = budget_flops_bound(spec, architecture(spec.model, folders.get(spec.model)))
            gpu_time = f"; <= {gpu_hours(flops, peak, hw.mfu):,.0f} GPU-hours"
        print(f"{spec.run_id:<12}  {spec.label():<28} {verdict:<12} {prediction.describe()}{gpu_time}")


def _suite_file(text: str) -> Path | None:
    """The suite file a command was given, if it was given one (else a suite name)."""
    return Path(text) if Path(text).suffix in (".yaml", ".yml") else None


def _suite_name(text: str) -> str:
    """A suite given as a name or as its file: the name."""
    path = _suite_file(text)
    if path is not None:
        from harness.suite import load_suite

        return load_suite(path).name
    from harness.names import check_name

    return check_name(text, "suite")


def _results_folder(args) -> Path:
    """--results as a local folder: a results folder, a published dataset's folder, or a Hub
    dataset (hf://datasets/OWNER/NAME) downloaded into the cache."""
    from harness.cache import cache_root
    from harness.report.published import local_results

    return local_results(args.results, cache_root() / "hub")


def cmd_report(args) -> int:
    from harness.report import write_suite_report

    name = _suite_name(args.suite)
    path = write_suite_report(_results_folder(args), name, Path(args.reports) / f"{name}.html",
                              suite_file=_suite_file(args.suite))
    print(f"report: {path}")
    return 0


def cmd_results(args) -> int:
    from harness.results import ResultStore
    from harness.suite import run_suggestion

    store = ResultStore(Path(args.results), _suite_name(args.suite))
    runs = store.run_statuses()
    if runs.empty:
        raise HarnessError(f"{store.folder}: no runs stored; "
                           f"{run_suggestion(store.suite, _suite_file(args.suite))}")
    for r in runs.itertuples():
        seed = "" if r.seed is None or r.seed != r.seed else f"seed={int(r.seed)}"
        print(f"{r.run_id}  {r.label:<28} {seed:<7} {r.status:<11} {r.error}".rstrip())
    counts = runs["status"].value_counts()
    print(", ".join(f"{n} {status}" for status, n in counts.items()))
    return 0


def cmd_rank(args) -> int:
    from harness.commands.rank import rank_new_methods

    _quiet_libraries()
    return rank_new_methods(list(args.plugins), args.suite, overrides=args.set,
                            results_root=Path(args.results), reports_root=Path(args.reports),
                            allow_large_budget=args.allow_large_budget)


def cmd_leaderboard(args) -> int:
    from harness.report import write_leaderboard

    print(f"leaderboard: {write_leaderboard(_results_folder(args), Path(args.reports))}")
    return 0


def cmd_publish(args) -> int:
    from harness.report.dataset import publish_suite

    name = _suite_name(args.suite)
    done = publish_suite(Path(args.results), name, args.to, suite_file=_suite_file(args.suite) or Path("suites") / f"{name}.yaml",
                         tables_only=args.tables_only, full_results=args.full_results)
    what = "tables" if args.tables_only else f"{done.runs} runs"
    print(f"published {name} ({what}) to {done.target} as snapshot {done.snapshot}")
    return 0


def cmd_evaluate(args) -> int:
    if not args.rescore:
        raise HarnessError("harness evaluate: only --rescore is supported (trained weights are not "
                           "stored; `harness run` evaluates new runs); add --rescore")
    from harness.evaluate.rescore import rescore_suite

    name = _suite_name(args.suite)
    _quiet_libraries()
    count = rescore_suite(Path(args.results), name, reward_model=args.reward_model)
    print(f"{name}: {count} runs rescored")
    if count and not args.no_report:
        _write_report(Path(args.results), name, Path(args.reports))
    return 0


def cmd_verify(args) -> int:
    from harness.suite import load_suite
    from harness.commands.verify import BIT_IDENTICAL, FAILED, OUTSIDE, verify_suite

    path = Path(args.suite)
    if path.suffix not in (".yaml", ".yml") and not path.exists():
        path = Path("suites") / f"{args.suite}.yaml"
    suite = load_suite(path, args.set)
    _quiet_libraries()
    verdicts = verify_suite(suite, Path(args.results), runs=args.runs)
    bad = [v for v in verdicts if v.outcome in (OUTSIDE, FAILED)]
    print(f"{suite.name}: {len(verdicts) - len(bad)} of {len(verdicts)} reruns reproduce the stored results"
          + (" bit for bit" if all(v.outcome == BIT_IDENTICAL for v in verdicts) else ""))
    return EXIT_RUN_FAILED if bad else 0


def cmd_methods(args) -> int:
    from harness.methods import render_methods
    from harness.plugins import load_plugins

    load_plugins(args.plugins, base=Path.cwd())  # installed entry points too; each loss checked
    print(render_methods(as_json=args.json))
    return 0


def cmd_sandbox(args) -> int:
    from harness.sandbox.world import SandboxConfig, load_or_build_sandbox
    from harness.suite import load_suite

    settings = load_suite(args.suite).sandbox if args.suite else {}
    config = SandboxConfig.from_dict(settings, args.suite or "sandbox")
    if args.action == "build":
        _quiet_libraries()
        sandbox, _ = load_or_build_sandbox(config, verbose=not args.json)
        from harness.evaluate.sandbox_tasks import score_starts

        score_starts(sandbox)  # the starts on the capability categories, once per world
    else:
        from harness.sandbox.world import find_sandbox

        sandbox = find_sandbox(config)
        if sandbox is None:
            raise HarnessError(f"sandbox {config.key()} is not built; run `harness sandbox build`")
    import json

    from harness.sandbox.summary import format_summary

    print(json.dumps(sandbox.summary(), indent=2) if args.json else format_summary(sandbox.summary()))
    return 0


COMMANDS = {
    "run": cmd_run,
    "plan": cmd_plan,
    "report": cmd_report,
    "results": cmd_results,
    "rank": cmd_rank,
    "leaderboard": cmd_leaderboard,
    "publish": cmd_publish,
    "evaluate": cmd_evaluate,
    "verify": cmd_verify,
    "methods": cmd_methods,
    "sandbox": cmd_sandbox,
    "prepare": cli_scale.cmd_prepare,
    "submit": lambda args: cli_scale.cmd_submit(args, _write_report),
}


if __name__ == "__main__":
    sys.exit(main())
