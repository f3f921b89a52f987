"""Forward and backward passes of a FreeNet's neurons (paper, section 5, "Model and Training setup").

Neuron j computes ``h[:, j] = relu(z[:, j] + sum_{i<j} weight[j, i] * mask[j, i] * h[:, i])``
where ``z`` is the encoder's output: a nonlinear forward substitution over a DAG.

Two implementations live here:

- :func:`reference_activations`, a plain per-neuron loop through autograd. It is the definition
  every other path is tested against, and is kept for tests only.
- :func:`dag_activations`, the path models use: one :class:`torch.autograd.Function` whose
  backward is solved directly. Once the ReLU gates ``D = (h > 0)`` are known the backward is
  linear, ``g = D * (dL/dh + W^T g)``, solved from the last neuron back.
"""

from __future__ import annotations

import torch


def reference_activations(
    z: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Per-neuron reference forward, differentiable through autograd.

    Parameters
    ----------
    z : torch.Tensor
        ``(B, k)`` encoder outputs (the neurons' inputs, biases included).
    weight : torch.Tensor
        ``(k, k)`` inter-neuron weights; ``weight[j, i]`` is the edge ``i -> j``.
    mask : torch.Tensor
        ``(k, k)`` bool graph, strictly lower-triangular.

    Returns
    -------
    torch.Tensor
        ``(B, k)`` activations ``h``.
    """
    effective = weight * mask.to(weight.dtype)
    columns: list[torch.Tensor] = []
    for j in range(z.shape[1]):
        total = z[:, j]
        for i in range(j):
            total = total + effective[j, i] * columns[i]
        columns.append(torch.relu(total))
    if not columns:
        return z.new_zeros(z.shape)
    return torch.stack(columns, dim=1)


def _forward(z: torch.Tensor, effective: torch.Tensor) -> torch.Tensor:
    """Forward substitution; ``effective`` is the masked weight. No autograd."""
    h = torch.zeros_like(z)
    for j in range(z.shape[1]):
        h[:, j] = torch.relu(z[:, j] + h[:, :j] @ effective[j, :j])
    return h


def _backward(grad_h: torch.Tensor, h: torch.Tensor, effective: torch.Tensor) -> torch.Tensor:
    """Solve ``g = D * (grad_h + g @ effective)`` from the last neuron back; returns ``g``."""
    g = torch.zeros_like(h)
    k = h.shape[1]
    for j in range(k - 1, -1, -1):
        upstream = grad_h[:, j] + g[:, j + 1 :] @ effective[j + 1 :, j]
        g[:, j] = upstream * (h[:, j] > 0).to(h.dtype)
    return g


class DagReLU(torch.autograd.Function):
    """Fused forward and backward of the neurons: returns ``h`` from ``(z, weight, mask)``."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        effective = weight * mask.to(weight.dtype)
        h = _forward(z.contiguous(), effective)
        ctx.save_for_backward(h, effective, mask)
        return h

    @staticmethod
    def backward(ctx, grad_h: torch.Tensor):
        h, effective, mask = ctx.saved_tensors
        g = _backward(grad_h.contiguous(), h, effective)
        grad_z = g if ctx.needs_input_grad[0] else None
        grad_weight = None
        if ctx.needs_input_grad[1]:
            # dL/dW[j, i] = sum_b g[b, j] h[b, i], only on active edges.
            grad_weight = (g.transpose(0, 1) @ h) * mask.to(h.dtype)
        return grad_z, grad_weight, None


def dag_activations(z: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Activations ``h`` of the neurons, ``(B, k)``, through the fused autograd function.

    Parameters
    ----------
    z : torch.Tensor
        ``(B, k)`` encoder outputs.
    weight : torch.Tensor
        ``(k, k)`` weights.
    mask : torch.Tensor
        ``(k, k)`` bool graph, strictly lower-triangular.
    """
    return DagReLU.apply(z, weight, mask)
