"""Streamed NCAM/NCIM against the paper's definitions on the full S."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from freenets import FreeNet, coactivation, graph
from freenets.rules.freeevolve import free_evolve


def full_statistics(model, x):
    with torch.no_grad():
        s = (model.activations(x) > 0).to(torch.float64).T  # S, (k, n) as in the paper
    n = x.shape[0]
    not_s = 1.0 - s
    return s @ s.T / n, not_s @ not_s.T / n


@pytest.fixture
def model_and_data():
    generator = torch.Generator().manual_seed(0)
    model = FreeNet(6, 9, 2, generator=generator)
    x = torch.randn(103, 6, generator=generator)
    return model, x


@pytest.mark.parametrize("batch_size", [1, 7, 103, 1000, 50])
def test_streamed_statistics_equal_the_definition(model_and_data, batch_size):
    model, x = model_and_data
    ncam, ncim = coactivation(model, x, batch_size=batch_size)
    expected_ncam, expected_ncim = full_statistics(model, x)
    assert torch.allclose(ncam, expected_ncam, rtol=0, atol=1e-12)
    assert torch.allclose(ncim, expected_ncim, rtol=0, atol=1e-12)
    assert ncam.shape == ncim.shape == (9, 9)


def test_dataloader_of_pairs(model_and_data):
    model, x = model_and_data
    loader = DataLoader(TensorDataset(x, torch.zeros(len(x))), batch_size=10)
    ncam, ncim = coactivation(model, loader)
    expected_ncam, expected_ncim = full_statistics(model, x)
    assert torch.allclose(ncam, expected_ncam, atol=1e-12)
    assert torch.allclose(ncim, expected_ncim, atol=1e-12)


def test_training_mode_is_restored(model_and_data):
    model, x = model_and_data
    model.train()
    coactivation(model, x)
    assert model.training
    model.eval()
    coactivation(model, x)
    assert not model.training


def test_empty_data_is_refused(model_and_data):
    model, _ = model_and_data
    with pytest.raises(ValueError):
        coactivation(model, torch.empty(0, 6))


def firing_model(n_neurons):
    """A FreeNet whose neuron j fires exactly when input j is positive (identity encoder, no
    edges), so a test can choose S."""
    model = FreeNet(n_neurons, n_neurons, 1).double()
    with torch.no_grad():
        model.encoder.weight.copy_(torch.eye(n_neurons))
        model.encoder.bias.zero_()
        model.mask.zero_()
    return model


@pytest.mark.parametrize(
    ("n", "fires_0", "fires_1", "both"), [(12, 2, 2, 1), (20, 4, 2, 1), (20, 2, 4, 1)]
)
@pytest.mark.parametrize("batch_size", [1, 7, 1024])
def test_ncim_at_exactly_one_minus_epsilon_is_exact_and_not_pruned(
    n, fires_0, fires_1, both, batch_size
):
    """NCIM = 3/4 exactly: ``1 - a_i - a_j + NCAM`` in floating point gives 0.7500000000000001
    for these counts (on one side or both), which Prune's strict ``> 1 - eps`` would remove."""
    x = torch.zeros(n, 2, dtype=torch.float64)
    x[:fires_0, 0] = 1.0
    x[fires_0 - both : fires_0 - both + fires_1, 1] = 1.0
    ncam, ncim = coactivation(firing_model(2), x, batch_size=batch_size)
    assert ncim[1, 0].item() == ncim[0, 1].item() == 0.75
    assert ncam[1, 0].item() == ncam[0, 1].item() == both / n
    assert torch.equal(ncim, ncim.T) and torch.equal(ncam, ncam.T)
    assert ncim[0, 0].item() == (n - fires_0) / n and ncim[1, 1].item() == (n - fires_1) / n
    edge = graph.dense_mask(2)
    assert torch.equal(free_evolve(edge, ncam, ncim, epsilon=0.25), edge)


def test_ncim_is_exactly_symmetric_on_random_firing():
    generator = torch.Generator().manual_seed(3)
    x = (torch.rand(997, 30, generator=generator) < torch.rand(30, generator=generator)).double()
    ncam, ncim = coactivation(firing_model(30), x, batch_size=128)
    assert torch.equal(ncim, ncim.T) and torch.equal(ncam, ncam.T)
    s = x.T  # S, (k, n)
    counts = (1 - s) @ (1 - s).T  # exact integers in float64
    assert torch.equal(ncim, counts / 997)


@pytest.mark.parametrize(("k", "n"), [(65, 130), (130, 64), (200, 300)])
def test_more_than_64_neurons_equal_a_float_product(k, n):
    """Past 64 neurons the bit-counting kernel mirrors its lower triangle block by block."""
    generator = torch.Generator().manual_seed(k)
    x = (torch.rand(n, k, generator=generator) < torch.rand(k, generator=generator)).double()
    model = firing_model(k)
    ncam, ncim = coactivation(model, x, batch_size=97)
    s = (model.activations(x) > 0).double().T  # S, (k, n), as a plain float computation
    torch.testing.assert_close(ncam, s @ s.T / n, rtol=0, atol=1e-15)
    torch.testing.assert_close(ncim, (1 - s) @ (1 - s).T / n, rtol=0, atol=1e-15)
