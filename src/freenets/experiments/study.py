"""The density study: where can the learned graph matter?

On Fashion-MNIST at k <= 100 the graph holds at most 6% of a FreeNet's parameters. The study asks
the rules' question where the ``k(k-1)/2`` possible edges outnumber the encoder's ``d * k``
weights several times over (:data:`PARTS`: scikit-learn's digits at k = 100 and 300, three
low-dimensional synthetic tasks and Fashion-MNIST projected to 32 dimensions, at k = 100), and
along density:

- FreeEvolve at several epsilons (its density follows epsilon), each with the random control
  that prunes and adds as many edges in each round (``random`` matched), the equal-parameter
  FCNN and FCNN2;
- every budgeted rule (``set``, ``rigl``, ``random``, the static graph, and ``magnitude``, gradual
  pruning) at fixed densities;
- the dense FreeNet.

Each part is a sweep of its own (``OUT/<part>/``: its ``results.csv``, tables and figures, and
it resumes as a sweep does). :func:`study_points` gives each model's accuracy against density
with 95% intervals over seeds, :func:`comparisons` the paired differences (by seed) of FreeEvolve
against random at the same rounds and of every model against the dense FreeNet, each with the
smallest difference its seeds could have detected; :func:`format_study` writes them as
``OUT/study.md``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from freenets import atomic
from freenets.experiments.jobs import BUDGETED
from freenets.experiments.results import ResultRow, read_results
from freenets.experiments.seed_stats import (
    detectable_difference,
    paired_differences,
    t_interval,
)
from freenets.experiments.sweep import SweepConfig, run_sweep
from freenets.training.config import TrainConfig

EPSILONS = (0.1, 0.25, 0.5, 0.75)
DENSITIES = (0.5, 0.2, 0.1, 0.05)
# FreeEvolve's side: its models at each epsilon (random follows its rounds), and the dense graph.
MATCHED_MODELS = ("freeevolve", "fcnn", "fcnn2", "random", "dense")
ONE_POINT = 1.0  # "loses one point against dense": test accuracy, in points


@dataclass(frozen=True)
class Part:
    """One dataset and k of the study, a sweep in ``OUT/<name>/``."""

    name: str
    dataset: str
    neurons: int
    train_size: int | None = None


PARTS = (
    Part("digits-k100", "digits", 100),
    Part("digits-k300", "digits", 300),
    Part("spirals-k100", "spirals", 100),
    Part("checkerboard-k100", "checkerboard", 100),
    Part("classification16-k100", "classification16", 100),
    # 4,000 of its 60,000 training images: a point then trains in well under a minute.
    Part("fashion-mnist-32-k100", "fashion-mnist-32", 100, train_size=4000),
)
QUICK_PARTS = (Part("digits-k16", "digits", 16, 400), Part("spirals-k16", "spirals", 16, 400))


@dataclass(frozen=True)
class StudyConfig:
    """The study's grid: its parts, epsilons, densities, seeds and training settings."""

    parts: tuple[Part, ...] = PARTS
    epsilons: tuple[float, ...] = EPSILONS
    densities: tuple[float, ...] = DENSITIES
    seeds: int = 5
    train: TrainConfig = TrainConfig()

    @classmethod
    def quick(cls) -> StudyConfig:
        """A few minutes' study on two small parts, for a first look and the tests."""
        return cls(QUICK_PARTS, (0.25, 0.5), (0.5, 0.1), 2, TrainConfig.of(epochs=4))

    def sweeps(self, part: Part) -> tuple[SweepConfig, SweepConfig]:
        """The part's two sweeps (one output directory): FreeEvolve's side, the budgets."""
        train = self.train.replace(train_size=part.train_size)
        matched = SweepConfig(
            (part.dataset,),
            (part.neurons,),
            self.seeds,
            train,
            models=MATCHED_MODELS,
            epsilons=self.epsilons,
        )
        budgets = replace(matched, models=BUDGETED, densities=self.densities)
        return matched, budgets


def run_study(
    config: StudyConfig,
    out: str | Path,
    *,
    jobs: int = 1,
    show_progress: bool = True,
    on_part: Callable[[Part, Path], None] | None = None,
) -> float:
    """Run (or resume) every part's sweeps in ``out/<part>/``, write ``out/study.md``.

    Parameters
    ----------
    on_part : callable, optional
        Called with each part and its directory once its sweeps are done (the command line
        draws the part's figures there).

    Returns
    -------
    float
        Wall-clock seconds this call took.
    """
    start = time.perf_counter()
    out = Path(out)
    for part in config.parts:
        where = out / part.name
        for sweep in config.sweeps(part):
            run_sweep(sweep, where, jobs=jobs, show_progress=show_progress)
        if on_part is not None:
            on_part(part, where)
    seconds = time.perf_counter() - start
    write_study(out, config.parts)
    return seconds


@dataclass(frozen=True)
class Point:
    """One model at one density of one part: accuracy in percent, a 95% interval over seeds.

    ``series`` names the line it belongs to (:func:`series_name`). ``density`` is the mean
    density reached (for the FCNNs, that of their FreeEvolve model, whose parameters they match).
    """

    part: str
    series: str
    epsilon: float | None
    budget: float | None
    density: float
    mean: float
    low: float
    high: float
    n: int


_AT_BUDGET = {"random": "random (static)", "magnitude": "magnitude (gradual)"}


def series_name(row: ResultRow) -> str:
    """The line of the density figure a row belongs to.

    At a fixed budget ``random`` is ``random (static)`` and ``magnitude`` ``magnitude
    (gradual)``; sized from FreeEvolve, ``random (rounds)`` and ``<rule> (matched)``.
    """
    if row.model in BUDGETED and row.budget is None:
        return "random (rounds)" if row.model == "random" else f"{row.model} (matched)"
    if row.budget is not None and row.model in _AT_BUDGET:
        return _AT_BUDGET[row.model]
    return row.model


def _accuracy(rows: list[ResultRow]) -> list[float]:
    return [100.0 * row.measured_test_accuracy for row in rows]


def study_points(part: str, rows: list[ResultRow]) -> list[Point]:
    """Every (series, epsilon, budget) of one part's rows as a :class:`Point`."""
    ok = [row for row in rows if row.ok]
    freeevolve_density: dict[float | None, list[float]] = {}
    for row in ok:
        if row.model == "freeevolve" and row.density is not None:
            freeevolve_density.setdefault(row.epsilon, []).append(row.density)
    groups: dict[tuple[str, float | None, float | None], list[ResultRow]] = {}
    for row in ok:
        groups.setdefault((series_name(row), row.epsilon, row.budget), []).append(row)
    points = []
    for (series, epsilon, budget), members in groups.items():
        densities = [r.density for r in members if r.density is not None]
        if not densities:  # a layered baseline: FreeEvolve's density at its epsilon
            densities = freeevolve_density.get(epsilon, [])
        interval = t_interval(_accuracy(members))
        points.append(
            Point(
                part,
                series,
                epsilon,
                budget,
                sum(densities) / len(densities) if densities else math.nan,
                interval.mean,
                interval.low,
                interval.high,
                interval.n,
            )
        )
    return sorted(points, key=lambda p: (p.series, -p.density if p.density == p.density else 0))


@dataclass(frozen=True)
class Comparison:
    """A paired difference (points, by seed) of ``model`` against ``other`` in one part.

    ``detectable`` is the smallest true difference a paired t-test on these seeds finds with
    80% power (:func:`~freenets.experiments.seed_stats.detectable_difference`).
    """

    part: str
    series: str
    model: str
    other: str
    density: float
    mean: float
    low: float
    high: float
    n: int
    detectable: float

    @property
    def verdict(self) -> str:
        """``better``, ``worse`` or ``no difference found`` (the interval's side of zero)."""
        if self.low > 0:
            return "better"
        if self.high < 0:
            return "worse"
        return "no difference found"


def _by_seed(rows: list[ResultRow]) -> dict[int, ResultRow]:
    return {row.seed: row for row in rows if row.ok}


def _label(row: ResultRow) -> str:
    series = series_name(row)
    if row.budget is not None:
        return f"{series} d={row.budget:g}"
    return f"{series} ε={row.epsilon:g}" if row.epsilon is not None else series


def comparisons(part: str, rows: list[ResultRow]) -> list[Comparison]:
    """FreeEvolve against random at its rounds (each epsilon); every model against dense."""
    runs: dict[tuple[str, str, float | None, float | None], list[ResultRow]] = {}
    for row in rows:
        runs.setdefault((series_name(row), _label(row), row.epsilon, row.budget), []).append(row)
    dense = _by_seed(next((v for k, v in runs.items() if k[0] == "dense"), []))
    where = {(p.series, p.epsilon, p.budget): p.density for p in study_points(part, rows)}
    found = []

    def compare(
        members: list[ResultRow], other: dict[int, ResultRow], label: str, name: str
    ) -> None:
        mine = _by_seed(members)
        values = paired_differences(mine, other)
        if not values:
            return
        interval = t_interval(values)
        first = members[0]
        density = where.get((series_name(first), first.epsilon, first.budget), math.nan)
        found.append(
            Comparison(
                part,
                series_name(members[0]),
                label,
                name,
                density,
                interval.mean,
                interval.low,
                interval.high,
                interval.n,
                detectable_difference(values),
            )
        )

    for (series, label, epsilon, _), members in sorted(runs.items(), key=lambda kv: kv[0][1]):
        if series == "freeevolve":
            control = runs.get(("random (rounds)", f"random (rounds) ε={epsilon:g}", epsilon, None))
            if control:
                compare(members, _by_seed(control), label, f"random (rounds) ε={epsilon:g}")
    for (series, label, _, _), members in sorted(runs.items(), key=lambda kv: kv[0][1]):
        if series != "dense" and dense:
            compare(members, dense, label, "dense")
    return found


def one_point_densities(found: list[Comparison]) -> dict[str, float]:
    """Per series: the densest point where its mean paired difference against dense is one
    point or more below zero; a series that never loses a point is absent (the FCNNs count at
    the density of the FreeEvolve model they match)."""
    lost: dict[str, float] = {}
    for c in found:
        if c.other == "dense" and c.mean <= -ONE_POINT and c.density == c.density:
            lost[c.series] = max(lost.get(c.series, 0.0), c.density)
    return lost


def _number(value: float, digits: int = 2, sign: bool = False) -> str:
    if value != value:  # nan
        return "-"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def format_study(parts: dict[str, list[ResultRow]]) -> str:
    """``study.md``: per part, accuracy against density and the paired comparisons."""
    lines = [
        "# Where can the graph matter? Accuracy against density",
        "",
        "Test accuracy (%, at the epoch chosen on validation): mean and 95% t-interval over "
        "seeds. Density: edges over k(k-1)/2 of the chosen model (for the FCNNs, that of the "
        "FreeEvolve model they match). Differences: paired by seed (same split, sample order "
        "and initial weights), mean and 95% t-interval in points; detectable: the smallest "
        "true difference these seeds find with 80% power at the 5% level.",
    ]
    for part, rows in parts.items():
        points = study_points(part, rows)
        found = comparisons(part, rows)
        lines += [
            "",
            f"## {part}",
            "",
            "| model | ε | budget | density | accuracy [95% CI] | seeds |",
        ]
        lines.append("|---|---:|---:|---:|---:|---:|")
        for p in points:
            lines.append(
                f"| {p.series} | {'' if p.epsilon is None else f'{p.epsilon:g}'} | "
                f"{'' if p.budget is None else f'{p.budget:g}'} | {_number(p.density, 3)} | "
                f"{_number(p.mean)} [{_number(p.low)}, {_number(p.high)}] | {p.n} |"
            )
        lines += ["", "| model | against | density | difference [95% CI] | detectable | reading |"]
        lines.append("|---|---|---:|---:|---:|---|")
        for c in found:
            lines.append(
                f"| {c.model} | {c.other} | {_number(c.density, 3)} | {_number(c.mean, sign=True)} "
                f"[{_number(c.low, sign=True)}, {_number(c.high, sign=True)}] | "
                f"{_number(c.detectable)} | {c.verdict} |"
            )
        lost = one_point_densities(found)
        if lost:
            said = ", ".join(f"{rule} at {density:.3f}" for rule, density in sorted(lost.items()))
            lines += ["", f"One point or more below dense (mean), densest such point: {said}."]
    return "\n".join(lines) + "\n"


def read_study(out: str | Path, parts: tuple[Part, ...]) -> dict[str, list[ResultRow]]:
    """Each part's rows, for the parts that have a ``results.csv`` in ``out``."""
    out = Path(out)
    return {
        part.name: read_results(out / part.name / "results.csv")
        for part in parts
        if (out / part.name / "results.csv").is_file()
    }


def write_study(out: str | Path, parts: tuple[Part, ...]) -> Path:
    """Write ``out/study.md`` from the parts' results; its path."""
    path = Path(out) / "study.md"
    atomic.write_text(path, format_study(read_study(out, parts)))
    return path
