"""Low-dimensional datasets, where a FreeNet's graph holds most of its parameters.

A FreeNet over k neurons with d inputs has ``d * k`` encoder weights and up to ``k(k-1)/2`` edges:
on Fashion-MNIST (d = 784, k <= 100) the graph is at most 6% of the model, on a task of 2 to 32
inputs it is most of it. These loaders make such tasks without files, each from its own seed, so
that a named dataset is the same arrays on every machine and for every run's seed:

- :func:`spirals`: two interleaved spirals in the plane;
- :func:`checkerboard`: the colour of the square a uniform point falls in;
- :func:`classification`: scikit-learn's ``make_classification`` (informative, redundant and
  noise features, several clusters per class);
- :func:`projected`: a real dataset made low-dimensional by a fixed random projection (Fashion-MNIST
  to 32 dimensions is ``fashion-mnist-32``).

Every feature is scaled to [0, 1] by the training part's minimum and maximum, as the image sets'
pixels are; the test part is scaled the same way (it may fall slightly outside). Each returns the
arrays ``(x_train, y_train, x_test, y_test)``; :func:`freenets.data.load_dataset` names them.
"""

from __future__ import annotations

import numpy as np

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _scaled(x: np.ndarray, y: np.ndarray, n_train: int) -> Arrays:
    """The first ``n_train`` rows as training data, the rest as test, scaled by the training part."""
    low, high = x[:n_train].min(axis=0), x[:n_train].max(axis=0)
    x = ((x - low) / np.where(high > low, high - low, 1.0)).astype(np.float32)
    y = y.astype(np.int64)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def spirals(
    n_train: int = 4000,
    n_test: int = 2000,
    *,
    turns: float = 2.0,
    noise: float = 0.3,
    seed: int = 0,
) -> Arrays:
    """Two interleaved spirals of ``turns`` turns, with Gaussian noise of ``noise`` (radius 0 to 4*pi).

    Parameters
    ----------
    n_train, n_test : int
        Samples in the training and the test part (the classes alternate).
    turns : float
        Turns of each spiral.
    noise : float
        Standard deviation of the noise added to both coordinates.
    seed : int
        The data's own seed.
    """
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    y = np.arange(n) % 2
    angle = np.sqrt(rng.uniform(0.0, 1.0, n)) * turns * 2 * np.pi  # denser near the centre
    sign = np.where(y == 0, 1.0, -1.0)
    x = np.stack([sign * angle * np.cos(angle), sign * angle * np.sin(angle)], axis=1)
    x += rng.normal(0.0, noise, x.shape)
    return _scaled(x, y, n_train)


def checkerboard(
    n_train: int = 4000, n_test: int = 2000, *, cells: int = 4, seed: int = 0
) -> Arrays:
    """Uniform points of the unit square, labelled by the colour of their ``cells x cells`` square.

    Parameters
    ----------
    n_train, n_test : int
        Samples in the training and the test part.
    cells : int
        Squares per side.
    seed : int
        The data's own seed.
    """
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 1.0, (n_train + n_test, 2))
    y = (np.floor(x[:, 0] * cells) + np.floor(x[:, 1] * cells)).astype(np.int64) % 2
    return _scaled(x, y, n_train)


def classification(
    n_train: int = 4000,
    n_test: int = 2000,
    *,
    n_features: int = 16,
    n_classes: int = 4,
    seed: int = 0,
) -> Arrays:
    """scikit-learn's ``make_classification``: half the features informative, a quarter redundant.

    Parameters
    ----------
    n_train, n_test : int
        Samples in the training and the test part.
    n_features : int
        Input dimensions (at least 4).
    n_classes : int
        Classes, two clusters each.
    seed : int
        The data's own seed.
    """
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=n_train + n_test,
        n_features=n_features,
        n_informative=n_features // 2,
        n_redundant=n_features // 4,
        n_classes=n_classes,
        n_clusters_per_class=2,
        class_sep=1.0,
        random_state=seed,
    )
    return _scaled(x, y, n_train)


def projected(source: Arrays, dimensions: int = 32, *, seed: int = 0) -> Arrays:
    """``source``'s inputs projected to ``dimensions`` by a fixed Gaussian random matrix.

    The matrix (``d x dimensions``, entries ``N(0, 1/d)``) comes from ``seed`` alone, so that
    every run sees the same projected data; the labels and the train/test split are the source's.
    """
    x_train, y_train, x_test, y_test = source
    rng = np.random.default_rng(seed)
    d = x_train.reshape(len(x_train), -1).shape[1]
    matrix = rng.normal(0.0, 1.0 / np.sqrt(d), (d, dimensions))
    x = np.concatenate([x_train.reshape(len(x_train), d), x_test.reshape(len(x_test), d)])
    return _scaled(x.astype(np.float64) @ matrix, np.concatenate([y_train, y_test]), len(x_train))
