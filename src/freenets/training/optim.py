"""The optimiser of the training loop (paper, section 5, "Model and Training setup"): Adam, its
step size over the epochs, and loading its state and the model's from a checkpoint, checked so
that a resumed step cannot fail half way.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import nn

from freenets import graph
from freenets.model import FreeNet
from freenets.training.config import TrainConfig

__all__ = ["adam", "default_optimizer", "learning_rate", "load_optimizer", "load_weights"]


def default_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam; a FreeNet's ``weight`` gets no decoupled decay (its L2 is masked, in the loss)."""
    if isinstance(model, FreeNet):
        others = [p for name, p in model.named_parameters() if name != "weight"]
        groups: list[dict[str, Any]] = [
            {"params": others, "weight_decay": config.optim.weight_decay},
            {"params": [model.weight], "weight_decay": 0.0},
        ]
    else:
        groups = [{"params": list(model.parameters()), "weight_decay": config.optim.weight_decay}]
    return adam(groups, config.optim.learning_rate)


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
    if config.optim.schedule == "constant":
        return config.optim.learning_rate
    return (
        config.optim.learning_rate
        * 0.5
        * (1.0 + math.cos(math.pi * (epoch - 1) / config.optim.epochs))
    )


_ADAM_STATE = {"step", "exp_avg", "exp_avg_sq"}
_SCHEDULED = {"params", "lr"}  # not settings to compare: the parameters' ids, the scheduled step


def load_optimizer(optimizer: torch.optim.Optimizer, saved: dict[str, Any], steps: int) -> None:
    """``load_state_dict`` for the Adam of :func:`default_optimizer`, checked so a step cannot fail.

    The settings come from the run's config, so the saved ones must be the same (the step size
    follows the schedule, and is set again at the next epoch); every moment must have its
    parameter's shape and dtype, and the step count must be ``steps``.

    Raises
    ------
    ValueError
        If the saved state does not fit ``optimizer``.
    """
    settings = [{k: v for k, v in g.items() if k not in _SCHEDULED} for g in optimizer.param_groups]
    groups = saved.get("param_groups")
    if not isinstance(groups, list) or len(groups) != len(settings):
        raise ValueError("the optimiser's parameter groups differ")
    for group, expected in zip(groups, settings, strict=True):
        if not isinstance(group, dict):
            raise ValueError("the optimiser's settings differ from the config's")
        found = {k: v for k, v in group.items() if k not in _SCHEDULED}
        # Types too: 0 == False, but torch's fused Adam refuses an amsgrad of 0 mid-step.
        if found != expected or any(type(found[k]) is not type(v) for k, v in expected.items()):
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


def load_weights(model: nn.Module, saved: dict[str, torch.Tensor]) -> None:
    """``load_state_dict``, refusing any change of name, shape or dtype, and masks that are no DAG.

    Raises
    ------
    ValueError
        If the saved tensors do not fit ``model``, or a FreeNet's mask is not a DAG.
    """
    layout = {key: (value.shape, value.dtype) for key, value in model.state_dict().items()}
    if {key: (value.shape, value.dtype) for key, value in saved.items()} != layout:
        raise ValueError("the saved tensors' names, shapes or types differ from the model's")
    if isinstance(model, FreeNet):
        graph.check_mask(saved["mask"], model.n_neurons)
    model.load_state_dict(saved)
