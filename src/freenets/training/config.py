"""The settings of a training run (paper, section 5, "Model and Training setup").

:class:`TrainConfig` holds one frozen part per concern (:class:`DataConfig`, :class:`ModelConfig`,
:class:`OptimConfig`, :class:`TopologyConfig`) and the run's seed and device. It is saved flat, one
key per setting, as ``config.json`` in every run directory, so a run is reproducible from that file
alone; :meth:`TrainConfig.from_dict` reads it back and refuses values of the wrong type or out of
range.
"""

from __future__ import annotations

import math
import typing
from dataclasses import asdict, dataclass, field, fields
from dataclasses import replace as dc_replace
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
class DataConfig:
    """Which data a run trains on, and the part of its training set held out for validation."""

    dataset: str = "digits"
    data_dir: str | None = None
    train_size: int | None = None  # keep this many training samples (stratified, fixed subset)
    target: str | None = None  # the label column of a .csv dataset
    val_fraction: float = 0.1

    def checks(self) -> list[tuple[bool, str]]:
        """(holds, message) for each value's range."""
        return [
            (
                self.train_size is None or self.train_size >= 1,
                f"--train-size must be at least 1, got {self.train_size}",
            ),
            (0.0 < self.val_fraction < 1.0, "val_fraction must lie in (0, 1)"),
        ]


@dataclass(frozen=True)
class ModelConfig:
    """The FreeNet's size, the bound of its initial biases, and whether its weight's gradient
    (and, in the library's loop, its optimiser state) covers only the active edges
    (:class:`~freenets.model.FreeNet`'s ``sparse_grad``: the same training, to rounding, in
    memory that follows the edges, not k x k)."""

    n_neurons: int = 50
    bias_bound: float = 0.1
    sparse_grad: bool = False

    def checks(self) -> list[tuple[bool, str]]:
        """(holds, message) for each value's range."""
        return [
            (self.n_neurons >= 1, f"--neurons must be at least 1, got {self.n_neurons}"),
            (self.bias_bound >= 0, "bias_bound must be non-negative"),
        ]


@dataclass(frozen=True)
class OptimConfig:
    """How the weights are trained: epochs, batches and Adam's step size over the epochs."""

    epochs: int = 30
    batch_size: int = 128
    learning_rate: float = 3e-3
    schedule: str = "cosine"  # the step size over epochs: "cosine" decays it to 0, or "constant"
    weight_decay: float = 0.0

    def checks(self) -> list[tuple[bool, str]]:
        """(holds, message) for each value's range."""
        return [
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}"),
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
        ]


@dataclass(frozen=True)
class TopologyConfig:
    """The topology rule of the run's FreeNet (a name of :data:`freenets.rules.RULES`) and the
    parameters of every rule: FreeEvolve's (epsilon, patience, readd), the budgeted rules'
    (density or edges, zeta, delta_t, rule_stop), and how many epochs lie between rounds.
    :func:`freenets.training.models.model_rule` gives each rule the ones it takes."""

    rule: str = "freeevolve"
    epsilon: float = 0.25
    epochs_per_round: int = 1
    patience: int = 3
    readd: str = "restore"
    density: float | None = None  # a budget as a fraction of k(k-1)/2, or
    edges: int | None = None  # as an edge count (SET and RigL need one of the two)
    zeta: float = 0.3  # SET's and RigL's drop fraction
    delta_t: int = 100  # RigL's steps between updates
    rule_stop: float = 0.75  # the fraction of training after which RigL stops

    def checks(self) -> list[tuple[bool, str]]:
        """(holds, message) for each value's range."""
        return [
            (0.0 < self.epsilon < 1.0, f"--epsilon must lie in (0, 1), got {self.epsilon}"),
            (self.epochs_per_round >= 1, "epochs_per_round must be at least 1"),
            (self.patience >= 1, f"patience must be at least 1, got {self.patience}"),
            (self.readd in ("restore", "zero"), "readd must be 'restore' or 'zero'"),
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


Part = DataConfig | ModelConfig | OptimConfig | TopologyConfig

# Each part's attribute on TrainConfig and its type. The names of the settings are unique
# across the parts, so config.json lists them flat, as it always has.
_PARTS: dict[str, type[Part]] = {
    "data": DataConfig,
    "model": ModelConfig,
    "optim": OptimConfig,
    "topology": TopologyConfig,
}
_TOP = ("seed", "device")  # the settings of the run itself
_HOME = {item.name: part for part, kind in _PARTS.items() for item in fields(kind)}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run, by concern; saved flat as ``config.json``.

    Build one from the settings' names with :meth:`of` (``TrainConfig.of(dataset="digits",
    n_neurons=20)``) and change some with :meth:`replace`; every part keeps its defaults.

    Attributes
    ----------
    data : DataConfig
    model : ModelConfig
    optim : OptimConfig
    topology : TopologyConfig
    seed : int
        The seed of the split, the initial weights, the order of the samples and the rule.
    device : str
        Where models, data and statistics live: ``"cpu"``, ``"cuda"``, ``"mps"`` or ``"auto"``.
        A machine's setting, not the run's: a checkpoint goes on on any device.
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    topology: TopologyConfig = field(default_factory=TopologyConfig)
    seed: int = 0
    device: str = "cpu"

    @classmethod
    def of(cls, **settings: Any) -> TrainConfig:
        """The default configuration with ``settings`` (flat names, as in ``config.json``)."""
        return cls().replace(**settings)

    def replace(self, **settings: Any) -> TrainConfig:
        """This configuration with ``settings`` (flat names, as in ``config.json``) changed.

        Raises
        ------
        ConfigError
            For a name that is no setting.
        """
        parts: dict[str, dict[str, Any]] = {}
        top: dict[str, Any] = {}
        for name, value in settings.items():
            if name in _TOP:
                top[name] = value
            elif name in _HOME:
                parts.setdefault(_HOME[name], {})[name] = value
            else:
                raise ConfigError(f"unknown setting {str(name)[:40]!r}")
        changed = {
            part: dc_replace(getattr(self, part), **values) for part, values in parts.items()
        }
        return dc_replace(self, **changed, **top)

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first value out of range."""
        checks = [check for part in _PARTS for check in getattr(self, part).checks()]
        checks.append((0 <= self.seed < 2**62, f"--seed must lie in [0, 2**62), got {self.seed}"))
        checks.append(
            (
                not (self.model.sparse_grad and self.optim.weight_decay > 0),
                "--sparse-grad takes no weight decay (its L2 penalty would touch every weight)",
            )
        )
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        resolve_device(self.device)  # a device this machine has

    def to_dict(self) -> dict[str, Any]:
        """The settings as a flat JSON-ready dict (the format of ``config.json``)."""
        flat: dict[str, Any] = {}
        for part in _PARTS:
            flat.update(asdict(getattr(self, part)))
        return {**flat, "seed": self.seed, "device": self.device}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """The config that :meth:`to_dict` gave, type-checked and validated (else ConfigError)."""
        hints = {"seed": int, "device": str}
        for kind in _PARTS.values():
            hints.update(typing.get_type_hints(kind))
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
        config = cls.of(**values)
        config.validate()
        return config


def _fits(value: Any, hint: Any) -> bool:
    """Whether a value read from JSON fits a field typed ``bool``, ``int``, ``float``, ``str`` or
    ``| None``."""
    for option in typing.get_args(hint) or (hint,):
        if value is None and option is type(None):
            return True
        if option is bool:
            if isinstance(value, bool):
                return True
            continue
        if isinstance(value, bool) or value is None:
            continue
        if (option is float and isinstance(value, (int, float))) or (
            option in (int, str) and isinstance(value, option)
        ):
            return True
    return False
