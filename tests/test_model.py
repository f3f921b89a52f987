"""The FreeNet module: its forward against the per-neuron reference, and Claim 4.1."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from freenets import FreeNet, graph
from freenets.kernels import dag_activations, reference_activations


@pytest.fixture(scope="module")
def random_model(random_mask):
    """``random_model(k, seed, density, dtype=float64, in_features=5)``: a FreeNet on a random
    graph, and the generator that drew it, to draw the inputs."""

    def build(k: int, seed: int, density: float, dtype=torch.float64, in_features=5):
        generator = torch.Generator().manual_seed(seed)
        model = FreeNet(in_features, k, 3, generator=generator).to(dtype)
        with torch.no_grad():
            model.mask.copy_(random_mask(k, density, generator))
        return model, generator

    return build


@settings(max_examples=40)
@given(
    st.integers(1, 40),
    st.integers(1, 64),
    st.floats(0.0, 1.0),
    st.integers(0, 2**31 - 1),
)
def test_activations_equal_the_reference(random_model, k, batch, density, seed):
    model, generator = random_model(k, seed, density)
    x = torch.randn(batch, 5, generator=generator, dtype=torch.float64)
    expected = reference_activations(model.encoder(x), model.weight, model.mask)
    assert torch.allclose(model.activations(x), expected, rtol=0, atol=1e-10)


@settings(max_examples=15)
@given(st.integers(1, 20), st.integers(1, 16), st.floats(0.0, 1.0), st.integers(0, 2**31 - 1))
def test_gradients_equal_the_reference(random_model, k, batch, density, seed):
    model, generator = random_model(k, seed, density)
    x = torch.randn(batch, 5, generator=generator, dtype=torch.float64)
    target = torch.randn(batch, 3, generator=generator, dtype=torch.float64)

    def grads(forward):
        model.zero_grad()
        loss = ((model.decoder(forward(x)) - target) ** 2).sum()
        loss.backward()
        return {
            name: torch.zeros_like(p) if p.grad is None else p.grad.clone()
            for name, p in model.named_parameters()
        }

    fast = grads(model.activations)
    slow = grads(lambda x: reference_activations(model.encoder(x), model.weight, model.mask))
    for name in fast:
        assert torch.allclose(fast[name], slow[name], rtol=0, atol=1e-10), name
    assert not bool(fast["weight"][~model.mask].any())  # masked weights get exactly zero gradient


def test_gradcheck_small(random_model):
    model, generator = random_model(6, 1, 0.7)
    z = torch.randn(4, 6, generator=generator, dtype=torch.float64, requires_grad=True)
    weight = model.weight.detach().clone().requires_grad_(True)

    assert torch.autograd.gradcheck(lambda z, w: dag_activations(z, w, model.mask), (z, weight))


def test_shapes_and_contract():
    model = FreeNet(7, 4, 2)
    assert isinstance(model.encoder, nn.Linear) and model.encoder.out_features == 4
    assert model.weight.shape == (4, 4) and isinstance(model.weight, nn.Parameter)
    assert model.mask.dtype == torch.bool and torch.equal(model.mask, graph.dense_mask(4))
    assert "mask" in dict(model.named_buffers())
    assert model.decoder.in_features == 4 and model.decoder.out_features == 2
    x = torch.rand(3, 7)
    assert model(x).shape == (3, 2)
    assert model.activations(x).shape == (3, 4)
    assert bool((model.activations(x) >= 0).all())
    assert model.effective_params() == 7 * 4 + 4 + 6 + 4 * 2 + 2


def test_initialisation_is_seeded_and_bounded():
    a = FreeNet(10, 8, 3, generator=torch.Generator().manual_seed(5), bias_bound=0.05)
    b = FreeNet(10, 8, 3, generator=torch.Generator().manual_seed(5), bias_bound=0.05)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
    assert float(a.encoder.bias.detach().abs().max()) <= 0.05
    xavier = (6 / (8 + 8)) ** 0.5
    assert float(a.weight.detach().abs().max()) <= xavier


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_sizes_are_refused(bad):
    with pytest.raises(ValueError):
        FreeNet(3, bad, 2)


@pytest.mark.parametrize("widths", [[7], [5, 4], [6, 3, 5]])
def test_from_sequential_gives_the_same_outputs(widths):
    torch.manual_seed(0)
    sizes = [9, *widths, 4]
    layers: list[nn.Module] = []
    for index, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if index < len(sizes) - 2:
            layers.append(nn.ReLU())
    sequential = nn.Sequential(*layers).double()
    model = FreeNet.from_sequential(sequential)
    assert model.n_neurons == sum(widths)
    assert torch.equal(model.mask, graph.layered_mask(widths))
    x = torch.randn(32, 9, dtype=torch.float64)
    assert torch.allclose(model(x), sequential(x), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "sequential",
    [
        nn.Sequential(nn.Linear(3, 4)),
        nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)),
        nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(5, 2)),
        nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2), nn.ReLU()),
    ],
)
def test_from_sequential_refuses_other_shapes(sequential):
    with pytest.raises(ValueError):
        FreeNet.from_sequential(sequential)


def test_construction_leaves_the_global_generator_alone():
    state = torch.random.get_rng_state()
    FreeNet(10, 6, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.parametrize("idiom", ["data", "numpy", "no_grad"])
def test_pruning_the_mask_between_steps_counts_at_the_next_forward(idiom, random_model):
    """The usual pruning idioms change the graph the next forward and backward use."""
    model, generator = random_model(20, 4, 1.0)
    x = torch.randn(6, 5, generator=generator, dtype=torch.float64)
    model(x).sum().backward()  # the dense graph's structure is cached now
    model.zero_grad()
    if idiom == "data":
        model.mask.data[10:, :10] = False
    elif idiom == "numpy":
        model.mask.numpy()[10:, :10] = False
    else:
        with torch.no_grad():
            model.mask[10:, :10] = False
    assert model.n_edges == 190 - 100
    h = model.activations(x)
    expected = reference_activations(model.encoder(x), model.weight, model.mask)
    assert torch.allclose(h, expected, rtol=0, atol=1e-10)
    h.sum().backward()
    assert not bool(model.weight.grad[~model.mask].any())
