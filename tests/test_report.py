"""`freenets report`: the page for a run and for a sweep embeds every figure; bad directories."""

import base64
import csv
import html
import json
import re
import shutil
import statistics
import subprocess
from pathlib import Path

import pytest

from freenets.errors import ReportError
from freenets.experiments.results import read_results
from freenets.experiments.runs import train_run
from freenets.experiments.table import HEADER, summarise, table_rows
from freenets.reporting.figures import read_index, write_run_figures, write_sweep_figures
from freenets.reporting.html import detect, render, write_report
from freenets.training.config import TrainConfig

COLUMNS = (
    "dataset,neurons,seed,model,status,reason,test_accuracy,val_accuracy,params,edges,hidden,"
    "best_epoch,seconds,run_dir"
).split(",")


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory, tiny_digits):
    """A small sweep: three real runs (k 6 and 8, two seeds at k=6), one failed job, tables."""
    out = tmp_path_factory.mktemp("sweep")
    dataset = tiny_digits
    rows = []
    for neurons, seed in ((6, 0), (6, 1), (8, 0)):
        run_dir = f"runs/digits-k{neurons}-s{seed}"
        config = TrainConfig.of(n_neurons=neurons, epochs=2, patience=1, seed=seed)
        drawn = write_run_figures if seed == 0 else None
        summary = train_run(config, dataset, out / run_dir, show_progress=False, on_written=drawn)
        for model in ("freeevolve", "fcnn"):
            entry = summary[model]
            rows.append(
                {
                    "dataset": "digits",
                    "neurons": neurons,
                    "seed": seed,
                    "model": model,
                    "status": "ok",
                    "reason": "",
                    "test_accuracy": entry["test_accuracy"],
                    "val_accuracy": entry["val_accuracy"],
                    "params": entry["params"],
                    "edges": entry.get("edges", ""),
                    "hidden": entry.get("hidden", ""),
                    "best_epoch": entry["best_epoch"],
                    "seconds": entry["seconds"],
                    "run_dir": run_dir,
                }
            )
    for model in ("freeevolve", "fcnn"):
        rows.append(
            {
                **dict.fromkeys(COLUMNS, ""),
                "dataset": "digits",
                "neurons": 8,
                "seed": 1,
                "model": model,
                "status": "failed",
                "reason": "training loss became nan at epoch 2",
                "run_dir": "runs/digits-k8-s1",
            }
        )
    with open(out / "results.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    # A table.md that disagrees with results.csv: the report must not read it.
    (out / "table.md").write_text(
        "| dataset | k | FreeEvolve | FCNN |\n|---|---:|---:|---:|\n| digits | 6 | 12.34 ± 5.67 | 40 |\n"
    )
    (out / "sweep.json").write_text(json.dumps({"datasets": ["digits"], "neurons": [6, 8]}))
    return out


@pytest.fixture(scope="module")
def run_dir(sweep_dir):
    return sweep_dir / "runs" / "digits-k8-s0"


def embedded_images(page: str) -> dict[str, bytes]:
    """Figure name -> decoded bytes of every data-URI image in the page."""
    found = re.findall(
        r'<img src="data:image/(?:png|gif);base64,([A-Za-z0-9+/=]+)" [^>]*data-figure="([^"]+)"',
        page,
    )
    return {name: base64.b64decode(data) for data, name in found}


def test_detect_tells_runs_from_sweeps(sweep_dir, run_dir, tmp_path):
    assert detect(sweep_dir) == "sweep" and detect(run_dir) == "run"
    with pytest.raises(ReportError, match="no such directory"):
        detect(tmp_path / "missing")
    with pytest.raises(ReportError, match="neither a run directory"):
        detect(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "history.json").write_text("{}")
    with pytest.raises(ReportError, match="summary.json is missing"):
        detect(tmp_path)


def test_run_report_embeds_every_figure(run_dir):
    path = write_report(run_dir)
    page = path.read_text()
    entries = read_index(run_dir)
    images = embedded_images(page)
    assert set(images) == {entry.name for entry in entries} and len(images) == 6
    for entry in entries:
        assert images[entry.name] == (run_dir / "figures" / entry.image).read_bytes()
        assert html.escape(entry.caption) in page
    summary = json.loads((run_dir / "summary.json").read_text())
    assert f"{summary['freeevolve']['test_accuracy']:.4f}" in page
    assert "<th>setting</th>" in page and "n_neurons" in page
    assert 'src="figures/' not in page and "http" not in page  # nothing outside the page


def test_sweep_report_embeds_figures_tables_and_failures(sweep_dir):
    page = render(sweep_dir)
    entries = read_index(sweep_dir)
    assert {entry.name for entry in entries} == {"figure4", "figure5", "figure6"}
    images = embedded_images(page)
    assert set(images) == {entry.name for entry in entries}
    rows = read_results(sweep_dir / "results.csv")
    cells = table_rows(summarise(rows))
    assert [(row[0], row[1], row[-2], row[-1]) for row in cells] == [
        ("digits", "6", "2", ""),
        ("digits", "8", "2", "1"),
    ]
    # The table is rendered from the cells summarise computes, in table.md's words and order.
    expected = "".join(f"<th>{html.escape(name)}</th>" for name in HEADER)
    expected = f"<table><thead><tr>{expected}</tr></thead><tbody>" + "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in cells
    )
    assert expected in page
    accuracy = statistics.mean(
        100 * r.test_accuracy for r in rows if r.model == "freeevolve" and r.neurons == 6
    )
    assert f"{accuracy:.2f} ± " in cells[0][2]
    assert "12.34 ± 5.67" not in page  # nothing comes from table.md
    assert "training loss became nan at epoch 2" in page
    assert "6 of 8 model runs succeeded" in page
    assert "sweep.json" in page and "<td>neurons</td>" in page


def test_sweep_figure5_data_is_the_mean_over_seeds(sweep_dir):
    write_sweep_figures(sweep_dir)
    with open(sweep_dir / "results.csv") as stream:
        results = [r for r in csv.DictReader(stream) if r["status"] == "ok"]
    with open(sweep_dir / "figures" / "figure5.csv") as stream:
        drawn = list(csv.DictReader(stream))
    assert len(drawn) == 4  # 2 models x 2 k; the failed job adds nothing
    for row in drawn:
        values = [
            float(r["test_accuracy"])
            for r in results
            if r["model"] == row["model"] and r["neurons"] == row["neurons"]
        ]
        assert int(row["n"]) == len(values)
        assert float(row["mean"]) == pytest.approx(sum(values) / len(values), abs=1e-6)
    with open(sweep_dir / "figures" / "figure4.csv") as stream:
        curves = list(csv.DictReader(stream))
    assert {r["panel"] for r in curves} == {"digits, k=6", "digits, k=8"}
    assert {r["n"] for r in curves if r["panel"] == "digits, k=6"} == {"2"}


def test_sweep_figures_for_chosen_neurons(sweep_dir):
    write_sweep_figures(sweep_dir, neurons=[8])
    with open(sweep_dir / "figures" / "figure4.csv") as stream:
        assert {r["panel"] for r in csv.DictReader(stream)} == {"digits, k=8"}


def test_missing_figures_are_drawn_for_the_report(run_dir, tmp_path, run_cli):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    shutil.rmtree(copy / "figures")
    assert run_cli(["report", str(copy)]) == (0, f"report: {copy / 'report.html'}\n", "")
    names = {entry.name for entry in read_index(copy)}
    assert names == set(embedded_images((copy / "report.html").read_text()))
    assert names == {"figure4", "figure6", "figure7", "adjacency", "adjacency_animation",
                     "final_graph"}  # fmt: skip


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda root: root / "absent", "no such directory"),
        (lambda root: root, "neither a run directory"),
    ],
)
def test_bad_directory_is_one_line_and_exit_1(tmp_path, run_cli, make, fragment):
    result = run_cli(["report", str(make(tmp_path))])
    assert result.code == 1 and result.one_error_line(fragment) and result.out == ""


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a,b\n1,2\n", "is not a sweep's results.csv"),
        (",".join(COLUMNS) + "\ndigits,six,0,fcnn,ok,,,,,,,,,\n", "results.csv:2"),
        # A run that trained to the end has a test accuracy; Table 2 is computed from it.
        (",".join(COLUMNS) + "\ndigits,6,0,fcnn,ok,,,,,,,,,\n", "results.csv:2: an ok row"),
    ],
)
def test_corrupt_results_are_one_line(tmp_path, run_cli, text, fragment):
    (tmp_path / "results.csv").write_text(text)
    result = run_cli(["report", str(tmp_path)])
    assert result.code == 1 and result.one_error_line(fragment)
    assert not (tmp_path / "report.html").exists()


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def shown_in_chromium(page: Path, profile: Path) -> tuple[int, int]:
    """(images shown, images) as counted by the page's own script in headless Chromium."""
    command = [
        chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={profile}",
        "--virtual-time-budget=10000", "--dump-dom", page.resolve().as_uri(),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    mark = re.search(r'data-images-decoded="(\d+)/(\d+)"', result.stdout)
    assert mark is not None, "the page's script did not run"
    shown, total = int(mark.group(1)), int(mark.group(2))
    assert f"{shown} of {total} figures shown." in result.stdout
    return shown, total


needs_chromium = pytest.mark.skipif(
    chromium() is None, reason="Debian's chromium is not installed (apt-get install chromium)"
)


@pytest.mark.slow
@needs_chromium
@pytest.mark.parametrize("kind", ["run", "sweep"])
def test_headless_chromium_shows_every_figure(kind, run_dir, sweep_dir, tmp_path):
    directory = run_dir if kind == "run" else sweep_dir
    path = write_report(directory)
    expected = len(read_index(directory))
    assert shown_in_chromium(path, tmp_path / "profile") == (expected, expected)


@pytest.mark.slow
@needs_chromium
def test_headless_chromium_counts_a_broken_figure(run_dir, tmp_path):
    page = write_report(run_dir).read_text()
    payload = re.search(r"base64,([A-Za-z0-9+/=]+)", page)
    broken = tmp_path / "broken.html"
    broken.write_text(page[: payload.start(1)] + "AAAA" * 50 + page[payload.end(1) :])
    assert shown_in_chromium(broken, tmp_path / "profile") == (5, 6)
