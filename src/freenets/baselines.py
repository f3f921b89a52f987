"""The fully connected baselines (paper, section 5, "Datasets and Models").

The paper's FCNN has one hidden layer and gets "extra neurons" when parameter counts differ.
Whole neurons alone cannot match a FreeNet closely (on MNIST one hidden neuron costs 795
parameters, over 3% of a 30-neuron FreeNet), so the width is whole neurons plus, where the
remainder allows, one extra neuron that reads only ``r`` of the inputs. The count then matches the
FreeNet's effective parameters (encoder + active edges + decoder) to within
``out_features // 2 + 1``.

The partial neuron's ``r`` inputs are a uniform draw from the caller's generator, kept in the
``input_mask`` buffer, so a saved model reloads with the same inputs. The first ``r`` inputs
would not do: on MNIST-like images they are the top rows of pixels, a constant background, and
the neuron would be dead while its weights still count as parameters.

:class:`FCNN2` is a second baseline with two hidden layers of equal width, matched the same way
(:func:`matching_width2`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from freenets.kernels.structure import comparable, unchanged


@dataclass(frozen=True)
class Width:
    """``full`` hidden neurons reading every input, plus one reading ``partial_inputs`` (0: none)."""

    full: int
    partial_inputs: int = 0

    @property
    def hidden(self) -> int:
        """Number of neurons of the (first) hidden layer, the partial one included."""
        return self.full + (1 if self.partial_inputs else 0)


def _width(width: Width | int) -> Width:
    return width if isinstance(width, Width) else Width(width)


def fcnn_params(in_features: int, width: Width | int, out_features: int) -> int:
    """Parameters in use of the one-hidden-layer baseline, biases included."""
    width = _width(width)
    params = width.full * (in_features + 1 + out_features) + out_features
    if width.partial_inputs:
        params += width.partial_inputs + 1 + out_features
    return params


def fcnn2_params(in_features: int, width: Width | int, out_features: int) -> int:
    """Parameters in use of the two-hidden-layer baseline, biases included.

    Both hidden layers have ``width.full`` neurons; the partial neuron, if any, is an extra one in
    the first layer that reads ``width.partial_inputs`` inputs and feeds every second-layer neuron.
    """
    width = _width(width)
    w = width.full
    params = w * (in_features + 1) + w * (w + 1) + out_features * (w + 1)
    if width.partial_inputs:
        params += width.partial_inputs + 1 + w
    return params


def _closest(candidates: list[Width], count, target_params: int) -> Width:
    return min(candidates, key=lambda width: abs(count(width) - target_params))


def matching_width(in_features: int, out_features: int, target_params: int) -> Width:
    """The one-hidden-layer width whose parameter count is closest to ``target_params``.

    Above one neuron's count, the count is within ``out_features // 2 + 1`` of the target.
    """
    per_neuron = in_features + 1 + out_features
    full = max(1, (target_params - out_features) // per_neuron)
    remainder = target_params - fcnn_params(in_features, full, out_features)
    # Inputs the extra neuron reads to land on the target; one input when even that overshoots.
    partial = min(max(remainder - 1 - out_features, 1), in_features - 1)
    candidates = [Width(full), Width(full + 1)]
    if partial >= 1:
        candidates.append(Width(full, partial))
    return _closest(
        candidates, lambda width: fcnn_params(in_features, width, out_features), target_params
    )


def matching_width2(in_features: int, out_features: int, target_params: int) -> Width:
    """The two-hidden-layer width whose parameter count is closest to ``target_params``.

    Above one neuron's count, the count is within ``(width.full + out_features) // 2 + 1`` of
    the target, and on it when the remainder over whole neurons is from ``width.full + 2`` to
    ``width.full + in_features + 1`` (what a partial neuron in the first layer costs).
    """

    def count(width: Width) -> int:
        return fcnn2_params(in_features, width, out_features)

    # count(Width(w)) = w**2 + (in + out + 2) w + out grows with w: the largest w not above target.
    b = in_features + out_features + 2
    root = (-b + (b * b + 4 * max(0, target_params - out_features)) ** 0.5) / 2
    full = max(1, int(root))
    while full > 1 and count(Width(full)) > target_params:
        full -= 1
    while count(Width(full + 1)) <= target_params:
        full += 1
    remainder = target_params - count(Width(full))
    # Inputs the extra neuron reads to land on the target; one input when even that overshoots.
    partial = min(max(remainder - 1 - full, 1), in_features)
    candidates = [Width(full), Width(full + 1), Width(full, partial)]
    return _closest(candidates, count, target_params)


def partial_input_mask(
    rows: int, in_features: int, partial_inputs: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``(rows, in_features)`` bool: every row reads every input, but the last, when partial.

    The last row reads ``partial_inputs`` inputs drawn uniformly without replacement from
    ``generator`` (``0``: the last row reads every input too).
    """
    mask = torch.ones(rows, in_features, dtype=torch.bool)
    if partial_inputs:
        chosen = torch.randperm(in_features, generator=generator)[:partial_inputs]
        mask[-1] = False
        mask[-1, chosen] = True
    return mask


def _initialise(
    layers: tuple[nn.Linear, ...], bias_bound: float, generator: torch.Generator | None
) -> None:
    with torch.no_grad():
        for layer in layers:
            nn.init.xavier_uniform_(layer.weight, generator=generator)
            nn.init.uniform_(layer.bias, -bias_bound, bias_bound, generator=generator)


class _InputMasked(nn.Module):
    """Reads its first layer's weight through ``input_mask``, a bool buffer, as 0/1 of the
    weight's dtype. The 0/1 copy is made again whenever the buffer is replaced or its contents
    change in any way (``load_state_dict``, ``copy_``, ``.data``, a numpy view, a move to another
    device): the cache compares contents, as the kernels' does, not the version counter, which
    edits through ``.data`` or numpy do not move. A bool mask would be converted on every call,
    more than half of the masking's time (one thread, 104 x 784)."""

    input_mask: torch.Tensor  # (hidden, in) bool, a buffer

    def _masked(self, weight: torch.Tensor) -> torch.Tensor:
        mask = self.input_mask
        key = (weight.dtype, weight.device)
        cached = self.__dict__.get("_mask_cache")
        # The cache holds the mask itself: no other tensor can take its place at its address.
        if (
            cached is None
            or cached[0] is not mask
            or cached[3] != key
            or not unchanged(cached[1], cached[2], mask)
        ):
            snapshot = mask.detach().clone(memory_format=torch.contiguous_format)
            saved = comparable(snapshot)
            factor = mask.to(device=weight.device, dtype=weight.dtype)
            cached = (mask, snapshot, saved, key, factor)
            self.__dict__["_mask_cache"] = cached
        return weight * cached[4]


class FCNN(_InputMasked):
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
        Source of randomness for the initialisation, then for the partial neuron's inputs.
    """

    input_mask: torch.Tensor  # (hidden, in) bool, a buffer

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
        self.width = _width(width)
        self.in_features = in_features
        self.out_features = out_features
        self.hidden = nn.Linear(in_features, self.width.hidden)
        self.output = nn.Linear(self.width.hidden, out_features)
        _initialise((self.hidden, self.output), bias_bound, generator)
        # Drawn after the weights, so a model without a partial neuron is initialised as before.
        mask = partial_input_mask(
            self.width.hidden, in_features, self.width.partial_inputs, generator
        )
        self.register_buffer("input_mask", mask)  # (hidden, in); saved in the state_dict

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores, ``(B, out_features)``."""
        weight = self._masked(self.hidden.weight)
        return self.output(F.relu(F.linear(x, weight, self.hidden.bias)))

    def effective_params(self) -> int:
        """Parameters in use (the partial neuron's unread inputs do not count)."""
        return fcnn_params(self.in_features, self.width, self.out_features)


class FCNN2(_InputMasked):
    """Two-hidden-layer ReLU network of equal widths; the first layer may have one partial neuron.

    Parameters
    ----------
    in_features, out_features : int
        Input and output sizes.
    width : Width or int
        ``width.full`` neurons per hidden layer, plus the first layer's partial neuron (see
        :func:`matching_width2`).
    bias_bound : float, default 0.1
        Biases are initialised uniformly in ``[-bias_bound, bias_bound]``, weights Xavier-uniform.
    generator : torch.Generator, optional
        Source of randomness for the initialisation, then for the partial neuron's inputs.
    """

    input_mask: torch.Tensor  # (hidden, in) bool, a buffer

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
        self.width = _width(width)
        self.in_features = in_features
        self.out_features = out_features
        self.first = nn.Linear(in_features, self.width.hidden)
        self.second = nn.Linear(self.width.hidden, self.width.full)
        self.output = nn.Linear(self.width.full, out_features)
        _initialise((self.first, self.second, self.output), bias_bound, generator)
        mask = partial_input_mask(
            self.width.hidden, in_features, self.width.partial_inputs, generator
        )
        self.register_buffer("input_mask", mask)  # (hidden, in); saved in the state_dict

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores, ``(B, out_features)``."""
        first = F.relu(F.linear(x, self._masked(self.first.weight), self.first.bias))
        return self.output(F.relu(self.second(first)))

    def effective_params(self) -> int:
        """Parameters in use (the partial neuron's unread inputs do not count)."""
        return fcnn2_params(self.in_features, self.width, self.out_features)
