"""What the kernels need to know about a graph, computed once per content of its mask.

:func:`structure` returns a mask's :class:`Structure` (edge counts, CSR lists by target and by
source, levels), cached per live mask tensor and reused only while the mask still holds the
same contents.
"""

from __future__ import annotations

import weakref
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch

from freenets.kernels.notice import compiling, first_use


@dataclass
class Structure:
    """What the kernels need to know about one graph, computed once per content of the mask.

    Edge ``p`` goes from neuron ``cols[p]`` to neuron ``rows[p]``. Edges are listed by target
    neuron (row) for the forward pass and a second time by source neuron for the backward pass.
    """

    n_neurons: int
    n_edges: int
    mask: torch.Tensor  # on the CPU
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def density(self) -> float:
        """Edges as a fraction of the ``k(k-1)/2`` possible ones (1.0 for k = 1)."""
        possible = self.n_neurons * (self.n_neurons - 1) // 2
        return self.n_edges / possible if possible else 1.0

    @property
    def is_dense(self) -> bool:
        """True when every edge ``i -> j``, ``i < j``, is present."""
        return self.n_edges == self.n_neurons * (self.n_neurons - 1) // 2

    def float_mask(self, dtype: torch.dtype, device: torch.device | None = None) -> torch.Tensor:
        """The mask as 0/1 of ``dtype`` on ``device`` (the CPU by default)."""
        device = torch.device("cpu") if device is None else device
        return self._get(("float", dtype, device), lambda: self.mask.to(device, dtype))

    def _get(self, name, make):
        if name not in self._cache:
            self._cache[name] = make()
        return self._cache[name]

    @property
    def edges(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rows, cols)``, int64, sorted by row then column."""
        return self._get("edges", lambda: self.mask.nonzero(as_tuple=True))

    @property
    def csr(self) -> tuple[np.ndarray, np.ndarray]:
        """``(indptr, indices)`` of the edges by target neuron (row)."""
        return self._get("csr", lambda: _compress(*self.edges, self.n_neurons))

    def edge_index(self, device: torch.device) -> torch.Tensor:
        """``(2, n_edges)`` int64 on ``device``: :attr:`edges` as a sparse COO tensor's indices."""
        return self._get(("edge_index", device), lambda: torch.stack(self.edges).to(device))

    @property
    def edge_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(positions, order, positions_t)`` as int64 numpy: each edge of :attr:`edges` as
        its position ``row * k + col`` in the flat ``(k, k)`` weight; for each edge of
        :attr:`edges_by_source` its place in :attr:`edges`, and its position in the weight."""

        def make() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            rows, cols = (a.numpy() for a in self.edges)
            positions = rows * self.n_neurons + cols
            # Stable: within a source neuron its edges keep their order by target.
            order = np.argsort(-cols, kind="stable")
            return positions, order, positions[order]

        return self._get("edge_arrays", make)

    @property
    def edges_by_source(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rows, cols)`` sorted by column from the last neuron to the first, then by row: the
        order in which the backward pass visits them, so that it reads its lists from the first
        to the last (at k = 10,000, 1%, its loop took 3.7 ms in this order against 5.9 with the
        lists of the first neuron first, the same sums)."""

        def make() -> tuple[torch.Tensor, torch.Tensor]:
            order = torch.from_numpy(self.edge_arrays[1])
            rows, cols = self.edges
            return rows[order], cols[order]

        return self._get("by_source", make)

    @property
    def csr_by_source(self) -> tuple[np.ndarray, np.ndarray]:
        """``(indptr, indices)`` by :attr:`edges_by_source`: list ``r`` (``indices[indptr[r]:
        indptr[r + 1]]``) holds the successors of neuron ``k - 1 - r``."""
        rows, cols = self.edges_by_source
        return self._get(
            "csr_t", lambda: _compress(self.n_neurons - 1 - cols, rows, self.n_neurons)
        )

    @property
    def levels(self) -> np.ndarray:
        """Level of each neuron: 0 without predecessors, else one more than its deepest one."""

        def make() -> np.ndarray:
            indptr, indices = self.csr
            level = np.zeros(self.n_neurons, dtype=np.int64)
            for j in range(self.n_neurons):
                if indptr[j + 1] > indptr[j]:
                    level[j] = level[indices[indptr[j] : indptr[j + 1]]].max() + 1
            return level

        return self._get("levels", make)

    @property
    def depth(self) -> int:
        """Number of levels: the sequential steps of a level-scheduled pass."""
        return int(self.levels.max()) + 1 if self.n_neurons else 0

    def level_order(self, device: torch.device) -> tuple[torch.Tensor | None, list]:
        """``(order, bounds)``: the neurons sorted by level (``None`` when they already are),
        and each level's slice in that order."""

        def make():
            level = torch.from_numpy(self.levels)
            counts = torch.bincount(level, minlength=self.depth).tolist()
            starts = np.concatenate([[0], np.cumsum(counts)]).tolist()
            bounds = list(zip(starts[:-1], starts[1:], strict=True))
            if bool((level[1:] >= level[:-1]).all()):
                return None, bounds
            return torch.argsort(level, stable=True), bounds

        order, bounds = self._get("order", make)
        if order is not None:
            order = self._get(("order", device), lambda: order.to(device))
        return order, bounds


def _compress(rows: torch.Tensor, cols: torch.Tensor, n: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR ``indptr`` and ``indices`` of edges already sorted by ``rows``."""
    counts = torch.bincount(rows, minlength=n)
    indptr = torch.zeros(n + 1, dtype=torch.int64)
    torch.cumsum(counts, 0, out=indptr[1:])
    return indptr.numpy(), cols.contiguous().numpy()


# One entry per live mask tensor: a weak reference to it, a copy of what it held (and, on the
# CPU, what :func:`comparable` makes of that copy), and the structure of that graph. An entry
# is reused only while the mask still holds the copy's contents, compared element by element:
# the version counter alone misses edits through ``mask.data``, a numpy view or
# ``mask.data = other``, the usual pruning idioms.
_STRUCTURES: dict[int, tuple[weakref.ref, torch.Tensor, Saved, Structure]] = {}

# Masks smaller than this are compared with their copy as one string of bytes (a copy and a
# memcmp, the fewest calls); from it on (k = 512), a boolean mask by its bits, which reads the
# mask and an eighth of its size where the bytes' copy reads and writes it. Measured on the
# 2-core machine (Zen 3), one thread, the whole check as bytes against by bits: k = 300, 12
# against 27 us; k = 500, 23 against 34; k = 2000, 0.41 against 0.21 ms (k = 35: 6.5 us
# against 16 for numpy's compare of 64-bit words).
PACKED_BYTES = 1 << 18


@dataclass(frozen=True)
class Bits:
    """A boolean mask's contents packed eight to a byte (:func:`freenets.kernels.loops.pack_bools`)."""

    packed: np.ndarray


# A CPU mask's copy as compared: its bytes (a small mask), or its whole 64-bit words (or their
# bits) and the bytes after them (k * k bytes of a bool mask need not divide by 8: any odd k).
Saved = bytes | tuple[np.ndarray | Bits, bytes] | None


def words(array: np.ndarray) -> np.ndarray:
    """A contiguous array's bytes as 64-bit words, all but the last ``nbytes % 8``."""
    flat = array.reshape(-1).view(np.uint8)
    return flat[: flat.size // 8 * 8].view(np.uint64)


def _tail(array: np.ndarray) -> bytes:
    """A contiguous array's last ``nbytes % 8`` bytes, those :func:`words` leaves out."""
    flat = array.reshape(-1).view(np.uint8)
    return flat[flat.size // 8 * 8 :].tobytes()


def _loops():
    from freenets.kernels import loops  # numba: imported only for packed masks

    return loops


def comparable(snapshot: torch.Tensor) -> Saved:
    """What :func:`unchanged` compares a mask with: ``snapshot``'s bytes (below
    :data:`PACKED_BYTES`), else its words, or their bits, and the bytes after them."""
    if snapshot.device.type != "cpu":
        return None
    array = snapshot.numpy()
    if array.nbytes < PACKED_BYTES:
        return array.tobytes()
    flat, tail = words(array), _tail(array)
    if snapshot.dtype != torch.bool:
        return flat, tail
    packed = np.empty(flat.shape[0], dtype=np.uint8)
    with compiling() if first_use("pack_bools") else nullcontext():
        return (Bits(packed) if _loops().pack_bools(flat, packed) else flat), tail


def unchanged(snapshot: torch.Tensor, saved: Saved, mask: torch.Tensor) -> bool:
    """True when ``mask`` holds what ``snapshot``, a contiguous copy on its device, holds.

    ``saved`` is :func:`comparable` of the snapshot (``None`` off the CPU). Edits through
    ``.data``, a numpy view or ``mask.data = other`` count, which a version counter misses.
    """
    if (snapshot.shape, snapshot.dtype, snapshot.device) != (mask.shape, mask.dtype, mask.device):
        return False
    if mask.device.type != "cpu":
        return torch.equal(snapshot, mask)
    # A CPU mask is compared as bytes (below PACKED_BYTES), by its bits (a larger bool mask) or
    # by numpy, eight bytes at a time (other dtypes), the bytes after the last whole word apart;
    # torch.equal on a bool tensor took 1 to 5 ms at k = 1000 on the 2-core machine.
    current = mask.detach().numpy()
    if saved is None or not mask.is_contiguous():
        return bool(np.array_equal(current, snapshot.numpy()))
    if isinstance(saved, bytes):
        return current.tobytes() == saved
    head, tail = saved
    if _tail(current) != tail:
        return False
    current_words = words(current)
    if isinstance(head, Bits):
        from freenets.kernels import threads  # numba: imported only for packed masks

        # Reading the mask is the cost (k = 10,000: 100 MB): both cores read a part each.
        found = np.zeros(1, dtype=np.int64)
        arrays = (current_words, head.packed, found)
        threads.run(_loops().differs, arrays, current_words.shape[0], current_words.nbytes, 1)
        return not found[0]
    return bool((current_words == head).all())


def structure(mask: torch.Tensor) -> Structure:
    """The :class:`Structure` of ``mask``, cached while the mask's contents stay the same.

    A mask changed in any way (in place, through ``.data``, through a numpy view) counts at the
    next call: the cache compares contents, not version counters.
    """
    key = id(mask)
    entry = _STRUCTURES.get(key)
    if entry is not None and entry[0]() is mask and unchanged(entry[1], entry[2], mask):
        return entry[3]
    snapshot = mask.detach().clone(memory_format=torch.contiguous_format)
    cpu = snapshot if snapshot.device.type == "cpu" else snapshot.cpu()
    # Counted in place: sum() would first copy the mask as int64 (800 MB at k = 10,000).
    result = Structure(n_neurons=mask.shape[0], n_edges=int(torch.count_nonzero(cpu)), mask=cpu)
    try:
        ref = weakref.ref(mask, lambda _: _STRUCTURES.pop(key, None))
    except TypeError:  # not weak-referenceable: do not cache
        return result
    _STRUCTURES[key] = (ref, snapshot, comparable(snapshot), result)
    return result
