"""A sweep's jobs and the backends that run them: a local process pool or Ray tasks.

:func:`run_job` is what a worker does with one :class:`Job`: train its models
(:func:`freenets.experiments.jobs.train_runs`) and return one ``results.csv`` row each. The
backends run the pending jobs and yield each job's rows as it finishes; only the driver
(:func:`freenets.experiments.sweep.run_sweep`) writes them. Closing a backend's generator stops
the jobs still running (a local worker is killed, a Ray task cancelled), and a local worker dies
with its driver. Workers run with one torch thread each, so results depend only on the seed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Generator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from freenets.data import Dataset, load_dataset
from freenets.data.tabular import is_data_file
from freenets.errors import SweepError
from freenets.experiments.jobs import model_dir, train_runs
from freenets.experiments.results import DEFAULT_MODELS, ResultRow
from freenets.training.config import TopologyConfig, TrainConfig

BACKENDS = ("local", "ray")


@dataclass(frozen=True)
class Job:
    """One (dataset, neurons, seed, epsilon) of the grid and the runs to train for it.

    ``runs`` are ``(model, budget)`` pairs: ``budget`` is a budgeted rule's fixed density (a
    fraction of ``k(k-1)/2``), ``None`` for a model sized from FreeEvolve's run at ``epsilon``
    (the FCNNs, the budgeted rules matched to its edges or rounds) or needing none (dense).
    The runs that do not depend on epsilon (dense, fixed budgets) belong to the job of the
    grid's first epsilon only.
    """

    dataset: str
    neurons: int
    seed: int
    runs: tuple[tuple[str, float | None], ...] = tuple((m, None) for m in DEFAULT_MODELS)
    epsilon: float = TopologyConfig.epsilon
    # Whether the run directory names the epsilon: for every epsilon of the grid but the first.
    named: bool = False

    @property
    def key(self) -> tuple[str, int, int, float]:
        """``(dataset, neurons, seed, epsilon)``, which identifies the job."""
        return (self.dataset, self.neurons, self.seed, self.epsilon)

    def run_key(
        self, model: str, budget: float | None
    ) -> tuple[str, int, int, str, float | None, float | None]:
        """The :attr:`~freenets.experiments.results.ResultRow.run` of one of its runs."""
        return (
            self.dataset,
            self.neurons,
            self.seed,
            model,
            run_epsilon(self, model, budget),
            budget,
        )

    @property
    def run_dir(self) -> str:
        """The job's run directory, relative to the sweep's output directory.

        ``runs/<dataset>-k<neurons>-s<seed>``, with ``-e<epsilon>`` for every epsilon of the grid
        but its first (so a sweep of one epsilon is laid out as before epsilon was an axis, and
        adding epsilons to a sweep leaves its directories where they are).
        """
        # A data file's path would nest folders: its stem names the runs, as for freenets train.
        name = Path(self.dataset).stem if is_data_file(self.dataset) else self.dataset
        suffix = ""
        if self.named:
            suffix = f"-e{self.epsilon:g}"
        return f"runs/{name}-k{self.neurons}-s{self.seed}{suffix}"


def run_epsilon(job: Job, model: str, budget: float | None) -> float | None:
    """The epsilon a run depends on: the job's, or ``None`` for dense and fixed budgets."""
    return None if model == "dense" or budget is not None else job.epsilon


# One dataset per worker process: jobs come dataset by dataset, so each is loaded about once.
_loaded: dict[tuple[str, str | None, int | None, str | None], Dataset] = {}


def _dataset(
    name: str, data_dir: str | None, train_size: int | None = None, target: str | None = None
) -> Dataset:
    key = (name, data_dir, train_size, target)
    if key not in _loaded:
        _loaded.clear()
        _loaded[key] = load_dataset(name, data_dir, train_size=train_size, target=target)
    return _loaded[key]


def run_job(job: Job, train: TrainConfig, out: str | Path) -> list[ResultRow]:
    """Train one job's models, write their run directories, return one row per model.

    Parameters
    ----------
    job : Job
        The dataset, neurons, seed and models (``failed`` rows for those that diverged).
    train : TrainConfig
        Settings shared by the sweep; its dataset, neurons and seed are replaced by the job's.
    out : str or Path
        The sweep's output directory; the run directory is ``out / job.run_dir``.
    """
    config = train.replace(
        dataset=job.dataset, n_neurons=job.neurons, seed=job.seed, epsilon=job.epsilon
    )
    run_dir = Path(out) / job.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    dataset = _dataset(job.dataset, train.data.data_dir, train.data.train_size, train.data.target)
    outcomes = train_runs(config, dataset, run_dir, job.runs)
    possible = job.neurons * (job.neurons - 1) // 2
    rows = []
    for (model, budget), summary in outcomes.items():
        row = ResultRow(
            job.dataset,
            job.neurons,
            job.seed,
            model,
            status="failed",
            reason=str(summary.get("reason", "")),
            run_dir=model_dir(job.run_dir, model, budget),
            epsilon=run_epsilon(job, model, budget),
            budget=budget,
        )
        if summary["status"] == "ok":
            row = replace(
                row,
                status="ok",
                reason="",
                test_accuracy=summary["test_accuracy"],
                val_accuracy=summary["val_accuracy"],
                params=summary["params"],
                edges=summary.get("edges"),
                hidden=summary.get("hidden"),
                best_epoch=summary["best_epoch"],
                seconds=summary["seconds"],
                density=(
                    summary["edges"] / possible
                    if summary.get("edges") is not None and possible
                    else None
                ),
            )
        rows.append(row)
    return rows


def _init_worker(driver: int) -> None:
    """Set up a worker process: die with the driver (process ``driver``), one torch thread."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        # PR_SET_PDEATHSIG (1): a driver killed by SIGKILL takes its workers along, so no orphan
        # keeps training and writing into a run directory that a rerun is writing too.
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    if os.getppid() != driver:  # the driver died before the line above
        os._exit(1)
    import torch

    torch.set_num_threads(1)


def _ray_job(job: Job, train: TrainConfig, out: str) -> list[ResultRow]:
    import torch

    torch.set_num_threads(1)  # Ray reuses worker processes; this is cheap to repeat
    return run_job(job, train, out)


def run_local(
    pending: list[Job], train: TrainConfig, out: Path, jobs: int
) -> Generator[list[ResultRow], None, None]:
    """Run ``pending`` in a pool of ``jobs`` spawned processes, yielding rows as jobs finish."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn, not fork: a fresh interpreter per worker (no forked torch thread pools) that
    # inherits no file descriptors, so the sweep's lock dies with the driver.
    others = set(multiprocessing.active_children())
    pool = ProcessPoolExecutor(
        max_workers=min(jobs, len(pending)),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(os.getpid(),),
    )
    futures = [pool.submit(run_job, job, train, out) for job in pending]
    # The pool starts a worker per submitted job up to max_workers, and never replaces one, so
    # the children new since the pool was made are all its workers.
    workers = [child for child in multiprocessing.active_children() if child not in others]
    finished = False
    try:
        for future in as_completed(futures):
            yield future.result()
        finished = True
    finally:
        if not finished:
            for future in futures:
                future.cancel()
            # Stop the jobs still running rather than wait for them: their rows would be lost.
            kill = getattr(pool, "kill_workers", None)  # Python 3.14+
            if kill is not None:
                kill()
            else:
                for worker in workers:
                    worker.kill()  # SIGKILL; a worker that already ended is left alone
        pool.shutdown(wait=True, cancel_futures=True)


def import_ray() -> Any:
    """The ``ray`` module, or :class:`SweepError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise SweepError(
            "--backend ray needs Ray, which is not installed: pip install 'freenets[ray]'"
        ) from None
    return ray


def run_ray(
    pending: list[Job], train: TrainConfig, out: Path, jobs: int, address: str | None
) -> Generator[list[ResultRow], None, None]:
    """Run ``pending`` as Ray tasks (one CPU each), yielding rows as jobs finish."""
    import logging

    ray = import_ray()
    started = not ray.is_initialized()
    if started:
        options: dict[str, Any] = {"address": address} if address else {"num_cpus": jobs}
        ray.init(
            **options, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR
        )
    task = ray.remote(num_cpus=1)(_ray_job)
    waiting = [task.remote(job, train, str(out)) for job in pending]
    try:
        while waiting:
            done, waiting = ray.wait(waiting, num_returns=1)
            try:
                rows = ray.get(done[0])
            except ray.exceptions.RayTaskError as error:
                # Raise the job's own exception (e.g. DataError), not Ray's wrapper and traceback.
                cause = getattr(error, "cause", None)
                raise (cause if isinstance(cause, Exception) else error) from None
            yield rows
    finally:
        for ref in waiting:
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()
