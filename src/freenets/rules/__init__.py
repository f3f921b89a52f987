"""Topology rules: how a FreeNet's graph changes between rounds (paper, Algorithms 1 and 2).

:data:`RULES` is the one registry of rules: a name maps to the rule's class, whose
``config_type`` is the frozen dataclass of its parameters. :func:`make_rule` builds one from its
name and options, as configs and sweeps give them.
"""

from __future__ import annotations

import inspect
from typing import Any

from freenets.errors import ConfigError
from freenets.rules.base import TopologyRule
from freenets.rules.dense import DenseRule
from freenets.rules.freeevolve import FreeEvolveRule
from freenets.rules.pruning import MagnitudeRule, RandomRule
from freenets.rules.sparse import RigLRule, SETRule

RULES: dict[str, type[TopologyRule]] = {
    rule.name: rule
    for rule in (FreeEvolveRule, DenseRule, RandomRule, MagnitudeRule, SETRule, RigLRule)
}


def make_rule(name: str, **options: Any) -> TopologyRule:
    """The rule called ``name``, built with ``options`` (the fields of its ``config_type``).

    Parameters
    ----------
    name : str
        A key of :data:`RULES` (``"freeevolve"``, ``"dense"``, ``"random"``, ``"magnitude"``,
        ``"set"``, ``"rigl"``).
    **options
        The rule's parameters, e.g. ``epsilon`` for FreeEvolve, ``changes`` for random and
        magnitude, ``edges`` or ``density`` for SET and RigL.

    Raises
    ------
    ConfigError
        For an unknown name, an option the rule does not take, or a value out of range.
    """
    if name not in RULES:
        raise ConfigError(f"unknown topology rule {name!r}; choose one of {', '.join(RULES)}")
    rule = RULES[name]
    try:
        inspect.signature(rule).bind(**options)
    except TypeError as error:
        raise ConfigError(f"rule {name!r}: {error}") from None
    try:
        return rule(**options)
    except ValueError as error:  # FreeEvolveRule's checks raise ValueError
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(f"rule {name!r}: {error}") from None
