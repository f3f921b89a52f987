"""Streamed co-activation statistics NCAM and NCIM (paper, section 3.4; Algorithm 2, steps 3-4).

With S the ``(n, k)`` boolean matrix of which neurons fire on which sample, the paper defines
``NCAM = S^T S / n`` and ``NCIM = (not S)^T (not S) / n``. Both are accumulated batch by batch with
``S^T S`` (bit counting on the CPU, straight from the activations,
:class:`freenets.kernels.cofiring.CoFiring`; a matrix product per batch elsewhere), and NCIM is
derived without forming ``not S`` for all n: the samples where neither i nor j fires number ``n - f_i - f_j + c_ij``, with ``f`` each neuron's firing count and ``c = S^T S``.
Both matrices are integer counts divided once by n, so they are exact (an entry of exactly
``1 - eps`` stays so, and Prune's strict ``>`` keeps its edge) and exactly symmetric; rates
subtracted in floating point (``1 - a_i - a_j + NCAM``) gave 0.7500000000000001 for 3/4.
Memory is ``O(k^2 + batch * k)`` whatever n is.

:func:`firing` is the same pass without the ``(k, k)`` matrices: each neuron's firing count and
packed bits, from which :class:`Firing` gives NCAM and NCIM for the pairs asked, equal bit for bit
to those entries of :func:`coactivation`'s. FreeEvolve asks for few pairs
(:mod:`freenets.rules.freeevolve`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from torch import nn

from freenets.kernels.notice import compiling

Data = torch.Tensor | Iterable


@contextmanager
def _evaluation(model: nn.Module) -> Iterator[Callable[[torch.Tensor], torch.Tensor]]:
    """The model's activations of a batch (moved to its device), in eval mode for the pass;
    the mode is restored afterwards."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    # The documented contract (any module with activations); nn.Module types attributes as
    # Tensor | Module, which no isinstance check can narrow to a method.
    activations = cast(Callable[[torch.Tensor], torch.Tensor], model.activations)
    try:
        yield lambda x: activations(x.to(device))
    finally:
        model.train(was_training)


def _batches(data: Data, batch_size: int) -> Iterable[torch.Tensor]:
    """Inputs only, batch by batch, from a tensor or any iterable of tensors / (x, y) pairs."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
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
    counter = None  # CPU: S^T S by bit counting, its diagonal the counts of each neuron firing
    together = None  # elsewhere: S^T S by matrix products, batch by batch
    fired = None  # elsewhere: column sums of S
    n = 0
    with _evaluation(model) as activations:
        for x in _batches(data, batch_size):
            h = activations(x)  # (B, k); S = h > 0
            n += h.shape[0]
            if h.device.type == "cpu" and h.dtype in (torch.float32, torch.float64):
                if counter is None:
                    with compiling():  # numba: imported, and compiled, on first use
                        from freenets.kernels.cofiring import CoFiring

                        counter = CoFiring(h.shape[1])
                        counter.add(h)
                else:
                    counter.add(h)
                continue
            s = (h > 0).to(torch.float32)
            # float32 products of 0/1 are exact per batch (B < 2**24); totals in float64.
            batch_together = (s.transpose(0, 1) @ s).to(torch.float64).cpu()
            batch_fired = s.sum(dim=0).to(torch.float64).cpu()
            together = batch_together if together is None else together + batch_together
            fired = batch_fired if fired is None else fired + batch_fired
    if n == 0:
        raise ValueError("coactivation needs at least one sample")
    if counter is not None:
        cpu_together = counter.counts()
        together = cpu_together if together is None else together + cpu_together
        cpu_fired = torch.diagonal(cpu_together).clone()
        fired = cpu_fired if fired is None else fired + cpu_fired
    assert together is not None and fired is not None  # n > 0: some batch was counted
    # Counts below 2**53 are exact in float64, so both sums are exact integers before the one
    # division; the expression is symmetric in i and j term by term.
    neither = (n - fired[:, None] - fired[None, :]) + together  # (not S)^T (not S)
    return together / n, neither / n  # NCAM = S^T S / n, NCIM = (not S)^T (not S) / n


@dataclass(frozen=True)
class Firing:
    """Which neurons fired on which of ``n`` samples: NCAM and NCIM of any pairs, on request.

    Attributes
    ----------
    n : int
        Samples.
    fired : torch.Tensor
        ``(k,)`` float64: the samples on which each neuron fired (exact counts).
    packed : numpy.ndarray
        ``(k, words)`` uint64, the firing matrix ``S`` packed 64 samples to a word.
    """

    n: int
    fired: torch.Tensor
    packed: np.ndarray

    def together(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Samples on which both neurons of each pair fire (``S^T S`` at those entries)."""
        from freenets.kernels.cofiring import pair_counts

        return pair_counts(self.packed, rows.cpu(), cols.cpu())

    def ncam(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """NCAM at ``(rows[p], cols[p])``: :func:`coactivation`'s values, bit for bit."""
        return self.together(rows, cols) / self.n

    def ncim(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """NCIM at ``(rows[p], cols[p])``: :func:`coactivation`'s values, bit for bit."""
        neither = (self.n - self.fired[rows]) - self.fired[cols] + self.together(rows, cols)
        return neither / self.n


@torch.no_grad()
def firing(model: nn.Module, data: Data, *, batch_size: int = 1024) -> Firing:
    """The firing of ``model``'s neurons over ``data``, packed: :func:`coactivation`'s pass
    without its two ``(k, k)`` matrices (``k * n / 8`` bytes for ``n`` samples).

    Parameters
    ----------
    model, data, batch_size
        As :func:`coactivation` takes them.
    """
    bits = None
    with _evaluation(model) as activations:
        for x in _batches(data, batch_size):
            h = activations(x).cpu()  # (B, k); S = h > 0
            if h.dtype not in (torch.float32, torch.float64):
                h = (h > 0).to(torch.float32)  # the packing reads float32 and float64
            if bits is None:
                with compiling():  # numba: imported, and compiled, on first use
                    from freenets.kernels.cofiring import FiringBits

                    bits = FiringBits(h.shape[1])
                    bits.add(h)
            else:
                bits.add(h)
    if bits is None or bits.n_samples == 0:
        raise ValueError("firing needs at least one sample")
    packed = bits.packed()
    every = torch.arange(bits.n_neurons)
    from freenets.kernels.cofiring import pair_counts

    return Firing(n=bits.n_samples, fired=pair_counts(packed, every, every), packed=packed)
