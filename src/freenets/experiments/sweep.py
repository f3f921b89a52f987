"""Sweeps: the grid of datasets x neurons x epsilons x densities x seeds x models.

The grid behind Table 2, the ablation and the density study. ``epsilons`` are FreeEvolve's
(its density follows epsilon): each is a point of the grid, with the models sized from that
FreeEvolve run. ``densities`` are the budgeted rules' (``set``, ``rigl``, ``random``,
``magnitude``): ``None`` sizes them from the FreeEvolve run of each epsilon (the default), a
number in (0, 1] is a fixed fraction of ``k(k-1)/2`` (:class:`~freenets.experiments.backends.Job`).

A job is one (dataset, neurons, seed, epsilon) and the runs of it still missing from
``results.csv`` (:func:`freenets.experiments.jobs.train_runs`): FreeEvolve and the FCNN matched to
its effective parameters train first (:func:`freenets.experiments.runs.train_run`, which writes
``OUT/runs/<dataset>-k<neurons>-s<seed>/``, with ``-e<epsilon>`` for the grid's later epsilons),
then every other run of the job, each sized from that FreeEvolve run or at its fixed budget, in a
subdirectory of it. Each model gives one row of ``results.csv``. The
default models are ``freeevolve`` and ``fcnn`` (the paper's Table 2); the ablation adds ``dense``,
``random``, ``magnitude``, ``set``, ``rigl`` and ``fcnn2`` (paper, Algorithm 1 with other rules).

Reliability:

- Only the driver writes ``results.csv``, one job at a time, by atomic replacement
  (:func:`freenets.experiments.results.append_job`). A rerun with the same ``out`` skips finished
  runs (a row for that dataset, neurons, seed and model), so a sweep killed at any moment (even by
  SIGKILL) loses no finished job and duplicates none, and a rerun with more ``models`` trains only
  those (reusing FreeEvolve's run directory).
- A run whose loss turns NaN/inf is recorded as ``failed`` with the reason; the sweep goes on.
- An exclusive lock on ``OUT`` itself (:func:`freenets.atomic.exclusive`, as on a run directory;
  no lock file) makes a second sweep on the same ``out`` refuse to start, naming the process that
  holds it; ``OUT/sweep.json`` makes a rerun with other training settings refuse too.
- Workers run with one torch thread each: results depend only on the seed, not on ``--jobs``
  or the backend (:mod:`freenets.experiments.backends`), and J workers do not fight over the
  cores.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from freenets import __version__, atomic
from freenets.data import dataset_names, is_known
from freenets.errors import Busy, ConfigError, DataError, SweepError
from freenets.experiments.backends import BACKENDS, Job, import_ray, run_local, run_ray
from freenets.experiments.jobs import BUDGETED
from freenets.experiments.results import (
    DEFAULT_MODELS,
    MODELS,
    ResultRow,
    append_job,
    format_results,
    read_results,
)
from freenets.experiments.table import write_tables
from freenets.training.config import TopologyConfig, TrainConfig

__all__ = ["SweepConfig", "SweepSummary", "run_sweep"]


@dataclass(frozen=True)
class SweepConfig:
    """The grid (datasets x neurons x epsilons x densities x seeds 0..seeds-1 x models).

    ``train.data.dataset``, ``train.model.n_neurons``, ``train.seed`` and ``train.topology.epsilon`` are replaced by
    each job's. ``models`` are names from :data:`MODELS`. ``epsilons`` are FreeEvolve's
    (default: ``train.topology.epsilon`` alone); ``densities`` the budgeted rules' edge budgets as a
    fraction of ``k(k-1)/2``, ``None`` for the matching FreeEvolve model's (the default).
    """

    datasets: tuple[str, ...]
    neurons: tuple[int, ...]
    seeds: int = 3
    train: TrainConfig = field(default_factory=TrainConfig)
    models: tuple[str, ...] = DEFAULT_MODELS
    densities: tuple[float | None, ...] = (None,)
    epsilons: tuple[float, ...] = ()

    @property
    def epsilon_axis(self) -> tuple[float, ...]:
        """The epsilons of the grid: ``epsilons``, else ``train.topology.epsilon``."""
        return tuple(dict.fromkeys(self.epsilons)) or (self.train.topology.epsilon,)

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first value out of range."""
        if not self.datasets:
            raise ConfigError("--datasets needs at least one dataset")
        unknown = [name for name in self.datasets if not is_known(name)]
        if unknown:
            raise ConfigError(
                f"unknown dataset {unknown[0]!r}; choose from: {', '.join(dataset_names())}, "
                "or give a path to a .npz or .csv file"
            )
        if self.train.data.target is not None and not all(
            name.lower().endswith(".csv") for name in self.datasets
        ):
            raise ConfigError("--target names the label column of .csv datasets only")
        # Runs are named by a file's stem: two files of one name would share their runs.
        named: dict[str, str] = {}
        for name in self.datasets:
            run = Job(name, 1, 0).run_dir
            if run in named and named[run] != name:
                raise ConfigError(
                    f"{named[run]!r} and {name!r} would share their run directories; "
                    "give the files different names"
                )
            named[run] = name
        if not self.neurons or min(self.neurons) < 1:
            raise ConfigError("--neurons needs one or more positive numbers of neurons")
        if self.seeds < 1:
            raise ConfigError(f"--seeds must be at least 1, got {self.seeds}")
        if not self.models:
            raise ConfigError("--models needs at least one model")
        unknown = [name for name in self.models if name not in MODELS]
        if unknown:
            raise ConfigError(f"unknown model {unknown[0]!r}; choose from: {', '.join(MODELS)}")
        if not self.densities:
            raise ConfigError("--density needs at least one value")
        for density in self.densities:
            if density is not None and not (
                isinstance(density, (int, float))
                and not isinstance(density, bool)
                and 0 < density <= 1
            ):
                raise ConfigError(f"--density must lie in (0, 1], got {density!r}")
        for epsilon in self.epsilon_axis:
            if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)):
                raise ConfigError(f"--epsilon must be a number, got {epsilon!r}")
            self.train.replace(n_neurons=self.neurons[0], epsilon=epsilon).validate()

    def jobs(self) -> list[Job]:
        """Every job, dataset by dataset (a worker then rarely switches datasets).

        Per dataset, neurons and seed: one job per epsilon (FreeEvolve and the models sized
        from it); the first also trains what does not depend on epsilon (the dense FreeNet, the
        budgeted rules at each fixed density).
        """
        models = tuple(dict.fromkeys(self.models))
        densities = tuple(dict.fromkeys(self.densities))
        jobs = []
        for dataset in dict.fromkeys(self.datasets):
            for k in dict.fromkeys(self.neurons):
                for seed in range(self.seeds):
                    for i, epsilon in enumerate(self.epsilon_axis):
                        runs = self._runs(models, densities, first=i == 0)
                        if runs:
                            jobs.append(Job(dataset, k, seed, runs, epsilon, named=i > 0))
        return jobs

    @staticmethod
    def _runs(
        models: tuple[str, ...], densities: tuple[float | None, ...], *, first: bool
    ) -> tuple[tuple[str, float | None], ...]:
        """One epsilon's ``(model, budget)`` runs, in the order of ``models``; what does not
        depend on epsilon (dense, fixed budgets) only with the ``first`` epsilon."""
        runs: list[tuple[str, float | None]] = []
        for model in models:
            if model in BUDGETED:
                runs += [(model, d) for d in densities if d is None or first]
            elif model != "dense" or first:
                runs.append((model, None))
        return tuple(runs)

    def settings(self) -> dict[str, Any]:
        """The training settings every job of one output directory must share."""
        shared = self.train.to_dict()
        # A sweep trains its models, not freenets train's one rule; epsilon is an axis.
        for per_job in ("dataset", "n_neurons", "seed", "data_dir", "rule", "device", "epsilon"):
            shared.pop(per_job)
        return shared


@dataclass(frozen=True)
class SweepSummary:
    """What a call of :func:`run_sweep` did, counted in jobs."""

    total: int
    skipped: int
    ran: int
    failed: int
    results: Path
    table: Path


@contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Hold the lock on ``out`` for the whole sweep, or raise :class:`SweepError`."""
    with ExitStack() as stack:
        try:
            stack.enter_context(atomic.exclusive(out))
        except Busy:
            pid = atomic.lock_holder(out)
            holder = f"pid {pid}" if pid is not None else "another process"
            raise SweepError(
                f"another sweep ({holder}) is writing to {out}; wait for it or use another --out"
            ) from None
        yield


def _check_settings(out: Path, config: SweepConfig) -> dict[str, Any]:
    """Record the sweep's settings in ``sweep.json``; refuse a rerun whose settings differ.

    Returns the settings found there before (empty for a new sweep).
    """
    path = out / "sweep.json"
    settings = config.settings()
    previous: dict[str, Any] = {}
    if path.exists():
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))["settings"]
            if not isinstance(previous, dict):
                raise TypeError(previous)
        except (ValueError, KeyError, TypeError):
            raise DataError(f"{path} is not a sweep's settings file; use another --out") from None
        # A setting added after the sweep was written had its default there.
        defaults = TrainConfig().to_dict()
        for key, value in settings.items():
            if previous.get(key, defaults.get(key)) != value:
                raise ConfigError(
                    f"{out} holds a sweep with {key}={previous.get(key)!r}, not {value!r}; "
                    "rerun it with the same settings or use another --out"
                )
    grid = {
        "datasets": list(config.datasets),
        "neurons": list(config.neurons),
        "epsilons": list(config.epsilon_axis),
        "densities": list(config.densities),
        "seeds": config.seeds,
        "models": list(config.models),
    }
    atomic.write_json(path, {"freenets": __version__, "settings": settings, "grid": grid})
    return previous


def _with_axes(rows: list[ResultRow], previous: dict[str, Any]) -> list[ResultRow] | None:
    """The rows of a ``results.csv`` written before epsilon and density were axes, given them.

    Such a sweep had one epsilon and at most one ``density`` (SET's and RigL's) among its
    settings: its FreeEvolve-sized rows get that epsilon, SET and RigL at that density get it as
    their budget. ``None`` when every row has its axes already (no rewrite needed).
    """

    def old(row: ResultRow) -> bool:
        return row.epsilon is None and row.budget is None and row.model != "dense"

    if not any(old(row) for row in rows):
        return None
    epsilon = float(previous.get("epsilon", TopologyConfig.epsilon))
    density = previous.get("density")
    updated = []
    for row in rows:
        if old(row):
            if density is not None and row.model in ("set", "rigl"):
                row = replace(row, budget=float(density))
            else:
                row = replace(row, epsilon=epsilon)
            if row.density is None and row.edges is not None and row.neurons > 1:
                row = replace(row, density=row.edges / (row.neurons * (row.neurons - 1) // 2))
        updated.append(row)
    return updated


def run_sweep(
    config: SweepConfig,
    out: str | Path,
    *,
    backend: str = "local",
    jobs: int = 1,
    address: str | None = None,
    show_progress: bool = True,
) -> SweepSummary:
    """Run every job of ``config`` not yet in ``out/results.csv``; write the tables.

    Parameters
    ----------
    config : SweepConfig
        The grid and the training settings.
    out : str or Path
        Output directory: ``results.csv``, ``table.md``, ``table.csv``, ``sweep.json``, ``runs/``.
    backend : {"local", "ray"}
        A pool of ``jobs`` local processes, or Ray tasks (``address`` of a cluster; without it a
        local Ray with ``jobs`` CPUs is started in-process).
    jobs : int
        Jobs run at once on this machine.
    show_progress : bool
        A tqdm bar of jobs done out of the grid's total, on stderr.

    Raises
    ------
    SweepError
        If another sweep holds ``out``, or ``backend="ray"`` and Ray is not installed.
    ConfigError
        If a setting is out of range, or ``out`` holds a sweep with other training settings.
    """
    config.validate()
    if backend not in BACKENDS:
        raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    if address is not None and backend != "ray":
        raise ConfigError("--address is for --backend ray")
    if backend == "ray":
        import_ray()  # fail before any work if the extra is missing
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.csv"
    with _locked(out):
        previous = _check_settings(out, config)
        rows = read_results(results)
        migrated = _with_axes(rows, previous)
        if migrated is not None:
            atomic.write_text(results, format_results(migrated))
            rows = migrated
        done = {row.run for row in rows}
        grid = config.jobs()
        pending = []
        for job in grid:
            missing = tuple(run for run in job.runs if job.run_key(*run) not in done)
            if missing:
                pending.append(replace(job, runs=missing))
        # Largest k first: the longest jobs start early and the pool's last jobs are short.
        pending.sort(key=lambda job: -job.neurons)
        ran = failed = 0
        if pending:
            # Workers get an absolute path: a Ray worker need not share the driver's directory.
            where = out.resolve()
            if backend == "ray":
                outcomes = run_ray(pending, config.train, where, jobs, address)
            else:
                outcomes = run_local(pending, config.train, where, jobs)
            progress = tqdm(
                total=len(grid),
                initial=len(grid) - len(pending),
                unit="job",
                desc="sweep",
                disable=not show_progress,
            )
            # closing(): an error here also stops the workers, through the backend's finally.
            with progress as bar, closing(outcomes):
                for job_rows in outcomes:
                    append_job(results, job_rows)
                    rows = read_results(results)
                    write_tables(out, rows)  # the tables always match results.csv
                    ran += 1
                    failed += not all(row.ok for row in job_rows)
                    bar.update(1)
        table, _ = write_tables(out, rows)
    return SweepSummary(len(grid), len(grid) - len(pending), ran, failed, results, table)
