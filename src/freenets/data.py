"""Datasets as in-memory tensors, pixels scaled to [0, 1] (paper, section 5, "Datasets").

Every loader returns a :class:`Dataset` with a fixed train/test split; the validation split is taken
from the training data by :func:`validation_split`, fixed by the run's seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


class DataError(Exception):
    """A dataset cannot be loaded; the message says which file and what to do."""


@dataclass(frozen=True)
class Dataset:
    """Train and test tensors of one dataset."""

    name: str
    x_train: torch.Tensor  # (n_train, d) float32 in [0, 1]
    y_train: torch.Tensor  # (n_train,) int64 class indices
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int

    @property
    def n_features(self) -> int:
        """Number of input features d."""
        return int(self.x_train.shape[1])


@dataclass(frozen=True)
class Split:
    """Training data with a validation part held out."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


def validation_split(x: torch.Tensor, y: torch.Tensor, fraction: float, seed: int) -> Split:
    """Hold out ``fraction`` of the training data for validation, stratified, fixed by ``seed``."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the validation fraction must lie in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    labels = y.numpy()
    held_out: list[np.ndarray] = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        rng.shuffle(members)
        count = int(round(fraction * members.size))
        held_out.append(members[:count])
    val_index = np.sort(np.concatenate(held_out))
    keep = np.ones(labels.size, dtype=bool)
    keep[val_index] = False
    train_index = np.flatnonzero(keep)
    if val_index.size == 0 or train_index.size == 0:
        raise DataError("too few samples to hold out a validation split")
    val = torch.from_numpy(val_index)
    train = torch.from_numpy(train_index)
    return Split(x[train], y[train], x[val], y[val])


def load_digits() -> Dataset:
    """scikit-learn's 8x8 digits (1797 samples), a fixed stratified 80/20 train/test split."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    # The test split is part of the dataset's definition, the same for every seed.
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, stratify=y, random_state=0
    )
    return Dataset(
        name="digits",
        x_train=torch.from_numpy(x_train),
        y_train=torch.from_numpy(y_train),
        x_test=torch.from_numpy(x_test),
        y_test=torch.from_numpy(y_test),
        n_classes=10,
    )


LOADERS: dict[str, Callable[..., Dataset]] = {
    "digits": lambda data_dir=None: load_digits(),
}


def dataset_names() -> list[str]:
    """Names accepted by :func:`load_dataset`."""
    return sorted(LOADERS)


def load_dataset(name: str, data_dir: str | Path | None = None) -> Dataset:
    """Load a dataset by name.

    Parameters
    ----------
    name : str
        One of :func:`dataset_names`.
    data_dir : str or Path, optional
        Directory holding the dataset's files, where the dataset has files.
    """
    if name not in LOADERS:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(dataset_names())}")
    return LOADERS[name](data_dir=data_dir)
