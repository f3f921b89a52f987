"""The compiled loops behind :mod:`freenets.kernels.cpu` (numba, float32 and float64).

Two families, each run over a range ``lo:hi`` of samples (or tiles, or rows) so that the caller
can split a call between threads and each sample meets the same arithmetic whatever the split:

- dense graphs, in the ``(B, k)`` layout: the whole forward (or backward) substitution of a group
  of four samples, four neurons at a time: each neuron's sum is a dot product of two contiguous
  rows (of the weight and of the activations), so no transpose and no matrix product between
  blocks is needed, and a thread given some of the groups runs the whole pass without waiting
  for the others.
- CSR edges, in the ``(tiles, k, lanes)`` layout (the batch cut in tiles of ``lanes``
  samples, zero-padded, each tile one contiguous row per neuron): each active edge ``i -> j``
  adds ``w * h[tile, i]`` to ``h[tile, j]``, the row summed in registers
  (:mod:`freenets.kernels.vector`). Work is proportional to the number of edges.

``cache=True`` keeps the compiled code on disk, so only the first call on a machine compiles.
"""

from __future__ import annotations

from typing import TypedDict

import numpy as np
from numba import njit

from freenets.kernels import vector


class _JitOptions(TypedDict):
    """njit's keyword options, typed so that ``njit(**_OPTIONS)`` checks against its overloads."""

    fastmath: set[str]
    cache: bool
    nogil: bool


# Contraction (fused multiply-add) and reassociation let LLVM vectorise the short dot products;
# no "nnan"/"ninf", so NaNs and infinities still propagate as in torch.
_FAST = {"contract", "reassoc"}
# Not numba's parallel mode: its OpenMP pool spins between calls and takes a core from torch's own
# threads (15x slower steps on a busy 2-core machine). Threads come from
# :func:`freenets.kernels.threads.run` instead.
_OPTIONS: _JitOptions = {"fastmath": _FAST, "cache": True, "nogil": True}


# Samples per group of the dense loops: each group solves four neurons for four samples at once,
# so that each weight loaded feeds several multiply-adds (the forward's sums two samples at a
# time, each activation loaded feeding four; the backward's sixteen terms in one pass).
GROUP = 4


@njit(inline="always")
def _clip(a, zero):
    return zero if a < zero else a  # ReLU in the array's dtype; NaN stays NaN, as with torch.relu


@njit(inline="always")
def _gate(a, active, zero):
    return a if active > zero else zero  # ReLU's derivative: 0 where the neuron is off, as torch


@njit(inline="always")
def _forward_four(hr, j0, w1, w2, w3, c0, c1, c2, c3, zero):  # pragma: no cover - compiled
    """Neurons ``j0 .. j0 + 3`` of one sample, given their sums over the neurons before ``j0``."""
    p0 = _clip(hr[j0] + c0, zero)
    p1 = _clip(hr[j0 + 1] + c1 + w1[j0] * p0, zero)
    p2 = _clip(hr[j0 + 2] + c2 + w2[j0] * p0 + w2[j0 + 1] * p1, zero)
    p3 = _clip(hr[j0 + 3] + c3 + w3[j0] * p0 + w3[j0 + 1] * p1 + w3[j0 + 2] * p2, zero)
    hr[j0], hr[j0 + 1], hr[j0 + 2], hr[j0 + 3] = p0, p1, p2, p3


@njit(inline="always")
def _backward_four(gr, er, j0, w1, w2, w3, zero):  # pragma: no cover - compiled
    """``g`` of neurons ``j0 + 3 .. j0`` of one sample, the later neurons' terms already in."""
    q3 = _gate(gr[j0 + 3], er[j0 + 3], zero)
    q2 = _gate(gr[j0 + 2] + q3 * w3[j0 + 2], er[j0 + 2], zero)
    q1 = _gate(gr[j0 + 1] + q3 * w3[j0 + 1] + q2 * w2[j0 + 1], er[j0 + 1], zero)
    q0 = _gate(gr[j0] + q3 * w3[j0] + q2 * w2[j0] + q1 * w1[j0], er[j0], zero)
    gr[j0], gr[j0 + 1], gr[j0 + 2], gr[j0 + 3] = q0, q1, q2, q3
    return q0, q1, q2, q3


@njit(inline="always")
def _sums_of_two(ha, hb, w0, w1, w2, w3, j0, zero):  # pragma: no cover - compiled
    """Neurons ``j0 .. j0 + 3``'s sums over the neurons before ``j0``, for two samples."""
    a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = zero
    for i in range(j0):
        v0, v1, v2, v3 = w0[i], w1[i], w2[i], w3[i]
        x, y = ha[i], hb[i]
        a0 += v0 * x
        a1 += v1 * x
        a2 += v2 * x
        a3 += v3 * x
        b0 += v0 * y
        b1 += v1 * y
        b2 += v2 * y
        b3 += v3 * y
    return a0, a1, a2, a3, b0, b1, b2, b3


@njit(inline="always")
def _forward_group(h0, h1, h2, h3, weight, s, e, zero):  # pragma: no cover - compiled
    """Neurons ``s:e`` of four samples (rows ``h0 .. h3``); the neurons before ``s`` are done.

    The sums run for two samples at a time: eight running sums and their six operands fit
    in sixteen vector registers (AVX2), where sixteen sums for four samples spilled. Measured
    on the 2-core Zen 3 machine, one thread, float32: 26.0 against 21.9 G multiply-adds/s at
    k = 1000, batch 128; 23.8 against 17.9 at k = 300; the same results, bit for bit.
    """
    k4 = weight.shape[0] // 4 * 4
    for j0 in range(s, min(e, k4), 4):
        w0, w1, w2, w3 = weight[j0], weight[j0 + 1], weight[j0 + 2], weight[j0 + 3]
        a00, a01, a02, a03, a10, a11, a12, a13 = _sums_of_two(h0, h1, w0, w1, w2, w3, j0, zero)
        a20, a21, a22, a23, a30, a31, a32, a33 = _sums_of_two(h2, h3, w0, w1, w2, w3, j0, zero)
        _forward_four(h0, j0, w1, w2, w3, a00, a01, a02, a03, zero)
        _forward_four(h1, j0, w1, w2, w3, a10, a11, a12, a13, zero)
        _forward_four(h2, j0, w1, w2, w3, a20, a21, a22, a23, zero)
        _forward_four(h3, j0, w1, w2, w3, a30, a31, a32, a33, zero)
    for j in range(max(s, k4), e):  # the last k % 4 neurons, one at a time
        w = weight[j]
        a0, a1, a2, a3 = h0[j], h1[j], h2[j], h3[j]
        for i in range(j):
            v = w[i]
            a0 += v * h0[i]
            a1 += v * h1[i]
            a2 += v * h2[i]
            a3 += v * h3[i]
        h0[j], h1[j], h2[j], h3[j] = (
            _clip(a0, zero),
            _clip(a1, zero),
            _clip(a2, zero),
            _clip(a3, zero),
        )


@njit(inline="always")
def _backward_group(g0, g1, g2, g3, e0, e1, e2, e3, weight, s, e, zero):  # pragma: no cover
    """Neurons ``e - 1`` down to ``s`` of four samples (``g`` rows, gates ``h`` rows ``e*``);
    the neurons from ``e`` on are done and their terms added."""
    k4 = weight.shape[0] // 4 * 4
    for j in range(e - 1, max(s, k4) - 1, -1):  # the last k % 4 neurons first, one at a time
        w = weight[j]
        q0, q1 = _gate(g0[j], e0[j], zero), _gate(g1[j], e1[j], zero)
        q2, q3 = _gate(g2[j], e2[j], zero), _gate(g3[j], e3[j], zero)
        g0[j], g1[j], g2[j], g3[j] = q0, q1, q2, q3
        for i in range(j):
            v = w[i]
            g0[i] += q0 * v
            g1[i] += q1 * v
            g2[i] += q2 * v
            g3[i] += q3 * v
    for j0 in range(min(e, k4) - 4, s - 1, -4):
        w0, w1, w2, w3 = weight[j0], weight[j0 + 1], weight[j0 + 2], weight[j0 + 3]
        c00, c01, c02, c03 = _backward_four(g0, e0, j0, w1, w2, w3, zero)
        c10, c11, c12, c13 = _backward_four(g1, e1, j0, w1, w2, w3, zero)
        c20, c21, c22, c23 = _backward_four(g2, e2, j0, w1, w2, w3, zero)
        c30, c31, c32, c33 = _backward_four(g3, e3, j0, w1, w2, w3, zero)
        for i in range(j0):
            v0, v1, v2, v3 = w0[i], w1[i], w2[i], w3[i]
            g0[i] += c00 * v0 + c01 * v1 + c02 * v2 + c03 * v3
            g1[i] += c10 * v0 + c11 * v1 + c12 * v2 + c13 * v3
            g2[i] += c20 * v0 + c21 * v1 + c22 * v2 + c23 * v3
            g3[i] += c30 * v0 + c31 * v1 + c32 * v2 + c33 * v3


@njit(**_OPTIONS)
def dense_forward(h, weight, zero, block, lo, hi):  # pragma: no cover - compiled
    """In place on rows ``lo:hi`` of ``h``, ``(B, k)``: pre-activations in, activations out.

    Only the strict lower triangle of ``weight`` is read. Neuron ``j``'s sum over its
    predecessors is a dot product of two contiguous rows, ``weight[j, :j]`` and ``h[b, :j]``,
    taken for four samples and four neurons together (two samples at a time in registers). The
    neurons go ``block`` at a time (a multiple of four), every group of samples in turn, so
    that the weight's rows of one block stay in cache for the whole batch. A last group of
    fewer than four samples is solved in a zero-padded copy.
    """
    k = h.shape[1]
    full = lo + (hi - lo) // GROUP * GROUP
    last = np.zeros((GROUP, k), dtype=h.dtype)
    last[: hi - full] = h[full:hi]
    stop = hi if full == hi else full + GROUP
    for s in range(0, k, block):
        e = min(s + block, k)
        for b in range(lo, stop, GROUP):
            # One call site: numba inlines the group's code once, not once per source of rows,
            # and a first run has less to compile.
            rows, r = (h, b) if b < full else (last, 0)
            _forward_group(rows[r], rows[r + 1], rows[r + 2], rows[r + 3], weight, s, e, zero)
    h[full:hi] = last[: hi - full]


@njit(**_OPTIONS)
def dense_backward(g, h, weight, zero, block, lo, hi):  # pragma: no cover - compiled
    """In place on rows ``lo:hi`` of ``g``, ``(B, k)``: ``dL/dh`` in, ``dL/dz`` out.

    Solves ``g = D (dL/dh + W^T g)`` from the last neuron back, ``D`` the gates ``h > 0``. Once
    four neurons' ``g`` are final, their terms go to every earlier neuron at once:
    ``g[b, :j0] += sum_c g[b, j0 + c] * weight[j0 + c, :j0]``, contiguous rows of the weight
    again (no transpose), four samples and four neurons per pass. Blocks of ``block`` neurons
    as in :func:`dense_forward`, from the last.
    """
    k = g.shape[1]
    full = lo + (hi - lo) // GROUP * GROUP
    last, gates = np.zeros((GROUP, k), dtype=g.dtype), np.zeros((GROUP, k), dtype=g.dtype)
    last[: hi - full] = g[full:hi]
    gates[: hi - full] = h[full:hi]
    stop = hi if full == hi else full + GROUP
    for s in range((k - 1) // block * block, -1, -block):
        e = min(s + block, k)
        for b in range(lo, stop, GROUP):
            rows, on, r = (g, h, b) if b < full else (last, gates, 0)  # one call site, as above
            _backward_group(
                rows[r], rows[r + 1], rows[r + 2], rows[r + 3], on[r], on[r + 1], on[r + 2],
                on[r + 3], weight, s, e, zero,
            )  # fmt: skip
    g[full:hi] = last[: hi - full]


@njit(**_OPTIONS)
def csr_forward(z, out, h, indptr, indices, values, lo, hi):  # pragma: no cover - compiled
    """Tiles ``lo:hi`` of the activations over the edges of a CSR graph: their samples of
    ``z``, ``(B, k)``, into ``h``, ``(tiles, k, lanes)``, the forward substitution in place
    there, and the activations out into the same samples of ``out``, ``(B, k)``.

    Neuron ``j``'s predecessors are ``indices[indptr[j]:indptr[j+1]]``, with the weights
    ``values`` at the same positions; its row of a tile is summed in registers
    (:mod:`freenets.kernels.vector`).
    """
    k, wide = h.shape[1], h.shape[2] * h.itemsize == vector.WIDE
    for tile in range(lo, hi):
        _tile_in(z, h, tile)
        for j in range(k):
            if wide:
                vector.relu_sum_wide(h, tile, j, indices, values, indptr[j], indptr[j + 1])
            else:
                vector.relu_sum_narrow(h, tile, j, indices, values, indptr[j], indptr[j + 1])
        _tile_out(h, out, tile)


@njit(**_OPTIONS)
def csr_backward(
    grad_h, out, g, h, indptr_t, indices_t, values_t, partial, lo, hi
):  # pragma: no cover - compiled
    """Tiles ``lo:hi`` of ``dL/dz``: their samples of ``dL/dh``, ``grad_h`` ``(B, k)``, into
    ``g``, ``(tiles, k, lanes)`` as in :func:`csr_forward`, solved there in place, and out
    into the same samples of ``out``, ``(B, k)``; ``h`` holds the activations' tiles.

    ``indptr_t, indices_t, values_t`` hold the graph by source neuron, from the last neuron to
    the first: list ``r`` holds neuron ``i = k - 1 - r``'s successors ``j`` with the weights
    ``W[j, i]``, so that the pass reads the lists in memory order. Unless ``partial`` is
    empty, each edge's weight gradient over each tile goes to ``partial[tile, q]``, ``(tiles,
    n_edges)``, ``q`` its place in that order (:func:`tile_sums` adds the tiles up).
    """
    k, wide = g.shape[1], g.shape[2] * g.itemsize == vector.WIDE
    edges = partial.shape[1] > 0
    for tile in range(lo, hi):
        _tile_in(grad_h, g, tile)
        for r in range(k):
            i, start, stop = k - 1 - r, indptr_t[r], indptr_t[r + 1]
            if edges and wide:
                vector.gated_sum_edges_wide(
                    g, h, tile, i, indices_t, values_t, start, stop, partial
                )
            elif edges:
                vector.gated_sum_edges_narrow(
                    g, h, tile, i, indices_t, values_t, start, stop, partial
                )
            elif wide:
                vector.gated_sum_wide(g, h, tile, i, indices_t, values_t, start, stop)
            else:
                vector.gated_sum_narrow(g, h, tile, i, indices_t, values_t, start, stop)
        _tile_out(g, out, tile)


@njit(**_OPTIONS)
def tile_sums(partial, index, out, lo, hi):  # pragma: no cover - compiled
    """``out[index[q]] = sum_tile partial[tile, q]`` for ``q`` in ``lo:hi``, the tiles added in
    order: the edges' weight gradients of :func:`csr_backward`, put where they belong (the
    edges' own order, or their places in the flat ``(k, k)`` gradient)."""
    tiles = partial.shape[0]
    index = index[lo:hi]  # counted from 0: no wraparound test per access (see :func:`gather`)
    for q in range(index.shape[0]):
        total = partial[0, lo + q]
        for tile in range(1, tiles):
            total += partial[tile, lo + q]
        out[np.uint64(index[q])] = total


@njit(inline="always")
def _edge_dot(g, h, j, i, wide):  # pragma: no cover - compiled
    if wide:
        return vector.edge_dot_wide(g, h, j, i)
    return vector.edge_dot_narrow(g, h, j, i)


@njit(**_OPTIONS)
def csr_weight_gradient(g, h, indptr, indices, grad, lo, hi):  # pragma: no cover - compiled
    """Rows ``lo:hi`` of ``dL/dW``: ``sum_b g[j, b] h[i, b]`` on the edges, 0 elsewhere.

    ``g`` and ``h`` are ``(tiles, k, lanes)`` as in :func:`csr_forward` (their padding
    samples zero in both); each edge's sum goes over the tiles lane by lane, then across the
    lanes in a fixed order.
    """
    wide = g.shape[2] * g.itemsize == vector.WIDE
    for j in range(lo, hi):
        out = grad[j]
        for i in range(out.shape[0]):
            out[i] = 0
        for p in range(indptr[j], indptr[j + 1]):
            out[indices[p]] = _edge_dot(g, h, j, indices[p], wide)


@njit(**_OPTIONS)
def csr_edge_gradient(g, h, indptr, indices, out, lo, hi):  # pragma: no cover - compiled
    """``out[p] = sum_b g[j, b] h[indices[p], b]`` for the edges ``p`` of rows ``lo:hi``.

    The weight gradient of :func:`csr_weight_gradient` on the edges alone, in CSR order, with
    the same arithmetic: no ``(k, k)`` output to clear or write, so its cost follows the
    edges, not ``k``.
    """
    wide = g.shape[2] * g.itemsize == vector.WIDE
    for j in range(lo, hi):
        for p in range(indptr[j], indptr[j + 1]):
            out[p] = _edge_dot(g, h, j, indices[p], wide)


# Entries ahead of the one being read that :func:`gather` prefetches. An edge's weight in a large
# ``(k, k)`` matrix misses every cache (k = 10,000: 400 MB), and the next edges' positions are
# known. Measured on the 2-core machine (Zen 3), 500,000 edges of k = 10,000, one thread: 5.2 ms
# at 16 or 32, 5.7 at 8, 6.0 without.
PREFETCH = 16


@njit(**_OPTIONS)
def gather(source, index, out, lo, hi):  # pragma: no cover - compiled
    """``out[p] = source[index[p]]`` for ``p`` in ``lo:hi``; ``source`` is 1-d.

    An edge's weight from the flat ``(k, k)`` weight, or the edges' weights from one order
    into another.
    """
    # Sliced, and the positions read as unsigned: numba then adds no wraparound test for a
    # negative index to each access (0.26 against 0.32 ms at 50,000 edges of k = 1000).
    index, out = index[lo:hi], out[lo:hi]
    n = index.shape[0]
    for p in range(n):
        if p + PREFETCH < n:
            vector.prefetch(source, index[p + PREFETCH])  # type: ignore[call-arg]  # numba's stub wants typingctx
        out[p] = source[np.uint64(index[p])]


@njit(inline="always")
def _transpose(src, src_at, src_stride, dst, dst_at, dst_stride):  # pragma: no cover - compiled
    vector.transpose_block(src, src_at, src_stride, dst, dst_at, dst_stride)  # type: ignore[call-arg]  # numba's stub wants typingctx


@njit(inline="always")
def _tile_in(x, out, t):  # pragma: no cover - compiled
    """``out[t, j, l] = x[t * lanes + l, j]``, zeros past the batch's last sample.

    Whole blocks of ``n`` samples by ``n`` neurons (``n`` elements to a cache line) are
    transposed in vector registers (:func:`freenets.kernels.vector.transpose_block`); the last
    ``k % n`` neurons and a last partial block of samples one element at a time.
    """
    batch, k = x.shape
    lanes = out.shape[2]
    n = vector.BLOCK // x.itemsize
    kn = k // n * n
    for l0 in range(0, lanes, n):
        b0 = t * lanes + l0
        count = min(n, max(0, batch - b0))
        if count == n:
            for j0 in range(0, kn, n):
                _transpose(x, b0 * k + j0, k, out, (t * k + j0) * lanes + l0, lanes)
            for j in range(kn, k):
                for s in range(n):
                    out[t, j, l0 + s] = x[b0 + s, j]
        else:
            for j in range(k):
                for s in range(count):
                    out[t, j, l0 + s] = x[b0 + s, j]
                for s in range(count, n):
                    out[t, j, l0 + s] = 0


@njit(inline="always")
def _tile_out(tiles, out, t):  # pragma: no cover - compiled
    """``out[t * lanes + l, j] = tiles[t, j, l]`` for the samples of tile ``t`` in ``out``: the
    inverse of :func:`_tile_in`, in the same blocks."""
    batch, k = out.shape
    lanes = tiles.shape[2]
    n = vector.BLOCK // out.itemsize
    kn = k // n * n
    for l0 in range(0, lanes, n):
        b0 = t * lanes + l0
        count = min(n, batch - b0)
        if count == n:
            for j0 in range(0, kn, n):
                _transpose(tiles, (t * k + j0) * lanes + l0, lanes, out, b0 * k + j0, k)
            for j in range(kn, k):
                for s in range(n):
                    out[b0 + s, j] = tiles[t, j, l0 + s]
        elif count > 0:
            for j in range(k):
                for s in range(count):
                    out[b0 + s, j] = tiles[t, j, l0 + s]


# Multiplying eight bytes that each hold 0 or 1 by this gathers their low bits, byte ``i``'s
# at bit ``56 + i``: every partial product lands on a bit of its own, so nothing carries.
_GATHER_BITS = np.uint64(0x0102040810204080)
_LOW_BITS = np.uint64(0x0101010101010101)
_TOP_BYTE = np.uint64(56)


@njit(**_OPTIONS)
def pack_bools(words, out):  # pragma: no cover - compiled
    """``out[i]``: bit ``b`` is byte ``b`` of ``words[i]``, eight booleans (0 or 1 each) as one
    byte. Returns False, leaving ``out`` unfinished, if a byte holds anything else."""
    bad = np.uint64(0)
    for i in range(words.shape[0]):
        word = words[i]
        bad |= word & ~_LOW_BITS
        out[i] = (word * _GATHER_BITS) >> _TOP_BYTE
    return bad == 0


@njit(**_OPTIONS)
def differs(words, packed, found, lo, hi):  # pragma: no cover - compiled
    """Sets ``found[0]`` to 1 unless the booleans of ``words[lo:hi]`` (0 or 1 a byte) are
    those :func:`pack_bools` packed into ``packed[lo:hi]``: an eighth of the bytes of a
    byte-for-byte compare to read. Left as it is when they are, so that pieces of one compare
    can share ``found``."""
    bad = np.uint64(0)
    differ = np.uint64(0)
    # Sliced first: indices counted from 0 cannot be negative, so numba adds no wraparound
    # test to each access and LLVM vectorises the loop (1.5 times as fast).
    words, packed = words[lo:hi], packed[lo:hi]
    for i in range(words.shape[0]):
        word = words[i]
        bad |= word & ~_LOW_BITS
        differ |= ((word * _GATHER_BITS) >> _TOP_BYTE) ^ packed[i]
    if bad != 0 or differ != 0:
        found[0] = 1


@njit(**_OPTIONS)
def add_flat(flat, index, values, lo, hi):  # pragma: no cover - compiled
    """``flat[index[p]] += values[p]`` for ``p`` in ``lo:hi``: a few entries of a large array,
    in one pass, no temporaries. Distinct positions (a sparse gradient's) let pieces of one call
    run at once."""
    index, values = index[lo:hi], values[lo:hi]  # no wraparound test per access (see gather)
    for p in range(index.shape[0]):
        flat[np.uint64(index[p])] += values[p]


@njit(**_OPTIONS)
def same_flat_index(indices, stride0, stride1, index):  # pragma: no cover - compiled
    """True when ``indices[0] * stride0 + indices[1] * stride1`` equals ``index``, entry by
    entry: a sparse gradient's ``(2, n)`` indices against flat positions, no temporaries."""
    if indices.shape[1] != index.shape[0]:
        return False
    for p in range(index.shape[0]):
        if indices[0, p] * stride0 + indices[1, p] * stride1 != index[p]:
            return False
    return True
