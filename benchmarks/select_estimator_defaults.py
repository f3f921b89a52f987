"""How the estimators' defaults were chosen: validation accuracy of FreeNetClassifier over a grid.

For each dataset, the samples are cut into the 5 folds that ``cross_val_score(..., cv=5)`` uses
(``StratifiedKFold(5)``, unshuffled). Only the training part of each fold is used here: it is split
again (``StratifiedShuffleSplit``, 25% held out, ``--inner`` times) and every setting of the grid
is fitted on the inner training part (MinMaxScaler fitted there too) and scored on the inner
validation part. A fold's test part plays no part in choosing anything.

The script prints, per setting, the mean inner-validation accuracy on each dataset and over all,
and the seconds per fit. The defaults follow the one-standard-error rule: of the settings whose
mean over all is within one standard error of the best one's (the error of their difference over
the dataset-and-fold cells), the cheapest, counted in optimiser steps times ``k**2``. It then scores the selection
procedure itself on the test parts (nested cross-validation): in each outer fold, the setting best
(over all datasets) on that fold's inner validation alone is refitted on the fold's training part
and scored on its test part. That estimate is honest; the 5-fold score of the chosen defaults, which the README
reports, is slightly optimistic, because the defaults were chosen with every fold's training part.

Usage::

    nice python benchmarks/select_estimator_defaults.py --jobs 2
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import statistics
import time
from typing import Any

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from sklearn.model_selection import StratifiedKFold, StratifiedShuffleSplit
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler

DATASETS = {"breast_cancer": load_breast_cancer, "digits": load_digits, "wine": load_wine}

# The command line's defaults (k 50, step 3e-3, batches of 128, 30 epochs, cosine) and changes
# towards more optimiser steps (smaller batches, more epochs), a larger step and more neurons.
GRID: list[dict[str, Any]] = [
    {"n_neurons": k, "learning_rate": lr, "batch_size": batch, "max_iter": epochs}
    for k, lr, batch, epochs in itertools.product((50, 100), (3e-3, 1e-2), (32, 128), (30, 60))
]


def _cost(setting: dict[str, Any]) -> float:
    """Optimiser steps per sample times k**2: what a fit costs, up to a constant."""
    return setting["max_iter"] / setting["batch_size"] * setting["n_neurons"] ** 2


def _label(setting: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in setting.items())


def _folds(name: str, inner: int) -> list[tuple[int, np.ndarray, list[tuple[np.ndarray, ...]]]]:
    """Each outer fold's training indices and its inner (train, validation) index pairs."""
    x, y = DATASETS[name](return_X_y=True)
    found = []
    for fold, (train, _) in enumerate(StratifiedKFold(5).split(x, y)):
        splitter = StratifiedShuffleSplit(inner, test_size=0.25, random_state=fold)
        pairs = [(train[a], train[b]) for a, b in splitter.split(x[train], y[train])]
        found.append((fold, train, pairs))
    return found


def _score(job: tuple[dict[str, Any], str, np.ndarray, np.ndarray, int]) -> tuple[float, float]:
    """Accuracy of one setting fitted on ``fit_index`` and scored on ``score_index``; seconds."""
    import torch

    from freenets import FreeNetClassifier

    setting, name, fit_index, score_index, seed = job
    torch.set_num_threads(1)
    x, y = DATASETS[name](return_X_y=True)
    model = make_pipeline(MinMaxScaler(), FreeNetClassifier(random_state=seed, **setting))
    start = time.perf_counter()
    model.fit(x[fit_index], y[fit_index])
    return float(model.score(x[score_index], y[score_index])), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--inner", type=int, default=2, help="inner splits per outer fold")
    parser.add_argument("--seed", type=int, default=0, help="random_state of the estimator")
    args = parser.parse_args()
    folds = {name: _folds(name, args.inner) for name in DATASETS}
    jobs, keys = [], []
    for index, setting in enumerate(GRID):
        for name, outer in folds.items():
            for fold, _, pairs in outer:
                for fit_index, val_index in pairs:
                    jobs.append((setting, name, fit_index, val_index, args.seed))
                    keys.append((index, name, fold))
    print(f"{len(GRID)} settings x {len(DATASETS)} datasets x 5 folds x {args.inner} splits")
    scores: dict[tuple[int, str, int], list[float]] = {}
    seconds: dict[int, list[float]] = {}
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
        for key, (score, took) in zip(keys, pool.imap(_score, jobs), strict=True):
            scores.setdefault(key, []).append(score)
            seconds.setdefault(key[0], []).append(took)
    print(f"inner fits: {len(jobs)} in {time.perf_counter() - started:.0f} s wall")

    def mean_on(index: int, name: str, fold: int | None = None) -> float:
        folds_of = [f for f in range(5) if fold is None or f == fold]
        return statistics.mean(statistics.mean(scores[index, name, f]) for f in folds_of)

    overall = {
        index: statistics.mean(mean_on(index, name) for name in DATASETS)
        for index in range(len(GRID))
    }
    print("mean inner-validation accuracy (per dataset, over all) and seconds per fit:")
    header = "  ".join(f"{name:>13}" for name in DATASETS)
    print(f"  {header}  {'overall':>8}  {'s/fit':>6}  setting")
    for index in sorted(overall, key=lambda i: -overall[i]):
        row = "  ".join(f"{mean_on(index, name):13.4f}" for name in DATASETS)
        took = statistics.mean(seconds[index])
        print(f"  {row}  {overall[index]:8.4f}  {took:6.2f}  {_label(GRID[index])}")
    # The cells behind the choice of the defaults: each dataset and fold, over its inner splits.
    cells = {
        index: [mean_on(index, name, fold) for name in DATASETS for fold in range(5)]
        for index in range(len(GRID))
    }
    best, close, chosen_default = _one_error_rule(cells)
    print(f"best on validation: {_label(GRID[best])}")
    print("within one standard error of it:")
    for index in close:
        print(f"  {overall[index]:.4f}  cost {_cost(GRID[index]):8.0f}  {_label(GRID[index])}")
    print(f"chosen defaults (the cheapest of those): {_label(GRID[chosen_default])}")

    # Nested cross-validation of the selection: per outer fold, the same rule on that fold's
    # inner validation alone (its cells: each dataset and inner split), scored once on the
    # fold's test parts.
    print("nested cross-validation of the selection (outer test folds):")
    chosen = {
        fold: _one_error_rule(
            {
                index: [value for name in DATASETS for value in scores[index, name, fold]]
                for index in range(len(GRID))
            }
        )[2]
        for fold in range(5)
    }
    for fold, index in chosen.items():
        print(f"  fold {fold}: {_label(GRID[index])}")
    for name, outer in folds.items():
        x, y = DATASETS[name](return_X_y=True)
        tests = [test for _, test in StratifiedKFold(5).split(x, y)]
        results = [
            _score((GRID[chosen[fold]], name, train, tests[fold], args.seed))[0]
            for fold, train, _ in outer
        ]
        spread = statistics.stdev(results)
        print(f"  {name}: {statistics.mean(results):.4f} +- {spread:.4f} over the 5 folds")


def _one_error_rule(cells: dict[int, list[float]]) -> tuple[int, list[int], int]:
    """The best setting by mean over the cells, those within one standard error of it (of the
    paired differences), and the cheapest of those."""
    means = {index: statistics.mean(values) for index, values in cells.items()}
    best = max(means, key=lambda i: (means[i], -i))

    def close_to_best(index: int) -> bool:
        gaps = [a - b for a, b in zip(cells[best], cells[index], strict=True)]
        error = statistics.stdev(gaps) / len(gaps) ** 0.5 if len(gaps) > 1 else 0.0
        return statistics.mean(gaps) <= error

    close = sorted((i for i in cells if close_to_best(i)), key=lambda i: -means[i])
    return best, close, min(close, key=lambda i: (_cost(GRID[i]), -means[i]))


if __name__ == "__main__":
    main()
