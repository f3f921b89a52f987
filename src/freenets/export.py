"""Export a FreeNet's learned topology and weights (paper, sections 3.1 and 4, Claim 4.1).

The Neural Connectivity Graph goes out as a :mod:`networkx` graph, GraphML or DOT; a layered
graph goes back to the ``nn.Sequential`` it encodes (the inverse of
:meth:`FreeNet.from_sequential`, Claim 4.1); and the model goes out as ONNX through a compact,
plain-torch copy that computes the neurons level by level over the active edges only, since the
fused autograd kernel cannot be traced.
"""

from __future__ import annotations

import copy
import inspect
import io as stdio
import warnings
from pathlib import Path
from typing import Any

import networkx as nx
import torch
from torch import nn

from freenets import atomic, graph
from freenets.model import FreeNet

# ---------------------------------------------------------------------- graph formats


def to_networkx(model: FreeNet) -> nx.DiGraph:
    """The model's Neural Connectivity Graph as a :class:`networkx.DiGraph`.

    Parameters
    ----------
    model : FreeNet
        The model to describe.

    Returns
    -------
    networkx.DiGraph
        One node per neuron (``0 .. k-1``, the topological order), with attribute ``level`` (its
        depth in the DAG) and, for a linear encoder, ``bias``; one edge ``i -> j`` per active
        edge with attribute ``weight``. Graph attributes: ``in_features``, ``n_neurons``,
        ``out_features``.
    """
    mask = model.mask.detach().cpu()
    weight = model.weight.detach().cpu()
    levels = graph.levels(mask).tolist()
    # Not nx.DiGraph[int] in the signature: DiGraph is generic only in the stubs, not at run time.
    result: nx.DiGraph[int] = nx.DiGraph(
        in_features=model.in_features,
        n_neurons=model.n_neurons,
        out_features=model.out_features,
    )
    bias = None
    if isinstance(model.encoder, nn.Linear) and model.encoder.bias is not None:
        bias = model.encoder.bias.detach().cpu().tolist()
    for j in range(model.n_neurons):
        attributes: dict[str, float | int] = {"level": levels[j]}
        if bias is not None:
            attributes["bias"] = bias[j]
        result.add_node(j, **attributes)
    for j, i in mask.nonzero().tolist():  # mask[j, i] is the edge i -> j
        result.add_edge(i, j, weight=float(weight[j, i]))
    return result


def write_graphml(model: FreeNet, path: str | Path) -> None:
    """Write the model's graph (see :func:`to_networkx`) to ``path`` as GraphML, atomically."""
    text = "\n".join(nx.generate_graphml(to_networkx(model))) + "\n"
    atomic.write_text(path, text)


def to_dot(model: FreeNet) -> str:
    """The model's graph in Graphviz DOT, neurons of one level on one rank.

    Parameters
    ----------
    model : FreeNet
        The model to describe.

    Returns
    -------
    str
        A ``digraph`` with one node ``n<j>`` per neuron and one edge per active edge, labelled
        with its weight (blue when positive, red when negative).
    """
    described = to_networkx(model)
    lines = [
        "digraph freenet {",
        "  rankdir=LR;",
        '  node [shape=circle, fontsize=10, label=""];',
    ]
    by_level: dict[int, list[int]] = {}
    for node, attributes in described.nodes(data=True):
        by_level.setdefault(attributes["level"], []).append(node)
    for level in sorted(by_level):
        names = " ".join(f'n{node} [label="{node}"];' for node in by_level[level])
        lines.append(f"  {{ rank=same; {names} }}")
    for i, j, attributes in described.edges(data=True):
        weight = attributes["weight"]
        colour = "blue" if weight >= 0 else "red"
        lines.append(f'  n{i} -> n{j} [label="{weight:.4g}", color={colour}];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_dot(model: FreeNet, path: str | Path) -> None:
    """Write :func:`to_dot` of the model to ``path``, atomically."""
    atomic.write_text(path, to_dot(model))


# ---------------------------------------------------------------------- Claim 4.1, inverted


def _levels_or_raise(model: FreeNet) -> list[list[int]]:
    """Neurons grouped by level, after checking every edge joins consecutive levels."""
    mask = model.mask.detach().cpu()
    levels = graph.levels(mask)
    targets, sources = mask.nonzero(as_tuple=True)  # mask[j, i] is the edge i -> j
    skips = levels[targets] != levels[sources] + 1
    if bool(skips.any()):
        i, j = int(sources[skips][0]), int(targets[skips][0])
        raise ValueError(
            f"the mask is not layered: edge {i} -> {j} joins level {int(levels[i])} to level "
            f"{int(levels[j])}"
        )
    return [
        torch.nonzero(levels == level).flatten().tolist() for level in range(int(levels.max()) + 1)
    ]


@torch.no_grad()
def to_sequential(model: FreeNet) -> nn.Sequential:
    """The ``Linear, ReLU, ..., Linear`` MLP a layered FreeNet computes (Claim 4.1, inverted).

    Parameters
    ----------
    model : FreeNet
        A model with a linear encoder whose graph is layered: every edge joins a neuron to one a
        level deeper, only the first level reads the input (the other encoder rows are zero, their
        biases become the layers' biases), and only the last level feeds the decoder.

    Returns
    -------
    nn.Sequential
        Hidden layers of the levels' widths, neurons in index order within a level, weights of
        absent edges zero. ``to_sequential(FreeNet.from_sequential(mlp))`` equals ``mlp``.

    Raises
    ------
    ValueError
        Naming the first edge, encoder row or decoder column that is not layered.
    """
    if not isinstance(model.encoder, nn.Linear) or model.encoder.bias is None:
        raise ValueError("to_sequential needs a FreeNet whose encoder is nn.Linear with a bias")
    layers = _levels_or_raise(model)
    encoder_weight, encoder_bias = model.encoder.weight, model.encoder.bias
    for level, neurons in enumerate(layers[1:], start=1):
        reads_input = encoder_weight[neurons].abs().sum(dim=1) > 0
        if bool(reads_input.any()):
            neuron = neurons[int(reads_input.nonzero()[0])]
            raise ValueError(
                f"the model is not layered: neuron {neuron} (level {level}) reads the input"
            )
    inner = [n for neurons in layers[:-1] for n in neurons]
    read = model.decoder.weight[:, inner].abs().sum(dim=0) > 0
    if bool(read.any()):
        neuron = inner[int(read.nonzero()[0])]
        raise ValueError(
            f"the model is not layered: the decoder reads neuron {neuron}, not in the last level"
        )
    effective = model.weight * model.mask.to(model.weight.dtype)
    modules: list[nn.Module] = []
    previous = None
    for neurons in layers:
        if previous is None:
            linear = nn.Linear(model.in_features, len(neurons))
            linear.weight.copy_(encoder_weight[neurons])
        else:
            linear = nn.Linear(len(previous), len(neurons))
            linear.weight.copy_(effective[neurons][:, previous])
        linear.bias.copy_(encoder_bias[neurons])
        modules += [linear, nn.ReLU()]
        previous = neurons
    assert previous is not None  # a FreeNet has at least one neuron, so at least one level
    decoder = nn.Linear(len(previous), model.out_features)
    decoder.weight.copy_(model.decoder.weight[:, previous])
    decoder.bias.copy_(model.decoder.bias)
    modules.append(decoder)
    return nn.Sequential(*modules).to(dtype=model.weight.dtype, device=model.weight.device)


# ---------------------------------------------------------------------- ONNX


class CompactFreeNet(nn.Module):
    """A plain-torch copy of a FreeNet that computes its neurons level by level.

    Neurons are reordered by level. Level ``l`` reads, through one ``(n_l, s_l)`` matrix, only
    the ``s_l`` earlier neurons that have an edge into it, so the traced graph holds one gather,
    one matrix product and one ReLU per level, and the active edges only. The copy is frozen: it
    is for inference and export, not for training or evolution.

    Parameters
    ----------
    model : FreeNet
        The model to copy; the copy shares no tensor with it.
    """

    order: torch.Tensor  # a buffer: neuron indices sorted by level

    def __init__(self, model: FreeNet) -> None:
        super().__init__()
        mask = model.mask.detach()
        levels = graph.levels(mask.cpu()).to(mask.device)
        order = torch.argsort(levels, stable=True)  # neurons by level, index order within one
        position = torch.empty_like(order)
        position[order] = torch.arange(order.numel(), device=order.device)
        effective = (model.weight * mask.to(model.weight.dtype)).detach()
        self.encoder = copy.deepcopy(model.encoder)
        self.register_buffer("order", order)
        self.widths: list[int] = []
        for level in range(int(levels.max()) + 1):
            neurons = torch.nonzero(levels == level).flatten()
            predecessors = mask[neurons].any(dim=0).nonzero().flatten()
            self.widths.append(int(neurons.numel()))
            # Level l reads the positions (in level order) of its predecessors, through the
            # (n_l, s_l) block of the masked weight; level 0 has no predecessors.
            self.register_buffer(f"sources{level}", position[predecessors])
            self.register_buffer(f"weight{level}", effective[neurons][:, predecessors].clone())
        self.decoder = nn.Linear(model.n_neurons, model.out_features).to(effective)
        with torch.no_grad():
            self.decoder.weight.copy_(model.decoder.weight[:, order])
            self.decoder.bias.copy_(model.decoder.bias)
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The decoder's outputs, shape ``(B, out_features)``."""
        z = torch.index_select(self.encoder(x), 1, self.order)  # (B, k), in level order
        h = torch.relu(z[:, : self.widths[0]])  # (B, n_0)
        start = self.widths[0]
        for level in range(1, len(self.widths)):
            sources = getattr(self, f"sources{level}")
            weight = getattr(self, f"weight{level}")
            width = self.widths[level]
            total = z[:, start : start + width] + torch.index_select(h, 1, sources) @ weight.t()
            h = torch.cat([h, torch.relu(total)], dim=1)  # (B, start + width)
            start += width
        return self.decoder(h)


def _example_input(model: FreeNet, example: torch.Tensor | None) -> torch.Tensor:
    if example is not None:
        return example
    if not isinstance(model.encoder, nn.Linear):
        raise ValueError("a custom encoder needs an example input to fix the input's shape")
    parameter = model.weight
    return torch.zeros(1, model.in_features, dtype=parameter.dtype, device=parameter.device)


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "ONNX export needs the onnx extra: pip install 'freenets[onnx]'"
        ) from error


def export_onnx(
    model: FreeNet,
    path: str | Path,
    example: torch.Tensor | None = None,
    *,
    opset: int = 17,
) -> None:
    """Write the model as ONNX, through :class:`CompactFreeNet`, with a dynamic batch size.

    Parameters
    ----------
    model : FreeNet
        The model to export.
    path : str or Path
        Where to write the ``.onnx`` file (atomically).
    example : torch.Tensor, optional
        An input batch fixing the input's shape; required for a custom encoder, else
        ``(1, in_features)`` zeros.
    opset : int, default 17
        ONNX operator set version.

    Raises
    ------
    ImportError
        When the ``onnx`` extra (onnx, onnxruntime) is not installed.
    """
    _require_onnx()
    compact = CompactFreeNet(model).eval()
    x = _example_input(model, example)
    buffer = stdio.BytesIO()
    # The TorchScript exporter traces plain torch ops and needs no onnxscript; newer torch
    # defaults to the dynamo exporter, so ask for it by name where the option exists.
    options: dict[str, Any] = (
        {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    )
    with warnings.catch_warnings():
        # Recent torch marks the TorchScript exporter deprecated; its output is what we check.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(
            compact,
            (x,),
            # torch annotates f as a path; the TorchScript exporter also writes to a file object.
            buffer,  # type: ignore[arg-type]
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            opset_version=opset,
            **options,
        )
    atomic.write_bytes(path, buffer.getvalue())


def onnx_max_abs_diff(model: FreeNet, path: str | Path, x: torch.Tensor) -> float:
    """Largest absolute difference between ONNX Runtime's and PyTorch's outputs on ``x``.

    Parameters
    ----------
    model : FreeNet
        The model that was exported.
    path : str or Path
        The file written by :func:`export_onnx`.
    x : torch.Tensor
        An input batch.
    """
    _require_onnx()
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    was_training = model.training
    model.eval()
    with torch.no_grad():
        expected = model(x.to(model.weight.device)).cpu().numpy()
    model.train(was_training)
    (actual,) = session.run(["output"], {"input": x.detach().cpu().numpy()})
    return float(abs(actual - expected).max()) if expected.size else 0.0
