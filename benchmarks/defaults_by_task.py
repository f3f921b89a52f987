"""The estimators' defaults chosen across tasks, and how they do on a task they were not chosen on.

Tasks: scikit-learn's bundled classification sets (breast cancer, digits, wine, iris) and four
``make_classification`` tasks of different sizes, dimensions and class counts (fixed seeds, the
same everywhere); for the regressor, ``load_diabetes``, ``make_friedman1`` and ``make_friedman2``
and one ``make_regression`` task, with the targets standardised on the training part. Each task
is split once into training and test parts (25% test, stratified for classification, seed 0),
and the training part again into fitting and validation parts (25%).

Every setting of the grid is fitted on each task's fitting part and scored on its validation part
(accuracy, or R^2). Leave one task out: the setting with the best mean validation score over the
*other* tasks is refitted on the held-out task's whole training part and scored on its test part.
That test score is the nested estimate of "the defaults, on data they were not chosen on"; the
MLP (scikit-learn's defaults, ``max_iter=2000``) is scored on the same split beside it. The
setting best over all tasks is printed last: the defaults. Inputs go through ``MinMaxScaler``
fitted on the part that is fitted.

Usage::

    python benchmarks/defaults_by_task.py --kind classifier --jobs 2
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
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
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler


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
    {"n_neurons": k, "learning_rate": lr, "batch_size": batch}
    for k, lr, batch in itertools.product((50, 100), (1e-3, 3e-3, 1e-2), (32, 128))
]


def _split(kind: str, name: str) -> tuple[np.ndarray, ...]:
    """``(x, y, fit, val, train, test)``: the data and the index sets of one task."""
    x, y = (CLASSIFICATION if kind == "classifier" else REGRESSION)[name]()
    stratify = y if kind == "classifier" else None
    index = np.arange(len(y))
    train, test = train_test_split(index, test_size=0.25, random_state=0, stratify=stratify)
    inner = y[train] if kind == "classifier" else None
    fit, val = train_test_split(train, test_size=0.25, random_state=0, stratify=inner)
    return x, y, fit, val, train, test


def _model(kind: str, setting: dict[str, Any] | None, seed: int):
    from freenets import FreeNetClassifier, FreeNetRegressor

    if kind == "classifier":
        model = (
            MLPClassifier(max_iter=2000, random_state=seed)
            if setting is None
            else FreeNetClassifier(random_state=seed, **setting)
        )
        return make_pipeline(MinMaxScaler(), model)
    regressor = (
        MLPRegressor(max_iter=2000, random_state=seed)
        if setting is None
        else FreeNetRegressor(random_state=seed, **setting)
    )
    target = TransformedTargetRegressor(regressor, transformer=StandardScaler())
    return make_pipeline(MinMaxScaler(), target)


def _score(job: tuple[str, str, int | None, str, int]) -> tuple[float, float]:
    """Score of setting ``index`` (``None``: the MLP) on one task's validation or test part."""
    import torch

    kind, name, index, part, seed = job
    torch.set_num_threads(1)
    x, y, fit, val, train, test = _split(kind, name)
    fitted, scored = (fit, val) if part == "validation" else (train, test)
    model = _model(kind, None if index is None else GRID[index], seed)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x[fitted], y[fitted])
    return float(model.score(x[scored], y[scored])), time.perf_counter() - start


def _label(setting: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in setting.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=["classifier", "regressor"], default="classifier")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="random_state of every model")
    args = parser.parse_args()
    tasks = list(CLASSIFICATION if args.kind == "classifier" else REGRESSION)
    started = time.perf_counter()
    jobs = [
        (args.kind, name, index, "validation", args.seed)
        for index in range(len(GRID))
        for name in tasks
    ]
    with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
        found = pool.map(_score, jobs)
        validation = {(j[2], j[1]): score for j, (score, _) in zip(jobs, found, strict=True)}
        chosen = {}
        for held_out in tasks:
            others = [name for name in tasks if name != held_out]
            chosen[held_out] = max(
                range(len(GRID)),
                key=lambda i: (statistics.mean(validation[i, n] for n in others), -i),
            )
        tests = [(args.kind, name, chosen[name], "test", args.seed) for name in tasks]
        tests += [(args.kind, name, None, "test", args.seed) for name in tasks]
        results = pool.map(_score, tests)
    ours = dict(zip(tasks, results[: len(tasks)], strict=True))
    mlp = dict(zip(tasks, results[len(tasks) :], strict=True))
    metric = "accuracy" if args.kind == "classifier" else "R^2"
    print(
        f"{len(jobs)} validation fits and {len(tests)} test fits in "
        f"{time.perf_counter() - started:.0f} s wall, {args.jobs} jobs, one thread each"
    )
    print(f"test {metric} of the setting chosen on the other tasks, and of the MLP:")
    print(
        f"  {'task':15s}  {'FreeNet':>8s}  {'MLP':>8s}  {'diff':>7s}  {'x MLP time':>10s}  chosen"
    )
    for name in tasks:
        (score, took), (base, base_took) = ours[name], mlp[name]
        print(
            f"  {name:15s}  {score:8.4f}  {base:8.4f}  {100 * (score - base):+7.2f}"
            f"  {took / base_took:10.2f}  {_label(GRID[chosen[name]])}"
        )
    gaps = [100 * (ours[n][0] - mlp[n][0]) for n in tasks]
    print(f"  mean difference {statistics.mean(gaps):+.2f} points, worst {min(gaps):+.2f}")
    overall = {i: statistics.mean(validation[i, name] for name in tasks) for i in range(len(GRID))}
    print(f"mean validation {metric} over all tasks:")
    for index in sorted(overall, key=lambda i: -overall[i]):
        print(f"  {overall[index]:.4f}  {_label(GRID[index])}")
    print(f"defaults (best over all tasks): {_label(GRID[max(overall, key=overall.get)])}")


if __name__ == "__main__":
    main()
