"""The one place a model's topology changes (paper, Algorithm 1, the graph update of each round).

Topology rules (:mod:`freenets.rules`) only propose masks; :func:`apply_mask` writes a proposal
into a live model, under ``torch.no_grad()``: it checks that the mask is a DAG over the model's
neurons, zeroes the optimiser's state (Adam's moments, SGD's momentum) of every edge that leaves or
returns, and starts returning edges from zero when asked. A pruned edge then has zero gradient and
zero moments, so it stays exactly where it is; a returning edge starts with fresh moments. This is
the split of ``compute_mask`` and the module plumbing in ``torch.nn.utils.prune``, and the
"optimiser state zeroed for inactive weights" of sparsimony's sparsifiers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from freenets import graph
from freenets.rules.base import Proposal, Readd, TopologyChange, TopologyRule
from freenets.rules.selection import graph_of

__all__ = ["apply_mask", "apply_proposal", "check_optimizer"]


def check_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
    """Refuse an optimiser that applies decoupled weight decay to ``model.weight``.

    Decay moves a weight whatever its gradient, so it would move pruned edges, which
    :func:`apply_mask` promises to keep still. A masked L2 penalty in the loss does not.

    Raises
    ------
    ValueError
        If a parameter group holding ``model.weight`` has a non-zero ``weight_decay``.
    """
    if optimizer is None:
        return
    for group in optimizer.param_groups:
        holds_weight = any(p is model.weight for p in group["params"])
        if holds_weight and group.get("weight_decay", 0.0):
            raise ValueError(
                "the optimiser applies weight_decay to model.weight, which would move "
                "pruned weights; put model.weight in a group with weight_decay=0"
            )


@torch.no_grad()
def apply_mask(
    model: nn.Module,
    new_mask: torch.Tensor,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    readd: Readd = "restore",
    draw: Callable[[int], torch.Tensor] | None = None,
    renew: torch.Tensor | None = None,
) -> TopologyChange:
    """Set ``model.mask`` to ``new_mask``: the only place a model's topology changes.

    Parameters
    ----------
    model : FreeNet
        Any module with a ``(k, k)`` bool ``mask`` buffer and a ``(k, k)`` ``weight``.
    new_mask : torch.Tensor
        The proposed graph, ``(k, k)`` bool, strictly lower-triangular.
    optimizer : torch.optim.Optimizer, optional
        The optimiser training ``model.weight``; its per-parameter state of shape ``(k, k)`` is
        zeroed at every edge that leaves or returns.
    readd : {"restore", "zero", "random"}, default "restore"
        A (re)appearing edge resumes its stored weight, starts from zero, or starts from a value
        ``draw`` gives.
    draw : callable, optional
        For ``readd="random"``: ``draw(n)`` returns the ``n`` new edges' starting weights, in
        row-major order of the ``(k, k)`` matrix (a rule's
        :meth:`~freenets.rules.base.TopologyRule.grown_weights`).
    renew : torch.Tensor, optional
        ``(k, k)`` bool, edges present before and in ``new_mask`` that start afresh: counted as
        pruned and added, started as ``readd`` says, their optimiser state zeroed
        (:class:`~freenets.rules.base.Proposal`).

    Returns
    -------
    TopologyChange
        Edges after the change, edges added and edges pruned.

    Raises
    ------
    ValueError
        If ``new_mask`` is not a DAG over the model's neurons, ``readd`` is unknown, or
        ``draw`` is missing for ``readd="random"`` or gives the wrong number of values.
    """
    if readd not in ("restore", "zero", "random"):
        raise ValueError(f"readd must be 'restore', 'zero' or 'random', got {readd!r}")
    if readd == "random" and draw is None:
        raise ValueError("readd='random' needs draw, the source of the new edges' weights")
    mask, weight = graph_of(model)
    graph.check_mask(new_mask, mask.shape[0])
    new_mask = new_mask.to(mask.device)
    pruned = mask & ~new_mask
    added = new_mask & ~mask
    if renew is not None:
        renew = renew.to(mask.device)
        if renew.shape != mask.shape or bool((renew & ~(mask & new_mask)).any()):
            raise ValueError("renew must be a subset of the edges present before and after")
        pruned, added = pruned | renew, added | renew
    if readd == "zero":
        weight[added] = 0.0
    elif readd == "random" and draw is not None:
        count = int(added.sum())
        values = draw(count).reshape(-1)
        if values.numel() != count:
            raise ValueError(f"draw gave {values.numel()} weights for {count} new edges")
        weight[added] = values.to(device=weight.device, dtype=weight.dtype)
    if optimizer is not None:
        # A pruned edge, with zero gradient and zero moments, stays exactly where it is; a
        # returning edge starts fresh.
        state = optimizer.state.get(weight, {})
        changed = pruned | added
        # EdgeAdam keeps a sparse-gradient weight's moments on the entries ``index`` names.
        index = state.get("index")
        at = changed.reshape(-1)[index] if isinstance(index, torch.Tensor) else None
        for name, value in state.items():
            if isinstance(value, torch.Tensor) and value.shape == mask.shape:
                value[changed] = 0
            elif at is not None and name != "index" and value.shape == at.shape:
                value[at] = 0
    change = TopologyChange(
        edges=graph.n_edges(new_mask), added=graph.n_edges(added), pruned=graph.n_edges(pruned)
    )
    mask.copy_(new_mask)
    return change


def apply_proposal(
    model: nn.Module,
    proposal: torch.Tensor | Proposal | None,
    optimizer: torch.optim.Optimizer | None,
    rule: TopologyRule,
    generator: torch.Generator,
) -> TopologyChange:
    """:func:`apply_mask` for what one of ``rule``'s hooks returned, the rule's way.

    A plain mask or a :class:`~freenets.rules.base.Proposal` (whose ``renew`` edges start
    afresh); new edges start as ``rule.readd`` says, drawn by ``rule.grown_weights`` with
    ``generator`` where it is ``"random"`` (SET). ``None`` changes nothing, and the record
    says so.
    """
    if proposal is None:
        return TopologyChange(edges=graph.n_edges(graph_of(model)[0]), added=0, pruned=0)
    mask, renew = (
        (proposal.mask, proposal.renew) if isinstance(proposal, Proposal) else (proposal, None)
    )
    return apply_mask(
        model,
        mask,
        optimizer,
        readd=rule.readd,
        draw=lambda count: rule.grown_weights(count, generator),
        renew=renew,
    )
