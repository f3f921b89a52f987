"""``freenets report DIR``: one self-contained HTML page for a run or a sweep (paper, section 5).

A run directory (``config.json`` and ``history.json``, written by :func:`freenets.experiments.runs.train_run`)
gets its summary, figures, rounds and configuration; a sweep directory (``results.csv``) gets its
table, the cross-run figures and every run's row. The sweep's table is rendered from the cells
that :func:`freenets.experiments.table.summarise` computes from ``results.csv`` (the same strings
as ``table.md``), never by parsing ``table.md``. Figures are embedded as data URIs, so the page
needs no other file. A short script in the page marks, once every image has decoded, how many
did; the tests read that mark from a headless browser.
"""

from __future__ import annotations

import base64
import html
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import astuple
from pathlib import Path
from typing import Any, Literal

from freenets import __version__, atomic
from freenets.errors import DataError, ReportError
from freenets.experiments.results import COLUMNS, ResultRow, read_results
from freenets.experiments.table import (
    HEADER,
    INTRO,
    MODEL_HEADER,
    MODEL_INTRO,
    MODEL_TITLE,
    TITLE,
    failed_runs,
    has_ablation,
    model_cells,
    model_rows,
    summarise,
    table_rows,
)

REPORT = "report.html"
Kind = Literal["run", "sweep"]

_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em;
       color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #444; font-size: 0.92em; } code { background: #f5f5f5; padding: 0 0.2em; }
.failed { color: #b00; }
"""

# Counts the images that decoded, so a headless browser can check the page shows every figure.
# It runs synchronously at the load event, which waits for every image: a broken image is then
# complete with a natural width of 0.
_SCRIPT = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var shown = images.filter(function (image) {
    return image.complete && image.naturalWidth > 0;
  }).length;
  document.documentElement.setAttribute("data-images-decoded", shown + "/" + images.length);
  document.getElementById("image-status").textContent =
    shown + " of " + images.length + " figures shown.";
});
"""


def detect(directory: str | Path) -> Kind:
    """Whether ``directory`` is a run directory or a sweep directory, by the files it holds."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ReportError(f"no such directory: {directory}")
    if (directory / "results.csv").is_file():
        return "sweep"
    if (directory / "config.json").is_file() and (directory / "history.json").is_file():
        if not (directory / "summary.json").is_file():
            raise ReportError(f"{directory} holds no results yet (summary.json is missing)")
        return "run"
    raise ReportError(
        f"{directory} is neither a run directory (config.json, history.json) "
        "nor a sweep directory (results.csv)"
    )


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(cell))}</th>" for cell in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(cell))}</td>" for cell in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def _figures(directory: Path, kind: Kind, redraw: bool) -> str:
    from freenets.reporting import figures

    entries = None if redraw else figures.read_index(directory)
    if entries is None:
        write = figures.write_run_figures if kind == "run" else figures.write_sweep_figures
        entries = write(directory)
    blocks = []
    for entry in entries:
        path = directory / "figures" / entry.image
        mime = "image/gif" if entry.image.endswith(".gif") else "image/png"
        encoded = base64.b64encode(path.read_bytes()).decode("ascii")
        blocks.append(
            f'<figure id="{html.escape(entry.name)}">'
            f'<img src="data:{mime};base64,{encoded}" alt="{html.escape(entry.title)}" '
            f'data-figure="{html.escape(entry.name)}">'
            f"<figcaption><b>{html.escape(entry.title)}.</b> {html.escape(entry.caption)} "
            f"Data: <code>figures/{html.escape(entry.data)}</code>.</figcaption></figure>"
        )
    return "\n".join(blocks)


def _json(path: Path) -> Any:
    from freenets.reporting.figures import read_json

    return read_json(path)


def _settings(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested JSON as ``(dotted.key, value)`` rows, lists joined by commas."""
    if isinstance(value, dict):
        return [row for key, item in value.items() for row in _settings(item, f"{prefix}{key}.")]
    if isinstance(value, list) and not any(isinstance(item, dict | list) for item in value):
        return [(prefix.rstrip("."), ", ".join(str(item) for item in value))]
    if isinstance(value, list):
        return [(prefix.rstrip("."), json.dumps(value))]
    return [(prefix.rstrip("."), "" if value is None else str(value))]


def _config_table(config: Any) -> str:
    return _table(("setting", "value"), sorted(_settings(config)))


def _run_body(directory: Path, redraw: bool) -> tuple[str, str]:
    config = _json(directory / "config.json")
    summary = _json(directory / "summary.json")
    history = _json(directory / "history.json")
    title = (
        f"FreeNets run: {summary.get('dataset')}, k={summary.get('neurons')}, "
        f"seed {summary.get('seed')}"
    )
    columns = ("test_accuracy", "val_accuracy", "best_epoch", "params", "seconds")
    freenet = str(config.get("rule", "freeevolve"))  # the run's FreeNet: FreeEvolve by default
    models = [(name, summary[name]) for name in (freenet, "fcnn") if name in summary]
    results = _table(
        ("model", *columns, "edges / hidden"),
        [
            (name, *(entry.get(c) for c in columns), entry.get("edges", entry.get("hidden")))
            for name, entry in models
        ],
    )
    graph_keys = ("edges", "density", "rounds", "first_unchanged_round", "converged")
    evolve = summary.get(freenet, {})
    graph = _table(
        (f"{freenet} graph", "value"),
        [(key, evolve.get(key)) for key in (*graph_keys, "theorem2_holds") if key in evolve],
    )
    rounds = history.get(freenet, {}).get("rounds", [])
    round_keys = ("round", "epoch", "edges", "added", "pruned", "seconds")
    body = f"""
<h2>Results</h2>
<p>Test accuracy is measured at the epoch with the best validation accuracy.</p>
{results}
{graph}
<h2>Figures</h2>
{_figures(directory, "run", redraw)}
<h2>Topology rounds ({html.escape(freenet)})</h2>
{_table(round_keys, ([r.get(k) for k in round_keys] for r in rounds)) if rounds else "<p>None.</p>"}
<h2>Configuration</h2>
{_config_table(config)}
"""
    return title, body


def _sweep_results(path: Path) -> list[ResultRow]:
    try:
        return read_results(path)
    except DataError as error:
        raise ReportError(str(error)) from None


def _sweep_body(directory: Path, redraw: bool) -> tuple[str, str]:
    rows = _sweep_results(directory / "results.csv")
    # The table's cells as experiments.table computes them for table.md, never read back from it.
    summary = (
        f"<h3>{html.escape(TITLE)}</h3>\n<p>{html.escape(INTRO)}</p>\n"
        + _table(HEADER, table_rows(summarise(rows)))
        if rows
        else "<p>No results yet.</p>"
    )
    if has_ablation(rows):  # the table of every model, from the same cells as table.md's
        summary += (
            f"\n<h3>{html.escape(MODEL_TITLE)}</h3>\n<p>{html.escape(MODEL_INTRO)}</p>\n"
            + _table(MODEL_HEADER, model_rows(model_cells(rows)))
        )
    failed = failed_runs(rows)
    failures = (
        _table(
            ("dataset", "neurons", "seed", "model", "reason"),
            ((r.dataset, r.neurons, r.seed, r.model, r.reason) for r in failed),
        )
        if failed
        else "<p>None.</p>"
    )
    every_run = _table(COLUMNS, (astuple(row) for row in rows))
    configs = []
    for path in sorted(directory.glob("*.json")):
        configs.append(f"<h3>{html.escape(path.name)}</h3>{_config_table(_json(path))}")
    ok = len(rows) - len(failed)
    body = f"""
<h2>Results</h2>
<p>{ok} of {len(rows)} model runs succeeded.</p>
{summary}
<h2>Figures</h2>
{_figures(directory, "sweep", redraw)}
<h2>Failed runs</h2>
{failures}
<h2>Every run</h2>
<details><summary>results.csv ({len(rows)} rows)</summary>{every_run}</details>
<h2>Configuration</h2>
{"".join(configs) or "<p>No configuration file in this sweep.</p>"}
"""
    return f"FreeNets sweep: {directory.resolve().name}", body


def render(directory: str | Path, *, redraw: bool = False) -> str:
    """The report page for ``directory`` (drawing its figures first if they are missing).

    Parameters
    ----------
    directory : str or Path
        A run directory or a sweep directory (see :func:`detect`).
    redraw : bool
        Draw the figures again even when ``figures/`` already holds them.
    """
    directory = Path(directory)
    kind = detect(directory)
    title, body = (_run_body if kind == "run" else _sweep_body)(directory, redraw)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<p>Directory <code>{html.escape(str(directory))}</code>; written by freenets {__version__} at
{stamp}. <span id="image-status"></span></p>
{body}
<script>{_SCRIPT}</script>
</body>
</html>
"""


def write_report(directory: str | Path, *, redraw: bool = False) -> Path:
    """Write ``directory/report.html`` atomically and return its path."""
    page = render(directory, redraw=redraw)
    path = Path(directory) / REPORT
    atomic.write_text(path, page)
    return path
