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

Given a fixed budget instead (``edges``, or a ``density`` of the ``k(k-1)/2`` allowed edges), as
the density axis of a sweep gives SET and RigL, each becomes its field's baseline at that budget:

- ``random``: a uniform random graph of the budget, fixed for the whole training: the "Static"
  baseline of RigL (Evci et al. 2020, section 4; google-research/rigl's ``static`` mask updater);
- ``magnitude``: gradual magnitude pruning (Zhu & Gupta 2017, "To prune, or not to prune",
  equation 1; the "Pruning" baseline of RigL), from the dense graph to the budget with the cubic
  schedule ``d_t = d + (1 - d) (1 - t / T)^3``, pruning the smallest ``|weight|`` at each round.
  Here ``t`` counts epochs and ``T`` is ``stop`` of the epochs between rounds (pruning ends where
  RigL's updates end); the reference prunes every few hundred steps from a chosen start step,
  here at each round from the first, the only times a rule here may change the graph. Where the
  round's epoch count is unknown (a caller that does not give ``total_epochs``), the first round
  prunes to the budget at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from freenets import graph
from freenets.errors import ConfigError
from freenets.rules.base import Readd, RoundInfo, TopologyRule
from freenets.rules.selection import (
    absent,
    budget_edges,
    check_budget,
    check_fraction,
    choose_random,
    choose_smallest,
    graph_of,
    random_graph,
)

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
    edges, density : int or float, optional
        A fixed budget instead of ``changes`` (at most one of the two).
    stop : float
        With a budget, the fraction of training by which gradual magnitude pruning reaches it.
    """

    changes: tuple[tuple[int, int], ...] = ()
    readd: str = "restore"
    edges: int | None = None
    density: float | None = None
    stop: float = 0.75


def _is_count(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= 0


class _ChurnRule(TopologyRule):
    """Follows FreeEvolve's (pruned, added) counts, one pair per round; the subclass chooses.

    With ``edges`` or ``density`` it works at that fixed budget instead (the module's docstring).
    """

    config_type: ClassVar[type | None] = ChurnConfig

    def __init__(
        self,
        changes: Sequence[Change] | None = None,
        *,
        readd: Readd = "restore",
        edges: int | None = None,
        density: float | None = None,
        stop: float = 0.75,
    ) -> None:
        check_budget(self.name, edges, density, required=False)
        check_fraction("stop", stop)
        self.edges, self.density, self.stop = edges, density, stop
        self.budgeted = edges is not None or density is not None
        if self.budgeted and changes:
            raise ConfigError(f"rule {self.name!r} follows changes or a budget, not both")
        if changes is None:
            if not self.budgeted:
                raise ConfigError(
                    f"rule {self.name!r} needs changes (FreeEvolve's rounds) or a budget "
                    "(edges or density)"
                )
            changes = ()
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
        self.finished = False  # with a budget: the graph has reached it

    def budget(self, n_neurons: int) -> int:
        """The fixed budget in edges over ``n_neurons`` (only for a budgeted rule)."""
        return budget_edges(n_neurons, self.edges, self.density)

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
        if self.budgeted:
            return self._budget_round(model, info)
        change = self.changes[self.rounds_used]
        mask, weight = graph_of(model)
        new_mask = self._step(mask, weight, change, info.generator)
        self.rounds_used += 1
        return None if torch.equal(new_mask, mask) else new_mask

    def _budget_round(self, model: nn.Module, info: RoundInfo) -> torch.Tensor | None:
        """A budgeted rule's round, for the subclass (``random``'s static graph has none)."""
        return None

    @property
    def converged(self) -> bool:
        """True once every round of ``changes`` has been followed, or the budget is reached."""
        if self.budgeted:
            return self.finished
        return self.rounds_used >= len(self.changes)

    def state_dict(self) -> dict[str, Any]:
        """How many rounds of ``changes`` have been followed; with a budget, whether it is met."""
        if self.budgeted:
            return {"rounds_used": self.rounds_used, "finished": self.finished}
        return {"rounds_used": self.rounds_used}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the count of rounds followed, from :meth:`state_dict`."""
        keys = {"rounds_used", "finished"} if self.budgeted else {"rounds_used"}
        if set(state) != keys:
            raise ValueError(
                f"rule {self.name!r} expects the keys {sorted(keys)}, got {sorted(state)}"
            )
        if self.budgeted:
            if not isinstance(state["finished"], bool):
                raise ValueError(f"finished must be a bool, got {state['finished']!r}")
            self.finished = state["finished"]
        rounds = state["rounds_used"]
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
            raise ValueError(f"rounds_used must be an integer >= 0, got {rounds!r}")
        self.rounds_used = rounds


class RandomRule(_ChurnRule):
    """FreeEvolve's churn, the pruned and added edges chosen at random (:func:`random_step`).

    With a budget, a static uniform random graph of that size (RigL's "Static" baseline).

    Parameters
    ----------
    changes : sequence of (int, int)
        Edges pruned and added in each round, as FreeEvolve's rounds in the matching run.
    readd : {"restore", "zero"}, default "restore"
        How an edge added back starts (FreeEvolve's default, so only the choice differs).
    edges, density : int or float, optional
        A fixed budget instead of ``changes`` (at most one of the two).
    stop : float, default 0.75
        Unused by this rule (the budgeted controls share one configuration).
    """

    name: ClassVar[str] = "random"

    def initial_mask(self, model: nn.Module, generator: torch.Generator) -> torch.Tensor | None:
        """With a budget, a uniform random graph of that size (kept all through training)."""
        if not self.budgeted:
            return None
        self.finished = True  # static: the graph never changes after this
        mask, _ = graph_of(model)
        return random_graph(
            mask.shape[0], self.budget(mask.shape[0]), generator, device=mask.device
        )

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

    With a budget, gradual magnitude pruning to it (Zhu & Gupta 2017; the module's docstring).

    Parameters
    ----------
    changes : sequence of (int, int)
        Edges pruned and added in each round, as FreeEvolve's rounds in the matching run.
    readd : {"restore", "zero"}, default "restore"
        How an edge added back starts (FreeEvolve's default, so only the choice differs).
    edges, density : int or float, optional
        A fixed budget instead of ``changes`` (at most one of the two).
    stop : float, default 0.75
        With a budget, the fraction of training by which the budget is reached.
    """

    name: ClassVar[str] = "magnitude"

    def target_edges(self, n_neurons: int, epoch: int, total_epochs: int | None) -> int:
        """Gradual magnitude pruning's edge count after ``epoch`` epochs (budgeted rule only).

        ``d + (1 - d)(1 - t / T)^3`` of the allowed edges with ``t = epoch`` and
        ``T = max(1, floor(stop * (total_epochs - 1)))``; the budget itself from ``T`` on, or at
        once when ``total_epochs`` is unknown.
        """
        possible = n_neurons * (n_neurons - 1) // 2
        final = self.budget(n_neurons)
        if total_epochs is None:
            return final
        end = max(1, math.floor(self.stop * (total_epochs - 1)))
        left = max(0.0, 1.0 - epoch / end)
        return max(final, min(possible, round(final + (possible - final) * left**3)))

    def selectable(self, mask: torch.Tensor) -> bool:
        """With a budget, only a graph pruned to it may be the result (equal density)."""
        return not self.budgeted or graph.n_edges(mask) <= self.budget(mask.shape[0])

    def _budget_round(self, model: nn.Module, info: RoundInfo) -> torch.Tensor | None:
        mask, weight = graph_of(model)
        k = mask.shape[0]
        target = self.target_edges(k, info.epoch, info.total_epochs)
        self.rounds_used += 1
        self.finished = target <= self.budget(k)
        excess = graph.n_edges(mask) - target
        if excess <= 0:
            return None
        return magnitude_step(mask, weight, excess, 0, info.generator)

    def _step(
        self,
        mask: torch.Tensor,
        weight: torch.Tensor,
        change: Change,
        generator: torch.Generator,
    ) -> torch.Tensor:
        return magnitude_step(mask, weight, *change, generator)
