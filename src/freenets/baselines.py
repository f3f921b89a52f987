"""The fully connected baseline (paper, section 5, "Datasets and Models").

The FCNN has one hidden layer. The paper adds "extra neurons" to it when parameter counts differ.
Whole neurons alone cannot match a FreeNet closely (on MNIST one hidden neuron costs 795
parameters, over 3% of a 30-neuron FreeNet), so the width is chosen as whole neurons plus, where
the remainder allows, one extra neuron that reads only the first ``r`` inputs. The count then
matches the FreeNet's effective parameters (encoder + active edges + decoder) to within
``out_features + 1`` parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class Width:
    """``full`` hidden neurons reading every input, plus one reading ``partial_inputs`` (0: none)."""

    full: int
    partial_inputs: int = 0

    @property
    def hidden(self) -> int:
        """Number of hidden neurons."""
        return self.full + (1 if self.partial_inputs else 0)


def fcnn_params(in_features: int, width: Width | int, out_features: int) -> int:
    """Parameters in use of the baseline, biases included."""
    if isinstance(width, int):
        width = Width(width)
    params = width.full * (in_features + 1 + out_features) + out_features
    if width.partial_inputs:
        params += width.partial_inputs + 1 + out_features
    return params


def matching_width(in_features: int, out_features: int, target_params: int) -> Width:
    """The width whose parameter count is closest to ``target_params`` from below or above."""
    per_neuron = in_features + 1 + out_features
    full = max(1, (target_params - out_features) // per_neuron)
    remainder = target_params - fcnn_params(in_features, full, out_features)
    partial = remainder - 1 - out_features  # inputs the extra neuron may read
    candidates = [Width(full), Width(full + 1)]
    if 1 <= partial < in_features:
        candidates.append(Width(full, partial))
    return min(
        candidates,
        key=lambda w: abs(fcnn_params(in_features, w, out_features) - target_params),
    )


class FCNN(nn.Module):
    """One-hidden-layer ReLU network; the last hidden neuron may read only some inputs.

    Parameters
    ----------
    in_features, out_features : int
        Input and output sizes.
    width : Width or int
        Hidden neurons (see :func:`matching_width`).
    bias_bound : float, default 0.1
        Biases are initialised uniformly in ``[-bias_bound, bias_bound]``, weights Xavier-uniform,
        as for a FreeNet.
    generator : torch.Generator, optional
        Source of randomness for the initialisation.
    """

    def __init__(
        self,
        in_features: int,
        width: Width | int,
        out_features: int,
        *,
        bias_bound: float = 0.1,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.width = width if isinstance(width, Width) else Width(width)
        self.in_features = in_features
        self.out_features = out_features
        self.hidden = nn.Linear(in_features, self.width.hidden)
        self.output = nn.Linear(self.width.hidden, out_features)
        input_mask = torch.ones(self.width.hidden, in_features, dtype=torch.bool)
        if self.width.partial_inputs:
            input_mask[-1, self.width.partial_inputs :] = False
        self.register_buffer("input_mask", input_mask)
        with torch.no_grad():
            for layer in (self.hidden, self.output):
                nn.init.xavier_uniform_(layer.weight, generator=generator)
                nn.init.uniform_(layer.bias, -bias_bound, bias_bound, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores, ``(B, out_features)``."""
        weight = self.hidden.weight * self.input_mask
        return self.output(F.relu(F.linear(x, weight, self.hidden.bias)))

    def effective_params(self) -> int:
        """Parameters in use (the partial neuron's unread inputs do not count)."""
        return fcnn_params(self.in_features, self.width, self.out_features)
