"""Sweeps: resume after SIGKILL, the lock, failed runs, and the same results whatever the backend.

Every sweep here is tiny (digits, a few neurons, one epoch); worker processes are real.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from freenets.errors import ConfigError
from freenets.experiments import sweep
from freenets.experiments.backends import Job
from freenets.experiments.results import COLUMNS, finished_jobs, read_results
from freenets.experiments.sweep import SweepConfig, run_sweep
from freenets.experiments.table import PAPER_DATASETS, PAPER_NEURONS, paper_table2
from freenets.training.config import TrainConfig

TIMEOUT = 300  # seconds; generous, the machine running the tests may be busy
TINY = ["--datasets", "digits", "--epochs", "1", "--quiet"]


def sweep_command(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "freenets.cli", "sweep", *TINY, "--out", str(out), *extra]


def wait_for(condition, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"the sweep exited ({process.returncode}) before {what}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (Linux ``/proc``), zombies excluded."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended while we looked
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def comparable(rows):
    """Rows without their wall-clock time, in grid order."""
    return sorted(
        (dataclasses.replace(row, seconds=None) for row in rows),
        key=lambda row: (row.dataset, row.neurons, row.seed, row.model),
    )


def test_resume_after_sigkill_loses_and_duplicates_nothing(tmp_path):
    out = tmp_path / "sweep"
    command = sweep_command(out, "--neurons", "3,4,5", "--seeds", "2")
    grid = {("digits", k, seed) for k in (3, 4, 5) for seed in range(2)}
    results = out / "results.csv"

    # Killed early: right after it took the lock, before (or while) its first job runs.
    first = subprocess.Popen(command)
    wait_for(lambda: (out / "sweep.json").exists(), first, "the lock")  # written under the lock
    first.send_signal(signal.SIGKILL)
    first.wait(TIMEOUT)

    # Killed mid-sweep, as soon as a job is in results.csv.
    second = subprocess.Popen(command)
    wait_for(lambda: results.exists() and len(read_results(results)) >= 2, second, "a result")
    workers = children(second.pid)  # the pool's worker, and multiprocessing's resource tracker
    commands = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in workers]
    assert sum(b"spawn_main" in command for command in commands) == 1  # --jobs 1
    second.send_signal(signal.SIGKILL)
    second.wait(TIMEOUT)
    # Its workers die with it (no orphan keeps training into a run directory).
    deadline = time.monotonic() + TIMEOUT
    while any(Path(f"/proc/{pid}").exists() for pid in workers):
        assert time.monotonic() < deadline, "workers outlived their killed sweep"
        time.sleep(0.1)
    before = read_results(results)
    assert before and len(before) % 2 == 0 and len(finished_jobs(before)) == len(before) // 2
    assert len(before) < 2 * len(grid), "the sweep finished before it could be killed"

    # The rerun resumes: it keeps every finished row as it was and adds only the rest.
    assert subprocess.run(command, timeout=TIMEOUT).returncode == 0
    after = read_results(results)
    assert len(after) == 2 * len(grid)
    assert finished_jobs(after) == grid
    assert len({(r.dataset, r.neurons, r.seed, r.model) for r in after}) == len(after)
    assert after[: len(before)] == before  # same rows, same timings: they were not rerun
    assert all(row.ok for row in after)
    for job in grid:
        assert (out / Job(*job).run_dir / "summary.json").exists()
    # A rerun of a finished sweep runs nothing and changes nothing.
    summary = run_sweep(
        SweepConfig(("digits",), (3, 4, 5), 2, TrainConfig.of(epochs=1)), out, show_progress=False
    )
    assert (summary.total, summary.skipped, summary.ran) == (6, 6, 0)
    assert read_results(results) == after


def test_same_results_with_one_or_two_jobs(tmp_path):
    config = SweepConfig(("digits",), (4, 6), seeds=2, train=TrainConfig.of(epochs=1))
    one = run_sweep(config, tmp_path / "one", jobs=1, show_progress=False)
    two = run_sweep(config, tmp_path / "two", jobs=2, show_progress=False)
    assert (one.ran, two.ran, one.failed) == (4, 4, 0)
    rows_one, rows_two = read_results(one.results), read_results(two.results)
    assert len(rows_one) == 8
    assert comparable(rows_one) == comparable(rows_two)
    # Seeds differ from each other, so the comparison above is not trivially true.
    assert len({row.test_accuracy for row in rows_one if row.model == "freeevolve"}) > 1
    assert one.table.read_text() == two.table.read_text()


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_an_error_in_the_driver_stops_every_worker(tmp_path, monkeypatch, error):
    """A failed write of results.csv, or Ctrl-C, in the driver: no worker is left running."""
    seen: list[int] = []

    def failing_append(path, rows):
        seen.extend(child.pid for child in multiprocessing.active_children())
        raise error

    monkeypatch.setattr(sweep, "append_job", failing_append)
    # k=3 ends within a second or two; k=400 trains for seconds more, so it is still running.
    config = SweepConfig(("digits",), (3, 400), seeds=1, train=TrainConfig.of(epochs=2))
    with pytest.raises(type(error)):
        run_sweep(config, tmp_path, jobs=2, show_progress=False)
    assert len(seen) == 2  # both workers were alive when the first job's rows came back
    assert all(ended(pid) for pid in seen)
    assert multiprocessing.active_children() == []
    assert (tmp_path / "runs/digits-k3-s0/summary.json").exists()
    # The job still running was killed, not waited for: it started and never finished.
    assert (tmp_path / "runs/digits-k400-s0/config.json").exists()
    assert not (tmp_path / "runs/digits-k400-s0/summary.json").exists()
    assert not (tmp_path / "results.csv").exists()


def ended(pid: int) -> bool:
    """Whether process ``pid`` has ended (it is reaped, or a zombie)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_second_sweep_on_the_same_out_refuses(tmp_path, run_cli):
    out = tmp_path / "sweep"
    command = sweep_command(out, "--neurons", "3,4", "--seeds", "2")
    running = subprocess.Popen(command)
    wait_for(lambda: (out / "sweep.json").exists(), running, "the lock")  # written under it
    refused = run_cli(["sweep", *TINY, "--neurons", "3,4", "--seeds", "2", "--out", str(out)])
    assert refused.code == 1
    assert refused.one_error_line(f"another sweep (pid {running.pid}) is writing to {out}")
    assert running.wait(TIMEOUT) == 0
    assert not [path for path in out.iterdir() if "lock" in path.name]  # the lock left no file
    rows = read_results(out / "results.csv")
    assert len(rows) == 8 and len({(r.neurons, r.seed, r.model) for r in rows}) == 8
    # Once the first sweep is done the lock is free again, and a larger grid extends the sweep.
    assert (
        run_cli(["sweep", *TINY, "--neurons", "3,4,5", "--seeds", "2", "--out", str(out)]).code == 0
    )
    extended = read_results(out / "results.csv")
    assert extended[:8] == rows
    assert finished_jobs(extended) == {("digits", k, s) for k in (3, 4, 5) for s in range(2)}


def test_diverged_runs_are_failed_rows_and_the_sweep_goes_on(tmp_path, run_cli):
    out = tmp_path / "sweep"
    # An absurd step size makes the loss NaN in the first epoch of every run.
    args = ["sweep", *TINY, "--neurons", "3,4", "--seeds", "1", "--lr", "1e30", "--out", str(out)]
    first = run_cli(args)
    assert first.code == 0 and "2 run, 2 failed" in first.out
    rows = read_results(out / "results.csv")
    assert len(rows) == 4
    for row in rows:
        assert row.status == "failed"
        assert "training loss became nan" in row.reason
        assert row.test_accuracy is None and row.val_accuracy is None and row.params is None
    assert "became nan" in (out / "runs/digits-k3-s0/failed.json").read_text()
    table = (out / "table.md").read_text()
    assert "| digits | 3 | failed | failed |" in table
    assert "## Failed runs (4)" in table
    # Failed jobs are finished: a rerun does not train them again.
    again = run_cli(args)
    assert again.code == 0 and "2 already done, 0 run" in again.out
    # A rerun with other training settings would mix two sweeps in one table: it refuses.
    other = run_cli([*args, "--batch-size", "7"])
    assert other.code == 2 and other.one_error_line("holds a sweep with batch_size=128, not 7")
    assert read_results(out / "results.csv") == rows


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--neurons", "3"], "give --datasets and --neurons, or --paper"),
        (["--paper", "--datasets", "digits"], "--paper sets the datasets and neurons"),
        (["--datasets", "digits", "--neurons", "3,x"], "expected comma-separated integers"),
        (["--datasets", "nope", "--neurons", "3"], "unknown dataset 'nope'"),
        (["--datasets", "digits", "--neurons", "3", "--seeds", "0"], "--seeds must be at least 1"),
        (["--datasets", "digits", "--neurons", "3", "--jobs", "0"], "--jobs must be at least 1"),
        (["--datasets", "digits", "--neurons", "3", "--address", "x:1"], "--address is for"),
    ],
)
def test_usage_errors_are_one_line(tmp_path, run_cli, args, message):
    result = run_cli(["sweep", *args, "--out", str(tmp_path / "out")])
    assert result.code == 2 and result.one_error_line(message), result.err
    assert not (tmp_path / "out").exists()


def test_missing_ray_is_one_clear_line(tmp_path, run_cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    args = ["sweep", *TINY, "--neurons", "3", "--seeds", "1", "--backend", "ray"]
    result = run_cli([*args, "--out", str(tmp_path / "out")])
    assert result.code == 1
    assert result.err == (
        "freenets: error: --backend ray needs Ray, which is not installed: "
        "pip install 'freenets[ray]'\n"
    )


def test_paper_grid_is_table_2():
    config = SweepConfig(PAPER_DATASETS, PAPER_NEURONS, seeds=2)
    jobs = config.jobs()
    assert len(jobs) == 3 * 10 * 2
    assert {(job.dataset, job.neurons) for job in jobs} == {
        (dataset, k) for dataset, k, _ in paper_table2()
    }


def test_results_columns_are_the_documented_schema():
    assert ",".join(COLUMNS) == (
        "dataset,neurons,seed,model,status,reason,test_accuracy,val_accuracy,params,edges,"
        "hidden,best_epoch,seconds,run_dir,epsilon,budget,density"
    )


def test_invalid_config_is_rejected():
    with pytest.raises(ConfigError, match="--neurons"):
        SweepConfig(("digits",), (0,)).validate()
    with pytest.raises(ConfigError, match="--epochs"):
        SweepConfig(("digits",), (3,), train=TrainConfig.of(epochs=0)).validate()


@pytest.mark.slow
def test_ray_backend_gives_the_local_results(tmp_path):
    pytest.importorskip("ray")
    config = SweepConfig(("digits",), (4,), seeds=2, train=TrainConfig.of(epochs=1))
    local = run_sweep(config, tmp_path / "local", jobs=2, show_progress=False)
    remote = run_sweep(config, tmp_path / "ray", backend="ray", jobs=2, show_progress=False)
    assert remote.ran == 2 and remote.failed == 0
    assert comparable(read_results(remote.results)) == comparable(read_results(local.results))
    assert (tmp_path / "ray/runs/digits-k4-s1/summary.json").exists()


def test_a_sweep_over_a_users_csv_file(tmp_path, run_cli, monkeypatch):
    rows = ["height,species,width"] + [
        f"{i % 7 + 3 * (i % 2)},{'ab'[i % 2]},{(i % 5) * 0.5 + (i % 2)}" for i in range(80)
    ]
    (tmp_path / "plants.csv").write_text("\n".join(rows) + "\n")
    monkeypatch.chdir(tmp_path)  # a relative path, resolved as freenets train resolves it
    argv = ["sweep", "--datasets", "plants.csv", "--target", "species", "--neurons", "4"]
    argv += ["--seeds", "2", "--epochs", "2", "--models", "freeevolve,fcnn,dense"]
    result = run_cli([*argv, "--out", "out", "--quiet"])
    assert result.code == 0, result.err
    found = read_results(tmp_path / "out" / "results.csv")
    assert {(row.seed, row.model) for row in found} == {
        (seed, model) for seed in range(2) for model in ("freeevolve", "fcnn", "dense")
    }
    assert all(row.ok and row.dataset == str(tmp_path / "plants.csv") for row in found)
    assert (tmp_path / "out" / "runs" / "plants-k4-s0" / "dense" / "summary.json").is_file()
    again = run_cli([*argv, "--out", "out", "--quiet"])  # resumes: nothing left to train
    assert again.code == 0 and "0 run" in again.out
    bad = run_cli(
        ["sweep", "--datasets", "digits", "--target", "x", "--neurons", "3", "--out", "o"]
    )
    assert bad.code == 2 and bad.one_error_line("--target names the label column")


def test_two_data_files_of_one_name_are_refused(tmp_path, run_cli):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "plants.csv").write_text("x,label\n1,0\n2,1\n")
    argv = ["sweep", "--datasets", f"{tmp_path}/a/plants.csv,{tmp_path}/b/plants.csv"]
    result = run_cli([*argv, "--neurons", "3", "--out", str(tmp_path / "out")])
    assert result.code == 2 and result.one_error_line("would share their run directories")
