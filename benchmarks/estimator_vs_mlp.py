"""FreeNetClassifier against scikit-learn's MLPClassifier, both at their defaults, in 5-fold CV.

``cross_val_score(make_pipeline(MinMaxScaler(), model), X, y, cv=5)`` on ``load_breast_cancer``
and ``load_digits`` (``StratifiedKFold(5)``, unshuffled), for each ``random_state`` given, on one
thread (torch and BLAS alike). Prints the mean and standard deviation of the accuracy over the
folds and the wall time of the five fits. The defaults themselves were chosen on inner validation
splits only (``benchmarks/select_estimator_defaults.py``).

Usage::

    python benchmarks/estimator_vs_mlp.py --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import cross_val_score
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler
from threadpoolctl import threadpool_limits

from freenets import FreeNetClassifier

DATASETS = {"breast_cancer": load_breast_cancer, "digits": load_digits}
MODELS = {"FreeNetClassifier": FreeNetClassifier, "MLPClassifier": MLPClassifier}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated random_state values")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{'dataset':14s}  {'model':18s}  {'seed':>4s}  {'accuracy':>15s}  {'seconds':>7s}")
    for name, load in DATASETS.items():
        x, y = load(return_X_y=True)
        for label, model in MODELS.items():
            for seed in (int(s) for s in args.seeds.split(",")):
                pipeline = make_pipeline(MinMaxScaler(), model(random_state=seed))
                start = time.perf_counter()
                with threadpool_limits(1), warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    scores = cross_val_score(pipeline, x, y, cv=5)
                seconds = time.perf_counter() - start
                cell = f"{scores.mean():.4f} +- {scores.std():.4f}"
                print(f"{name:14s}  {label:18s}  {seed:4d}  {cell:>15s}  {seconds:7.1f}")


if __name__ == "__main__":
    main()
