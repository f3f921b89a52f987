"""The tasks of Theorem 1's experiment (paper, section 4).

Theorem 1 claims functions that a FreeNet over k neurons realises and no other topology over k
neurons does. Three families probe it:

- ``parity-N``: the parity of N bits, all ``2**N`` inputs, one logit (classification).
- ``sawtooth-m``: Telgarsky's depth-separating sawtooth ``T^m`` on [0, 1], the tent map
  ``T(x) = 2 min(x, 1 - x)`` composed m times: ``2**(m-1)`` teeth, ``2**m`` linear pieces.
- ``poly-d``: the polynomial of the proof sketch, every monomial up to degree d,
  ``(x + x**2 + ... + x**d) / d`` on [0, 1] (regression).

A regression task is solved when the mean squared error on its grid is below
:data:`REGRESSION_TOLERANCE`; the targets lie in [0, 1], so that is a root-mean-square error of
1% of their range. The networks see centred inputs: bits as -1/+1, x as ``2x - 1``. Hand-set
networks that solve these tasks: :mod:`freenets.experiments.expressivity_constructions`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from freenets.experiments.expressivity_nets import Kind

REGRESSION_TOLERANCE = 1e-4
GRID_POINTS = 257  # x = i / 256: every breakpoint of T^m for m <= 8 lies on the grid


@dataclass(frozen=True, eq=False)
class Task:
    """One target function on a finite set of inputs.

    Attributes
    ----------
    name : str
        ``parity-N``, ``sawtooth-m`` or ``poly-d``.
    family : str
        ``parity``, ``sawtooth`` or ``poly``.
    size : int
        N, m or d.
    kind : {"classification", "regression"}
        Loss and success criterion.
    inputs : torch.Tensor
        ``(B, d)`` inputs as the networks see them (centred).
    targets : torch.Tensor
        ``(B,)`` labels 0/1 or regression targets.
    tolerance : float
        Mean squared error below which a regression counts as solved (unused for parity).
    max_neurons : int
        The largest k the experiment tries on this task.
    """

    name: str
    family: str
    size: int
    kind: Kind
    inputs: torch.Tensor
    targets: torch.Tensor
    tolerance: float
    max_neurons: int


def parity_task(n_bits: int) -> Task:
    """Parity of ``n_bits`` bits over all ``2**n_bits`` inputs; k up to ``n_bits + 1``."""
    if n_bits < 1:
        raise ValueError(f"parity needs at least one bit, got {n_bits}")
    bits = torch.tensor(list(itertools.product((0.0, 1.0), repeat=n_bits)))
    return Task(
        f"parity-{n_bits}",
        "parity",
        n_bits,
        "classification",
        2 * bits - 1,
        bits.sum(dim=1) % 2,
        REGRESSION_TOLERANCE,
        n_bits + 1,
    )


def _grid() -> torch.Tensor:
    return torch.linspace(0.0, 1.0, GRID_POINTS, dtype=torch.float64)


def tent_power(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Telgarsky's sawtooth ``T^levels(x)`` for x in [0, 1], with ``T(x) = 2 min(x, 1 - x)``."""
    for _ in range(levels):
        x = 2 * torch.minimum(x, 1 - x)
    return x


def sawtooth_task(levels: int) -> Task:
    """``T^levels`` on 257 grid points of [0, 1]; k up to ``2 * levels + 1``."""
    if levels < 1:
        raise ValueError(f"the sawtooth needs at least one level, got {levels}")
    x = _grid()
    return Task(
        f"sawtooth-{levels}",
        "sawtooth",
        levels,
        "regression",
        (2 * x - 1).float()[:, None],
        tent_power(x, levels).float(),
        REGRESSION_TOLERANCE,
        2 * levels + 1,
    )


def polynomial(x: torch.Tensor, degree: int) -> torch.Tensor:
    """``(x + x**2 + ... + x**degree) / degree``: every monomial of the proof sketch, in [0, 1]."""
    return torch.stack([x**power for power in range(1, degree + 1)]).sum(dim=0) / degree


def polynomial_task(degree: int) -> Task:
    """:func:`polynomial` on 257 grid points of [0, 1]; k up to ``degree + 2``."""
    if degree < 1:
        raise ValueError(f"the polynomial needs degree at least 1, got {degree}")
    x = _grid()
    return Task(
        f"poly-{degree}",
        "poly",
        degree,
        "regression",
        (2 * x - 1).float()[:, None],
        polynomial(x, degree).float(),
        REGRESSION_TOLERANCE,
        degree + 2,
    )
