"""Forward and backward passes of a FreeNet's neurons (paper, section 5, "Model and Training setup").

Neuron j computes ``h[:, j] = relu(z[:, j] + sum_{i<j} weight[j, i] * mask[j, i] * h[:, i])``
where ``z`` is the encoder's output: a nonlinear forward substitution over a DAG. Once the ReLU
gates ``D = (h > 0)`` are known the backward is linear, ``g = D (dL/dh + W^T g)``, solved from the
last neuron back; ``dL/dW = g^T h`` on active edges only, and ``dL/dz = g``.

- :func:`reference_activations`: a plain per-neuron loop through autograd. It is the definition
  every other path is tested against, and is kept for tests only.
- :func:`dag_activations`: the path models use, one :class:`torch.autograd.Function` with a fused
  forward and backward. It runs one of three methods, chosen per graph (:func:`choose_method`):

  ``"dense"``  (CPU) compiled loops over every edge, four samples and four neurons at a time,
             the batch split between torch's threads;
  ``"sparse"`` (CPU) compiled loops over the active edges only (CSR), for pruned graphs;
  ``"levels"`` (any device, any dtype) pure torch: the neurons grouped by depth in the DAG, one
  matrix product per level. Used on CUDA/MPS and wherever the graph is shallow.

  A graph without edges takes none of them (``"auto"`` only; the methods named above still run
  as they are): its neurons are ``torch.relu(z)``, and the weight, which the output no longer
  depends on, gets no gradient at all, as a parameter a loss does not use: ``weight.grad``
  stays ``None`` (zero, by PyTorch's convention), so that an optimiser skips the ``(k, k)``
  weight instead of updating it with zeros, and ``torch.autograd.grad`` needs
  ``allow_unused=True`` for it.

With ``sparse_grad=True`` the weight's gradient is a sparse COO tensor over the active edges,
as ``nn.Embedding(sparse=True)`` gives one: the sparse method computes the edges' gradients
alone, never a ``(k, k)`` matrix, and an optimiser that reads only those entries
(:class:`freenets.training.optim.EdgeAdam`) keeps no ``(k, k)`` state either.

A graph's structure (edge lists, CSR, levels) comes from :mod:`freenets.kernels.structure`,
cached while the mask's contents stay the same.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch.autograd.function import once_differentiable

from freenets.kernels.notice import compiling, first_use
from freenets.kernels.structure import Structure, structure

Method = Literal["auto", "dense", "sparse", "levels"]
METHODS = ("auto", "dense", "sparse", "levels")


def reference_activations(
    z: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Per-neuron reference forward, differentiable through autograd.

    Parameters
    ----------
    z : torch.Tensor
        ``(B, k)`` encoder outputs (the neurons' inputs, biases included).
    weight : torch.Tensor
        ``(k, k)`` inter-neuron weights; ``weight[j, i]`` is the edge ``i -> j``.
    mask : torch.Tensor
        ``(k, k)`` bool graph, strictly lower-triangular.

    Returns
    -------
    torch.Tensor
        ``(B, k)`` activations ``h``.
    """
    effective = weight * mask.to(weight.dtype)
    columns: list[torch.Tensor] = []
    for j in range(z.shape[1]):
        total = z[:, j]
        for i in range(j):
            total = total + effective[j, i] * columns[i]
        columns.append(torch.relu(total))
    if not columns:
        return z.new_zeros(z.shape)
    return torch.stack(columns, dim=1)


# ----------------------------------------------------------------------------- choosing a method

# Costs per sample in units of one multiply-add of the dense kernel, measured (forward and
# backward of the neurons alone, dense weight gradient, one and two threads, batch 128 and 1024,
# densities 20% to 90%) on the 2-core AMD EPYC. An edge of the sparse kernel costs less than a
# multiply-add of the dense one at k = 100 (the sparse path won at every density but one there),
# more the larger k (the sources of an edge come from further away in cache): the two crossed
# between 55% and 90% of the edges at k = 300 (the higher at batch 128) and between 35% and 55%
# at k = 1000. The level-scheduled pass does the dense work in a few large matrix products, plus
# about 2000 per level and a permutation if the neurons are not already sorted by level (two
# layers of 400: 0.72 of the dense kernel).
_LEVEL_COST = 2000.0


def _sparse_cost_per_edge(k: int) -> float:
    return min(6.0, max(1.0, (k / 100) ** 0.35))


def choose_method(structure: Structure, device: torch.device, dtype: torch.dtype) -> str:
    """``"dense"``, ``"sparse"`` or ``"levels"`` for a graph, by its edges and depth; ``"none"``
    for a graph without edges.

    Compiled CPU kernels exist for float32 and float64; everything else takes ``"levels"``.
    On the CPU the cheapest by a per-sample cost model measured on this project's 2-core
    machine is chosen (the constants are next to this function).
    """
    if structure.n_edges == 0:
        return "none"  # a ReLU: no copies, no kernel, no pass over the k x k weight
    if device.type != "cpu" or dtype not in (torch.float32, torch.float64):
        return "levels"
    if structure.is_dense:
        return "dense"
    k = structure.n_neurons
    costs = {"dense": k * (k - 1) / 2}
    costs["sparse"] = _sparse_cost_per_edge(k) * structure.n_edges + 2 * k
    if structure.depth <= 0.1 * k:  # only shallow graphs can gain from levels
        sorted_already = structure.level_order(device)[0] is None
        costs["levels"] = (
            0.8 * costs["dense"]
            + _LEVEL_COST * structure.depth
            + (0 if sorted_already else 4 * costs["dense"])
        )
    return min(costs, key=costs.__getitem__)


# --------------------------------------------------------------------------- pure-torch levels


def _levels_forward(z: torch.Tensor, effective: torch.Tensor, graph: Structure) -> torch.Tensor:
    order, bounds = graph.level_order(z.device)
    if order is not None:  # work in level order, where the weight is block-lower-triangular
        z = z[:, order]
        effective = effective[order[:, None], order]
    h = torch.empty_like(z)
    for start, stop in bounds:
        pre = z[:, start:stop]
        if start:
            pre = torch.addmm(pre, h[:, :start], effective[start:stop, :start].t())
        h[:, start:stop] = torch.relu(pre)
    return h if order is None else h[:, torch.argsort(order)]


def _levels_backward(
    grad_h: torch.Tensor,
    h: torch.Tensor,
    effective: torch.Tensor,
    mask: torch.Tensor,
    graph: Structure,
    need_weight: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(dL/dz, dL/dW)``, level by level from the last; ``mask`` is 0/1 of ``h``'s dtype."""
    order, bounds = graph.level_order(h.device)
    if order is not None:
        grad_h, h = grad_h[:, order], h[:, order]
        effective = effective[order[:, None], order]
    k = h.shape[1]
    g = torch.empty_like(grad_h)
    grad_weight = torch.zeros(k, k, dtype=h.dtype, device=h.device) if need_weight else None
    for start, stop in reversed(bounds):
        rhs = grad_h[:, start:stop]
        if stop < k:
            rhs = torch.addmm(rhs, g[:, stop:], effective[stop:, start:stop])
        g[:, start:stop] = rhs * (h[:, start:stop] > 0)
        if grad_weight is not None and start:
            # dL/dW[j, i] = sum_b g[b, j] h[b, i]: edges only reach a level from earlier ones.
            grad_weight[start:stop, :start] = g[:, start:stop].t() @ h[:, :start]
    if order is not None:
        inverse = torch.argsort(order)
        g = g[:, inverse]
        if grad_weight is not None:
            grad_weight = grad_weight[inverse[:, None], inverse]
    if grad_weight is not None:
        grad_weight.mul_(mask)
    return g, grad_weight


# ------------------------------------------------------------------------- the autograd function

# The compiled kernels, imported on first use (numba takes a while to import).
_cpu_module = None


def _cpu():
    global _cpu_module
    if _cpu_module is None:
        with compiling():
            from freenets.kernels import cpu as kernels_cpu

        _cpu_module = kernels_cpu
    return _cpu_module


def _forward(method: str, z: torch.Tensor, weight: torch.Tensor, graph: Structure):
    """``(h, saved)``: the activations and the tensors the backward of ``method`` needs.

    ``weight`` is detached; ``saved`` is ``(effective weight,)`` or, for ``"sparse"``, the tiled
    activations and the edges' weights.
    """
    if method == "levels":
        effective = weight * graph.float_mask(weight.dtype, weight.device)
        return _levels_forward(z, effective, graph), (effective,)
    if first_use(("forward", method, weight.dtype)):  # numba compiles each kernel on first use
        with compiling():
            return _compiled_forward(method, z, weight, graph)
    return _compiled_forward(method, z, weight, graph)


def _compiled_forward(method: str, z: torch.Tensor, weight: torch.Tensor, graph: Structure):
    if method == "sparse":
        h, h_tiles, values = (_cpu_module or _cpu()).sparse_forward(z, weight, graph)
        return h, (h_tiles, values)
    # The dense kernel reads only the strict lower triangle: a dense graph needs no masking.
    effective = weight if graph.is_dense else weight * graph.float_mask(weight.dtype)
    return (_cpu_module or _cpu()).dense_forward(z, effective), (effective,)


def _backward(ctx, grad_h: torch.Tensor):
    h, *saved = ctx.saved_tensors
    h = h.detach()
    need_z, need_weight = ctx.needs_input_grad[:2]
    method, graph, per_edge = ctx.method, ctx.graph, ctx.sparse_grad
    if method != "levels" and first_use(("backward", method, h.dtype)):
        with compiling():
            return _backward_of(method, graph, h, grad_h, saved, need_z, need_weight, per_edge)
    return _backward_of(method, graph, h, grad_h, saved, need_z, need_weight, per_edge)


def _edge_gradient(values: torch.Tensor, graph: Structure) -> torch.Tensor:
    """The weight's gradient as a sparse COO tensor: ``values`` on ``graph.edges``, in order."""
    k = graph.n_neurons
    index = graph.edge_index(values.device)
    # The edges are sorted and distinct: the tensor is coalesced as built.
    return torch.sparse_coo_tensor(index, values, (k, k), is_coalesced=True, check_invariants=False)


def _backward_of(method, graph, h, grad_h, saved, need_z, need_weight, per_edge):
    if method == "dense":
        mask = None if graph.is_dense else graph.float_mask(h.dtype)
        g, grad_weight = (_cpu_module or _cpu()).dense_backward(
            grad_h, h, saved[0], mask, need_weight
        )
    elif method == "sparse":
        g, grad_weight = (_cpu_module or _cpu()).sparse_backward(
            grad_h, *saved, graph, need_weight, per_edge
        )
        if grad_weight is not None and per_edge:
            return g if need_z else None, _edge_gradient(grad_weight, graph), None, None, None
    else:
        mask = graph.float_mask(h.dtype, h.device)
        g, grad_weight = _levels_backward(grad_h, h, saved[0], mask, graph, need_weight)
    if grad_weight is not None and per_edge:
        rows, cols = graph.edge_index(grad_weight.device)
        grad_weight = _edge_gradient(grad_weight[rows, cols], graph)
    return g if need_z else None, grad_weight, None, None, None


# A second derivative is not implemented: under ``create_graph=True`` the gradients are marked so
# that differentiating them raises. The wrapper costs time on every step, so it only runs then.
_backward_once = once_differentiable(_backward)


class DagReLU(torch.autograd.Function):
    """Fused forward and backward of the neurons: ``h`` from ``(z, weight)`` over ``graph``
    (a :class:`Structure`) by ``method``; the weight's gradient sparse if ``sparse_grad``."""

    @staticmethod
    def forward(ctx, z, weight, method: str, graph: Structure, sparse_grad: bool):
        h, saved = _forward(method, z, weight.detach(), graph)
        ctx.method, ctx.graph, ctx.sparse_grad = method, graph, sparse_grad
        # A dense graph saves the weight's detached view, which shares its version counter:
        # modifying the weight in place before the backward raises, as with any saved tensor.
        # A masked graph saves its own product of weight and mask.
        ctx.save_for_backward(h, *saved)
        return h

    @staticmethod
    def backward(ctx, grad_h):
        if torch.is_grad_enabled():  # create_graph=True
            return _backward_once(ctx, grad_h)
        return _backward(ctx, grad_h)


def dag_activations(
    z: torch.Tensor,
    weight: torch.Tensor,
    mask: torch.Tensor,
    *,
    method: Method = "auto",
    sparse_grad: bool = False,
) -> torch.Tensor:
    """Activations ``h`` of the neurons, ``(B, k)``, through the fused autograd function.

    Parameters
    ----------
    z : torch.Tensor
        ``(B, k)`` encoder outputs.
    weight : torch.Tensor
        ``(k, k)`` weights; ``weight[j, i]`` is the edge ``i -> j``. Masked weights get exactly
        zero gradient; a graph without edges leaves the weight without one (``None``).
    mask : torch.Tensor
        ``(k, k)`` bool graph, strictly lower-triangular.
    method : {"auto", "dense", "sparse", "levels"}, default "auto"
        Which implementation runs (see the module docstring); ``"auto"`` chooses by the graph's
        density and depth. ``"dense"`` and ``"sparse"`` need float32/float64 CPU tensors.
    sparse_grad : bool, default False
        Give the weight's gradient as a sparse COO tensor holding every active edge (zeros
        included) and nothing else, for an optimiser that reads only those entries.
    """
    k = z.shape[-1] if z.dim() == 2 else -1
    if k < 0 or tuple(weight.shape) != (k, k) or tuple(mask.shape) != (k, k):
        raise ValueError(
            f"expected z (B, k), weight and mask (k, k); got {tuple(z.shape)}, "
            f"{tuple(weight.shape)}, {tuple(mask.shape)}"
        )
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if z.dtype != weight.dtype or z.device != weight.device:
        raise ValueError("z and weight must share dtype and device")
    graph = structure(mask)
    if method == "auto":
        key = ("method", z.is_cpu, z.dtype)
        method = graph._get(key, lambda: choose_method(graph, z.device, z.dtype))
    elif method != "levels" and (
        z.device.type != "cpu" or z.dtype not in (torch.float32, torch.float64)
    ):
        raise ValueError(f"method {method!r} needs float32 or float64 tensors on the CPU")
    if method == "none":  # no edges: a ReLU, through autograd's own
        return torch.relu(z)
    if torch.is_grad_enabled() and (z.requires_grad or weight.requires_grad):
        return DagReLU.apply(z, weight, method, graph, sparse_grad)
    with torch.no_grad():
        return _forward(method, z, weight.detach(), graph)[0]
