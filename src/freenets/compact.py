"""Inference with only the active edges, and the analytic FLOP count (paper, sections 3.1 and 5).

After FreeEvolve has pruned, most of a FreeNet's ``(k, k)`` weight matrix is masked. A
:class:`SparseFreeNet` keeps the encoder, the decoder and the active edges as a CSR list (target
neuron by target neuron), so its size and its work grow with the edges, not with ``k^2``; on the
CPU it runs the compiled edge loops of :mod:`freenets.kernels.cpu`. (For ONNX export,
:class:`freenets.export.CompactFreeNet` is a traceable, level-by-level copy instead.)

FLOPs are counted per sample for one forward pass: a multiply-add is 2 operations, a bias 1, a
ReLU 0. Encoder ``2 * in * k + k``, graph ``2 * edges``, decoder ``2 * k * out + out``.
"""

from __future__ import annotations

import torch
from torch import nn

from freenets import graph as graphs


def linear_flops(layer: nn.Linear) -> int:
    """FLOPs of one ``nn.Linear`` per sample: 2 per multiply-add, 1 per bias."""
    bias = layer.out_features if layer.bias is not None else 0
    return 2 * layer.in_features * layer.out_features + bias


def freenet_flops(encoder: nn.Module, n_edges: int, decoder: nn.Linear) -> int:
    """FLOPs per sample of a FreeNet with ``n_edges`` active edges.

    Raises
    ------
    ValueError
        If the encoder is not an ``nn.Linear`` (its cost is not known here).
    """
    if not isinstance(encoder, nn.Linear):
        raise ValueError("FLOPs are counted for an nn.Linear encoder only")
    return linear_flops(encoder) + 2 * n_edges + linear_flops(decoder)


class SparseFreeNet(nn.Module):
    """A FreeNet for inference that stores only its active edges (made by ``FreeNet.compact``).

    Parameters
    ----------
    encoder, decoder : nn.Module
        Copies of the FreeNet's encoder and decoder.
    weight, mask : torch.Tensor
        The FreeNet's ``(k, k)`` weight and graph; only ``weight[mask]`` is kept.

    Notes
    -----
    ``forward`` runs without autograd: the model is for inference. Outputs equal the FreeNet's
    up to float rounding.
    """

    # Buffers (register_buffer), which nn.Module's __getattr__ would type Tensor | Module.
    indptr: torch.Tensor
    sources: torch.Tensor
    values: torch.Tensor

    def __init__(
        self, encoder: nn.Module, decoder: nn.Linear, weight: torch.Tensor, mask: torch.Tensor
    ) -> None:
        super().__init__()
        graphs.check_mask(mask, weight.shape[0])
        self.n_neurons = weight.shape[0]
        self.encoder = encoder
        self.decoder = decoder
        targets, sources = mask.nonzero(as_tuple=True)  # sorted by target, then source
        counts = torch.bincount(targets, minlength=self.n_neurons)
        indptr = torch.zeros(self.n_neurons + 1, dtype=torch.int64, device=mask.device)
        torch.cumsum(counts, 0, out=indptr[1:])
        self.register_buffer("indptr", indptr)  # edges into neuron j: indptr[j]:indptr[j + 1]
        self.register_buffer("sources", sources)
        self.register_buffer("values", weight.detach()[targets, sources].clone())

    @property
    def n_edges(self) -> int:
        """Number of stored edges."""
        return int(self.values.numel())

    def flops(self) -> int:
        """FLOPs per sample of one forward pass (see the module docstring)."""
        return freenet_flops(self.encoder, self.n_edges, self.decoder)

    @torch.no_grad()
    def activations(self, x: torch.Tensor) -> torch.Tensor:
        """The neurons' activations ``h``, ``(B, k)``."""
        z = self.encoder(x)
        if z.device.type == "cpu" and z.dtype in (torch.float32, torch.float64):
            from freenets.kernels import cpu as kernels_cpu

            values = self.values.to(z.dtype).contiguous()
            h, _ = kernels_cpu.csr_forward(
                z, self.indptr.numpy(), self.sources.numpy(), values.numpy()
            )
            return h
        # Elsewhere, rebuild the dense weight for the pure-torch path.
        from freenets.kernels import dag_activations

        k = self.n_neurons
        targets = torch.repeat_interleave(
            torch.arange(k, device=z.device), self.indptr[1:] - self.indptr[:-1]
        )
        weight = torch.zeros(k, k, dtype=z.dtype, device=z.device)
        weight[targets, self.sources] = self.values.to(z.dtype)
        mask = torch.zeros(k, k, dtype=torch.bool, device=z.device)
        mask[targets, self.sources] = True
        return dag_activations(z, weight, mask)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The decoder's outputs, ``(B, out_features)``."""
        return self.decoder(self.activations(x))
