"""Checkpoints of a training run, so that Algorithm 1 resumes exactly where it stopped.

Algorithm 1 interleaves weight training and topology steps, so a faithful resume needs more than
the weights: the graph (the model's ``mask`` buffer), Adam's moments, the shuffle generator, the
topology rule's state (FreeEvolve's count of unchanged rounds) and generator, the best-on-validation
model so far and the records of every epoch and round. :class:`FitState` holds all of it at a batch
boundary. A training state of the first layout, which kept FreeEvolve's count as
``unchanged_steps``, is read as the same state in this one. A checkpoint file is
``torch.save`` of plain containers, numbers, strings and tensors, loaded with ``weights_only=True``,
and carries a SHA-256 over its contents: ``torch.load`` itself loads many damaged files silently.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from freenets import atomic
from freenets.errors import CheckpointError

FORMAT = 1
CHECKPOINT_NAME = "checkpoint.pt"
PHASES = ("freeevolve", "fcnn")


def one_line(error: BaseException) -> str:
    """An exception's message with its whitespace (newlines included) collapsed."""
    return " ".join(str(error).split()) or type(error).__name__


# ---------------------------------------------------------------------- contents and checksum


def _feed(hasher: Any, value: Any) -> None:
    """Feed ``value`` to ``hasher`` with a type tag before every item, in a fixed order."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        hasher.update(f"T{tensor.dtype}{tuple(tensor.shape)}".encode())
        hasher.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        hasher.update(f"D{len(value)}".encode())
        for key, item in value.items():
            _feed(hasher, key)
            _feed(hasher, item)
    elif isinstance(value, (list, tuple)):
        hasher.update(f"{'L' if isinstance(value, list) else 'U'}{len(value)}".encode())
        for item in value:
            _feed(hasher, item)
    elif isinstance(value, str):
        data = value.encode("utf-8")
        hasher.update(f"S{len(data)}:".encode() + data)
    elif value is None or isinstance(value, bool):
        hasher.update(f"N{value}".encode())
    elif isinstance(value, int):
        hasher.update(f"I{value};".encode())
    elif isinstance(value, float):
        hasher.update(f"F{value.hex()};".encode())
    else:
        raise TypeError(f"a checkpoint cannot hold a {type(value).__name__}")


def digest(value: Any) -> str:
    """SHA-256 of nested dicts, lists, tuples, strings, numbers, ``None`` and tensors."""
    hasher = hashlib.sha256()
    _feed(hasher, value)
    return hasher.hexdigest()


def save_checkpoint(path: str | Path, body: dict[str, Any]) -> None:
    """Atomically write ``body`` with its checksum; read it back with :func:`load_checkpoint`."""
    atomic.torch_save(path, {"format": FORMAT, "sha256": digest(body), "body": body})


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` and verify its checksum.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    CheckpointError
        If the file cannot be read, is not a checkpoint, or its contents do not match the checksum.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, "No such file", str(path))
    try:
        with warnings.catch_warnings():  # a damaged file may also warn; the error says it all
            warnings.simplefilter("ignore")
            saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load on damaged bytes raises many kinds of error
        raise CheckpointError(f"{path} is damaged and cannot be read ({one_line(error)})") from None
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a freenets checkpoint of format {FORMAT}")
    body = saved.get("body")
    try:
        intact = isinstance(body, dict) and digest(body) == saved.get("sha256")
    except (TypeError, ValueError, RuntimeError, UnicodeError):
        intact = False
    if not (intact and isinstance(body, dict)):
        raise CheckpointError(f"{path} is damaged: its contents do not match its checksum")
    return body


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
        if isinstance(data, dict) and set(data) == _LEGACY_FIELDS:
            data = _from_legacy(data)
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


# The first layout kept FreeEvolve's count of unchanged rounds in its own field, and no generator
# for the rule: FreeEvolve draws no random numbers, so a fresh one is exactly where it would be.
_LEGACY_FIELDS = {item.name for item in fields(FitState)} - {"rule", "rule_generator"} | {
    "unchanged_steps"
}


def _from_legacy(data: dict[str, Any]) -> dict[str, Any]:
    """A training state of the first layout in the current one (FreeEvolveRule's state)."""
    data = dict(data)
    steps = data.pop("unchanged_steps")
    if steps is not None:
        steps = {"unchanged_rounds": _integer(steps, "unchanged_steps", 0)}
    return {**data, "rule": steps, "rule_generator": None}


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


# ---------------------------------------------------------------------- a run's checkpoint


def _brief(value: Any) -> str:
    """A short one-line description of a value, for a message."""
    if value is None or isinstance(value, (bool, int, float, str)):
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."
    return f"a {type(value).__name__}"


def _same(a: Any, b: Any) -> bool:
    """Equal plain values of the same type (a tensor is never equal to a number here)."""
    return type(a) is type(b) and a == b


def data_shape(n_features: int, n_classes: int, n_train: int) -> dict[str, int]:
    """The sizes a checkpoint is checked against: a resumed run must see the same data."""
    return {"n_features": n_features, "n_classes": n_classes, "n_train": n_train}


def check_body(
    body: dict[str, Any], config: dict[str, Any], shape: dict[str, int]
) -> dict[str, Any]:
    """Check a checkpoint's body against the run's config and data; return it.

    The body holds ``config``, ``data`` (:func:`data_shape` of the training split), ``phase``
    (``"freeevolve"`` or ``"fcnn"``), ``fit`` (a :class:`FitState` as a dict; ``None`` before the
    FCNN's first epoch) and ``freeevolve`` (the finished FreeEvolve result in the FCNN phase).
    """
    saved = body.get("config")
    if not isinstance(saved, dict):
        raise CheckpointError("the checkpoint holds no configuration")
    for key in sorted(set(saved) | set(config), key=str):
        if not _same(saved.get(key), config.get(key)):
            raise CheckpointError(
                f"the checkpoint belongs to another configuration: {_brief(key)} is "
                f"{_brief(saved.get(key))} there and {_brief(config.get(key))} in config.json"
            )
    data = body.get("data")
    if (
        not isinstance(data, dict)
        or set(data) != set(shape)
        or not all(_same(data[key], shape[key]) for key in shape)
    ):
        raise CheckpointError(f"the checkpoint was written for other data, not of sizes {shape}")
    phase = body.get("phase")
    if not isinstance(phase, str) or phase not in PHASES:
        raise CheckpointError(f"the checkpoint's phase {_brief(phase)} is not one of {PHASES}")
    fit = body.get("fit")
    if phase == "freeevolve":
        if body.get("freeevolve") is not None or fit is None:
            raise CheckpointError("the checkpoint's FreeEvolve phase is inconsistent")
    else:
        check_result(body.get("freeevolve"))
    if fit is not None and not isinstance(fit, dict):
        raise CheckpointError("the checkpoint's training state is not a dict")
    return body  # FitState.from_dict checks ``fit`` against the training split


def save_run_state(
    run_dir: str | Path, config: dict[str, Any], shape: dict[str, int], body: dict[str, Any]
) -> None:
    """Write ``RUN/checkpoint.pt``: ``body`` (phase, fit, freeevolve) with config and data sizes."""
    save_checkpoint(Path(run_dir) / CHECKPOINT_NAME, {"config": config, "data": shape, **body})


def load_run_state(
    run_dir: str | Path, config: dict[str, Any], shape: dict[str, int]
) -> dict[str, Any] | None:
    """The checked body of ``RUN/checkpoint.pt``, or ``None`` if the run has no checkpoint yet."""
    path = Path(run_dir) / CHECKPOINT_NAME
    try:
        body = load_checkpoint(path)
    except FileNotFoundError:
        return None
    try:
        return check_body(body, config, shape)
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from None
