"""FreeNet.compact (only active edges kept) and the analytic FLOP count."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from freenets import FreeNet
from freenets.kernels import reference_activations


@pytest.fixture(scope="module")
def pruned_model(random_mask):
    """``pruned_model(k, density, seed, in_features=6, out_features=3)``: a FreeNet on a random
    graph, and the generator that drew it, to draw the inputs."""

    def build(k, density, seed, in_features=6, out_features=3):
        generator = torch.Generator().manual_seed(seed)
        model = FreeNet(in_features, k, out_features, generator=generator)
        with torch.no_grad():
            model.mask.copy_(random_mask(k, density, generator))
        return model, generator

    return build


@settings(max_examples=20)
@given(
    k=st.integers(1, 40),
    batch=st.integers(1, 70),
    density=st.sampled_from([0.0, 0.2, 0.7, 1.0]),
    seed=st.integers(0, 2**31 - 1),
)
def test_compact_computes_what_the_model_computes(k, batch, density, seed, pruned_model):
    model, generator = pruned_model(k, density, seed)
    x = torch.randn(batch, 6, generator=generator)
    compact = model.compact()
    with torch.no_grad():
        torch.testing.assert_close(compact(x), model(x), rtol=1e-5, atol=1e-5)
        double = model.double()
        torch.testing.assert_close(
            compact.double()(x.double()), double(x.double()), rtol=0, atol=1e-10
        )


@settings(max_examples=20)
@given(
    k=st.integers(1, 150),
    batch=st.integers(1, 130),
    density=st.sampled_from([0.0, 0.05, 0.3, 1.0]),
    seed=st.integers(0, 2**31 - 1),
)
def test_compact_equals_the_reference_recurrence(k, batch, density, seed, pruned_model):
    """Against the plain per-neuron loop, not ``model(x)``, which may run the same CSR kernel."""
    model, generator = pruned_model(k, density, seed)
    model = model.double()
    x = torch.randn(batch, 6, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        h = reference_activations(model.encoder(x), model.weight, model.mask)
        expected = model.decoder(h)
        compact = model.compact()
        torch.testing.assert_close(compact.activations(x), h, rtol=0, atol=1e-10)
        torch.testing.assert_close(compact(x), expected, rtol=0, atol=1e-10)
        single = compact.float()
        torch.testing.assert_close(single(x.float()).double(), expected, rtol=1e-5, atol=1e-5)


def test_compact_stores_only_active_edges(pruned_model):
    model, _ = pruned_model(300, 0.05, seed=1)
    compact = model.compact()
    assert compact.n_edges == model.n_edges
    square = [name for name, t in compact.state_dict().items() if t.shape == (300, 300)]
    assert square == []
    stored = sum(t.numel() for t in compact.state_dict().values())
    assert stored < sum(t.numel() for t in model.state_dict().values()) / 3


def test_compact_on_the_pure_torch_path(pruned_model):
    """bfloat16 has no compiled kernel: the compact model rebuilds a dense weight for it."""
    model, generator = pruned_model(15, 0.5, seed=2)
    x = torch.randn(4, 6, generator=generator)
    expected = model(x).detach()
    compact = model.compact().to(torch.bfloat16)
    torch.testing.assert_close(compact(x.bfloat16()).float(), expected, rtol=0.05, atol=0.05)


def test_compact_does_not_follow_later_changes(pruned_model):
    model, generator = pruned_model(10, 0.5, seed=3)
    x = torch.randn(3, 6, generator=generator)
    compact = model.compact()
    before = compact(x)
    with torch.no_grad():
        model.weight.add_(1.0)
        model.decoder.weight.zero_()
    torch.testing.assert_close(compact(x), before, rtol=0, atol=0)


def test_flops_dense_and_pruned():
    k, inputs, outputs = 50, 784, 10
    model = FreeNet(inputs, k, outputs)
    dense = 2 * inputs * k + k + k * (k - 1) + 2 * k * outputs + outputs
    assert model.flops() == model.flops(dense=True) == dense
    with torch.no_grad():
        model.mask[10:, :10] = False
    removed = 40 * 10
    assert model.flops() == dense - 2 * removed
    assert model.flops(dense=True) == dense
    assert model.compact().flops() == model.flops()


def test_flops_need_a_linear_encoder():
    stem = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 5))
    model = FreeNet(4, 5, 2, encoder=stem)
    with pytest.raises(ValueError, match="nn.Linear encoder"):
        model.flops()
