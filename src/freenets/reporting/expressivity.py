"""The figure and the Markdown page of Theorem 1's experiment (paper, section 4).

Both render from the rows of ``expressivity.csv`` (:class:`freenets.experiments.expressivity.Row`)
and the run's configuration; neither trains anything. The figure is built without ``pyplot``.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from matplotlib.artist import Artist
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from freenets import atomic
from freenets.experiments.expressivity import (
    ExpressivityConfig,
    Row,
    Smallest,
    smallest_k,
)
from freenets.experiments.expressivity_tasks import REGRESSION_TOLERANCE

MARKDOWN_NAME = "expressivity.md"
FIGURE_NAME = "expressivity.png"
FAMILIES = {
    "parity": "parity of N bits",
    "sawtooth": "sawtooth T^m (2^(m-1) teeth)",
    "poly": "polynomial of degree d",
}
_SERIES = (
    # (attribute of Smallest, label, colour, marker, filled, line style)
    ("freenet", "FreeNet, trained", "C0", "o", True, "-"),
    ("layered", "best layered, trained", "C1", "s", True, "--"),
    ("freenet_constructed", "FreeNet, constructed", "C0", "o", False, ":"),
    ("layered_constructed", "layered, constructed", "C1", "s", False, ":"),
)


def _family(task: str) -> tuple[str, int]:
    family, _, size = task.rpartition("-")
    return family, int(size)


def _k(value: int | None) -> str:
    return "—" if value is None else str(value)


def expressivity_figure(rows: Sequence[Row]) -> Figure:
    """Smallest k that solves each task, one panel per family, trained and constructed.

    A trained kind that never solved a task is drawn as a triangle one above the largest k
    tried; a construction that does not exist is left out. The series are shifted a little
    sideways so that equal values stay visible.
    """
    table = smallest_k(rows)
    families = [name for name in FAMILIES if any(_family(s.task)[0] == name for s in table)]
    panels = max(1, len(families))
    figure = Figure(figsize=(4.2 * panels, 4.0), layout="constrained")
    axes = figure.subplots(1, panels, squeeze=False)[0]
    legend: dict[str, Artist] = {}
    for axis, family in zip(axes, families, strict=False):
        cells = [(s, _family(s.task)[1]) for s in table if _family(s.task)[0] == family]
        sizes = [size for _, size in cells]
        for index, (attribute, label, colour, marker, filled, style) in enumerate(_SERIES):
            shift = (index - 1.5) * 0.07
            found = [(size + shift, getattr(s, attribute)) for s, size in cells]
            found = [(x, y) for x, y in found if y is not None]
            if found:
                (line,) = axis.plot(
                    *zip(*found, strict=True),
                    color=colour,
                    marker=marker,
                    markerfacecolor=colour if filled else "white",
                    linestyle=style,
                )
                legend.setdefault(label, line)
            if attribute in ("freenet", "layered"):
                missing = [
                    (size + shift, s.tried + 1)
                    for s, size in cells
                    if getattr(s, attribute) is None
                ]
                if missing:
                    (line,) = axis.plot(
                        *zip(*missing, strict=True), color=colour, marker="^", linestyle="none"
                    )
                    name = label.split(",")[0]
                    legend.setdefault(f"{name}: no restart solved (drawn at k tried + 1)", line)
        if family == "poly":
            (line,) = axis.plot(sizes, sizes, color="0.6", linewidth=1, zorder=0)
            legend.setdefault("proof sketch's claim: k = d", line)
        axis.set_title(FAMILIES[family])
        axis.set_xlabel({"parity": "N (bits)", "sawtooth": "m (tent maps)", "poly": "d"}[family])
        axis.set_ylabel("smallest k that solves")
        axis.set_xticks(sizes)
        axis.set_xlim(min(sizes) - 0.5, max(sizes) + 0.5)
        axis.yaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
    if legend:
        figure.legend(
            list(legend.values()),
            list(legend.keys()),
            loc="outside lower center",
            ncol=3,
            fontsize=8,
        )
    return figure


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _settings(config: ExpressivityConfig, seconds: float) -> str:
    return (
        f"Each cell trains {config.restarts} random starts per topology with full-batch Adam "
        f"({config.steps} steps, step size {config.learning_rate:g} with cosine decay, biases "
        f"uniform in ±{config.bias_bound:g}, Xavier-uniform weights with each topology's own "
        f"fans), seed {config.seed}, {config.threads} torch thread(s); the whole run took "
        f"{_duration(seconds)}. A restart counts as solved if at any step its weights reach "
        f"100% accuracy (parity) or a mean squared error below {REGRESSION_TOLERANCE:g} "
        "(sawtooth and polynomial, targets in [0, 1]: a root-mean-square error of 1% of the "
        "range)."
    )


def _smallest_table(table: Sequence[Smallest]) -> list[str]:
    lines = [
        "| task | FreeNet, trained | best layered, trained (split) | FreeNet, constructed "
        "| layered, constructed | k tried |",
        "|---|---|---|---|---|---|",
    ]
    for s in table:
        layered = _k(s.layered) + (f" ({s.layered_topology})" if s.layered is not None else "")
        lines.append(
            f"| {s.task} | {_k(s.freenet)} | {layered} | {_k(s.freenet_constructed)} "
            f"| {_k(s.layered_constructed)} | 1..{s.tried} |"
        )
    return lines


def _cell_table(rows: Sequence[Row]) -> list[str]:
    lines = [
        "| task | k | FreeNet solved | layered splits solving | best layered split | "
        "FreeNet best loss | best layered loss |",
        "|---|---|---|---|---|---|---|",
    ]
    cells: dict[tuple[str, int], list[Row]] = {}
    for row in rows:
        if row.kind in ("freenet", "layered"):
            cells.setdefault((row.task, row.k), []).append(row)
    for (task, k), group in cells.items():
        freenet = next(row for row in group if row.kind == "freenet")
        layered = [row for row in group if row.kind == "layered"]
        best = max(layered, key=lambda row: (row.solved, -row.best_loss))
        solving = sum(1 for row in layered if row.solved)
        lines.append(
            f"| {task} | {k} | {freenet.solved}/{freenet.restarts} | {solving}/{len(layered)} "
            f"| {best.topology.split(':', 1)[1]} ({best.solved}/{best.restarts}) "
            f"| {freenet.best_loss:.2e} | {min(row.best_loss for row in layered):.2e} |"
        )
    return lines


def expressivity_markdown(rows: Sequence[Row], config: ExpressivityConfig, seconds: float) -> str:
    """The Markdown page: settings, the smallest-k table, the per-k counts, how to read them."""
    lines = [
        "# Theorem 1: the FreeNet against every layered topology over k neurons",
        "",
        "Tasks: parity of N bits (all 2^N inputs, one logit); Telgarsky's sawtooth T^m on "
        "[0, 1] (T(x) = 2 min(x, 1 - x) composed m times: 2^(m-1) teeth, 2^m linear pieces); "
        "the proof sketch's polynomial (x + x^2 + ... + x^d) / d on [0, 1]; regression on 257 "
        "grid points. For each k, the dense FreeNet (input to every neuron, every edge i < j, "
        "decoder from every neuron) and all 2^(k-1) layered splits of k neurons (layer l fed "
        "by layer l - 1 only, the input to the first layer only, the decoder from the last "
        "layer only, as `FreeNet.from_sequential` builds it) are masks on one substrate.",
        "",
        _settings(config, seconds),
        "",
        "## Smallest k that solves each task",
        "",
        *_smallest_table(smallest_k(rows)),
        "",
        "— : trained, no restart solved it for any k tried; constructed, no construction "
        "within the cap (none is known to us for the FreeNet beyond degree 2 of the "
        "polynomial). A task stops growing k once both trained kinds have solved it.",
        "",
        "## Restarts that solved, per k",
        "",
        *_cell_table(rows),
        "",
        "## How to read this",
        "",
        "- *Constructed* rows are hand-set weights checked on every input: what a topology "
        "can express. *Trained* rows are what full-batch Adam finds from random starts. A "
        "trained failure is not a proof that the topology cannot express the task.",
        "- Every layered topology is a sub-graph of the dense FreeNet over the same k "
        "(Claim 4.1), so a layered construction is also a FreeNet construction: the FreeNet "
        "can express a task with at most the smaller of the two constructed k.",
        "- At each k the layered kind had 2^(k-1) splits times the restarts in starts, the "
        "FreeNet only the restarts.",
        "- No ReLU network equals a polynomial of degree 2 or more on an interval (it is "
        "piecewise linear), so the polynomial is solved only up to the tolerance, by FreeNets "
        "and layered nets alike.",
        "",
    ]
    return "\n".join(lines)


def write_expressivity_report(
    out: str | Path, rows: Sequence[Row], config: ExpressivityConfig, seconds: float
) -> tuple[Path, Path]:
    """Write ``out/expressivity.md`` and ``out/expressivity.png`` atomically; return both paths."""
    out = Path(out)
    markdown = out / MARKDOWN_NAME
    image = out / FIGURE_NAME
    atomic.write_text(markdown, expressivity_markdown(rows, config, seconds))
    buffer = io.BytesIO()
    expressivity_figure(rows).savefig(buffer, format="png", dpi=110)
    atomic.write_bytes(image, buffer.getvalue())
    return markdown, image


__all__ = [
    "FIGURE_NAME",
    "MARKDOWN_NAME",
    "expressivity_figure",
    "expressivity_markdown",
    "write_expressivity_report",
]
