"""The estimators' defaults chosen by nested cross-validation across tasks, and how they do on
tasks they were not chosen on.

Tasks: scikit-learn's bundled classification sets (breast cancer, digits, wine, iris) and four
``make_classification`` tasks of different sizes, dimensions and class counts (fixed seeds, the
same everywhere); for the regressor, ``load_diabetes``, ``make_friedman1`` and ``make_friedman2``
and one ``make_regression`` task, with the targets standardised on each training part.

Inner loop (choosing): every setting of the grid (neurons, step size, batch size, FreeEvolve's
epsilon and the convergence tolerance) is scored on every task by ``--inner-folds``-fold
cross-validation (stratified for classification, shuffled with seed 0), accuracy or R^2, and
timed beside scikit-learn's MLP on the same folds. With ``--time-budget B`` a setting is
eligible for a choice only if its fits took at most ``B`` times the MLP's (their sum over a
task's folds) on every task the choice is made on (the estimators' aim is a fit within twice
the MLP's time); by default every setting is.

Outer loop (scoring what was chosen): each task in turn is left out; the eligible setting with
the best mean inner score over the *other* tasks is scored on the left-out task by
``--outer-folds``-fold
cross-validation, shuffled with each seed of ``--seeds`` (the seed also the models'
``random_state``), beside scikit-learn's MLP (its defaults, ``max_iter=2000``) and histogram
gradient boosting (its defaults) on the same folds. The left-out task's data never takes part in
choosing what is scored on it. Differences to the MLP are paired by seed (each seed's mean over
its folds), with a Student-t interval and, where it includes zero, the smallest difference those
seeds could have found. Fit times are each model's five folds, one thread, as a multiple of the
MLP's on the same folds.

The setting best over all tasks is printed last: the defaults. Inputs go through
``MinMaxScaler`` fitted on the part that is fitted.

Usage::

    python benchmarks/defaults_by_task.py --kind classifier --jobs 2
    python benchmarks/defaults_by_task.py --kind regressor --jobs 2
    python benchmarks/defaults_by_task.py --quick    # a small grid, two tasks: a smoke run
    python benchmarks/defaults_by_task.py --schedule adaptive    # every setting so scheduled
    python benchmarks/defaults_by_task.py --time-budget 2        # fits within twice the MLP's
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import platform
import statistics
import time
import warnings
from functools import partial
from typing import Any

import numpy as np
from sklearn.compose import TransformedTargetRegressor
from sklearn.datasets import (
    load_breast_cancer,
    load_diabetes,
    load_digits,
    load_iris,
    load_wine,
    make_classification,
    make_friedman1,
    make_friedman2,
    make_regression,
)
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from threadpoolctl import threadpool_limits

from freenets.experiments.seed_stats import detectable_difference, t_interval


def _generated(n: int, features: int, classes: int, seed: int):
    return make_classification(
        n_samples=n,
        n_features=features,
        n_informative=features // 2,
        n_redundant=features // 4,
        n_classes=classes,
        n_clusters_per_class=2,
        random_state=seed,
    )


CLASSIFICATION = {
    "breast_cancer": partial(load_breast_cancer, return_X_y=True),
    "digits": partial(load_digits, return_X_y=True),
    "wine": partial(load_wine, return_X_y=True),
    "iris": partial(load_iris, return_X_y=True),
    "gen-500x10x2": partial(_generated, 500, 10, 2, 1),
    "gen-2000x20x3": partial(_generated, 2000, 20, 3, 2),
    "gen-1000x40x5": partial(_generated, 1000, 40, 5, 3),
    "gen-3000x8x4": partial(_generated, 3000, 8, 4, 4),
}
REGRESSION = {
    "diabetes": partial(load_diabetes, return_X_y=True),
    "friedman1": partial(make_friedman1, n_samples=1000, noise=1.0, random_state=0),
    "friedman2": partial(make_friedman2, n_samples=1000, noise=10.0, random_state=0),
    "regression-20": partial(
        make_regression, n_samples=1000, n_features=20, n_informative=10, noise=10.0, random_state=0
    ),
}
GRID: list[dict[str, Any]] = [
    {"n_neurons": k, "learning_rate": lr, "batch_size": batch, "epsilon": eps, "tol": tol}
    for k, lr, batch, eps, tol in itertools.product(
        (50, 100), (1e-3, 3e-3, 1e-2), (32, 128, 256), (0.25, 0.5), (1e-4, 1e-3)
    )
]
QUICK_GRID = [{"n_neurons": 50, "learning_rate": 1e-2, "batch_size": 128, "max_iter": 5}]
BASELINES = ("MLP", "HistGradientBoosting")


def _tasks(kind: str) -> dict[str, Any]:
    return CLASSIFICATION if kind == "classifier" else REGRESSION


def _folds(kind: str, name: str, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The ``(fit, scored)`` index sets of one task's shuffled ``folds``-fold split."""
    x, y = _tasks(kind)[name]()
    if kind == "classifier":
        splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    else:
        splitter = KFold(folds, shuffle=True, random_state=seed)
    return list(splitter.split(x, y))


def _model(kind: str, model: str | dict[str, Any], seed: int):
    """A FreeNet estimator with the settings ``model``, or a baseline by its name, behind
    ``MinMaxScaler`` (and, for regression, targets standardised on the fitted part)."""
    from freenets import FreeNetClassifier, FreeNetRegressor

    classifier = kind == "classifier"
    if model == "MLP":
        estimator: Any = (MLPClassifier if classifier else MLPRegressor)(
            max_iter=2000, random_state=seed
        )
    elif model == "HistGradientBoosting":
        estimator = (
            HistGradientBoostingClassifier if classifier else HistGradientBoostingRegressor
        )(random_state=seed)
    else:
        assert isinstance(model, dict)
        estimator = (FreeNetClassifier if classifier else FreeNetRegressor)(
            random_state=seed, **model
        )
    if not classifier:
        estimator = TransformedTargetRegressor(estimator, transformer=StandardScaler())
    return make_pipeline(MinMaxScaler(), estimator)


def warm_up(kind: str) -> None:
    """Load the compiled kernels in a worker before any fit is timed: a process's first fit
    would otherwise carry their loading (a second or more) and look slower than it is."""
    import torch

    from freenets.kernels import dag_activations

    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    for method in ("dense", "sparse"):
        z = torch.rand(16, 40, generator=generator, requires_grad=True)
        weight = torch.rand(40, 40, generator=generator, requires_grad=True)
        mask = (torch.rand(40, 40, generator=generator) < 0.5).tril(-1)
        dag_activations(z, weight, mask, method=method).sum().backward()
    x = np.random.default_rng(0).random((60, 4))
    y = (x[:, 0] > 0.5).astype(int) if kind == "classifier" else x[:, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        _model(kind, {"n_neurons": 20, "max_iter": 3}, 0).fit(x, y)


def _score(job: tuple) -> tuple[float, float]:
    """``(score, fit seconds)`` of one model on one fold: ``(kind, task, model, folds, seed,
    fold)``, ``model`` a baseline's name or a grid setting."""
    import torch

    kind, name, model, folds, seed, fold = job
    torch.set_num_threads(1)
    x, y = _tasks(kind)[name]()
    fitted, scored = _folds(kind, name, folds, seed)[fold]
    estimator = _model(kind, model, seed)
    start = time.perf_counter()
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        estimator.fit(x[fitted], y[fitted])
    took = time.perf_counter() - start
    return float(estimator.score(x[scored], y[scored])), took


def others(tasks: list[str], held_out: str) -> list[str]:
    """The tasks a choice for ``held_out`` is made on (all of them if it is the only one)."""
    return [name for name in tasks if name != held_out] or [held_out]


def choose(
    validation: dict[tuple[int, str], float],
    slower: dict[tuple[int, str], float],
    settings: int,
    on: list[str],
    budget: float,
) -> int:
    """The setting with the best mean inner score over the tasks ``on`` among those whose fits
    took at most ``budget`` times the MLP's on each of them; if none did, the one whose slowest
    such ratio is smallest. Ties go to the earlier setting of the grid."""
    eligible = [i for i in range(settings) if max(slower[i, n] for n in on) <= budget]
    if not eligible:
        return min(range(settings), key=lambda i: (max(slower[i, n] for n in on), i))
    return max(eligible, key=lambda i: (statistics.mean(validation[i, n] for n in on), -i))


def _label(setting: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in setting.items())


def _machine() -> str:
    import torch

    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, load average {load}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=["classifier", "regressor"], default="classifier")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seeds", default="0,1,2", help="outer seeds (default: 0,1,2)")
    parser.add_argument("--inner-folds", type=int, default=3)
    parser.add_argument("--outer-folds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one setting, two tasks, 2 folds")
    parser.add_argument(
        "--schedule",
        choices=("cosine", "constant", "adaptive"),
        default=None,
        help="the FreeNet's step-size schedule in every setting (default: the estimator's)",
    )
    parser.add_argument(
        "--time-budget",
        type=float,
        default=float("inf"),
        help="eligible settings fit within this multiple of the MLP's time on every task the "
        "choice is made on (default: no limit)",
    )
    args = parser.parse_args()
    budget = args.time_budget
    grid = QUICK_GRID if args.quick else GRID
    if args.schedule is not None:
        grid = [{**setting, "schedule": args.schedule} for setting in grid]
    tasks = list(_tasks(args.kind))[: 2 if args.quick else None]
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    inner_folds, outer_folds = (2, 2) if args.quick else (args.inner_folds, args.outer_folds)
    print(f"# {_machine()}")
    started = time.perf_counter()
    inner_jobs = [
        (args.kind, name, setting, inner_folds, 0, fold)
        for setting in (*grid, "MLP")
        for name in tasks
        for fold in range(inner_folds)
    ]
    context = multiprocessing.get_context("spawn")
    with context.Pool(args.jobs, initializer=warm_up, initargs=(args.kind,)) as pool:
        found = pool.map(_score, inner_jobs, chunksize=1)
        inner: dict[tuple[int | str, str], list[tuple[float, float]]] = {}
        for job, result in zip(inner_jobs, found, strict=True):
            model = job[2] if isinstance(job[2], str) else grid.index(job[2])
            inner.setdefault((model, job[1]), []).append(result)
        validation = {
            (i, n): statistics.mean(score for score, _ in inner[i, n])
            for i in range(len(grid))
            for n in tasks
        }
        slower = {
            (i, n): sum(t for _, t in inner[i, n]) / sum(t for _, t in inner["MLP", n])
            for i in range(len(grid))
            for n in tasks
        }
        chosen = {
            held_out: choose(validation, slower, len(grid), others(tasks, held_out), budget)
            for held_out in tasks
        }
        outer_jobs = [
            (args.kind, name, model, outer_folds, seed, fold)
            for name in tasks
            for model in (grid[chosen[name]], *BASELINES)
            for seed in seeds
            for fold in range(outer_folds)
        ]
        results = pool.map(_score, outer_jobs, chunksize=1)
    outer: dict[tuple[str, str, int], list[tuple[float, float]]] = {}
    for job, result in zip(outer_jobs, results, strict=True):
        label = job[2] if isinstance(job[2], str) else "FreeNet"
        outer.setdefault((job[1], label, job[4]), []).append(result)
    metric = "accuracy" if args.kind == "classifier" else "R^2"
    print(
        f"# {len(inner_jobs)} inner fits and {len(outer_jobs)} outer fits in "
        f"{time.perf_counter() - started:.0f} s wall, {args.jobs} jobs, one thread each"
    )
    print(
        f"\nOuter {metric}: each task left out of the choice, {outer_folds}-fold cross-validation "
        f"shuffled with seeds {','.join(map(str, seeds))}; mean over seeds and folds. "
        "FreeNet - MLP in points, paired by seed, 95% interval; fit time over the MLP's.\n"
    )
    print(
        "| task | FreeNet | MLP | histogram gradient boosting | FreeNet - MLP | interval | "
        "smallest detectable | FreeNet's fit time / MLP's | chosen |"
    )
    print("|---|---:|---:|---:|---:|---|---:|---:|---|")
    gaps = []
    for name in tasks:

        def mean(label: str, seed: int, part: int, name: str = name) -> float:
            return statistics.mean(value[part] for value in outer[name, label, seed])

        scores = {
            label: statistics.mean(mean(label, s, 0) for s in seeds)
            for label in ("FreeNet", *BASELINES)
        }
        differences = [100 * (mean("FreeNet", s, 0) - mean("MLP", s, 0)) for s in seeds]
        interval = t_interval(differences)
        gaps.append(interval.mean)
        times = [mean("FreeNet", s, 1) / mean("MLP", s, 1) for s in seeds]
        bounds = f"[{interval.low:+.2f}, {interval.high:+.2f}]" if len(seeds) > 1 else "n/a"
        inner_time = max(slower[chosen[name], n] for n in others(tasks, name))
        detectable = (
            f"{detectable_difference(differences):.2f}"
            if len(seeds) > 1 and interval.low <= 0 <= interval.high
            else ""
        )
        print(
            f"| {name} | {scores['FreeNet']:.4f} | {scores['MLP']:.4f} | "
            f"{scores['HistGradientBoosting']:.4f} | {interval.mean:+.2f} | {bounds} | "
            f"{detectable} | {min(times):.1f} to {max(times):.1f} | "
            f"{_label(grid[chosen[name]])} (inner fits up to {inner_time:.1f}x the MLP's) |"
        )
    print(f"\nmean difference {statistics.mean(gaps):+.2f} points, worst {min(gaps):+.2f}")
    overall = {i: statistics.mean(validation[i, name] for name in tasks) for i in range(len(grid))}
    print(f"\nmean inner {metric} over all tasks, best ten (slowest fit over the MLP's on a task):")
    for index in sorted(overall, key=lambda i: -overall[i])[:10]:
        worst = max(slower[index, name] for name in tasks)
        print(f"  {overall[index]:.4f}  {worst:4.1f}x  {_label(grid[index])}")
    best = choose(validation, slower, len(grid), tasks, budget)
    within = f" within {budget:g}x the MLP's time" if budget < float("inf") else ""
    print(f"defaults (best over all tasks{within}): {_label(grid[best])}")


if __name__ == "__main__":
    main()
