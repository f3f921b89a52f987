"""FreeEvolve in a user's own training loop, and FreeNets fed by a convolutional encoder."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from freenets import Evolver, FreeNet, coactivation, graph
from freenets.data import dataset_names
from freenets.kernels import reference_activations

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "conv_stem_fashion_mnist.py"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    return x[:1200], y[:1200], x[1200:], y[1200:]


def test_evolver_in_a_plain_adam_loop_keeps_pruned_weights_still(digits):
    x_train, y_train, x_test, y_test = digits
    generator = torch.Generator().manual_seed(0)
    model = FreeNet(64, 24, 10, generator=generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    evolver = Evolver(model, epsilon=0.5, optimizer=optimizer)
    loss_fn = nn.CrossEntropyLoss()
    changed_edges = 0
    for _ in range(12):
        mask = model.mask.clone()
        before = model.weight.detach().clone()
        for start in range(0, x_train.shape[0], 64):
            loss = loss_fn(model(x_train[start : start + 64]), y_train[start : start + 64])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        # Weights of absent edges, pruned ones included, did not move during the epoch.
        assert torch.equal(model.weight.detach()[~mask], before[~mask])
        if not evolver.converged:
            step = evolver.step(x_train)
            changed = mask ^ model.mask
            changed_edges += int(changed.sum())
            assert step.added + step.pruned == int(changed.sum())
            state = optimizer.state[model.weight]
            assert (state["exp_avg"][changed] == 0).all()
            assert (state["exp_avg_sq"][changed] == 0).all()
    assert changed_edges > 0, "FreeEvolve never changed the graph"
    assert graph.is_valid_mask(model.mask)
    with torch.no_grad():
        accuracy = (model(x_test).argmax(dim=1) == y_test).float().mean().item()
    assert accuracy > 0.85


def test_an_edge_that_leaves_and_returns():
    model = FreeNet(3, 4, 2, generator=torch.Generator().manual_seed(1))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(2))

    def train_step() -> None:
        optimizer.zero_grad()
        (model(x) - 3.0).pow(2).sum().backward()  # pulls outputs up: no neuron dies
        optimizer.step()

    train_step()
    # An edge i -> j between neurons that fire together on some sample, so that it can train.
    ncam, _ = coactivation(model, x)
    j, i = (torch.tril(ncam, diagonal=-1) > 0).nonzero()[0].tolist()
    for readd in ("restore", "zero"):
        evolver = Evolver(model, epsilon=0.5, optimizer=optimizer, readd=readd)
        stored = float(model.weight.detach()[j, i])
        without = model.mask.clone()
        without[j, i] = False
        evolver.apply(without)
        for _ in range(3):
            train_step()
        assert float(model.weight.detach()[j, i]) == stored  # pruned: not moved by Adam's momentum
        evolver.apply(without | graph.dense_mask(4))
        expected = stored if readd == "restore" else 0.0
        assert float(model.weight.detach()[j, i]) == expected
        assert optimizer.state[model.weight]["exp_avg"][j, i] == 0  # returns with fresh state
        train_step()
        assert float(model.weight.detach()[j, i]) != expected  # and trains again


def test_evolver_takes_a_data_loader(digits):
    x_train, y_train, _, _ = digits
    model = FreeNet(64, 10, 10, generator=torch.Generator().manual_seed(0))
    from_tensor = Evolver(model, epsilon=0.5).step(x_train)
    model_again = FreeNet(64, 10, 10, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(TensorDataset(x_train, y_train), batch_size=100)
    from_loader = Evolver(model_again, epsilon=0.5).step(loader)
    assert from_loader.edges == from_tensor.edges
    assert torch.equal(model.mask, model_again.mask)


# ---------------------------------------------------------------------- convolutional encoders


def small_stem(n_neurons: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(4),  # (B, 4, 7, 7)
        nn.Flatten(),
        nn.Linear(4 * 7 * 7, n_neurons),
    )


def test_a_convolutional_stem_feeds_the_neurons():
    model = FreeNet(784, 12, 10, encoder=small_stem(12), generator=torch.Generator().manual_seed(0))
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    out = model(x)
    assert out.shape == (8, 10)
    expected = reference_activations(model.encoder(x), model.weight, model.mask)
    torch.testing.assert_close(model.activations(x), expected)
    # Gradients reach the convolutions, and equal those through the reference recurrence.
    names, parameters = zip(*model.named_parameters(), strict=True)
    fast = dict(zip(names, torch.autograd.grad(out.sum(), parameters), strict=True))
    slow = torch.autograd.grad(model.decoder(expected).sum(), parameters)
    for name, gradient in zip(names, slow, strict=True):
        torch.testing.assert_close(fast[name], gradient, msg=name)
    assert fast["encoder.0.weight"].abs().sum() > 0 and fast["weight"].abs().sum() > 0
    step = Evolver(model, epsilon=0.5).step(x)
    assert step.edges == model.n_edges


def test_an_encoder_of_the_wrong_width_is_refused():
    model = FreeNet(784, 12, 10, encoder=small_stem(11))
    with pytest.raises(ValueError, match=r"must output \(batch, 12\)"):
        model(torch.zeros(2, 1, 28, 28))


def load_example():
    spec = importlib.util.spec_from_file_location("conv_stem_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_conv_stem_example_trains_on_digits(capsys):
    result = load_example().main(["--dataset", "digits", "--epochs", "6", "--neurons", "16"])
    printed = capsys.readouterr().out
    assert printed.count("\nepoch ") + printed.startswith("epoch ") == 6
    assert 1 <= result["epoch"] <= 6
    assert result["val_accuracy"] > 0.5
    assert result["test_accuracy"] > 0.5
    assert result["edges"] == result["model"].n_edges


@pytest.mark.slow
def test_the_conv_stem_example_on_fashion_mnist():
    if "fashion-mnist" not in dataset_names():
        pytest.skip("freenets.data has no fashion-mnist loader")
    result = load_example().main(["--epochs", "2", "--neurons", "32", "--limit", "12000"])
    assert result["test_accuracy"] > 0.75
