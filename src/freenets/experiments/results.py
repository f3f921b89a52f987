"""A sweep's ``results.csv``: one row per dataset, neurons, seed and model (paper, Table 2).

The columns are :data:`COLUMNS`, the fields of :class:`ResultRow` in order: a run is identified
by its dataset, neurons, seed, model, ``epsilon`` (FreeEvolve's, for the models sized from its run;
empty for those that do not depend on it) and ``budget`` (the fixed density a budgeted rule was
given; empty where it matched FreeEvolve's edges); ``density`` is the density the FreeNet reached
(edges over ``k(k-1)/2``; empty for the layered baselines). A file written before the last three
columns existed reads with them empty (:func:`read_results`). Accuracies are
fractions in [0, 1]; a run whose training diverged has ``status`` ``failed``, its ``reason`` and
empty numbers. The file is only ever replaced whole (through :mod:`freenets.atomic`), so after a
crash it holds every job that finished before it and nothing half-written. A job's rows (every
model it trained for one dataset, neurons and seed) are written together. ``model`` is one of
:data:`MODELS`: FreeEvolve and its FCNN (Table 2), and the ablation's rules and baselines; a
file written before the ablation existed (only ``freeevolve`` and ``fcnn``) reads as it was.
"""

from __future__ import annotations

import csv
import io as text_io
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from freenets import atomic
from freenets.errors import DataError

# Every model a sweep can train: the FreeNet-based ones (one topology rule each), then the
# layered baselines. The order is the tables' and the figures' order.
FREENET_MODELS = ("freeevolve", "dense", "random", "magnitude", "set", "rigl")
MODELS = (*FREENET_MODELS, "fcnn", "fcnn2")
DEFAULT_MODELS = ("freeevolve", "fcnn")
STATUSES = ("ok", "failed")


@dataclass(frozen=True)
class ResultRow:
    """One model trained on one (dataset, neurons, seed); numbers are ``None`` when it failed."""

    dataset: str
    neurons: int
    seed: int
    model: str
    status: str
    reason: str = ""
    test_accuracy: float | None = None
    val_accuracy: float | None = None
    params: int | None = None
    edges: int | None = None
    hidden: int | None = None
    best_epoch: int | None = None
    seconds: float | None = None
    run_dir: str = ""
    epsilon: float | None = None
    budget: float | None = None
    density: float | None = None

    @property
    def job(self) -> tuple[str, int, int]:
        """The job this row belongs to: ``(dataset, neurons, seed)``."""
        return (self.dataset, self.neurons, self.seed)

    @property
    def run(self) -> tuple[str, int, int, str, float | None, float | None]:
        """The run this row records: ``(dataset, neurons, seed, model, epsilon, budget)``."""
        return (self.dataset, self.neurons, self.seed, self.model, self.epsilon, self.budget)

    @property
    def label(self) -> str:
        """The model as tables and figures name it: ``set d=0.1`` for a fixed budget."""
        return self.model if self.budget is None else f"{self.model} d={self.budget:g}"

    @property
    def ok(self) -> bool:
        """True when the run trained to the end (``status`` is ``ok``), not diverged."""
        return self.status == "ok"

    @property
    def measured_test_accuracy(self) -> float:
        """``test_accuracy`` of a row that has one (every ``ok`` row); ValueError otherwise."""
        if self.test_accuracy is None:
            raise ValueError(f"the {self.model} run {self.job} has no test accuracy")
        return self.test_accuracy


COLUMNS = tuple(field.name for field in fields(ResultRow))
# The columns of a file written before epsilon and density were axes of a sweep.
_COLUMNS_BEFORE_AXES = COLUMNS[: COLUMNS.index("epsilon")]
_INTEGERS = {"neurons", "seed", "params", "edges", "hidden", "best_epoch"}
_FLOATS = {"test_accuracy", "val_accuracy", "seconds", "epsilon", "budget", "density"}


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # round-trips exactly, so reruns compare equal
    # One physical line per row keeps the file readable with line-based tools.
    return str(value).replace("\r", " ").replace("\n", " ")


def _parse(record: dict[str, str], where: str) -> ResultRow:
    values: dict[str, object] = {}
    try:
        for name in COLUMNS:
            text = record.get(name, "") if name not in _COLUMNS_BEFORE_AXES else record[name]
            if name in _INTEGERS:
                values[name] = int(text) if text != "" else None
            elif name in _FLOATS:
                values[name] = float(text) if text != "" else None
            else:
                values[name] = text
    except (KeyError, TypeError, ValueError) as error:
        raise DataError(f"{where}: cannot read this row of results ({error})") from None
    if values["neurons"] is None or values["seed"] is None:
        raise DataError(f"{where}: a row of results lacks neurons or seed")
    if values["status"] not in STATUSES or values["model"] not in MODELS:
        raise DataError(f"{where}: unknown model or status in a row of results")
    if values["status"] == "ok" and values["test_accuracy"] is None:
        raise DataError(f"{where}: an ok row of results lacks its test_accuracy")
    # Each value was parsed by its column's type above; the dict's type cannot say so.
    return ResultRow(**values)  # type: ignore[arg-type]


def format_results(rows: list[ResultRow]) -> str:
    """``rows`` as the text of a ``results.csv`` file, header first."""
    buffer = text_io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([_cell(value) for value in asdict(row).values()])
    return buffer.getvalue()


def read_results(path: str | Path) -> list[ResultRow]:
    """The rows of a ``results.csv``, in file order; an absent file has none.

    Raises
    ------
    DataError
        If the file is not a results file (other columns, unreadable values).
    """
    path = Path(path)
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as stream:
        reader = csv.DictReader(stream)
        if tuple(reader.fieldnames or ()) not in (COLUMNS, _COLUMNS_BEFORE_AXES):
            raise DataError(f"{path} is not a sweep's results.csv (expected: {','.join(COLUMNS)})")
        return [_parse(record, f"{path}:{reader.line_num}") for record in reader]


def finished_jobs(
    rows: list[ResultRow], models: tuple[str, ...] = DEFAULT_MODELS
) -> set[tuple[str, int, int]]:
    """Jobs with a row for every one of ``models``, whether they succeeded or failed."""
    found: dict[tuple[str, int, int], set[str]] = {}
    for row in rows:
        found.setdefault(row.job, set()).add(row.model)
    return {job for job, names in found.items() if names >= set(models)}


def append_job(path: str | Path, rows: list[ResultRow]) -> None:
    """Add one job's rows to ``results.csv`` in a single atomic replacement of the file.

    Rows already there for the same run (:attr:`ResultRow.run`) are dropped first, so the
    file never holds a run twice; the job's rows for other models stay.
    """
    runs = {row.run for row in rows}
    kept = [row for row in read_results(path) if row.run not in runs]
    atomic.write_text(path, format_results(kept + rows))
