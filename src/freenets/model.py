"""The FreeNet module (paper, sections 3.1 and 5).

An encoder maps the input to all k neurons; neuron j also receives ``weight[j, i] * h[i]`` from
every earlier neuron i along the edges of the Neural Connectivity Graph (``mask``); a decoder maps
the k activations to the outputs. Like nanoGPT's causal ``tril`` buffer, the graph is a bool buffer:
weights are stored for every position, and masked ones are kept but inactive.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from freenets import graph
from freenets.compact import SparseFreeNet, freenet_flops
from freenets.kernels import dag_activations


class FreeNet(nn.Module):
    """A layer-free network over ``n_neurons`` neurons whose connectivity is a DAG.

    Parameters
    ----------
    in_features : int
        Size of each input sample.
    n_neurons : int
        Number of neurons k.
    out_features : int
        Size of each output (e.g. number of classes).
    bias_bound : float, default 0.1
        Biases are initialised uniformly in ``[-bias_bound, bias_bound]``.
    generator : torch.Generator, optional
        Source of randomness for the initialisation.
    encoder : nn.Module, optional
        A module mapping inputs to ``n_neurons`` values (e.g. a convolutional stem). Defaults to
        ``nn.Linear(in_features, n_neurons)``, whose bias is the neurons' bias.
    sparse_grad : bool, default False
        Give ``weight`` a sparse gradient, as ``nn.Embedding(sparse=True)`` does: a sparse COO
        tensor over the active edges, never a ``(k, k)`` matrix. ``weight`` stays a dense
        parameter; the optimiser must take sparse gradients
        (:class:`freenets.training.optim.EdgeAdam` keeps its state on the edges alone;
        ``torch.optim.SparseAdam`` and SGD without momentum take them too). May be set at any
        time; it counts at the next call.

    Notes
    -----
    Neuron j computes ``relu(encoder(x)[j] + sum_i weight[j, i] * mask[j, i] * h[i])``.
    ``mask[j, i]`` is the edge from neuron i to neuron j and exists only for ``i < j``.
    """

    # A buffer (register_buffer), so nn.Module's __getattr__ would type it Tensor | Module.
    mask: torch.Tensor

    def __init__(
        self,
        in_features: int,
        n_neurons: int,
        out_features: int,
        *,
        bias_bound: float = 0.1,
        generator: torch.Generator | None = None,
        encoder: nn.Module | None = None,
        sparse_grad: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_features", in_features),
            ("n_neurons", n_neurons),
            ("out_features", out_features),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.in_features = in_features
        self.n_neurons = n_neurons
        self.out_features = out_features
        self.bias_bound = bias_bound
        self.sparse_grad = sparse_grad
        # nn.Linear initialises itself from torch's global generator; reset_parameters then
        # draws from ``generator``. Forking keeps the global stream untouched.
        with torch.random.fork_rng(devices=[]):
            self.encoder = encoder if encoder is not None else nn.Linear(in_features, n_neurons)
            self.decoder = nn.Linear(n_neurons, out_features)
        self.weight = nn.Parameter(torch.empty(n_neurons, n_neurons))
        self.register_buffer("mask", graph.dense_mask(n_neurons))
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Xavier (Glorot) uniform for every weight matrix, biases uniform within ``bias_bound``."""
        with torch.no_grad():
            linears = [self.decoder]
            if isinstance(self.encoder, nn.Linear):
                linears.insert(0, self.encoder)
            for linear in linears:
                nn.init.xavier_uniform_(linear.weight, generator=generator)
                nn.init.uniform_(
                    linear.bias, -self.bias_bound, self.bias_bound, generator=generator
                )
            nn.init.xavier_uniform_(self.weight, generator=generator)

    def activations(self, x: torch.Tensor) -> torch.Tensor:
        """The neurons' activations ``h``, shape ``(B, k)``."""
        z = self.encoder(x)  # (B, k)
        if z.dim() != 2 or z.shape[1] != self.n_neurons:
            raise ValueError(
                f"the encoder must output (batch, {self.n_neurons}) values, got {tuple(z.shape)}"
            )
        return dag_activations(z, self.weight, self.mask, sparse_grad=self.sparse_grad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The decoder's outputs, shape ``(B, out_features)``."""
        return self.decoder(self.activations(x))

    # ------------------------------------------------------------------ topology and size

    @property
    def n_edges(self) -> int:
        """Number of active inter-neuron edges."""
        return graph.n_edges(self.mask)

    def effective_params(self) -> int:
        """Parameters in use: encoder, active edges and decoder (masked weights do not count)."""
        encoder = sum(p.numel() for p in self.encoder.parameters())
        decoder = sum(p.numel() for p in self.decoder.parameters())
        return encoder + self.n_edges + decoder

    def flops(self, *, dense: bool = False) -> int:
        """FLOPs per sample of one forward pass (2 per multiply-add, 1 per bias, ReLU free).

        Parameters
        ----------
        dense : bool, default False
            Count the dense initial graph (every edge ``i < j``) instead of the current one.
        """
        k = self.n_neurons
        edges = k * (k - 1) // 2 if dense else self.n_edges
        return freenet_flops(self.encoder, edges, self.decoder)

    def compact(self) -> SparseFreeNet:
        """An inference-only copy that stores only the active edges."""
        return SparseFreeNet(
            copy.deepcopy(self.encoder), copy.deepcopy(self.decoder), self.weight, self.mask
        )

    def extra_repr(self) -> str:
        return f"n_neurons={self.n_neurons}, edges={self.n_edges}"

    # ------------------------------------------------------------------ Claim 4.1

    @classmethod
    def from_sequential(cls, sequential: nn.Sequential) -> FreeNet:
        """The FreeNet computing exactly what a Linear/ReLU MLP computes (Claim 4.1).

        Parameters
        ----------
        sequential : nn.Sequential
            ``Linear, ReLU, Linear, ReLU, ..., Linear`` with at least one hidden layer.

        Returns
        -------
        FreeNet
            Neurons numbered layer by layer, the mask of the layered graph, the first layer as the
            encoder (other neurons get a zero encoder row and keep their bias), the last as the
            decoder.
        """
        modules = list(sequential)
        # Kept only if every other module is a Linear with bias, which well_formed checks.
        linears = [m for m in modules[0::2] if isinstance(m, nn.Linear) and m.bias is not None]
        activations = modules[1::2]
        well_formed = (
            len(modules) >= 3
            and len(modules) % 2 == 1
            and len(linears) == len(modules[0::2])
            and all(isinstance(m, nn.ReLU) for m in activations)
        )
        if not well_formed:
            raise ValueError(
                "from_sequential expects Linear, ReLU, Linear, ..., ReLU, Linear "
                "(Linear layers with bias, at least one hidden layer)"
            )
        for previous, following in zip(linears[:-1], linears[1:], strict=True):
            if previous.out_features != following.in_features:
                raise ValueError("consecutive Linear layers have mismatched sizes")
        hidden = linears[:-1]
        widths = [layer.out_features for layer in hidden]
        first, last = linears[0], linears[-1]
        model = cls(first.in_features, sum(widths), last.out_features)
        model.to(dtype=first.weight.dtype, device=first.weight.device)
        encoder = model.encoder
        assert isinstance(encoder, nn.Linear)  # the default encoder: no encoder was passed
        starts = [sum(widths[:index]) for index in range(len(widths))]
        with torch.no_grad():
            encoder.weight.zero_()
            encoder.weight[: widths[0]] = first.weight
            model.weight.zero_()
            for layer, start, width in zip(hidden, starts, widths, strict=True):
                encoder.bias[start : start + width] = layer.bias
            for index in range(1, len(hidden)):
                rows = slice(starts[index], starts[index] + widths[index])
                cols = slice(starts[index - 1], starts[index - 1] + widths[index - 1])
                model.weight[rows, cols] = hidden[index].weight
            model.mask.copy_(graph.layered_mask(widths))
            model.decoder.weight.zero_()
            model.decoder.weight[:, starts[-1] :] = last.weight
            model.decoder.bias.copy_(last.bias)
        return model
