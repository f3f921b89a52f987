"""Topology rules: how a FreeNet's graph changes between rounds (paper, Algorithms 1 and 2).

:data:`RULES` names every rule of the field built on the protocol of :mod:`freenets.rules.base`;
:func:`make_rule` builds one from its name and options, as configs and sweeps give them.
"""

from __future__ import annotations

import inspect
from typing import Any

from freenets.errors import ConfigError
from freenets.rules.base import TopologyRule
from freenets.rules.dense import DenseRule
from freenets.rules.pruning import MagnitudeRule, RandomRule
from freenets.rules.sparse import RigLRule, SETRule

RULES: dict[str, type[TopologyRule]] = {
    rule.name: rule for rule in (DenseRule, RandomRule, MagnitudeRule, SETRule, RigLRule)
}


def make_rule(name: str, **options: Any) -> TopologyRule:
    """The rule called ``name``, built with ``options`` (its constructor's arguments).

    Parameters
    ----------
    name : str
        A key of :data:`RULES` (``"dense"``, ``"random"``, ``"magnitude"``, ``"set"``, ``"rigl"``).
    **options
        Passed to the rule's constructor, e.g. ``changes`` for random and magnitude, ``edges`` or
        ``density`` for SET and RigL.

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
    return rule(**options)
