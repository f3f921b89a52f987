"""Checkpoints of a training run, so that Algorithm 1 resumes exactly where it stopped.

A checkpoint file is ``torch.save`` of plain containers, numbers, strings and tensors, loaded with
``weights_only=True``, and carries a SHA-256 over its contents: ``torch.load`` itself loads many
damaged files silently. A run's checkpoint (``RUN/checkpoint.pt``) holds its configuration, the
sizes of its data, its phase, the training loop's state
(:class:`~freenets.training.state.FitState`) and, in the FCNN phase, FreeEvolve's finished result;
:func:`check_body` checks them against the run before it goes on.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any

import torch

from freenets import atomic
from freenets.errors import CheckpointError
from freenets.training.state import check_result

__all__ = [
    "ADDED_SETTINGS",
    "CHECKPOINT_NAME",
    "FORMAT",
    "PHASES",
    "check_body",
    "data_shape",
    "digest",
    "load_checkpoint",
    "load_run_state",
    "one_line",
    "save_checkpoint",
    "save_run_state",
]

# Format 2: each epoch is scored before its round changes the graph, and a rule may change the
# graph in place of an optimiser step. A format-1 run took its rounds first, so it cannot go on
# in today's order with the result it would have had.
FORMAT = 2
CHECKPOINT_NAME = "checkpoint.pt"
# Settings a run's configuration gained after format 2, with the value every earlier run had.
ADDED_SETTINGS: dict[str, Any] = {"sparse_grad": False}
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
    if isinstance(saved, dict) and saved.get("format") == 1:
        raise CheckpointError(
            f"{path} was written by an earlier freenets, which changed the graph before scoring "
            "each epoch; it cannot go on in today's order: start the run again without --resume"
        )
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
    # A setting added since the checkpoint was written holds its default there.
    saved = {**{key: value for key, value in ADDED_SETTINGS.items() if key in config}, **saved}
    for key in sorted(set(saved) | set(config), key=str):
        if key == "device":  # where it trains is the machine's choice, not the run's
            continue
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
