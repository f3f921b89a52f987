"""What a training run records (paper, Algorithm 1), and the two ways training ends early.

:class:`EpochRecord` is one epoch (a topology change is the rules' one record,
:class:`~freenets.rules.base.TopologyChange`); a
:class:`ModelResult` is a trained model with its numbers at the epoch chosen on validation, as
written to ``summary.json`` and ``history.json``. :class:`TrainingFailed` ends a run that diverged,
:class:`Interrupted` one that was asked to stop once its state was saved.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from freenets.rules.base import TopologyChange


@dataclass
class EpochRecord:
    """One epoch of training.

    ``val_accuracy`` and ``test_accuracy`` are the task's score (accuracy; R^2 for regression),
    ``None`` without such data; ``edges`` is the graph's size for a FreeNet.
    """

    epoch: int
    train_loss: float
    val_accuracy: float | None
    test_accuracy: float | None
    seconds: float
    edges: int | None = None


@dataclass
class ModelResult:
    """A trained model and its numbers, at the epoch chosen on validation (else the last)."""

    name: str
    model: nn.Module
    test_accuracy: float | None
    val_accuracy: float | None
    best_epoch: int
    params: int
    seconds: float
    epochs: list[EpochRecord] = field(default_factory=list)
    rounds: list[TopologyChange] = field(default_factory=list)
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
