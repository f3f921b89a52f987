"""Hand-set networks that solve the tasks of Theorem 1's experiment (paper, section 4).

The constructions (what the networks can EXPRESS, apart from what training finds) are written in
the raw variables (the bit count ``s``, or x in [0, 1]) and moved onto the centred inputs of the
tasks (:mod:`freenets.experiments.expressivity_tasks`) by :func:`_centre`, which only changes
encoder weights and biases:

- parity, FreeNet: a cascade of folds ``r <- r - 2 relu(r - c)`` (c an integer, so the parity of
  r is kept) halves the range of the bit count per neuron; two neurons finish a range of at most
  3. That is ``2 + folds`` neurons: 2 for N = 3, 3 for N = 4..6, 4 for N = 7..8 (compare
  ``log2(N + 1)`` for Wilamowski et al.'s fully connected cascade, IJCNN 2003). Every fold reads
  the input and all earlier neurons; the decoder reads the last two.
- parity, single hidden layer: ``relu(s - t)`` for t = 0..N-1, N neurons (Wilamowski et al.).
- sawtooth, FreeNet: ``T(r) = 2r - 4 relu(r - 1/2)`` needs one neuron when r reaches the next
  neuron linearly (the FreeNet's edges and input do that), plus one neuron ``relu(x) = x`` so the
  decoder can read x: m + 1 neurons.
- sawtooth, layered (Telgarsky): ``T(r) = 2 relu(r) - 4 relu(r - 1/2)``, two neurons per layer,
  m layers: 2m neurons.
- poly: no ReLU network equals a polynomial of degree 2 or more on an interval (it is piecewise
  linear), so the sketch's "no error" cannot hold; the constructions approximate. FreeNet, d <= 2:
  Yarotsky's ``x**2 ~ x - sum_s T^s(x) / 4**s`` (the sawtooth neurons, read by the decoder).
  Layered, any d: one hidden layer interpolating at equispaced points. Both then set the
  decoder's bias to the mean residual (the least-squares constant).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from freenets.experiments.expressivity_nets import (
    NetBatch,
    Scores,
    Topology,
    evaluate,
    freenet_topology,
    layered_topology,
    solved,
)
from freenets.experiments.expressivity_tasks import Task, polynomial

LOGIT_MARGIN = 10.0  # constructions scale their logit so that every |logit| is at least this


@dataclass(frozen=True, eq=False)
class Construction:
    """Hand-set weights for one task: ``topology`` names the row (``freenet-constructed`` or
    ``layered-constructed:2-2``), ``nets`` holds the one network."""

    topology: str
    nets: NetBatch

    @property
    def n_neurons(self) -> int:
        """Number of neurons k."""
        return self.nets.n_neurons


class _Builder:
    """Weights of one network in the raw variables, filled neuron by neuron (float64)."""

    def __init__(self, wiring: Topology, in_features: int) -> None:
        k = wiring.n_neurons
        self.wiring = wiring
        self.encoder_weight = torch.zeros(k, in_features, dtype=torch.float64)
        self.encoder_bias = torch.zeros(k, dtype=torch.float64)
        self.weight = torch.zeros(k, k, dtype=torch.float64)
        self.decoder_weight = torch.zeros(k, dtype=torch.float64)
        self.decoder_bias = 0.0

    def neuron(self, j: int, line: torch.Tensor, bias: float) -> None:
        """Neuron j gets ``relu(line . (raw input, h_0, ..., h_{k-1}) + bias)``."""
        d = self.encoder_weight.shape[1]
        self.encoder_weight[j] = line[:d]
        self.weight[j] = line[d:]
        self.encoder_bias[j] = bias

    def build(self, name: str) -> Construction:
        """Centre the inputs, check the masks allow every weight set, and wrap as a batch."""
        weight, bias = _centre(self.encoder_weight, self.encoder_bias)
        wiring = self.wiring
        assert not (self.weight != 0)[~wiring.edges].any(), "an edge outside the topology"
        assert not (weight != 0)[~wiring.inputs].any(), "an input outside the topology"
        assert not (self.decoder_weight != 0)[~wiring.outputs].any(), "an output outside it"
        nets = NetBatch(
            encoder_weight=weight[None].float(),
            encoder_bias=bias[None].float(),
            weight=self.weight[None].float(),
            decoder_weight=self.decoder_weight[None].float(),
            decoder_bias=torch.tensor([self.decoder_bias], dtype=torch.float32),
            inputs=wiring.inputs[None],
            edges=wiring.edges[None],
            outputs=wiring.outputs[None],
        )
        return Construction(name, nets)


def _centre(weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder weights for centred inputs ``u = 2 v - 1`` computing what ``weight`` does on v."""
    # a . v + b = a . (u + 1) / 2 + b
    return weight / 2, bias + weight.sum(dim=1) / 2


def _parity_folds(n_bits: int) -> list[int]:
    """The fold points c that take the bit count's range [0, N] down to at most [0, 3]."""
    folds, top = [], n_bits
    while top > 3:
        top = math.ceil(top / 2)
        folds.append(top)
    return folds


def parity_freenet(n_bits: int) -> Construction:
    """A FreeNet of ``len(folds) + 2`` neurons whose logit has the parity's sign (module doc)."""
    folds = _parity_folds(n_bits)
    k = len(folds) + 2
    build = _Builder(freenet_topology(k), n_bits)
    # r as a linear form over (bits, h): it starts as the bit count s
    r = torch.cat([torch.ones(n_bits), torch.zeros(k)]).double()
    for j, c in enumerate(folds):
        build.neuron(j, r, -float(c))  # h_j = relu(r - c)
        r = r.clone()
        r[n_bits + j] -= 2  # r <- r - 2 h_j: the fold keeps r's parity (2c is even)
    a, b = len(folds), len(folds) + 1
    # r is now in {0, .., 3}: h_a = relu(r - 1) is 0, 0, 1, 2 and h_b = relu(r - 3 h_a) is
    # 0, 1, 0, 0, so -1 + 2 h_b + 0.75 h_a is -1, 1, -0.25, 0.5: the parity's sign
    build.neuron(a, r, -1.0)
    finish = r.clone()
    finish[n_bits + a] -= 3
    build.neuron(b, finish, 0.0)
    scale = LOGIT_MARGIN / 0.25
    build.decoder_weight[a] = 0.75 * scale
    build.decoder_weight[b] = 2.0 * scale
    build.decoder_bias = -1.0 * scale
    return build.build("freenet-constructed")


def parity_single_layer(n_bits: int) -> Construction:
    """One hidden layer of ``n_bits`` neurons ``relu(s - t)`` interpolating -1, +1, -1, ..."""
    build = _Builder(layered_topology([n_bits]), n_bits)
    for t in range(n_bits):
        build.neuron(t, torch.cat([torch.ones(n_bits), torch.zeros(n_bits)]).double(), -float(t))
        # slope +2 from s = 0 to 1, then it turns by -4, +4, ... at each integer
        build.decoder_weight[t] = LOGIT_MARGIN * (2.0 if t == 0 else 4.0 * (-1) ** t)
    build.decoder_bias = -LOGIT_MARGIN
    return build.build(f"layered-constructed:{n_bits}")


def _tent_cascade(build: _Builder, levels: int, first: int) -> list[torch.Tensor]:
    """Neurons ``first .. first + levels - 1`` compute the folds of ``T^1 .. T^levels``.

    Returns the linear forms of ``r_0 = x, r_1 = T(x), ..., r_levels`` over (x, h); each fold
    neuron reads the input and the earlier fold neurons, ``T(r) = 2r - 4 relu(r - 1/2)``.
    """
    k = build.wiring.n_neurons
    r = torch.zeros(1 + k, dtype=torch.float64)
    r[0] = 1.0
    forms = [r]
    for level in range(levels):
        j = first + level
        build.neuron(j, r, -0.5)
        r = 2 * r
        r[1 + j] -= 4
        forms.append(r)
    return forms


def _read_linear(build: _Builder, form: torch.Tensor, x_neuron: int) -> torch.Tensor:
    """The decoder weights reading a linear form over (x, h), with ``h[x_neuron] = x``."""
    weights = form[1:].clone()
    weights[x_neuron] += form[0]
    return weights


def sawtooth_freenet(levels: int) -> Construction:
    """``T^levels`` exactly, by a FreeNet of ``levels + 1`` neurons (module doc)."""
    build = _Builder(freenet_topology(levels + 1), 1)
    build.neuron(0, torch.cat([torch.ones(1), torch.zeros(levels + 1)]).double(), 0.0)  # x
    forms = _tent_cascade(build, levels, first=1)
    build.decoder_weight = _read_linear(build, forms[-1], 0)
    return build.build("freenet-constructed")


def sawtooth_layered(levels: int) -> Construction:
    """``T^levels`` exactly, by Telgarsky's layered net of two neurons per layer."""
    widths = [2] * levels
    k = 2 * levels
    build = _Builder(layered_topology(widths), 1)
    for layer in range(levels):
        line = torch.zeros(1 + k, dtype=torch.float64)
        if layer == 0:
            line[0] = 1.0
        else:  # r = T(previous r) = 2 relu(r) - 4 relu(r - 1/2), read off the previous layer
            line[1 + 2 * (layer - 1)] = 2.0
            line[2 + 2 * (layer - 1)] = -4.0
        build.neuron(2 * layer, line, 0.0)
        build.neuron(2 * layer + 1, line, -0.5)
    build.decoder_weight[k - 2] = 2.0
    build.decoder_weight[k - 1] = -4.0
    return build.build("layered-constructed:" + "-".join(map(str, widths)))


def _fit_bias(construction: Construction, task: Task) -> Construction:
    """Set the decoder bias to the mean residual on the task's grid (least-squares constant)."""
    with torch.no_grad():
        residual = task.targets - construction.nets.forward(task.inputs)[0]
        construction.nets.decoder_bias += residual.mean()
    return construction


def polynomial_freenet(degree: int, n_neurons: int, task: Task) -> Construction | None:
    """Yarotsky's approximation with ``n_neurons - 1`` tent levels, for degree 1 or 2 only."""
    if degree > 2:
        return None
    build = _Builder(freenet_topology(n_neurons), 1)
    build.neuron(0, torch.cat([torch.ones(1), torch.zeros(n_neurons)]).double(), 0.0)  # x
    if degree == 1:
        build.decoder_weight[0] = 1.0
        return build.build("freenet-constructed")
    forms = _tent_cascade(build, n_neurons - 1, first=1)
    # (x + x^2) / 2 ~ x - (1/2) sum_s T^s(x) / 4^s (the interpolant at 2^(k-1) + 1 points)
    form = forms[0].clone()
    for level in range(1, n_neurons):
        form -= forms[level] / (2 * 4**level)
    build.decoder_weight = _read_linear(build, form, 0)
    return _fit_bias(build.build("freenet-constructed"), task)


def interpolant_single_layer(
    function: Callable[[torch.Tensor], torch.Tensor], n_neurons: int, task: Task
) -> Construction:
    """One hidden layer interpolating ``function`` at ``n_neurons + 1`` equispaced points of
    [0, 1] (neurons ``relu(x - i / n)``), then the least-squares decoder bias."""
    knots = torch.linspace(0.0, 1.0, n_neurons + 1, dtype=torch.float64)
    values = function(knots)
    slopes = (values[1:] - values[:-1]) * n_neurons
    build = _Builder(layered_topology([n_neurons]), 1)
    for i in range(n_neurons):
        build.neuron(
            i, torch.cat([torch.ones(1), torch.zeros(n_neurons)]).double(), -float(knots[i])
        )
        build.decoder_weight[i] = slopes[i] - (slopes[i - 1] if i else 0.0)
    build.decoder_bias = float(values[0])
    return _fit_bias(build.build(f"layered-constructed:{n_neurons}"), task)


def constructions(task: Task, max_neurons: int) -> list[Construction]:
    """The hand-set networks for ``task`` with at most ``max_neurons`` neurons.

    For parity and the sawtooth, each construction at its own size (whether it fits or not is
    up to ``max_neurons``). For the polynomial, the smallest size at which each construction
    meets the tolerance, or the largest tried if none does.
    """
    if task.family == "parity":
        candidates = [parity_freenet(task.size), parity_single_layer(task.size)]
        return [c for c in candidates if c.n_neurons <= max_neurons]
    if task.family == "sawtooth":
        candidates = [sawtooth_freenet(task.size), sawtooth_layered(task.size)]
        return [c for c in candidates if c.n_neurons <= max_neurons]
    found = []
    builders: list[Callable[[int], Construction | None]] = [
        lambda k: polynomial_freenet(task.size, k, task),
        lambda k: interpolant_single_layer(lambda x: polynomial(x, task.size), k, task),
    ]
    for make in builders:
        last = None
        for k in range(1, max_neurons + 1):
            candidate = make(k)
            if candidate is None:
                break
            last = candidate
            if bool(solved(score(candidate, task), task.tolerance)[0]):
                break
        if last is not None:
            found.append(last)
    return found


def score(construction: Construction, task: Task) -> Scores:
    """The construction's loss (and accuracy) on the task, evaluated like a trained network."""
    with torch.no_grad():
        return evaluate(construction.nets, task.inputs, task.targets, task.kind)
