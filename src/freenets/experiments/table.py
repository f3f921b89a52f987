"""Our Table 2 (paper, section 5) from a sweep's results, beside the paper's numbers.

Each cell is one (dataset, neurons): the mean ± standard deviation (``ddof=1``) of the test
accuracy over seeds for FreeEvolve and for its equal-parameter FCNN, the paper's two numbers
(packaged in ``paper_table2.csv``), and the FreeEvolve - FCNN difference with a 95% t-interval
over the per-seed differences (paired by seed: both models of a seed share the data split and
the FCNN is matched to that seed's FreeEvolve). Accuracies in the tables are in percent.
Failed runs are counted per cell and listed under the Markdown table, never averaged.
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
from freenets.experiments.results import ResultRow

PAPER_DATASETS = ("mnist", "fashion-mnist", "emnist")
PAPER_NEURONS = (30, 35, 40, 45, 50, 60, 70, 80, 90, 100)
CONFIDENCE = 0.95


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


@dataclass(frozen=True)
class Spread:
    """Mean and sample standard deviation of ``n`` values; ``nan`` where undefined."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        if not values:
            return cls(math.nan, math.nan, 0)
        array = np.asarray(values, dtype=np.float64)
        std = float(array.std(ddof=1)) if array.size > 1 else math.nan
        return cls(float(array.mean()), std, int(array.size))


@dataclass(frozen=True)
class Interval:
    """A mean with a two-sided t confidence interval ``[low, high]`` over ``n`` values."""

    mean: float
    low: float
    high: float
    n: int


def t_interval(values: list[float], confidence: float = CONFIDENCE) -> Interval:
    """Student-t interval for the mean of ``values``; bounds are ``nan`` for fewer than 2."""
    if not values:
        return Interval(math.nan, math.nan, math.nan, 0)
    array = np.asarray(values, dtype=np.float64)
    mean = float(array.mean())
    if array.size < 2:
        return Interval(mean, math.nan, math.nan, 1)
    from scipy import stats  # scikit-learn's dependency; imported here to keep the CLI quick

    quantile = float(stats.t.ppf(0.5 + confidence / 2, df=array.size - 1))
    half = quantile * float(array.std(ddof=1)) / math.sqrt(array.size)
    return Interval(mean, mean - half, mean + half, int(array.size))


@dataclass(frozen=True)
class Cell:
    """One (dataset, neurons) of the table; accuracies in percent."""

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


def _dataset_order(name: str) -> tuple[int, str]:
    return (PAPER_DATASETS.index(name) if name in PAPER_DATASETS else len(PAPER_DATASETS), name)


def summarise(rows: list[ResultRow]) -> list[Cell]:
    """Aggregate ``rows`` into cells, sorted by dataset (paper's order first) and neurons."""
    paper = paper_table2()
    groups: dict[tuple[str, int], list[ResultRow]] = {}
    for row in rows:
        groups.setdefault((row.dataset, row.neurons), []).append(row)
    cells = []
    for dataset, neurons in sorted(groups, key=lambda key: (_dataset_order(key[0]), key[1])):
        group = groups[(dataset, neurons)]
        by_model: dict[str, dict[int, ResultRow]] = {"freeevolve": {}, "fcnn": {}}
        for row in group:
            by_model[row.model][row.seed] = row
        ok = {
            model: {seed: row for seed, row in runs.items() if row.ok}
            for model, runs in by_model.items()
        }
        paired = sorted(set(ok["freeevolve"]) & set(ok["fcnn"]))
        differences = [
            100.0 * (ok["freeevolve"][s].test_accuracy - ok["fcnn"][s].test_accuracy)  # type: ignore[operator]
            for s in paired
        ]
        cells.append(
            Cell(
                dataset=dataset,
                neurons=neurons,
                seeds=len({row.seed for row in group}),
                failed=len({row.seed for row in group if not row.ok}),
                freeevolve=Spread.of([100.0 * r.test_accuracy for r in ok["freeevolve"].values()]),  # type: ignore[operator]
                fcnn=Spread.of([100.0 * r.test_accuracy for r in ok["fcnn"].values()]),  # type: ignore[operator]
                difference=t_interval(differences),
                freeevolve_params=_mean([r.params for r in ok["freeevolve"].values()]),
                fcnn_params=_mean([r.params for r in ok["fcnn"].values()]),
                paper_freeevolve=paper.get((dataset, neurons, "freeevolve"), math.nan),
                paper_fcnn=paper.get((dataset, neurons, "fcnn"), math.nan),
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


def format_csv(cells: list[Cell]) -> str:
    """``table.csv``: one row per cell, empty where a number is undefined."""
    buffer = text_io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        [
            "dataset",
            "neurons",
            "seeds",
            "failed",
            "freeevolve_mean",
            "freeevolve_std",
            "freeevolve_n",
            "fcnn_mean",
            "fcnn_std",
            "fcnn_n",
            "paper_freeevolve",
            "paper_fcnn",
            "difference_mean",
            "difference_low",
            "difference_high",
            "difference_n",
            "freeevolve_params",
            "fcnn_params",
        ]  # fmt: skip
    )
    for c in cells:
        writer.writerow(
            [
                c.dataset,
                c.neurons,
                c.seeds,
                c.failed,
                _number(c.freeevolve.mean, 4),
                _number(c.freeevolve.std, 4),
                c.freeevolve.n,
                _number(c.fcnn.mean, 4),
                _number(c.fcnn.std, 4),
                c.fcnn.n,
                _number(c.paper_freeevolve),
                _number(c.paper_fcnn),
                _number(c.difference.mean, 4),
                _number(c.difference.low, 4),
                _number(c.difference.high, 4),
                c.difference.n,
                _number(c.freeevolve_params, 1),
                _number(c.fcnn_params, 1),
            ]  # fmt: skip
        )
    return buffer.getvalue()


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
    rows = []
    for c in cells:
        params = f"{_number(c.freeevolve_params, 0) or '-'} / {_number(c.fcnn_params, 0) or '-'}"
        rows.append(
            (
                c.dataset,
                str(c.neurons),
                _spread(c.freeevolve),
                _spread(c.fcnn),
                _number(c.paper_freeevolve) or "-",
                _number(c.paper_fcnn) or "-",
                _interval(c.difference),
                params,
                str(c.seeds),
                str(c.failed) if c.failed else "",
            )
        )
    return rows


def failed_runs(rows: list[ResultRow]) -> list[ResultRow]:
    """The rows of runs that failed, in the table's order (dataset, neurons, seed, model)."""
    return sorted(
        (row for row in rows if not row.ok),
        key=lambda r: (_dataset_order(r.dataset), r.neurons, r.seed, r.model),
    )


def format_markdown(cells: list[Cell], rows: list[ResultRow]) -> str:
    """``table.md``: the table, then every failed run with its reason."""
    lines = [
        f"# {TITLE}",
        "",
        INTRO,
        "",
        "| " + " | ".join(HEADER) + " |",
        "|---|" + "---:|" * (len(HEADER) - 1),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(cells)]
    failures = failed_runs(rows)
    if failures:
        lines += ["", f"## Failed runs ({len(failures)})", ""]
        lines += [
            f"- {r.dataset}, k={r.neurons}, seed {r.seed}, {r.model}: {r.reason}" for r in failures
        ]
    return "\n".join(lines) + "\n"


def write_tables(out: str | Path, rows: list[ResultRow]) -> tuple[Path, Path]:
    """Write ``out/table.md`` and ``out/table.csv`` (atomically) from ``rows``; return the paths."""
    out = Path(out)
    cells = summarise(rows)
    atomic.write_text(out / "table.md", format_markdown(cells, rows))
    atomic.write_text(out / "table.csv", format_csv(cells))
    return out / "table.md", out / "table.csv"
