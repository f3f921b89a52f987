"""CPU drivers of the neurons' forward substitution (paper, section 5; see :mod:`kernels`).

They prepare torch tensors for the compiled loops of :mod:`freenets.kernels.loops` and split the
calls between threads:

- dense graphs, in the ``(B, k)`` layout: the compiled loops solve the whole graph for groups of
  four samples, each thread its own groups (:func:`dense_forward`, :func:`dense_backward`); the
  weight gradient is a matrix product;
- pruned graphs, over their active edges (CSR), the batch cut in tiles of samples (each tile
  one contiguous row per neuron), each thread its own tiles (:func:`sparse_forward`,
  :func:`sparse_backward`, :func:`csr_forward`).
"""

from __future__ import annotations

import numpy as np
import torch

from freenets.kernels import loops, vector
from freenets.kernels.threads import run as _run


def numpy(tensor: torch.Tensor) -> np.ndarray:
    """A numpy view of a contiguous CPU tensor (no copy)."""
    return tensor.detach().numpy()


# --------------------------------------------------------------------------- drivers (torch side)

# The dense loops take the neurons in blocks whose rows of the weight fit in this many bytes of
# cache (a core's L2 holds 1 MiB on the 2-core machine), for every group of samples in turn.
_BLOCK_BYTES = 256 * 1024
# The sparse loops' tiles: a tile of every neuron should fit in a core's L2 (1 MiB on the
# 2-core machine). Measured there, one thread, float32 forward: at k = 10,000 (1%) rows of 128
# bytes ran at 13.6 G multiply-adds/s against 9.4 for rows of 256; at k <= 3162 the 256-byte
# rows as fast or faster (22.6 against 17.0 at k = 300).
_TILE_CACHE_BYTES = 1024 * 1024
# A gathered (or scattered) edge weight counts as this many multiply-adds towards splitting the
# call between threads (``threads.PARALLEL_WORK``): from 125,000 edges on. Measured on the 2-core
# machine (Zen 3), the two gathers of a forward, one thread against two, caches cold: 50,000
# edges (k = 1000, 10%) 0.28 against 0.32 ms; 150,000, 0.53 both; 200,000 (k = 2000), 1.74
# against 1.24.
_GATHER_WORK = 8
# The backward of the sparse loops computes the edges' weight gradients in the same pass while
# their per-tile sums, ``(tiles, n_edges)``, fit in this many bytes (batch 128 at k = 10,000, 1%:
# 8 MB); beyond, a second pass reads both rows of every edge again. Measured on the 2-core
# machine (Zen 3), two threads, backward with the edges' gradients, one pass against two: k =
# 10,000, 1%, batch 128: 13.2 against 15.6 ms; k = 1000, 10%, batch 1024: 3.86 against 6.85 ms.
_PARTIAL_BYTES = 64 * 1024 * 1024
# Rows of the weight gradient per matrix product: ``dL/dW[s:e, :e]``, so that the products skip
# most of the upper triangle, which the graph never uses.
_GRADIENT_ROWS = 256


def _block(k: int, itemsize: int) -> int:
    """Neurons per block of the dense loops: a multiple of four, whole ``k`` when it fits."""
    rows = _BLOCK_BYTES // max(1, k * itemsize) // 4 * 4
    return max(4, min(-(-k // 4) * 4, rows))


def _lower_gradient(g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``dL/dW = g^T h`` on the strict lower triangle, zeros on and above the diagonal."""
    k = g.shape[1]
    if k <= _GRADIENT_ROWS:
        return torch.mm(g.t(), h).tril_(-1)
    grad_weight = torch.empty(k, k, dtype=g.dtype)
    for start in range(0, k, _GRADIENT_ROWS):
        stop = min(k, start + _GRADIENT_ROWS)
        rows = grad_weight[start:stop]
        rows[:, :stop].addmm_(g[:, start:stop].t(), h[:, :stop], beta=0)
        rows[:, start:stop].tril_(-1)
        rows[:, stop:].zero_()
    return grad_weight


def dense_forward(z: torch.Tensor, effective: torch.Tensor) -> torch.Tensor:
    """Activations ``(B, k)`` from ``z`` and the (detached) masked weight.

    Only the strict lower triangle of ``effective`` is read. Threads split the batch in groups
    of four samples and run the whole forward substitution each on its own samples.
    """
    h = z.detach().clone(memory_format=torch.contiguous_format)
    batch, k = h.shape
    weight = effective.contiguous()
    zero = weight.numpy().dtype.type(0)
    arrays = (h.numpy(), weight.numpy(), zero, _block(k, h.element_size()))
    _run(loops.dense_forward, arrays, batch, batch * k * k / 2, loops.GROUP)
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
    zero = weight.numpy().dtype.type(0)
    arrays = (g.numpy(), h.numpy(), weight.numpy(), zero, _block(k, g.element_size()))
    _run(loops.dense_backward, arrays, batch, batch * k * k / 2, loops.GROUP)
    grad_weight = _lower_gradient(g, h) if need_weight else None
    if grad_weight is not None and mask is not None:
        grad_weight.mul_(mask)
    return g, grad_weight


def lanes(k: int, dtype: torch.dtype, batch: int) -> int:
    """Samples per tile of the sparse loops for ``k`` neurons and ``batch`` samples: rows of
    ``vector.WIDE`` bytes while one tile of every neuron fits in :data:`_TILE_CACHE_BYTES`,
    ``vector.NARROW`` beyond, and for a batch that one narrow row holds.

    A batch of 32 float32 samples in wide rows would be half padding: narrow rows give the same
    results bit for bit (the padding lanes add zeros) and measured faster, one thread, forward
    and backward with the weight's gradient, 2 to 12% at k = 50 to 300 (2-core machine).
    """
    itemsize = dtype.itemsize
    wide = k * vector.WIDE <= _TILE_CACHE_BYTES and batch * itemsize > vector.NARROW
    return (vector.WIDE if wide else vector.NARROW) // itemsize


def csr_forward(
    z: torch.Tensor, indptr: np.ndarray, indices: np.ndarray, values: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """Activations ``(B, k)`` over the edges of a CSR graph (rows are target neurons).

    Returns ``(h, tiles)``: ``tiles`` is the ``(tiles, k, lanes)`` array the loops work in
    (what the backward reads). Each thread moves its own tiles' samples in and out.
    """
    batch, k = z.shape
    width = lanes(k, z.dtype, batch)
    tiles = torch.empty(-(-batch // width), k, width, dtype=z.dtype)
    h = torch.empty(batch, k, dtype=z.dtype)
    arrays = (numpy(z.contiguous()), h.numpy(), tiles.numpy(), indptr, indices, values)
    _run(loops.csr_forward, arrays, tiles.shape[0], batch * values.shape[0], 1)
    return h, tiles


def add_at(flat: torch.Tensor, index: torch.Tensor, values: torch.Tensor) -> None:
    """``flat[index] += values`` in place: a contiguous 1-d float32 or float64 CPU tensor,
    ``index`` distinct int64 positions (any order), ``values`` of ``flat``'s dtype; large calls
    are split between threads."""
    arrays = (flat.numpy(), numpy(index.contiguous()), numpy(values.contiguous()))
    _run(loops.add_flat, arrays, index.shape[0], index.shape[0] * _GATHER_WORK, 1)


def sparse_forward(z: torch.Tensor, weight: torch.Tensor, graph) -> tuple[torch.Tensor, ...]:
    """Activations over the active edges only; returns ``(h, tiles, values_t)``, the last the
    edges' weights by source neuron, as :func:`sparse_backward` reads them."""
    positions, order, _ = graph.edge_arrays
    weights = numpy(weight.contiguous()).reshape(-1)
    values = np.empty(graph.n_edges, dtype=weights.dtype)
    values_t = torch.empty(graph.n_edges, dtype=z.dtype)
    work = graph.n_edges * _GATHER_WORK
    _run(loops.gather, (weights, positions, values), graph.n_edges, work, 1)
    _run(loops.gather, (values, order, values_t.numpy()), graph.n_edges, work, 1)
    indptr, indices = graph.csr
    h, tiles = csr_forward(z, indptr, indices, values)
    return h, tiles, values_t


def sparse_backward(
    grad_h: torch.Tensor,
    h_tiles: torch.Tensor,
    values_t: torch.Tensor,
    graph,
    need_weight: bool,
    per_edge: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(dL/dz, dL/dW)`` over the active edges only; ``h_tiles`` and ``values_t`` as from
    :func:`sparse_forward`. With ``per_edge``, ``dL/dW`` is the edges' gradients alone,
    ``(n_edges,)`` in the order of ``graph.edges``."""
    batch, k = grad_h.shape
    g = torch.empty(h_tiles.shape, dtype=grad_h.dtype)
    grad_z = torch.empty(batch, k, dtype=grad_h.dtype)
    indptr_t, indices_t = graph.csr_by_source
    work = batch * graph.n_edges
    arrays: tuple = (
        numpy(grad_h.contiguous()), grad_z.numpy(), g.numpy(), h_tiles.numpy(),
        indptr_t, indices_t, values_t.numpy(),
    )  # fmt: skip
    fused = need_weight and g.shape[0] * graph.n_edges * g.element_size() <= _PARTIAL_BYTES
    partial = np.empty((g.shape[0], graph.n_edges) if fused else (0, 0), dtype=arrays[0].dtype)
    _run(loops.csr_backward, (*arrays, partial), g.shape[0], work, 1)
    grad_weight = None
    if fused:
        _, order, positions_t = graph.edge_arrays
        if per_edge:
            grad_weight, index = torch.empty(graph.n_edges, dtype=grad_h.dtype), order
        else:
            grad_weight, index = torch.zeros(k, k, dtype=grad_h.dtype), positions_t
        arrays = (partial, index, grad_weight.view(-1).numpy())
        _run(loops.tile_sums, arrays, graph.n_edges, partial.size, 1)
    elif need_weight and per_edge:
        grad_weight = torch.empty(graph.n_edges, dtype=grad_h.dtype)
        indptr, indices = graph.csr
        arrays = (g.numpy(), h_tiles.numpy(), indptr, indices, grad_weight.numpy())
        _run(loops.csr_edge_gradient, arrays, k, work, 1, cumulative=lambda: indptr * batch)
    elif need_weight:
        grad_weight = torch.empty(k, k, dtype=grad_h.dtype)
        indptr, indices = graph.csr
        arrays = (g.numpy(), h_tiles.numpy(), indptr, indices, grad_weight.numpy())

        def cumulative() -> np.ndarray:  # a row costs its edges times the batch, plus k clears
            return indptr * batch + np.arange(k + 1) * max(1, k // 2)

        _run(loops.csr_weight_gradient, arrays, k, work, 1, cumulative=cumulative)
    return grad_z, grad_weight
