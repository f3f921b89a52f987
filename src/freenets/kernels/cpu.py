"""CPU drivers of the neurons' forward substitution (paper, section 5; see :mod:`kernels`).

They prepare torch tensors for the compiled loops of :mod:`freenets.kernels.loops` and split the
calls between threads:

- dense graphs, in the ``(B, k)`` layout: diagonal blocks of at most ``LEAF`` neurons are solved
  by the compiled loops, the blocks between them by matrix products (:func:`dense_forward`,
  :func:`dense_backward`);
- pruned graphs, over their active edges (CSR) in tiles of samples (:func:`sparse_forward`,
  :func:`sparse_backward`, :func:`csr_forward`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from freenets.kernels import loops

# ------------------------------------------------------------------------------------ threads

# Below this many multiply-adds a call runs on the calling thread alone. Measured on the 2-core
# machine, splitting smaller calls lost: torch's OpenMP workers, spinning after each matrix
# product, hold the other core, and handing a piece to a thread costs tens of microseconds.
_PARALLEL_WORK = 32_000_000
_pool: tuple[int, ThreadPoolExecutor] | None = None


def _executor(workers: int) -> ThreadPoolExecutor:
    """A pool of ``workers`` threads, made again after a fork or a change of thread count."""
    global _pool
    key = (os.getpid(), workers)
    if _pool is None or _pool[0] != key:
        if _pool is not None and _pool[0][0] == os.getpid():
            _pool[1].shutdown(wait=False)
        _pool = (key, ThreadPoolExecutor(workers, thread_name_prefix="freenets"))
    return _pool[1]


def _run(
    kernel,
    args: tuple,
    size: int,
    work: float,
    align: int,
    cumulative: Callable[[], np.ndarray] | None = None,
) -> None:
    """``kernel(*args, lo, hi)`` over ``[0, size)``, split in one piece per torch thread.

    Pieces start at multiples of ``align`` so each sample meets the same arithmetic whatever
    the number of threads; with ``cumulative`` (a function returning ``size + 1`` running totals
    of the work, such as a CSR ``indptr``; called only when the call is split) they carry equal
    work instead of equal length. The kernels release the GIL.
    """
    threads = 1 if work < _PARALLEL_WORK else torch.get_num_threads()
    if threads == 1 or size < 2 * align:
        kernel(*args, 0, size)
        return
    if cumulative is None:
        step = -(-size // threads // align) * align
        bounds = [(lo, min(size, lo + step)) for lo in range(0, size, step)]
    else:
        cumulative = cumulative()
        targets = cumulative[-1] * np.arange(1, threads) / threads
        cuts = [0, *np.searchsorted(cumulative, targets).tolist(), size]
        bounds = [(lo, hi) for lo, hi in zip(cuts[:-1], cuts[1:], strict=True) if hi > lo]
    futures = [_executor(threads - 1).submit(kernel, *args, lo, hi) for lo, hi in bounds[1:]]
    kernel(*args, *bounds[0])
    for future in futures:
        future.result()


def numpy(tensor: torch.Tensor) -> np.ndarray:
    """A numpy view of a contiguous CPU tensor (no copy)."""
    return tensor.detach().numpy()


# --------------------------------------------------------------------------- drivers (torch side)

# Diagonal blocks at most this wide are solved by the compiled loop; larger ones are split in
# two, the coupling between the halves being one matrix product.
LEAF = 128


def _split(start: int, stop: int) -> int:
    """A split point that keeps the leaves multiples of ``LEAF`` wide where possible."""
    half = (stop - start) // 2
    return start + max(LEAF, (half + LEAF // 2) // LEAF * LEAF)


def _diagonal_block(weight: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    if start == 0 and stop == weight.shape[0]:
        return weight.contiguous()  # no copy in the common case of a single block
    return weight[start:stop, start:stop].contiguous()


def _solve_forward(h: torch.Tensor, weight: torch.Tensor, start: int, stop: int) -> None:
    """Forward substitution on ``h[:, start:stop]``, which holds the pre-activations on entry."""
    if stop - start <= LEAF:
        block = _diagonal_block(weight, start, stop).numpy()
        work = h.shape[0] * (stop - start) ** 2 / 2
        _run(loops.dense_forward_block, (h.numpy(), block, start), h.shape[0], work, loops.GROUP)
        return
    middle = _split(start, stop)
    _solve_forward(h, weight, start, middle)
    # Contributions of the first half to the second: one matrix product.
    h[:, middle:stop].addmm_(h[:, start:middle], weight[middle:stop, start:middle].t())
    _solve_forward(h, weight, middle, stop)


def _solve_backward(
    g: torch.Tensor,
    h: torch.Tensor,
    weight: torch.Tensor,
    grad_weight: torch.Tensor | None,
    start: int,
    stop: int,
) -> None:
    """Backward substitution on ``g[:, start:stop]``, which holds ``dL/dh`` plus the
    contributions of later neurons on entry. Fills the rows ``grad_weight[start:stop]``: the
    products up to the diagonal (masked positions included), zeros on and above it."""
    if stop - start <= LEAF:
        n = stop - start
        arrays = (g.numpy(), h.numpy(), weight.numpy(), start, n)
        _run(loops.dense_backward_block, arrays, g.shape[0], g.shape[0] * n**2 / 2, loops.GROUP)
        if grad_weight is None:
            return
        # The rows of these neurons, from the first neuron to the block's diagonal, by one
        # product; the block's upper triangle and the rows' entries right of the block are
        # cleared, so that a dense graph needs no masking.
        rows = grad_weight[start:stop]
        rows[:, :stop].addmm_(g[:, start:stop].t(), h[:, :stop], beta=0)
        rows[:, start:stop].tril_(-1)
        rows[:, stop:].zero_()
        return
    middle = _split(start, stop)
    _solve_backward(g, h, weight, grad_weight, middle, stop)
    g[:, start:middle].addmm_(g[:, middle:stop], weight[middle:stop, start:middle])
    _solve_backward(g, h, weight, grad_weight, start, middle)


def dense_forward(z: torch.Tensor, effective: torch.Tensor) -> torch.Tensor:
    """Activations ``(B, k)`` from ``z`` and the (detached) masked weight, blocked.

    Only the strict lower triangle of ``effective`` is read.
    """
    h = z.detach().clone(memory_format=torch.contiguous_format)
    batch, k = h.shape
    weight = effective.contiguous()
    # One block, the common case, skips the recursion: measured 20 to 50 us less per training
    # step at k = 100 (where a whole step takes about 2 ms) than going through _solve_forward and
    # _solve_backward.
    if k <= LEAF:
        _run(
            loops.dense_forward_block,
            (h.numpy(), weight.numpy(), 0),
            batch,
            batch * k * k / 2,
            loops.GROUP,
        )
    else:
        _solve_forward(h, weight, 0, k)
    return h


def dense_backward(
    grad_h: torch.Tensor,
    h: torch.Tensor,
    effective: torch.Tensor,
    mask: torch.Tensor | None,
    need_weight: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(dL/dz, dL/dW)`` from ``dL/dh``; ``dL/dW`` is exactly zero off the graph.

    ``h`` and ``effective`` are detached; ``mask`` is the graph as 0/1 of the weight's dtype, or
    ``None`` for the dense graph.
    """
    g = grad_h.clone(memory_format=torch.contiguous_format)
    batch, k = g.shape
    h, weight = h.contiguous(), effective.contiguous()
    if k <= LEAF:  # one block: no recursion, no views (see dense_forward)
        arrays = (g.numpy(), h.numpy(), weight.numpy(), 0, k)
        _run(loops.dense_backward_block, arrays, batch, batch * k * k / 2, loops.GROUP)
        grad_weight = torch.mm(g.t(), h).tril_(-1) if need_weight else None
    else:
        # Every entry is written by a leaf.
        grad_weight = torch.empty(k, k, dtype=h.dtype) if need_weight else None
        _solve_backward(g, h, weight, grad_weight, 0, k)
    if grad_weight is not None and mask is not None:
        grad_weight.mul_(mask)
    return g, grad_weight


def _to_tiles(x: torch.Tensor) -> torch.Tensor:
    """``(B, k)`` to ``(tiles, k, TILE)``: each tile's rows contiguous, samples zero-padded."""
    batch, k = x.shape
    out = torch.empty(-(-batch // loops.TILE), k, loops.TILE, dtype=x.dtype)
    loops.tile(numpy(x.contiguous()), out.numpy())
    return out


def _from_tiles(tiled: torch.Tensor, batch: int) -> torch.Tensor:
    """``(tiles, k, TILE)`` back to a contiguous ``(B, k)``."""
    out = torch.empty(batch, tiled.shape[1], dtype=tiled.dtype)
    loops.untile(tiled.numpy(), out.numpy())
    return out


def csr_forward(
    z: torch.Tensor, indptr: np.ndarray, indices: np.ndarray, values: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """Activations ``(B, k)`` over the edges of a CSR graph (rows are target neurons).

    Returns ``(h, h_tiles)``, the second the ``(tiles, k, TILE)`` buffer the backward reads.
    """
    h_tiles = _to_tiles(z.detach())
    arrays = (numpy(h_tiles), indptr, indices, values)
    _run(loops.csr_forward, arrays, h_tiles.shape[0], z.shape[0] * values.shape[0], 1)
    return _from_tiles(h_tiles, z.shape[0]), h_tiles


def sparse_forward(z: torch.Tensor, weight: torch.Tensor, graph) -> tuple[torch.Tensor, ...]:
    """Activations over the active edges only; returns ``(h, h_tiles, values_t)``, the last the
    edges' weights by source neuron, as :func:`sparse_backward` reads them."""
    rows, cols, rows_t, cols_t = graph.edge_arrays
    weight = numpy(weight.contiguous())
    values = np.empty(graph.n_edges, dtype=weight.dtype)
    values_t = torch.empty(graph.n_edges, dtype=z.dtype)
    loops.gather(weight, rows, cols, values)
    loops.gather(weight, rows_t, cols_t, values_t.numpy())
    h, h_tiles = csr_forward(z, *graph.csr, values)
    return h, h_tiles, values_t


def sparse_backward(
    grad_h: torch.Tensor,
    h_tiles: torch.Tensor,
    values_t: torch.Tensor,
    graph,
    need_weight: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(dL/dz, dL/dW)`` over the active edges only; ``h_tiles`` and ``values_t`` as from
    :func:`sparse_forward`."""
    batch, k = grad_h.shape
    g_tiles = _to_tiles(grad_h)
    indptr_t, indices_t = graph.csr_by_source
    work = batch * graph.n_edges
    arrays = (numpy(g_tiles), numpy(h_tiles), indptr_t, indices_t, values_t.numpy())
    _run(loops.csr_backward, arrays, g_tiles.shape[0], work, 1)
    grad_weight = None
    if need_weight:
        grad_weight = torch.empty(k, k, dtype=grad_h.dtype)
        indptr, indices = graph.csr
        zero = arrays[-1].dtype.type(0)
        arrays = (numpy(g_tiles), numpy(h_tiles), indptr, indices, zero, grad_weight.numpy())

        def cumulative() -> np.ndarray:  # a row costs its edges times the batch, plus k clears
            return indptr * batch + np.arange(k + 1) * max(1, k // 2)

        _run(loops.csr_weight_gradient, arrays, k, work, 1, cumulative=cumulative)
    return _from_tiles(g_tiles, batch), grad_weight
