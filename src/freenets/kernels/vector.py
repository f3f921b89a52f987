"""The inner loops of the sparse kernels as LLVM vector code (numba intrinsics).

The CSR loops of :mod:`freenets.kernels.loops` work on tiles: ``(tiles, k, lanes)`` arrays
holding, for each tile of ``lanes`` samples, one contiguous row per neuron. Each edge
``i -> j`` adds ``w * h[tile, i]`` to neuron ``j``'s row of the tile. A numba loop over the
samples does not vectorise that update well: the row written and the rows read are slices of
one array, so the compiler cannot rule out their overlap and makes scalar code, or vector code
behind run-time overlap checks on every group of edges. Here a neuron's row of a tile is one
LLVM vector: it stays in registers while all of the neuron's edges are added (per
edge, one broadcast weight and a fused multiply-add per register) and is stored once, after
its ReLU or gate.

:func:`transpose_block` moves samples into and out of that layout a block of 16 x 16
(float32) or 8 x 8 (float64) elements at a time, in registers.

A vector's width is fixed when a loop is compiled, so each intrinsic exists for rows of
:data:`WIDE` and of :data:`NARROW` bytes; the loops pick one by their arrays' shape.

:func:`prefetch` asks for an array's element ahead of its use: the gathers of scattered entries
(an edge's weight out of a large ``(k, k)`` matrix) that the hardware cannot predict.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

# Bytes of one neuron's row of a tile: four cache lines, or two.
WIDE, NARROW = 256, 128

_I32, _I64 = ir.IntType(32), ir.IntType(64)


def _wide(builder, value):
    return value if value.type.width == 64 else builder.sext(value, _I64)


class _Tiles:
    """A C-contiguous ``(tiles, k, lanes)`` array in LLVM: its rows as vectors."""

    def __init__(self, context, builder, array_type, value, row_bytes: int):
        array = context.make_array(array_type)(context, builder, value)
        element = context.get_data_type(array_type.dtype)
        self.size = context.get_abi_sizeof(element)
        self.vector = ir.VectorType(element, row_bytes // self.size)
        self.tile_stride, self.row_stride, _ = cgutils.unpack_tuple(builder, array.strides, 3)
        self.tiles = cgutils.unpack_tuple(builder, array.shape, 3)[0]
        self.base = builder.bitcast(array.data, ir.IntType(8).as_pointer())
        self.builder = builder

    def pointer(self, tile, row):
        b = self.builder
        offset = b.add(
            b.mul(_wide(b, tile), self.tile_stride), b.mul(_wide(b, row), self.row_stride)
        )
        return b.bitcast(b.gep(self.base, [offset]), self.vector.as_pointer())

    def load(self, tile, row):
        return self.builder.load(self.pointer(tile, row), align=self.size)

    def store(self, value, tile, row):
        self.builder.store(value, self.pointer(tile, row), align=self.size)


def _data(context, builder, array_type, value):
    return context.make_array(array_type)(context, builder, value).data


def _fma(builder, vector):
    suffix = "f32" if isinstance(vector.element, ir.FloatType) else "f64"
    function = ir.FunctionType(vector, [vector, vector, vector])
    return cgutils.get_or_insert_function(
        builder.module, function, f"llvm.fma.v{vector.count}{suffix}"
    )


def _broadcast(builder, value, vector):
    undefined = ir.Constant(vector, ir.Undefined)
    zeros = ir.Constant(ir.VectorType(_I32, vector.count), [0] * vector.count)
    return builder.shuffle_vector(
        builder.insert_element(undefined, value, ir.Constant(_I32, 0)), undefined, zeros
    )


class _EdgeSum:
    """``tiles[tile, row] + sum_p values[p] * tiles[tile, indices[p]]``, built edge by edge:
    ``edge_types`` and ``edge_values`` are those of ``(indices, values, start, stop)``."""

    def __init__(self, context, builder, tiles: _Tiles, tile, row, edge_types, edge_values):
        self.indices, self.values = (
            _data(context, builder, array_type, value)
            for array_type, value in zip(edge_types[:2], edge_values[:2], strict=True)
        )
        self.start, self.stop = (_wide(builder, value) for value in edge_values[2:])
        self.builder, self.tiles, self.tile = builder, tiles, tile
        self.total = cgutils.alloca_once(builder, tiles.vector)  # promoted to registers by LLVM
        builder.store(tiles.load(tile, row), self.total)
        self.fma = _fma(builder, tiles.vector)

    def add(self, p):
        """Adds edge ``p``'s term; returns its source's row."""
        b, tiles = self.builder, self.tiles
        weight = _broadcast(b, b.load(b.gep(self.values, [p])), tiles.vector)
        source = tiles.load(self.tile, b.load(b.gep(self.indices, [p])))
        b.store(b.call(self.fma, [weight, source, b.load(self.total)]), self.total)
        return source

    def value(self):
        return self.builder.load(self.total)


def _edge_sum(context, builder, tiles: _Tiles, tile, row, edge_types, edge_values):
    """The whole :class:`_EdgeSum` over ``start:stop``."""
    edges = _EdgeSum(context, builder, tiles, tile, row, edge_types, edge_values)
    with cgutils.for_range_slice(builder, edges.start, edges.stop, ir.Constant(_I64, 1)) as (
        p,
        _,
    ):
        edges.add(p)
    return edges.value()


def _halve(builder, value, lanes: int):
    """A vector's high half added to its low half until ``lanes`` lanes are left."""
    count = value.type.count
    while count > lanes:
        count //= 2
        undefined = ir.Constant(ir.VectorType(value.type.element, count * 2), ir.Undefined)
        halves = (list(range(count)), list(range(count, 2 * count)))
        low, high = (
            builder.shuffle_vector(value, undefined, ir.Constant(ir.VectorType(_I32, count), half))
            for half in halves
        )
        value = builder.fadd(low, high)
    return value


def _sum_by_halves(builder, value):
    """The sum of a vector's lanes: its high half added to its low half until one lane is
    left, a fixed order (the same sum whatever the thread)."""
    return builder.extract_element(_halve(builder, value, 1), ir.Constant(_I32, 0))


# The edges' gradients are summed by halves one edge at a time down to one register's lanes
# (32 bytes: 8 float32), then a register's worth of edges together, by shuffles, into one
# vector of their sums: the additions of :func:`_sum_by_halves`, pair for pair, with fewer
# instructions and one store for the group (the results equal those of one edge at a time bit
# for bit, float32 and float64, as compiled with the loops' fast-math flags).
_REGISTER_BYTES = 32
# Only in rows of this many bytes or fewer: a wide row's sum and the neuron's own row already
# fill AVX2's sixteen registers, and the groups measured 0 to 6% slower there (k = 1000, 10%,
# batch 128); in narrow rows 12% faster (k = 10,000 at 1%, batch 128: 10.4 to 10.7 against
# 12.0 to 12.3 ms; k = 1000, 10%, batch 32: 0.14 against 0.16 to 0.19). The backward's loop
# alone, one thread, alternating processes, 2-core machine.
_GROUPED_ROW_BYTES = NARROW


def _merge(builder, first, second, width: int):
    """One step of the sums by halves of several edges at once: ``first`` and ``second`` each
    hold edges' partial sums of ``width`` lanes apiece; the result holds each edge's halves
    added (``width // 2`` lanes apiece), ``first``'s edges, then ``second``'s."""
    lanes, half = first.type.count, width // 2
    low = [start + i for start in range(0, lanes, width) for i in range(half)]
    low += [lanes + i for i in low]
    high = [i + half for i in low]
    low_lanes, high_lanes = (
        builder.shuffle_vector(first, second, ir.Constant(ir.VectorType(_I32, lanes), order))
        for order in (low, high)
    )
    return builder.fadd(low_lanes, high_lanes)


def _make(row_bytes: int):
    """The four intrinsics for rows of ``row_bytes`` bytes."""

    @intrinsic
    def relu_sum(typingctx, h, tile, row, indices, values, start, stop):  # pragma: no cover
        """``h[tile, row] = relu(h[tile, row] + sum_p values[p] h[tile, indices[p]])``."""
        signature = types.void(h, tile, row, indices, values, start, stop)

        def codegen(context, builder, signature, args):
            tiles = _Tiles(context, builder, signature.args[0], args[0], row_bytes)
            edges = (signature.args[3:], args[3:])
            total = _edge_sum(context, builder, tiles, args[1], args[2], *edges)
            zero = ir.Constant(tiles.vector, None)
            # NaN < 0 is false: a NaN stays NaN, as with torch.relu.
            below = builder.fcmp_ordered("<", total, zero)
            tiles.store(builder.select(below, zero, total), args[1], args[2])
            return context.get_dummy_value()

        return signature, codegen

    @intrinsic
    def gated_sum(typingctx, g, h, tile, row, indices, values, start, stop):  # pragma: no cover
        """``g[tile, row] = (g[tile, row] + sum_p values[p] g[tile, indices[p]])`` where
        ``h[tile, row] > 0``, else 0 (ReLU's derivative, as torch takes it)."""
        signature = types.void(g, h, tile, row, indices, values, start, stop)

        def codegen(context, builder, signature, args):
            g_tiles = _Tiles(context, builder, signature.args[0], args[0], row_bytes)
            h_tiles = _Tiles(context, builder, signature.args[1], args[1], row_bytes)
            edges = (signature.args[4:], args[4:])
            total = _edge_sum(context, builder, g_tiles, args[2], args[3], *edges)
            zero = ir.Constant(g_tiles.vector, None)
            active = builder.fcmp_ordered(">", h_tiles.load(args[2], args[3]), zero)
            g_tiles.store(builder.select(active, total, zero), args[2], args[3])
            return context.get_dummy_value()

        return signature, codegen

    @intrinsic
    def gated_sum_edges(
        typingctx, g, h, tile, row, indices, values, start, stop, partial
    ):  # pragma: no cover
        """:func:`gated_sum`, and for each edge ``p`` in ``start:stop`` (to ``indices[p]``
        from ``row``) its weight gradient over the tile: ``partial[tile, p] = sum_lane
        g[tile, indices[p], lane] h[tile, row, lane]``, summed by halves.

        The successor's row is loaded for the sum anyway and the neuron's own activations
        once, so an edge's gradient costs a product and a sum in registers instead of a second
        pass that reads both rows again. In narrow rows, whole groups of a register's worth
        of edges finish their sums together and store them as one vector (:func:`_merge`)."""
        signature = types.void(g, h, tile, row, indices, values, start, stop, partial)

        def codegen(context, builder, signature, args):
            g_tiles = _Tiles(context, builder, signature.args[0], args[0], row_bytes)
            h_tiles = _Tiles(context, builder, signature.args[1], args[1], row_bytes)
            tile, row = args[2], args[3]
            array = context.make_array(signature.args[8])(context, builder, args[8])
            stride = cgutils.unpack_tuple(builder, array.strides, 2)[0]
            bytes_ = builder.bitcast(array.data, ir.IntType(8).as_pointer())
            out = builder.bitcast(
                builder.gep(bytes_, [builder.mul(_wide(builder, tile), stride)]), array.data.type
            )
            own = h_tiles.load(tile, row)
            edges = _EdgeSum(context, builder, g_tiles, tile, row, signature.args[4:8], args[4:8])
            start, stop = edges.start, edges.stop

            def add_edge(p):
                """The edge's term to the sum; its product with the row, as a vector."""
                return builder.fmul(edges.add(p), own)

            grouped = start
            if row_bytes <= _GROUPED_ROW_BYTES:
                # Whole groups of edges: each edge halved to ``group`` lanes, merged with the
                # ones before it as soon as a pair of the same level is there.
                group = _REGISTER_BYTES // g_tiles.size
                count = builder.sub(stop, start)
                grouped = builder.sub(stop, builder.urem(count, ir.Constant(_I64, group)))
                step = ir.Constant(_I64, group)
                with cgutils.for_range_slice(builder, start, grouped, step) as (first, _):
                    pending: list[tuple[int, ir.Value]] = []
                    for offset in range(group):
                        p = builder.add(first, ir.Constant(_I64, offset))
                        level, sums = 0, _halve(builder, add_edge(p), group)
                        while pending and pending[-1][0] == level:
                            sums = _merge(builder, pending.pop()[1], sums, group >> level)
                            level += 1
                        pending.append((level, sums))
                    sums = pending[0][1]
                    at = builder.bitcast(builder.gep(out, [first]), sums.type.as_pointer())
                    builder.store(sums, at, align=g_tiles.size)
            with cgutils.for_range_slice(builder, grouped, stop, ir.Constant(_I64, 1)) as (p, _):
                edge = _sum_by_halves(builder, add_edge(p))
                builder.store(edge, builder.gep(out, [p]))
            total = edges.value()
            zero = ir.Constant(g_tiles.vector, None)
            active = builder.fcmp_ordered(">", own, zero)
            g_tiles.store(builder.select(active, total, zero), tile, row)
            return context.get_dummy_value()

        return signature, codegen

    @intrinsic
    def edge_dot(typingctx, g, h, target, source):  # pragma: no cover
        """``sum_tile sum_lane g[tile, target, lane] h[tile, source, lane]``: one edge's weight
        gradient, summed lane-wise over the tiles, then across the lanes by halves."""
        signature = g.dtype(g, h, target, source)

        def codegen(context, builder, signature, args):
            g_tiles = _Tiles(context, builder, signature.args[0], args[0], row_bytes)
            h_tiles = _Tiles(context, builder, signature.args[1], args[1], row_bytes)
            vector = g_tiles.vector
            total = cgutils.alloca_once(builder, vector)
            builder.store(ir.Constant(vector, None), total)
            fma = _fma(builder, vector)
            with cgutils.for_range(builder, g_tiles.tiles) as loop:
                tile = loop.index
                product = [g_tiles.load(tile, args[2]), h_tiles.load(tile, args[3])]
                builder.store(builder.call(fma, [*product, builder.load(total)]), total)
            return _sum_by_halves(builder, builder.load(total))

        return signature, codegen

    return relu_sum, gated_sum, gated_sum_edges, edge_dot


relu_sum_wide, gated_sum_wide, gated_sum_edges_wide, edge_dot_wide = _make(WIDE)
relu_sum_narrow, gated_sum_narrow, gated_sum_edges_narrow, edge_dot_narrow = _make(NARROW)


@intrinsic
def prefetch(typingctx, array, index):  # pragma: no cover - compiled
    """Start loading ``array[index]`` (a contiguous 1-d array) into the caches; no effect on
    results, and no fault for an index out of range."""
    signature = types.void(array, index)

    def codegen(context, builder, signature, args):
        data = _data(context, builder, signature.args[0], args[0])
        address = builder.bitcast(
            builder.gep(data, [_wide(builder, args[1])]), ir.IntType(8).as_pointer()
        )
        function = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(ir.VoidType(), [address.type, _I32, _I32, _I32]),
            "llvm.prefetch.p0i8",
        )
        # A read (0), kept in every level of cache (3), of data (1).
        builder.call(function, [address, _I32(0), _I32(3), _I32(1)])
        return context.get_dummy_value()

    return signature, codegen


# Bytes of each row of a transposed block: one cache line, one 512-bit register.
BLOCK = 64


@intrinsic
def transpose_block(
    typingctx, src, src_at, src_stride, dst, dst_at, dst_stride
):  # pragma: no cover
    """``dst[dst_at + c * dst_stride + r] = src[src_at + r * src_stride + c]`` for ``r, c``
    below ``n = BLOCK / itemsize`` (16 for float32, 8 for float64); positions and strides in
    elements of the two arrays' (shared) dtype, both arrays contiguous.

    ``n`` rows are loaded as vectors and transposed in registers by ``log2(n)`` rounds of
    two-vector shuffles (round ``b`` swaps bit ``b`` of the row and column numbers), then
    stored as ``n`` vectors: no element is moved alone.
    """
    if src.dtype != dst.dtype:
        return None
    signature = types.void(src, src_at, src_stride, dst, dst_at, dst_stride)

    def codegen(context, builder, signature, args):
        element = context.get_data_type(signature.args[0].dtype)
        size = context.get_abi_sizeof(element)
        n = BLOCK // size
        vector = ir.VectorType(element, n)
        source = _data(context, builder, signature.args[0], args[0])
        target = _data(context, builder, signature.args[3], args[3])

        def row(base, at, stride, r):
            offset = builder.add(_wide(builder, at), builder.mul(_wide(builder, stride), _I64(r)))
            return builder.bitcast(builder.gep(base, [offset]), vector.as_pointer())

        rows = [builder.load(row(source, args[1], args[2], r), align=size) for r in range(n)]
        step = 1
        while step < n:
            low = [c if not c & step else n + c - step for c in range(n)]
            high = [c + step if not c & step else n + c for c in range(n)]
            swapped = list(rows)
            for r in range(n):
                if not r & step:
                    pair = (rows[r], rows[r | step])
                    swapped[r] = builder.shuffle_vector(
                        *pair, ir.Constant(ir.VectorType(_I32, n), low)
                    )
                    swapped[r | step] = builder.shuffle_vector(
                        *pair, ir.Constant(ir.VectorType(_I32, n), high)
                    )
            rows, step = swapped, step * 2
        for c in range(n):
            builder.store(rows[c], row(target, args[4], args[5], c), align=size)
        return context.get_dummy_value()

    return signature, codegen
