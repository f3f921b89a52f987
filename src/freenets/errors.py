"""The error every dataset loader raises, apart so that the file-format modules can share it."""

from __future__ import annotations


class DataError(Exception):
    """A dataset cannot be loaded; the one-line message names the file and says what to do."""
