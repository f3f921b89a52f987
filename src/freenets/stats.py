"""Streamed co-activation statistics NCAM and NCIM (paper, section 3.4; Algorithm 2, steps 3-4).

With S the ``(n, k)`` boolean matrix of which neurons fire on which sample, the paper defines
``NCAM = S^T S / n`` and ``NCIM = (not S)^T (not S) / n``. Both are accumulated batch by batch with
one ``S^T S`` per batch (bit counting on the CPU, :mod:`freenets.kernels.cofiring`; a matrix product
elsewhere), and NCIM is derived without forming ``not S`` for all n: the samples where neither i
nor j fires number ``n - f_i - f_j + c_ij``, with ``f`` each neuron's firing count and ``c = S^T S``.
Both matrices are integer counts divided once by n, so they are exact (an entry of exactly
``1 - eps`` stays so, and Prune's strict ``>`` keeps its edge) and exactly symmetric; rates
subtracted in floating point (``1 - a_i - a_j + NCAM``) gave 0.7500000000000001 for 3/4.
Memory is ``O(k^2 + batch * k)`` whatever n is.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

Data = torch.Tensor | Iterable


def _batches(data: Data, batch_size: int) -> Iterable[torch.Tensor]:
    """Inputs only, batch by batch, from a tensor or any iterable of tensors / (x, y) pairs."""
    if isinstance(data, torch.Tensor):
        for start in range(0, data.shape[0], batch_size):
            yield data[start : start + batch_size]
        return
    for item in data:
        yield item[0] if isinstance(item, (tuple, list)) else item


@torch.no_grad()
def coactivation(
    model: nn.Module, data: Data, *, batch_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """NCAM and NCIM of ``model``'s neurons over ``data``.

    Parameters
    ----------
    model : nn.Module
        Anything with ``activations(x) -> (B, k)``, such as :class:`freenets.FreeNet`. It is put in
        eval mode for the pass and restored afterwards.
    data : torch.Tensor or iterable
        Inputs as one tensor (split into ``batch_size`` batches) or an iterable such as a
        ``DataLoader`` yielding tensors or ``(x, y)`` pairs.
    batch_size : int, default 1024
        Batch size when ``data`` is a tensor.

    Returns
    -------
    (ncam, ncim) : tuple of torch.Tensor
        Two ``(k, k)`` float64 tensors on the CPU, entries in ``[0, 1]``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    together = None  # S^T S, counts of samples where both neurons fire
    fired = None  # column sums of S, counts of samples where each neuron fires
    n = 0
    try:
        for x in _batches(data, batch_size):
            fires = model.activations(x.to(device)) > 0  # (B, k), S
            if fires.device.type == "cpu":
                from freenets.kernels.cofiring import co_firing  # numba: imported on first use

                batch_together = co_firing(fires)  # exact, by bit counting
            else:
                s = fires.to(torch.float32)
                # float32 products of 0/1 are exact per batch (B < 2**24); totals in float64.
                batch_together = (s.transpose(0, 1) @ s).to(torch.float64).cpu()
            batch_fired = fires.sum(dim=0).to(torch.float64).cpu()
            together = batch_together if together is None else together + batch_together
            fired = batch_fired if fired is None else fired + batch_fired
            n += fires.shape[0]
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("coactivation needs at least one sample")
    # Counts below 2**53 are exact in float64, so both sums are exact integers before the one
    # division; the expression is symmetric in i and j term by term.
    neither = (n - fired[:, None] - fired[None, :]) + together  # (not S)^T (not S)
    return together / n, neither / n  # NCAM = S^T S / n, NCIM = (not S)^T (not S) / n
