"""Every path of the neurons' forward and backward against the per-neuron reference loop.

Like micrograd's engine tests: values and gradients against an independent definition
(:func:`freenets.kernels.reference_activations`), over random graphs from hypothesis.
"""

import importlib
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from freenets import graph
from freenets.kernels import (
    choose_method,
    cofiring,
    dag_activations,
    reference_activations,
    structure,
    threads,
    vector,
)
from freenets.kernels import cpu as kernels_cpu
from freenets.kernels.cofiring import co_firing

# The module, not the function ``freenets.kernels.structure`` that shadows it as an attribute.
structure_module = importlib.import_module("freenets.kernels.structure")

METHODS = ["dense", "sparse", "levels"]
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}


@pytest.fixture(scope="module")
def random_problem(random_mask):
    """``random_problem(k, batch, density, seed, dtype=float64)``: a random graph over ``k``
    neurons, with ``z``, ``weight`` and an upstream gradient ``grad_h`` drawn after it."""

    def build(k, batch, density, seed, dtype=torch.float64):
        generator = torch.Generator().manual_seed(seed)
        mask = random_mask(k, density, generator)
        z = torch.randn(batch, k, generator=generator, dtype=torch.float64)
        weight = torch.randn(k, k, generator=generator, dtype=torch.float64) / max(1, k) ** 0.5
        grad_h = torch.randn(batch, k, generator=generator, dtype=torch.float64)
        return z.to(dtype), weight.to(dtype), mask, grad_h.to(dtype)

    return build


def values_and_grads(forward, z, weight, grad_h):
    """``(h, dL/dz, dL/dW)`` with ``L = sum(h * grad_h)``; unused inputs get zero gradients."""
    z = z.detach().clone().requires_grad_(True)
    weight = weight.detach().clone().requires_grad_(True)
    h = forward(z, weight)
    grads = torch.autograd.grad(h, (z, weight), grad_h, allow_unused=True, materialize_grads=True)
    return (h.detach(), *grads)


def reference(z, weight, mask, grad_h):
    """The reference loop in float64, whatever the dtype under test."""
    return values_and_grads(
        lambda z, w: reference_activations(z, w, mask), z.double(), weight.double(), grad_h.double()
    )


def assert_matches(actual, expected, dtype):
    for name, a, e in zip(("h", "dL/dz", "dL/dW"), actual, expected, strict=True):
        assert a.dtype == dtype, name
        scale = max(1.0, float(e.abs().max())) if e.numel() else 1.0
        error = float((a.double() - e).abs().max()) if e.numel() else 0.0
        assert error <= TOLERANCE[dtype] * scale, f"{name}: {error:.3g}"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("method", METHODS)
@settings(max_examples=12)
@given(
    k=st.integers(1, 40),
    batch=st.integers(1, 64),
    density=st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]),
    seed=st.integers(0, 2**31 - 1),
)
def test_every_path_equals_the_reference(method, dtype, k, batch, density, seed, random_problem):
    z, weight, mask, grad_h = random_problem(k, batch, density, seed, dtype)
    actual = values_and_grads(
        lambda z, w: dag_activations(z, w, mask, method=method), z, weight, grad_h
    )
    assert_matches(actual, reference(z, weight, mask, grad_h), dtype)
    assert not bool(actual[2][~mask].any())  # masked weights: exactly zero gradient


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    ("k", "batch", "density"),
    [(1, 1, 1.0), (1, 5, 0.0), (12, 1, 1.0), (12, 9, 0.0), (30, 130, 1.0), (30, 65, 0.3)],
)
def test_edge_cases(method, k, batch, density, random_problem):
    """k = 1, the empty and the dense graph, batch 1, and batches over one CSR tile (64)."""
    for dtype in (torch.float64, torch.float32):
        z, weight, mask, grad_h = random_problem(k, batch, density, seed=k + batch, dtype=dtype)
        actual = values_and_grads(
            lambda z, w, mask=mask: dag_activations(z, w, mask, method=method), z, weight, grad_h
        )
        assert_matches(actual, reference(z, weight, mask, grad_h), dtype)
        assert not bool(actual[2][~mask].any())


@pytest.mark.parametrize("method", METHODS)
def test_non_contiguous_inputs(method, random_problem):
    z, weight, mask, grad_h = random_problem(20, 11, 0.6, seed=3)
    z_strided = torch.randn(20, 11, dtype=torch.float64).t()  # (11, 20), transposed strides
    z_strided.copy_(z)
    weight_strided = weight.t().contiguous().t()
    mask_strided = mask.t().contiguous().t()
    grad_strided = grad_h.t().contiguous().t()
    assert not (z_strided.is_contiguous() or weight_strided.is_contiguous())
    assert not (mask_strided.is_contiguous() or grad_strided.is_contiguous())
    actual = values_and_grads(
        lambda z, w: dag_activations(z, w, mask_strided, method=method),
        z_strided,
        weight_strided,
        grad_strided,
    )
    assert_matches(actual, reference(z, weight, mask, grad_h), torch.float64)


@pytest.mark.parametrize("runner", ["openmp", "pool"])
@pytest.mark.parametrize("method", ["dense", "sparse"])
@settings(max_examples=8)
@given(
    k=st.integers(1, 70),
    batch=st.integers(1, 40),
    density=st.sampled_from([0.0, 0.3, 1.0]),
    dtype=st.sampled_from([torch.float64, torch.float32]),
    block_bytes=st.sampled_from([1, 10**9]),
    partial_bytes=st.sampled_from([0, 10**9]),
    seed=st.integers(0, 2**31 - 1),
)
def test_threads_and_blocks_equal_the_reference(
    runner, method, k, batch, density, dtype, block_bytes, partial_bytes, seed, random_problem
):
    """Every call split between 1 and 2 threads (torch's OpenMP threads or the pool), the dense
    loops in blocks of four neurons or in one block, the sparse ones in narrow or wide tiles,
    their weight gradient in the backward's pass or in a second one: the reference's values and
    gradients, and the same results whatever the thread count."""
    z, weight, mask, grad_h = random_problem(k, batch, density, seed, dtype)
    expected = reference(z, weight, mask, grad_h)
    results = {}
    count = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(threads, "PARALLEL_WORK", 0)
        patch.setattr(threads, "USE_OPENMP", runner == "openmp")
        patch.setattr(kernels_cpu, "_BLOCK_BYTES", block_bytes)
        patch.setattr(kernels_cpu, "_TILE_CACHE_BYTES", block_bytes)  # 1: narrow tiles
        patch.setattr(kernels_cpu, "_PARTIAL_BYTES", partial_bytes)  # 0: a second pass
        try:
            for threads_now in (1, 2):
                torch.set_num_threads(threads_now)
                results[threads_now] = values_and_grads(
                    lambda z, w: dag_activations(z, w, mask, method=method), z, weight, grad_h
                )
                assert_matches(results[threads_now], expected, dtype)
        finally:
            torch.set_num_threads(count)
    for a, b in zip(results[1], results[2], strict=True):
        torch.testing.assert_close(
            a, b, rtol=0, atol=TOLERANCE[dtype] * max(1.0, float(b.abs().max()))
        )


def test_the_openmp_runner_is_found_where_torch_uses_gnu_openmp():
    """On Linux wheels torch runs on GNU OpenMP; the loops then share its threads."""
    parallel = threads._runtime()
    if "OpenMP" in torch.__config__.parallel_info() and sys.platform == "linux":
        assert parallel is not None
        for loop in (kernels_cpu.loops.dense_forward, kernels_cpu.loops.dense_backward):
            entry = threads._entry(loop, np.float32)  # compiled on first use, then kept
            assert entry is not None and entry.address and threads._entry(loop) is entry
            wide = threads._entry(loop, np.float64)  # one entry per dtype
            assert wide is not None and wide.address != entry.address
            assert threads._entry(loop, np.float64) is wide
            assert threads._entry(loop, np.int32) is None  # no entry: the thread pool runs it
    assert threads._entry(kernels_cpu.loops.pack_bools) is None  # a loop that is never split


@pytest.mark.parametrize("align", [1, 4])
@pytest.mark.parametrize(("size", "pieces"), [(1, 2), (7, 2), (8, 2), (130, 3), (5, 8)])
def test_bounds_cover_the_range_at_multiples_of_align(size, pieces, align):
    cuts = threads.bounds(size, pieces, align).tolist()
    assert cuts[0] == 0 and cuts[-1] == size and len(cuts) <= pieces + 1
    assert all(a < b for a, b in zip(cuts[:-1], cuts[1:], strict=True))
    assert all(cut % align == 0 for cut in cuts[:-1])
    weighted = threads.bounds(size, pieces, align, lambda: np.arange(size + 1) ** 2).tolist()
    assert weighted[0] == 0 and weighted[-1] == size
    assert all(a < b for a, b in zip(weighted[:-1], weighted[1:], strict=True))


@pytest.mark.parametrize("method", METHODS)
def test_gradcheck(method, random_problem):
    z, weight, mask, _ = random_problem(7, 5, 0.6, seed=5)
    z.requires_grad_(True)
    weight.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda z, w: dag_activations(z, w, mask, method=method), (z, weight)
    )


@pytest.mark.parametrize("method", METHODS)
def test_create_graph_gives_first_derivatives_and_refuses_second(method, random_problem):
    """Under ``create_graph=True`` the first derivatives are right, and differentiating them again
    raises instead of returning a wrong second derivative."""
    z, weight, mask, _ = random_problem(9, 4, 0.6, seed=6)
    h_ref = reference_activations(z, weight, mask)
    expected = reference(z, weight, mask, 2 * h_ref)  # L = sum(h^2): dL/dh = 2h
    z.requires_grad_(True)
    weight.requires_grad_(True)
    h = dag_activations(z, weight, mask, method=method)
    grad_z, grad_w = torch.autograd.grad(h.square().sum(), (z, weight), create_graph=True)
    torch.testing.assert_close(grad_z.detach(), expected[1], rtol=0, atol=1e-10)
    torch.testing.assert_close(grad_w.detach(), expected[2], rtol=0, atol=1e-10)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad_w.sum().backward()


def test_no_grad_inference_equals_training_forward(random_problem):
    z, weight, mask, _ = random_problem(25, 8, 0.4, seed=2, dtype=torch.float32)
    with torch.no_grad():
        inference = dag_activations(z, weight, mask)
    training = dag_activations(z, weight.requires_grad_(True), mask)
    assert training.requires_grad and not inference.requires_grad
    torch.testing.assert_close(inference, training.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("batch", [1, 15, 16, 17, 63, 64, 65, 130])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [7, 16, 37])
def test_sample_tiles_equal_a_plain_transpose_and_come_back(batch, dtype, k, monkeypatch):
    """The sparse path's layout: ``(B, k)`` to ``(tiles, k, lanes)``, zero-padded to whole
    tiles, and back, in wide and narrow tiles; ``k`` below, at and past whole blocks of the
    vector transpose (16 float32 or 8 float64 neurons), with the last neurons left over.
    Over a graph without edges the forward is a ReLU: on inputs >= 0 the tiles hold the
    inputs themselves."""
    x = torch.rand(k, batch, dtype=dtype).t()  # non-contiguous
    no_edges = np.zeros(k + 1, dtype=np.int64), np.zeros(0, dtype=np.int64)
    for cache_bytes in (10**9, 1):  # wide rows, then narrow
        monkeypatch.setattr(kernels_cpu, "_TILE_CACHE_BYTES", cache_bytes)
        lanes = kernels_cpu.lanes(k, dtype, batch)
        h, tiles = kernels_cpu.csr_forward(x, *no_edges, np.zeros(0, dtype=x.numpy().dtype))
        count = -(-batch // lanes)
        assert tiles.shape == (count, k, lanes) and tiles.is_contiguous()
        flat = tiles.permute(0, 2, 1).reshape(count * lanes, k)  # sample-major, padding last
        assert torch.equal(flat[:batch], x) and not bool(flat[batch:].any())
        assert torch.equal(h, x)


def test_tiles_narrow_where_a_tile_of_every_neuron_outgrows_the_cache_or_the_batch_fits():
    assert kernels_cpu.lanes(1000, torch.float32, 128) * 4 == vector.WIDE
    assert kernels_cpu.lanes(10_000, torch.float32, 128) * 4 == vector.NARROW
    assert kernels_cpu.lanes(10_000, torch.float64, 128) * 8 == vector.NARROW
    assert kernels_cpu.lanes(1000, torch.float32, 32) * 4 == vector.NARROW
    assert kernels_cpu.lanes(1000, torch.float32, 33) * 4 == vector.WIDE
    assert kernels_cpu.lanes(1000, torch.float64, 16) * 8 == vector.NARROW
    assert kernels_cpu.lanes(1000, torch.float64, 17) * 8 == vector.WIDE


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("row_bytes", [vector.NARROW, vector.WIDE])
def test_sources_with_any_number_of_successors_give_the_references_edge_gradients(
    dtype, row_bytes, monkeypatch
):
    """Sources with 0 to 19 successors: the backward finishes the edges' gradients a
    register's worth of edges at a time (8 float32, 4 float64) and the rest one by one; every
    count of whole groups and of edges left over gives the reference's gradients, in narrow
    and wide rows, with the sparse gradient and the (k, k) one."""
    k = 40
    mask = torch.zeros(k, k, dtype=torch.bool)
    for i in range(k):
        mask[i + 1 : i + 1 + i % 20, i] = True
    lanes = row_bytes // dtype.itemsize
    monkeypatch.setattr(kernels_cpu, "lanes", lambda k, dtype, batch: lanes)
    generator = torch.Generator().manual_seed(12)
    z, grad_h = (torch.randn(2 * lanes - 3, k, generator=generator) for _ in range(2))
    weight = torch.randn(k, k, generator=generator) / k**0.5
    expected = reference(z, weight, mask, grad_h)
    for sparse_grad in (False, True):

        def sparse(z, w, sparse_grad=sparse_grad):
            return dag_activations(z, w, mask, method="sparse", sparse_grad=sparse_grad)

        found = values_and_grads(sparse, z.to(dtype), weight.to(dtype), grad_h.to(dtype))
        found = (*found[:2], found[2].to_dense() if sparse_grad else found[2])
        assert_matches(found, expected, dtype)


@pytest.mark.parametrize(
    ("dtype", "batch"),
    [(torch.float32, 1), (torch.float32, 9), (torch.float32, 32), (torch.float64, 16)],
)
def test_a_batch_in_one_narrow_row_gives_what_wide_rows_give_bit_for_bit(
    batch, dtype, random_problem, monkeypatch
):
    """Wide rows would only pad such a batch with lanes of zeros, which add nothing to any sum
    (the weight's gradient is summed over the lanes by halves: the padded half first)."""
    assert kernels_cpu.lanes(40, dtype, batch) * dtype.itemsize == vector.NARROW
    z, weight, mask, grad_h = random_problem(40, batch, 0.3, seed=11, dtype=dtype)

    def sparse(z, w):
        return dag_activations(z, w, mask, method="sparse")

    narrow = values_and_grads(sparse, z, weight, grad_h)
    monkeypatch.setattr(kernels_cpu, "lanes", lambda k, dtype, batch: vector.WIDE // dtype.itemsize)
    wide = values_and_grads(sparse, z, weight, grad_h)
    for a, b in zip(narrow, wide, strict=True):
        assert torch.equal(a, b)
    assert_matches(narrow, reference(z, weight, mask, grad_h), dtype)


def _differs(words, packed, pieces=1):
    found = np.zeros(1, dtype=np.int64)
    cuts = threads.bounds(words.shape[0], pieces, 1).tolist()
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
        kernels_cpu.loops.differs(words, packed, found, lo, hi)
    return bool(found[0])


@pytest.mark.parametrize("pieces", [1, 3])
def test_packed_bits_equal_numpys_and_a_byte_that_is_not_a_boolean_counts_as_a_change(pieces):
    rng = np.random.default_rng(0)
    flags = rng.random(8 * 40) < 0.3
    words = structure_module.words(flags)
    packed = np.empty(40, dtype=np.uint8)
    assert kernels_cpu.loops.pack_bools(words, packed)
    assert np.array_equal(packed, np.packbits(flags, bitorder="little"))
    assert not _differs(words, packed, pieces)
    for position in (0, 7, 163, 319):
        edited = flags.copy()
        edited[position] ^= True
        assert _differs(structure_module.words(edited), packed, pieces)
    raw = flags.copy().view(np.uint8)
    raw[9] = 2 if raw[9] == 0 else 3
    assert _differs(raw.view(np.uint64), packed, pieces)
    assert not kernels_cpu.loops.pack_bools(raw.view(np.uint64), np.empty(40, dtype=np.uint8))


@pytest.mark.parametrize("runner", ["openmp", "pool"])
def test_a_large_masks_compare_split_between_threads_sees_an_edit_in_any_piece(runner, monkeypatch):
    """The compare of a packed mask runs on every thread, each its piece of the words."""
    monkeypatch.setattr(structure_module, "PACKED_BYTES", 8)
    monkeypatch.setattr(threads, "PARALLEL_WORK", 0)
    monkeypatch.setattr(threads, "USE_OPENMP", runner == "openmp")
    count = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        mask = graph.dense_mask(64)
        assert structure(mask).n_edges == 2016
        for where in ((1, 0), (63, 62)):  # in the first piece and in the last
            mask.numpy()[where] = False
            assert structure(mask).n_edges == 2015
            mask.numpy()[where] = True
            assert structure(mask).n_edges == 2016
    finally:
        torch.set_num_threads(count)


@pytest.mark.parametrize("runner", ["openmp", "pool"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_scattered_add_split_between_threads_equals_index_add(runner, dtype, monkeypatch):
    """EdgeAdam's add of its steps to their entries: distinct positions in any order, the
    call split between two threads, the same as torch's ``index_add_``, bit for bit."""
    monkeypatch.setattr(threads, "PARALLEL_WORK", 0)
    monkeypatch.setattr(threads, "USE_OPENMP", runner == "openmp")
    generator = torch.Generator().manual_seed(3)
    flat = torch.randn(1000, generator=generator, dtype=dtype)
    index = torch.randperm(1000, generator=generator)[:300]
    values = torch.randn(300, generator=generator, dtype=dtype)
    expected = flat.clone().index_add_(0, index, values)
    count = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        kernels_cpu.add_at(flat, index, values)
    finally:
        torch.set_num_threads(count)
    assert torch.equal(flat, expected)


def test_structure_follows_in_place_changes_of_the_mask(random_problem):
    z, weight, _, _ = random_problem(10, 4, 1.0, seed=8)
    mask = graph.dense_mask(10)
    before = dag_activations(z, weight, mask, method="sparse")
    assert structure(mask).n_edges == 45
    mask[5:, :5] = False  # in place: the cached structure must not be reused
    after = dag_activations(z, weight, mask, method="sparse")
    assert structure(mask).n_edges == 45 - 25
    torch.testing.assert_close(after, reference_activations(z, weight, mask), rtol=0, atol=1e-12)
    assert not torch.allclose(before, after)


@pytest.mark.parametrize(
    ("k", "sparse_below", "dense_above"), [(100, 0.9, 1.0), (300, 0.6, 0.8), (1000, 0.35, 0.6)]
)
def test_choose_method_on_both_sides_of_the_measured_crossovers(
    k, sparse_below, dense_above, random_mask
):
    """The sparse path below the density where it was measured to stop winning, dense above."""
    cpu = torch.device("cpu")
    generator = torch.Generator().manual_seed(k)
    for density, expected in ((sparse_below, "sparse"), (dense_above, "dense")):
        mask = random_mask(k, density, generator)
        if density == 1.0:
            mask = graph.dense_mask(k)
        assert choose_method(structure(mask), cpu, torch.float32) == expected, density


def test_choose_method_by_density_and_depth(random_mask):
    cpu = torch.device("cpu")
    assert choose_method(structure(graph.dense_mask(1000)), cpu, torch.float32) == "dense"
    sparse = random_mask(1000, 0.05, 0)
    assert choose_method(structure(sparse), cpu, torch.float32) == "sparse"
    layered = graph.layered_mask([400, 400])  # depth 2, half the possible edges
    assert choose_method(structure(layered), cpu, torch.float32) == "levels"
    small_layers = graph.layered_mask([100, 100, 100])  # measured: sparse beat levels here
    assert choose_method(structure(small_layers), cpu, torch.float32) == "sparse"
    # No compiled kernel: other dtypes and devices take the pure-torch path.
    assert choose_method(structure(graph.dense_mask(5)), cpu, torch.bfloat16) == "levels"
    assert choose_method(structure(graph.dense_mask(5)), torch.device("meta"), torch.float32) == (
        "levels"
    )


@pytest.mark.parametrize("threads_now", [1, 2])
def test_calls_split_between_threads_only_past_the_work_threshold(threads_now):
    """Below ``PARALLEL_WORK`` one piece on the calling thread; from it on, one piece per
    thread, covering the range at multiples of the alignment."""
    calls = []

    def kernel(lo, hi):
        calls.append((lo, hi))

    count = torch.get_num_threads()
    try:
        torch.set_num_threads(threads_now)
        threads.run(kernel, (), 130, threads.PARALLEL_WORK - 1, 4)
        assert calls == [(0, 130)]
        calls.clear()
        threads.run(kernel, (), 130, threads.PARALLEL_WORK, 4)
    finally:
        torch.set_num_threads(count)
    pieces = sorted(calls)
    assert len(pieces) == threads_now and pieces[0][0] == 0 and pieces[-1][1] == 130
    assert all(a[1] == b[0] and b[0] % 4 == 0 for a, b in zip(pieces, pieces[1:], strict=False))


def test_other_dtypes_take_the_torch_path(random_problem):
    z, weight, mask, _ = random_problem(9, 6, 0.7, seed=4)
    h = dag_activations(z.to(torch.bfloat16), weight.to(torch.bfloat16), mask)
    expected = reference_activations(z, weight, mask)
    torch.testing.assert_close(h.double(), expected, rtol=0.05, atol=0.05)


def test_bad_arguments_raise_value_error(random_problem):
    z, weight, mask, _ = random_problem(4, 2, 1.0, seed=0)
    with pytest.raises(ValueError, match="method"):
        dag_activations(z, weight, mask, method="fast")
    with pytest.raises(ValueError, match="expected z"):
        dag_activations(z, weight[:3, :3], mask)
    with pytest.raises(ValueError, match="CPU"):
        dag_activations(z.half(), weight.half(), mask, method="dense")
    with pytest.raises(ValueError, match="dtype"):
        dag_activations(z, weight.float(), mask)


@settings(max_examples=25)
@given(batch=st.integers(1, 200), k=st.integers(1, 150), seed=st.integers(0, 2**31 - 1))
def test_co_firing_counts_equal_the_matrix_product(batch, k, seed):
    generator = torch.Generator().manual_seed(seed)
    fires = torch.rand(batch, k, generator=generator) < torch.rand(k, generator=generator)
    expected = fires.double().t() @ fires.double()
    torch.testing.assert_close(co_firing(fires), expected, rtol=0, atol=0)
    non_contiguous = fires.t().contiguous().t()
    torch.testing.assert_close(co_firing(non_contiguous), expected, rtol=0, atol=0)


def _edit_in_place(mask):
    mask[6:, :6] = False


def _edit_data(mask):
    mask.data[6:, :6] = False  # the usual pruning idiom: does not move the version counter


def _edit_numpy(mask):
    mask.numpy()[6:, :6] = False  # a numpy view: invisible to autograd


def _edit_copy_into_data(mask):
    pruned = mask.clone()
    pruned[6:, :6] = False
    mask.data.copy_(pruned)


def _edit_rebind_data(mask):
    pruned = mask.clone()
    pruned[6:, :6] = False
    mask.data = pruned  # same tensor object, new storage


def _edit_through_a_view(mask):
    mask[6:].data[:, :6] = False


@pytest.mark.parametrize(
    "edit",
    [
        _edit_in_place,
        _edit_data,
        _edit_numpy,
        _edit_copy_into_data,
        _edit_rebind_data,
        _edit_through_a_view,
    ],
)
@pytest.mark.parametrize("method", ["auto", *METHODS])
@pytest.mark.parametrize("packed", [False, True])
def test_a_changed_mask_counts_at_the_next_call(method, edit, packed, random_problem, monkeypatch):
    """However the mask is changed, the next forward and backward use the new graph, whether
    the cache compares the mask with its copy byte by byte or (large masks) with its bits."""
    monkeypatch.setattr(structure_module, "PACKED_BYTES", 8 if packed else 1 << 62)
    z, weight, _, grad_h = random_problem(12, 5, 1.0, seed=8)
    mask = graph.dense_mask(12)
    dag_activations(z, weight, mask, method=method)  # caches the dense graph's structure
    edit(mask)
    assert int(mask.sum()) == 66 - 36
    actual = values_and_grads(
        lambda z, w: dag_activations(z, w, mask, method=method), z, weight, grad_h
    )
    assert_matches(actual, reference(z, weight, mask, grad_h), torch.float64)
    assert not bool(actual[2][~mask].any())
    assert structure(mask).n_edges == 66 - 36


@pytest.mark.parametrize("k", [10, 66])
@pytest.mark.parametrize("where", ["last word", "after it", "first word"])
@pytest.mark.parametrize("packed", [False, True])
def test_an_edit_in_a_mask_of_no_whole_number_of_words_counts(k, where, packed, monkeypatch):
    """k = 10 and 66: 100 and 4356 bytes, not a whole number of 64-bit words (the last four
    bytes hold neuron k - 1's edges from k - 4, k - 3, k - 2 and its own place); an edge removed
    there, or before, counts at the next call, and so does its return."""
    monkeypatch.setattr(structure_module, "PACKED_BYTES", 8 if packed else 1 << 62)
    at = {"last word": (k - 1, k - 5), "after it": (k - 1, k - 3), "first word": (4, 2)}[where]
    mask = graph.dense_mask(k)
    edges = k * (k - 1) // 2
    assert structure(mask).n_edges == edges
    mask.numpy()[at] = False
    assert structure(mask).n_edges == edges - 1
    mask.numpy()[at] = True
    assert structure(mask).n_edges == edges


@pytest.mark.parametrize("packed", [False, True])
def test_an_edit_in_a_mask_of_another_dtype_counts(packed, monkeypatch):
    """A 0/1 float mask is compared as bytes, or from ``PACKED_BYTES`` on as 64-bit words
    (bits are for bool masks); an edit through a numpy view counts either way."""
    monkeypatch.setattr(structure_module, "PACKED_BYTES", 8 if packed else 1 << 62)
    mask = graph.dense_mask(9).to(torch.float32)
    assert structure(mask).n_edges == 36
    for at in ((8, 7), (1, 0)):
        mask.numpy()[at] = 0.0
    assert structure(mask).n_edges == 34


@pytest.mark.parametrize("chunk", [64, 192, cofiring.CHUNK])
@pytest.mark.parametrize("layout", ["rows", "columns", "bool"])
def test_co_firing_accumulates_batches_of_any_size(chunk, layout, monkeypatch):
    """Batches that end inside a 64-bit word and fill the packed buffer past its end, given as
    rows, as transposed views (the sparse path's activations) or as booleans."""
    monkeypatch.setattr(cofiring, "CHUNK", chunk)
    generator = torch.Generator().manual_seed(chunk)
    k = 70
    h = torch.randn(500, k, generator=generator, dtype=torch.float64)
    h[:, 3] = 0.0  # a neuron that never fires
    h[h.abs() < 0.05] = float("nan")  # NaN does not fire, as with h > 0
    counter = cofiring.CoFiring(k)
    start = 0
    for size in (1, 63, 2, 130, 64, 240):
        batch = h[start : start + size]
        if layout == "columns":
            batch = batch.t().contiguous().t()
        elif layout == "bool":
            batch = batch > 0
        counter.add(batch)
        start += size
    s = (h[:start] > 0).double()
    assert counter.n_samples == start == 500
    torch.testing.assert_close(counter.counts(), s.t() @ s, rtol=0, atol=0)
    torch.testing.assert_close(counter.counts(), s.t() @ s, rtol=0, atol=0)  # counts() twice
