"""The density study: its grid, its points and paired comparisons, study.md and the figure."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from freenets.experiments import study
from freenets.experiments.results import ResultRow, read_results
from freenets.experiments.seed_stats import detectable_difference
from freenets.training.config import TrainConfig

TINY = study.StudyConfig(
    parts=(study.Part("digits-k6", "digits", 6, train_size=200),),
    epsilons=(0.25, 0.5),
    densities=(0.5,),
    seeds=2,
    train=TrainConfig.of(epochs=2),
)


def row(model, seed, accuracy, *, epsilon=None, budget=None, density=None) -> ResultRow:
    return ResultRow(
        "d",
        10,
        seed,
        model,
        "ok",
        test_accuracy=accuracy,
        epsilon=epsilon,
        budget=budget,
        density=density,
    )


def test_the_graph_is_most_of_the_model_in_every_part():
    from freenets.data import load_dataset

    for part in study.PARTS:
        if part.dataset == "fashion-mnist-32":
            inputs = 32
        else:
            inputs = load_dataset(part.dataset).n_features
        k = part.neurons
        # The graph is most of the model; digits at k = 100 is the contrast, about even.
        least = 0.75 if part.name == "digits-k100" else 1.5
        assert k * (k - 1) // 2 >= least * inputs * k, part


def test_points_and_comparisons_against_a_hand_computation():
    rows = [
        row("dense", 0, 0.90, density=1.0),
        row("dense", 1, 0.80, density=1.0),
        row("freeevolve", 0, 0.91, epsilon=0.5, density=0.6),
        row("freeevolve", 1, 0.83, epsilon=0.5, density=0.4),
        row("random", 0, 0.89, epsilon=0.5, density=0.6),
        row("random", 1, 0.80, epsilon=0.5, density=0.4),
        row("fcnn", 0, 0.70, epsilon=0.5),
        row("fcnn", 1, 0.72, epsilon=0.5),
        row("set", 0, 0.88, budget=0.1, density=0.1),
        row("set", 1, 0.77, budget=0.1, density=0.1),
    ]
    points = {(p.series, p.epsilon, p.budget): p for p in study.study_points("d", rows)}
    assert points[("fcnn", 0.5, None)].density == pytest.approx(0.5)  # its FreeEvolve's
    assert points[("random (rounds)", 0.5, None)].mean == pytest.approx(84.5)
    set_point = points[("set", None, 0.1)]
    assert (set_point.mean, set_point.n, set_point.density) == (pytest.approx(82.5), 2, 0.1)
    # 95% t-interval of 88 and 77: mean 82.5, half-width t(0.975, 1) * sd / sqrt(2).
    half = 12.706204736 * np.std([88, 77], ddof=1) / math.sqrt(2)
    assert set_point.high - set_point.mean == pytest.approx(half, rel=1e-6)
    found = {(c.model, c.other): c for c in study.comparisons("d", rows)}
    versus_random = found[("freeevolve ε=0.5", "random (rounds) ε=0.5")]
    assert versus_random.mean == pytest.approx(2.5)  # (2 + 3) / 2 points
    assert versus_random.detectable == pytest.approx(detectable_difference([2.0, 3.0]))
    versus_dense = found[("set d=0.1", "dense")]
    assert versus_dense.mean == pytest.approx(-2.5) and versus_dense.verdict in (
        "worse",
        "no difference found",
    )
    assert study.one_point_densities(list(found.values())) == {"set": 0.1, "fcnn": 0.5}


def test_the_study_runs_resumes_and_writes_its_reading_and_figure(tmp_path, run_cli):
    from freenets.reporting.figures import write_study_figure

    out = tmp_path / "study"
    seconds = study.run_study(TINY, out, show_progress=False)
    assert seconds > 0
    rows = read_results(out / "digits-k6" / "results.csv")
    runs = {(r.model, r.epsilon, r.budget) for r in rows}
    assert {("freeevolve", 0.25, None), ("freeevolve", 0.5, None), ("dense", None, None)} <= runs
    assert {(m, None, 0.5) for m in ("random", "magnitude", "set", "rigl")} <= runs
    assert len(rows) == 2 * (2 * 4 + 1 + 4)  # seeds x (epsilons x matched models + dense + budgets)
    text = (out / "study.md").read_text()
    assert "## digits-k6" in text and "| freeevolve ε=0.5 | random (rounds) ε=0.5 |" in text
    # A rerun trains nothing and gives the same rows.
    study.run_study(TINY, out, show_progress=False)
    assert read_results(out / "digits-k6" / "results.csv") == rows
    image = write_study_figure(out, TINY.parts)
    assert image is not None and image.is_file()
    with (out / "figures" / "density.csv").open() as stream:
        drawn = list(csv.DictReader(stream))
    expected = study.study_points("digits-k6", rows)
    assert len(drawn) == len(expected)
    assert {(d["series"], float(d["mean"])) for d in drawn} == {
        (p.series, p.mean) for p in expected
    }


def test_unknown_part_is_one_line(tmp_path, run_cli):
    result = run_cli(["study", "--out", str(tmp_path / "s"), "--parts", "moon-k3"])
    assert result.code == 2 and result.one_error_line("unknown part 'moon-k3'")
