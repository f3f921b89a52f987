"""Our Table 2 (paper, section 5) and the ablation's table, from a sweep's results.

Table 2 (:func:`summarise`, :data:`HEADER`, :func:`table_rows`): each cell is one (dataset,
neurons): the mean ± standard deviation (``ddof=1``) of the test accuracy over seeds for
FreeEvolve and for its equal-parameter FCNN, the paper's two numbers (packaged in
``paper_table2.csv``), and the FreeEvolve - FCNN difference with a 95% t-interval over the
per-seed differences (paired by seed: both models of a seed share the data split and the FCNN
is matched to that seed's FreeEvolve; :mod:`freenets.experiments.seed_stats`).

Every model (:func:`model_cells`, :data:`MODEL_HEADER`, :func:`model_rows`): one cell per
(dataset, neurons, model), its mean ± std, the paper's number where it has one, and its paired
difference (same seed: same split, sample order and initial weights) with a 95% t-interval
against ``fcnn`` and against ``dense``, where those are in the sweep. ``table.csv`` holds these
cells, one row each; ``table.md`` both tables (the second once the sweep has a model besides
FreeEvolve and FCNN). Accuracies in the tables are in percent. Failed runs are counted per cell
and listed under the Markdown tables, never averaged.

A sweep along epsilon has one cell per (dataset, neurons, epsilon) (:func:`points`); the models
that do not depend on epsilon (the dense FreeNet, the budgeted rules at a fixed density, named
``set d=0.1``) are compared within each.
"""

from __future__ import annotations

import csv
import io as text_io
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from freenets import atomic
from freenets.experiments.results import DEFAULT_MODELS, MODELS, ResultRow
from freenets.experiments.seed_stats import Interval, Spread, paired_differences, t_interval

PAPER_DATASETS = ("mnist", "fashion-mnist", "emnist")
PAPER_NEURONS = (30, 35, 40, 45, 50, 60, 70, 80, 90, 100)


def paper_table2() -> dict[tuple[str, int, str], float]:
    """The paper's Table 2: ``(dataset, neurons, model) -> test accuracy in percent``."""
    text = resources.files("freenets").joinpath("paper_table2.csv").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    reader = csv.reader(lines)
    header = next(reader)
    neurons = [int(value) for value in header[2:]]
    table: dict[tuple[str, int, str], float] = {}
    for dataset, model, *values in reader:
        for k, value in zip(neurons, values, strict=True):
            table[(dataset, k, model)] = float(value)
    return table


Point = tuple[str, int, float | None]


def points(rows: list[ResultRow]) -> dict[Point, list[ResultRow]]:
    """The rows of each (dataset, neurons, epsilon), in the tables' order.

    A row without an epsilon (a model that does not depend on it) belongs to every epsilon of
    its dataset and neurons, or forms the point of epsilon ``None`` where there is none.
    """
    epsilons: dict[tuple[str, int], list[float | None]] = {}
    for row in rows:
        if row.epsilon is not None:
            found = epsilons.setdefault((row.dataset, row.neurons), [])
            if row.epsilon not in found:
                found.append(row.epsilon)
    groups: dict[Point, list[ResultRow]] = {}
    for row in rows:
        own = epsilons.get((row.dataset, row.neurons)) or [None]
        for epsilon in [row.epsilon] if row.epsilon is not None else own:
            groups.setdefault((row.dataset, row.neurons, epsilon), []).append(row)
    order = sorted(
        groups,
        key=lambda key: (_dataset_order(key[0]), key[1], -1.0 if key[2] is None else key[2]),
    )
    return {key: groups[key] for key in order}


def _k(neurons: int, epsilon: float | None, several: bool) -> str:
    """The k column: the neurons, and epsilon where the table has several."""
    return f"{neurons}, ε={epsilon:g}" if several and epsilon is not None else str(neurons)


@dataclass(frozen=True)
class Cell:
    """One (dataset, neurons, epsilon) of the table; accuracies in percent."""

    dataset: str
    neurons: int
    seeds: int
    failed: int
    freeevolve: Spread
    fcnn: Spread
    difference: Interval
    freeevolve_params: float
    fcnn_params: float
    paper_freeevolve: float
    paper_fcnn: float
    # Models of the two with no row at all in this cell (not in the sweep): shown as "-".
    absent: tuple[str, ...] = ()
    epsilon: float | None = None


def _dataset_order(name: str) -> tuple[int, str]:
    return (PAPER_DATASETS.index(name) if name in PAPER_DATASETS else len(PAPER_DATASETS), name)


def summarise(rows: list[ResultRow]) -> list[Cell]:
    """Aggregate ``rows`` into cells, sorted by dataset (paper's order first), neurons, epsilon."""
    paper = paper_table2()
    # Table 2's two; every model: model_cells.
    pair = [row for row in rows if row.model in ("freeevolve", "fcnn") and row.budget is None]
    cells = []
    for (dataset, neurons, epsilon), group in points(pair).items():
        by_model: dict[str, dict[int, ResultRow]] = {"freeevolve": {}, "fcnn": {}}
        for row in group:
            by_model[row.model][row.seed] = row
        ok = {
            model: {seed: row for seed, row in runs.items() if row.ok}
            for model, runs in by_model.items()
        }
        differences = paired_differences(ok["freeevolve"], ok["fcnn"])
        cells.append(
            Cell(
                dataset=dataset,
                neurons=neurons,
                seeds=len({row.seed for row in group}),
                failed=len({row.seed for row in group if not row.ok}),
                freeevolve=Spread.of(
                    [100.0 * r.measured_test_accuracy for r in ok["freeevolve"].values()]
                ),
                fcnn=Spread.of([100.0 * r.measured_test_accuracy for r in ok["fcnn"].values()]),
                difference=t_interval(differences),
                freeevolve_params=_mean([r.params for r in ok["freeevolve"].values()]),
                fcnn_params=_mean([r.params for r in ok["fcnn"].values()]),
                paper_freeevolve=paper.get((dataset, neurons, "freeevolve"), math.nan),
                paper_fcnn=paper.get((dataset, neurons, "fcnn"), math.nan),
                absent=tuple(model for model, runs in by_model.items() if not runs),
                epsilon=epsilon,
            )
        )
    return cells


def _mean(values: list[int | None]) -> float:
    present = [value for value in values if value is not None]
    return float(np.mean(present)) if present else math.nan


def _number(value: float, digits: int = 2, sign: bool = False) -> str:
    if math.isnan(value):
        return ""
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _spread(spread: Spread) -> str:
    if spread.n == 0:
        return "failed"
    if spread.n == 1:
        return f"{spread.mean:.2f}"
    return f"{spread.mean:.2f} ± {spread.std:.2f}"


def _interval(interval: Interval) -> str:
    if interval.n == 0:
        return "n/a"
    if interval.n == 1:
        return f"{interval.mean:+.2f} (one seed, no interval)"
    return f"{interval.mean:+.2f} [{interval.low:+.2f}, {interval.high:+.2f}]"


HEADER = (
    "dataset",
    "k",
    "FreeEvolve",
    "FCNN",
    "paper FreeEvolve",
    "paper FCNN",
    "difference [95% CI]",
    "params FreeEvolve / FCNN",
    "seeds",
    "failed",
)
TITLE = "FreeEvolve vs FCNN (test accuracy, %)"
INTRO = (
    "Ours: mean ± std over seeds. Paper: Table 2. Difference: FreeEvolve - FCNN, mean over "
    "seeds with a 95% t-interval over the per-seed differences (paired by seed)."
)


def table_rows(cells: list[Cell]) -> list[tuple[str, ...]]:
    """The table as text, one tuple of :data:`HEADER`'s columns per cell.

    ``table.md`` and the HTML report (:mod:`freenets.reporting.html`) both show these strings.
    """
    rows: list[tuple[str, ...]] = []
    several = len({c.epsilon for c in cells}) > 1
    for c in cells:
        params = f"{_number(c.freeevolve_params, 0) or '-'} / {_number(c.fcnn_params, 0) or '-'}"
        rows.append(
            (
                c.dataset,
                _k(c.neurons, c.epsilon, several),
                "-" if "freeevolve" in c.absent else _spread(c.freeevolve),
                "-" if "fcnn" in c.absent else _spread(c.fcnn),
                _number(c.paper_freeevolve) or "-",
                _number(c.paper_fcnn) or "-",
                _interval(c.difference),
                params,
                str(c.seeds),
                str(c.failed) if c.failed else "",
            )
        )
    return rows


@dataclass(frozen=True)
class ModelCell:
    """One (dataset, neurons, epsilon, model) of the table of every model; accuracies in percent.

    ``model`` is the row's :attr:`~freenets.experiments.results.ResultRow.label` (``set d=0.1``
    for a fixed budget); ``density`` the mean density reached (NaN for the layered baselines).

    ``vs_fcnn`` and ``vs_dense`` are this model minus ``fcnn`` (or ``dense``) over the seeds
    where both trained, with a 95% t-interval; ``None`` for that model itself, or where the
    sweep does not have it.
    """

    dataset: str
    neurons: int
    model: str
    seeds: int
    failed: int
    accuracy: Spread
    paper: float
    params: float
    edges: float
    vs_fcnn: Interval | None
    vs_dense: Interval | None
    epsilon: float | None = None
    density: float = math.nan


def _model_order(label: str) -> tuple[int, float]:
    """Models in :data:`MODELS`' order, each at a matched budget first, then densest first."""
    model, _, budget = label.partition(" d=")
    return (MODELS.index(model) if model in MODELS else len(MODELS), -float(budget or 2.0))


def model_cells(rows: list[ResultRow]) -> list[ModelCell]:
    """One cell per (dataset, neurons, model), by dataset (paper's first), neurons and model."""
    paper = paper_table2()
    cells = []
    for (dataset, neurons, epsilon), group in points(rows).items():
        by_model: dict[str, list[ResultRow]] = {}
        for row in group:
            by_model.setdefault(row.label, []).append(row)
        ok = {
            model: {row.seed: row for row in members if row.ok}
            for model, members in by_model.items()
        }
        for model in sorted(by_model, key=_model_order):
            members = by_model[model]
            mine = ok[model]
            versus = {
                reference: t_interval(paired_differences(mine, ok[reference]))
                for reference in ("fcnn", "dense")
                if reference != model and reference in ok
            }
            densities = [r.density for r in mine.values() if r.density is not None]
            cells.append(
                ModelCell(
                    dataset=dataset,
                    neurons=neurons,
                    model=model,
                    seeds=len({row.seed for row in members}),
                    failed=len({row.seed for row in members if not row.ok}),
                    accuracy=Spread.of([100.0 * r.measured_test_accuracy for r in mine.values()]),
                    paper=paper.get((dataset, neurons, model), math.nan),
                    params=_mean([r.params for r in mine.values()]),
                    edges=_mean([r.edges for r in mine.values()]),
                    vs_fcnn=versus.get("fcnn"),
                    vs_dense=versus.get("dense"),
                    epsilon=epsilon,
                    density=float(np.mean(densities)) if densities else math.nan,
                )
            )
    return cells


MODEL_HEADER = (
    "dataset",
    "k",
    "model",
    "test accuracy",
    "paper",
    "vs FCNN [95% CI]",
    "vs dense [95% CI]",
    "params",
    "edges",
    "seeds",
    "failed",
)
MODEL_TITLE = "Every model (test accuracy, %)"
MODEL_INTRO = (
    "Mean ± std over seeds. Paper: Table 2, where it has the model. vs FCNN, vs dense: this "
    "model minus that one, mean over seeds with a 95% t-interval over the per-seed differences "
    "(paired by seed: same split, sample order and initial weights); '-' where the sweep lacks "
    "that model. Params and edges: means over seeds (edges for FreeNet-based models)."
)


def _versus(interval: Interval | None) -> str:
    return "-" if interval is None else _interval(interval)


def model_rows(cells: list[ModelCell]) -> list[tuple[str, ...]]:
    """The table of every model as text, one tuple of :data:`MODEL_HEADER`'s columns per cell."""
    several = len({c.epsilon for c in cells}) > 1
    return [
        (
            c.dataset,
            _k(c.neurons, c.epsilon, several),
            c.model,
            _spread(c.accuracy),
            _number(c.paper) or "-",
            _versus(c.vs_fcnn),
            _versus(c.vs_dense),
            _number(c.params, 0) or "-",
            _number(c.edges, 0) or "-",
            str(c.seeds),
            str(c.failed) if c.failed else "",
        )
        for c in cells
    ]


def has_ablation(rows: list[ResultRow]) -> bool:
    """Whether the results hold a model besides FreeEvolve and its FCNN."""
    return any(row.model not in DEFAULT_MODELS for row in rows)


CSV_COLUMNS = (
    "dataset",
    "neurons",
    "epsilon",
    "model",
    "seeds",
    "failed",
    "mean",
    "std",
    "n",
    "paper",
    "params",
    "edges",
    "density",
    "vs_fcnn_mean",
    "vs_fcnn_low",
    "vs_fcnn_high",
    "vs_fcnn_n",
    "vs_dense_mean",
    "vs_dense_low",
    "vs_dense_high",
    "vs_dense_n",
)


def _interval_cells(interval: Interval | None) -> list[object]:
    if interval is None:
        return ["", "", "", ""]
    bounds = [_number(value, 4) for value in (interval.mean, interval.low, interval.high)]
    return [*bounds, interval.n]


def format_csv(cells: list[ModelCell]) -> str:
    """``table.csv``: one row per (dataset, neurons, epsilon, model), empty where undefined."""
    buffer = text_io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for c in cells:
        writer.writerow(
            [
                c.dataset,
                c.neurons,
                "" if c.epsilon is None else repr(c.epsilon),
                c.model,
                c.seeds,
                c.failed,
                _number(c.accuracy.mean, 4),
                _number(c.accuracy.std, 4),
                c.accuracy.n,
                _number(c.paper),
                _number(c.params, 1),
                _number(c.edges, 1),
                _number(c.density, 4),
                *_interval_cells(c.vs_fcnn),
                *_interval_cells(c.vs_dense),
            ]
        )
    return buffer.getvalue()


def failed_runs(rows: list[ResultRow]) -> list[ResultRow]:
    """The rows of runs that failed, in the table's order (dataset, neurons, seed, model)."""
    return sorted(
        (row for row in rows if not row.ok),
        key=lambda r: (_dataset_order(r.dataset), r.neurons, r.seed, r.model),
    )


def _markdown_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def format_markdown(cells: list[Cell], rows: list[ResultRow]) -> str:
    """``table.md``: Table 2, the table of every model (with an ablation), every failed run."""
    lines = []
    if cells or not has_ablation(rows):
        lines += [f"# {TITLE}", "", INTRO, "", *_markdown_table(HEADER, table_rows(cells))]
    if has_ablation(rows):
        if lines:
            lines.append("")
        every = model_rows(model_cells(rows))
        lines += [f"# {MODEL_TITLE}", "", MODEL_INTRO, "", *_markdown_table(MODEL_HEADER, every)]
    failures = failed_runs(rows)
    if failures:
        lines += ["", f"## Failed runs ({len(failures)})", ""]
        lines += [
            f"- {r.dataset}, k={r.neurons}, seed {r.seed}, {r.label}"
            + ("" if r.epsilon is None else f", ε={r.epsilon:g}")
            + f": {r.reason}"
            for r in failures
        ]
    return "\n".join(lines) + "\n"


def write_tables(out: str | Path, rows: list[ResultRow]) -> tuple[Path, Path]:
    """Write ``out/table.md`` and ``out/table.csv`` (atomically) from ``rows``; return the paths."""
    out = Path(out)
    cells = summarise(rows)
    atomic.write_text(out / "table.md", format_markdown(cells, rows))
    atomic.write_text(out / "table.csv", format_csv(model_cells(rows)))
    return out / "table.md", out / "table.csv"
