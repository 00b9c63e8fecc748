"""The fast parts of scale-out: the shard partition, bad input of `run --shard` and `submit`
(one line, exit status 2), the shared-folder probe, Ray's resource requests (checked as task
options: no GPU here), and the prepare stage's exclusivity. The end-to-end runs under each
executor are in tests/test_executors.py."""

from __future__ import annotations

import shutil
import time

import pytest

from harness.errors import HarnessError
from harness.commands.scale import parse_shard
from harness.plan import deal, plan_suite, shard_ids
from harness.suite import load_suite


def _ids(n: int) -> list[str]:
    import hashlib

    return [hashlib.sha256(str(i).encode()).hexdigest()[:12] for i in range(n)]


@pytest.mark.parametrize("runs,n", [(1, 1), (3, 2), (94, 8), (5, 7)])
def test_shards_cover_the_plan_once_and_differ_by_at_most_one_run(runs, n):
    ids = _ids(runs)
    shards = [shard_ids(ids, k, n) for k in range(1, n + 1)]
    assert sorted(r for shard in shards for r in shard) == sorted(ids)  # every run exactly once
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert shard_ids(list(reversed(ids)), 1, n) == shards[0]  # independent of plan order
    assert [part for part in shards if part] == deal(ids, n)


def test_shard_golden():
    """Sorted ids a < b < c < d < e; 2 shards deal them a, c, e and b, d."""
    assert shard_ids(["c", "a", "e", "b", "d"], 1, 2) == ["a", "c", "e"]
    assert shard_ids(["c", "a", "e", "b", "d"], 2, 2) == ["b", "d"]


@pytest.mark.parametrize("text", ["3/2", "0/2", "1/0", "2", "a/b", "-1/2", ""])
def test_bad_shards(text):
    with pytest.raises(HarnessError, match="--shard"):
        parse_shard(text)
    assert parse_shard(" 2 / 3 ") == (2, 3)


def _one_line_exit_2(capsys, argv: list[str], *needles: str) -> str:
    from harness.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def test_bad_input_of_run_and_submit(tmp_path, tiny_suite, capsys):
    results = ["--results", str(tmp_path / "results")]
    _one_line_exit_2(capsys, ["run", str(tiny_suite), "--shard", "3/2", *results], "--shard 3/2")
    _one_line_exit_2(capsys, ["run", str(tiny_suite), "--wait-prepared", "5", *results], "--shard")
    _one_line_exit_2(capsys, ["submit", str(tiny_suite), "--executor", "kubernetes", *results],
                     "'kubernetes' is not an executor")
    _one_line_exit_2(capsys, ["submit", str(tiny_suite), "--executor", "ray", "--gpus-per-run", "1.5", *results],
                     "--gpus-per-run 1.5")
    _one_line_exit_2(capsys, ["submit", str(tiny_suite), "--executor", "slurm", "--cluster", "local",
                              "--gpus-per-run", "0.25", *results], "whole GPUs")
    _one_line_exit_2(capsys, ["submit", str(tiny_suite), "--executor", "slurm", "--cluster", "aws", *results],
                     "--cluster 'aws'")
    for bad, needle in ((["--timeout", "0"], "--timeout 0"), (["--timeout", "-5"], "--timeout -5"),
                        (["--timeout", "1"], "90 s warning"), (["--array-parallelism", "0"], "--array-parallelism 0"),
                        (["--array-parallelism", "-1"], "at least 1")):
        _one_line_exit_2(capsys, ["submit", str(tiny_suite), "--executor", "slurm", "--cluster", "local", *bad,
                                  *results], needle)
    if shutil.which("sbatch") is None:
        _one_line_exit_2(capsys, ["submit", str(tiny_suite), "--executor", "slurm", *results], "no SLURM cluster")
    assert not (tmp_path / "results").exists()  # refused before anything was written


def test_a_ray_address_that_does_not_answer(tmp_path, tiny_suite, capsys):
    pytest.importorskip("ray")
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    _one_line_exit_2(capsys, ["submit", str(tiny_suite), "--executor", "ray", "--address", f"127.0.0.1:{port}",
                              "--results", str(tmp_path / "results")], "no Ray cluster answers")
    assert time.monotonic() - started < 120  # not Ray's own minutes of retries
    _one_line_exit_2(capsys, ["submit", str(tiny_suite), "--executor", "ray", "--address", "nonsense"], "host:port")


def test_a_folder_not_shared_with_the_worker_is_named(tmp_path, tiny_suite):
    """The driver's probe files are missing on the worker's side (another host's /tmp): the task
    answers with one line naming the folder, and runs nothing."""
    from harness.executors.worker import Task, check_shared, new_probe, remove_probe, run_task

    results, cache, elsewhere = tmp_path / "results", tmp_path / "cache", tmp_path / "other-host-cache"
    token = new_probe(results, cache)
    check_shared(results, cache, token)  # shared: fine
    task = Task(suite_path=str(tiny_suite), overrides=(), results=str(results), cache=str(elsewhere),
                probe=token, run_ids=("x",))
    answer = run_task(task)
    assert "not shared" in answer["error"] and str(elsewhere) in answer["error"] and answer["runs"] == {}
    remove_probe(results, cache, token)
    with pytest.raises(HarnessError, match="results folder is not shared"):
        check_shared(results, cache, token)


def test_ray_resource_requests():
    """What a run's task asks Ray for: the fraction of a GPU as given (several runs share one GPU),
    and for a run of several GPUs a placement group of one bundle with all of them (one node)."""
    pytest.importorskip("ray")
    from harness.executors.ray_tasks import placement_bundles, task_options

    assert task_options(0.25, 1, 3) == {"num_cpus": 1, "num_gpus": 0.25, "max_retries": 3, "retry_exceptions": False}
    assert placement_bundles(0.25, 1) is None and placement_bundles(1, 2) is None
    assert placement_bundles(4, 8) == [{"GPU": 4.0, "CPU": 8.0}]


def test_a_sharded_run_asks_for_its_own_gpus():
    """A run with train.distributed asks the executor for its GPU count (more than --gpus-per-run);
    the start run, which evaluates only, for --gpus-per-run."""
    from harness.executors.submit import SubmitOptions, gpus_for

    suite = load_suite("suites/quickstart.yaml", ["train.distributed.strategy=fsdp", "train.distributed.gpus=4"])
    start, *trained = plan_suite(suite)
    options = SubmitOptions(executor="ray", gpus_per_run=1, cpus_per_run=2)
    assert gpus_for(start, options) == 1 and {gpus_for(s, options) for s in trained} == {4}
    assert gpus_for(trained[0], SubmitOptions(executor="ray", gpus_per_run=8, cpus_per_run=2)) == 8


def test_a_second_prepare_waits_for_the_first_and_never_builds(tiny_suite, monkeypatch):
    """While another worker holds the prepare lease, prepare_suite and a worker both wait for its
    marker (here in vain: the test holds the lease) and then fail with one line; neither builds."""
    import harness.prepared as prepared
    from harness.results.lease import try_acquire
    from harness.suite import load_suite

    suite = load_suite(tiny_suite)
    marker = prepared.marker_path(suite)
    marker.unlink(missing_ok=True)
    monkeypatch.setattr(prepared, "_build", lambda *a: pytest.fail("built while another worker prepares"))
    monkeypatch.setattr(prepared, "POLL_SECONDS", 0.05)
    holder = try_acquire(marker.with_suffix(".lock"))
    try:
        with pytest.raises(HarnessError, match="not prepared after waiting"):
            prepared.prepare_suite(suite, log=lambda *_: None, wait_seconds=0.3)
        with pytest.raises(HarnessError, match=r"run `harness prepare .*tiny.yaml` once"):
            prepared.require_prepared(suite, wait_seconds=0.0, log=lambda *_: None)
    finally:
        holder.release()


def test_a_failed_prepare_is_reported_to_waiting_workers(tiny_suite, monkeypatch):
    import harness.prepared as prepared
    from harness.suite import load_suite

    suite = load_suite(tiny_suite)
    marker = prepared.marker_path(suite)
    marker.unlink(missing_ok=True)

    def broken(*_):
        raise OSError("disk full")

    monkeypatch.setattr(prepared, "_build", broken)
    with pytest.raises(OSError):
        prepared.prepare_suite(suite, log=lambda *_: None)
    with pytest.raises(HarnessError, match="harness prepare` failed .*disk full"):
        prepared.require_prepared(suite, wait_seconds=600, log=lambda *_: None)  # fails at once, not in 600 s
    prepared._failure_path(marker).unlink()


def test_prepare_key_ignores_seeds_and_budget_but_not_the_methods(tiny_suite):
    from harness.prepared import prepare_key
    from harness.suite import load_suite

    base = prepare_key(load_suite(tiny_suite))
    assert prepare_key(load_suite(tiny_suite, ["budget.value=3e8", "train.lr=1e-4"])) == base
    assert prepare_key(load_suite(tiny_suite, ["evaluate.prompts=4"])) != base


def test_gpus_read_from_sinfo_gres():
    from harness.executors.slurm_cluster import node_gpus

    assert [node_gpus(g) for g in ("(null)", "gpu:4", "gpu:a100:2(S:0-1)", "gpu:1,shard:8", "shard:8")] == [0, 4, 2, 1, 0]


def test_partition_and_gpus_checked_against_sinfo(monkeypatch):
    """What `sinfo -h -o %P|%G` answers decides: an unknown partition lists the known ones, a GPU
    request on a partition without GPUs (or with fewer per node) is refused, in one line."""
    from harness.executors import slurm_cluster

    monkeypatch.setattr(slurm_cluster, "_query", lambda command: "debug*|(null)|2\ngpu|gpu:a100:4|64\ngpu|gpu:2|16\n")
    slurm_cluster.check_partition(None, 0)
    slurm_cluster.check_partition("gpu", 4)
    with pytest.raises(HarnessError, match=r"--partition nope: no such SLURM partition \(sinfo lists: debug, gpu\)"):
        slurm_cluster.check_partition("nope", 0)
    with pytest.raises(HarnessError, match="partition debug has no GPUs"):
        slurm_cluster.check_partition(None, 1)
    with pytest.raises(HarnessError, match="partition gpu has at most 4 GPUs per node"):
        slurm_cluster.check_partition("gpu", 8)
    slurm_cluster.check_partition("gpu", 4, 64)
    with pytest.raises(HarnessError, match="a task asks for 4 CPUs but the nodes of partition debug have at most 2"):
        slurm_cluster.check_partition(None, 0, 4)


def test_job_states_from_squeue(monkeypatch):
    """A job the queue lists keeps its state (a pending one whose dependency can never be met is
    not live); a job it no longer lists is gone."""
    from harness.executors import slurm_cluster

    queue = "7_0|RUNNING|None\n7_1|PENDING|DependencyNeverSatisfied\n7_2|REQUEUED|None\n8|FAILED|NonZeroExitCode\n"
    monkeypatch.setattr(slurm_cluster, "_query", lambda command: queue)
    states = slurm_cluster.job_states(["7_0", "7_1", "7_2", "8", "9"])
    assert [states[j].live for j in ("7_0", "7_1", "7_2", "8", "9")] == [True, False, True, False, False]
    assert states["9"].state == "GONE" and states["8"].reason == "NonZeroExitCode"


def test_the_driver_notices_a_task_that_ended_without_an_answer(tmp_path, monkeypatch):
    """Without accounting (no sacct), a task killed on SLURM leaves no answer: once the queue shows
    it ended, the driver reports it lost (naming its runs) instead of waiting for an answer forever;
    a task that answered is absorbed."""
    pytest.importorskip("submitit")
    from types import SimpleNamespace

    from harness.executors import slurm, slurm_cluster
    from harness.executors.submit import SubmitOptions

    answered = tmp_path / "answer.pkl"
    import submitit

    submitit.core.utils.cloudpickle_dump(("success", {"runs": {"r1": "ok"}, "failed": {}, "error": None}), answered)

    class Job(SimpleNamespace):
        def result(self):
            return submitit.core.utils.pickle_load(self.paths.result_pickle)[1]

    jobs = [Job(job_id="5_0", paths=SimpleNamespace(result_pickle=answered, stderr=tmp_path / "5_0.err")),
            Job(job_id="5_1", paths=SimpleNamespace(result_pickle=tmp_path / "none.pkl", stderr=tmp_path / "5_1.err"))]
    tasks = [SimpleNamespace(label="r1"), SimpleNamespace(label="r2")]
    monkeypatch.setattr(slurm_cluster, "job_states", lambda ids: {i: slurm_cluster.JobState("FAILED", "NonZeroExitCode")
                                                                   for i in ids})
    monkeypatch.setattr(slurm, "POLL_SECONDS", 0.01)
    monkeypatch.setattr(slurm, "LOST_AFTER_S", 0.05)
    monkeypatch.setattr(slurm, "progress_line", lambda submission: "")
    started = time.monotonic()
    outcome = slurm._follow(None, jobs, tasks, None, SubmitOptions(executor="slurm"), log=lambda *_: None)
    assert time.monotonic() - started < 5
    assert outcome.crashed == [f"r2: job 5_1 ended FAILED (NonZeroExitCode) without an answer; its log: {tmp_path}/5_1.err"]
    assert not outcome.errors and not outcome.failed
