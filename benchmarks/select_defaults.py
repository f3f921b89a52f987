"""How the training defaults were chosen: FreeEvolve's validation accuracy over a small grid.

Trains FreeEvolve on Fashion-MNIST at k=100 for each setting in the grid (each one changes the
current defaults in one or more fields) and prints the validation accuracy at the epoch chosen on
validation, the epoch, and the wall time. Only validation accuracy is printed: the test set plays
no part in choosing defaults. Jobs run in parallel, one thread each.

Usage::

    python benchmarks/select_defaults.py --jobs 2
    python benchmarks/select_defaults.py --grid schedule --seeds 0,1
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import statistics
import time
from typing import Any

import torch

from freenets.data import load_dataset, validation_split
from freenets.training.config import TrainConfig
from freenets.training.models import train_freeevolve

GRIDS: dict[str, list[dict[str, Any]]] = {
    # Step size, its schedule and the batch size.
    "schedule": [
        {"learning_rate": lr, "schedule": schedule, "batch_size": batch}
        for lr, schedule, batch in itertools.product(
            (1e-3, 3e-3), ("constant", "cosine"), (64, 128)
        )
    ],
    # FreeEvolve's threshold and the rounds a graph must stay unchanged to count as converged.
    "evolve": [
        {"epsilon": epsilon, "patience": patience}
        for epsilon, patience in itertools.product((0.1, 0.25, 0.4), (3, 5))
    ],
}


def run(job: tuple[dict[str, Any], int, str, int]) -> tuple[str, int, float, int, float]:
    """Validation accuracy, chosen epoch and seconds of one setting and seed."""
    change, seed, dataset_name, neurons = job
    torch.set_num_threads(1)
    config = TrainConfig.of(dataset=dataset_name, n_neurons=neurons, seed=seed, **change)
    dataset = load_dataset(dataset_name)
    split = validation_split(
        dataset.x_train, dataset.y_train, config.data.val_fraction, config.seed
    )
    start = time.perf_counter()
    result = train_freeevolve(dataset, split, config)
    label = ", ".join(f"{key}={value}" for key, value in change.items())
    return label, seed, result.val_accuracy, result.best_epoch, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", choices=sorted(GRIDS), default="schedule")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--neurons", type=int, default=100)
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    jobs = [
        (change, seed, args.dataset, args.neurons) for change in GRIDS[args.grid] for seed in seeds
    ]
    print(f"{args.dataset}, k={args.neurons}, defaults: {TrainConfig()}")
    results: dict[str, list[float]] = {}
    with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
        for label, seed, val, epoch, seconds in pool.imap_unordered(run, jobs):
            print(f"  {label:55s} seed {seed}: val {val:.4f} at epoch {epoch:2d} ({seconds:.0f} s)")
            results.setdefault(label, []).append(val)
    print("mean validation accuracy per setting:")
    for label, values in sorted(results.items(), key=lambda item: -statistics.mean(item[1])):
        print(f"  {statistics.mean(values):.4f}  {label}")


if __name__ == "__main__":
    main()
