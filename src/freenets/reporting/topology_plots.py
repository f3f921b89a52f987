"""Pictures of the graph's topology: the adjacency matrix per FreeEvolve round and the final DAG.

Like :mod:`freenets.reporting.plots`, every function takes exactly the data saved next to its
figure (the masks) and returns a :class:`matplotlib.figure.Figure`, except the GIF function,
which returns the encoded bytes; none trains or touches global matplotlib state. Added and
pruned edges have the colours of the edge-change bars (:data:`freenets.reporting.plots.ADDED`,
:data:`freenets.reporting.plots.PRUNED`).
"""

from __future__ import annotations

import io

import networkx as nx
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from freenets import graph
from freenets.reporting.plots import ADDED, PRUNED, panel_figure

# Adjacency cell states: no edge, edge kept from the previous round, edge added, edge pruned.
_STATES = ListedColormap(["#ffffff", "#3b4c6b", ADDED, PRUNED])
_STATE_NORM = BoundaryNorm([-0.5, 0.5, 1.5, 2.5, 3.5], _STATES.N)


def _states(masks: torch.Tensor) -> np.ndarray:
    """Per round, each cell's state (0 none, 1 kept, 2 added, 3 pruned) against the round before."""
    edges = masks.bool().cpu().numpy()  # (rounds + 1, k, k)
    states = edges.astype(np.int8)
    states[1:][edges[1:] & ~edges[:-1]] = 2
    states[1:][~edges[1:] & edges[:-1]] = 3
    return states


def _round_titles(masks: torch.Tensor) -> list[str]:
    states = _states(masks)
    titles = [f"start: {int(masks[0].sum())} edges"]
    for index in range(1, masks.shape[0]):
        added, pruned = int((states[index] == 2).sum()), int((states[index] == 3).sum())
        titles.append(f"round {index}: {int(masks[index].sum())} edges (+{added} -{pruned})")
    return titles


def _state_legend(figure: Figure, fontsize: str = "medium") -> None:
    handles = [
        Patch(color=_STATES(1), label="edge"),
        Patch(color=ADDED, label="added this round"),
        Patch(color=PRUNED, label="pruned this round"),
    ]
    figure.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=fontsize)


def adjacency_rounds(masks: torch.Tensor, *, max_panels: int = 24) -> Figure:
    """The adjacency matrix before the first round and after each round, changes coloured.

    Parameters
    ----------
    masks : torch.Tensor
        ``(rounds + 1, k, k)`` bool; ``masks[r, j, i]`` is the edge i -> j after round r.
    max_panels : int
        With more rounds, evenly spaced rounds are shown, always the first and the last.
    """
    states = _states(masks)
    titles = _round_titles(masks)
    shown = np.unique(np.linspace(0, len(states) - 1, min(len(states), max_panels)).round())
    figure, axes = panel_figure(len(shown), width=3.0, height=3.1, columns=6)
    for axis, index in zip(axes, shown.astype(int), strict=True):
        axis.imshow(states[index], cmap=_STATES, norm=_STATE_NORM, interpolation="nearest")
        axis.set_title(titles[index], fontsize="small")
        axis.set(xlabel="from neuron i", ylabel="to neuron j")
    _state_legend(figure)
    figure.suptitle("Adjacency matrix per FreeEvolve round")
    return figure


def adjacency_gif(masks: torch.Tensor, *, seconds_per_frame: float = 0.8) -> bytes:
    """An animated GIF of the adjacency matrix over the rounds (states as in adjacency_rounds)."""
    from PIL import Image

    states = _states(masks)
    titles = _round_titles(masks)
    figure = Figure(figsize=(4.2, 4.7), layout="constrained")
    canvas = FigureCanvasAgg(figure)
    axis = figure.subplots()
    _state_legend(figure, fontsize="small")
    image = axis.imshow(states[0], cmap=_STATES, norm=_STATE_NORM, interpolation="nearest")
    axis.set(xlabel="from neuron i", ylabel="to neuron j")
    frames = []
    for state, title in zip(states, titles, strict=True):
        image.set_data(state)
        axis.set_title(title, fontsize="medium")
        canvas.draw()
        frames.append(Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB"))
    buffer = io.BytesIO()
    frames[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=frames[1:],
        duration=int(seconds_per_frame * 1000),
        loop=0,
    )
    return buffer.getvalue()


def final_dag(mask: torch.Tensor) -> Figure:
    """The final Neural Connectivity Graph, neurons placed by level, edges running left to right.

    A neuron's level (:func:`freenets.graph.levels`) is the longest path of edges into it, so a
    layered network shows as its layers; a chain (the dense start) lies on one line, its edges
    drawn as arcs whose height grows with the levels they skip.
    """
    mask = mask.bool().cpu()
    k = mask.shape[0]
    layers = graph.levels(mask).numpy()
    position = np.zeros((k, 2))
    for layer in np.unique(layers):
        members = np.flatnonzero(layers == layer)
        position[members, 0] = layer
        position[members, 1] = np.arange(members.size) - (members.size - 1) / 2
    targets, sources = (index.numpy() for index in torch.nonzero(mask, as_tuple=True))
    network: nx.DiGraph[int] = nx.DiGraph()
    network.add_nodes_from(range(k))
    network.add_edges_from(zip(sources.tolist(), targets.tolist(), strict=True))
    figure = Figure(figsize=(9.0, 5.0), layout="constrained")
    axis = figure.subplots()
    if sources.size:
        start, end = position[sources], position[targets]
        # Edges that skip levels bend upwards (a quadratic Bezier whose control point rises with
        # the skip), so the edges of a chain do not all lie on one line. Thousands of edges draw
        # fast as one LineCollection, where networkx would make one patch per edge.
        skip = (layers[targets] - layers[sources] - 1).astype(float)
        control = (start + end) / 2 + np.stack([np.zeros_like(skip), 0.35 * skip], axis=1)
        t = np.linspace(0, 1, 24)[None, :, None]
        curves = (
            (1 - t) ** 2 * start[:, None] + 2 * (1 - t) * t * control[:, None] + t**2 * end[:, None]
        )  # (edges, 24, 2)
        alpha = float(np.clip(30 / sources.size, 0.04, 0.6))
        axis.add_collection(LineCollection(curves, colors="#3b4c6b", linewidths=0.6, alpha=alpha))
    positions = {neuron: position[neuron] for neuron in range(k)}
    nx.draw_networkx_nodes(
        network,
        positions,
        ax=axis,
        node_size=float(np.clip(3000 / k, 12, 220)),
        node_color=layers.tolist(),
        cmap="viridis",
        # Start the colour scale below level 0 so that black labels stay readable on every node.
        vmin=-0.6 * max(1, int(layers.max())),
        vmax=int(layers.max()),
    )
    if k <= 40:
        nx.draw_networkx_labels(network, positions, ax=axis, font_size=6)
    axis.autoscale_view()
    axis.set_xlabel("level (longest path of edges into the neuron)")
    axis.tick_params(left=False, labelleft=False, bottom=True, labelbottom=True)
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    for side in ("top", "right", "left"):
        axis.spines[side].set_visible(False)
    axis.set_title(
        f"Final graph: {k} neurons, {network.number_of_edges()} edges, "
        f"{int(layers.max()) + 1} levels"
    )
    return figure
