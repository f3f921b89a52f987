"""Theorem 1's experiment: the dense FreeNet against every layered topology over k neurons.

Theorem 1 (paper, section 4) claims functions realisable by a FreeNet over k neurons and by no
other topology over k neurons. For each task (:mod:`freenets.experiments.expressivity_tasks`) and
each k from 1 up to the task's cap, one batch trains ``restarts`` random starts of the dense
FreeNet (``freenet``) and of every one of the ``2**(k-1)`` layered splits of k neurons
(``layered:2-1-3``...), all as masks on one substrate
(:mod:`freenets.experiments.expressivity_nets`). The hand-set constructions
(:mod:`freenets.experiments.expressivity_constructions`: ``freenet-constructed``,
``layered-constructed:...``) are evaluated alongside: they say what
the topologies can EXPRESS; the restarts say what TRAINING finds.

A task stops growing k once both the FreeNet and some layered split have been solved by
training (the smallest k of each is then known). Every (task, k) batch draws from its own
``torch.Generator``, seeded from the run's seed, the task and k, so a run is reproducible and a
cell's numbers do not depend on which other cells ran.

``DIR/expressivity.csv`` holds one row per (task, k, topology); it is rewritten atomically after
every cell, so a long run shows its progress and a killed one leaves complete rows only.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from freenets import __version__, atomic
from freenets.errors import ConfigError
from freenets.experiments.expressivity_constructions import constructions, score
from freenets.experiments.expressivity_nets import (
    NetBatch,
    TrainSettings,
    solved,
    topologies,
    train,
)
from freenets.experiments.expressivity_tasks import (
    REGRESSION_TOLERANCE,
    Task,
    parity_task,
    polynomial_task,
    sawtooth_task,
)

COLUMNS = ("task", "k", "topology", "restarts", "solved", "best_accuracy", "best_loss")
CSV_NAME = "expressivity.csv"
CONFIG_NAME = "expressivity.json"


@dataclass(frozen=True)
class ExpressivityConfig:
    """The grid and the training of one run (serialised to ``DIR/expressivity.json``).

    Attributes
    ----------
    parity_bits, sawtooth_levels, polynomial_degrees : tuple of int
        The tasks: parity of N bits, ``T^m``, the degree-d polynomial.
    max_neurons : int
        No task tries more neurons than this (each task also has its own cap).
    restarts : int
        Random starts per topology and k.
    steps, learning_rate : int, float
        Full-batch Adam steps and initial step size (cosine decay to 0).
    bias_bound : float
        Biases start uniform in ``[-bias_bound, bias_bound]``.
    seed : int
        Seeds every cell's generator.
    stop_when_solved : bool
        Stop a task's k loop once the FreeNet and a layered split have both been solved.
    threads : int
        torch threads during the run (restored after); the batches are small, and one thread
        avoids waiting on a busy second core.
    """

    parity_bits: tuple[int, ...] = (3, 4, 5, 6, 7, 8)
    sawtooth_levels: tuple[int, ...] = (1, 2, 3, 4)
    polynomial_degrees: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    max_neurons: int = 8
    restarts: int = 16
    steps: int = 3000
    learning_rate: float = 0.02
    bias_bound: float = 0.5
    seed: int = 0
    stop_when_solved: bool = True
    threads: int = 1

    def validate(self) -> None:
        """Raise :class:`ConfigError` for a value out of range."""
        for name in ("parity_bits", "sawtooth_levels", "polynomial_degrees"):
            values = getattr(self, name)
            if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
                raise ConfigError(f"{name} must be positive integers, got {values}")
        lows = {"max_neurons": 1, "restarts": 1, "steps": 1, "threads": 1, "seed": 0}
        for name, low in lows.items():
            if getattr(self, name) < low:
                raise ConfigError(f"{name} must be at least {low}, got {getattr(self, name)}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ConfigError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.max_neurons > 12:
            # 2**(k-1) layered splits: 2048 topologies at k = 12 already
            raise ConfigError(f"max_neurons must be at most 12, got {self.max_neurons}")

    def tasks(self) -> list[Task]:
        """Every task of the grid, parity first."""
        return (
            [parity_task(n) for n in self.parity_bits]
            + [sawtooth_task(m) for m in self.sawtooth_levels]
            + [polynomial_task(d) for d in self.polynomial_degrees]
        )


FULL = ExpressivityConfig()
QUICK = ExpressivityConfig(
    parity_bits=(3, 4, 5),
    sawtooth_levels=(1, 2, 3),
    polynomial_degrees=(1, 2, 3),
    max_neurons=6,
    restarts=8,
    steps=1500,
)


@dataclass(frozen=True)
class Row:
    """One line of ``expressivity.csv``; ``best_accuracy`` is ``nan`` for regression."""

    task: str
    k: int
    topology: str
    restarts: int
    solved: int
    best_accuracy: float
    best_loss: float

    @property
    def kind(self) -> str:
        """``freenet``, ``layered``, ``freenet-constructed`` or ``layered-constructed``."""
        return self.topology.split(":", 1)[0]


def _cell_generator(seed: int, task: str, k: int) -> torch.Generator:
    # crc32 rather than hash(): stable across processes and Python versions
    return torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(f"{task}/{k}".encode()))


def train_cell(task: Task, k: int, config: ExpressivityConfig) -> list[Row]:
    """Train ``config.restarts`` starts of the FreeNet and of every layered split of k neurons
    on ``task``, in one batch; one row per topology."""
    wirings = topologies(k)
    restarts = config.restarts
    nets = NetBatch.initialise(
        [topology for topology in wirings for _ in range(restarts)],
        task.inputs.shape[1],
        generator=_cell_generator(config.seed, task.name, k),
        bias_bound=config.bias_bound,
    )
    settings = TrainSettings(steps=config.steps, learning_rate=config.learning_rate)
    scores = train(nets, task.inputs, task.targets, task.kind, task.tolerance, settings)
    wins = solved(scores, task.tolerance).view(len(wirings), restarts).sum(dim=1)
    losses = scores.loss.view(len(wirings), restarts).min(dim=1).values
    accuracies = (
        scores.accuracy.view(len(wirings), restarts).max(dim=1).values
        if scores.accuracy is not None
        else None
    )
    return [
        Row(
            task.name,
            k,
            topology.name,
            restarts,
            int(wins[index]),
            float(accuracies[index]) if accuracies is not None else math.nan,
            float(losses[index]),
        )
        for index, topology in enumerate(wirings)
    ]


def construction_rows(task: Task, max_neurons: int) -> list[Row]:
    """One row per hand-set network of ``task`` (``restarts`` 1: one network, not trained)."""
    rows = []
    for construction in constructions(task, max_neurons):
        scores = score(construction, task)
        accuracy = float(scores.accuracy[0]) if scores.accuracy is not None else math.nan
        rows.append(
            Row(
                task.name,
                construction.n_neurons,
                construction.topology,
                1,
                int(solved(scores, task.tolerance)[0]),
                accuracy,
                float(scores.loss[0]),
            )
        )
    return rows


def _cell(value: float | int | str) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def format_rows(rows: Sequence[Row]) -> str:
    """The CSV text: :data:`COLUMNS`, then the rows by task, k, topology order as given."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([_cell(getattr(row, column)) for column in COLUMNS])
    return buffer.getvalue()


def read_rows(path: str | Path) -> list[Row]:
    """The rows of an ``expressivity.csv`` written by :func:`format_rows`."""
    with open(path, newline="", encoding="utf-8") as stream:
        reader = csv.DictReader(stream)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ValueError(f"{path}: expected the columns {','.join(COLUMNS)}")
        return [
            Row(
                record["task"],
                int(record["k"]),
                record["topology"],
                int(record["restarts"]),
                int(record["solved"]),
                float(record["best_accuracy"]) if record["best_accuracy"] else math.nan,
                float(record["best_loss"]),
            )
            for record in reader
        ]


@dataclass(frozen=True)
class Smallest:
    """The smallest k at which each kind solved a task; ``None`` where none did up to ``tried``.

    ``layered_topology`` names the layered split(s) that solved at ``layered``.
    """

    task: str
    tried: int
    freenet: int | None
    layered: int | None
    layered_topology: str
    freenet_constructed: int | None
    layered_constructed: int | None


def smallest_k(rows: Sequence[Row]) -> list[Smallest]:
    """Per task, in order of first appearance: the smallest solving k of each kind."""
    by_task: dict[str, list[Row]] = {}
    for row in rows:
        by_task.setdefault(row.task, []).append(row)
    table = []
    for task, task_rows in by_task.items():

        def first(kind: str, rows_of: list[Row] = task_rows) -> int | None:
            ks = [row.k for row in rows_of if row.kind == kind and row.solved > 0]
            return min(ks) if ks else None

        layered = first("layered")
        names = [
            row.topology
            for row in task_rows
            if row.kind == "layered" and row.k == layered and row.solved > 0
        ]
        trained = [row.k for row in task_rows if row.kind in ("freenet", "layered")]
        table.append(
            Smallest(
                task,
                max(trained, default=0),
                first("freenet"),
                layered,
                ", ".join(name.split(":", 1)[1] for name in names),
                first("freenet-constructed"),
                first("layered-constructed"),
            )
        )
    return table


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass(frozen=True)
class ExpressivityRun:
    """What :func:`run_expressivity` wrote and how long it took."""

    rows: list[Row]
    csv: Path
    seconds: float


def run_expressivity(
    config: ExpressivityConfig,
    out: str | Path,
    *,
    on_cell: Callable[[Task, int, list[Row], float], None] | None = None,
) -> ExpressivityRun:
    """Run the grid of ``config`` and write ``out/expressivity.csv`` and ``out/expressivity.json``.

    Parameters
    ----------
    config : ExpressivityConfig
        The grid, the training and the seed.
    out : str or Path
        Output directory (created); locked while the run writes to it.
    on_cell : callable, optional
        Called after each (task, k) with the task, k, its trained rows and the seconds it took.
    """
    config.validate()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rows: list[Row] = []
    with atomic.exclusive(out), _torch_threads(config.threads):
        for task in config.tasks():
            cap = min(task.max_neurons, config.max_neurons)
            built = construction_rows(task, cap)
            for k in range(1, cap + 1):
                began = time.perf_counter()
                trained = train_cell(task, k, config)
                rows.extend(trained)
                rows.extend(row for row in built if row.k == k)
                atomic.write_text(out / CSV_NAME, format_rows(rows))
                if on_cell is not None:
                    on_cell(task, k, trained, time.perf_counter() - began)
                kinds = {row.kind for row in rows if row.task == task.name and row.solved}
                if config.stop_when_solved and {"freenet", "layered"} <= kinds:
                    break
            # constructions larger than the last k tried still say what is expressible
            tried = max(row.k for row in rows if row.task == task.name)
            rows.extend(row for row in built if row.k > tried)
            atomic.write_text(out / CSV_NAME, format_rows(rows))
        seconds = time.perf_counter() - start
        meta = {
            "config": asdict(config),
            "tolerance": REGRESSION_TOLERANCE,
            "seconds": round(seconds, 1),
            "freenets": __version__,
            "torch": torch.__version__,
        }
        atomic.write_text(out / CONFIG_NAME, json.dumps(meta, indent=2) + "\n")
    return ExpressivityRun(rows, out / CSV_NAME, seconds)
