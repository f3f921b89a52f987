"""The training loop of Algorithm 1, with model selection on validation, checkpoints and stops.

Algorithm 1 alternates weight training and FreeEvolve: each round trains ``epochs_per_round``
epochs, computes NCAM/NCIM on the training data, and updates the graph. Once the graph has not
changed for ``patience`` rounds it has converged; it is frozen and weight training goes on to
``epochs``. The reported test accuracy is the one at the epoch with the best validation accuracy.

:func:`fit` hands its state (a :class:`~freenets.training.checkpoint.FitState`) to a checkpoint hook after
every epoch, stops after any batch when asked, and goes on from such a state to the same result,
bit for bit, as a run never stopped. A loss that turns NaN or infinite, or explodes, ends training
with :class:`TrainingFailed`.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from freenets import graph
from freenets.data import Split
from freenets.errors import CheckpointError, Interrupted, TrainingFailed
from freenets.model import FreeNet
from freenets.rules.freeevolve import EvolveStep
from freenets.training.checkpoint import FitState, one_line
from freenets.training.config import TrainConfig
from freenets.training.evolver import Evolver
from freenets.training.records import EpochRecord, ModelResult, RoundRecord

# A batch loss this many times the loss of a uniform guess (ln of the number of classes) means the
# logits have blown up: the run has diverged even while the numbers are still finite.
DIVERGENCE_FACTOR = 1e4


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


def _train_batch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    penalty: Callable[[], torch.Tensor] | None,
) -> float:
    """One optimiser step on a batch; returns the batch's cross-entropy."""
    loss = nn.functional.cross_entropy(model(x), y)
    objective = loss + penalty() if penalty is not None else loss
    optimizer.zero_grad(set_to_none=True)
    objective.backward()
    optimizer.step()
    return float(loss.detach())


def _finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam; a FreeNet's ``weight`` gets no decoupled decay (its L2 is masked, in the loss)."""
    if isinstance(model, FreeNet):
        others = [p for name, p in model.named_parameters() if name != "weight"]
        groups: list[dict[str, Any]] = [
            {"params": others, "weight_decay": config.weight_decay},
            {"params": [model.weight], "weight_decay": 0.0},
        ]
    else:
        groups = [{"params": list(model.parameters()), "weight_decay": config.weight_decay}]
    return adam(groups, config.learning_rate)


def adam(groups: list[dict[str, Any]], lr: float) -> torch.optim.Adam:
    """Adam, fused into one kernel per step where this torch and device have it.

    The fused step does the same arithmetic in one pass instead of a dozen ``foreach`` passes; at
    the small batches of the paper's networks it is a fifth of a training step on the CPU.
    """
    devices = {p.device.type for group in groups for p in group["params"]}
    try:
        if devices <= {"cpu", "cuda"} and all(
            p.is_floating_point() for group in groups for p in group["params"]
        ):
            return torch.optim.Adam(groups, lr=lr, fused=True)
    except (RuntimeError, ValueError, TypeError):  # an older torch without this device's kernel
        pass
    return torch.optim.Adam(groups, lr=lr)


def learning_rate(config: TrainConfig, epoch: int) -> float:
    """The step size of ``epoch`` (from 1): constant, or cosine-decayed towards 0 at the end."""
    if config.schedule == "constant":
        return config.learning_rate
    return config.learning_rate * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / config.epochs))


def _restore(
    name: str,
    state: FitState,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    shuffle: torch.Generator,
    evolver: Evolver | None,
    steps: int,
) -> tuple[list[EpochRecord], list[RoundRecord]]:
    """Load ``state`` into the training objects; raise CheckpointError where it does not fit.

    ``steps`` is the number of optimiser steps (batches) the state has been through.
    """
    try:
        load_weights(model, state.model)
        if state.best_model is not None:
            load_weights(copy.deepcopy(model), state.best_model)
        _load_optimizer(optimizer, state.optimizer, steps)
        shuffle.set_state(state.shuffle)
        epochs = [EpochRecord(**record) for record in state.epochs]
        rounds = [RoundRecord(**record) for record in state.rounds]
        if evolver is not None:
            if state.unchanged_steps is None:
                raise ValueError("FreeEvolve's count of unchanged rounds is missing")
            evolver.rule.unchanged_rounds = state.unchanged_steps
            evolver.rule.history = [
                EvolveStep(r.edges, r.added, r.pruned, bool(r.added or r.pruned)) for r in rounds
            ]
    except (RuntimeError, ValueError, TypeError, KeyError, IndexError, AttributeError) as error:
        raise CheckpointError(
            f"the checkpoint does not fit the {name} model: {one_line(error)}"
        ) from None
    return epochs, rounds


def _load_optimizer(optimizer: torch.optim.Optimizer, saved: dict[str, Any], steps: int) -> None:
    """``load_state_dict`` for the Adam of :func:`_optimizer`, checked so that a step cannot fail.

    The settings come from the run's config, so the saved ones must be the same (the step size
    follows the schedule, and is set again at the next epoch); every moment
    must have its parameter's shape and dtype, and the step count must be ``steps``.
    """
    settings = [{k: v for k, v in g.items() if k not in _SCHEDULED} for g in optimizer.param_groups]
    groups = saved.get("param_groups")
    if not isinstance(groups, list) or len(groups) != len(settings):
        raise ValueError("the optimiser's parameter groups differ")
    for group, expected in zip(groups, settings, strict=True):
        if not isinstance(group, dict) or {
            k: v for k, v in group.items() if k not in _SCHEDULED
        } != (expected):
            raise ValueError("the optimiser's settings differ from the config's")
    with warnings.catch_warnings():  # torch warns about some malformed states before failing
        warnings.simplefilter("ignore")
        optimizer.load_state_dict(saved)
    for parameter in (p for group in optimizer.param_groups for p in group["params"]):
        moments = optimizer.state.get(parameter, {})
        if not isinstance(moments, dict) or (moments and set(moments) != _ADAM_STATE):
            raise ValueError("the optimiser's state is not Adam's")
        for key, value in moments.items():
            if not isinstance(value, torch.Tensor):
                raise ValueError(f"the optimiser's {key!r} is not a tensor")
            if key == "step":
                fits = value.shape == () and value.is_floating_point() and value.item() == steps
            else:
                fits = (value.shape, value.dtype) == (parameter.shape, parameter.dtype)
            if not fits:
                raise ValueError(f"the optimiser's {key!r} does not fit its parameter")


_ADAM_STATE = {"step", "exp_avg", "exp_avg_sq"}
_SCHEDULED = {"params", "lr"}  # not settings to compare: the parameters' ids, the scheduled step


def load_weights(model: nn.Module, saved: dict[str, torch.Tensor]) -> None:
    """``load_state_dict``, refusing any change of name, shape or dtype, and masks that are no DAG."""
    layout = {key: (value.shape, value.dtype) for key, value in model.state_dict().items()}
    if {key: (value.shape, value.dtype) for key, value in saved.items()} != layout:
        raise ValueError("the saved tensors' names, shapes or types differ from the model's")
    if isinstance(model, FreeNet):
        graph.check_mask(saved["mask"], model.n_neurons)
    model.load_state_dict(saved)


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
    state: FitState | None = None,
    checkpoint: Callable[[FitState], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ModelResult:
    """Train ``model`` for ``config.epochs`` epochs, evolving its graph if an evolver is given.

    The model returned holds the weights (and graph) of the epoch with the best validation
    accuracy; its test accuracy is the one measured at that epoch.

    Parameters
    ----------
    state : FitState, optional
        Where an earlier call stopped; training goes on from there with the same result, bit for
        bit, as if it had never stopped.
    checkpoint : callable, optional
        Called with the :class:`FitState` after every epoch, and before stopping.
    should_stop : callable, optional
        Asked after every batch; once it returns True, training hands its state to
        ``checkpoint`` and raises :class:`Interrupted`.

    Raises
    ------
    TrainingFailed
        If a batch loss is NaN, infinite or over ``DIVERGENCE_FACTOR`` times ln(classes), or a
        parameter stops being finite.
    """
    optimizer = _optimizer(model, config)
    evolver = evolver_factory(optimizer) if evolver_factory is not None else None
    penalty = None
    if isinstance(model, FreeNet) and config.weight_decay > 0:
        # L2 on active edges only: the gradient of masked weights stays exactly zero.
        def penalty() -> torch.Tensor:
            return 0.5 * config.weight_decay * (model.weight * model.mask).pow(2).sum()

    n_train = split.x_train.shape[0]
    limit = DIVERGENCE_FACTOR * math.log(max(2, int(split.y_train.max()) + 1))
    best_state: dict[str, torch.Tensor] | None = None
    best = (-1.0, 0, 0.0)  # (val accuracy, epoch, test accuracy)
    epochs: list[EpochRecord] = []
    rounds: list[RoundRecord] = []
    masks = [model.mask.detach().cpu().clone()] if evolver is not None else []
    done, position, order, loss_total, earlier = 0, 0, None, 0.0, 0.0
    if state is not None:
        if state.masks is not None:
            masks = [mask.clone() for mask in state.masks]
        batches = math.ceil(n_train / config.batch_size)
        steps = state.epoch * batches + math.ceil(state.position / config.batch_size)
        epochs, rounds = _restore(name, state, model, optimizer, shuffle, evolver, steps)
        best, best_state = (state.best_val, state.best_epoch, state.best_test), state.best_model
        done, position, order = state.epoch, state.position, state.order
        loss_total, earlier = state.loss_total, state.seconds
    started = time.perf_counter()

    def snapshot() -> FitState:
        return FitState(
            epoch=done,
            position=position,
            order=order if position else None,
            loss_total=loss_total,
            model=model.state_dict(),
            optimizer=optimizer.state_dict(),
            shuffle=shuffle.get_state(),
            unchanged_steps=evolver.unchanged_steps if evolver is not None else None,
            best_val=best[0],
            best_epoch=best[1],
            best_test=best[2],
            best_model=best_state,
            epochs=[asdict(record) for record in epochs],
            rounds=[asdict(record) for record in rounds],
            masks=torch.stack(masks) if masks else None,
            seconds=earlier + time.perf_counter() - started,
        )

    def stopping() -> bool:
        return done < config.epochs and should_stop is not None and should_stop()

    while done < config.epochs:
        epoch = done + 1
        epoch_start = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, epoch)
        if order is None:
            order = torch.randperm(n_train, generator=shuffle)
            loss_total = 0.0
        model.train()
        while position < n_train:
            index = order[position : position + config.batch_size]
            loss = _train_batch(
                model, optimizer, split.x_train[index], split.y_train[index], penalty
            )
            if not loss <= limit:  # NaN compares False too
                batch = position // config.batch_size + 1
                raise TrainingFailed(
                    name,
                    f"the training loss became {loss:.4g} at epoch {epoch}, "
                    f"batch {batch} (a smaller learning rate may help)",
                )
            loss_total += loss * index.numel()
            position += index.numel()
            if position < n_train and stopping():
                if checkpoint is not None:
                    checkpoint(snapshot())
                raise Interrupted(f"{name} stopped in epoch {epoch}")
        loss = loss_total / n_train
        if not _finite(model):
            raise TrainingFailed(name, f"a weight became NaN or infinite in epoch {epoch}")
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
        done, position, order = epoch, 0, None
        if checkpoint is not None:
            checkpoint(snapshot())
        if progress is not None:
            info: dict[str, Any] = {"loss": loss, "val": val_accuracy}
            if edges is not None:
                info["edges"] = edges
            progress(name, epoch, info)
        if stopping():
            raise Interrupted(f"{name} stopped after epoch {epoch}")
    assert best_state is not None
    model.load_state_dict(best_state)
    # FreeNet and FCNN count only the parameters in use (active edges, inputs read).
    effective = getattr(model, "effective_params", None)
    params = effective() if effective else sum(p.numel() for p in model.parameters())
    return ModelResult(
        name=name,
        model=model,
        test_accuracy=best[2],
        val_accuracy=best[0],
        best_epoch=best[1],
        params=params,
        seconds=earlier + time.perf_counter() - started,
        epochs=epochs,
        rounds=rounds,
        masks=masks,
        extra={"converged": evolver.converged} if evolver is not None else {},
    )
