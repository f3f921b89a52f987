"""The fully connected baseline (paper, section 5, "Datasets and Models").

The FCNN has one hidden layer. The paper adds "extra neurons" to it when parameter counts differ;
here its width is chosen so that its parameter count matches a FreeNet's effective parameters
(encoder + active edges + decoder) as closely as a whole number of neurons allows.
"""

from __future__ import annotations

import torch
from torch import nn


def fcnn_params(in_features: int, hidden: int, out_features: int) -> int:
    """Parameters of ``Linear(in, hidden) -> ReLU -> Linear(hidden, out)``, biases included."""
    return in_features * hidden + hidden + hidden * out_features + out_features


def matching_width(in_features: int, out_features: int, target_params: int) -> int:
    """Hidden width whose FCNN parameter count is closest to ``target_params`` (at least 1)."""
    per_neuron = in_features + 1 + out_features
    estimate = max(1, (target_params - out_features) // per_neuron)
    candidates = [w for w in (estimate - 1, estimate, estimate + 1, estimate + 2) if w >= 1]
    return min(
        candidates,
        key=lambda w: (abs(fcnn_params(in_features, w, out_features) - target_params), w),
    )


def make_fcnn(
    in_features: int,
    hidden: int,
    out_features: int,
    *,
    bias_bound: float = 0.1,
    generator: torch.Generator | None = None,
) -> nn.Sequential:
    """One-hidden-layer ReLU MLP initialised like a FreeNet (Xavier weights, uniform biases)."""
    model = nn.Sequential(
        nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, out_features)
    )
    with torch.no_grad():
        for layer in (model[0], model[2]):
            nn.init.xavier_uniform_(layer.weight, generator=generator)
            nn.init.uniform_(layer.bias, -bias_bound, bias_bound, generator=generator)
    return model
