"""FreeEvolve inside a user's own training loop (paper, Algorithm 1 around Algorithm 2).

:class:`Evolver` is :class:`~freenets.rules.freeevolve.FreeEvolveRule` (what to change) joined to
:func:`~freenets.training.topology.apply_mask` (the one place a topology changes) for a live model
and its optimiser: ``step(data)`` takes one FreeEvolve step and writes it into the model.
:func:`freenets.training.loop.fit` uses the rule and ``apply_mask`` directly.
"""

from __future__ import annotations

import torch
from torch import nn

from freenets.rules.base import Readd
from freenets.rules.freeevolve import EvolveStep, FreeEvolveRule
from freenets.stats import Data
from freenets.training.topology import apply_mask, check_optimizer

__all__ = ["Evolver"]


class Evolver:
    """Applies FreeEvolve to a live :class:`~freenets.FreeNet`, in anyone's training loop.

    Parameters
    ----------
    model : FreeNet
        The model whose ``mask`` is evolved.
    epsilon : float
        FreeEvolve's threshold parameter in ``(0, 1)``.
    optimizer : torch.optim.Optimizer, optional
        The optimiser training ``model.weight``. Its per-parameter state (Adam's moments, SGD's
        momentum) is zeroed for pruned edges, so that with their zero gradient they do not move.
        Decoupled weight decay on ``model.weight`` would still move them, so it is refused.
    readd : {"restore", "zero"}, default "restore"
        A re-added edge resumes its stored weight, or starts from zero.
    patience : int, default 3
        The graph has converged once it has not changed for this many consecutive steps.
    batch_size : int, default 1024
        Batch size of the statistics pass.

    Attributes
    ----------
    rule : FreeEvolveRule
        The rule that proposes each step's graph.
    history : list of EvolveStep
        One record per step.

    Examples
    --------
    >>> evolver = Evolver(model, epsilon=0.25, optimizer=optimizer)
    >>> for epoch in range(epochs):
    ...     train_one_epoch(model, optimizer)
    ...     if not evolver.converged:
    ...         evolver.step(x_train)
    """

    def __init__(
        self,
        model: nn.Module,
        epsilon: float,
        *,
        optimizer: torch.optim.Optimizer | None = None,
        readd: Readd = "restore",
        patience: int = 3,
        batch_size: int = 1024,
    ) -> None:
        self.rule = FreeEvolveRule(epsilon, patience=patience, readd=readd, batch_size=batch_size)
        check_optimizer(model, optimizer)
        self.model = model
        self.optimizer = optimizer

    @property
    def epsilon(self) -> float:
        """FreeEvolve's threshold parameter."""
        return self.rule.epsilon

    @property
    def readd(self) -> Readd:
        """How a re-added edge starts: ``"restore"`` or ``"zero"``."""
        return self.rule.readd

    @property
    def patience(self) -> int:
        """Steps without change after which the graph has converged."""
        return self.rule.patience

    @property
    def unchanged_steps(self) -> int:
        """Consecutive steps, up to the last one, that left the graph as it was."""
        return self.rule.unchanged_rounds

    @property
    def history(self) -> list[EvolveStep]:
        """One record per step: edges, added, pruned, and the NCIM/NCAM values (Figure 7)."""
        return self.rule.history

    @property
    def converged(self) -> bool:
        """True once the graph has stayed the same for ``patience`` consecutive steps."""
        return self.rule.converged

    def step(self, data: Data, *, value_limit: int = 5000) -> EvolveStep:
        """Compute NCAM/NCIM on ``data``, apply FreeEvolve, and record what changed.

        Parameters
        ----------
        data : torch.Tensor or iterable
            The inputs of the statistics pass (a tensor, or a ``DataLoader`` of batches).
        value_limit : int, default 5000
            At most this many NCIM and NCAM values kept in the record.
        """
        new_mask, record = self.rule.step(self.model, data, value_limit=value_limit)
        self.apply(new_mask)
        return record

    def apply(self, new_mask: torch.Tensor) -> None:
        """Set the model's graph to ``new_mask`` (through :func:`apply_mask`)."""
        apply_mask(self.model, new_mask, self.optimizer, readd=self.readd)
