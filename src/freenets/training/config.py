"""The settings of a training run (paper, section 5, "Model and Training setup").

:class:`TrainConfig` is frozen and saved as ``config.json`` in every run directory, so a run is
reproducible from that file alone; :meth:`TrainConfig.from_dict` reads it back and refuses values
of the wrong type or out of range.
"""

from __future__ import annotations

import math
import typing
from dataclasses import asdict, dataclass
from typing import Any

import torch

from freenets.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """The torch device ``name`` asks for: ``"cpu"``, ``"cuda"`` (or ``"cuda:N"``), ``"mps"``,
    or ``"auto"`` (CUDA when available, else MPS when available, else the CPU).

    Raises
    ------
    ConfigError
        For a name torch does not know, or a device this machine does not have.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(
            f"device must be 'cpu', 'cuda', 'mps', 'auto' or a torch device, got {name!r}"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asks for CUDA, which is not available here")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {name!r} asks for MPS, which is not available here")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device must be 'cpu', 'cuda', 'mps' or 'auto', got {name!r}")
    return device


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
    batch_size: int = 128
    learning_rate: float = 3e-3
    schedule: str = "cosine"  # the step size over epochs: "cosine" decays it to 0, or "constant"
    weight_decay: float = 0.0
    readd: str = "restore"
    val_fraction: float = 0.1
    bias_bound: float = 0.1
    seed: int = 0
    # The topology rule of ``freenets train`` (a name of freenets.rules.RULES) and the parameters
    # of the budgeted rules; FreeEvolve's are epsilon, patience and readd above.
    rule: str = "freeevolve"
    density: float | None = None  # SET's and RigL's budget as a fraction of k(k-1)/2, or
    edges: int | None = None  # as an edge count (exactly one of the two for those rules)
    zeta: float = 0.3  # their drop fraction
    delta_t: int = 100  # RigL's steps between updates
    rule_stop: float = 0.75  # the fraction of training after which RigL stops
    # Where models, data and statistics live: "cpu", "cuda", "mps" or "auto". A machine's
    # setting, not the run's: a checkpoint goes on on any device.
    device: str = "cpu"

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
            (
                self.schedule in ("cosine", "constant"),
                f"--schedule must be 'cosine' or 'constant', got {self.schedule!r}",
            ),
            (self.weight_decay >= 0, "weight_decay must be non-negative"),
            (self.readd in ("restore", "zero"), "readd must be 'restore' or 'zero'"),
            (0.0 < self.val_fraction < 1.0, "val_fraction must lie in (0, 1)"),
            (self.bias_bound >= 0, "bias_bound must be non-negative"),
            (0 <= self.seed < 2**62, f"--seed must lie in [0, 2**62), got {self.seed}"),
            (
                self.density is None or 0.0 <= self.density <= 1.0,
                f"--density must lie in [0, 1], got {self.density}",
            ),
            (
                self.edges is None or self.edges >= 0,
                f"--edges must be at least 0, got {self.edges}",
            ),
            (
                self.density is None or self.edges is None,
                "give one of --density and --edges, not both",
            ),
            (0.0 < self.zeta <= 1.0, f"--zeta must lie in (0, 1], got {self.zeta}"),
            (self.delta_t >= 1, f"--delta-t must be at least 1, got {self.delta_t}"),
            (
                0.0 < self.rule_stop <= 1.0,
                f"--rule-stop must lie in (0, 1], got {self.rule_stop}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        resolve_device(self.device)  # a device this machine has

    def to_dict(self) -> dict[str, Any]:
        """The configuration as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """The config that :meth:`to_dict` gave, type-checked and validated (else ConfigError)."""
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for name, value in data.items():
            if name not in hints:
                raise ConfigError(f"unknown setting {str(name)[:40]!r}")
            if not _fits(value, hints[name]):
                raise ConfigError(f"setting {name} cannot be {str(value)[:40]!r}")
            try:
                values[name] = float(value) if hints[name] is float else value
            except OverflowError:
                raise ConfigError(f"setting {name} is out of range: {value!r}") from None
        config = cls(**values)
        config.validate()
        return config


def _fits(value: Any, hint: Any) -> bool:
    """Whether a value read from JSON fits a field typed ``int``, ``float``, ``str`` or ``| None``."""
    for option in typing.get_args(hint) or (hint,):
        if value is None and option is type(None):
            return True
        if isinstance(value, bool) or value is None:
            continue
        if (option is float and isinstance(value, (int, float))) or (
            option in (int, str) and isinstance(value, option)
        ):
            return True
    return False
