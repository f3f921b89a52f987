"""The dense gradient that RigL's regrowth ranks (Evci et al. 2020, section 3).

For a FreeNet whose active edges are ``mask``, the dense gradient is ``dL/dW[j, i]`` for every
allowed position ``i < j``: the gradient the loss would have with respect to the edge ``i -> j``
if it existed with weight zero. The network computes the same function with the full
lower-triangular mask and the effective weights ``weight * mask`` (absent edges at zero), so the
dense gradient is the gradient of that weight matrix: the outer product over the batch
``dL/dW = g^T h`` of the neurons' backward signals ``g`` and activations ``h`` (see
:mod:`freenets.kernels`). google-research/rigl's ``SparseRigLOptimizer`` takes it the same way,
as the gradient of the masked weights.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
from torch import nn

from freenets import graph
from freenets.kernels import dag_activations


def dense_gradient(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    full: torch.Tensor | None = None,
) -> torch.Tensor:
    """``dL/dW`` at every allowed position of a FreeNet, the model itself left untouched.

    Parameters
    ----------
    model : FreeNet
        The network (``encoder``, ``weight``, ``mask``, ``decoder``). Its mask, weights and
        ``.grad`` fields are not modified; an encoder with running statistics (batch norm in
        training mode) updates them as any forward pass would.
    inputs, targets : torch.Tensor
        The batch.
    loss : callable
        ``loss(outputs, targets)``, a scalar.
    full : torch.Tensor, optional
        The dense ``(k, k)`` mask, passed by a caller that keeps one so that the kernels' cached
        structure of the dense graph is reused across calls.

    Returns
    -------
    torch.Tensor
        ``(k, k)``, zero on and above the diagonal, detached.
    """
    mask = cast(torch.Tensor, model.mask)
    weight = cast(torch.Tensor, model.weight)
    encoder = cast(nn.Module, model.encoder)
    decoder = cast(nn.Module, model.decoder)
    if full is None:
        full = graph.dense_mask(mask.shape[0], device=mask.device)
    with torch.enable_grad():
        with torch.no_grad():
            z = encoder(inputs)  # (B, k); the encoder's own gradient is not needed
        effective = (weight.detach() * mask.to(weight.dtype)).requires_grad_()
        h = dag_activations(z, effective, full)  # (B, k), the same values as model.activations
        value = loss(decoder(h), targets)
        # A graph with no possible edge (k = 1) leaves ``effective`` unused: its gradient is zero.
        (gradient,) = torch.autograd.grad(value, effective, allow_unused=True)
    if gradient is None:
        return torch.zeros_like(effective.detach())
    return gradient * full.to(gradient.dtype)
