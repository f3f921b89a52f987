"""FreeEvolve (Algorithm 2) as a pure function, and the state of Algorithm 1's loop.

Algorithm 2, steps 5 and 6::

    Aug   = (NCAM > 1 - eps) and not G        # co-active neurons without an edge
    Prune = (NCIM > 1 - eps) and G            # co-inactive neurons with an edge
    G'    = (G and not Prune) or (Aug and not Prune)

``Aug`` is kept to ``i < j`` so the graph stays a DAG. :func:`free_evolve` is pure: mask in, mask
out (like ``compute_mask`` in ``torch.nn.utils.prune``). :class:`Evolver` is the one place that
changes a model's topology; it does so under ``torch.no_grad()`` and keeps the optimiser from
moving the weights of pruned edges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from freenets import graph
from freenets.stats import Data, coactivation

Readd = Literal["restore", "zero"]


@dataclass(frozen=True)
class Decisions:
    """The matrices of one FreeEvolve step (all ``(k, k)`` bool)."""

    aug: torch.Tensor
    prune: torch.Tensor
    new_mask: torch.Tensor


def _check_inputs(mask: torch.Tensor, ncam: torch.Tensor, ncim: torch.Tensor, epsilon: float):
    graph.check_mask(mask)
    if ncam.shape != mask.shape or ncim.shape != mask.shape:
        raise ValueError(
            f"ncam {tuple(ncam.shape)} and ncim {tuple(ncim.shape)} must match the mask "
            f"{tuple(mask.shape)}"
        )
    if not 0.0 < epsilon < 1.0:
        raise ValueError(f"epsilon must lie in (0, 1), got {epsilon}")


def decisions(
    mask: torch.Tensor, ncam: torch.Tensor, ncim: torch.Tensor, epsilon: float
) -> Decisions:
    """Aug, Prune and the updated graph of Algorithm 2, steps 5 and 6.

    Parameters
    ----------
    mask : torch.Tensor
        Current graph G, ``(k, k)`` bool, strictly lower-triangular.
    ncam, ncim : torch.Tensor
        ``(k, k)`` co-activation and co-inactivation matrices.
    epsilon : float
        Threshold parameter in ``(0, 1)``; entries above ``1 - epsilon`` count.
    """
    _check_inputs(mask, ncam, ncim, epsilon)
    threshold = 1.0 - epsilon
    allowed = graph.lower_triangle(mask.shape[0], device=mask.device)
    aug = (ncam.to(mask.device) > threshold) & ~mask & allowed  # Aug, kept to i < j
    prune = (ncim.to(mask.device) > threshold) & mask  # Prune
    new_mask = (mask & ~prune) | (aug & ~prune)  # G'
    return Decisions(aug=aug, prune=prune, new_mask=new_mask)


def free_evolve(
    mask: torch.Tensor, ncam: torch.Tensor, ncim: torch.Tensor, epsilon: float
) -> torch.Tensor:
    """FreeEvolve's graph update (Algorithm 2, steps 5 and 6). Pure: returns a new mask.

    Parameters
    ----------
    mask : torch.Tensor
        Current graph G, ``(k, k)`` bool, strictly lower-triangular.
    ncam, ncim : torch.Tensor
        ``(k, k)`` co-activation and co-inactivation matrices (see :func:`freenets.coactivation`).
    epsilon : float
        Threshold parameter in ``(0, 1)``.

    Returns
    -------
    torch.Tensor
        ``G' = (G and not Prune) or (Aug and not Prune)``, strictly lower-triangular.
    """
    return decisions(mask, ncam, ncim, epsilon).new_mask


def theorem2_holds(
    mask: torch.Tensor, ncam: torch.Tensor, ncim: torch.Tensor, epsilon: float
) -> bool:
    """Theorem 2's fixed-point property: ``Aug and not Prune`` is a subset of the edges E."""
    step = decisions(mask, ncam, ncim, epsilon)
    return not bool((step.aug & ~step.prune & ~mask).any())


@dataclass
class EvolveStep:
    """What one FreeEvolve step did to the graph."""

    edges: int
    added: int
    pruned: int
    changed: bool
    # Values behind the decisions, for the paper's Figure 7: NCIM on present edges (the
    # candidates of Prune) and NCAM on absent allowed edges (the candidates of Aug).
    prune_values: list[float] = field(default_factory=list)
    aug_values: list[float] = field(default_factory=list)


def _sample_values(values: torch.Tensor, limit: int) -> list[float]:
    """At most ``limit`` values, evenly strided so the distribution is kept, rounded to 1e-4."""
    if values.numel() > limit:
        index = torch.linspace(0, values.numel() - 1, limit).round().long()
        values = values[index]
    return [round(float(v), 4) for v in values]


class Evolver:
    """Applies FreeEvolve to a live :class:`~freenets.FreeNet`, in anyone's training loop.

    Parameters
    ----------
    model : FreeNet
        The model whose ``mask`` is evolved.
    epsilon : float
        FreeEvolve's threshold parameter in ``(0, 1)``.
    optimizer : torch.optim.Optimizer, optional
        The optimiser training ``model.weight``. Its per-parameter state (Adam's moments, SGD's
        momentum) is zeroed for pruned edges, so that with their zero gradient they do not move.
        Decoupled weight decay on ``model.weight`` would still move them, so it is refused.
    readd : {"restore", "zero"}, default "restore"
        A re-added edge resumes its stored weight, or starts from zero.
    patience : int, default 3
        The graph has converged once it has not changed for this many consecutive steps.
    batch_size : int, default 1024
        Batch size of the statistics pass.

    Examples
    --------
    >>> evolver = Evolver(model, epsilon=0.25, optimizer=optimizer)
    >>> for epoch in range(epochs):
    ...     train_one_epoch(model, optimizer)
    ...     if not evolver.converged:
    ...         evolver.step(x_train)
    """

    def __init__(
        self,
        model: nn.Module,
        epsilon: float,
        *,
        optimizer: torch.optim.Optimizer | None = None,
        readd: Readd = "restore",
        patience: int = 3,
        batch_size: int = 1024,
    ) -> None:
        if not 0.0 < epsilon < 1.0:
            raise ValueError(f"epsilon must lie in (0, 1), got {epsilon}")
        if readd not in ("restore", "zero"):
            raise ValueError(f"readd must be 'restore' or 'zero', got {readd!r}")
        if patience < 1:
            raise ValueError(f"patience must be at least 1, got {patience}")
        if optimizer is not None:
            for group in optimizer.param_groups:
                holds_weight = any(p is model.weight for p in group["params"])
                if holds_weight and group.get("weight_decay", 0.0):
                    raise ValueError(
                        "the optimiser applies weight_decay to model.weight, which would move "
                        "pruned weights; put model.weight in a group with weight_decay=0"
                    )
        self.model = model
        self.epsilon = epsilon
        self.optimizer = optimizer
        self.readd = readd
        self.patience = patience
        self.batch_size = batch_size
        self.unchanged_steps = 0
        self.history: list[EvolveStep] = []

    @property
    def converged(self) -> bool:
        """True once the graph has stayed the same for ``patience`` consecutive steps."""
        return self.unchanged_steps >= self.patience

    def step(self, data: Data, *, value_limit: int = 5000) -> EvolveStep:
        """Compute NCAM/NCIM on ``data``, apply FreeEvolve, and record what changed."""
        ncam, ncim = coactivation(self.model, data, batch_size=self.batch_size)
        mask = self.model.mask
        result = decisions(mask.cpu(), ncam, ncim, self.epsilon)
        allowed = graph.lower_triangle(mask.shape[0])
        present = mask.cpu()
        record = EvolveStep(
            edges=graph.n_edges(result.new_mask),
            added=int((result.new_mask & ~present).sum()),
            pruned=int((present & ~result.new_mask).sum()),
            changed=bool((result.new_mask != present).any()),
            prune_values=_sample_values(ncim[present], value_limit),
            aug_values=_sample_values(ncam[allowed & ~present], value_limit),
        )
        self.apply(result.new_mask)
        self.unchanged_steps = 0 if record.changed else self.unchanged_steps + 1
        self.history.append(record)
        return record

    @torch.no_grad()
    def apply(self, new_mask: torch.Tensor) -> None:
        """Set the model's graph to ``new_mask``: the only place a topology changes."""
        graph.check_mask(new_mask, self.model.n_neurons)
        mask = self.model.mask
        new_mask = new_mask.to(mask.device)
        pruned = mask & ~new_mask
        added = new_mask & ~mask
        if self.readd == "zero":
            self.model.weight[added] = 0.0
        if self.optimizer is not None:
            # Zero the state of edges that leave or return: a pruned edge, with zero gradient
            # and zero moments, stays exactly where it is; a returning edge starts fresh.
            state = self.optimizer.state.get(self.model.weight, {})
            for value in state.values():
                if isinstance(value, torch.Tensor) and value.shape == mask.shape:
                    value[pruned | added] = 0
        mask.copy_(new_mask)
