"""The random and magnitude controls for FreeEvolve's choice of edges (paper, Algorithm 1).

Both follow the edge counts FreeEvolve (Algorithm 2) had after each of its rounds, in the run with
the same dataset, k and seed: after round r the graph has exactly ``targets[r]`` edges. They
differ from FreeEvolve only in *which* edges go:

- ``random``: the edges removed are chosen uniformly at random;
- ``magnitude``: the present edges of smallest ``|weight|`` go (magnitude pruning, as in
  ``torch.nn.utils.prune.l1_unstructured``, here on the FreeNet's one weight matrix).

When a target rises, both add that many edges at random among the absent allowed positions
(``i < j``). Once ``targets`` is used up the graph no longer changes (the rule has converged).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from freenets import graph
from freenets.errors import ConfigError
from freenets.rules.base import Readd, RoundInfo, TopologyRule
from freenets.rules.selection import absent, choose_random, choose_smallest, graph_of


def _check_target(mask: torch.Tensor, target: int) -> None:
    graph.check_mask(mask)
    k = mask.shape[0]
    possible = k * (k - 1) // 2
    if not 0 <= target <= possible:
        raise ConfigError(
            f"a target of {target} edges is impossible over {k} neurons (0 to {possible})"
        )


def _grow(mask: torch.Tensor, target: int, generator: torch.Generator) -> torch.Tensor:
    """Add ``target - n`` edges at random among the absent allowed positions."""
    count = target - graph.n_edges(mask)
    return mask | choose_random(absent(mask), count, generator)


def random_step(mask: torch.Tensor, target: int, generator: torch.Generator) -> torch.Tensor:
    """The random control: remove edges uniformly at random (or add some) to reach ``target``.

    Parameters
    ----------
    mask : torch.Tensor
        Current graph, ``(k, k)`` bool, strictly lower-triangular.
    target : int
        Edge count of the new graph, between 0 and ``k(k-1)/2``.
    generator : torch.Generator
        The only source of randomness.

    Returns
    -------
    torch.Tensor
        A new graph with exactly ``target`` edges: a subset of ``mask`` when ``target`` is below
        its count, a superset when above.
    """
    _check_target(mask, target)
    surplus = graph.n_edges(mask) - target
    if surplus < 0:
        return _grow(mask, target, generator)
    return mask & ~choose_random(mask, surplus, generator)


def magnitude_step(
    mask: torch.Tensor, weight: torch.Tensor, target: int, generator: torch.Generator
) -> torch.Tensor:
    """The magnitude control: remove the present edges of smallest ``|weight|`` to reach ``target``.

    Parameters
    ----------
    mask : torch.Tensor
        Current graph, ``(k, k)`` bool, strictly lower-triangular.
    weight : torch.Tensor
        ``(k, k)`` weights; only the present edges' entries are read.
    target : int
        Edge count of the new graph, between 0 and ``k(k-1)/2``.
    generator : torch.Generator
        Breaks ties between equal magnitudes, and chooses the edges added when ``target`` is
        above the current count (at random, as :func:`random_step`).

    Returns
    -------
    torch.Tensor
        A new graph with exactly ``target`` edges.
    """
    _check_target(mask, target)
    surplus = graph.n_edges(mask) - target
    if surplus < 0:
        return _grow(mask, target, generator)
    return mask & ~choose_smallest(mask, weight.abs(), surplus, generator)


class _TargetRule(TopologyRule):
    """Follows a list of edge counts, one per round; the subclass says which edges go."""

    def __init__(self, targets: Sequence[int], *, readd: Readd = "restore") -> None:
        if isinstance(targets, (str, bytes)) or not isinstance(targets, Sequence):
            raise ConfigError(f"targets must be a list of edge counts, got {targets!r}")
        for value in targets:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"targets must be edge counts (integers >= 0), got {value!r}")
        if readd not in ("restore", "zero"):
            raise ConfigError(f"readd must be 'restore' or 'zero', got {readd!r}")
        self.targets = tuple(targets)
        self.readd = readd
        self.rounds_used = 0

    def _step(
        self, mask: torch.Tensor, weight: torch.Tensor, target: int, generator: torch.Generator
    ) -> torch.Tensor:
        raise NotImplementedError

    def after_round(self, model: nn.Module, info: RoundInfo) -> torch.Tensor | None:
        """The graph with ``targets[r]`` edges after the r-th round; ``None`` once used up."""
        if self.converged:
            return None
        target = self.targets[self.rounds_used]
        mask, weight = graph_of(model)
        new_mask = self._step(mask, weight, target, info.generator)
        self.rounds_used += 1
        return None if torch.equal(new_mask, mask) else new_mask

    @property
    def converged(self) -> bool:
        """True once every round of ``targets`` has been followed."""
        return self.rounds_used >= len(self.targets)

    def state_dict(self) -> dict[str, Any]:
        """How many rounds of ``targets`` have been followed."""
        return {"rounds_used": self.rounds_used}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the count of rounds followed, from :meth:`state_dict`."""
        if set(state) != {"rounds_used"}:
            raise ValueError(
                f"rule {self.name!r} expects the key 'rounds_used', got {sorted(state)}"
            )
        rounds = state["rounds_used"]
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
            raise ValueError(f"rounds_used must be an integer >= 0, got {rounds!r}")
        self.rounds_used = rounds


class RandomRule(_TargetRule):
    """FreeEvolve's edge counts, edges removed uniformly at random (:func:`random_step`).

    Parameters
    ----------
    targets : sequence of int
        Edge count after each round, as FreeEvolve had them in the matching run.
    readd : {"restore", "zero"}, default "restore"
        How an edge added back starts (FreeEvolve's default, so only the choice differs).
    """

    name: ClassVar[str] = "random"

    def _step(
        self, mask: torch.Tensor, weight: torch.Tensor, target: int, generator: torch.Generator
    ) -> torch.Tensor:
        return random_step(mask, target, generator)


class MagnitudeRule(_TargetRule):
    """FreeEvolve's edge counts, the edges of smallest ``|weight|`` removed (:func:`magnitude_step`).

    Parameters
    ----------
    targets : sequence of int
        Edge count after each round, as FreeEvolve had them in the matching run.
    readd : {"restore", "zero"}, default "restore"
        How an edge added back starts (FreeEvolve's default, so only the choice differs).
    """

    name: ClassVar[str] = "magnitude"

    def _step(
        self, mask: torch.Tensor, weight: torch.Tensor, target: int, generator: torch.Generator
    ) -> torch.Tensor:
        return magnitude_step(mask, weight.detach(), target, generator)
