"""Streamed NCAM/NCIM against the paper's definitions on the full S."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from freenets import FreeNet, coactivation


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
