"""Many tiny networks trained at once: the substrate of Theorem 1's experiment (paper, section 4).

Every network here is a FreeNet over the same k neurons (section 3.1, Figure 3) with three masks:
which neurons receive the encoder's input, which edges ``i -> j`` exist (``mask[j, i]``, strictly
lower-triangular), and which neurons the decoder reads. The dense FreeNet has all three full. A
layered MLP is a sub-graph of it (Claim 4.1): neurons numbered layer by layer, layer ``l`` fed by
all of layer ``l - 1`` and nothing else. To be faithful to the MLP it stands for, only the first
layer reads the input and only the last layer feeds the decoder; every neuron keeps its bias.
That is exactly what :meth:`freenets.model.FreeNet.from_sequential` builds (zero encoder rows
below the first layer, decoder columns of the last layer only), so a ``layered`` topology here
computes what an ``nn.Sequential`` of those widths computes.

Because only the masks differ, one code path trains them all: a batch of M networks holds weights
of shape ``(M, k, k)`` with masks of the same shape, runs the plain per-neuron recurrence of
:func:`freenets.kernels.reference_activations` vectorised over the models, and takes full-batch
Adam steps on the sum of the models' losses (Adam is elementwise, so the models do not interact).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Literal

import torch
from torch.nn import functional

from freenets import graph
from freenets.model import FreeNet

Kind = Literal["classification", "regression"]


@dataclass(frozen=True, eq=False)
class Topology:
    """The wiring of one network over ``k`` neurons.

    Attributes
    ----------
    name : str
        ``"freenet"`` or ``"layered:2-1-3"`` (the hidden widths, first layer first).
    inputs : torch.Tensor
        ``(k,)`` bool: the neurons that receive the encoder's input.
    edges : torch.Tensor
        ``(k, k)`` bool, strictly lower-triangular: ``edges[j, i]`` is the edge ``i -> j``.
    outputs : torch.Tensor
        ``(k,)`` bool: the neurons the decoder reads.
    widths : tuple of int or None
        The layer widths of a layered topology, ``None`` for the FreeNet.
    """

    name: str
    inputs: torch.Tensor
    edges: torch.Tensor
    outputs: torch.Tensor
    widths: tuple[int, ...] | None = None

    @property
    def n_neurons(self) -> int:
        """Number of neurons k."""
        return int(self.edges.shape[0])


def freenet_topology(n_neurons: int) -> Topology:
    """The dense FreeNet: input to every neuron, every edge ``i < j``, decoder from every neuron."""
    full = torch.ones(n_neurons, dtype=torch.bool)
    return Topology("freenet", full, graph.dense_mask(n_neurons), full.clone())


def layered_topology(widths: Sequence[int]) -> Topology:
    """The layered MLP with these hidden widths, as masks on the FreeNet substrate (Claim 4.1).

    Parameters
    ----------
    widths : sequence of int
        Positive layer widths, first layer first; the network has ``sum(widths)`` neurons.
    """
    widths = tuple(int(width) for width in widths)
    if not widths or min(widths) < 1:
        raise ValueError(f"layer widths must be positive, got {widths}")
    k = sum(widths)
    inputs = torch.zeros(k, dtype=torch.bool)
    inputs[: widths[0]] = True
    outputs = torch.zeros(k, dtype=torch.bool)
    outputs[k - widths[-1] :] = True
    name = "layered:" + "-".join(map(str, widths))
    return Topology(name, inputs, graph.layered_mask(list(widths)), outputs, widths)


def layered_splits(n_neurons: int) -> list[tuple[int, ...]]:
    """Every way to split ``n_neurons`` neurons into consecutive non-empty layers.

    There are ``2 ** (n_neurons - 1)`` of them (a cut or not after each of the first k - 1
    neurons), returned by number of layers, then widths in lexicographic order.
    """
    if n_neurons < 1:
        raise ValueError(f"n_neurons must be at least 1, got {n_neurons}")
    splits = []
    for n_cuts in range(n_neurons):
        for cuts in combinations(range(1, n_neurons), n_cuts):
            bounds = (0, *cuts, n_neurons)
            splits.append(tuple(b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True)))
    return sorted(splits, key=lambda widths: (len(widths), widths))


def topologies(n_neurons: int) -> list[Topology]:
    """The dense FreeNet, then every layered topology over ``n_neurons`` neurons."""
    return [freenet_topology(n_neurons)] + [
        layered_topology(widths) for widths in layered_splits(n_neurons)
    ]


def _xavier_bounds(
    topology: Topology, in_features: int, out_features: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-entry Xavier-uniform bounds of the encoder rows, the edges and the decoder columns.

    Each topology starts as its own network would: the FreeNet as :class:`FreeNet` initialises
    itself (one bound per matrix, fans ``(d, k)``, ``(k, k)``, ``(k, out)``), a layered one as its
    MLP would (fans of each layer's block). A layered net given the FreeNet's ``(k, k)`` bound
    would start with smaller weights than its own MLP, for no reason but the substrate.
    """
    k = topology.n_neurons

    def bound(fan_in: int, fan_out: int) -> float:
        return math.sqrt(6.0 / (fan_in + fan_out))

    if topology.widths is None:
        return (
            torch.full((k,), bound(in_features, k)),
            torch.full((k, k), bound(k, k)),
            torch.full((k,), bound(k, out_features)),
        )
    widths = topology.widths
    starts = [sum(widths[:index]) for index in range(len(widths))]
    encoder = torch.zeros(k)
    encoder[: widths[0]] = bound(in_features, widths[0])
    edges = torch.zeros(k, k)
    for layer in range(1, len(widths)):
        rows = slice(starts[layer], starts[layer] + widths[layer])
        cols = slice(starts[layer - 1], starts[layer - 1] + widths[layer - 1])
        edges[rows, cols] = bound(widths[layer - 1], widths[layer])
    decoder = torch.zeros(k)
    decoder[starts[-1] :] = bound(widths[-1], out_features)
    return encoder, edges, decoder


class BatchedRecurrence(torch.autograd.Function):
    """``h_j = relu(z_j + sum_{i<j} W[:, j, i] h_i)`` for M models at once, with its backward.

    ``z`` is ``(k, M, B)`` (neuron first, so each neuron's slice is contiguous), ``weight`` is
    ``(M, k, k)`` with the masks already applied. The forward is the reference recurrence of
    :func:`freenets.kernels.reference_activations`, run one neuron at a time; each neuron, once
    computed, adds its contribution to every later neuron (one fused multiply-add), which avoids
    the per-neuron stacks and index backward passes that autograd through the plain loop costs.
    Given the ReLU gates ``D = h > 0`` the backward is linear: ``g_j = D_j (dL/dh_j + sum_{l>j}
    W[:, l, j] g_l)``, solved from the last neuron back; ``dL/dz = g`` and
    ``dL/dW[m, j, i] = sum_b g_j h_i`` (section 5's recurrence, as in :mod:`freenets.kernels`).
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        k = z.shape[0]
        total = z.clone()  # (k, M, B): each neuron's pre-activation, filled in as we go
        h = torch.empty_like(z)
        for j in range(k):
            torch.clamp_min(total[j], 0, out=h[j])
            if j + 1 < k:
                # later neurons l > j receive W[:, l, j] * h_j
                total[j + 1 :].addcmul_(weight[:, j + 1 :, j].t()[:, :, None], h[j][None])
        ctx.save_for_backward(weight, h)
        return h

    @staticmethod
    def backward(ctx, grad_h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weight, h = ctx.saved_tensors
        k = h.shape[0]
        total = grad_h.contiguous().clone()  # (k, M, B)
        g = total  # g[j] overwrites total[j] once neuron j is done: no later step reads it
        for j in range(k - 1, -1, -1):
            g[j].masked_fill_(h[j] <= 0, 0)  # the ReLU gate D_j
            if j:
                # earlier neurons i < j receive W[:, j, i] * g_j
                total[:j].addcmul_(weight[:, j, :j].t()[:, :, None], g[j][None])
        # dL/dW[m, j, i] = sum_b g[j, m, b] h[i, m, b], for i < j only: the forward reads no
        # weight on or above the diagonal
        grad_weight = torch.bmm(g.permute(1, 0, 2), h.permute(1, 2, 0))
        return g, grad_weight.tril_(-1)


@dataclass
class NetBatch:
    """M networks with one output each, over the same k neurons, each with its own masks."""

    encoder_weight: torch.Tensor  # (M, k, d)
    encoder_bias: torch.Tensor  # (M, k)
    weight: torch.Tensor  # (M, k, k); weight[m, j, i] is the edge i -> j
    decoder_weight: torch.Tensor  # (M, k)
    decoder_bias: torch.Tensor  # (M,)
    inputs: torch.Tensor  # (M, k) bool
    edges: torch.Tensor  # (M, k, k) bool
    outputs: torch.Tensor  # (M, k) bool

    @classmethod
    def initialise(
        cls,
        wirings: Sequence[Topology],
        in_features: int,
        *,
        generator: torch.Generator,
        bias_bound: float = 0.1,
        dtype: torch.dtype = torch.float32,
    ) -> NetBatch:
        """Random networks, one per entry of ``wirings`` (repeat a topology for restarts).

        Weights are Xavier-uniform with each topology's own fans (see :func:`_xavier_bounds`),
        biases uniform in ``[-bias_bound, bias_bound]`` as in :class:`FreeNet`, all drawn from
        ``generator``.
        """
        if not wirings:
            raise ValueError("a batch needs at least one network")
        k = wirings[0].n_neurons
        if any(topology.n_neurons != k for topology in wirings):
            raise ValueError("every network of a batch must have the same number of neurons")
        m = len(wirings)
        bounds = [_xavier_bounds(topology, in_features, 1) for topology in wirings]
        encoder_bound = torch.stack([b[0] for b in bounds]).to(dtype)  # (M, k)
        edge_bound = torch.stack([b[1] for b in bounds]).to(dtype)  # (M, k, k)
        decoder_bound = torch.stack([b[2] for b in bounds]).to(dtype)  # (M, k)

        def uniform(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=generator, dtype=dtype) * 2 - 1

        return cls(
            encoder_weight=uniform(m, k, in_features) * encoder_bound[:, :, None],
            encoder_bias=uniform(m, k) * bias_bound,
            weight=uniform(m, k, k) * edge_bound,
            decoder_weight=uniform(m, k) * decoder_bound,
            decoder_bias=uniform(m) * bias_bound,
            inputs=torch.stack([topology.inputs for topology in wirings]),
            edges=torch.stack([topology.edges for topology in wirings]),
            outputs=torch.stack([topology.outputs for topology in wirings]),
        )

    @property
    def n_models(self) -> int:
        """Number of networks M."""
        return int(self.weight.shape[0])

    @property
    def n_neurons(self) -> int:
        """Number of neurons k of every network."""
        return int(self.weight.shape[1])

    def parameters(self) -> list[torch.Tensor]:
        """The trainable tensors (masked entries included: they get zero gradients)."""
        return [
            self.encoder_weight,
            self.encoder_bias,
            self.weight,
            self.decoder_weight,
            self.decoder_bias,
        ]

    def activations(self, x: torch.Tensor) -> torch.Tensor:
        """The neurons' activations, ``(k, M, B)``, for inputs ``x`` of shape ``(B, d)``."""
        m, k, d = self.encoder_weight.shape
        encoder = self.encoder_weight * self.inputs[:, :, None].to(x.dtype)  # (M, k, d)
        # one matrix product straight into the neuron-first layout the recurrence wants
        z = (encoder.transpose(0, 1).reshape(k * m, d) @ x.t()).view(k, m, -1)  # (k, M, B)
        z = z + self.encoder_bias.t()[:, :, None]
        effective = self.weight * self.edges.to(x.dtype)  # (M, k, k)
        return BatchedRecurrence.apply(z, effective)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The decoders' outputs, ``(M, B)``."""
        h = self.activations(x)  # (k, M, B)
        decoder = self.decoder_weight * self.outputs.to(x.dtype)  # (M, k)
        return (h * decoder.t()[:, :, None]).sum(dim=0) + self.decoder_bias[:, None]

    def network(self, index: int) -> FreeNet:
        """Network ``index`` as a :class:`FreeNet` (masked encoder rows and decoder columns zero)."""
        k = self.n_neurons
        dtype = self.weight.dtype
        model = FreeNet(int(self.encoder_weight.shape[2]), k, 1).to(dtype)
        encoder, decoder = model.encoder, model.decoder
        assert isinstance(encoder, torch.nn.Linear)  # the default encoder
        mask = model.get_buffer("mask")
        with torch.no_grad():
            encoder.weight.copy_(self.encoder_weight[index] * self.inputs[index, :, None])
            encoder.bias.copy_(self.encoder_bias[index])
            model.weight.copy_(self.weight[index] * self.edges[index])
            mask.copy_(self.edges[index])
            decoder.weight.copy_((self.decoder_weight[index] * self.outputs[index])[None])
            decoder.bias.fill_(float(self.decoder_bias[index]))
        return model


@dataclass(frozen=True)
class Scores:
    """Per-model results of an evaluation or of training: ``(M,)`` tensors."""

    loss: torch.Tensor
    accuracy: torch.Tensor | None  # None for regression


def evaluate(nets: NetBatch, x: torch.Tensor, y: torch.Tensor, kind: Kind) -> Scores:
    """Each model's loss on ``(x, y)``: mean BCE (one logit, labels 0/1) or mean squared error.

    For classification, the accuracy counts ``logit > 0`` as class 1.
    """
    output = nets.forward(x)  # (M, B)
    target = y.to(output.dtype).expand_as(output)
    if kind == "classification":
        loss = functional.binary_cross_entropy_with_logits(output, target, reduction="none")
        accuracy = ((output > 0) == (target > 0.5)).to(output.dtype).mean(dim=1)
        return Scores(loss.mean(dim=1), accuracy)
    return Scores(((output - target) ** 2).mean(dim=1), None)


def solved(scores: Scores, tolerance: float) -> torch.Tensor:
    """``(M,)`` bool: 100% accuracy (classification) or mean squared error below ``tolerance``."""
    if scores.accuracy is not None:
        return scores.accuracy >= 1.0
    return scores.loss < tolerance


@dataclass(frozen=True)
class TrainSettings:
    """Full-batch Adam with a cosine-decayed step size.

    Attributes
    ----------
    steps : int
        Adam steps (each one full-batch evaluation of the current weights, then an update).
    learning_rate : float
        The initial step size; it decays to zero over ``steps`` (cosine).
    check_every : int
        Stop early, checked every this many steps, once every model has solved its task.
    """

    steps: int = 3000
    learning_rate: float = 0.01
    check_every: int = 100


def train(
    nets: NetBatch,
    x: torch.Tensor,
    y: torch.Tensor,
    kind: Kind,
    tolerance: float,
    settings: TrainSettings,
) -> Scores:
    """Train every network of ``nets`` in place; return each one's best scores over the steps.

    Every step evaluates the current weights on the whole data set before updating them, so the
    best loss and best accuracy are those of weights the network actually had (possibly at
    different steps). The models' losses are summed, so each model's gradient is its own.
    """
    parameters = nets.parameters()
    for tensor in parameters:
        tensor.requires_grad_(True)
    optimiser = torch.optim.Adam(parameters, lr=settings.learning_rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser,
        lambda step: 0.5 * (1 + math.cos(math.pi * min(step, settings.steps) / settings.steps)),
    )
    best_loss = torch.full((nets.n_models,), math.inf, dtype=x.dtype)
    best_accuracy = torch.zeros(nets.n_models, dtype=x.dtype) if kind == "classification" else None
    for step in range(settings.steps):
        scores = evaluate(nets, x, y, kind)
        with torch.no_grad():
            best_loss = torch.minimum(best_loss, scores.loss.detach())
            if best_accuracy is not None and scores.accuracy is not None:
                best_accuracy = torch.maximum(best_accuracy, scores.accuracy)
        optimiser.zero_grad(set_to_none=True)
        scores.loss.sum().backward()
        optimiser.step()
        schedule.step()
        if (step + 1) % settings.check_every == 0:
            if bool(solved(Scores(best_loss, best_accuracy), tolerance).all()):
                break
    with torch.no_grad():
        final = evaluate(nets, x, y, kind)
        best_loss = torch.minimum(best_loss, final.loss)
        if best_accuracy is not None and final.accuracy is not None:
            best_accuracy = torch.maximum(best_accuracy, final.accuracy)
    for tensor in parameters:
        tensor.requires_grad_(False)
    return Scores(best_loss, best_accuracy)
