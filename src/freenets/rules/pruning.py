"""The random and magnitude controls for FreeEvolve's choice of edges (paper, Algorithm 1).

Both follow FreeEvolve's (Algorithm 2) churn in the run with the same dataset, k and seed: in
round r FreeEvolve pruned ``P_r`` present edges and added ``A_r`` absent ones, and the control
prunes exactly ``P_r`` and adds exactly ``A_r`` in its round r, so its edge count follows
FreeEvolve's round by round and only *which* edges go and come differs:

- ``random``: both the pruned and the added edges are chosen uniformly at random;
- ``magnitude``: the present edges of smallest ``|weight|`` are pruned (magnitude pruning, as in
  ``torch.nn.utils.prune.l1_unstructured``, here on the FreeNet's one weight matrix), and the
  added ones are chosen at random.

As in FreeEvolve's ``G' = (G and not Prune) or (Aug and not Prune)``, the added edges come from
the positions absent before the round (``i < j``), so an edge is never pruned and added back in
one round. Once the list of rounds is used up the graph no longer changes (the rule has
converged).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from freenets import graph
from freenets.errors import ConfigError
from freenets.rules.base import Readd, RoundInfo, TopologyRule
from freenets.rules.selection import absent, choose_random, choose_smallest, graph_of

# One round of FreeEvolve's churn: (edges pruned, edges added).
Change = tuple[int, int]


def _check_change(mask: torch.Tensor, pruned: int, added: int) -> None:
    graph.check_mask(mask)
    present = graph.n_edges(mask)
    free = mask.shape[0] * (mask.shape[0] - 1) // 2 - present
    if not (0 <= pruned <= present and 0 <= added <= free):
        raise ConfigError(
            f"cannot prune {pruned} of {present} edges and add {added} of {free} absent ones "
            f"over {mask.shape[0]} neurons"
        )


def random_step(
    mask: torch.Tensor, pruned: int, added: int, generator: torch.Generator
) -> torch.Tensor:
    """The random control's round: prune ``pruned`` edges and add ``added``, all at random.

    Parameters
    ----------
    mask : torch.Tensor
        Current graph, ``(k, k)`` bool, strictly lower-triangular.
    pruned, added : int
        How many present edges go, and how many absent allowed positions gain an edge.
    generator : torch.Generator
        The only source of randomness (the pruned edges are drawn first, then the added).

    Returns
    -------
    torch.Tensor
        A graph with ``n - pruned + added`` edges; the added ones were absent in ``mask``.
    """
    _check_change(mask, pruned, added)
    gone = choose_random(mask, pruned, generator)
    new = choose_random(absent(mask), added, generator)
    return (mask & ~gone) | new


def magnitude_step(
    mask: torch.Tensor, weight: torch.Tensor, pruned: int, added: int, generator: torch.Generator
) -> torch.Tensor:
    """The magnitude control's round: prune the ``pruned`` smallest ``|weight|``, add at random.

    Parameters
    ----------
    mask : torch.Tensor
        Current graph, ``(k, k)`` bool, strictly lower-triangular.
    weight : torch.Tensor
        ``(k, k)`` weights; only the present edges' entries are read.
    pruned, added : int
        How many present edges go, and how many absent allowed positions gain an edge.
    generator : torch.Generator
        Breaks ties between equal magnitudes, then chooses the added edges.

    Returns
    -------
    torch.Tensor
        A graph with ``n - pruned + added`` edges; the added ones were absent in ``mask``.
    """
    _check_change(mask, pruned, added)
    gone = choose_smallest(mask, weight.detach().abs(), pruned, generator)
    new = choose_random(absent(mask), added, generator)
    return (mask & ~gone) | new


@dataclass(frozen=True)
class ChurnConfig:
    """The parameters of the random and magnitude controls.

    Attributes
    ----------
    changes : tuple of (int, int)
        Edges pruned and added in each round, as FreeEvolve's rounds in the matching run.
    readd : {"restore", "zero"}
        How an edge added back starts (FreeEvolve's setting, so only the choice differs).
    """

    changes: tuple[tuple[int, int], ...] = ()
    readd: str = "restore"


def _is_count(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= 0


class _ChurnRule(TopologyRule):
    """Follows FreeEvolve's (pruned, added) counts, one pair per round; the subclass chooses."""

    config_type: ClassVar[type | None] = ChurnConfig

    def __init__(self, changes: Sequence[Change], *, readd: Readd = "restore") -> None:
        if isinstance(changes, (str, bytes)) or not isinstance(changes, Sequence):
            raise ConfigError(f"changes must be a list of (pruned, added) pairs, got {changes!r}")
        for pair in changes:
            if not (
                isinstance(pair, Sequence)
                and not isinstance(pair, (str, bytes))
                and len(pair) == 2
                and all(_is_count(value) for value in pair)
            ):
                raise ConfigError(
                    f"changes must be (pruned, added) pairs of integers >= 0, got {pair!r}"
                )
        if readd not in ("restore", "zero"):
            raise ConfigError(f"readd must be 'restore' or 'zero', got {readd!r}")
        self.changes: tuple[Change, ...] = tuple((int(p), int(a)) for p, a in changes)
        self.readd = readd
        self.rounds_used = 0

    def _step(
        self,
        mask: torch.Tensor,
        weight: torch.Tensor,
        change: Change,
        generator: torch.Generator,
    ) -> torch.Tensor:
        raise NotImplementedError

    def after_round(self, model: nn.Module, info: RoundInfo) -> torch.Tensor | None:
        """Round r's graph: ``changes[r]`` pruned and added; ``None`` once they are used up."""
        if self.converged:
            return None
        change = self.changes[self.rounds_used]
        mask, weight = graph_of(model)
        new_mask = self._step(mask, weight, change, info.generator)
        self.rounds_used += 1
        return None if torch.equal(new_mask, mask) else new_mask

    @property
    def converged(self) -> bool:
        """True once every round of ``changes`` has been followed."""
        return self.rounds_used >= len(self.changes)

    def state_dict(self) -> dict[str, Any]:
        """How many rounds of ``changes`` have been followed."""
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


class RandomRule(_ChurnRule):
    """FreeEvolve's churn, the pruned and added edges chosen at random (:func:`random_step`).

    Parameters
    ----------
    changes : sequence of (int, int)
        Edges pruned and added in each round, as FreeEvolve's rounds in the matching run.
    readd : {"restore", "zero"}, default "restore"
        How an edge added back starts (FreeEvolve's default, so only the choice differs).
    """

    name: ClassVar[str] = "random"

    def _step(
        self,
        mask: torch.Tensor,
        weight: torch.Tensor,
        change: Change,
        generator: torch.Generator,
    ) -> torch.Tensor:
        return random_step(mask, *change, generator)


class MagnitudeRule(_ChurnRule):
    """FreeEvolve's churn, the smallest ``|weight|`` pruned, added at random (:func:`magnitude_step`).

    Parameters
    ----------
    changes : sequence of (int, int)
        Edges pruned and added in each round, as FreeEvolve's rounds in the matching run.
    readd : {"restore", "zero"}, default "restore"
        How an edge added back starts (FreeEvolve's default, so only the choice differs).
    """

    name: ClassVar[str] = "magnitude"

    def _step(
        self,
        mask: torch.Tensor,
        weight: torch.Tensor,
        change: Change,
        generator: torch.Generator,
    ) -> torch.Tensor:
        return magnitude_step(mask, weight, *change, generator)
