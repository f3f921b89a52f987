"""Pure functions on Neural Connectivity Graphs (paper, section 3).

A graph over k neurons is a ``(k, k)`` boolean mask. ``mask[j, i]`` is the edge from neuron ``i``
to neuron ``j``; only ``i < j`` is allowed, so the graph is a DAG whose topological order is the
neuron index (Figure 3). Nothing here touches a model.
"""

from __future__ import annotations

import torch


def dense_mask(n_neurons: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The FreeNet initialisation: every edge ``i -> j`` with ``i < j``.

    Parameters
    ----------
    n_neurons : int
        Number of neurons k (at least 1).
    device : torch.device or str, optional
        Where the mask lives.

    Returns
    -------
    torch.Tensor
        A ``(k, k)`` bool tensor, strictly lower-triangular and dense.
    """
    if n_neurons < 1:
        raise ValueError(f"n_neurons must be at least 1, got {n_neurons}")
    ones = torch.ones(n_neurons, n_neurons, dtype=torch.bool, device=device)
    return torch.tril(ones, diagonal=-1)


def lower_triangle(n_neurons: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The positions where an edge may exist (same as :func:`dense_mask`)."""
    return dense_mask(n_neurons, device)


def is_valid_mask(mask: torch.Tensor) -> bool:
    """True when ``mask`` is a square bool matrix with no edge on or above the diagonal."""
    if mask.dtype != torch.bool or mask.dim() != 2 or mask.shape[0] != mask.shape[1]:
        return False
    return not bool(torch.triu(mask).any())


def check_mask(mask: torch.Tensor, n_neurons: int | None = None) -> None:
    """Raise ``ValueError`` unless ``mask`` is a valid graph (over ``n_neurons`` if given)."""
    if not is_valid_mask(mask):
        raise ValueError("a mask must be a square bool tensor, strictly lower-triangular (i < j)")
    if n_neurons is not None and mask.shape[0] != n_neurons:
        raise ValueError(f"mask is over {mask.shape[0]} neurons, expected {n_neurons}")


def n_edges(mask: torch.Tensor) -> int:
    """Number of edges in the graph."""
    return int(torch.count_nonzero(mask))  # sum() would make an int64 copy of the mask


def density(mask: torch.Tensor) -> float:
    """Edges as a fraction of the k(k-1)/2 possible ones (1.0 for k = 1)."""
    k = mask.shape[0]
    possible = k * (k - 1) // 2
    return n_edges(mask) / possible if possible else 1.0


def depth(mask: torch.Tensor) -> int:
    """Length in neurons of the longest path in the DAG (0 for an empty graph of 0 neurons).

    A neuron's level is one more than the highest level among its predecessors; the depth is the
    number of distinct levels, i.e. how many sequential steps a level-scheduled forward needs.
    """
    return int(levels(mask).max().item()) + 1 if mask.shape[0] else 0


def levels(mask: torch.Tensor) -> torch.Tensor:
    """Level of each neuron: 0 for neurons with no predecessor, else 1 + max level of predecessors."""
    k = mask.shape[0]
    level = torch.zeros(k, dtype=torch.long)
    cpu = mask.to("cpu")
    for j in range(k):
        predecessors = cpu[j, :j].nonzero().flatten()
        if predecessors.numel():
            level[j] = level[predecessors].max() + 1
    return level


def layered_mask(widths: list[int]) -> torch.Tensor:
    """The mask of a layered MLP whose hidden layers have the given widths.

    Neurons are numbered layer by layer; every neuron of layer ``l`` feeds every neuron of layer
    ``l + 1`` and nothing else (Claim 4.1: any layered net is a sub-graph of the dense FreeNet).
    """
    k = sum(widths)
    mask = torch.zeros(k, k, dtype=torch.bool)
    start = 0
    for width, following in zip(widths[:-1], widths[1:], strict=True):
        mask[start + width : start + width + following, start : start + width] = True
        start += width
    return mask
