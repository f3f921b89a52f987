"""Training FreeEvolve (Algorithm 1) and its FCNN baseline, with model selection on validation.

Algorithm 1 alternates weight training and FreeEvolve: each round trains ``epochs_per_round``
epochs, computes NCAM/NCIM on the training data, and updates the graph. Once the graph has not
changed for ``patience`` rounds it has converged; it is frozen and weight training goes on to
``epochs``. The reported test accuracy is the one at the epoch with the best validation accuracy.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from freenets import graph
from freenets.baselines import FCNN, matching_width
from freenets.data import Dataset, Split, validation_split
from freenets.evolve import Evolver, theorem2_holds
from freenets.model import FreeNet
from freenets.stats import coactivation


class ConfigError(ValueError):
    """A configuration value a user gave is out of range."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; saved as ``config.json`` in the run directory."""

    dataset: str = "digits"
    data_dir: str | None = None
    train_size: int | None = None  # keep this many training samples (stratified, fixed subset)
    target: str | None = None  # the label column of a .csv dataset
    n_neurons: int = 50
    epsilon: float = 0.25
    epochs: int = 30
    epochs_per_round: int = 1
    patience: int = 3
    batch_size: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 0.0
    readd: str = "restore"
    val_fraction: float = 0.1
    bias_bound: float = 0.1
    seed: int = 0

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first value out of range."""
        checks = [
            (
                self.train_size is None or self.train_size >= 1,
                f"--train-size must be at least 1, got {self.train_size}",
            ),
            (self.n_neurons >= 1, f"--neurons must be at least 1, got {self.n_neurons}"),
            (0.0 < self.epsilon < 1.0, f"--epsilon must lie in (0, 1), got {self.epsilon}"),
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}"),
            (self.epochs_per_round >= 1, "epochs_per_round must be at least 1"),
            (self.patience >= 1, f"patience must be at least 1, got {self.patience}"),
            (self.batch_size >= 1, f"batch_size must be at least 1, got {self.batch_size}"),
            (
                math.isfinite(self.learning_rate) and self.learning_rate > 0,
                f"learning_rate must be a positive number, got {self.learning_rate}",
            ),
            (self.weight_decay >= 0, "weight_decay must be non-negative"),
            (self.readd in ("restore", "zero"), "readd must be 'restore' or 'zero'"),
            (0.0 < self.val_fraction < 1.0, "val_fraction must lie in (0, 1)"),
            (self.bias_bound >= 0, "bias_bound must be non-negative"),
            (self.seed >= 0, f"--seed must be non-negative, got {self.seed}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def to_dict(self) -> dict[str, Any]:
        """The configuration as a JSON-ready dict."""
        return asdict(self)


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


Progress = Callable[[str, int, dict[str, Any]], None]


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


def _train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    penalty: Callable[[], torch.Tensor] | None,
) -> float:
    model.train()
    order = torch.randperm(x.shape[0], generator=generator)
    loss_fn = nn.CrossEntropyLoss()
    total, seen = 0.0, 0
    for start in range(0, x.shape[0], batch_size):
        index = order[start : start + batch_size]
        loss = loss_fn(model(x[index]), y[index])
        objective = loss + penalty() if penalty is not None else loss
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        optimizer.step()
        total += float(loss.detach()) * index.numel()
        seen += index.numel()
    return total / seen


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam; a FreeNet's ``weight`` gets no decoupled decay (its L2 is masked, in the loss)."""
    if isinstance(model, FreeNet):
        others = [p for name, p in model.named_parameters() if name != "weight"]
        groups = [
            {"params": others, "weight_decay": config.weight_decay},
            {"params": [model.weight], "weight_decay": 0.0},
        ]
        return torch.optim.Adam(groups, lr=config.learning_rate)
    return torch.optim.Adam(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )


def _generators(seed: int) -> tuple[torch.Generator, torch.Generator]:
    """Independent generators for initialisation and for shuffling, both fixed by ``seed``."""
    return torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 7919)


def fit(
    name: str,
    model: nn.Module,
    split: Split,
    test: tuple[torch.Tensor, torch.Tensor],
    config: TrainConfig,
    shuffle: torch.Generator,
    *,
    evolver_factory: Callable[[torch.optim.Optimizer], Evolver] | None = None,
    progress: Progress | None = None,
) -> ModelResult:
    """Train ``model`` for ``config.epochs`` epochs, evolving its graph if an evolver is given.

    The model returned holds the weights (and graph) of the epoch with the best validation
    accuracy; its test accuracy is the one measured at that epoch.
    """
    optimizer = _optimizer(model, config)
    evolver = evolver_factory(optimizer) if evolver_factory is not None else None
    penalty = None
    if isinstance(model, FreeNet) and config.weight_decay > 0:
        # L2 on active edges only: the gradient of masked weights stays exactly zero.
        def penalty() -> torch.Tensor:
            return 0.5 * config.weight_decay * (model.weight * model.mask).pow(2).sum()

    started = time.perf_counter()
    best_state: dict[str, torch.Tensor] | None = None
    best = (-1.0, 0, 0.0)  # (val accuracy, epoch, test accuracy)
    epochs: list[EpochRecord] = []
    rounds: list[RoundRecord] = []
    masks = [model.mask.detach().cpu().clone()] if evolver is not None else []
    for epoch in range(1, config.epochs + 1):
        epoch_start = time.perf_counter()
        loss = _train_epoch(
            model, optimizer, split.x_train, split.y_train, config.batch_size, shuffle, penalty
        )
        if not math.isfinite(loss):
            raise FloatingPointError(f"{name}: training loss became {loss} at epoch {epoch}")
        if evolver is not None and not evolver.converged and epoch % config.epochs_per_round == 0:
            round_start = time.perf_counter()
            step = evolver.step(split.x_train)
            rounds.append(
                RoundRecord(
                    round=len(rounds) + 1,
                    epoch=epoch,
                    edges=step.edges,
                    added=step.added,
                    pruned=step.pruned,
                    prune_values=step.prune_values,
                    aug_values=step.aug_values,
                    seconds=round(time.perf_counter() - round_start, 4),
                )
            )
            masks.append(model.mask.detach().cpu().clone())
        val_accuracy = accuracy(model, split.x_val, split.y_val)
        test_accuracy = accuracy(model, *test)
        edges = model.n_edges if isinstance(model, FreeNet) else None
        epochs.append(
            EpochRecord(
                epoch=epoch,
                train_loss=loss,
                val_accuracy=val_accuracy,
                test_accuracy=test_accuracy,
                seconds=round(time.perf_counter() - epoch_start, 4),
                edges=edges,
            )
        )
        if val_accuracy > best[0]:
            best = (val_accuracy, epoch, test_accuracy)
            best_state = copy.deepcopy(model.state_dict())
        if progress is not None:
            info: dict[str, Any] = {"loss": loss, "val": val_accuracy}
            if edges is not None:
                info["edges"] = edges
            progress(name, epoch, info)
    assert best_state is not None
    model.load_state_dict(best_state)
    params = (
        model.effective_params()
        if isinstance(model, (FreeNet, FCNN))
        else sum(p.numel() for p in model.parameters())
    )
    return ModelResult(
        name=name,
        model=model,
        test_accuracy=best[2],
        val_accuracy=best[0],
        best_epoch=best[1],
        params=params,
        seconds=time.perf_counter() - started,
        epochs=epochs,
        rounds=rounds,
        masks=masks,
        extra={"converged": evolver.converged} if evolver is not None else {},
    )


def train_freeevolve(
    dataset: Dataset, split: Split, config: TrainConfig, progress: Progress | None = None
) -> ModelResult:
    """Algorithm 1 on a dense FreeNet, then weight training on the frozen graph."""
    init, shuffle = _generators(config.seed)
    model = FreeNet(
        dataset.n_features,
        config.n_neurons,
        dataset.n_classes,
        bias_bound=config.bias_bound,
        generator=init,
    )

    def evolver_factory(optimizer: torch.optim.Optimizer) -> Evolver:
        return Evolver(
            model,
            config.epsilon,
            optimizer=optimizer,
            readd=config.readd,  # type: ignore[arg-type]
            patience=config.patience,
        )

    result = fit(
        "freeevolve",
        model,
        split,
        (dataset.x_test, dataset.y_test),
        config,
        shuffle,
        evolver_factory=evolver_factory,
        progress=progress,
    )
    # Theorem 2 at the chosen model: Aug and not Prune must already be edges at a fixed point.
    ncam, ncim = coactivation(model, split.x_train)
    converged_round = next((r.round for r in result.rounds if r.added == 0 and r.pruned == 0), None)
    result.extra.update(
        {
            "edges": model.n_edges,
            "density": round(graph.density(model.mask), 6),
            "rounds": len(result.rounds),
            "first_unchanged_round": converged_round,
            "theorem2_holds": theorem2_holds(model.mask, ncam, ncim, config.epsilon),
        }
    )
    return result


def train_fcnn(
    dataset: Dataset,
    split: Split,
    config: TrainConfig,
    target_params: int,
    progress: Progress | None = None,
) -> ModelResult:
    """The one-hidden-layer baseline with as many parameters as ``target_params``."""
    init, shuffle = _generators(config.seed)
    width = matching_width(dataset.n_features, dataset.n_classes, target_params)
    model = FCNN(
        dataset.n_features, width, dataset.n_classes, bias_bound=config.bias_bound, generator=init
    )
    result = fit(
        "fcnn", model, split, (dataset.x_test, dataset.y_test), config, shuffle, progress=progress
    )
    result.extra.update(
        {
            "hidden": width.hidden,
            "partial_inputs": width.partial_inputs,
            "param_gap": round((result.params - target_params) / target_params, 6),
        }
    )
    return result


def run_pair(
    dataset: Dataset, config: TrainConfig, progress: Progress | None = None
) -> tuple[ModelResult, ModelResult]:
    """FreeEvolve, then the FCNN matched to its effective parameters, on the same split."""
    config.validate()
    split = validation_split(dataset.x_train, dataset.y_train, config.val_fraction, config.seed)
    freeevolve = train_freeevolve(dataset, split, config, progress)
    fcnn = train_fcnn(dataset, split, config, freeevolve.params, progress)
    return freeevolve, fcnn
