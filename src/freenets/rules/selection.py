"""How the topology rules choose edges: at random, by smallest or by largest score.

The building blocks of the field's rules on the FreeNet substrate (paper, section 3: a graph is a
strictly lower-triangular ``(k, k)`` bool mask, ``mask[j, i]`` the edge ``i -> j``). Each function
is pure: masks and scores in, a new mask out, randomness only from the generator passed in.

Ties are broken uniformly at random: the candidates are shuffled with the generator, then sorted
stably by score. This plays the part of the small noise that google-research/rigl adds to its
scores (``noise_std=1e-5`` in ``sparse_optimizers.py``), without changing any score.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from freenets import graph
from freenets.errors import ConfigError


def graph_of(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """A FreeNet's ``(mask, weight)``: the graph a rule reads, and the weights it ranks."""
    return cast(torch.Tensor, model.mask), cast(torch.Tensor, model.weight)


def drop_count(n_edges: int, fraction: float) -> int:
    """How many of ``n_edges`` edges a drop fraction removes: ``floor(fraction * n_edges)``.

    Rounded down as google-research/rigl does (``n_prune = int(n_ones * drop_fraction)``); the
    small tolerance keeps ``0.3 * 10`` at 3 despite floating point.
    """
    return int(n_edges * fraction + 1e-9)


def _choose(
    candidates: torch.Tensor,
    count: int,
    generator: torch.Generator,
    scores: torch.Tensor | None = None,
    *,
    largest: bool = False,
) -> torch.Tensor:
    """``count`` positions among ``candidates`` (a bool mask): random, or by score, as a mask."""
    positions = candidates.flatten().nonzero().flatten().cpu()  # (n,) flat indices
    if not 0 <= count <= positions.numel():
        raise ValueError(f"cannot choose {count} of {positions.numel()} candidate edges")
    chosen = torch.zeros(candidates.numel(), dtype=torch.bool)
    if count:
        order = torch.randperm(positions.numel(), generator=generator, device=generator.device)
        positions = positions[order.cpu()]
        if scores is not None:
            values = scores.detach().flatten().cpu()[positions]
            positions = positions[torch.sort(values, stable=True, descending=largest).indices]
        chosen[positions[:count]] = True
    return chosen.view(candidates.shape).to(candidates.device)


def choose_random(candidates: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` of the ``candidates`` positions, uniformly at random, as a bool mask.

    Parameters
    ----------
    candidates : torch.Tensor
        ``(k, k)`` bool, the positions to choose from.
    count : int
        How many to choose, at most ``candidates.sum()``.
    generator : torch.Generator
        The only source of randomness.

    Returns
    -------
    torch.Tensor
        ``(k, k)`` bool with exactly ``count`` entries set, all inside ``candidates``.
    """
    return _choose(candidates, count, generator)


def choose_smallest(
    candidates: torch.Tensor, scores: torch.Tensor, count: int, generator: torch.Generator
) -> torch.Tensor:
    """The ``count`` candidates of smallest score (ties at random), as a bool mask.

    Parameters
    ----------
    candidates : torch.Tensor
        ``(k, k)`` bool, the positions to choose from.
    scores : torch.Tensor
        ``(k, k)`` scores (e.g. ``|weight|``); only the candidates' entries are read.
    count : int
        How many to choose, at most ``candidates.sum()``.
    generator : torch.Generator
        Breaks ties between equal scores.
    """
    return _choose(candidates, count, generator, scores, largest=False)


def choose_largest(
    candidates: torch.Tensor, scores: torch.Tensor, count: int, generator: torch.Generator
) -> torch.Tensor:
    """The ``count`` candidates of largest score (ties at random), as a bool mask.

    Parameters
    ----------
    candidates : torch.Tensor
        ``(k, k)`` bool, the positions to choose from.
    scores : torch.Tensor
        ``(k, k)`` scores (e.g. ``|dL/dW|``); only the candidates' entries are read.
    count : int
        How many to choose, at most ``candidates.sum()``.
    generator : torch.Generator
        Breaks ties between equal scores.
    """
    return _choose(candidates, count, generator, scores, largest=True)


def absent(mask: torch.Tensor) -> torch.Tensor:
    """The allowed positions (``i < j``) without an edge: where a rule may grow one."""
    return graph.lower_triangle(mask.shape[0], device=mask.device) & ~mask


def random_graph(
    n_neurons: int,
    n_edges: int,
    generator: torch.Generator,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """A uniform random DAG over ``n_neurons`` with exactly ``n_edges`` edges ``i -> j``, ``i < j``.

    Parameters
    ----------
    n_neurons : int
        Number of neurons k (at least 1).
    n_edges : int
        Number of edges, between 0 and ``k(k-1)/2``.
    generator : torch.Generator
        The only source of randomness.
    device : torch.device or str, optional
        Where the mask lives.
    """
    allowed = graph.lower_triangle(n_neurons, device=device)
    return choose_random(allowed, n_edges, generator)


def check_fraction(name: str, value: float, *, zero: bool = False) -> None:
    """Raise ConfigError unless ``value`` is a number in (0, 1], or [0, 1] with ``zero``."""
    low_ok = value >= 0.0 if zero else value > 0.0
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (low_ok and value <= 1)
    ):
        bounds = "[0, 1]" if zero else "(0, 1]"
        raise ConfigError(f"{name} must lie in {bounds}, got {value!r}")


def check_budget(rule: str, edges: int | None, density: float | None, *, required: bool) -> None:
    """Raise ConfigError unless at most one of ``edges`` (an integer >= 0) and ``density`` (in
    [0, 1]) is given, and exactly one where ``required``."""
    if required and (edges is None) == (density is None):
        raise ConfigError(f"rule {rule!r} takes exactly one of edges or density")
    if edges is not None and density is not None:
        raise ConfigError(f"rule {rule!r} takes at most one of edges and density")
    if edges is not None and (isinstance(edges, bool) or not isinstance(edges, int) or edges < 0):
        raise ConfigError(f"edges must be an integer >= 0, got {edges!r}")
    if density is not None:
        check_fraction("density", density, zero=True)


def budget_edges(n_neurons: int, edges: int | None, density: float | None) -> int:
    """The edge budget over ``n_neurons``: ``edges``, or ``density * k(k-1)/2`` rounded half up.

    Raises
    ------
    ConfigError
        When ``edges`` exceeds the ``k(k-1)/2`` allowed positions.
    """
    possible = n_neurons * (n_neurons - 1) // 2
    budget = edges if edges is not None else int((density or 0.0) * possible + 0.5)
    if budget > possible:
        raise ConfigError(
            f"a budget of {budget} edges exceeds the {possible} allowed over {n_neurons} neurons"
        )
    return budget
