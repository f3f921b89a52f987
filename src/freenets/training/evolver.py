"""A topology rule inside a user's own training loop (paper, Algorithm 1 around any rule).

:class:`Evolver` joins a :class:`~freenets.rules.base.TopologyRule` (what to change: FreeEvolve,
Algorithm 2, by default, or any rule of :data:`freenets.rules.RULES` or of your own) to
:func:`~freenets.training.topology.apply_proposal` (the one place a topology changes) for a live
model and its optimiser. Your loop calls it where :func:`freenets.training.loop.fit` calls the
rule: :meth:`~Evolver.start` before training, :meth:`~Evolver.replaces_step` and
:meth:`~Evolver.after_step` around each optimiser step, :meth:`~Evolver.step` between epochs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from freenets.rules import make_rule
from freenets.rules.base import BatchInfo, Readd, RoundInfo, TopologyChange, TopologyRule
from freenets.rules.freeevolve import FreeEvolveRule
from freenets.stats import Data
from freenets.training.topology import apply_proposal, check_optimizer

__all__ = ["Evolver"]

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Evolver:
    """Applies a topology rule to a live :class:`~freenets.FreeNet`, in anyone's training loop.

    Parameters
    ----------
    model : FreeNet
        The model whose ``mask`` changes.
    rule : TopologyRule, str or float, optional
        The rule: an instance (of a registered rule or your own subclass), a name of
        :data:`freenets.rules.RULES` built with its defaults, or a number, FreeEvolve's epsilon
        (``Evolver(model, 0.25)``, as before rules existed). Without it, ``epsilon`` is needed.
    optimizer : torch.optim.Optimizer, optional
        The optimiser training ``model.weight``. Its per-parameter state (Adam's moments, SGD's
        momentum) is zeroed for edges that leave or return, so that with their zero gradient
        pruned edges do not move. Decoupled weight decay on ``model.weight`` would still move
        them, so it is refused.
    epsilon : float, optional
        FreeEvolve's threshold parameter in ``(0, 1)``, when ``rule`` is not given.
    readd, patience, batch_size
        FreeEvolve's other parameters, when it is built from ``epsilon`` (defaults
        ``"restore"``, 3 and 1024).
    generator : torch.Generator, optional
        The rule's randomness (SET's and RigL's choices); by default seeded with 0.
    total_steps : int, optional
        The optimiser steps training will take, for rules scheduled over them (RigL).

    Attributes
    ----------
    rule : TopologyRule
        The rule that proposes each graph.
    history : list of TopologyChange
        One record per change this Evolver made (and, for the estimators, per round of their
        training).
    steps : int
        Batches counted so far, by :meth:`replaces_step` (the ``step`` of a rule's records).

    Examples
    --------
    >>> evolver = Evolver(model, 0.25, optimizer)  # FreeEvolve
    >>> for epoch in range(epochs):
    ...     train_one_epoch(model, optimizer)
    ...     if not evolver.converged and epoch + 1 < epochs:
    ...         evolver.step(x_train)
    """

    def __init__(
        self,
        model: nn.Module,
        rule: TopologyRule | str | float | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        epsilon: float | None = None,
        readd: Readd = "restore",
        patience: int = 3,
        batch_size: int = 1024,
        generator: torch.Generator | None = None,
        total_steps: int | None = None,
    ) -> None:
        if isinstance(rule, (int, float)) and not isinstance(rule, bool):
            if epsilon is not None:
                raise TypeError("give FreeEvolve's epsilon once")
            epsilon = float(rule)
            rule = None
        if rule is None:
            if epsilon is None:
                raise TypeError("Evolver needs a rule, or FreeEvolve's epsilon")
            rule = FreeEvolveRule(epsilon, patience=patience, readd=readd, batch_size=batch_size)
        elif epsilon is not None:
            raise TypeError("epsilon is FreeEvolve's: give it, or a rule, not both")
        elif isinstance(rule, str):
            rule = make_rule(rule)
        if not isinstance(rule, TopologyRule):
            raise TypeError(
                f"rule must be a TopologyRule, a rule's name or FreeEvolve's epsilon, "
                f"got {type(rule).__name__}"
            )
        scheduled = type(rule).instead_of_step is not TopologyRule.instead_of_step
        if scheduled and total_steps is None:
            raise TypeError(
                f"rule {rule.name!r} acts on optimiser steps scheduled over the training: "
                "give total_steps"
            )
        check_optimizer(model, optimizer)
        self.model = model
        self.rule = rule
        self.optimizer = optimizer
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.total_steps = total_steps
        self.steps = 0
        self.history: list[TopologyChange] = []

    # ------------------------------------------------------------------ FreeEvolve's parameters

    def _freeevolve(self, what: str) -> FreeEvolveRule:
        if not isinstance(self.rule, FreeEvolveRule):
            raise AttributeError(f"{what} is FreeEvolve's; this Evolver's rule is {self.rule.name}")
        return self.rule

    @property
    def epsilon(self) -> float:
        """FreeEvolve's threshold parameter (FreeEvolve only)."""
        return self._freeevolve("epsilon").epsilon

    @property
    def readd(self) -> Readd:
        """How a new or returning edge starts: ``"restore"``, ``"zero"`` or ``"random"``."""
        return self.rule.readd

    @property
    def patience(self) -> int:
        """Rounds without change after which the graph has converged (FreeEvolve only)."""
        return self._freeevolve("patience").patience

    @property
    def unchanged_steps(self) -> int:
        """Consecutive FreeEvolve rounds, up to the last one, that left the graph as it was."""
        return self._freeevolve("unchanged_steps").unchanged_rounds

    @property
    def converged(self) -> bool:
        """True once the rule will propose no further change."""
        return self.rule.converged

    # ------------------------------------------------------------------ the rule's four points

    def start(self) -> TopologyChange | None:
        """The rule's initial graph (SET and RigL: a random one of their budget), applied."""
        proposal = self.rule.initial_mask(self.model, self.generator)
        return None if proposal is None else self._record(proposal, time.perf_counter())

    def step(self, data: Data, *, value_limit: int = 5000, epoch: int | None = None) -> Any:
        """One round: the rule's graph after an epoch (FreeEvolve: Algorithm 2 on ``data``).

        Parameters
        ----------
        data : torch.Tensor or iterable
            The training inputs (a tensor, or a ``DataLoader`` of batches), for the rules that
            read them (FreeEvolve's statistics pass).
        value_limit : int, default 5000
            At most this many NCIM and NCAM values kept in a FreeEvolve record.
        epoch : int, optional
            The epoch the round ends, for the record.

        Returns
        -------
        TopologyChange
            What the round changed (nothing once the rule has converged).
        """
        start = time.perf_counter()
        if isinstance(self.rule, FreeEvolveRule) and not self.rule.converged:
            # FreeEvolve's own step, for its value_limit; the record keeps NCIM's and NCAM's.
            new_mask, found = self.rule.step(self.model, data, value_limit=value_limit)
            record = self._record(new_mask, start, epoch=epoch)
            record.prune_values, record.aug_values = found.prune_values, found.aug_values
            return record
        rounds = sum(1 for record in self.history if record.step is None)
        info = RoundInfo(rounds, epoch if epoch is not None else rounds + 1, data, self.generator)
        return self._record(self.rule.after_round(self.model, info), start, epoch=epoch)

    def replaces_step(self, inputs: torch.Tensor, targets: torch.Tensor, loss: Loss) -> bool:
        """Call after ``backward`` and before ``optimizer.step()``: True if the rule changed the
        graph in place of this step (RigL's updates), so that the step must be skipped.

        Parameters
        ----------
        inputs, targets : torch.Tensor
            The batch just back-propagated.
        loss : callable
            ``loss(model(inputs), targets)``, the training loss (RigL's dense gradient).
        """
        self.steps += 1
        info = self._batch_info(inputs, targets, loss)
        start = time.perf_counter()
        proposal = self.rule.instead_of_step(self.model, info)
        if proposal is None:
            return False
        self._record(proposal, start, step=self.steps)
        return True

    def after_step(self, inputs: torch.Tensor, targets: torch.Tensor, loss: Loss) -> None:
        """Call after ``optimizer.step()``: the rule's change after a step, if it has one."""
        start = time.perf_counter()
        proposal = self.rule.after_batch(self.model, self._batch_info(inputs, targets, loss))
        if proposal is not None:
            self._record(proposal, start, step=self.steps)

    def apply(self, new_mask: torch.Tensor) -> TopologyChange:
        """Set the model's graph to ``new_mask`` the rule's way (through ``apply_proposal``)."""
        return apply_proposal(self.model, new_mask, self.optimizer, self.rule, self.generator)

    # ------------------------------------------------------------------ records

    def _batch_info(self, inputs: torch.Tensor, targets: torch.Tensor, loss: Loss) -> BatchInfo:
        total = self.total_steps if self.total_steps is not None else 0
        return BatchInfo(self.steps, total, inputs, targets, loss, self.generator)

    def _record(
        self,
        proposal: Any,
        start: float,
        *,
        epoch: int | None = None,
        step: int | None = None,
    ) -> TopologyChange:
        change = apply_proposal(self.model, proposal, self.optimizer, self.rule, self.generator)
        change.round, change.epoch, change.step = len(self.history) + 1, epoch, step
        change.seconds = round(time.perf_counter() - start, 4)
        self.history.append(change)
        return change
