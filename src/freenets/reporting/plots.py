"""The paper's figures (section 5, Figures 4 to 7) and the ablation's, as matplotlib Figures.

Every function takes results, exactly the data saved next to the figure, and returns a
:class:`matplotlib.figure.Figure`. None trains a model or calls ``show()``. Figures are built
without ``pyplot``, so drawing goes through the Agg canvas and no global matplotlib state is
touched. The pictures of the graph itself (adjacency per round, its GIF, the final DAG) are in
:mod:`freenets.reporting.topology_plots`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

MODEL_COLOURS = {
    "freeevolve": "C0",
    "fcnn": "C1",
    "dense": "C2",
    "random": "C7",
    "magnitude": "C4",
    "set": "C5",
    "rigl": "C6",
    "fcnn2": "C3",
}
MODEL_LABELS = {
    "freeevolve": "FreeEvolve",
    "fcnn": "FCNN",
    "dense": "dense FreeNet",
    "random": "random pruning",
    "magnitude": "magnitude pruning",
    "set": "SET",
    "rigl": "RigL",
    "fcnn2": "FCNN2",
}
# Distinct markers and dashes keep every model visible where their curves coincide; the
# layered baselines are dashed, the FreeNet-based models solid.
MODEL_STYLES = {
    "freeevolve": {"marker": "o", "linestyle": "-"},
    "fcnn": {"marker": "s", "linestyle": "--"},
    "dense": {"marker": "^", "linestyle": "-"},
    "random": {"marker": "x", "linestyle": ":"},
    "magnitude": {"marker": "v", "linestyle": ":"},
    "set": {"marker": "D", "linestyle": "-."},
    "rigl": {"marker": "P", "linestyle": "-."},
    "fcnn2": {"marker": "*", "linestyle": "--"},
}
# Edges added and pruned, in the edge-change bars and the adjacency pictures.
ADDED, PRUNED = "#2ca02c", "#d62728"


def panel_figure(
    n_panels: int, *, width: float = 5.0, height: float = 3.6, columns: int = 3
) -> tuple[Figure, np.ndarray]:
    """A constrained-layout figure with one axis per panel (extra axes hidden).

    Panels of ``width`` x ``height`` inches fill rows of at most ``columns``; returns the
    figure and its first ``n_panels`` axes (one axis when ``n_panels`` is 0).
    """
    n_panels = max(1, n_panels)
    columns = min(columns, n_panels)
    rows = -(-n_panels // columns)
    figure = Figure(figsize=(width * columns, height * rows), layout="constrained")
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False).ravel())
    for axis in axes[n_panels:]:
        axis.set_visible(False)
    return figure, axes[:n_panels]


def _group(rows: Sequence[Mapping[str, Any]], key: str) -> dict[Any, list[Mapping[str, Any]]]:
    """Rows by ``row[key]``, in order of first appearance (models: FreeEvolve first)."""
    groups: dict[Any, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row[key], []).append(row)
    if key == "model":
        rank = {name: index for index, name in enumerate(MODEL_LABELS)}
        return dict(sorted(groups.items(), key=lambda item: rank.get(item[0], len(rank))))
    return groups


def _mean_band(axis, x, mean, std, n, model: str) -> None:
    x, mean, std = np.asarray(x), np.asarray(mean, float), np.asarray(std, float)
    colour = MODEL_COLOURS.get(model)
    label = MODEL_LABELS.get(model, model)
    runs = max(n)
    if runs > 1:
        label = f"{label} (mean ± sd, {runs} seeds)"
        axis.fill_between(x, mean - std, mean + std, color=colour, alpha=0.2, linewidth=0)
    style = dict(MODEL_STYLES.get(model, {}))
    if len(x) > 30:
        style.pop("marker", None)
    axis.plot(x, mean, color=colour, label=label, ms=3, **style)


def validation_accuracy(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """Figure 4: validation accuracy per epoch, FreeEvolve against FCNN.

    Parameters
    ----------
    rows : sequence of mappings
        Keys ``panel``, ``model``, ``epoch``, ``mean``, ``std``, ``n``: the accuracy at one epoch
        averaged over ``n`` runs. One panel per distinct ``panel`` (e.g. ``"digits, k=40"``).
    """
    panels = _group(rows, "panel")
    figure, axes = panel_figure(len(panels), columns=2)
    for axis, (title, members) in zip(axes, panels.items(), strict=False):
        for model, series in _group(members, "model").items():
            series = sorted(series, key=lambda row: row["epoch"])
            _mean_band(
                axis,
                [row["epoch"] for row in series],
                [row["mean"] for row in series],
                [row["std"] for row in series],
                [row["n"] for row in series],
                model,
            )
        axis.set(title=title, xlabel="epoch", ylabel="validation accuracy")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        axis.legend(loc="lower right")
    if not panels:
        axes[0].text(0.5, 0.5, "no epochs recorded", ha="center", transform=axes[0].transAxes)
    figure.suptitle("Validation accuracy per epoch (Figure 4)")
    return figure


def accuracy_vs_neurons(
    rows: Sequence[Mapping[str, Any]],
    *,
    metric: str = "test",
    title: str = "Accuracy against the number of neurons (Figure 5)",
) -> Figure:
    """Figure 5: accuracy against the number of neurons, error bars one standard deviation.

    Parameters
    ----------
    rows : sequence of mappings
        Keys ``dataset``, ``model``, ``neurons``, ``mean``, ``std``, ``n``. One panel per dataset,
        one line per model (any of :data:`MODEL_LABELS`, in that order).
    metric : str
        Which accuracy the rows hold, for the axis label.
    title : str
        The figure's title.
    """
    datasets = _group(rows, "dataset")
    figure, axes = panel_figure(len(datasets), columns=3)
    for axis, (dataset, members) in zip(axes, datasets.items(), strict=False):
        models = _group(members, "model")
        present = sorted({row["neurons"] for row in members})
        spacing = float(np.diff(present).min()) if len(present) > 1 else 1.0
        for index, (model, series) in enumerate(models.items()):
            series = sorted(series, key=lambda row: row["neurons"])
            neurons = np.array([row["neurons"] for row in series], float)
            # A small shift per model keeps error bars at the same k apart.
            offset = 0.06 * spacing * (index - (len(models) - 1) / 2)
            axis.errorbar(
                neurons + offset,
                [row["mean"] for row in series],
                yerr=[row["std"] for row in series],
                color=MODEL_COLOURS.get(model),
                label=MODEL_LABELS.get(model, model),
                ms=4,
                capsize=3,
                **MODEL_STYLES.get(model, {"marker": "o"}),
            )
        if len(present) <= 15:
            axis.set_xticks(present)
        seeds = max(row["n"] for row in members)
        axis.set(
            title=f"{dataset} ({seeds} seed{'s' if seeds != 1 else ''})",
            xlabel="neurons k",
            ylabel=f"{metric} accuracy",
        )
        axis.grid(alpha=0.3)
        if len(models) > 3:  # beside the panel: inside, eight models would hide the points
            axis.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small")
        else:
            axis.legend(loc="lower right")
    if not datasets:
        axes[0].text(0.5, 0.5, "no successful runs", ha="center", transform=axes[0].transAxes)
    figure.suptitle(title)
    return figure


def ablation_accuracy(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """The ablation: test accuracy against k for every model of a sweep, one sd error bars.

    Parameters
    ----------
    rows : sequence of mappings
        As for :func:`accuracy_vs_neurons`: ``dataset``, ``model``, ``neurons``, ``mean``,
        ``std``, ``n`` (test accuracy over ``n`` seeds).
    """
    return accuracy_vs_neurons(
        rows, title="Test accuracy against k: every topology rule and baseline"
    )


def edge_changes(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """Figure 6: edges added and pruned by each round (or a rule's update), and the edges left.

    Parameters
    ----------
    rows : sequence of mappings
        Keys ``panel``, ``round``, ``added``, ``pruned``, ``edges``. One panel per ``panel``.
    """
    panels = _group(rows, "panel")
    figure, axes = panel_figure(len(panels), columns=2)
    for axis, (title, members) in zip(axes, panels.items(), strict=False):
        members = sorted(members, key=lambda row: row["round"])
        rounds = np.array([row["round"] for row in members])
        axis.bar(rounds - 0.2, [r["added"] for r in members], 0.4, color=ADDED, label="added")
        axis.bar(rounds + 0.2, [r["pruned"] for r in members], 0.4, color=PRUNED, label="pruned")
        axis.set(title=title, xlabel="round", ylabel="edges changed")
        edges = axis.twinx()
        # The graph's size before the first round follows from the first round's changes.
        first = members[0]
        start = first["edges"] - first["added"] + first["pruned"]
        edges.plot(
            np.concatenate([[rounds[0] - 1], rounds]),
            [start] + [r["edges"] for r in members],
            color="k",
            marker=".",
            label="edges",
        )
        edges.set_ylabel("edges after the round")
        if len(rounds) <= 20:
            axis.set_xticks(np.concatenate([[rounds[0] - 1], rounds]))
        else:
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        handles = axis.get_legend_handles_labels()
        more = edges.get_legend_handles_labels()
        axis.legend(handles[0] + more[0], handles[1] + more[1], loc="upper right")
        axis.grid(alpha=0.3, axis="y")
    if not panels:
        axes[0].text(0.5, 0.5, "no topology changes", ha="center", transform=axes[0].transAxes)
    figure.suptitle("Edges pruned and added per round (Figure 6)")
    return figure


def density(values: Sequence[float] | np.ndarray, grid: np.ndarray) -> np.ndarray | None:
    """Gaussian KDE on ``grid`` (:func:`scipy.stats.gaussian_kde`, Scott's bandwidth), reflected.

    NCAM and NCIM values are fractions in [0, 1], so mass that would spill past a bound is
    reflected back. Returns ``None`` when there are fewer than two distinct values, where no
    density exists; callers draw those values as marks instead.
    """
    from scipy.stats import gaussian_kde  # imported here: scipy.stats is slow to import

    data = np.asarray(values, dtype=float)
    if data.size < 2 or np.ptp(data) == 0:
        return None
    kde = gaussian_kde(data)  # bandwidth: the sample std (ddof=1) times n ** (-1/5)
    # The data mirrored at 0 (-x) and at 1 (2 - x) add, at g, the KDE at -g and at 2 - g.
    return kde(grid) + kde(-grid) + kde(2.0 - grid)


def value_densities(panels: Sequence[Mapping[str, Any]], *, threshold: float) -> Figure:
    """Figure 7: KDE of the Prune and Aug candidates' values at the start and end of training.

    Parameters
    ----------
    panels : sequence of mappings
        Each has a ``title`` and ``series``: mappings with a ``label`` and the ``values``.
    threshold : float
        ``1 - epsilon``: values above it are pruned (NCIM) or added (NCAM); drawn as a line.
    """
    figure, axes = panel_figure(len(panels), columns=2)
    grid = np.linspace(0.0, 1.0, 401)
    for axis, panel in zip(axes, panels, strict=False):
        for index, series in enumerate(panel["series"]):
            style = {"color": f"C{index}", "linestyle": ("-", "--", ":", "-.")[index % 4]}
            values = np.asarray(series["values"], float)
            label = f"{series['label']} (n={values.size})"
            curve = density(values, grid)
            if curve is not None:
                axis.plot(grid, curve, label=label, **style)
            elif values.size:
                # One distinct value has no density: mark where it lies instead.
                axis.axvline(values[0], label=f"{label}, all {values[0]:g}", **style)
            else:
                axis.plot([], [], label=f"{series['label']}: no values", **style)
        axis.axvline(threshold, color="grey", linewidth=1, label=f"1 - ε = {threshold:g}")
        axis.set(title=panel["title"], xlabel="value", ylabel="density", xlim=(0, 1))
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
        axis.legend(loc="upper center", fontsize="small")
    figure.suptitle("Prune and Aug matrix values, start and end of training (Figure 7)")
    return figure


def accuracy_vs_density(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """The density study: test accuracy against density, one panel per part, one line per rule.

    Parameters
    ----------
    rows : sequence of mappings
        :class:`freenets.experiments.study.Point` fields: ``part``, ``series``, ``density``,
        ``mean``, ``low``, ``high`` (a 95% interval over ``n`` seeds). The dense FreeNet is a
        horizontal line with its interval as a band; the FCNNs sit at the density of the
        FreeEvolve model they match; the series that follow FreeEvolve's run are dotted.
    """
    parts = _group(rows, "part")
    figure, axes = panel_figure(len(parts), columns=3, width=4.6, height=3.4)
    legend: dict[str, Any] = {}
    for axis, (part, members) in zip(axes, parts.items(), strict=False):
        for series, points in _group(members, "series").items():
            points = sorted(points, key=lambda row: row["density"])
            model = str(series).split(" ")[0]
            label = MODEL_LABELS.get(model, model).split(" ")[0] + str(series)[len(model) :]
            mean = np.array([row["mean"] for row in points], float)
            colour = MODEL_COLOURS.get(model)
            if model == "dense":
                low, high = points[0]["low"], points[0]["high"]
                legend.setdefault("dense FreeNet", axis.axhline(mean[0], color=colour))
                if low == low and high == high:  # not NaN: more than one seed
                    axis.axhspan(low, high, color=colour, alpha=0.15, lw=0)
                continue
            errors = np.array([[r["mean"] - r["low"], r["high"] - r["mean"]] for r in points])
            style = dict(MODEL_STYLES.get(model, {"marker": "o", "linestyle": "-"}))
            if "(rounds)" in str(series) or "(matched)" in str(series):
                style["linestyle"] = ":"
            elif "(static)" in str(series) or "(gradual)" in str(series):
                style["linestyle"] = "-"
            drawn = axis.errorbar(
                [row["density"] for row in points],
                mean,
                yerr=np.nan_to_num(errors.T),
                color=colour,
                ms=4,
                capsize=2,
                **style,
            )
            legend.setdefault(label, drawn)
        seeds = max(int(row["n"]) for row in members)
        axis.set_xscale("log")
        ticks = [0.05, 0.1, 0.2, 0.5, 1.0]
        axis.set_xticks(ticks, [f"{tick:g}" for tick in ticks])
        axis.set_xticks([], minor=True)
        axis.set(
            title=f"{part} ({seeds} seed{'s' if seeds != 1 else ''})",
            xlabel="density (edges / k(k-1)/2)",
            ylabel="test accuracy (%)",
        )
        axis.grid(alpha=0.3)
    if legend:
        figure.legend(
            list(legend.values()), list(legend), loc="outside right center", fontsize="small"
        )
    else:
        axes[0].text(0.5, 0.5, "no successful runs", ha="center", transform=axes[0].transAxes)
    figure.suptitle("Test accuracy against density (95% intervals over seeds)")
    return figure
