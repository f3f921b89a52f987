"""Dynamic sparse training at a fixed edge budget on the FreeNet substrate: SET and RigL.

Both start from a uniform random graph of their budget (``edges``, or a ``density`` of the
``k(k-1)/2`` allowed edges), drop some present edges at each update and grow as many among the
positions absent after the drop, so the edge count never changes. Each follows its reference
implementation:

- SET (Mocanu et al. 2018, "Scalable training of artificial neural networks with adaptive sparse
  connectivity inspired by network science"; dcmocanu/sparse-evolutionary-artificial-neural-
  networks, ``set_mlp_sparse_data_structures.py``, ``weightsEvolution``): after every epoch but
  the last, drop by sign, the fraction ``zeta`` of the negative weights and of the positive
  weights nearest zero (the thresholds ``largestNegative`` and ``smallestPositive``), and grow as
  many edges at random, their weights drawn from ``N(0, 0.1^2)`` (``np.random.randn() / 10``) and
  their optimiser state from zero.
- RigL (Evci et al. 2020, "Rigging the Lottery: Making All Tickets Winners"; google-research/rigl
  ``sparse_optimizers.py``, ``SparseRigLOptimizer``): every ``delta_t`` steps until ``stop`` of
  training, with the drop fraction cosine-annealed from ``zeta``, drop the smallest ``|weight|``
  and grow where the current batch's dense gradient ``|dL/dW|`` is largest
  (:func:`freenets.rules.gradient.dense_gradient`), taken before the weights move; that step
  updates the mask instead of the weights, and new edges start at zero.

RigL's drop and grow is rigl's ``_get_update_op``: ``floor(zeta * n)`` edges are dropped, and the
growth candidates are the allowed positions absent *after* the drop, so a dropped edge may be grown
straight back and then keeps its weight (rigl's default ``reinit_when_same=False``). SET's reference
grows among the positions not kept too, but a dropped edge grown back starts anew there, with a
drawn weight; here it is renewed the same way (:class:`~freenets.rules.base.Proposal`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from freenets import graph
from freenets.errors import ConfigError
from freenets.rules.base import BatchInfo, Proposal, Readd, RoundInfo, TopologyRule
from freenets.rules.gradient import dense_gradient
from freenets.rules.selection import (
    absent,
    budget_edges,
    check_budget,
    check_fraction,
    choose_largest,
    choose_random,
    choose_smallest,
    drop_count,
    graph_of,
    random_graph,
)


def set_drop(mask: torch.Tensor, weight: torch.Tensor, zeta: float) -> torch.Tensor:
    """The edges SET keeps: those beyond its sign-aware thresholds (``weightsEvolution``).

    Over the present edges' weights sorted ascending (``values``, n of them), with ``f`` the first
    and ``l`` one past the last position of the value nearest zero, the reference keeps a weight
    below ``largestNegative = values[int((1 - zeta) * f)]`` or above ``smallestPositive =
    values[int(min(n - 1, l + zeta * (n - l)))]``: about ``1 - zeta`` of the negative weights and
    of the positive ones, those farthest from zero.

    Parameters
    ----------
    mask : torch.Tensor
        Current graph, ``(k, k)`` bool, strictly lower-triangular.
    weight : torch.Tensor
        ``(k, k)`` weights; only the present edges' entries are read.
    zeta : float
        The fraction of each sign dropped, in ``[0, 1]``.

    Returns
    -------
    torch.Tensor
        The kept edges, a subset of ``mask``.
    """
    graph.check_mask(mask)
    check_fraction("zeta", zeta, zero=True)
    weight = weight.detach()
    present = weight[mask]  # (n,), row-major as the reference's sparse data
    n = present.numel()
    if n == 0:
        return mask.clone()
    values = present.sort().values
    distance = values.abs()
    first_zero = int(distance.argmin())  # the first of the values nearest zero
    last_zero = n - int(distance.flip(0).argmin())  # one past the last of them
    largest_negative = values[int((1 - zeta) * first_zero)]
    smallest_positive = values[int(min(n - 1, last_zero + zeta * (n - last_zero)))]
    keep = (weight < largest_negative) | (weight > smallest_positive)
    return mask & keep


def set_step(
    mask: torch.Tensor, weight: torch.Tensor, zeta: float, generator: torch.Generator
) -> Proposal:
    """SET's update: :func:`set_drop`, then as many edges grown at random among those not kept.

    Parameters
    ----------
    mask : torch.Tensor
        Current graph, ``(k, k)`` bool, strictly lower-triangular.
    weight : torch.Tensor
        ``(k, k)`` weights; only the present edges' entries are read.
    zeta : float
        The fraction of each sign dropped, in ``[0, 1]``.
    generator : torch.Generator
        Chooses the grown positions.

    Returns
    -------
    Proposal
        A graph with as many edges as ``mask``; its ``renew`` holds the dropped edges grown
        straight back, which start anew as the reference's do.
    """
    kept = set_drop(mask, weight, zeta)
    count = graph.n_edges(mask) - graph.n_edges(kept)
    grown = choose_random(absent(kept), count, generator)  # dropped positions included
    return Proposal(mask=kept | grown, renew=grown & mask)


def rigl_step(
    mask: torch.Tensor,
    weight: torch.Tensor,
    gradient: torch.Tensor,
    fraction: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """RigL's update: drop the fraction of smallest ``|weight|``, regrow at the largest ``|gradient|``.

    Parameters
    ----------
    mask : torch.Tensor
        Current graph, ``(k, k)`` bool, strictly lower-triangular.
    weight : torch.Tensor
        ``(k, k)`` weights; only the present edges' entries are read.
    gradient : torch.Tensor
        ``(k, k)`` dense gradient ``dL/dW`` (:func:`~freenets.rules.gradient.dense_gradient`);
        only the entries at absent allowed positions are read.
    fraction : float
        This update's drop fraction in ``[0, 1]`` (see :func:`rigl_drop_fraction`).
    generator : torch.Generator
        Breaks ties between equal scores.

    Returns
    -------
    torch.Tensor
        A new graph with as many edges as ``mask``.
    """
    graph.check_mask(mask)
    check_fraction("the drop fraction", fraction, zero=True)
    count = drop_count(graph.n_edges(mask), fraction)
    kept = mask & ~choose_smallest(mask, weight.detach().abs(), count, generator)
    candidates = absent(kept)  # the dropped edges included, as in rigl
    return kept | choose_largest(candidates, gradient.detach().abs(), count, generator)


def rigl_drop_fraction(step: int, total_steps: int, zeta: float, stop: float = 0.75) -> float:
    """RigL's cosine-annealed drop fraction ``zeta/2 * (1 + cos(pi * t / (stop * T)))``.

    Parameters
    ----------
    step : int
        Optimiser steps taken, t.
    total_steps : int
        Optimiser steps of the whole training, T.
    zeta : float
        The initial drop fraction.
    stop : float, default 0.75
        Fraction of training after which the graph no longer changes (0 from there on).
    """
    end = stop * total_steps
    if step >= end:
        return 0.0
    return zeta / 2 * (1 + math.cos(math.pi * step / end))


@dataclass(frozen=True)
class SETConfig:
    """SET's parameters: the budget (``edges``, or a ``density`` of ``k(k-1)/2``) and ``zeta``."""

    edges: int | None = None
    density: float | None = None
    zeta: float = 0.3


@dataclass(frozen=True)
class RigLConfig:
    """RigL's parameters: the budget, the initial drop fraction, ``delta_t`` and ``stop``."""

    edges: int | None = None
    density: float | None = None
    zeta: float = 0.3
    delta_t: int = 100
    stop: float = 0.75


class _BudgetRule(TopologyRule):
    """A fixed edge budget, a random initial graph of that size, the drop fraction ``zeta``."""

    readd: Readd = "zero"

    def __init__(
        self, *, edges: int | None = None, density: float | None = None, zeta: float = 0.3
    ) -> None:
        check_budget(self.name, edges, density, required=True)
        check_fraction("zeta", zeta)
        self.edges = edges
        self.density = density
        self.zeta = zeta

    def initial_mask(self, model: nn.Module, generator: torch.Generator) -> torch.Tensor | None:
        """A uniform random graph of the budget's size."""
        mask, _ = graph_of(model)
        budget = budget_edges(mask.shape[0], self.edges, self.density)
        return random_graph(mask.shape[0], budget, generator, device=mask.device)


class SETRule(_BudgetRule):
    """SET (Mocanu et al. 2018): each round, ``zeta`` of each sign nearest zero, regrown at random.

    The module's docstring says how it follows the reference; new weights are drawn from
    ``N(0, 0.1^2)`` with the rule's generator. As every rule here, it changes the graph only
    between epochs that are both trained (never after the last one), once the earlier is scored.

    Parameters
    ----------
    edges : int, optional
        The edge budget (e.g. the edge count of the matching FreeEvolve model).
    density : float, optional
        The budget as a fraction of the ``k(k-1)/2`` allowed edges (exactly one of the two).
    zeta : float, default 0.3
        Fraction of the negative and of the positive weights dropped and regrown each round.
    """

    name: ClassVar[str] = "set"
    config_type: ClassVar[type | None] = SETConfig
    readd: Readd = "random"
    # The reference's new weights: np.random.randn() / 10.
    grown_std: ClassVar[float] = 0.1

    def after_round(self, model: nn.Module, info: RoundInfo) -> Proposal | None:
        """:func:`set_step` on the model's graph, or ``None`` when it drops nothing."""
        mask, weight = graph_of(model)
        proposal = set_step(mask, weight, self.zeta, info.generator)
        if torch.equal(proposal.mask, mask) and not (
            proposal.renew is not None and bool(proposal.renew.any())
        ):
            return None
        return proposal

    def grown_weights(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """``count`` weights from ``N(0, 0.1^2)``, as the reference draws its new edges'."""
        return torch.randn(count, generator=generator, device=generator.device) * self.grown_std


class RigLRule(_BudgetRule):
    """RigL (Evci et al. 2020): every ``delta_t`` steps, weakest edges regrown at largest gradient.

    Parameters
    ----------
    edges : int, optional
        The edge budget (e.g. the edge count of the matching FreeEvolve model).
    density : float, optional
        The budget as a fraction of the ``k(k-1)/2`` allowed edges (exactly one of the two).
    zeta : float, default 0.3
        Initial drop fraction, cosine-annealed to zero at ``stop`` of training.
    delta_t : int, default 100
        Optimiser steps between updates.
    stop : float, default 0.75
        Fraction of the training's steps after which the graph no longer changes.
    """

    name: ClassVar[str] = "rigl"
    config_type: ClassVar[type | None] = RigLConfig

    def __init__(
        self,
        *,
        edges: int | None = None,
        density: float | None = None,
        zeta: float = 0.3,
        delta_t: int = 100,
        stop: float = 0.75,
    ) -> None:
        super().__init__(edges=edges, density=density, zeta=zeta)
        if isinstance(delta_t, bool) or not isinstance(delta_t, int) or delta_t < 1:
            raise ConfigError(f"delta_t must be a positive integer, got {delta_t!r}")
        check_fraction("stop", stop)
        self.delta_t = delta_t
        self.stop = stop
        self.finished = False
        self._full: torch.Tensor | None = None  # the dense mask, so its kernel structure is reused

    def instead_of_step(self, model: nn.Module, info: BatchInfo) -> torch.Tensor | None:
        """:func:`rigl_step` every ``delta_t`` steps before ``stop`` of training, else ``None``.

        Called before the optimiser step: the dense gradient is the current batch's at the
        weights not yet moved, and on an update step the loop applies the proposal instead of
        the optimiser step, as rigl-torch's ``RigLScheduler`` and google-research/rigl's
        ``SparseRigLOptimizer`` do. An update step whose annealed fraction drops nothing
        proposes the graph unchanged (and so still takes the step's place, as there).
        """
        if info.step >= self.stop * info.total_steps:
            self.finished = True
            return None
        if info.step % self.delta_t:
            return None
        mask, weight = graph_of(model)
        fraction = rigl_drop_fraction(info.step, info.total_steps, self.zeta, self.stop)
        if drop_count(graph.n_edges(mask), fraction) == 0:
            return mask.clone()  # nothing to drop: spare the gradient pass
        if self._full is None or self._full.shape != mask.shape or self._full.device != mask.device:
            self._full = graph.dense_mask(mask.shape[0], device=mask.device)
        gradient = dense_gradient(model, info.inputs, info.targets, info.loss, full=self._full)
        return rigl_step(mask, weight, gradient, fraction, info.generator)

    @property
    def converged(self) -> bool:
        """True once training has passed ``stop`` of its steps."""
        return self.finished

    def state_dict(self) -> dict[str, Any]:
        """Whether the updates are over."""
        return {"finished": self.finished}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        if set(state) != {"finished"} or not isinstance(state["finished"], bool):
            raise ValueError(f"rule 'rigl' expects {{'finished': bool}}, got {state!r}")
        self.finished = state["finished"]
