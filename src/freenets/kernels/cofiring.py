"""Co-firing counts ``S^T S`` of a boolean firing matrix by bit counting (paper, section 3.4).

NCAM needs, for every pair of neurons, the number of samples on which both fire. As a float
matrix product that is ``B k^2`` multiply-adds per batch, as much as the forward pass itself.
Packing each neuron's column of ``S`` into 64-bit words turns it into ``k^2 B / 64`` AND and
population-count operations: exact integer counts at a fraction of the cost.
"""

from __future__ import annotations

import numpy as np
import torch
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic


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
def _pack(fires_t, packed):  # pragma: no cover - compiled
    """``packed[j, b // 64]`` has bit ``b % 64`` set when neuron ``j`` fires on sample ``b``;
    ``fires_t`` is ``S^T``, ``(k, B)``."""
    k, batch = fires_t.shape
    for j in range(k):
        row = fires_t[j]
        for w in range(packed.shape[1]):
            first = 64 * w
            word = np.uint64(0)
            for t in range(min(64, batch - first)):
                if row[first + t]:
                    word |= np.uint64(1) << np.uint64(t)
            packed[j, w] = word


@njit(cache=True, nogil=True)
def _count(packed, counts):  # pragma: no cover - compiled
    """``counts[i, j]``: the number of bits set in both rows ``i`` and ``j`` of ``packed``."""
    k, words = packed.shape
    for i in range(k):  # the lower triangle, row by row (contiguous writes)
        a = packed[i]
        out = counts[i]
        for j in range(i + 1):
            b = packed[j]
            total = np.uint64(0)
            for w in range(words):
                total += _popcount(a[w] & b[w])
            out[j] = total
    for top in range(0, k, 64):  # mirror, block by block so both sides stay in cache
        for left in range(0, top + 1, 64):
            for i in range(top, min(top + 64, k)):
                for j in range(left, min(left + 64, i)):
                    counts[j, i] = counts[i, j]


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
    batch, k = fires.shape
    packed = np.empty((k, -(-batch // 64)), dtype=np.uint64)
    _pack(fires.t().contiguous().numpy(), packed)
    counts = torch.empty(k, k, dtype=torch.float64)
    _count(packed, counts.numpy())
    return counts
