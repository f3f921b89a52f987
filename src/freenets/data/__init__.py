"""Datasets as in-memory tensors, pixels scaled to [0, 1] (paper, section 5, "Datasets").

Every loader returns a :class:`Dataset` with a fixed train/test split; the validation split is taken
from the training data by :func:`validation_split`, fixed by the run's seed. The paper's datasets
(MNIST, Fashion-MNIST, a truncated EMNIST) are read from IDX files by :mod:`freenets.data.images`;
a user's own ``.npz`` or ``.csv`` file by :mod:`freenets.data.tabular`; low-dimensional tasks,
where the graph holds most of a FreeNet's parameters, come from :mod:`freenets.data.synthetic`.
``train_size`` truncates the
training data to a stratified subset, as the paper does for EMNIST.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from freenets.data import download, images, synthetic, tabular
from freenets.errors import DataError

__all__ = [
    "Dataset",
    "Split",
    "dataset_locations",
    "dataset_names",
    "load_dataset",
    "load_digits",
    "truncate",
    "validation_split",
]


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
        raise DataError(
            f"{labels.size} training samples are too few to hold out a validation split; "
            "use more data (a larger --train-size)"
        )
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


def _from_arrays(name: str, arrays: tuple[np.ndarray, ...], n_classes: int) -> Dataset:
    x_train, y_train, x_test, y_test = (torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)
    return Dataset(name, x_train, y_train, x_test, y_test, n_classes)


def _load_images(
    source: images.ImageSource,
    name: str,
    data_dir: str | Path | None = None,
    allow_download: bool = True,
) -> Dataset:
    arrays = images.load_images(source, data_dir, allow_download=allow_download)
    return _from_arrays(name, arrays, source.n_classes)


def truncate(dataset: Dataset, size: int, seed: int = 0) -> Dataset:
    """Keep a stratified random subset of ``size`` training samples; the test set stays whole.

    The subset is drawn with its own fixed ``seed`` (0), not the run's, so that the truncated
    dataset is the same for every run, as a fixed part of the dataset's definition. Each class
    keeps its share of the training data, rounded by largest remainder to total ``size``.

    Raises
    ------
    DataError
        ``size`` is not between 1 and the number of training samples.
    """
    labels = dataset.y_train.numpy()
    if not 1 <= size <= labels.size:
        raise DataError(
            f"--train-size {size}: {dataset.name} has {labels.size} training samples; "
            f"choose a size from 1 to {labels.size}"
        )
    classes, counts = np.unique(labels, return_counts=True)
    quotas = counts * size / labels.size
    keep = np.floor(quotas).astype(np.int64)
    # Largest remainder: the classes with the biggest fractional parts get the missing samples.
    order = np.argsort(-(quotas - keep), kind="stable")
    keep[order[: size - int(keep.sum())]] += 1
    rng = np.random.default_rng(seed)
    chosen = [
        rng.permutation(np.flatnonzero(labels == label))[:count]
        for label, count in zip(classes, keep, strict=True)
    ]
    index = torch.from_numpy(np.sort(np.concatenate(chosen)))
    return Dataset(
        name=dataset.name,
        x_train=dataset.x_train[index],
        y_train=dataset.y_train[index],
        x_test=dataset.x_test,
        y_test=dataset.y_test,
        n_classes=dataset.n_classes,
    )


def _load_synthetic(
    name: str, make: Callable[[], synthetic.Arrays], n_classes: int, **options: object
) -> Dataset:
    return _from_arrays(name, make(), n_classes)


def _load_projected(data_dir: str | Path | None = None, allow_download: bool = True) -> Dataset:
    source = images.load_images(images.FASHION_MNIST, data_dir, allow_download=allow_download)
    arrays = synthetic.projected(source, 32, seed=0)
    return _from_arrays("fashion-mnist-32", arrays, images.FASHION_MNIST.n_classes)


LOADERS: dict[str, Callable[..., Dataset]] = {
    "digits": lambda data_dir=None, **options: load_digits(),
    # Low-dimensional tasks (graph-dominated FreeNets), each the same arrays everywhere (seed 0).
    "spirals": partial(_load_synthetic, "spirals", synthetic.spirals, 2),
    "checkerboard": partial(_load_synthetic, "checkerboard", synthetic.checkerboard, 2),
    "classification16": partial(_load_synthetic, "classification16", synthetic.classification, 4),
    "fashion-mnist-32": _load_projected,
    "mnist": partial(_load_images, images.MNIST, "mnist"),
    "fashion-mnist": partial(_load_images, images.FASHION_MNIST, "fashion-mnist"),
    "kmnist": partial(_load_images, images.KMNIST, "kmnist"),
    # "emnist" is the balanced split (47 classes); the others name their split.
    "emnist": partial(_load_images, images.emnist("balanced"), "emnist"),
    "emnist-letters": partial(_load_images, images.emnist("letters"), "emnist-letters"),
    "emnist-digits": partial(_load_images, images.emnist("digits"), "emnist-digits"),
}


def dataset_names() -> list[str]:
    """Names accepted by :func:`load_dataset` (besides paths to ``.npz`` and ``.csv`` files)."""
    return sorted(LOADERS)


def is_known(name: str) -> bool:
    """Whether :func:`load_dataset` accepts ``name``: a dataset name or a ``.npz``/``.csv`` path."""
    return name in LOADERS or tabular.is_data_file(name)


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    train_size: int | None = None,
    target: str | None = None,
    allow_download: bool = True,
) -> Dataset:
    """Load a dataset by name, or a user's ``.npz``/``.csv`` file by path.

    Parameters
    ----------
    name : str
        One of :func:`dataset_names`, or a path ending in ``.npz`` or ``.csv``.
    data_dir : str or Path, optional
        Directory holding the dataset's IDX files (the standard names, gzipped or not). Without
        it the files are looked for in the system's and the download cache's folders, then
        downloaded.
    train_size : int, optional
        Keep this many training samples (:func:`truncate`); all of them when None.
    target : str, optional
        The label column of a ``.csv`` file (default ``label``).
    allow_download : bool
        Whether missing files may be downloaded.

    Raises
    ------
    DataError
        The name is unknown, or the data cannot be found, downloaded or read.
    """
    if tabular.is_data_file(name):
        arrays = tabular.load_table(name, target)
        dataset = _from_arrays(Path(name).stem, arrays, int(arrays[1].max()) + 1)
    elif name not in LOADERS:
        raise DataError(
            f"unknown dataset {name!r}; choose one of: {', '.join(dataset_names())}, "
            "or give a path to a .npz or .csv file"
        )
    elif target is not None:
        raise DataError(f"--target names a column of a .csv file; {name} is not one")
    else:
        dataset = LOADERS[name](data_dir=data_dir, allow_download=allow_download)
    return dataset if train_size is None else truncate(dataset, train_size)


def dataset_locations() -> dict[str, str]:
    """Where each named dataset would be read from now, without downloading anything."""
    where: dict[str, str] = {}
    for name in dataset_names():
        loader = LOADERS[name]
        if name == "fashion-mnist-32":
            where[name] = "projected from fashion-mnist (32 inputs, a fixed seeded projection)"
            continue
        if not isinstance(loader, partial) or loader.func is _load_synthetic:
            where[name] = "bundled with scikit-learn" if name == "digits" else "generated (seed 0)"
            continue
        source: images.ImageSource = loader.args[0]
        try:
            where[name] = str(images.locate(source, allow_download=False)[0].parent)
        except DataError:
            where[name] = f"not found; downloads into {download.cache_root() / source.name}"
    return where
