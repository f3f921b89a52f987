"""Co-firing counts ``S^T S`` of a boolean firing matrix by bit counting (paper, section 3.4).

NCAM needs, for every pair of neurons, the number of samples on which both fire. As a float
matrix product that is ``B k^2`` multiply-adds per batch, as much as the forward pass itself.
Packing each neuron's column of ``S`` into 64-bit words turns it into ``k^2 B / 64`` AND and
population-count operations: exact integer counts at a fraction of the cost.

:class:`CoFiring` packs batch after batch straight from the activations (``h > 0``) into a
buffer of :data:`CHUNK` samples and counts the pairs once the buffer is full: long rows of words
let the compiler count eight words per instruction (measured 6 G words/s on the 2-core machine,
against under 3 G counting each batch of 1024 on its own), and the counts accumulate in place
in one integer matrix, its lower triangle only until the end.

:class:`FiringBits` keeps the packed bits of every sample instead, and counts only the pairs it
is asked for: FreeEvolve's decisions need few of the ``k^2`` pairs (:mod:`freenets.stats`).
"""

from __future__ import annotations

import numpy as np
import torch
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

# Samples packed before the pairs are counted: 128 words per neuron, 1 MiB for k = 1000.
CHUNK = 8192


@intrinsic
def _popcount(typingctx, word):  # pragma: no cover - compiled
    """LLVM's ``ctpop`` on an unsigned 64-bit word (one instruction on x86-64 and arm64)."""
    if word != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        function_type = ir.FunctionType(ir.IntType(64), [ir.IntType(64)])
        ctpop = cgutils.get_or_insert_function(builder.module, function_type, "llvm.ctpop.i64")
        return builder.call(ctpop, args)

    return types.uint64(types.uint64), codegen


@njit(cache=True, nogil=True)
def _pack_rows(h, packed, first):  # pragma: no cover - compiled
    """Set bit ``p % 64`` of ``packed[j, p // 64]``, ``p = first + b``, where ``h[b, j] > 0``;
    ``h`` is ``(B, k)``, read row by row (contiguous), and ``packed`` is zero past ``first``."""
    batch, k = h.shape
    words = np.zeros(k, dtype=np.uint64)
    b = 0
    while b < batch:
        stop = min(batch, b + 64 - (first + b) % 64)  # the samples of one word
        words[:] = 0
        for t in range(b, stop):
            row = h[t]
            bit = np.uint64(1) << np.uint64((first + t) % 64)
            for j in range(k):
                words[j] |= bit if row[j] > 0 else np.uint64(0)
        column = (first + b) // 64
        for j in range(k):
            packed[j, column] |= words[j]
        b = stop


@njit(cache=True, nogil=True)
def _pack_columns(h_t, packed, first):  # pragma: no cover - compiled
    """As :func:`_pack_rows` from ``h_t``, ``(k, B)``: one row per neuron."""
    k, batch = h_t.shape
    for j in range(k):
        row = h_t[j]
        for t in range(batch):
            if row[t] > 0:
                position = first + t
                packed[j, position // 64] |= np.uint64(1) << np.uint64(position % 64)


@njit(cache=True, nogil=True)
def _count(packed, words, counts):  # pragma: no cover - compiled
    """``counts[i, j] +=`` the bits set in both rows ``i`` and ``j`` of ``packed[:, :words]``,
    for ``j <= i`` (the lower triangle and the diagonal)."""
    k = packed.shape[0]
    for i in range(k):
        a = packed[i, :words]
        out = counts[i]
        for j in range(i + 1):
            b = packed[j, :words]
            total = np.uint64(0)
            for w in range(words):
                total += _popcount(a[w] & b[w])  # type: ignore[call-arg]  # numba's stub wants typingctx too
            out[j] += total


@njit(cache=True, nogil=True)
def _mirror(counts):  # pragma: no cover - compiled
    """Copy the lower triangle onto the upper, block by block so both sides stay in cache."""
    k = counts.shape[0]
    for top in range(0, k, 64):
        for left in range(0, top + 1, 64):
            for i in range(top, min(top + 64, k)):
                for j in range(left, min(left + 64, i)):
                    counts[j, i] = counts[i, j]


class CoFiring:
    """``S^T S`` accumulated over batches, ``S`` the firing (``h > 0``) of ``n_neurons`` neurons.

    Parameters
    ----------
    n_neurons : int
        Number of neurons k.

    Notes
    -----
    Memory is the ``(k, k)`` counts and ``k * CHUNK / 8`` bytes of packed bits, whatever the
    number of samples. Entry ``(i, i)`` of the counts is the number of samples where neuron
    ``i`` fires.
    """

    def __init__(self, n_neurons: int) -> None:
        self.n_neurons = n_neurons
        self.n_samples = 0
        self._counts = np.zeros((n_neurons, n_neurons), dtype=np.int64)
        self._packed = np.zeros((n_neurons, CHUNK // 64), dtype=np.uint64)
        self._filled = 0  # samples in the packed buffer

    def add(self, activations: torch.Tensor) -> None:
        """Count the firing of a ``(B, k)`` batch: CPU, boolean or real (fires where ``> 0``)."""
        batch, k = activations.shape
        if k != self.n_neurons:
            raise ValueError(f"expected (batch, {self.n_neurons}) activations, got {(batch, k)}")
        values = activations.detach()
        for start in range(0, batch, CHUNK):
            part = values[start : start + CHUNK]
            if self._filled + part.shape[0] > CHUNK:
                self._flush()
            if part.stride(1) != 1 and part.stride(0) == 1:  # a transposed view: read as is
                _pack_columns(part.t().numpy(), self._packed, self._filled)
            else:
                _pack_rows(part.contiguous().numpy(), self._packed, self._filled)
            self._filled += part.shape[0]
            self.n_samples += part.shape[0]

    def _flush(self) -> None:
        if self._filled:
            _count(self._packed, -(-self._filled // 64), self._counts)
            self._packed[:] = 0
            self._filled = 0

    def counts(self) -> torch.Tensor:
        """The ``(k, k)`` co-firing counts so far, as exact float64."""
        self._flush()
        counts = self._counts.copy()
        _mirror(counts)
        return torch.from_numpy(counts).to(torch.float64)


@njit(cache=True, nogil=True)
def _count_pairs(packed, rows, cols, out):  # pragma: no cover - compiled
    """``out[p] =`` the bits set in both rows ``rows[p]`` and ``cols[p]`` of ``packed``."""
    words = packed.shape[1]
    for p in range(rows.shape[0]):
        a, b = packed[rows[p]], packed[cols[p]]
        total = np.uint64(0)
        for w in range(words):
            total += _popcount(a[w] & b[w])  # type: ignore[call-arg]  # numba's stub wants typingctx too
        out[p] = total


class FiringBits:
    """Which of ``n_neurons`` neurons fire on which samples, packed 64 samples to a word and kept
    for every sample, so that the co-firing of any pairs can be counted afterwards.

    Memory is ``k * n / 8`` bytes for ``n`` samples (67 MB for k = 10,000 and 54,000 samples):
    no ``(k, k)`` matrix.
    """

    def __init__(self, n_neurons: int) -> None:
        self.n_neurons = n_neurons
        self.n_samples = 0
        self._chunks: list[np.ndarray] = []
        self._filled = CHUNK  # samples in the last chunk; a full one starts the next

    def add(self, activations: torch.Tensor) -> None:
        """Record the firing of a ``(B, k)`` batch: CPU, boolean or real (fires where ``> 0``)."""
        batch, k = activations.shape
        if k != self.n_neurons:
            raise ValueError(f"expected (batch, {self.n_neurons}) activations, got {(batch, k)}")
        values = activations.detach()
        start = 0
        while start < batch:
            if self._filled == CHUNK:
                self._chunks.append(np.zeros((k, CHUNK // 64), dtype=np.uint64))
                self._filled = 0
            part = values[start : start + CHUNK - self._filled]
            if part.stride(1) != 1 and part.stride(0) == 1:  # a transposed view: read as is
                _pack_columns(part.t().numpy(), self._chunks[-1], self._filled)
            else:
                _pack_rows(part.contiguous().numpy(), self._chunks[-1], self._filled)
            self._filled += part.shape[0]
            self.n_samples += part.shape[0]
            start += part.shape[0]

    def packed(self) -> np.ndarray:
        """``(k, words)`` uint64: bit ``p % 64`` of word ``p // 64`` set where sample ``p`` fired."""
        if not self._chunks:
            return np.zeros((self.n_neurons, 0), dtype=np.uint64)
        last = self._chunks[-1][:, : -(-self._filled // 64)]
        return np.ascontiguousarray(np.concatenate([*self._chunks[:-1], last], axis=1))


def pair_counts(packed: np.ndarray, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """For each pair ``(rows[p], cols[p])`` the samples where both neurons fire, as exact
    float64 (``rows[p] == cols[p]`` gives a neuron's own count).

    ``packed`` is :meth:`FiringBits.packed`; ``rows`` and ``cols`` are int64 CPU tensors.
    """
    out = np.zeros(rows.numel(), dtype=np.int64)
    first, second = (np.ascontiguousarray(a.numpy(), dtype=np.int64) for a in (rows, cols))
    _count_pairs(packed, first, second, out)
    return torch.from_numpy(out).to(torch.float64)


def co_firing(fires: torch.Tensor) -> torch.Tensor:
    """``S^T S`` for a boolean ``(B, k)`` firing matrix ``S``, as exact float64 counts.

    Parameters
    ----------
    fires : torch.Tensor
        ``(B, k)`` bool, on the CPU.

    Returns
    -------
    torch.Tensor
        ``(k, k)`` float64; entry ``(i, j)`` counts the samples where neurons i and j both fire.
    """
    counter = CoFiring(fires.shape[1])
    counter.add(fires)
    return counter.counts()
