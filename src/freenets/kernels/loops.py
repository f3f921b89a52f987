"""The compiled loops behind :mod:`freenets.kernels.cpu` (numba, float32 and float64).

Two families, each run over a range ``lo:hi`` of samples (or tiles, or rows) so that the caller
can split a call between threads and each sample meets the same arithmetic whatever the split:

- dense graphs, in the ``(B, k)`` layout: the whole forward (or backward) substitution of a group
  of four samples, four neurons at a time: each neuron's sum is a dot product of two contiguous
  rows (of the weight and of the activations), so no transpose and no matrix product between
  blocks is needed, and a thread given some of the groups runs the whole pass without waiting
  for the others.
- CSR edges, in the ``(k, width)`` layout (one row per neuron, one column per sample, the batch
  padded to whole tiles of ``TILE`` samples): each active edge ``i -> j`` adds ``w * h[i]`` to
  ``h[j]`` over a tile, contiguous loops the compiler vectorises, four edges per pass. Work is
  proportional to the number of edges.

``cache=True`` keeps the compiled code on disk, so only the first call on a machine compiles.
"""

from __future__ import annotations

from typing import TypedDict

import numpy as np
from numba import njit


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
# Samples per tile of the CSR loops: 64 float32 are four AVX-512 registers (eight AVX2 ones).
TILE = 64


# Samples per group of the dense loops: each group solves four neurons for four samples at once,
# sixteen running sums in registers, so that each weight and each activation loaded feeds four
# multiply-adds.
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
def _forward_group(h0, h1, h2, h3, weight, s, e, zero):  # pragma: no cover - compiled
    """Neurons ``s:e`` of four samples (rows ``h0 .. h3``); the neurons before ``s`` are done."""
    k4 = weight.shape[0] // 4 * 4
    for j0 in range(s, min(e, k4), 4):
        w0, w1, w2, w3 = weight[j0], weight[j0 + 1], weight[j0 + 2], weight[j0 + 3]
        a00 = a01 = a02 = a03 = a10 = a11 = a12 = a13 = zero
        a20 = a21 = a22 = a23 = a30 = a31 = a32 = a33 = zero
        for i in range(j0):
            v0, v1, v2, v3 = w0[i], w1[i], w2[i], w3[i]
            x0, x1, x2, x3 = h0[i], h1[i], h2[i], h3[i]
            a00 += v0 * x0
            a01 += v1 * x0
            a02 += v2 * x0
            a03 += v3 * x0
            a10 += v0 * x1
            a11 += v1 * x1
            a12 += v2 * x1
            a13 += v3 * x1
            a20 += v0 * x2
            a21 += v1 * x2
            a22 += v2 * x2
            a23 += v3 * x2
            a30 += v0 * x3
            a31 += v1 * x3
            a32 += v2 * x3
            a33 += v3 * x3
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
    taken for four samples and four neurons together. The neurons go ``block`` at a time
    (a multiple of four), every group of samples in turn, so that the weight's rows of one
    block stay in cache for the whole batch. A last group of fewer than four samples is
    solved in a zero-padded copy.
    """
    k = h.shape[1]
    full = lo + (hi - lo) // GROUP * GROUP
    last = np.zeros((GROUP, k), dtype=h.dtype)
    last[: hi - full] = h[full:hi]
    stop = hi if full == hi else full + GROUP
    for s in range(0, k, block):
        e = min(s + block, k)
        for b in range(lo, stop, GROUP):
            if b < full:
                _forward_group(h[b], h[b + 1], h[b + 2], h[b + 3], weight, s, e, zero)
            else:
                _forward_group(last[0], last[1], last[2], last[3], weight, s, e, zero)
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
            if b < full:
                _backward_group(
                    g[b], g[b + 1], g[b + 2], g[b + 3], h[b], h[b + 1], h[b + 2], h[b + 3],
                    weight, s, e, zero,
                )  # fmt: skip
            else:
                _backward_group(
                    last[0], last[1], last[2], last[3], gates[0], gates[1], gates[2], gates[3],
                    weight, s, e, zero,
                )  # fmt: skip
    g[full:hi] = last[: hi - full]


@njit(inline="always")
def _add_edges(target, source, indices, values, start, stop, t0):  # pragma: no cover - compiled
    """``target[t] += sum_p values[p] * source[indices[p], t0 + t]`` over edges ``start:stop``,
    four edges per pass so that ``target`` is loaded and stored once per four."""
    p = start
    while p + 4 <= stop:
        w0, w1, w2, w3 = values[p], values[p + 1], values[p + 2], values[p + 3]
        s0 = source[indices[p], t0 : t0 + TILE]
        s1 = source[indices[p + 1], t0 : t0 + TILE]
        s2 = source[indices[p + 2], t0 : t0 + TILE]
        s3 = source[indices[p + 3], t0 : t0 + TILE]
        for t in range(TILE):
            target[t] += (w0 * s0[t] + w1 * s1[t]) + (w2 * s2[t] + w3 * s3[t])
        p += 4
    while p < stop:
        w = values[p]
        s0 = source[indices[p], t0 : t0 + TILE]
        for t in range(TILE):
            target[t] += w * s0[t]
        p += 1


@njit(**_OPTIONS)
def csr_forward(h, indptr, indices, values, zero, lo, hi):  # pragma: no cover - compiled
    """In place on tiles ``lo:hi`` of ``h``, ``(k, width)``: pre-activations in, activations out.

    ``h`` holds one row per neuron and one column per sample (``width`` a multiple of ``TILE``);
    a tile is ``TILE`` columns. Neuron ``j``'s predecessors are ``indices[indptr[j]:indptr[j+1]]``,
    with the weights ``values`` at the same positions.
    """
    k = h.shape[0]
    for tile in range(lo, hi):
        t0 = tile * TILE
        for j in range(k):
            hj = h[j, t0 : t0 + TILE]
            _add_edges(hj, h, indices, values, indptr[j], indptr[j + 1], t0)
            for t in range(TILE):
                hj[t] = _clip(hj[t], zero)


@njit(**_OPTIONS)
def csr_backward(g, h, indptr_t, indices_t, values_t, zero, lo, hi):  # pragma: no cover
    """In place on tiles ``lo:hi`` of ``g``, ``(k, width)`` as in :func:`csr_forward`:
    ``dL/dh`` in, ``dL/dz`` out.

    ``indptr_t, indices_t, values_t`` hold the graph by source neuron: the row of neuron ``i``
    lists its successors ``j`` with the weight ``W[j, i]``.
    """
    k = g.shape[0]
    for tile in range(lo, hi):
        t0 = tile * TILE
        for i in range(k - 1, -1, -1):
            gi = g[i, t0 : t0 + TILE]
            _add_edges(gi, g, indices_t, values_t, indptr_t[i], indptr_t[i + 1], t0)
            active = h[i, t0 : t0 + TILE]
            for t in range(TILE):
                gi[t] = _gate(gi[t], active[t], zero)


@njit(inline="always")
def _four_dots(target, h, indices, p, batch, zero):  # pragma: no cover - compiled
    """The dot products of ``target`` with the rows ``indices[p:p + 4]`` of ``h`` over the first
    ``batch`` columns, so that ``target`` is read once per four."""
    s0, s1 = h[indices[p], :batch], h[indices[p + 1], :batch]
    s2, s3 = h[indices[p + 2], :batch], h[indices[p + 3], :batch]
    a0 = a1 = a2 = a3 = zero
    for b in range(batch):
        x = target[b]
        a0 += x * s0[b]
        a1 += x * s1[b]
        a2 += x * s2[b]
        a3 += x * s3[b]
    return a0, a1, a2, a3


@njit(inline="always")
def _dot(target, source, batch, zero):  # pragma: no cover - compiled
    total = zero
    for b in range(batch):
        total += target[b] * source[b]
    return total


@njit(**_OPTIONS)
def csr_weight_gradient(g, h, batch, indptr, indices, zero, grad, lo, hi):  # pragma: no cover
    """Rows ``lo:hi`` of ``dL/dW``: ``sum_b g[j, b] h[i, b]`` on the edges, 0 elsewhere.

    ``g`` and ``h`` are ``(k, width)`` as in :func:`csr_forward`; each edge is a dot product of
    two contiguous rows over the first ``batch`` columns, summed in the arrays' dtype, four
    edges of a row at a time so that the row of ``g`` is read once per four (25% faster than
    one at a time, measured at k = 1000, 10% of the edges, batch 128).
    """
    for j in range(lo, hi):
        out = grad[j]
        for i in range(out.shape[0]):
            out[i] = zero
        target = g[j, :batch]
        p, stop = indptr[j], indptr[j + 1]
        while p + 4 <= stop:
            a0, a1, a2, a3 = _four_dots(target, h, indices, p, batch, zero)
            out[indices[p]], out[indices[p + 1]] = a0, a1
            out[indices[p + 2]], out[indices[p + 3]] = a2, a3
            p += 4
        while p < stop:
            out[indices[p]] = _dot(target, h[indices[p], :batch], batch, zero)
            p += 1


@njit(**_OPTIONS)
def csr_edge_gradient(g, h, batch, indptr, indices, zero, out, lo, hi):  # pragma: no cover
    """``out[p] = sum_b g[j, b] h[indices[p], b]`` for the edges ``p`` of rows ``lo:hi``.

    The weight gradient of :func:`csr_weight_gradient` on the edges alone, in CSR order, with
    the same arithmetic: no ``(k, k)`` output to clear or write, so its cost follows the
    edges, not ``k``.
    """
    for j in range(lo, hi):
        target = g[j, :batch]
        p, stop = indptr[j], indptr[j + 1]
        while p + 4 <= stop:
            out[p], out[p + 1], out[p + 2], out[p + 3] = _four_dots(
                target, h, indices, p, batch, zero
            )
            p += 4
        while p < stop:
            out[p] = _dot(target, h[indices[p], :batch], batch, zero)
            p += 1


@njit(**_OPTIONS)
def gather(weight, rows, cols, out):  # pragma: no cover - compiled
    """``out[p] = weight[rows[p], cols[p]]``."""
    for p in range(rows.shape[0]):
        out[p] = weight[rows[p], cols[p]]


@njit(**_OPTIONS)
def permute(values, order, out):  # pragma: no cover - compiled
    """``out[q] = values[order[q]]``."""
    for q in range(order.shape[0]):
        out[q] = values[order[q]]


@njit(**_OPTIONS)
def transpose(x, out):  # pragma: no cover - compiled
    """``out[:, :B] = x.T`` and zeros in ``out[:, B:]``, for ``x`` ``(B, k)``, ``out``
    ``(k, width)``: sixteen rows of ``x`` at a time, so that each row of ``out`` gets a whole
    cache line of samples per pass."""
    batch, k = x.shape
    full = batch // 16 * 16
    for b0 in range(0, full, 16):
        rows = x[b0 : b0 + 16]
        for j in range(k):
            target = out[j, b0 : b0 + 16]
            for t in range(16):
                target[t] = rows[t, j]
    for j in range(k):
        target = out[j]
        for b in range(full, batch):
            target[b] = x[b, j]
        for b in range(batch, out.shape[1]):
            target[b] = 0
