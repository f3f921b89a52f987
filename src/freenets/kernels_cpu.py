"""Compiled CPU loops of the neurons' forward substitution (paper, section 5; see :mod:`kernels`).

Two families of numba loops, both parallel over groups of samples so that each sample's arithmetic
is the same whatever the number of threads:

- dense blocks, in the ``(B, k)`` layout: a diagonal block of the graph is solved sample by sample,
  four samples at a time so each weight is loaded once per four multiply-adds. The blocks between
  them are matrix products, done by the caller (:func:`dense_forward`, :func:`dense_backward`).
- CSR rows, in the transposed ``(k, B)`` layout: each active edge ``i -> j`` adds ``w * h[i]`` to
  ``h[j]`` over a tile of samples, a contiguous loop the compiler vectorises. Work is proportional
  to the number of edges, so pruned graphs run faster than dense ones.

``cache=True`` keeps the compiled code on disk, so only the first call on a machine compiles.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from numba import njit

# Contraction (fused multiply-add) and reassociation let LLVM vectorise the short dot products;
# no "nnan"/"ninf", so NaNs and infinities still propagate as in torch.
_FAST = {"contract", "reassoc"}
# Not numba's parallel mode: its OpenMP pool spins between calls and takes a core from torch's own
# threads (15x slower steps on a busy 2-core machine). Threads come from :func:`_run` instead.
_OPTIONS = {"fastmath": _FAST, "cache": True, "nogil": True}
# Samples per tile of the CSR loops: 64 float32 fit in eight AVX registers.
TILE = 64


def _relu(a):
    return 0.0 if a < 0.0 else a  # NaN stays NaN, as with torch.relu


_relu = njit(inline="always")(_relu)


# Samples per group of the dense loops: eight running sums stay in registers, and each weight is
# loaded once per eight multiply-adds.
GROUP = 8


@njit(**_OPTIONS)
def _dense_forward_block(h, block, start, lo, hi):  # pragma: no cover - compiled
    """In place on ``h[lo:hi, start:start + n]``: pre-activations in, activations out.

    ``block`` is the ``(n, n)`` diagonal block of the masked weight; its upper triangle is not
    read.
    """
    n = block.shape[0]
    stop = start + n
    full = lo + (hi - lo) // GROUP * GROUP
    for b in range(lo, full, GROUP):
        h0, h1, h2, h3 = (
            h[b, start:stop],
            h[b + 1, start:stop],
            h[b + 2, start:stop],
            h[b + 3, start:stop],
        )
        h4, h5, h6, h7 = (
            h[b + 4, start:stop],
            h[b + 5, start:stop],
            h[b + 6, start:stop],
            h[b + 7, start:stop],
        )
        for j in range(n):
            row = block[j]
            a0, a1, a2, a3, a4, a5, a6, a7 = h0[j], h1[j], h2[j], h3[j], h4[j], h5[j], h6[j], h7[j]
            for i in range(j):
                w = row[i]
                a0 += w * h0[i]
                a1 += w * h1[i]
                a2 += w * h2[i]
                a3 += w * h3[i]
                a4 += w * h4[i]
                a5 += w * h5[i]
                a6 += w * h6[i]
                a7 += w * h7[i]
            h0[j], h1[j], h2[j], h3[j] = _relu(a0), _relu(a1), _relu(a2), _relu(a3)
            h4[j], h5[j], h6[j], h7[j] = _relu(a4), _relu(a5), _relu(a6), _relu(a7)
    for b in range(full, hi):
        hb = h[b, start:stop]
        for j in range(n):
            row = block[j]
            a = hb[j]
            for i in range(j):
                a += row[i] * hb[i]
            hb[j] = _relu(a)


@njit(**_OPTIONS)
def _dense_backward_block(g, h, weight, start, n, lo, hi):  # pragma: no cover - compiled
    """In place on ``g[lo:hi, start:start + n]``: solve ``g = D (rhs + W^T g)`` in the block.

    ``weight`` is the whole ``(k, k)`` masked weight. The block is solved as a forward
    substitution in reversed neuron order, ``p = start + n - 1 - i``: the block transposed and
    reversed, ``rev[a, b] = W[last - b, last - a]``, is lower-triangular with contiguous rows,
    and each group of samples' ``g`` is copied reversed into a small buffer. The loop is then
    the forward kernel's (contiguous dot products from index 0), gated by ``h > 0`` (read in
    place) instead of ReLU; solved in place in the ``(B, k)`` layout it would need a slice per
    neuron and sample.
    """
    last = start + n - 1
    rev = np.empty((n, n), dtype=weight.dtype)
    # Read the weight by rows (contiguous; a column of a large weight touches a cache line per
    # entry) and scatter into the small block, which stays in cache.
    for jl in range(1, n):
        source = weight[start + jl, start : start + jl]
        column = n - 1 - jl
        for il in range(jl):
            rev[n - 1 - il, column] = source[il]
    s = np.empty((GROUP, n), dtype=g.dtype)
    stop = start + n
    full = lo + (hi - lo) // GROUP * GROUP
    for b0 in range(lo, full, GROUP):
        for r in range(GROUP):
            for p in range(n):
                s[r, p] = g[b0 + r, last - p]
        s0, s1, s2, s3, s4, s5, s6, s7 = s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]
        # The gates, in the original order: neuron p of the reversed buffer is n - 1 - p here.
        e0, e1, e2, e3 = (
            h[b0, start:stop],
            h[b0 + 1, start:stop],
            h[b0 + 2, start:stop],
            h[b0 + 3, start:stop],
        )
        e4, e5, e6, e7 = (
            h[b0 + 4, start:stop],
            h[b0 + 5, start:stop],
            h[b0 + 6, start:stop],
            h[b0 + 7, start:stop],
        )
        for j in range(n):
            row = rev[j]
            a0, a1, a2, a3, a4, a5, a6, a7 = s0[j], s1[j], s2[j], s3[j], s4[j], s5[j], s6[j], s7[j]
            for i in range(j):
                w = row[i]
                a0 += w * s0[i]
                a1 += w * s1[i]
                a2 += w * s2[i]
                a3 += w * s3[i]
                a4 += w * s4[i]
                a5 += w * s5[i]
                a6 += w * s6[i]
                a7 += w * s7[i]
            s0[j] = a0 if e0[n - 1 - j] > 0.0 else 0.0
            s1[j] = a1 if e1[n - 1 - j] > 0.0 else 0.0
            s2[j] = a2 if e2[n - 1 - j] > 0.0 else 0.0
            s3[j] = a3 if e3[n - 1 - j] > 0.0 else 0.0
            s4[j] = a4 if e4[n - 1 - j] > 0.0 else 0.0
            s5[j] = a5 if e5[n - 1 - j] > 0.0 else 0.0
            s6[j] = a6 if e6[n - 1 - j] > 0.0 else 0.0
            s7[j] = a7 if e7[n - 1 - j] > 0.0 else 0.0
        for r in range(GROUP):
            for p in range(n):
                g[b0 + r, last - p] = s[r, p]
    s0 = s[0]
    for b in range(full, hi):
        for p in range(n):
            s0[p] = g[b, last - p]
        for j in range(n):
            row = rev[j]
            a = s0[j]
            for i in range(j):
                a += row[i] * s0[i]
            s0[j] = a if h[b, last - j] > 0.0 else 0.0
        for p in range(n):
            g[b, last - p] = s0[p]


@njit(**_OPTIONS)
def _csr_forward(h, indptr, indices, values, lo, hi):  # pragma: no cover - compiled
    """In place on tiles ``lo:hi`` of ``h``, ``(tiles, k, TILE)``: pre-activations in,
    activations out. Neuron ``j``'s predecessors are ``indices[indptr[j]:indptr[j + 1]]``,
    with the weights ``values`` at the same positions."""
    k = h.shape[1]
    for tile in range(lo, hi):
        ht = h[tile]
        for j in range(k):
            hj = ht[j]
            for p in range(indptr[j], indptr[j + 1]):
                w = values[p]
                source = ht[indices[p]]
                for t in range(TILE):
                    hj[t] += w * source[t]
            for t in range(TILE):
                hj[t] = _relu(hj[t])


@njit(**_OPTIONS)
def _csr_backward(g, h, indptr_t, indices_t, values_t, lo, hi):  # pragma: no cover - compiled
    """In place on tiles ``lo:hi`` of ``g``, ``(tiles, k, TILE)``: ``dL/dh`` in, ``dL/dz`` out.

    ``indptr_t, indices_t, values_t`` hold the graph by source neuron: the row of neuron ``i``
    lists its successors ``j`` with the weight ``W[j, i]``.
    """
    k = g.shape[1]
    for tile in range(lo, hi):
        gt = g[tile]
        ht = h[tile]
        for i in range(k - 1, -1, -1):
            gi = gt[i]
            hi_ = ht[i]
            for p in range(indptr_t[i], indptr_t[i + 1]):
                w = values_t[p]
                target = gt[indices_t[p]]
                for t in range(TILE):
                    gi[t] += w * target[t]
            for t in range(TILE):
                gi[t] = gi[t] if hi_[t] > 0.0 else 0.0


@njit(**_OPTIONS)
def _gather(weight, rows, cols, out):  # pragma: no cover - compiled
    """``out[p] = weight[rows[p], cols[p]]``."""
    for p in range(rows.shape[0]):
        out[p] = weight[rows[p], cols[p]]


@njit(**_OPTIONS)
def _tile(x, out):  # pragma: no cover - compiled
    """``(B, k)`` into ``(tiles, k, TILE)``, samples past ``B`` zero."""
    batch, k = x.shape
    for tile in range(out.shape[0]):
        first = tile * TILE
        width = min(TILE, batch - first)
        target = out[tile]
        for j in range(k):
            row = target[j]
            for t in range(width):
                row[t] = x[first + t, j]
            for t in range(width, TILE):
                row[t] = 0.0


@njit(**_OPTIONS)
def _untile(tiled, out):  # pragma: no cover - compiled
    """``(tiles, k, TILE)`` back into ``(B, k)``."""
    batch, k = out.shape
    for b in range(batch):
        source = tiled[b // TILE]
        t = b % TILE
        row = out[b]
        for j in range(k):
            row[j] = source[j, t]


@njit(**_OPTIONS)
def _csr_weight_gradient(g, h, indptr, indices, zero, grad, lo, hi):  # pragma: no cover
    """Rows ``lo:hi`` of ``dL/dW``: ``sum_b g[b, j] h[b, i]`` on the edges, 0 elsewhere.

    ``g`` and ``h`` are ``(tiles, k, TILE)``; ``zero`` has the dtype of the sums, so float32 is
    summed in float32 (vectorised).
    """
    for j in range(lo, hi):
        out = grad[j]
        for i in range(out.shape[0]):
            out[i] = zero
        for tile in range(g.shape[0]):
            target = g[tile, j]
            ht = h[tile]
            for p in range(indptr[j], indptr[j + 1]):
                i = indices[p]
                source = ht[i]
                total = zero
                for t in range(TILE):
                    total += target[t] * source[t]
                out[i] += total


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
        _run(_dense_forward_block, (h.numpy(), block, start), h.shape[0], work, GROUP)
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
        _run(_dense_backward_block, arrays, g.shape[0], g.shape[0] * n**2 / 2, GROUP)
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
    if k <= LEAF:  # one block, the common case: no views to make
        _run(_dense_forward_block, (h.numpy(), weight.numpy(), 0), batch, batch * k * k / 2, GROUP)
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
    if k <= LEAF:  # one block, the common case: no views to make
        arrays = (g.numpy(), h.numpy(), weight.numpy(), 0, k)
        _run(_dense_backward_block, arrays, batch, batch * k * k / 2, GROUP)
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
    out = torch.empty(-(-batch // TILE), k, TILE, dtype=x.dtype)
    _tile(numpy(x.contiguous()), out.numpy())
    return out


def _from_tiles(tiled: torch.Tensor, batch: int) -> torch.Tensor:
    """``(tiles, k, TILE)`` back to a contiguous ``(B, k)``."""
    out = torch.empty(batch, tiled.shape[1], dtype=tiled.dtype)
    _untile(tiled.numpy(), out.numpy())
    return out


def csr_forward(
    z: torch.Tensor, indptr: np.ndarray, indices: np.ndarray, values: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """Activations ``(B, k)`` over the edges of a CSR graph (rows are target neurons).

    Returns ``(h, h_tiles)``, the second the ``(tiles, k, TILE)`` buffer the backward reads.
    """
    h_tiles = _to_tiles(z.detach())
    arrays = (numpy(h_tiles), indptr, indices, values)
    _run(_csr_forward, arrays, h_tiles.shape[0], z.shape[0] * values.shape[0], 1)
    return _from_tiles(h_tiles, z.shape[0]), h_tiles


def sparse_forward(z: torch.Tensor, weight: torch.Tensor, graph) -> tuple[torch.Tensor, ...]:
    """Activations over the active edges only; returns ``(h, h_tiles, values_t)``, the last the
    edges' weights by source neuron, as :func:`sparse_backward` reads them."""
    rows, cols, rows_t, cols_t = graph.edge_arrays
    values = np.empty(graph.n_edges, dtype=numpy(z).dtype)
    values_t = torch.empty(graph.n_edges, dtype=z.dtype)
    weight = numpy(weight.contiguous())
    _gather(weight, rows, cols, values)
    _gather(weight, rows_t, cols_t, values_t.numpy())
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
    _run(_csr_backward, arrays, g_tiles.shape[0], work, 1)
    grad_weight = None
    if need_weight:
        grad_weight = torch.empty(k, k, dtype=grad_h.dtype)
        indptr, indices = graph.csr
        zero = arrays[-1].dtype.type(0)
        arrays = (numpy(g_tiles), numpy(h_tiles), indptr, indices, zero, grad_weight.numpy())

        def cumulative() -> np.ndarray:  # a row costs its edges times the batch, plus k clears
            return indptr * batch + np.arange(k + 1) * max(1, k // 2)

        _run(_csr_weight_gradient, arrays, k, work, 1, cumulative=cumulative)
    return _from_tiles(g_tiles, batch), grad_weight
