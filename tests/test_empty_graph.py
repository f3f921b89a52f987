"""A graph without edges costs a ReLU: its fast path against the reference recurrence."""

from __future__ import annotations

import pytest
import torch

from freenets import FreeNet
from freenets.kernels import choose_method, dag_activations, reference_activations, structure


@pytest.mark.parametrize("k", [1, 2, 5, 33])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_no_edges_equals_the_reference_in_values_and_gradients(k, dtype):
    generator = torch.Generator().manual_seed(k)
    z = torch.randn(7, k, dtype=dtype, generator=generator, requires_grad=True)
    weight = torch.randn(k, k, dtype=dtype, generator=generator, requires_grad=True)
    mask = torch.zeros(k, k, dtype=torch.bool)
    assert choose_method(structure(mask), z.device, dtype) == "none"
    upstream = torch.randn(7, k, dtype=dtype, generator=generator)
    fast = dag_activations(z, weight, mask)
    (fast * upstream).sum().backward()
    fast_grads = z.grad.clone(), weight.grad
    z.grad, weight.grad = None, None
    slow = reference_activations(z, weight, mask)
    (slow * upstream).sum().backward()
    torch.testing.assert_close(fast, slow, rtol=0, atol=0)
    torch.testing.assert_close(fast_grads[0], z.grad, rtol=0, atol=0)
    # The weight gets no gradient (None: zero, by PyTorch's convention), so that an optimiser
    # skips it; the reference's is zero (or None at k = 1, where it reads no weight).
    assert fast_grads[1] is None
    reference = weight.grad if weight.grad is not None else torch.zeros(k, k, dtype=dtype)
    assert torch.equal(reference, torch.zeros(k, k, dtype=dtype))


def test_a_model_whose_last_edge_goes_and_comes_back_follows_its_mask():
    torch.manual_seed(0)
    model = FreeNet(3, 6, 2)
    x = torch.rand(5, 3)
    model.mask.zero_()  # in place: counts at the next call
    empty = model(x)
    torch.testing.assert_close(empty, model.decoder(torch.relu(model.encoder(x))))
    model.mask[4, 1] = True
    with_edge = model(x)
    z = model.encoder(x)
    expected = model.decoder(reference_activations(z, model.weight, model.mask))
    torch.testing.assert_close(with_edge, expected)
    loss = with_edge.sum()
    loss.backward()
    assert model.weight.grad is not None
    assert model.weight.grad[~model.mask].abs().sum() == 0


def test_no_edges_under_no_grad_and_for_a_second_derivative():
    z = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    mask = torch.zeros(3, 3, dtype=torch.bool)
    with torch.no_grad():
        assert torch.equal(dag_activations(z, weight, mask), torch.relu(z))
    # A ReLU's second derivative, zero where it exists, as the reference's.
    for forward in (dag_activations, reference_activations):
        h = forward(z, weight, mask)
        (grad,) = torch.autograd.grad(h.square().sum(), z, create_graph=True)
        (second,) = torch.autograd.grad(grad.sum(), z)
        torch.testing.assert_close(second, 2 * (z > 0).double(), rtol=0, atol=0)


def test_an_optimiser_leaves_the_weight_of_a_graph_without_edges_alone():
    """No gradient: Adam neither moves the weight nor keeps state for it."""
    model = FreeNet(3, 6, 2)
    model.mask.zero_()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    before = model.weight.detach().clone()
    model(torch.rand(5, 3)).sum().backward()
    optimizer.step()
    assert model.weight.grad is None and model.weight not in optimizer.state
    assert torch.equal(model.weight, before)
    assert model.encoder.weight in optimizer.state
