"""The protocol every topology rule follows (paper, Algorithm 1, with FreeEvolve as one rule).

Algorithm 1 alternates weight training with a change of the graph. *What* the change is, is a
rule: FreeEvolve (Algorithm 2) is one, SET, RigL, magnitude and random pruning are others. A rule
only proposes masks; it never writes into the model. The training loop hands every proposal to
:func:`freenets.training.topology.apply_mask`, the one place that changes a model's topology and
the optimiser state of the edges that leave or return (the split of ``compute_mask`` and the
module plumbing in ``torch.nn.utils.prune``).

A rule may act at four points, each with a default that does nothing:

- :meth:`TopologyRule.initial_mask`, once before training (SET and RigL start from a random
  graph of their budget);
- :meth:`TopologyRule.instead_of_step`, on each batch once its gradient is computed and before the
  optimiser step: a proposal there replaces the step, the mask moves instead of the weights (RigL
  every ``delta_t`` steps, as its reference implementations do);
- :meth:`TopologyRule.after_batch`, after each optimiser step;
- :meth:`TopologyRule.after_round`, after each round of ``epochs_per_round`` epochs once the
  round's last epoch is scored, and only when another epoch follows (FreeEvolve, SET, magnitude
  and random pruning).

Each returns the proposed ``(k, k)`` bool mask (strictly lower-triangular), a :class:`Proposal`
(the mask and the edges in it that start afresh although present before, as SET's regrown ones
do), or ``None`` for no change. :attr:`TopologyRule.converged` tells the loop that the rule has nothing more to do
(FreeEvolve: the graph has not changed for ``patience`` rounds). Whatever a rule must remember
between calls goes through :meth:`~TopologyRule.state_dict` and
:meth:`~TopologyRule.load_state_dict` (plain containers, numbers and tensors), which checkpoints
save, so that a resumed run proposes exactly what an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from freenets.errors import ConfigError
from freenets.stats import Data

# How an edge that (re)appears starts: its stored weight, zero, or a value the rule draws
# (:meth:`TopologyRule.grown_weights`; SET's reference draws its new weights at random).
Readd = Literal["restore", "zero", "random"]


def as_readd(value: str) -> Literal["restore", "zero"]:
    """``value`` as one of the two re-add modes a configuration may choose.

    Configurations keep it as a plain string (``TrainConfig`` reads its fields' types back from
    JSON); this is where the string becomes the literal the rules take. ``"random"`` belongs to
    the rules that draw their own new weights and is not a configuration's choice.

    Raises
    ------
    ConfigError
        If ``value`` is neither ``"restore"`` nor ``"zero"`` (a ValueError).
    """
    if value == "restore":
        return "restore"
    if value == "zero":
        return "zero"
    raise ConfigError(f"readd must be 'restore' or 'zero', got {value!r}")


@dataclass
class TopologyChange:
    """What one topology change did: the one record of it, wherever a graph changes.

    :func:`~freenets.training.topology.apply_mask` returns one (edges, added, pruned); the
    training loop, :class:`~freenets.training.evolver.Evolver` and the Lightning callback keep
    them, with when the change happened, in their histories, ``history.json`` and the figures.

    Attributes
    ----------
    edges : int
        Edges after the change.
    added, pruned : int
        Edges it added and pruned (an edge renewed counts in both).
    round : int, optional
        The change's number in its training, from 1.
    epoch : int, optional
        The epoch (from 1) a round ended, scored before the change; for a change on a batch,
        the epoch in progress.
    step : int, optional
        The batch (from 1 in the training) of a change a rule made on one; ``None`` for a round.
    prune_values, aug_values : list of float
        The values behind FreeEvolve's decisions: NCIM on present edges, NCAM on absent ones
        (Figure 7); empty for other rules.
    seconds : float
        How long the change took, statistics included.
    module : str, optional
        The FreeNet's name in a ``LightningModule`` (the Lightning callback's records).
    """

    edges: int
    added: int
    pruned: int
    round: int | None = None
    epoch: int | None = None
    step: int | None = None
    prune_values: list[float] = field(default_factory=list)
    aug_values: list[float] = field(default_factory=list)
    seconds: float = 0.0
    module: str | None = None

    @property
    def changed(self) -> bool:
        """Whether any edge appeared or left."""
        return bool(self.added or self.pruned)


@dataclass(frozen=True)
class Proposal:
    """A rule's new graph, with the edges that start afresh although present before and after.

    Attributes
    ----------
    mask : torch.Tensor
        The new graph, ``(k, k)`` bool, strictly lower-triangular.
    renew : torch.Tensor, optional
        ``(k, k)`` bool, a subset of the edges present both before and in ``mask``: each counts
        as pruned and added again, its weight starts as the rule's ``readd`` says and its
        optimiser state from zero (SET drops an edge and may grow it straight back, anew).
    """

    mask: torch.Tensor
    renew: torch.Tensor | None = None


@dataclass(frozen=True)
class BatchInfo:
    """What the loop knows of a batch, for :meth:`TopologyRule.instead_of_step` and ``after_batch``.

    Attributes
    ----------
    step : int
        Batches trained so far in this training, this one included (1 on the first); a batch
        whose step a rule replaced counts too, as in RigL's references.
    total_steps : int
        Optimiser steps the whole training will take at most (RigL stops at 75% of them).
    inputs, targets : torch.Tensor
        The batch just trained on.
    loss : callable
        ``loss(model(inputs), targets)``, the training loss (for gradient-based regrowth).
    generator : torch.Generator
        The rule's source of randomness, seeded from the run's seed.
    """

    step: int
    total_steps: int
    inputs: torch.Tensor
    targets: torch.Tensor
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    generator: torch.Generator


@dataclass(frozen=True)
class RoundInfo:
    """What the loop knows at the end of a round, for :meth:`TopologyRule.after_round`.

    Attributes
    ----------
    round : int
        Rounds finished before this one (0 at the end of the first round).
    epoch : int
        Epochs trained so far.
    data : Data
        The training inputs (a tensor or an iterable of batches), for co-activation statistics.
    generator : torch.Generator
        The rule's source of randomness, seeded from the run's seed.
    total_epochs : int, optional
        Epochs the whole training will take at most, where the caller knows them (a schedule
        over training, as gradual magnitude pruning's, needs them).
    """

    round: int
    epoch: int
    data: Data
    generator: torch.Generator
    total_epochs: int | None = None


class TopologyRule:
    """Base class of the topology rules: proposes masks, never changes the model itself.

    Subclasses override the hooks they need; the defaults propose nothing.

    Attributes
    ----------
    name : str
        The rule's name in configs, sweeps and tables (``"freeevolve"``, ``"set"``, ...).
    config_type : type or None
        The frozen dataclass of the rule's parameters; :meth:`config` fills it from the rule.
    readd : {"restore", "zero", "random"}
        How :func:`~freenets.training.topology.apply_mask` starts an edge that (re)appears: from
        its stored weight, from zero (RigL), or from :meth:`grown_weights` (SET).
    """

    name: ClassVar[str] = "rule"
    readd: Readd = "restore"
    # The frozen dataclass of the rule's parameters (the registry's second half); a rule of your
    # own may leave it None.
    config_type: ClassVar[type | None] = None

    def config(self) -> Any:
        """The rule's parameters as its frozen ``config_type``, or ``None`` without one."""
        if self.config_type is None:
            return None
        names = [item.name for item in fields(self.config_type)]
        return self.config_type(**{name: getattr(self, name) for name in names})

    def initial_mask(
        self, model: nn.Module, generator: torch.Generator
    ) -> torch.Tensor | Proposal | None:
        """The graph to train from, or ``None`` to keep the model's (dense at start)."""
        return None

    def instead_of_step(self, model: nn.Module, info: BatchInfo) -> torch.Tensor | Proposal | None:
        """A new graph in place of this batch's optimiser step, or ``None`` to take the step.

        Called once the batch's loss is back-propagated and before the optimiser moves any
        weight; a proposal is applied and the step is skipped (the weights stay as they are).
        """
        return None

    def after_batch(self, model: nn.Module, info: BatchInfo) -> torch.Tensor | Proposal | None:
        """A new graph after an optimiser step, or ``None`` for no change."""
        return None

    def after_round(self, model: nn.Module, info: RoundInfo) -> torch.Tensor | Proposal | None:
        """A new graph at the end of a round, or ``None`` for no change."""
        return None

    def selectable(self, mask: torch.Tensor) -> bool:
        """Whether a model with graph ``mask`` may be the run's result (default: any).

        The training loop chooses the best epoch on validation among those whose graph the
        rule accepts (once there is one): a rule pruning towards a budget accepts only graphs
        within it, so that the result has the density it is compared at.
        """
        return True

    def grown_weights(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """The starting weights of ``count`` new edges, for a rule whose ``readd`` is "random".

        They are written at the new edges in row-major order of the ``(k, k)`` matrix.
        """
        raise NotImplementedError(f"rule {self.name!r} draws no weights for new edges")

    @property
    def converged(self) -> bool:
        """True once the rule will propose no further change (the loop may then stop rounds)."""
        return False

    def state_dict(self) -> dict[str, Any]:
        """What the rule remembers between calls, for checkpoints (plain containers, tensors)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        if state:
            raise ValueError(f"rule {self.name!r} keeps no state, got keys {sorted(state)}")
