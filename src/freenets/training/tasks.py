"""What the training loop minimises and how it scores a model: classification or regression.

The paper trains classifiers with cross-entropy and reports accuracy (section 5); the regression
task (mean squared error, R^2) serves :class:`freenets.FreeNetRegressor`. A classification loss far
above that of a uniform guess means the run has diverged, even while it is finite.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["CLASSIFICATION", "DIVERGENCE_FACTOR", "REGRESSION", "Task", "accuracy", "r2_score"]

# A batch loss this many times the loss of a uniform guess (ln of the number of classes) means the
# logits have blown up: the run has diverged even while the numbers are still finite.
DIVERGENCE_FACTOR = 1e4


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 4096) -> float:
    """Fraction of samples whose arg-max output is the label."""
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, x.shape[0], batch_size):
        logits = model(x[start : start + batch_size])
        correct += int((logits.argmax(dim=1) == y[start : start + batch_size]).sum())
    model.train(was_training)
    return correct / max(1, x.shape[0])


@torch.no_grad()
def r2_score(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 4096) -> float:
    """R^2 of the outputs against ``y`` of shape ``(n, outputs)``, averaged over the outputs."""
    was_training = model.training
    model.eval()
    outputs = torch.cat([model(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)])
    model.train(was_training)
    targets = y.to(torch.float64)
    residual = (targets - outputs.to(torch.float64)).pow(2).sum(dim=0)
    spread = (targets - targets.mean(dim=0)).pow(2).sum(dim=0).clamp_min(1e-12)
    return float((1.0 - residual / spread).mean())


@dataclass(frozen=True)
class Task:
    """What :func:`fit` minimises and how it scores a model on validation and test data.

    Attributes
    ----------
    name : {"classification", "regression"}
        Classification bounds the batch loss by ``DIVERGENCE_FACTOR`` times ln(classes);
        regression only refuses a loss that is not finite.
    loss : callable
        ``loss(outputs, targets)``, the training objective.
    score : callable
        ``score(model, x, y)``, higher is better: accuracy, or R^2.
    """

    name: str
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    score: Callable[[nn.Module, torch.Tensor, torch.Tensor], float]

    def loss_bound(self, targets: torch.Tensor) -> float:
        """The largest batch loss that does not count as divergence."""
        if self.name != "classification":
            return math.inf
        return DIVERGENCE_FACTOR * math.log(max(2, int(targets.max()) + 1))


CLASSIFICATION = Task("classification", nn.functional.cross_entropy, accuracy)
REGRESSION = Task("regression", nn.functional.mse_loss, r2_score)
