"""Splitting a compiled loop between threads: torch's own OpenMP threads where possible.

The loops of :mod:`freenets.kernels.loops` run over a range ``lo:hi`` (of samples, tiles or
rows); :func:`run` cuts the range in one piece per torch thread and runs the pieces at once.

Where torch's CPU build uses GNU OpenMP (its Linux wheels), the pieces run on the very threads
that run torch's matrix products, through the runtime's ``GOMP_parallel``: after a product those
threads spin, waiting for more work, so a piece handed to them starts at once, and numba's and
torch's thread counts are one and the same. A pool of Python threads instead (the fallback
elsewhere) competes with the spinning threads for the cores; with it, earlier kernels ran every
call under 32M multiply-adds on one thread, splitting having measured slower.

Each loop that can be split has an *entry* per dtype: a C callback (numba ``cfunc``) that reads
its arguments from a block of 64-bit integers (addresses and sizes of the arrays), claims pieces
with an atomic counter until none is left, and runs the loop on each. Which thread runs which
piece does not matter: the pieces' bounds are fixed before the call, so every sample meets the
same arithmetic whatever the number of threads.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from llvmlite import ir
from numba import carray, cfunc, njit, types
from numba.extending import intrinsic

from freenets.kernels import loops
from freenets.kernels.notice import compiling, first_use

# Below this many multiply-adds a call runs on the calling thread alone. Measured on the 2-core
# machine (whole training steps, two threads): splitting the dense loops at k = 100, batch 128
# (640k) lost 4%, at k = 100, batch 1024 (5M) and k = 300, batch 128 (5.7M) it won 7% and 3%.
PARALLEL_WORK = 1_000_000

# ------------------------------------------------------------------------- compiled helpers


# numba's stubs type an intrinsic's call with its definition's signature, typing context
# included (numba drops it when the intrinsic is called): each call is ignored for that alone.


@intrinsic
def _words(typingctx, data):  # pragma: no cover - compiled
    """The callback's ``void *`` as a pointer to 64-bit integers."""
    if data != types.voidptr:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64).as_pointer())

    return types.CPointer(types.int64)(types.voidptr), codegen


@intrinsic
def _pointer(typingctx, address, zero):  # pragma: no cover - compiled
    """An integer address as a pointer to ``zero``'s type."""
    pointer = types.CPointer(zero)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(pointer))

    return pointer(types.int64, zero), codegen


@intrinsic
def _claim(typingctx, counter):  # pragma: no cover - compiled
    """Atomically add one to ``*counter``; the value before."""

    def codegen(context, builder, signature, args):
        one = ir.Constant(ir.IntType(64), 1)
        return builder.atomic_rmw("add", args[0], one, "monotonic")

    return types.int64(types.CPointer(types.int64)), codegen


# The block's layout: [0] the counter of claimed pieces, [1] the number of pieces, [2] the
# address of their ``pieces + 1`` bounds, then the loop's own arguments from [3] on (the arrays'
# dtype is the entry's: each is compiled for one).
_HEADER = 3


@njit(inline="always")
def _matrix(address, rows, cols, zero):  # pragma: no cover - compiled
    return carray(_pointer(address, zero), (rows, cols))  # type: ignore[call-arg]  # numba's stub wants typingctx


@njit(inline="always")
def _vector(address, size, zero):  # pragma: no cover - compiled
    return carray(_pointer(address, zero), (size,))  # type: ignore[call-arg]  # numba's stub wants typingctx


_F32, _F64, _I64 = np.float32(0), np.float64(0), np.int64(0)
_U8, _U64 = np.uint8(0), np.uint64(0)


@njit(inline="always")
def _split(data, piece, zero, loop):  # pragma: no cover - compiled
    """Claim the call's pieces until none is left, running ``piece(data, zero, loop, lo, hi)`` on
    each: every entry's claim loop, the entry naming its ``piece`` (which reads the arrays
    ``loop`` takes), the arrays' dtype (``zero``) and the loop."""
    call = carray(_words(data), (_HEADER,))  # type: ignore[call-arg]  # numba's stub wants typingctx
    cuts = _vector(call[2], call[1] + 1, _I64)
    while True:
        claimed = _claim(_words(data))
        if claimed >= call[1]:
            return
        piece(data, zero, loop, cuts[claimed], cuts[claimed + 1])


# Each piece reads a loop's arrays from the block (in the order :func:`_encode` writes them) and
# runs ``loop`` on samples, tiles, rows or edges ``lo:hi``.


@njit(inline="always")
def _dense_forward(data, zero, loop, lo, hi):  # pragma: no cover - compiled
    call = carray(_words(data), (_HEADER + 5,))  # type: ignore[call-arg]  # numba's stub wants typingctx
    batch, k, block = call[3], call[4], call[5]
    h, weight = _matrix(call[6], batch, k, zero), _matrix(call[7], k, k, zero)
    loop(h, weight, zero, block, lo, hi)


@njit(inline="always")
def _dense_backward(data, zero, loop, lo, hi):  # pragma: no cover - compiled
    call = carray(_words(data), (_HEADER + 6,))  # type: ignore[call-arg]  # numba's stub wants typingctx
    batch, k, block = call[3], call[4], call[5]
    g, h = _matrix(call[6], batch, k, zero), _matrix(call[7], batch, k, zero)
    loop(g, h, _matrix(call[8], k, k, zero), zero, block, lo, hi)


@njit(inline="always")
def _tiles(address, shape, zero):  # pragma: no cover - compiled
    """A ``(tiles, k, lanes)`` array; ``shape`` is the call's three words from its first."""
    return carray(_pointer(address, zero), (shape[0], shape[1], shape[2]))  # type: ignore[call-arg]  # numba's stub wants typingctx


@njit(inline="always")
def _csr_forward(data, zero, loop, lo, hi):  # pragma: no cover - compiled
    call = carray(_words(data), (_HEADER + 11,))  # type: ignore[call-arg]  # numba's stub wants typingctx
    shape, k, edges, batch = call[3:6], call[4], call[6], call[7]
    indptr, indices = _vector(call[11], k + 1, _I64), _vector(call[12], edges, _I64)
    z, out = _matrix(call[8], batch, k, zero), _matrix(call[9], batch, k, zero)
    h, values = _tiles(call[10], shape, zero), _vector(call[13], edges, zero)
    loop(z, out, h, indptr, indices, values, lo, hi)


@njit(inline="always")
def _csr_backward(data, zero, loop, lo, hi):  # pragma: no cover - compiled
    call = carray(_words(data), (_HEADER + 15,))  # type: ignore[call-arg]  # numba's stub wants typingctx
    shape, k, edges, batch = call[3:6], call[4], call[6], call[7]
    indptr, indices = _vector(call[12], k + 1, _I64), _vector(call[13], edges, _I64)
    grad_h, out = _matrix(call[8], batch, k, zero), _matrix(call[9], batch, k, zero)
    g, h = _tiles(call[10], shape, zero), _tiles(call[11], shape, zero)
    values = _vector(call[14], edges, zero)
    partial = _matrix(call[17], call[15], call[16], zero)
    loop(grad_h, out, g, h, indptr, indices, values, partial, lo, hi)


@njit(inline="always")
def _csr_weight_gradient(data, zero, loop, lo, hi):  # pragma: no cover - compiled
    call = carray(_words(data), (_HEADER + 9,))  # type: ignore[call-arg]  # numba's stub wants typingctx
    shape, k, edges = call[3:6], call[4], call[6]
    indptr, indices = _vector(call[9], k + 1, _I64), _vector(call[10], edges, _I64)
    g, h = _tiles(call[7], shape, zero), _tiles(call[8], shape, zero)
    loop(g, h, indptr, indices, _matrix(call[11], k, k, zero), lo, hi)


@njit(inline="always")
def _csr_edge_gradient(data, zero, loop, lo, hi):  # pragma: no cover - compiled
    call = carray(_words(data), (_HEADER + 9,))  # type: ignore[call-arg]  # numba's stub wants typingctx
    shape, k, edges = call[3:6], call[4], call[6]
    indptr, indices = _vector(call[9], k + 1, _I64), _vector(call[10], edges, _I64)
    g, h = _tiles(call[7], shape, zero), _tiles(call[8], shape, zero)
    loop(g, h, indptr, indices, _vector(call[11], edges, zero), lo, hi)


@njit(inline="always")
def _indexed(data, zero, loop, lo, hi):  # pragma: no cover - compiled
    """The gather and the add: a flat array, positions and a value per position."""
    call = carray(_words(data), (_HEADER + 5,))  # type: ignore[call-arg]  # numba's stub wants typingctx
    size, n = call[3], call[4]
    flat, index = _vector(call[5], size, zero), _vector(call[6], n, _I64)
    loop(flat, index, _vector(call[7], n, zero), lo, hi)


@njit(inline="always")
def _tile_sums(data, zero, loop, lo, hi):  # pragma: no cover - compiled
    call = carray(_words(data), (_HEADER + 6,))  # type: ignore[call-arg]  # numba's stub wants typingctx
    tiles, edges, size = call[3], call[4], call[5]
    partial, index = _matrix(call[6], tiles, edges, zero), _vector(call[7], edges, _I64)
    loop(partial, index, _vector(call[8], size, zero), lo, hi)


@njit(inline="always")
def _differs(data, zero, loop, lo, hi):  # pragma: no cover - compiled
    """``zero`` unused: the mask's words and bits have their own types."""
    call = carray(_words(data), (_HEADER + 4,))  # type: ignore[call-arg]  # numba's stub wants typingctx
    n = call[3]
    words, packed = _vector(call[4], n, _U64), _vector(call[5], n, _U8)
    loop(words, packed, _vector(call[6], 1, _I64), lo, hi)


# The entries, one a loop and dtype: each is compiled for its dtype alone and links the loop that
# the calls on one thread compiled already, about 1 s at the default run's first threaded call
# (an entry for both dtypes compiles the other dtype's loop too: 21.6 s there). Each is a function
# of its own, not one factory's closures: numba keys a closure's cache on a pickle of what it
# captures, and a captured loop (a dispatcher) pickles with an id of its process, so such
# entries would be compiled again by every process.
def _dense_forward_f32(data):  # pragma: no cover - compiled
    _split(data, _dense_forward, _F32, loops.dense_forward)


def _dense_forward_f64(data):  # pragma: no cover - compiled
    _split(data, _dense_forward, _F64, loops.dense_forward)


def _dense_backward_f32(data):  # pragma: no cover - compiled
    _split(data, _dense_backward, _F32, loops.dense_backward)


def _dense_backward_f64(data):  # pragma: no cover - compiled
    _split(data, _dense_backward, _F64, loops.dense_backward)


def _csr_forward_f32(data):  # pragma: no cover - compiled
    _split(data, _csr_forward, _F32, loops.csr_forward)


def _csr_forward_f64(data):  # pragma: no cover - compiled
    _split(data, _csr_forward, _F64, loops.csr_forward)


def _csr_backward_f32(data):  # pragma: no cover - compiled
    _split(data, _csr_backward, _F32, loops.csr_backward)


def _csr_backward_f64(data):  # pragma: no cover - compiled
    _split(data, _csr_backward, _F64, loops.csr_backward)


def _csr_weight_gradient_f32(data):  # pragma: no cover - compiled
    _split(data, _csr_weight_gradient, _F32, loops.csr_weight_gradient)


def _csr_weight_gradient_f64(data):  # pragma: no cover - compiled
    _split(data, _csr_weight_gradient, _F64, loops.csr_weight_gradient)


def _csr_edge_gradient_f32(data):  # pragma: no cover - compiled
    _split(data, _csr_edge_gradient, _F32, loops.csr_edge_gradient)


def _csr_edge_gradient_f64(data):  # pragma: no cover - compiled
    _split(data, _csr_edge_gradient, _F64, loops.csr_edge_gradient)


def _gather_f32(data):  # pragma: no cover - compiled
    _split(data, _indexed, _F32, loops.gather)


def _gather_f64(data):  # pragma: no cover - compiled
    _split(data, _indexed, _F64, loops.gather)


def _add_flat_f32(data):  # pragma: no cover - compiled
    _split(data, _indexed, _F32, loops.add_flat)


def _add_flat_f64(data):  # pragma: no cover - compiled
    _split(data, _indexed, _F64, loops.add_flat)


def _tile_sums_f32(data):  # pragma: no cover - compiled
    _split(data, _tile_sums, _F32, loops.tile_sums)


def _tile_sums_f64(data):  # pragma: no cover - compiled
    _split(data, _tile_sums, _F64, loops.tile_sums)


def _differs_words(data):  # pragma: no cover - compiled
    _split(data, _differs, _U64, loops.differs)


# Each loop's entries by dtype (``None`` for a loop whose arrays are not float32 or float64),
# compiled (a numba cfunc, kept on disk) the first time a run uses it: a run that never splits a
# sparse loop never compiles its entry, nor one in float64 its float32 entry.
_ENTRY_CODE: dict[Callable, dict[Any, Callable]] = {
    loops.dense_forward: {np.float32: _dense_forward_f32, np.float64: _dense_forward_f64},
    loops.dense_backward: {np.float32: _dense_backward_f32, np.float64: _dense_backward_f64},
    loops.csr_forward: {np.float32: _csr_forward_f32, np.float64: _csr_forward_f64},
    loops.csr_backward: {np.float32: _csr_backward_f32, np.float64: _csr_backward_f64},
    loops.csr_weight_gradient: {
        np.float32: _csr_weight_gradient_f32,
        np.float64: _csr_weight_gradient_f64,
    },
    loops.csr_edge_gradient: {
        np.float32: _csr_edge_gradient_f32,
        np.float64: _csr_edge_gradient_f64,
    },
    loops.gather: {np.float32: _gather_f32, np.float64: _gather_f64},
    loops.tile_sums: {np.float32: _tile_sums_f32, np.float64: _tile_sums_f64},
    loops.add_flat: {np.float32: _add_flat_f32, np.float64: _add_flat_f64},
    loops.differs: {None: _differs_words},
}
_ENTRIES: dict[Callable, Any] = {}  # by entry code


def _entry(kernel: Callable, dtype: Any = np.float32) -> Any:
    """The compiled entry of ``kernel`` for arrays of ``dtype`` (float32 or float64; ignored for
    a loop of other arrays), or ``None`` for a loop that has none, or none for ``dtype``."""
    codes = _ENTRY_CODE.get(kernel)
    if codes is None:
        return None
    code = codes.get(None) or codes.get(np.dtype(dtype).type if dtype is not None else None)
    if code is None:
        return None
    entry = _ENTRIES.get(code)
    if entry is None:
        with compiling():
            entry = cfunc(types.void(types.voidptr), cache=True)(code)
        _ENTRIES[code] = entry
    return entry


def _address(array: np.ndarray) -> int:
    return array.ctypes.data


def _encode(kernel, args: tuple) -> list[int]:
    """The loop's own arguments as 64-bit integers, in the order its entry reads them."""
    if kernel is loops.dense_forward:
        h, weight, _, block = args
        return [*h.shape, block, _address(h), _address(weight)]
    if kernel is loops.dense_backward:
        g, h, weight, _, block = args
        return [*g.shape, block, *map(_address, (g, h, weight))]
    if kernel is loops.csr_forward:
        z, out, h, indptr, indices, values = args
        addresses = map(_address, (z, out, h, indptr, indices, values))
        return [*h.shape, len(values), z.shape[0], *addresses]
    if kernel is loops.csr_backward:
        grad_h, out, g, h, indptr, indices, values, partial = args
        addresses = map(_address, (grad_h, out, g, h, indptr, indices, values))
        return [*g.shape, len(values), grad_h.shape[0], *addresses, *partial.shape,
                _address(partial)]  # fmt: skip
    if kernel is loops.tile_sums:
        partial, index, out = args
        return [*partial.shape, out.shape[0], *map(_address, (partial, index, out))]
    if kernel is loops.gather or kernel is loops.add_flat:
        flat, index, vector = args
        return [flat.shape[0], index.shape[0], *map(_address, (flat, index, vector))]
    if kernel is loops.differs:
        words, packed, found = args
        return [words.shape[0], *map(_address, (words, packed, found))]
    g, h, indptr, indices, grad = args  # csr_weight_gradient, csr_edge_gradient
    return [*g.shape, len(indices), *map(_address, (g, h, indptr, indices, grad))]


# --------------------------------------------------------------------------- the runtimes

_openmp: dict[int, Callable | None] = {}  # by process id: a fork looks again


def _torch_openmp() -> Callable | None:
    """``GOMP_parallel`` of the OpenMP runtime torch's own threads run on, if there is one."""
    if "OpenMP" not in torch.__config__.parallel_info():
        return None
    library = os.path.join(os.path.dirname(torch.__file__), "lib")
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "omp" in line}
    except OSError:
        return None
    for path in sorted(paths):
        name = os.path.basename(path)
        if os.path.dirname(path) == library and name.startswith(("libgomp", "libiomp", "libomp")):
            try:
                function = ctypes.CDLL(path).GOMP_parallel
            except (OSError, AttributeError):
                continue
            function.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
            function.restype = None
            return function
    return None


def _runtime() -> Callable | None:
    """``GOMP_parallel``, or None; the runtime is looked up once per process."""
    pid = os.getpid()
    if pid not in _openmp:
        _openmp.clear()
        _openmp[pid] = _torch_openmp()
    return _openmp[pid]


# Tests switch this off to run the thread pool on a machine where torch uses GNU OpenMP.
USE_OPENMP = True
_pool: tuple[tuple[int, int], ThreadPoolExecutor] | None = None


def _executor(workers: int) -> ThreadPoolExecutor:
    """A pool of ``workers`` threads, made again after a fork or a change of thread count."""
    global _pool
    key = (os.getpid(), workers)
    if _pool is None or _pool[0] != key:
        if _pool is not None and _pool[0][0] == os.getpid():
            _pool[1].shutdown(wait=False)
        _pool = (key, ThreadPoolExecutor(workers, thread_name_prefix="freenets"))
    return _pool[1]


def bounds(
    size: int, pieces: int, align: int, cumulative: Callable[[], np.ndarray] | None = None
) -> np.ndarray:
    """At most ``pieces + 1`` increasing bounds from 0 to ``size``, inner ones multiples of
    ``align``; with ``cumulative`` (``size + 1`` running totals of the work) the pieces carry
    equal work instead of equal length."""
    if cumulative is None:
        step = -(-size // pieces // align) * align
        cuts = [*range(0, size, step), size]
    else:
        totals = cumulative()
        targets = totals[-1] * np.arange(1, pieces) / pieces
        inner = np.searchsorted(totals, targets) // align * align
        cuts = sorted({0, size, *inner.tolist()})
    return np.asarray(cuts, dtype=np.int64)


def run(
    kernel: Callable[..., None],
    args: tuple,
    size: int,
    work: float,
    align: int,
    cumulative: Callable[[], np.ndarray] | None = None,
) -> None:
    """``kernel(*args, lo, hi)`` over ``[0, size)``, split in one piece per torch thread.

    Parameters
    ----------
    kernel : numba dispatcher
        A loop of :mod:`freenets.kernels.loops` taking ``lo, hi`` last.
    args : tuple
        Its other arguments (numpy arrays and scalars).
    size : int
        The range to cover.
    work : float
        Multiply-adds of the whole call; below :data:`PARALLEL_WORK` one thread runs it.
    align : int
        Pieces start at multiples of ``align``.
    cumulative : callable, optional
        Returns ``size + 1`` running totals of the work, called only when the call is split.
    """
    threads = 1 if work < PARALLEL_WORK else torch.get_num_threads()
    if threads == 1 or size < 2 * align:
        if first_use((kernel, getattr(args[0], "dtype", None) if args else None)):
            with compiling():  # its first call may compile it
                kernel(*args, 0, size)
        else:
            kernel(*args, 0, size)
        return
    cuts = bounds(size, threads, align, cumulative)
    parallel = _runtime()
    dtype = getattr(args[0], "dtype", None) if args else None
    entry = _entry(kernel, dtype) if USE_OPENMP and parallel is not None else None
    if parallel is not None and entry is not None:
        call = np.array(
            [0, len(cuts) - 1, cuts.ctypes.data, *_encode(kernel, args)], dtype=np.int64
        )
        parallel(entry.address, call.ctypes.data, threads, 0)  # returns when all are done
        return
    pieces = list(zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True))
    futures = [_executor(threads - 1).submit(kernel, *args, lo, hi) for lo, hi in pieces[1:]]
    kernel(*args, *pieces[0])
    for future in futures:
        future.result()
