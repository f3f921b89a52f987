"""Every exception freenets raises on purpose, in one place.

Each carries a one-line message that the command line prints as is: it names what is wrong and,
where it can, what to do. The modules that raise them import them from here.
"""

from __future__ import annotations

from typing import Any


class DataError(Exception):
    """A dataset cannot be loaded; the one-line message names the file and says what to do."""


class TargetError(DataError, ValueError):
    """A dataset's labels are not classes a classifier can learn from: continuous values, a
    single class, or (in a data file) nearly as many classes as samples."""


class CheckpointError(Exception):
    """A run cannot be resumed: its checkpoint or config is missing, corrupt or does not match."""


class TrainingFailed(FloatingPointError):
    """Training diverged; ``name`` is the model, ``reason`` says how and when.

    ``finished`` holds the models of the run that were trained before; ``summary`` is set to the
    run's summary once it is written.
    """

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason
        self.finished: list[Any] = []  # the ModelResult of each model trained before
        self.summary: dict[str, Any] | None = None


class Interrupted(Exception):
    """Training stopped when asked, after a batch, once its state went to the checkpoint hook."""


class ConfigError(ValueError):
    """A configuration value a user gave is out of range."""


class SweepError(Exception):
    """A sweep cannot start: its output directory is in use, or an optional extra is missing."""


class ReportError(Exception):
    """A directory is missing, is neither a run nor a sweep, or lacks a file it needs."""


class Busy(Exception):
    """Another process holds the lock on a directory (see :func:`freenets.atomic.exclusive`)."""


class UsageError(Exception):
    """A mistake in how the command was called."""


class ChecksumMismatch(Exception):
    """The downloaded bytes are not the published file."""
