"""FreeEvolve (Algorithm 2) as a pure function, and as the topology rule of Algorithm 1.

Algorithm 2, steps 5 and 6::

    Aug   = (NCAM > 1 - eps) and not G        # co-active neurons without an edge
    Prune = (NCIM > 1 - eps) and G            # co-inactive neurons with an edge
    G'    = (G and not Prune) or (Aug and not Prune)

``Aug`` is kept to ``i < j`` so the graph stays a DAG. :func:`free_evolve` is pure: mask in, mask
out (like ``compute_mask`` in ``torch.nn.utils.prune``). :class:`FreeEvolveRule` is the
:class:`~freenets.rules.base.TopologyRule` that takes one such step per round and counts the
rounds without change until the graph has converged; like every rule it only proposes masks, and
:func:`freenets.training.topology.apply_mask` writes them into the model. :class:`freenets.Evolver`
(in :mod:`freenets.training.evolver`) puts the two together for a user's own training loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from freenets import graph
from freenets.rules.base import Readd, RoundInfo, TopologyChange, TopologyRule
from freenets.rules.selection import graph_of
from freenets.stats import Data, Firing, firing


@dataclass(frozen=True)
class FreeEvolveConfig:
    """FreeEvolve's parameters, as a configuration records them.

    Attributes
    ----------
    epsilon : float
        The threshold parameter in ``(0, 1)``: NCAM or NCIM above ``1 - epsilon`` acts.
    patience : int
        Rounds without change after which the graph has converged.
    readd : {"restore", "zero"}
        How an edge added back starts.
    """

    epsilon: float = 0.25
    patience: int = 3
    readd: str = "restore"


@dataclass(frozen=True)
class Decisions:
    """The matrices of one FreeEvolve step (all ``(k, k)`` bool)."""

    aug: torch.Tensor
    prune: torch.Tensor
    new_mask: torch.Tensor


def _check_inputs(mask: torch.Tensor, ncam: torch.Tensor, ncim: torch.Tensor, epsilon: float):
    graph.check_mask(mask)
    if ncam.shape != mask.shape or ncim.shape != mask.shape:
        raise ValueError(
            f"ncam {tuple(ncam.shape)} and ncim {tuple(ncim.shape)} must match the mask "
            f"{tuple(mask.shape)}"
        )
    if not 0.0 < epsilon < 1.0:
        raise ValueError(f"epsilon must lie in (0, 1), got {epsilon}")


def decisions(
    mask: torch.Tensor, ncam: torch.Tensor, ncim: torch.Tensor, epsilon: float
) -> Decisions:
    """Aug, Prune and the updated graph of Algorithm 2, steps 5 and 6.

    Parameters
    ----------
    mask : torch.Tensor
        Current graph G, ``(k, k)`` bool, strictly lower-triangular.
    ncam, ncim : torch.Tensor
        ``(k, k)`` co-activation and co-inactivation matrices.
    epsilon : float
        Threshold parameter in ``(0, 1)``; entries above ``1 - epsilon`` count.
    """
    _check_inputs(mask, ncam, ncim, epsilon)
    threshold = 1.0 - epsilon
    allowed = graph.lower_triangle(mask.shape[0], device=mask.device)
    aug = (ncam.to(mask.device) > threshold) & ~mask & allowed  # Aug, kept to i < j
    prune = (ncim.to(mask.device) > threshold) & mask  # Prune
    new_mask = (mask & ~prune) | (aug & ~prune)  # G'
    return Decisions(aug=aug, prune=prune, new_mask=new_mask)


def free_evolve(
    mask: torch.Tensor, ncam: torch.Tensor, ncim: torch.Tensor, epsilon: float
) -> torch.Tensor:
    """FreeEvolve's graph update (Algorithm 2, steps 5 and 6). Pure: returns a new mask.

    Parameters
    ----------
    mask : torch.Tensor
        Current graph G, ``(k, k)`` bool, strictly lower-triangular.
    ncam, ncim : torch.Tensor
        ``(k, k)`` co-activation and co-inactivation matrices (see :func:`freenets.coactivation`).
    epsilon : float
        Threshold parameter in ``(0, 1)``.

    Returns
    -------
    torch.Tensor
        ``G' = (G and not Prune) or (Aug and not Prune)``, strictly lower-triangular.
    """
    return decisions(mask, ncam, ncim, epsilon).new_mask


def theorem2_holds(
    mask: torch.Tensor, ncam: torch.Tensor, ncim: torch.Tensor, epsilon: float
) -> bool:
    """Theorem 2's fixed-point property: ``Aug and not Prune`` is a subset of the edges E."""
    step = decisions(mask, ncam, ncim, epsilon)
    return not bool((step.aug & ~step.prune & ~mask).any())


def _sample_values(values: torch.Tensor, limit: int) -> list[float]:
    """At most ``limit`` values, evenly strided so the distribution is kept, rounded to 1e-4."""
    return _rounded(values[_sample_index(values.numel(), limit)])


def _sample_index(count: int, limit: int) -> torch.Tensor:
    """Positions of :func:`_sample_values`' values among ``count``."""
    if count > limit:
        return torch.linspace(0, count - 1, limit).round().long()
    return torch.arange(count)


def _rounded(values: torch.Tensor) -> list[float]:
    return [round(float(v), 4) for v in values]


def _absent_positions(
    rows: torch.Tensor, cols: torch.Tensor, n_neurons: int, ranks: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(j, i)`` of the allowed positions without an edge at ``ranks`` in row-major order,
    the edges ``(rows, cols)`` given in row-major order, without listing the absent ones.

    Row ``j`` has ``j - degree[j]`` absent positions; within it, edge ``q`` of the row at
    column ``p`` has ``p - q`` absent positions before it, so the edges ranked at most ``t``
    among all absent positions before them are those that come before position ``t``.
    """
    degree = torch.bincount(rows, minlength=n_neurons)
    absent = torch.arange(n_neurons) - degree
    before = torch.cumsum(absent, 0) - absent  # absent positions in the rows above each row
    j = torch.searchsorted(before + absent, ranks, right=True)
    starts = torch.cumsum(degree, 0) - degree  # each row's first edge
    within = torch.arange(rows.numel()) - starts[rows]
    gaps = before[rows] + cols - within  # absent positions (row-major) before each edge
    i = ranks - before[j] + torch.searchsorted(gaps, ranks, right=True) - starts[j]
    return j, i


def sparse_step(
    mask: torch.Tensor, firing: Firing, epsilon: float, value_limit: int = 5000
) -> tuple[torch.Tensor, TopologyChange]:
    """FreeEvolve's update from the neurons' firing, counting only the pairs that can act.

    The same graph and record as :func:`decisions` on :func:`~freenets.coactivation`'s
    matrices, bit for bit, without either ``(k, k)`` matrix. NCAM of a pair exceeds
    ``1 - epsilon`` only if each of its neurons fires on more than that fraction of the samples,
    and NCIM only if each is silent on more than it: the co-firing of the other pairs is never
    counted. NCIM is read on present edges only.

    Parameters
    ----------
    mask : torch.Tensor
        Current graph G, ``(k, k)`` bool, strictly lower-triangular, on the CPU.
    firing : Firing
        The neurons' firing (:func:`freenets.stats.firing`).
    epsilon : float
        Threshold parameter in ``(0, 1)``.
    value_limit : int, default 5000
        At most this many NCIM values (on present edges) and NCAM values (on absent ones) in
        the record, evenly strided in row-major order, as :class:`FreeEvolveRule` keeps them.

    Returns
    -------
    (new_mask, record) : tuple of torch.Tensor and TopologyChange
    """
    graph.check_mask(mask)
    if not 0.0 < epsilon < 1.0:
        raise ValueError(f"epsilon must lie in (0, 1), got {epsilon}")
    k, n, fired = mask.shape[0], firing.n, firing.fired
    threshold = 1.0 - epsilon
    rows, cols = mask.nonzero(as_tuple=True)  # row-major
    quiet = (n - fired) / n > threshold  # silent on more than 1 - epsilon of the samples
    maybe = quiet[rows] & quiet[cols]
    r, c = rows[maybe], cols[maybe]
    prune = firing.ncim(r, c) > threshold
    new_mask = mask.clone()
    new_mask[r[prune], c[prune]] = False
    busy = (fired / n > threshold).nonzero().flatten()  # fires on more than 1 - epsilon
    added = 0
    if busy.numel() > 1:
        later, earlier = torch.tril_indices(busy.numel(), busy.numel(), -1)
        j, i = busy[later], busy[earlier]
        j, i = j[~mask[j, i]], i[~mask[j, i]]
        aug = firing.ncam(j, i) > threshold
        new_mask[j[aug], i[aug]] = True
        added = int(aug.sum())
    present = _sample_index(rows.numel(), value_limit)
    ranks = _sample_index(k * (k - 1) // 2 - rows.numel(), value_limit)
    j, i = _absent_positions(rows, cols, k, ranks)
    record = TopologyChange(
        edges=rows.numel() - int(prune.sum()) + added,
        added=added,
        pruned=int(prune.sum()),
        prune_values=_rounded(firing.ncim(rows[present], cols[present])),
        aug_values=_rounded(firing.ncam(j, i)),
    )
    return new_mask, record


class FreeEvolveRule(TopologyRule):
    """FreeEvolve (Algorithm 2) as a topology rule: Aug and Prune from NCAM and NCIM each round.

    At the end of every round it computes NCAM and NCIM over the round's training data and
    proposes ``G' = (G and not Prune) or (Aug and not Prune)``. Once the graph has not changed
    for ``patience`` consecutive rounds it has converged (Algorithm 1) and proposes nothing more.

    Parameters
    ----------
    epsilon : float
        FreeEvolve's threshold parameter in ``(0, 1)``.
    patience : int, default 3
        Rounds without change after which the graph counts as converged.
    readd : {"restore", "zero"}, default "restore"
        A re-added edge resumes its stored weight, or starts from zero.
    batch_size : int, default 1024
        Batch size of the statistics pass.
    value_limit : int, default 5000
        At most this many NCIM and NCAM values kept per round, for Figure 7.

    Attributes
    ----------
    unchanged_rounds : int
        Consecutive rounds, up to the last one, that left the graph as it was.
    history : list of TopologyChange
        One record per round this rule took part in (not saved in :meth:`state_dict`: the
        training loop keeps its own round records).
    """

    name: ClassVar[str] = "freeevolve"
    config_type: ClassVar[type | None] = FreeEvolveConfig

    def __init__(
        self,
        epsilon: float,
        *,
        patience: int = 3,
        readd: Readd = "restore",
        batch_size: int = 1024,
        value_limit: int = 5000,
    ) -> None:
        if not 0.0 < epsilon < 1.0:
            raise ValueError(f"epsilon must lie in (0, 1), got {epsilon}")
        if readd not in ("restore", "zero"):
            raise ValueError(f"readd must be 'restore' or 'zero', got {readd!r}")
        if patience < 1:
            raise ValueError(f"patience must be at least 1, got {patience}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.epsilon = epsilon
        self.patience = patience
        self.readd = readd
        self.batch_size = batch_size
        self.value_limit = value_limit
        self.unchanged_rounds = 0
        self.history: list[TopologyChange] = []

    @property
    def converged(self) -> bool:
        """True once the graph has stayed the same for ``patience`` consecutive rounds."""
        return self.unchanged_rounds >= self.patience

    def step(
        self, model: nn.Module, data: Data, *, value_limit: int | None = None
    ) -> tuple[torch.Tensor, TopologyChange]:
        """One FreeEvolve step on ``data``: the proposed graph and the record of what it changes.

        Counts the step as taken (the caller applies the mask): a step that changes nothing
        brings the rule one round closer to convergence. ``value_limit`` overrides the rule's
        for this step's record.
        """
        limit = self.value_limit if value_limit is None else value_limit
        present = graph_of(model)[0].cpu()
        stats = firing(model, data, batch_size=self.batch_size)
        new_mask, record = sparse_step(present, stats, self.epsilon, limit)
        self.unchanged_rounds = 0 if record.changed else self.unchanged_rounds + 1
        self.history.append(record)
        return new_mask, record

    def after_round(self, model: nn.Module, info: RoundInfo) -> torch.Tensor | None:
        """FreeEvolve on the round's training data (``info.data``); ``None`` once converged."""
        if self.converged:
            return None
        new_mask, _ = self.step(model, info.data)
        return new_mask

    def round_values(self) -> dict[str, list[float]]:
        """The last round's NCIM values on present edges and NCAM values on absent ones.

        The training loop stores them in its round records (``prune_values``, ``aug_values``),
        the input of the paper's Figure 7.
        """
        if not self.history:
            return {}
        last = self.history[-1]
        return {"prune_values": last.prune_values, "aug_values": last.aug_values}

    def state_dict(self) -> dict[str, Any]:
        """The count of unchanged rounds: all FreeEvolve needs to go on as if never stopped."""
        return {"unchanged_rounds": self.unchanged_rounds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the count of unchanged rounds; ``ValueError`` for anything else."""
        if not isinstance(state, dict) or set(state) != {"unchanged_rounds"}:
            keys = sorted(map(str, state)) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"FreeEvolve's state must hold unchanged_rounds only, got {keys}")
        count = state["unchanged_rounds"]
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"FreeEvolve's count of unchanged rounds cannot be {count!r}")
        self.unchanged_rounds = count
