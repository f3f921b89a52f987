"""The low-dimensional tasks: the same arrays for the same seed, others for others, and learnable."""

from __future__ import annotations

import numpy as np
import pytest

from freenets.data import dataset_locations, load_dataset, synthetic

MAKERS = {
    "spirals": synthetic.spirals,
    "checkerboard": synthetic.checkerboard,
    "classification16": synthetic.classification,
}


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_a_seed_fixes_the_arrays_and_another_seed_changes_them(name):
    make = MAKERS[name]
    first, again, other = make(300, 100, seed=1), make(300, 100, seed=1), make(300, 100, seed=2)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])
    x_train, y_train, x_test, y_test = first
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert x_train.shape[0] == 300 and x_test.shape[0] == 100
    assert x_train.min() == 0.0 and x_train.max() == 1.0  # scaled by the training part
    assert set(np.unique(y_train)) == set(range(int(y_train.max()) + 1))


def test_the_checkerboard_labels_are_the_squares_colours():
    x, y, _, _ = synthetic.checkerboard(500, 10, cells=2, seed=0)
    # Scaled by the sample's own range, which is nearly [0, 1]: away from the lines the colour
    # is that of the square.
    clear = (np.abs(x - 0.5) > 0.02).all(axis=1)
    expected = ((x[:, 0] > 0.5) ^ (x[:, 1] > 0.5)).astype(np.int64)
    np.testing.assert_array_equal(y[clear], expected[clear])


def test_named_synthetic_datasets_are_the_same_on_every_load():
    for name in ("spirals", "checkerboard", "classification16"):
        a, b = load_dataset(name), load_dataset(name)
        assert a.n_features in (2, 16) and a.x_train.shape[0] == 4000
        assert np.array_equal(a.x_train.numpy(), b.x_train.numpy())
        assert dataset_locations()[name] == "generated (seed 0)"


def test_a_projection_is_fixed_by_its_seed_and_keeps_labels_and_split():
    rng = np.random.default_rng(0)
    source = (
        rng.random((50, 784)).astype(np.float32),
        rng.integers(0, 10, 50),
        rng.random((20, 784)).astype(np.float32),
        rng.integers(0, 10, 20),
    )
    one, two = synthetic.projected(source, 32, seed=0), synthetic.projected(source, 32, seed=0)
    other = synthetic.projected(source, 32, seed=1)
    np.testing.assert_array_equal(one[0], two[0])
    assert one[0].shape == (50, 32) and one[2].shape == (20, 32)
    np.testing.assert_array_equal(one[1], source[1])
    np.testing.assert_array_equal(one[3], source[3])
    assert not np.array_equal(one[0], other[0])


@pytest.mark.slow
def test_fashion_mnist_32_is_fashion_mnist_projected():
    fashion, projected = load_dataset("fashion-mnist"), load_dataset("fashion-mnist-32")
    assert projected.n_features == 32 and projected.n_classes == 10
    assert np.array_equal(projected.y_train.numpy(), fashion.y_train.numpy())
    assert projected.x_train.shape[0] == 60000 and projected.x_test.shape[0] == 10000
