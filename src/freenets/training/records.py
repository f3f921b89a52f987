"""What a training run records (paper, Algorithm 1), and the two ways training ends early.

:class:`EpochRecord` and :class:`RoundRecord` are one epoch and one FreeEvolve round; a
:class:`ModelResult` is a trained model with its numbers at the epoch chosen on validation, as
written to ``summary.json`` and ``history.json``. :class:`TrainingFailed` ends a run that diverged,
:class:`Interrupted` one that was asked to stop once its state was saved.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class EpochRecord:
    """One epoch of training."""

    epoch: int
    train_loss: float
    val_accuracy: float
    test_accuracy: float
    seconds: float
    edges: int | None = None


@dataclass
class RoundRecord:
    """One round of Algorithm 1: the FreeEvolve step that ended it."""

    round: int
    epoch: int
    edges: int
    added: int
    pruned: int
    prune_values: list[float]
    aug_values: list[float]
    seconds: float


@dataclass
class ModelResult:
    """A trained model and its numbers, at the epoch chosen on validation."""

    name: str
    model: nn.Module
    test_accuracy: float
    val_accuracy: float
    best_epoch: int
    params: int
    seconds: float
    epochs: list[EpochRecord] = field(default_factory=list)
    rounds: list[RoundRecord] = field(default_factory=list)
    # The graph before the first round, then after each round: the topology figures' input.
    masks: list[torch.Tensor] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The headline numbers at the chosen epoch, as written to ``summary.json``."""
        return {
            "test_accuracy": self.test_accuracy,
            "val_accuracy": self.val_accuracy,
            "params": self.params,
            "seconds": round(self.seconds, 3),
            "best_epoch": self.best_epoch,
            **self.extra,
        }

    def history(self) -> dict[str, Any]:
        """Per-epoch and per-round records, as written to ``history.json``."""
        return {
            "epochs": [asdict(record) for record in self.epochs],
            "rounds": [asdict(record) for record in self.rounds],
        }
