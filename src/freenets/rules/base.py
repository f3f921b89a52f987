"""The protocol every topology rule follows (paper, Algorithm 1, with FreeEvolve as one rule).

Algorithm 1 alternates weight training with a change of the graph. *What* the change is, is a
rule: FreeEvolve (Algorithm 2) is one, SET, RigL, magnitude and random pruning are others. A rule
only proposes masks; it never writes into the model. The training loop hands every proposal to
:func:`freenets.training.topology.apply_mask`, the one place that changes a model's topology and
the optimiser state of the edges that leave or return (the split of ``compute_mask`` and the
module plumbing in ``torch.nn.utils.prune``).

A rule may act at three points, each with a default that does nothing:

- :meth:`TopologyRule.initial_mask`, once before training (SET and RigL start from a random
  graph of their budget);
- :meth:`TopologyRule.after_batch`, after each optimiser step (RigL every ``delta_t`` steps);
- :meth:`TopologyRule.after_round`, after each round of ``epochs_per_round`` epochs
  (FreeEvolve, SET, magnitude and random pruning).

Each returns the proposed ``(k, k)`` bool mask (strictly lower-triangular), or ``None`` for no
change. :attr:`TopologyRule.converged` tells the loop that the rule has nothing more to do
(FreeEvolve: the graph has not changed for ``patience`` rounds). Whatever a rule must remember
between calls goes through :meth:`~TopologyRule.state_dict` and
:meth:`~TopologyRule.load_state_dict` (plain containers, numbers and tensors), which checkpoints
save, so that a resumed run proposes exactly what an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from freenets.errors import ConfigError
from freenets.stats import Data

Readd = Literal["restore", "zero"]


def as_readd(value: str) -> Readd:
    """``value`` as a :data:`Readd` (what a rule does with an edge that returns).

    Configurations keep it as a plain string (``TrainConfig`` reads its fields' types back from
    JSON); this is where the string becomes the literal the rules take.

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


@dataclass(frozen=True)
class BatchInfo:
    """What the loop knows after an optimiser step, for :meth:`TopologyRule.after_batch`.

    Attributes
    ----------
    step : int
        Optimiser steps taken so far in this training, this one included (1 after the first).
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
    """

    round: int
    epoch: int
    data: Data
    generator: torch.Generator


class TopologyRule:
    """Base class of the topology rules: proposes masks, never changes the model itself.

    Subclasses override the hooks they need; the defaults propose nothing.

    Attributes
    ----------
    name : str
        The rule's name in configs, sweeps and tables (``"freeevolve"``, ``"set"``, ...).
    readd : {"restore", "zero"}
        How :func:`~freenets.training.topology.apply_mask` starts an edge that (re)appears: from
        its stored weight, or from zero (SET and RigL grow new edges at zero).
    """

    name: ClassVar[str] = "rule"
    readd: Readd = "restore"

    def initial_mask(self, model: nn.Module, generator: torch.Generator) -> torch.Tensor | None:
        """The graph to train from, or ``None`` to keep the model's (dense at start)."""
        return None

    def after_batch(self, model: nn.Module, info: BatchInfo) -> torch.Tensor | None:
        """A new graph after an optimiser step, or ``None`` for no change."""
        return None

    def after_round(self, model: nn.Module, info: RoundInfo) -> torch.Tensor | None:
        """A new graph at the end of a round, or ``None`` for no change."""
        return None

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
