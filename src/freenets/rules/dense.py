"""The dense FreeNet: every edge ``i -> j`` with ``i < j``, never changed (paper, section 3.1).

The reference point of the topology rules: Algorithm 1 with no graph change at all, so the
network keeps its ``k(k-1)/2`` edges for the whole training (Claim 4.1: it contains every layered
net over the same neurons).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from freenets import graph
from freenets.rules.base import TopologyRule
from freenets.rules.selection import graph_of


@dataclass(frozen=True)
class DenseConfig:
    """The dense rule has no parameters."""


class DenseRule(TopologyRule):
    """No topology change: the dense graph of ``k(k-1)/2`` edges throughout; converged at once."""

    name: ClassVar[str] = "dense"
    config_type: ClassVar[type | None] = DenseConfig

    def initial_mask(self, model: nn.Module, generator: torch.Generator) -> torch.Tensor | None:
        """The dense graph over the model's neurons (whatever graph the model started with)."""
        mask, _ = graph_of(model)
        dense = graph.dense_mask(mask.shape[0], device=mask.device)
        return None if torch.equal(dense, mask) else dense

    @property
    def converged(self) -> bool:
        """Always True: the dense rule never proposes a change after the start."""
        return True
