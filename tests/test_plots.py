"""Figures: the plot functions on hand-made results, and every figure of a tiny real run."""

import csv
import io
import json

import networkx as nx
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image
from scipy.stats import gaussian_kde

from freenets import graph
from freenets.experiments.runs import load_model, train_run
from freenets.reporting import plots, topology_plots
from freenets.reporting.figures import read_index, write_run_figures
from freenets.training.config import TrainConfig

RUN_FIGURES = {"figure4", "figure6", "figure7", "adjacency", "adjacency_animation", "final_graph"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_digits):
    """A real run with its figures, written by train_run as `freenets train` does."""
    out = tmp_path_factory.mktemp("run")
    config = TrainConfig.of(n_neurons=8, epochs=3, patience=1, seed=1)
    train_run(config, tiny_digits, out, show_progress=False, on_written=write_run_figures)
    return out


def legend_texts(figure: Figure) -> list[str]:
    return [
        t.get_text()
        for axis in figure.axes
        if axis.get_legend()
        for t in axis.get_legend().get_texts()
    ]


# ------------------------------------------------------------------ kernel density


def test_density_integrates_to_one_on_the_unit_interval():
    rng = np.random.default_rng(0)
    grid = np.linspace(0, 1, 2001)
    for values in (rng.beta(0.5, 3, 500), rng.uniform(0, 1, 50), np.array([0.0, 0.0, 0.01])):
        curve = plots.density(values, grid)
        # Reflection at 0 and 1 keeps all the mass inside [0, 1].
        trapezoid = ((curve[1:] + curve[:-1]) / 2).sum() * (grid[1] - grid[0])
        assert trapezoid == pytest.approx(1.0, abs=1e-3)
        assert (curve >= 0).all()


def reflected_kde(values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """The reflected Gaussian KDE written out: kernels at x, -x and 2 - x, Scott's bandwidth."""
    bandwidth = values.std(ddof=1) * values.size ** (-1 / 5)
    centres = np.concatenate([values, -values, 2.0 - values])
    z = (grid[:, None] - centres[None, :]) / bandwidth
    return np.exp(-0.5 * z**2).sum(axis=1) / (values.size * bandwidth * np.sqrt(2 * np.pi))


def test_density_is_the_reflected_kde_written_out():
    rng = np.random.default_rng(1)
    grid = np.linspace(0, 1, 101)
    for values in (rng.beta(0.5, 3, 300), rng.uniform(0.9, 1.0, 7), np.array([0.2, 0.8])):
        np.testing.assert_allclose(plots.density(values, grid), reflected_kde(values, grid))
    # At a bound the mirror adds as much as the data: twice scipy's unreflected KDE there.
    values = rng.uniform(0, 0.05, 200)
    at_zero = plots.density(values, np.array([0.0]))[0]
    assert at_zero == pytest.approx(2 * gaussian_kde(values)(0.0)[0], rel=1e-9)


@pytest.mark.parametrize("values", [[], [0.3], [0.5, 0.5, 0.5]])
def test_density_of_degenerate_values_is_none(values):
    assert plots.density(values, np.linspace(0, 1, 11)) is None


@pytest.mark.parametrize(
    ("values", "label"),
    [
        ([], "start: no values"),
        ([0.2], "start (n=1), all 0.2"),
        ([0.9, 0.9], "start (n=2), all 0.9"),
        ([0.1, 0.4, 0.95], "start (n=3)"),
    ],
)
def test_value_densities_draws_degenerate_series(values, label):
    panels = [{"title": "Prune", "series": [{"label": "start", "values": values}]}]
    figure = plots.value_densities(panels, threshold=0.75)
    assert legend_texts(figure) == [label, "1 - ε = 0.75"]
    axis = figure.axes[0]
    if len(set(values)) == 1:  # no density: a vertical mark where the values lie
        assert list(axis.get_lines()[0].get_xdata()) == [values[0], values[0]]


# ------------------------------------------------------------------ Figures 4, 5, 6


def test_validation_accuracy_draws_mean_and_band():
    rows = [
        {"panel": p, "model": m, "epoch": e, "mean": 0.5 + 0.1 * e, "std": s, "n": n}
        for p, n, s in (("k=8", 1, 0.0), ("k=16", 3, 0.02))
        for m in ("freeevolve", "fcnn")
        for e in (1, 2, 3)
    ]
    figure = plots.validation_accuracy(rows)
    visible = [axis for axis in figure.axes if axis.get_visible()]
    assert [axis.get_title() for axis in visible] == ["k=8", "k=16"]
    line = visible[1].get_lines()[0]
    np.testing.assert_allclose(line.get_ydata(), [0.6, 0.7, 0.8])
    assert len(visible[1].collections) == 2 and not visible[0].collections  # bands only for n > 1
    assert "FreeEvolve (mean ± sd, 3 seeds)" in legend_texts(figure)


def test_accuracy_vs_neurons_has_error_bars_per_dataset():
    rows = [
        {"dataset": d, "model": m, "neurons": k, "mean": 0.9, "std": 0.01, "n": 2}
        for d in ("digits", "mnist")
        for m in ("freeevolve", "fcnn")
        for k in (8, 16, 32)
    ]
    figure = plots.accuracy_vs_neurons(rows)
    visible = [axis for axis in figure.axes if axis.get_visible()]
    assert [axis.get_title() for axis in visible] == ["digits (2 seeds)", "mnist (2 seeds)"]
    assert len(visible[0].containers) == 2  # one errorbar container per model


def test_empty_results_still_make_a_figure_that_says_so():
    for figure, message in (
        (plots.validation_accuracy([]), "no epochs recorded"),
        (plots.accuracy_vs_neurons([]), "no successful runs"),
        (plots.edge_changes([]), "no topology changes"),
    ):
        texts = [text.get_text() for axis in figure.axes for text in axis.texts]
        assert texts == [message]


def test_edge_changes_bars_and_edges_from_the_start():
    rows = [
        {"panel": "k=5", "round": 1, "added": 0, "pruned": 3, "edges": 7},
        {"panel": "k=5", "round": 2, "added": 2, "pruned": 1, "edges": 8},
    ]
    figure = plots.edge_changes(rows)
    axis = figure.axes[0]
    heights = [patch.get_height() for patch in axis.patches]
    assert heights == [0, 2, 3, 1]  # added bars, then pruned bars
    edges = figure.axes[1].get_lines()[0]
    np.testing.assert_array_equal(edges.get_ydata(), [10, 7, 8])  # 10 = 7 + 3 pruned - 0 added


# ------------------------------------------------------------------ topology


def mask_sequence() -> torch.Tensor:
    start = graph.dense_mask(5)
    first = start.clone()
    first[3, 0] = first[4, 1] = False  # two pruned
    second = first.clone()
    second[3, 0] = True  # re-added
    second[2, 1] = False
    return torch.stack([start, first, second])


def test_adjacency_states_and_titles_count_changes():
    masks = mask_sequence()
    states = topology_plots._states(masks)
    assert (states[0] == masks[0].numpy()).all()
    assert states[1][3, 0] == 3 and states[1][4, 1] == 3
    assert states[2][3, 0] == 2 and states[2][2, 1] == 3 and states[2][4, 1] == 0
    assert topology_plots._round_titles(masks) == [
        "start: 10 edges",
        "round 1: 8 edges (+0 -2)",
        "round 2: 8 edges (+1 -1)",
    ]
    figure = topology_plots.adjacency_rounds(masks)
    assert len([a for a in figure.axes if a.get_visible()]) == 3


def test_adjacency_rounds_caps_panels_keeping_first_and_last():
    masks = graph.dense_mask(4).repeat(40, 1, 1)
    titles = [
        a.get_title()
        for a in topology_plots.adjacency_rounds(masks, max_panels=6).axes
        if a.get_visible()
    ]
    assert len(titles) == 6 and titles[0].startswith("start") and titles[-1].startswith("round 39")


def test_adjacency_gif_has_one_frame_per_mask():
    gif = topology_plots.adjacency_gif(mask_sequence())
    image = Image.open(io.BytesIO(gif))
    assert image.format == "GIF" and image.n_frames == 3


@pytest.mark.parametrize("k", [1, 2, 7])
def test_final_dag_levels_match_networkx_longest_paths(k, random_mask):
    mask = random_mask(k, 0.4, k)
    network = nx.DiGraph()
    network.add_nodes_from(range(k))
    network.add_edges_from((int(i), int(j)) for j, i in torch.nonzero(mask))
    # The level of a neuron is the longest path ending at it: an independent computation.
    expected = [
        nx.dag_longest_path_length(network.subgraph(nx.ancestors(network, n) | {n}))
        for n in range(k)
    ]
    assert graph.levels(mask).tolist() == expected
    figure = topology_plots.final_dag(mask)
    assert f"{int(mask.sum())} edges, {max(expected) + 1} levels" in figure.axes[0].get_title()


# ------------------------------------------------------------------ a real run's figures


def test_run_writes_masks_matching_its_rounds(run_dir):
    history = json.loads((run_dir / "history.json").read_text())
    rounds = history["freeevolve"]["rounds"]
    masks = torch.load(run_dir / "masks.pt", weights_only=True)
    assert masks.shape == (len(rounds) + 1, 8, 8) and masks.dtype == torch.bool
    assert torch.equal(masks[0], graph.dense_mask(8))
    for index, record in enumerate(rounds, start=1):
        assert int(masks[index].sum()) == record["edges"]
        assert int((masks[index] & ~masks[index - 1]).sum()) == record["added"]
        assert int((masks[index - 1] & ~masks[index]).sum()) == record["pruned"]


def test_run_figures_are_written_with_their_data(run_dir):
    entries = read_index(run_dir)
    assert entries is not None and {e.name for e in entries} == RUN_FIGURES
    for entry in entries:
        with Image.open(run_dir / "figures" / entry.image) as image:
            assert image.format == ("GIF" if entry.image.endswith(".gif") else "PNG")
            assert image.width > 300 and image.height > 200
    history = json.loads((run_dir / "history.json").read_text())

    with open(run_dir / "figures" / "figure4.csv") as stream:
        rows = list(csv.DictReader(stream))
    for model in ("freeevolve", "fcnn"):
        drawn = [float(r["mean"]) for r in rows if r["model"] == model]
        expected = [e["val_accuracy"] for e in history[model]["epochs"]]
        np.testing.assert_allclose(drawn, expected, atol=1e-6)

    with open(run_dir / "figures" / "figure6.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert [int(r["pruned"]) for r in rows] == [
        r["pruned"] for r in history["freeevolve"]["rounds"]
    ]

    values = json.loads((run_dir / "figures" / "figure7.json").read_text())
    assert values["threshold"] == pytest.approx(0.75)
    prune = values["panels"][0]["series"]
    assert prune[0]["values"] == history["freeevolve"]["rounds"][0]["prune_values"]


def test_adjacency_csv_rebuilds_every_mask(run_dir):
    masks = torch.load(run_dir / "masks.pt", weights_only=True)
    with open(run_dir / "figures" / "adjacency.csv") as stream:
        events = list(csv.DictReader(stream))
    rebuilt = torch.zeros_like(masks[0])
    for index in range(masks.shape[0]):
        for event in (e for e in events if int(e["round"]) == index):
            cell = (int(event["target"]), int(event["source"]))
            rebuilt[cell] = event["event"] != "pruned"
        assert torch.equal(rebuilt, masks[index])


def test_final_graph_data_is_the_chosen_model(run_dir):
    data = json.loads((run_dir / "figures" / "final_graph.json").read_text())
    mask = load_model(run_dir / "freeevolve.pt").mask
    drawn = torch.zeros_like(mask)
    for source, target in data["edges"]:
        assert source < target
        drawn[target, source] = True
    assert torch.equal(drawn, mask)
    assert data["levels"] == graph.levels(mask).tolist()


def test_run_without_masks_or_rounds_still_gets_its_curves(run_dir, tmp_path):
    for name in ("config.json", "summary.json"):
        (tmp_path / name).write_text((run_dir / name).read_text())
    history = json.loads((run_dir / "history.json").read_text())
    history["freeevolve"]["rounds"] = []
    (tmp_path / "history.json").write_text(json.dumps(history))
    names = {entry.name for entry in write_run_figures(tmp_path)}
    assert names == {"figure4"}
