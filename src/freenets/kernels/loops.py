"""The compiled loops behind :mod:`freenets.kernels.cpu` (numba, float32 and float64).

Two families, each run over a range ``lo:hi`` of samples (or tiles, or rows) so that the caller
can split a call between threads and each sample meets the same arithmetic whatever the split:

- dense diagonal blocks, in the ``(B, k)`` layout: a block of the graph is solved by forward (or,
  for the backward, reversed) substitution, eight samples at a time so each weight is loaded once
  per eight multiply-adds. The products between blocks are matrix products, done by the caller.
- CSR edges, in tiles of ``TILE`` samples, ``(tiles, k, TILE)``: each active edge ``i -> j`` adds
  ``w * h[i]`` to ``h[j]`` over a tile, a contiguous loop the compiler vectorises. Work is
  proportional to the number of edges.

``cache=True`` keeps the compiled code on disk, so only the first call on a machine compiles.
"""

from __future__ import annotations

import numpy as np
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
def dense_forward_block(h, block, start, lo, hi):  # pragma: no cover - compiled
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
def dense_backward_block(g, h, weight, start, n, lo, hi):  # pragma: no cover - compiled
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
def csr_forward(h, indptr, indices, values, lo, hi):  # pragma: no cover - compiled
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
def csr_backward(g, h, indptr_t, indices_t, values_t, lo, hi):  # pragma: no cover - compiled
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
def gather(weight, rows, cols, out):  # pragma: no cover - compiled
    """``out[p] = weight[rows[p], cols[p]]``."""
    for p in range(rows.shape[0]):
        out[p] = weight[rows[p], cols[p]]


@njit(**_OPTIONS)
def tile(x, out):  # pragma: no cover - compiled
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
def untile(tiled, out):  # pragma: no cover - compiled
    """``(tiles, k, TILE)`` back into ``(B, k)``."""
    batch, k = out.shape
    for b in range(batch):
        source = tiled[b // TILE]
        t = b % TILE
        row = out[b]
        for j in range(k):
            row[j] = source[j, t]


@njit(**_OPTIONS)
def csr_weight_gradient(g, h, indptr, indices, zero, grad, lo, hi):  # pragma: no cover
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
