"""The figures of a run or a sweep directory (paper, section 5), each saved with its data.

A run directory gets, in ``RUN/figures/``, Figure 4 (its validation curves), Figure 6 (edges added
and pruned per round), Figure 7 (Prune and Aug values, first and last round), the adjacency matrix
per round (a PNG and an animated GIF) and its final graph. A sweep directory gets, in
``DIR/figures/``, Figure 5 (accuracy against neurons), the ablation's figure (every model's
accuracy against neurons, when the sweep has more than FreeEvolve and FCNN) and Figures 4 and 6
for chosen k. Next to
every image lies the data it was drawn from (CSV or JSON); ``figures/index.json`` lists them all.
"""

from __future__ import annotations

import csv
import io as _io
import json
import pickle
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from freenets import atomic, graph
from freenets.errors import DataError, ReportError
from freenets.reporting import plots
from freenets.reporting.topology_plots import adjacency_gif, adjacency_rounds, final_dag
from freenets.training.config import TopologyConfig

INDEX = "index.json"


@dataclass(frozen=True)
class FigureEntry:
    """One figure in ``figures/``: its image and the data it was drawn from."""

    name: str
    title: str
    caption: str
    image: str  # file name in figures/, PNG or GIF
    data: str  # file name in figures/, CSV or JSON


def read_json(path: Path) -> Any:
    """The JSON in ``path``, or :class:`ReportError` naming the file."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{path} is missing") from None
    except (OSError, ValueError) as error:
        raise ReportError(f"cannot read {path}: {error}") from None


def read_results(path: Path) -> list[dict[str, str]]:
    """The rows of a sweep's ``results.csv``."""
    try:
        with path.open(newline="", encoding="utf-8") as stream:
            rows = list(csv.DictReader(stream))
    except OSError as error:
        raise ReportError(f"cannot read {path}: {error.strerror or error}") from None
    needed = {"dataset", "neurons", "seed", "model", "status", "test_accuracy", "run_dir"}
    if rows and not needed <= rows[0].keys():
        missing = ", ".join(sorted(needed - rows[0].keys()))
        raise ReportError(f"{path} lacks the columns: {missing}")
    return rows


def _load(path: Path, load: Callable[[Path], Any]) -> Any:
    """``load(path)`` for a saved tensor or model, or :class:`ReportError` naming the file."""
    try:
        return load(path)
    except (OSError, RuntimeError, EOFError, KeyError, ValueError, pickle.UnpicklingError) as error:
        raise ReportError(f"cannot read {path}: {error}") from None


def _csv(rows: Sequence[Mapping[str, Any]]) -> str:
    buffer = _io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return buffer.getvalue()


def _png(figure: Figure) -> bytes:
    buffer = _io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


class _Writer:
    """Writes images and data atomically into ``figures/`` and collects the index."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.entries: list[FigureEntry] = []

    def add(
        self,
        name: str,
        title: str,
        caption: str,
        image: Figure | bytes,
        data: Any = None,
        *,
        data_file: str | None = None,
    ) -> None:
        """Save ``image`` (a Figure as PNG, bytes as GIF) and ``data`` (str as CSV, else JSON).

        ``data_file`` names data an earlier figure already saved, instead of ``data``.
        """
        if isinstance(image, bytes):
            image_name, encoded = f"{name}.gif", image
        else:
            image_name, encoded = f"{name}.png", _png(image)
        atomic.write_bytes(self.directory / image_name, encoded)
        if data_file is not None:
            data_name = data_file
        elif isinstance(data, str):
            data_name = f"{name}.csv"
            atomic.write_text(self.directory / data_name, data)
        else:
            data_name = f"{name}.json"
            atomic.write_json(self.directory / data_name, data)
        self.entries.append(FigureEntry(name, title, caption, image_name, data_name))

    def finish(self) -> list[FigureEntry]:
        atomic.write_json(self.directory / INDEX, {"figures": [asdict(e) for e in self.entries]})
        return self.entries


def read_index(directory: str | Path) -> list[FigureEntry] | None:
    """The figures listed in ``directory/figures/index.json``; None if any is missing."""
    folder = Path(directory) / "figures"
    try:
        listed = json.loads((folder / INDEX).read_text(encoding="utf-8"))["figures"]
        entries = [FigureEntry(**entry) for entry in listed]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not all((folder / e.image).is_file() and (folder / e.data).is_file() for e in entries):
        return None
    return entries


def _curve_rows(panel: str, model: str, curves: Sequence[Sequence[float]]) -> list[dict]:
    """Mean, standard deviation and count per epoch over curves cut to the shortest."""
    length = min(len(curve) for curve in curves)
    stacked = np.array([curve[:length] for curve in curves], dtype=float)  # (runs, epochs)
    std = stacked.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros(length)
    return [
        {
            "panel": panel,
            "model": model,
            "epoch": epoch + 1,
            "mean": round(float(stacked[:, epoch].mean()), 6),
            "std": round(float(std[epoch]), 6),
            "n": len(curves),
        }
        for epoch in range(length)
    ]


def _round_rows(panel: str, rounds: Iterable[Mapping[str, Any]]) -> list[dict]:
    keys = ("round", "epoch", "added", "pruned", "edges")
    return [{"panel": panel, **{key: record[key] for key in keys}} for record in rounds]


def _value_panels(rounds: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Figure 7's series: each matrix's candidate values at its first and at the last round."""
    panels = []
    for key, title in (
        ("prune_values", "Prune: NCIM on present edges"),
        ("aug_values", "Aug: NCAM on absent allowed edges"),
    ):
        # The dense start has no absent edges, so Aug's first values may come rounds later.
        first = next((r for r in rounds if r[key]), rounds[0])
        last = rounds[-1]
        series = [{"label": f"start, round {first['round']}", "values": first[key]}]
        if last is not first:
            series.append({"label": f"end, round {last['round']}", "values": last[key]})
        panels.append({"title": title, "series": series})
    return panels


def _edge_events(masks: torch.Tensor) -> str:
    """Every edge of the initial graph, then each round's additions and prunings, as CSV."""
    rows = []
    for index in range(masks.shape[0]):
        if index == 0:
            changes = [("initial", masks[0])]
        else:
            before, after = masks[index - 1], masks[index]
            changes = [("added", after & ~before), ("pruned", before & ~after)]
        for event, cells in changes:
            for target, source in torch.nonzero(cells).tolist():
                rows.append({"round": index, "event": event, "source": source, "target": target})
    return _csv(rows) or "round,event,source,target\n"


def write_run_figures(run_dir: str | Path) -> list[FigureEntry]:
    """Draw a run directory's figures into ``run_dir/figures`` and return their index.

    Parameters
    ----------
    run_dir : str or Path
        A directory written by :func:`freenets.experiments.runs.train_run`.
    """
    from freenets.experiments.runs import load_model

    run_dir = Path(run_dir)
    config = read_json(run_dir / "config.json")
    history = read_json(run_dir / "history.json")
    panel = f"{config['dataset']}, k={config['n_neurons']}, seed {config['seed']}"
    writer = _Writer(run_dir / "figures")
    name = str(config.get("rule", "freeevolve"))  # the run's FreeNet: FreeEvolve by default
    label = plots.MODEL_LABELS.get(name, name)

    rows = []
    for model in (name, "fcnn"):
        curve = [e["val_accuracy"] for e in history.get(model, {}).get("epochs", [])]
        if curve:
            rows += _curve_rows(panel, model, [curve])
    caption = f"Validation accuracy after each epoch of {label} and of its equal-parameter FCNN."
    writer.add(
        "figure4",
        "Figure 4: validation accuracy",
        caption,
        plots.validation_accuracy(rows),
        _csv(rows),
    )

    rounds = history.get(name, {}).get("rounds", [])
    if rounds:
        rows = _round_rows(panel, rounds)
        caption = f"Edges each {label} round added and pruned (bars) and the edges left (line)."
        writer.add(
            "figure6", "Figure 6: edges per round", caption, plots.edge_changes(rows), _csv(rows)
        )
    if rounds and name == "freeevolve":  # the values behind FreeEvolve's decisions
        threshold = 1.0 - float(config["epsilon"])
        panels = _value_panels(rounds)
        values = {"threshold": threshold, "panels": panels}
        caption = (
            "Kernel density of NCIM on present edges (Prune's candidates) and of NCAM on absent "
            f"allowed edges (Aug's candidates); values above 1 - epsilon = {threshold:g} act."
        )
        figure = plots.value_densities(panels, threshold=threshold)
        writer.add("figure7", "Figure 7: Prune and Aug values", caption, figure, values)

    if (run_dir / "masks.pt").is_file():
        masks = _load(
            run_dir / "masks.pt", lambda p: torch.load(p, map_location="cpu", weights_only=True)
        ).bool()
        events = _edge_events(masks)
        caption = "The adjacency matrix (row j, column i: edge i -> j) before the first round and after each round."
        writer.add("adjacency", "Adjacency per round", caption, adjacency_rounds(masks), events)
        caption = "The same adjacency matrices, one frame per round."
        writer.add(
            "adjacency_animation",
            "Adjacency over rounds (animated)",
            caption,
            adjacency_gif(masks),
            data_file="adjacency.csv",
        )

    if (run_dir / f"{name}.pt").is_file():
        mask = _load(run_dir / f"{name}.pt", load_model).mask.bool()
        targets, sources = torch.nonzero(mask, as_tuple=True)
        data = {
            "neurons": int(mask.shape[0]),
            "levels": graph.levels(mask).tolist(),
            "edges": [[int(s), int(t)] for s, t in zip(sources, targets, strict=True)],
        }
        caption = "The chosen model's graph: neurons in columns by level (longest path into the neuron), edges from left to right; every neuron also reads the input and feeds the output layer."
        writer.add("final_graph", "Final graph", caption, final_dag(mask), data)
    return writer.finish()


def _ok_rows(rows: Sequence[Mapping[str, str]]) -> list[Mapping[str, str]]:
    return [row for row in rows if row.get("status") == "ok" and row.get("test_accuracy")]


def _base_rows(rows: list[Mapping[str, str]]) -> list[Mapping[str, str]]:
    """The rows of one epsilon (the default where the sweep has it) and no fixed budget: what
    the figures against k show (a sweep along density gets its own figure)."""
    epsilons = [row.get("epsilon", "") for row in rows if row.get("epsilon")]
    default = repr(TopologyConfig.epsilon)
    chosen = default if default in epsilons else (epsilons[0] if epsilons else "")
    return [row for row in rows if not row.get("budget") and row.get("epsilon", "") in ("", chosen)]


def _panels(sweep_dir: Path) -> dict[str, list[Any]]:
    """A sweep's result rows (:class:`~freenets.experiments.results.ResultRow`) by dataset and k,
    each a panel of the density figure."""
    from freenets.experiments.results import read_results as read_rows

    try:
        rows = read_rows(sweep_dir / "results.csv")
    except DataError:
        return {}
    panels: dict[str, list[Any]] = {}
    for row in rows:
        panels.setdefault(f"{row.dataset}, k={row.neurons}", []).append(row)
    return panels


def _add_density(writer: _Writer, panels: Mapping[str, list[Any]], caption: str) -> bool:
    """The accuracy-against-density figure of ``panels`` (name -> result rows), if it has points:
    :func:`freenets.experiments.study.study_points` of each, drawn and saved with its data.
    Whether it had any."""
    from freenets.experiments.study import study_points

    points = [asdict(point) for name, rows in panels.items() for point in study_points(name, rows)]
    if points:
        figure = plots.accuracy_vs_density(points)
        writer.add("density", "Accuracy against density", caption, figure, _csv(points))
    return bool(points)


def write_study_figure(out: str | Path, parts: Sequence[Any]) -> Path | None:
    """The density study's figure, a panel per part, in ``out/figures/density.png``; its path,
    ``None`` where no part has a successful run.

    ``parts`` are :class:`freenets.experiments.study.Part`; those without results are left out.
    """
    from freenets.experiments.study import read_study

    out = Path(out)
    caption = (
        "Test accuracy (at the epoch chosen on validation) against the density the graph "
        "reached, per dataset and k: mean and 95% t-interval over seeds. Paired differences "
        "and the smallest detectable ones are in study.md."
    )
    writer = _Writer(out / "figures")
    drawn = _add_density(writer, read_study(out, tuple(parts)), caption)
    writer.finish()
    return out / "figures" / "density.png" if drawn else None


def write_sweep_figures(
    sweep_dir: str | Path, *, neurons: Sequence[int] | None = None
) -> list[FigureEntry]:
    """Draw a sweep directory's cross-run figures into ``sweep_dir/figures``; return the index.

    Parameters
    ----------
    sweep_dir : str or Path
        A directory holding ``results.csv`` (one row per model and run, ``run_dir`` relative).
    neurons : sequence of int, optional
        The k whose curves Figures 4 and 6 show; by default each dataset's smallest and largest.
    """
    sweep_dir = Path(sweep_dir)
    every = _ok_rows(read_results(sweep_dir / "results.csv"))
    rows = _base_rows(every)
    writer = _Writer(sweep_dir / "figures")
    # Along density: several epsilons, or fixed budgets.
    along = len({row.get("epsilon") for row in every if row.get("epsilon")}) > 1 or any(
        row.get("budget") for row in every
    )
    if along:
        caption = (
            "Test accuracy (at the epoch chosen on validation) against the density the graph "
            "reached: mean and 95% t-interval over seeds. FreeEvolve's density follows epsilon; "
            "the budgeted rules train at fixed densities; the FCNNs sit at the density of the "
            "FreeEvolve model whose parameters they match."
        )
        _add_density(writer, _panels(sweep_dir), caption)

    groups: dict[tuple[str, str, int], list[float]] = {}
    for row in rows:
        key = (row["dataset"], row["model"], int(row["neurons"]))
        groups.setdefault(key, []).append(float(row["test_accuracy"]))
    summary = []
    for (dataset, model, k), values in sorted(groups.items()):
        summary.append(
            {
                "dataset": dataset,
                "model": model,
                "neurons": k,
                "mean": round(float(np.mean(values)), 6),
                "std": round(float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, 6),
                "n": len(values),
            }
        )
    paper = [row for row in summary if row["model"] in ("freeevolve", "fcnn")]
    caption = "Test accuracy (at the epoch chosen on validation) against k: mean and one standard deviation over seeds."
    writer.add(
        "figure5",
        "Figure 5: accuracy against neurons",
        caption,
        plots.accuracy_vs_neurons(paper),
        _csv(paper),
    )
    if len(paper) < len(summary):
        caption = (
            "Test accuracy (at the epoch chosen on validation) against k for every model of the "
            "sweep: mean and one standard deviation over seeds. Paired differences with their "
            "95% intervals are in table.md."
        )
        writer.add(
            "ablation",
            "Ablation: every topology rule and baseline",
            caption,
            plots.ablation_accuracy(summary),
            _csv(summary),
        )

    curves, round_rows, skipped = [], [], 0
    for dataset in sorted({row["dataset"] for row in rows}):
        present = sorted({int(r["neurons"]) for r in rows if r["dataset"] == dataset})
        chosen = (
            [k for k in neurons if k in present] if neurons else sorted({present[0], present[-1]})
        )
        for k in chosen:
            runs = sorted(
                {
                    (int(r["seed"]), r["run_dir"])
                    for r in rows
                    if r["dataset"] == dataset and int(r["neurons"]) == k
                }
            )
            histories = []
            for seed, run_dir in runs:
                try:
                    histories.append((seed, read_json(sweep_dir / run_dir / "history.json")))
                except ReportError:
                    skipped += 1
            if not histories:
                continue
            # The pair's history.json holds FreeEvolve and FCNN; each other model's, its own.
            for model in dict.fromkeys(name for _, h in histories for name in h):
                model_curves = [
                    [e["val_accuracy"] for e in h[model]["epochs"]]
                    for _, h in histories
                    if h.get(model, {}).get("epochs")
                ]
                if model_curves:
                    curves += _curve_rows(f"{dataset}, k={k}", model, model_curves)
            # Every model that changed its graph (FreeEvolve's rounds, SET's, RigL's updates),
            # for its first seed.
            for model in dict.fromkeys(name for _, h in histories for name in h):
                evolved = [(s, h) for s, h in histories if h.get(model, {}).get("rounds")]
                if evolved:
                    seed, first = evolved[0]
                    name = "" if model == "freeevolve" else f", {model}"
                    round_rows += _round_rows(
                        f"{dataset}, k={k}, seed {seed}{name}", first[model]["rounds"]
                    )
    note = f" {skipped} run(s) without a readable history.json were left out." if skipped else ""
    caption = "Validation accuracy per epoch, mean and one standard deviation over seeds." + note
    writer.add(
        "figure4",
        "Figure 4: validation accuracy",
        caption,
        plots.validation_accuracy(curves),
        _csv(curves),
    )
    if round_rows:
        caption = (
            "Edges added and pruned per round (FreeEvolve, and every other rule that changed its "
            "graph: SET per epoch, RigL per update), for the first seed of each k shown." + note
        )
        writer.add(
            "figure6",
            "Figure 6: edges per round",
            caption,
            plots.edge_changes(round_rows),
            _csv(round_rows),
        )
    return writer.finish()
