"""The training loop's state at a batch boundary, and the checks a loaded one must pass.

Algorithm 1 interleaves weight training and topology steps, so a faithful resume needs more than
the weights: the graph (the model's ``mask`` buffer), Adam's moments, the shuffle generator, the
topology rule's state (FreeEvolve's count of unchanged rounds) and generator, the best-on-validation
model so far and the records of every epoch and round. :class:`FitState` holds all of it at a batch
boundary. :func:`check_result` checks the other
state a run's checkpoint holds, a finished model's record. A value read from a file is checked
field by field before training trusts it; the file itself is :mod:`freenets.training.checkpoint`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch

from freenets.errors import CheckpointError

__all__ = ["RESULT_KEYS", "FitState", "check_result"]


# ---------------------------------------------------------------------- validation helpers


def _fail(where: str, message: str) -> CheckpointError:
    return CheckpointError(f"the checkpoint's {where} {message}")


def _integer(value: Any, where: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(where, f"must be an integer, not {type(value).__name__}")
    if value < low or (high is not None and value > high):
        raise _fail(where, f"is {value}, outside [{low}, {high if high is not None else 'inf'}]")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(where, "must be a number")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise _fail(where, "must be a finite number")
    return number


def _tensors(value: Any, where: str) -> dict[str, torch.Tensor]:
    if not isinstance(value, dict) or not all(
        isinstance(key, str) and isinstance(item, torch.Tensor) for key, item in value.items()
    ):
        raise _fail(where, "must map names to tensors")
    return value


def _records(value: Any, where: str, count: int | None = None) -> list[dict[str, Any]]:
    """A list of records: dicts from names to numbers, ``None`` or lists of numbers."""

    def plain(item: Any) -> bool:
        if isinstance(item, list):
            return all(isinstance(v, (int, float)) for v in item)
        return item is None or isinstance(item, (int, float))

    if not isinstance(value, list) or (count is not None and len(value) != count):
        raise _fail(where, f"must be a list of {count if count is not None else 'some'} records")
    for record in value:
        if not isinstance(record, dict) or not all(
            isinstance(key, str) and plain(item) for key, item in record.items()
        ):
            raise _fail(where, "must hold records of numbers")
    return value


# ---------------------------------------------------------------------- the training loop's state


@dataclass
class FitState:
    """Everything :func:`freenets.training.loop.fit` needs to go on, taken at a batch boundary.

    ``epoch`` epochs are complete and ``position`` samples of the next one are trained, in the
    shuffled ``order`` drawn at its start (``None`` when ``position`` is 0).
    """

    epoch: int
    position: int
    order: torch.Tensor | None
    loss_total: float
    skipped_steps: int  # batches whose optimiser step a rule's change replaced (RigL)
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    shuffle: torch.Tensor  # torch.Generator.get_state() of the shuffling generator
    rule: dict[str, Any] | None  # the topology rule's state_dict(); None for a model without one
    rule_generator: torch.Tensor | None  # get_state() of the rule's generator
    best_val: float
    best_epoch: int
    best_test: float
    best_model: dict[str, torch.Tensor] | None
    epochs: list[dict[str, Any]]
    rounds: list[dict[str, Any]]
    masks: (
        torch.Tensor | None
    )  # (rounds + 1, k, k) bool: the graph at the start and after each round
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """The state as a dict of plain values and tensors, for ``torch.save``."""
        return {item.name: getattr(self, item.name) for item in fields(self)}

    @classmethod
    def from_dict(cls, data: Any, *, epochs: int, n_train: int) -> FitState:
        """Check ``data`` against a run of ``epochs`` epochs on ``n_train`` samples."""
        names = {item.name for item in fields(cls)}
        if not isinstance(data, dict) or set(data) != names:
            raise CheckpointError("the checkpoint's training state has missing or unknown fields")
        epoch = _integer(data["epoch"], "epoch", 0, epochs)
        position = _integer(data["position"], "position", 0, n_train - 1)
        order = data["order"]
        if position == 0:
            if order is not None:
                raise _fail("order", "must be empty at the start of an epoch")
        elif not (
            isinstance(order, torch.Tensor)
            and order.dtype == torch.int64
            and order.shape == (n_train,)
            and torch.equal(order.sort().values, torch.arange(n_train))
        ):
            raise _fail("order", f"must be a permutation of the {n_train} training samples")
        if not isinstance(data["optimizer"], dict):
            raise _fail("optimizer", "must be a dict")
        shuffle = data["shuffle"]
        if not (isinstance(shuffle, torch.Tensor) and shuffle.dtype == torch.uint8):
            raise _fail("shuffle", "must be a generator state (a uint8 tensor)")
        rule, rule_generator = data["rule"], data["rule_generator"]
        if rule is not None and not (
            isinstance(rule, dict) and all(isinstance(key, str) for key in rule)
        ):
            raise _fail("rule state", "must map names to values")
        if rule_generator is not None and not (
            isinstance(rule_generator, torch.Tensor) and rule_generator.dtype == torch.uint8
        ):
            raise _fail("rule generator", "must be a generator state (a uint8 tensor)")
        best_model = data["best_model"]
        best = (
            _number(data["best_val"], "best_val"),
            _integer(data["best_epoch"], "best_epoch", 0, epoch),
            _number(data["best_test"], "best_test"),
        )
        # Without validation data nothing is selected: no best model, at any epoch.
        if epoch == 0 or best_model is None:
            if best_model is not None or best != (-1.0, 0, 0.0):
                raise _fail("best model", "must not exist before the first epoch ends")
        elif best[1] < 1 or not (best[0] <= 1 and best[2] <= 1):
            raise _fail("best model", "must have an epoch and scores of at most 1")
        return cls(
            epoch=epoch,
            position=position,
            order=order,
            loss_total=_number(data["loss_total"], "loss_total"),
            skipped_steps=_integer(data["skipped_steps"], "skipped_steps", 0),
            model=_tensors(data["model"], "model"),
            optimizer=data["optimizer"],
            shuffle=shuffle,
            rule=rule,
            rule_generator=rule_generator,
            best_val=best[0],
            best_epoch=best[1],
            best_test=best[2],
            best_model=None if best_model is None else _tensors(best_model, "best model"),
            epochs=_records(data["epochs"], "epochs", epoch),
            rounds=_records(data["rounds"], "rounds"),
            masks=_masks(data["masks"], len(data["rounds"])),
            seconds=_number(data["seconds"], "seconds"),
        )


def _masks(value: Any, rounds: int) -> torch.Tensor | None:
    """The graphs before and after each round: ``None`` or ``(rounds + 1, k, k)`` bool."""
    if value is None:
        return None
    if not (
        isinstance(value, torch.Tensor)
        and value.dtype == torch.bool
        and value.dim() == 3
        and value.shape[0] == rounds + 1
        and value.shape[1] == value.shape[2]
    ):
        raise _fail("masks", f"must be {rounds + 1} square bool matrices")
    return value


RESULT_KEYS = (
    "model",
    "test_accuracy",
    "val_accuracy",
    "best_epoch",
    "params",
    "seconds",
    "epochs",
    "rounds",
    "masks",
    "extra",
)


def check_result(data: Any) -> dict[str, Any]:
    """Check a finished model's record (see ``freenets.training.train.result_state``)."""
    if not isinstance(data, dict) or set(data) != set(RESULT_KEYS):
        raise CheckpointError("the checkpoint's finished FreeEvolve result is incomplete")
    _tensors(data["model"], "FreeEvolve model")
    for key in ("test_accuracy", "val_accuracy", "seconds"):
        _number(data[key], key)
    _integer(data["best_epoch"], "best_epoch", 1)
    _integer(data["params"], "params", 1)
    _records(data["epochs"], "FreeEvolve epochs")
    _masks(data["masks"], len(_records(data["rounds"], "FreeEvolve rounds")))
    extra = data["extra"]
    if not isinstance(extra, dict) or not all(
        isinstance(key, str) and (item is None or isinstance(item, (bool, int, float, str)))
        for key, item in extra.items()
    ):
        raise _fail("FreeEvolve summary", "must map names to numbers")
    return data
