"""The FreeNet estimators against scikit-learn's MLP and histogram gradient boosting.

All at their defaults (the MLPs with ``max_iter=2000``),
``cross_val_score(make_pipeline(MinMaxScaler(), model), X, y, cv=5)``, on every task of
``benchmarks/defaults_by_task.py``: the classifiers on its eight classification tasks
(accuracy, ``StratifiedKFold(5)``, unshuffled), the regressors on its four regression tasks
with their targets standardised on each training fold (``TransformedTargetRegressor``, the same
for every model; R^2, ``KFold(5)``, unshuffled); for each ``random_state`` given, on one thread
(torch and BLAS alike). Prints the machine, then the mean and standard deviation of the score
over the folds, the wall time of the five fits, and each model's time as a multiple of the
MLP's on the same data and seed (after a first small fit that compiles the kernels, which is
not timed). The defaults themselves were chosen on these tasks: ``defaults_by_task.py``'s
nested estimate is the one to read for data they were not chosen on.

Usage::

    python benchmarks/estimator_vs_mlp.py --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from defaults_by_task import CLASSIFICATION, REGRESSION, warm_up
from sklearn.compose import TransformedTargetRegressor
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import cross_val_score
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from threadpoolctl import threadpool_limits

from freenets import FreeNetClassifier, FreeNetRegressor

# scikit-learn's MLPs stop at 200 epochs by default, most of these tasks before they converge:
# they get 2000, as in defaults_by_task.py and the comparison the estimators' defaults aim at.
CLASSIFIERS = {
    "MLPClassifier": partial(MLPClassifier, max_iter=2000),
    "FreeNetClassifier": FreeNetClassifier,
    "HistGradientBoosting": HistGradientBoostingClassifier,
}
REGRESSORS = {
    "MLPRegressor": partial(MLPRegressor, max_iter=2000),
    "FreeNetRegressor": FreeNetRegressor,
    "HistGradientBoosting": HistGradientBoostingRegressor,
}


def _regressor(model: Callable[..., Any], seed: int) -> TransformedTargetRegressor:
    return TransformedTargetRegressor(model(random_state=seed), transformer=StandardScaler())


def tasks():
    """``(name, X, y, {label: build(seed)})`` for every task, classification first."""
    for name, load in CLASSIFICATION.items():
        x, y = load()
        yield name, x, y, {label: model for label, model in CLASSIFIERS.items()}
    for name, load in REGRESSION.items():
        x, y = load()
        yield name, x, y, {label: partial(_regressor, model) for label, model in REGRESSORS.items()}


def machine() -> str:
    """The CPU, the cores and the load, for the report's first line."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if "model name" in line)
    except (OSError, StopIteration):
        pass
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return f"{cpu}, {os.cpu_count()} cores, load average {load}; torch {torch.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated random_state values")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(machine())
    warm_up("classifier")  # the kernels' compiling or loading is not a fit's cost
    print(
        f"{'dataset':14s}  {'model':20s}  {'seed':>4s}  {'score':>15s}  {'seconds':>7s}"
        f"  {'x MLP':>6s}"
    )
    for name, x, y, models in tasks():
        for seed in (int(s) for s in args.seeds.split(",")):
            mlp_seconds = None
            for label, build in models.items():  # the MLP first: the others' time against it
                if name in CLASSIFICATION:
                    estimator = build(random_state=seed)
                else:
                    estimator = build(seed)
                pipeline = make_pipeline(MinMaxScaler(), estimator)
                start = time.perf_counter()
                with threadpool_limits(1), warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    scores = cross_val_score(pipeline, x, y, cv=5)
                seconds = time.perf_counter() - start
                mlp_seconds = mlp_seconds or seconds
                cell = f"{scores.mean():.4f} +- {scores.std():.4f}"
                print(
                    f"{name:14s}  {label:20s}  {seed:4d}  {cell:>15s}  {seconds:7.1f}"
                    f"  {seconds / mlp_seconds:6.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
